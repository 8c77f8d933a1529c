# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"Orthanc studies and series, and the studies of an imaging result."
import logging
from collections import defaultdict

from sql import Literal
from sql.aggregate import Count, Sum
from trytond import backend
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction
from trytond.wizard import Button, StateTransition, StateView, Wizard

from trytond.modules.health_imaging.tools import search_in

from . import legacy
from . import orthanc_client as oc
from .exceptions import OrthancResourceError
from .resource import OrthancResourceMixin
from .viewer import middle_instance, series_urls, study_urls

logger = logging.getLogger(__name__)
VIEWER_FIELDS = {
    'explorer_url': 'explorer',
    'web_viewer_url': 'web_viewer',
    'stone_url': 'stone',
    'ohif_url': 'ohif',
    }


def viewer_field(name, string, help):
    "A function field of a viewer URL, hidden when the server has none"
    return fields.Function(fields.Char(
            string, help=help, states={'invisible': ~Eval(name)}),
        'get_viewer_urls')


class OrthancStudy(OrthancResourceMixin, ModelSQL, ModelView):
    "Orthanc Study"
    __name__ = 'gnuhealth.orthanc.study'
    _rec_name = 'description'
    _orthanc_parent = ('gnuhealth.orthanc.patient', 'orthanc_patient_id')

    orthanc_patient = fields.Many2One(
        'gnuhealth.orthanc.patient', "Orthanc Patient", readonly=True,
        ondelete='CASCADE',
        domain=[('server', '=', Eval('server', -1))])
    patient = fields.Function(
        fields.Many2One('gnuhealth.patient', "Patient"),
        'get_patient', searcher='search_patient')
    patient_id = fields.Char("PatientID", readonly=True)
    study_instance_uid = fields.Char("StudyInstanceUID", readonly=True)
    study_datetime = fields.DateTime("Study Date and Time", readonly=True)
    study_date = fields.Date("Study Date", readonly=True)
    description = fields.Char("Description", readonly=True)
    accession_number = fields.Char("Accession Number", readonly=True)
    referring_physician = fields.Char("Referring Physician", readonly=True)
    institution = fields.Char("Institution", readonly=True)
    study_id = fields.Char("Study ID", readonly=True)
    modalities = fields.Char("Modalities", readonly=True)
    number_of_series = fields.Integer("Series", readonly=True)
    number_of_instances = fields.Integer("Instances", readonly=True)
    series = fields.One2Many(
        'gnuhealth.orthanc.series', 'study', "Series", readonly=True)
    explorer_url = viewer_field(
        'explorer_url', "Orthanc Explorer",
        "The study in Orthanc's own web interface.")
    stone_url = viewer_field(
        'stone_url', "Stone Web Viewer",
        "The study in the Stone Web Viewer (if Orthanc has the plugin).")
    ohif_url = viewer_field(
        'ohif_url', "OHIF Viewer",
        "The study in the OHIF viewer (if Orthanc has the plugin).")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [
            ('study_datetime', 'DESC NULLS LAST'),
            ('id', 'DESC'),
            ]
        t = cls.__table__()
        # Searched by the linking to imaging requests
        cls._sql_indexes.update({
                Index(t, (t.study_instance_uid, Index.Equality())),
                Index(t, (t.accession_number, Index.Equality())),
                })
        cls._buttons.update({
                'delete_from_orthanc': {
                    'icon': 'tryton-delete',
                    },
                })

    @classmethod
    def __register__(cls, module_name):
        # GNU Health 5.0's own module keeps its studies in another table and
        # GNU Health 4's model of this name, without our columns
        exist = backend.TableHandler.table_exist(cls._table)
        first = not exist or not (
            cls.__table_handler__(module_name).column_exist('orthanc_id'))
        if exist:
            legacy.rename_v4_columns(
                cls.__name__, cls.__table_handler__(module_name))
        super().__register__(module_name)
        if first and legacy.has_legacy_studies():
            legacy.migrate_studies()

    def get_rec_name(self, name):
        date = self.study_date.isoformat() if self.study_date else '?'
        return '%s %s (%s)' % (
            date, self.description or self.modalities or '',
            self.patient_id or '')

    @classmethod
    def search_rec_name(cls, name, clause):
        return search_in(clause, [
                'description', 'accession_number', 'patient_id',
                'study_instance_uid'])

    def get_patient(self, name):
        if self.orthanc_patient and self.orthanc_patient.patient:
            return self.orthanc_patient.patient.id

    @classmethod
    def search_patient(cls, name, clause):
        return [('orthanc_patient.patient' + clause[0][len(name):],)
            + tuple(clause[1:])]

    @classmethod
    def get_viewer_urls(cls, studies, names):
        "Build the viewer URLs from the stored plugins: no network call"
        result = {n: {} for n in names}
        for study in studies:
            urls = study_urls(study.server.base_url, study.server.plugins,
                study.orthanc_id, study.study_instance_uid)
            for name in names:
                result[name][study.id] = urls.get(VIEWER_FIELDS[name])
        return result

    @classmethod
    @ModelView.button_action('health_orthanc.wizard_study_delete')
    def delete_from_orthanc(cls, studies):
        "Open the Delete from Orthanc wizard (confirmation, then result)"
        pass

    @classmethod
    def remove_from_orthanc(cls, studies):
        """Delete the studies from their Orthanc server, then here.

        Each study Orthanc accepted to delete (or had not anymore) is
        deleted here; the others are left as they are.  A study read by
        an imaging result is not sent to Orthanc.  Nothing is raised: a
        study Orthanc deleted must not come back here because another
        failed, so the failures are returned for the caller to report.

        Returns the studies deleted and {study: user message} of the
        others.
        """
        pool = Pool()
        ResultStudy = pool.get(
            'gnuhealth.imaging.test.result-gnuhealth.orthanc.study')
        failures = {}
        linked = defaultdict(set)
        # The administrator must learn which results read them
        with Transaction().set_context(_check_access=False):
            for sub_studies in grouped_slice(studies):
                for link in ResultStudy.search([
                            ('study', 'in', [s.id for s in sub_studies]),
                            ]):
                    linked[link.study].add(link.result.rec_name)
        for study, results in linked.items():
            failures[study] = gettext(
                'health_orthanc.msg_study_delete_linked',
                study=study.rec_name, results=', '.join(sorted(results)))
        by_server = defaultdict(list)
        for study in studies:
            if study not in failures:
                by_server[study.server].append(study)
        accepted = []
        for server, server_studies in by_server.items():
            with server.get_client() as client:
                unreachable = None
                for study in server_studies:
                    if unreachable is not None:
                        # Do not wait for each study of an unreachable server
                        failures[study] = gettext(
                            'health_orthanc.msg_study_delete_failed',
                            study=study.rec_name, error=unreachable)
                        continue
                    try:
                        client.delete_study(study.orthanc_id)
                    except oc.OrthancNotFound:
                        # Already gone from Orthanc: only removed here
                        pass
                    except oc.OrthancError as exception:
                        error = server.log_error(exception)
                        failures[study] = gettext(
                            'health_orthanc.msg_study_delete_failed',
                            study=study.rec_name, error=error)
                        if isinstance(exception, oc.OrthancUnreachable):
                            unreachable = error
                        continue
                    accepted.append(study)
        if accepted:
            logger.info("Deleted %s studies from Orthanc", len(accepted))
            cls.delete(accepted)
        return accepted, failures

    @classmethod
    def _orthanc_values(cls, server, record, patients):
        return {
            'orthanc_patient': patients.get(record['orthanc_patient_id']),
            'patient_id': record['patient_id'],
            'study_instance_uid': record['study_instance_uid'],
            'study_datetime': record['study_datetime'],
            'study_date': record['study_date'],
            'description': record['description'],
            'accession_number': record['accession_number'],
            'referring_physician': record['referring_physician'],
            'institution': record['institution'],
            'study_id': record['study_id'],
            'last_update': record['last_update'],
            }


