# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"Orthanc series and the summary of the series of a study."
from collections import defaultdict

from sql import Literal
from sql.aggregate import Count, Sum
from sql.functions import CurrentTimestamp
from trytond.model import ModelSQL, ModelView, fields
from trytond.pool import Pool
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction

from .preview import SeriesPreviewMixin
from .resource import VIEWER_FIELDS, OrthancResourceMixin, viewer_field
from .viewer import series_urls


class OrthancSeries(
        SeriesPreviewMixin, OrthancResourceMixin, ModelSQL, ModelView):
    "Orthanc Series"
    __name__ = 'gnuhealth.orthanc.series'
    _rec_name = 'description'
    _orthanc_parent = ('gnuhealth.orthanc.study', 'orthanc_study_id')

    study = fields.Many2One(
        'gnuhealth.orthanc.study', "Study", required=True, readonly=True,
        ondelete='CASCADE')
    series_instance_uid = fields.Char("SeriesInstanceUID", readonly=True)
    modality = fields.Char("Modality", readonly=True)
    series_number = fields.Integer("Number", readonly=True)
    description = fields.Char("Description", readonly=True)
    body_part = fields.Char("Body Part", readonly=True)
    number_of_instances = fields.Integer("Instances", readonly=True)
    explorer_url = viewer_field(
        'explorer_url', "Orthanc Explorer",
        "The series in Orthanc's own web interface.")
    web_viewer_url = viewer_field(
        'web_viewer_url', "Orthanc Web Viewer",
        "The series in Orthanc's Web Viewer (if Orthanc has the plugin).")
    stone_url = viewer_field(
        'stone_url', "Stone Web Viewer",
        "The series in the Stone Web Viewer (if Orthanc has the plugin).")
    ohif_url = viewer_field(
        'ohif_url', "OHIF Viewer",
        "The study of the series in the OHIF viewer "
        "(if Orthanc has the plugin).")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [
            ('study', 'ASC'),
            ('series_number', 'ASC NULLS LAST'),
            ('id', 'ASC'),
            ]

    @classmethod
    def get_viewer_urls(cls, series, names):
        "Build the viewer URLs from the stored plugins: no network call"
        result = {n: {} for n in names}
        for record in series:
            study = record.study
            urls = series_urls(record.server.base_url, record.server.plugins,
                record.orthanc_id, study.orthanc_id,
                study.study_instance_uid, record.series_instance_uid)
            for name in names:
                result[name][record.id] = urls.get(VIEWER_FIELDS[name])
        return result

    def get_rec_name(self, name):
        return '%s %s %s' % (
            self.series_number if self.series_number is not None else '',
            self.modality or '', self.description or '')

    @classmethod
    def _orthanc_values(cls, server, record, studies):
        study = studies.get(record['orthanc_study_id'])
        if study is None:
            # Its study is not imported (yet): the study change brings it
            return None
        return {
            'study': study,
            'series_instance_uid': record['series_instance_uid'],
            'modality': record['modality'],
            'series_number': record['series_number'],
            'description': record['description'],
            'body_part': record['body_part'],
            'number_of_instances': record['number_of_instances'],
            'last_update': record['last_update'],
            }

    @classmethod
    def upsert(cls, server, records, replace_series_of=()):
        """Store the series and update their studies' summaries.

        The series of the studies in replace_series_of that are not in
        records are deleted: those studies were read whole.
        """
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        # One lookup for the parents and the studies read whole
        studies = Study.orthanc_ids(server,
            {r['orthanc_study_id'] for r in records
                if r['orthanc_study_id']} | set(replace_series_of))
        created, changed = super().upsert(server, records, context=studies)
        replaced = {studies[i] for i in replace_series_of if i in studies}
        if replaced:
            # Unchanged series are kept too: compare Orthanc IDs
            kept = {r['orthanc_id'] for r in records}
            table = cls.__table__()
            cursor = Transaction().connection.cursor()
            stale = []
            for sub_ids in grouped_slice(list(replaced)):
                cursor.execute(*table.select(table.id, table.orthanc_id,
                        where=table.study.in_(list(sub_ids))))
                stale.extend(cls(id_) for id_, orthanc_id in cursor
                    if orthanc_id not in kept)
            if stale:
                cls.delete(stale)
        cls.update_studies(list(set(studies.values())))
        return created, changed

    @classmethod
    def update_studies(cls, study_ids):
        """Summarize the series of the studies: modalities and counts.

        Only the studies whose summary changed are written, grouped by
        summary: a page costs a few UPDATEs, not one per study.
        """
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        series = cls.__table__()
        study = Study.__table__()
        cursor = Transaction().connection.cursor()
        summary = {i: (set(), 0, 0) for i in study_ids}
        current = {}
        for sub_ids in grouped_slice(study_ids):
            sub_ids = list(sub_ids)
            cursor.execute(*series.select(
                    series.study, series.modality, Count(Literal('*')),
                    Sum(series.number_of_instances),
                    where=series.study.in_(sub_ids),
                    group_by=[series.study, series.modality]))
            for study_id, modality, n_series, n_instances in cursor:
                modalities, total_series, total_instances = summary[study_id]
                if modality:
                    modalities.add(modality)
                summary[study_id] = (modalities, total_series + n_series,
                    total_instances + (n_instances or 0))
            cursor.execute(*study.select(
                    study.id, study.modalities, study.number_of_series,
                    study.number_of_instances,
                    where=study.id.in_(sub_ids)))
            current.update((r[0], tuple(r[1:])) for r in cursor)
        changed = defaultdict(list)
        for study_id, (modalities, n_series, n_instances) in summary.items():
            values = (', '.join(sorted(modalities)) or None, n_series,
                n_instances)
            if current.get(study_id) != values:
                changed[values].append(study_id)
        if changed:
            cls._write_summaries(changed)

    @classmethod
    def _write_summaries(cls, changed):
        """Write {(modalities, series, instances): [study id]}, one UPDATE
        per summary and slice of ids.

        Not Study.write: it reads back and validates every study, for
        values computed here only.  The write date and user are set as it
        sets them: the study changed.
        """
        transaction = Transaction()
        Study = Pool().get('gnuhealth.orthanc.study')
        study = Study.__table__()
        cursor = transaction.connection.cursor()
        for (modalities, n_series, n_instances), ids in changed.items():
            for sub_ids in grouped_slice(ids):
                cursor.execute(*study.update(
                        [study.modalities, study.number_of_series,
                            study.number_of_instances, study.write_uid,
                            study.write_date],
                        [modalities, n_series, n_instances, transaction.user,
                            CurrentTimestamp()],
                        where=reduce_ids(study.id, sub_ids)))
        # Forget the studies read before, as account's Move.validate_move
        transaction.counter += 1
        for cache in transaction.cache.values():
            if Study.__name__ in cache:
                cache[Study.__name__].clear()
