# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The completed report of a result, stored into each of its studies as a
DICOM Encapsulated PDF instance (``report_dicom`` builds it) by a queued
task after the commit."""
import datetime
import logging
import shutil
from collections import defaultdict

from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Workflow, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import timezone as tz
from trytond.transaction import Transaction, without_check_access

from trytond.modules.health_imaging.access import (
    DomainAccessMixin, ReadonlyFieldsMixin, server_queue)

from . import orthanc_client as oc
from . import report_dicom
from .worklist_publish import company_zone

logger = logging.getLogger(__name__)

REPORT_STATES = [
    (None, ''),
    ('pending', "To Store"),
    ('stored', "Stored"),
    ('failed', "Not Stored"),
    ]
#: LibreOffice's command, which trytond runs to convert reports
SOFFICE = 'soffice'


class StudyReport(
        DomainAccessMixin, ReadonlyFieldsMixin, ModelSQL, ModelView):
    "Report in Study"
    __name__ = 'gnuhealth.orthanc.study.report'

    result = fields.Many2One(
        'gnuhealth.imaging.test.result', "Result", required=True,
        readonly=True, ondelete='RESTRICT')
    study = fields.Many2One(
        'gnuhealth.orthanc.study', "Study", required=True, readonly=True,
        ondelete='CASCADE')
    revision = fields.Integer(
        "Revision", readonly=True,
        help="The completion of the result that this report is "
        "(1 for the first).")
    orthanc_id = fields.Char(
        "Orthanc Instance", readonly=True,
        help="Orthanc's identifier of the report instance in the study.")
    series_orthanc_id = fields.Char(
        "Orthanc Series", readonly=True,
        help="Orthanc's identifier of the report series of the study.")
    date = fields.DateTime("Stored", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('date', 'DESC'), ('id', 'DESC')]
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t, (t.result, Index.Range())),
                Index(t, (t.series_orthanc_id, Index.Equality())),
                })

    def get_rec_name(self, name):
        return '%s (%s)' % (self.result.rec_name, self.study.rec_name)

    @classmethod
    def report_series(cls, server, orthanc_ids):
        """Return the Orthanc IDs among orthanc_ids of the report series
        stored in the studies of server"""
        Study = Pool().get('gnuhealth.orthanc.study')
        report = cls.__table__()
        return Study.held_on_server(
            report, report.series_orthanc_id, server, orthanc_ids)


class ImagingTestResult(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging.test.result'

    report_revision = fields.Integer(
        "Report Revision", readonly=True,
        help="How many times the result was completed.")
    study_report_state = fields.Selection(
        REPORT_STATES, "Report in Studies", readonly=True,
        help="Whether the completed report is stored in the result's "
        "studies, as a PDF document that viewers show with the images.")
    study_report_state_string = study_report_state.translated(
        'study_report_state')
    study_report_error = fields.Text(
        "Report Error", readonly=True,
        states={'invisible': ~Eval('study_report_error')})
    study_reports = fields.One2Many(
        'gnuhealth.orthanc.study.report', 'result', "Reports in Studies",
        readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'store_study_reports': {
                    'invisible': Eval('study_report_state') != 'failed',
                    'icon': 'tryton-refresh',
                    'depends': ['study_report_state'],
                    },
                })

    @classmethod
    def copy(cls, results, default=None):
        default = default.copy() if default is not None else {}
        for name in ['report_revision', 'study_report_state',
                'study_report_error', 'study_reports']:
            default.setdefault(name)
        return super().copy(results, default=default)

    @classmethod
    @ModelView.button
    @Workflow.transition('done')
    def complete(cls, results):
        super().complete(results)
        cls.queue_study_reports(results, revise=True)

    @classmethod
    @ModelView.button
    def store_study_reports(cls, results):
        "Try again to store the reports that were not stored"
        cls.queue_study_reports(results)

    @classmethod
    def queue_study_reports(cls, results, revise=False):
        """Mark the reports of the results To Store and store them after
        the commit (update_study_reports); revise for a new completion"""
        to_write, queued = [], []
        for result in results:
            values = {'study_report_error': None}
            if revise:
                values['report_revision'] = (result.report_revision or 0) + 1
            if result.studies or result.study_reports:
                values['study_report_state'] = 'pending'
                queued.append(result)
            else:
                values['study_report_state'] = None
            to_write.extend(([result], values))
        if to_write:
            with without_check_access():
                cls.write(*to_write)
        if queued:
            # The client's context must not delay nor batch the store
            with server_queue():
                cls.__queue__.update_study_reports(queued)

    @classmethod
    def studies_removed(cls, results):
        """Queue the removal of the reports stored in the studies that the
        results do not read any more"""
        results = cls.browse([r.id for r in results])
        cls.queue_study_reports([r for r in results
                if {p.study for p in r.study_reports} - set(r.studies)])

    @classmethod
    def update_study_reports(cls, results):
        """Bring the reports in Orthanc in line with the results.

        The queued task of queue_study_reports.  A completed result gets
        its report, of its current revision, in each of its studies; an
        older revision is deleted once the new one is stored (a draft
        result keeps it); a study no longer read by the result loses it.
        What it does depends on the committed state only, so running it
        twice does no harm.  A failure is kept on the result, never
        raised: the result stays completed.
        """
        cls.lock(results)
        results = cls.browse([r.id for r in results])
        plans = {r: r._plan_study_reports() for r in results}
        outcome = {}
        for result, (to_store, replaced, stale) in plans.items():
            # Filled as it goes: what was done before an error is kept
            outcome[result] = stored, deleted, failures = [], [], {}
            try:
                result._apply_study_reports(to_store, replaced, stale,
                    stored, deleted, failures)
            except Exception:
                # One bad result must not leave the others of the task
                # To Store: it fails alone, with a Retry
                logger.exception("Report of %s not stored", result.rec_name)
                failures[result] = result._unexpected_failure()
        cls._write_study_reports(outcome)

    def _plan_study_reports(self):
        """Return the studies to store the report into, the reports that
        it replaces and the reports of studies not read any more"""
        studies = list(self.studies)
        stale = [r for r in self.study_reports if r.study not in studies]
        if self.state != 'done':
            return [], [], stale
        current = {r.study for r in self.study_reports
            if r.revision == self.report_revision}
        replaced = [r for r in self.study_reports
            if r.study in studies and r.revision != self.report_revision]
        return [s for s in studies if s not in current], replaced, stale

    def _apply_study_reports(self, to_store, replaced, stale, stored,
            deleted, failures):
        "Store and delete in Orthanc; add to stored, deleted and failures"
        pdf = error = None
        # The other studies hold the current revision already (stored by
        # an earlier run whose delete failed): their old one goes now
        current = set(self.studies) - set(to_store)
        if to_store:
            try:
                pdf, error = self._report_pdf()
            except Exception:
                # The template, its action or LibreOffice (a time-out)
                logger.exception(
                    "Report of %s not rendered", self.rec_name)
                pdf, error = None, self._unexpected_failure()
            if error:
                failures.update(dict.fromkeys(to_store, error))
                to_store = []
        stored_studies = set()
        by_server = defaultdict(lambda: ([], []))
        for study in to_store:
            by_server[study.server][0].append(study)
        for server, (studies, _) in list(by_server.items()):
            stored_studies.update(self._store_reports(
                    server, studies, pdf, stored, failures))
        for report in stale + [r for r in replaced
                if r.study in stored_studies or r.study in current]:
            by_server[report.study.server][1].append(report)
        for server, (_, reports) in by_server.items():
            self._delete_reports(server, reports, deleted, failures)

    def _report_pdf(self):
        """Return (the result's printed report as PDF, None), or (None,
        why not).

        The report is rendered as printed, and converted to PDF whatever
        the output format of its action: a study holds a PDF document.
        """
        pool = Pool()
        ActionReport = pool.get('ir.action.report')
        Report = pool.get(
            'gnuhealth.imaging.test.result.report', type='report')
        if not shutil.which(SOFFICE):
            return None, gettext(
                'health_orthanc.msg_study_report_no_libreoffice',
                result=self.rec_name)
        action, = ActionReport.search(
            [('report_name', '=', Report.__name__)], limit=1)
        # Not saved: the printed report keeps its format
        action.extension = 'pdf'
        records = Report._get_records([self.id], self.__name__, {})
        extension, content = Report._execute(records, {}, {}, action)
        content = bytes(content)
        if extension != 'pdf' or not report_dicom.is_pdf(content):
            return None, gettext(
                'health_orthanc.msg_study_report_conversion_failed',
                result=self.rec_name, extension=extension)
        return content, None

    def _store_reports(self, server, studies, pdf, stored, failures):
        "Create the report instance in each study; return those stored"
        done = []
        try:
            with server.get_client() as client:
                for study in studies:
                    try:
                        answer = client.create_dicom(
                            self._report_body(client, study, pdf))
                    except oc.OrthancError as exception:
                        if isinstance(exception, oc.OrthancUnreachable):
                            raise
                        failures[study] = self._orthanc_failure(
                            server, study, exception)
                        continue
                    except Exception:
                        logger.exception("Report of %s not stored in %s",
                            self.rec_name, study.rec_name)
                        failures[study] = self._unexpected_failure()
                        continue
                    stored.append({
                            'result': self.id,
                            'study': study.id,
                            'revision': self.report_revision,
                            'orthanc_id': answer['ID'],
                            'series_orthanc_id': answer.get('ParentSeries'),
                            'date': datetime.datetime.now(),
                            })
                    done.append(study)
        except oc.OrthancError as exception:
            for study in studies:
                if study not in done:
                    failures.setdefault(study, self._orthanc_failure(
                            server, study, exception))
        return done

    def _delete_reports(self, server, reports, deleted, failures):
        "Delete the report instances from Orthanc (already gone is fine)"
        try:
            with server.get_client() as client:
                for report in reports:
                    client.delete_instance(report.orthanc_id)
                    deleted.append(report)
        except oc.OrthancError as exception:
            for report in reports:
                if report not in deleted:
                    failures.setdefault(report.study, self._orthanc_failure(
                            server, report.study, exception))

    def _unexpected_failure(self):
        return gettext('health_orthanc.msg_study_report_unexpected',
            result=self.rec_name)

    def _orthanc_failure(self, server, study, exception):
        return gettext('health_orthanc.msg_study_report_orthanc_failed',
            result=self.rec_name, study=study.rec_name,
            error=server.log_error(exception))

    def _report_body(self, client, study, pdf):
        professional = None
        if self.doctor and self.doctor.party:
            party = self.doctor.party
            professional = report_dicom.person_name(
                party.lastname or party.name,
                party.name if party.lastname else None)
        return report_dicom.create_dicom_body(pdf,
            parent_study=study.orthanc_id,
            study_instance_uid=study.study_instance_uid,
            result_key='%s:%s' % (Transaction().database.name, self.id),
            revision=self.report_revision,
            result_number=self.number or '',
            completed=self._completed_local(),
            professional=professional,
            title=self.requested_test.name if self.requested_test else '',
            character_set=self._character_set(client, study))

    def _completed_local(self):
        "The completion as an aware date-time of the company's zone"
        completed = (self.completed_date or datetime.datetime.now()
            ).replace(tzinfo=tz.UTC)
        zone = company_zone()
        return completed.astimezone(zone) if zone else completed

    @staticmethod
    def _character_set(client, study):
        """The Specific Character Set of an instance of the study, which
        Orthanc gives the new instance too (two small requests)"""
        series = [s for s in study.series if s.modality != 'SR']
        series = series or list(study.series)
        if not series:
            return None
        instances = client.get_series(series[0].orthanc_id).get('Instances')
        if not instances:
            return None
        value = client.instance_tag(instances[0], '0008-0005')
        return value.split('\\')[-1].strip() if value else None

    @classmethod
    def _write_study_reports(cls, outcome):
        """Create the reports stored, delete those deleted, record both in
        the audit and write the state of each result: one call each"""
        pool = Pool()
        StudyReport = pool.get('gnuhealth.orthanc.study.report')
        Audit = pool.get('gnuhealth.orthanc.audit')
        to_create, to_delete, to_write = [], [], []
        for result, (stored, deleted, failures) in outcome.items():
            to_create.extend(stored)
            to_delete.extend(deleted)
            to_write.extend(([result], result._study_report_outcome(
                        stored, deleted, failures)))
        with without_check_access():
            created = StudyReport.create(to_create)
            Audit.study_reports(created, deleted=to_delete)
            StudyReport.delete(to_delete)
            if to_write:
                cls.write(*to_write)

    def _study_report_outcome(self, stored, deleted, failures):
        if failures:
            logger.warning("Report of %s not stored in %s studies",
                self.rec_name, len(failures))
            return {
                'study_report_state': 'failed',
                'study_report_error': '\n'.join(sorted(
                        set(failures.values()))),
                }
        kept = set(self.study_reports) - set(deleted)
        return {
            'study_report_state': 'stored' if kept or stored else None,
            'study_report_error': None,
            }