class OrthancSeries(OrthancResourceMixin, ModelSQL, ModelView):
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
    preview = fields.Binary(
        "Preview", readonly=True,
        help="The image in the middle of the series, rendered by Orthanc "
        "when asked with the Show Preview button.")
    preview_instance = fields.Char(
        "Preview Instance", readonly=True,
        help="The Orthanc ID of the instance of the preview.")
    preview_error = fields.Char(
        "Preview Error", readonly=True,
        states={'invisible': ~Eval('preview_error')},
        help="Why the last Show Preview could not fetch the preview of "
        "this series (cleared once it succeeds).")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [
            ('study', 'ASC'),
            ('series_number', 'ASC NULLS LAST'),
            ('id', 'ASC'),
            ]
        cls._buttons.update({
                'fetch_preview': {
                    'icon': 'tryton-refresh',
                    'depends': ['missing'],
                    'invisible': Eval('missing', False),
                    },
                'attach_preview': {
                    'icon': 'tryton-attach',
                    'depends': ['missing', 'preview_instance'],
                    'invisible': (Eval('missing', False)
                        & ~Eval('preview_instance')),
                    },
                })

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

    @classmethod
    @ModelView.button
    def fetch_preview(cls, series):
        """Render the middle instance of each series in Orthanc and store
        the PNG: two requests per series, only when asked.

        A series whose preview cannot be fetched does not stop the
        others: the previews fetched are stored and the reason of each
        failure is kept in its Preview Error.  Only when every series
        failed is an error raised (nothing would be stored anyway).
        """
        fetched, failures = cls._fetch_previews(series)
        if not fetched and failures:
            raise OrthancResourceError(cls._preview_failures(failures))

    @classmethod
    def _fetch_previews(cls, series):
        """Fetch and store the preview of each series.

        Return the series fetched and {series: user message} of the
        others, whose Preview Error is written (in the same write).
        """
        to_write = []
        fetched, failures = [], {}
        by_server = defaultdict(list)
        for record in series:
            by_server[record.server].append(record)
        for server, records in by_server.items():
            with server.get_client() as client:
                for record in records:
                    try:
                        instance = middle_instance(
                            client.get_series_instances(record.orthanc_id))
                        if instance is None:
                            failures[record] = gettext(
                                'health_orthanc.msg_series_no_instance',
                                series=record.rec_name)
                            continue
                        png = client.instance_preview(instance['ID'])
                    except oc.OrthancError as exception:
                        failures[record] = gettext(
                            'health_orthanc.msg_series_preview_failed',
                            series=record.rec_name,
                            error=server.log_error(exception))
                        continue
                    fetched.append(record)
                    to_write.extend(([record], {
                                'preview': png,
                                'preview_instance': instance['ID'],
                                'preview_error': None,
                                }))
        for record, message in failures.items():
            to_write.extend(([record], {'preview_error': message}))
        if to_write:
            # Readers of the series may ask for its preview
            with Transaction().set_context(_check_access=False):
                cls.write(*to_write)
        return fetched, failures

    @classmethod
    def _preview_failures(cls, failures):
        "Return the message of the series whose preview failed"
        if len(failures) == 1:
            message, = failures.values()
            return message
        return gettext('health_orthanc.msg_series_previews_failed',
            count=len(failures), failures='\n'.join(failures.values()))

    def preview_name(self):
        "Return the file name of the preview attached to a result"
        study = self.study
        date = study.study_date.isoformat() if study.study_date else ''
        parts = [date, self.modality or '',
            'series %s' % (self.series_number
                if self.series_number is not None else '?'),
            self.description or '']
        name = ' '.join(p for p in parts if p).replace('/', '-')
        return '%s (%s).png' % (name, (self.preview_instance or '')[:8])

    @classmethod
    @ModelView.button
    def attach_preview(cls, series):
        """Attach the preview of each series to the images of the imaging
        results that read its study, for the printed report.

        Refused when a result is done (its report is signed): it must be
        reset to draft first.  The preview is fetched first when there
        is none; a series whose preview cannot be fetched is left out
        (see fetch_preview) and the others are attached.  A result that
        already has it is left as is.
        """
        pool = Pool()
        ResultStudy = pool.get(
            'gnuhealth.imaging.test.result-gnuhealth.orthanc.study')
        Attachment = pool.get('ir.attachment')
        links = defaultdict(list)
        for link in ResultStudy.search([
                    ('study', 'in', list({s.study.id for s in series})),
                    ]):
            links[link.study.id].append(link.result)
        for record in series:
            if not links[record.study.id]:
                raise OrthancResourceError(gettext(
                        'health_orthanc.msg_series_no_result',
                        series=record.rec_name, study=record.study.rec_name))
            done = [r for r in links[record.study.id] if r.state == 'done']
            if done:
                raise OrthancResourceError(gettext(
                        'health_orthanc.msg_series_attach_result_done',
                        series=record.rec_name,
                        results=', '.join(sorted(
                                r.rec_name for r in done))))
        to_fetch = [s for s in series if not s.preview_instance]
        if to_fetch:
            fetched, failures = cls._fetch_previews(to_fetch)
            if failures and len(failures) == len(series):
                raise OrthancResourceError(cls._preview_failures(failures))
            series = cls.browse([s.id for s in series if s not in failures])
        resources = {str(r) for rs in links.values() for r in rs}
        existing = {(str(a.resource), a.name) for a in Attachment.search([
                    ('resource', 'in', list(resources)),
                    ])}
        to_create = []
        for record in series:
            name = record.preview_name()
            for result in links[record.study.id]:
                if (str(result), name) in existing:
                    continue
                existing.add((str(result), name))
                to_create.append({
                        'resource': str(result),
                        'name': name,
                        'type': 'data',
                        'data': record.preview,
                        'description': gettext(
                            'health_orthanc.msg_preview_description',
                            series=record.rec_name,
                            instance=record.preview_instance),
                        })
        if to_create:
            Attachment.create(to_create)

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
                changed[values].append(Study(study_id))
        to_write = []
        for (modalities, n_series, n_instances), records in changed.items():
            to_write.extend((records, {
                        'modalities': modalities,
                        'number_of_series': n_series,
                        'number_of_instances': n_instances,
                        }))
        if to_write:
            with Transaction().set_context(orthanc_sync=True):
                Study.write(*to_write)


