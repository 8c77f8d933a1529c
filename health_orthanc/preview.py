# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"The preview of a series: fetched from Orthanc, attached to results."
from collections import defaultdict

from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.transaction import without_check_access

from . import orthanc_client as oc
from .exceptions import OrthancResourceError
from .viewer import middle_instance


class SeriesPreviewMixin:
    "The preview of an Orthanc series and its buttons"
    __slots__ = ()

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
            with without_check_access():
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
