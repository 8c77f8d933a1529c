# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"Orthanc studies and the Delete from Orthanc wizard."
import logging
from collections import defaultdict

from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction
from trytond.wizard import Button, StateTransition, StateView, Wizard

from trytond.modules.health_imaging.tools import search_in

from . import orthanc_client as oc
from .resource import VIEWER_FIELDS, OrthancResourceMixin, viewer_field
from .viewer import study_urls

logger = logging.getLogger(__name__)


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