class DeleteStudiesStart(ModelView):
    "Delete Studies from Orthanc"
    __name__ = 'gnuhealth.orthanc.study.delete.start'

    studies = fields.Many2Many(
        'gnuhealth.orthanc.study', None, None, "Studies", readonly=True)


class DeleteStudiesResult(ModelView):
    "Delete Studies from Orthanc Result"
    __name__ = 'gnuhealth.orthanc.study.delete.result'

    deleted = fields.Integer("Deleted", readonly=True)
    failed = fields.Integer("Not Deleted", readonly=True)
    message = fields.Text("Message", readonly=True)
    studies = fields.Many2Many(
        'gnuhealth.orthanc.study', None, None, "Studies Not Deleted",
        readonly=True)


class DeleteStudies(Wizard):
    """Delete Studies from Orthanc

    The studies Orthanc deleted are deleted here too and kept deleted
    (the transaction commits); the others are listed with the reason, so
    a failure never brings back a study that is gone from Orthanc.
    """
    __name__ = 'gnuhealth.orthanc.study.delete'

    start = StateView(
        'gnuhealth.orthanc.study.delete.start',
        'health_orthanc.study_delete_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel', default=True),
            Button("Delete", 'remove', 'tryton-delete'),
            ])
    remove = StateTransition()
    result = StateView(
        'gnuhealth.orthanc.study.delete.result',
        'health_orthanc.study_delete_result_view_form', [
            Button("Close", 'end', 'tryton-close', default=True),
            ])

    def default_start(self, fields):
        return {'studies': [s.id for s in self.records]}

    def transition_remove(self):
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        deleted, failures = Study.remove_from_orthanc(self.records)
        if not failures:
            return 'end'
        self.result.deleted = len(deleted)
        self.result.failed = len(failures)
        self.result.message = '\n'.join([gettext(
                    'health_orthanc.msg_study_delete_partial',
                    deleted=len(deleted), failed=len(failures))]
            + list(failures.values()))
        self.result.studies = list(failures)
        return 'result'

    def default_result(self, fields):
        return {
            'deleted': self.result.deleted,
            'failed': self.result.failed,
            'message': self.result.message,
            'studies': [getattr(s, 'id', s) for s in self.result.studies],
            }

    def end(self):
        return 'reload'


class ImagingTestResultStudy(ModelSQL):
    "Imaging Result - Orthanc Study"
    __name__ = 'gnuhealth.imaging.test.result-gnuhealth.orthanc.study'

    result = fields.Many2One(
        'gnuhealth.imaging.test.result', "Result", required=True,
        ondelete='CASCADE')
    study = fields.Many2One(
        'gnuhealth.orthanc.study', "Study", required=True,
        ondelete='RESTRICT')

    @classmethod
    def __register__(cls, module_name):
        # Registered after the studies, which the update may have created
        # from GNU Health's own module
        migrate = not backend.TableHandler.table_exist(cls._table)
        super().__register__(module_name)
        study_h = Pool().get('gnuhealth.orthanc.study').__table_handler__()
        if migrate:
            legacy.migrate_result_studies(cls.__table__(),
                v4_results=study_h.column_exist('imaging_test'))


class ImagingTestResult(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging.test.result'

    studies = fields.Many2Many(
        'gnuhealth.imaging.test.result-gnuhealth.orthanc.study',
        'result', 'study', "Studies",
        domain=[('patient', '=', Eval('patient', -1))],
        help="The Orthanc studies of the patient that this result reads.")
