# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Imaging requests on Orthanc: their worklist entries and their studies.

A request that is requested is published as a DICOM Modality Worklist entry
on the Orthanc server that takes its modality; cancelled or done, the entry
is removed.  A study that arrives with the StudyInstanceUID or the
accession number of a request is linked to it and to its result, unless
its patient is not the request's: then it is listed for review.
"""
import datetime
import logging
from collections import defaultdict

from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.tools import timezone as tz
from trytond.transaction import Transaction

from . import orthanc_client as oc
from . import worklist
from .server import error_message

logger = logging.getLogger(__name__)

WORKLIST_STATES = [
    (None, ''),
    ('published', "Published"),
    ('failed', "Not Published"),
    ('removed', "Removed"),
    ('stale', "Not Removed"),
    ]
REQUEST_LINKS = [
    (None, ''),
    ('linked', "Linked"),
    ('patient_differs', "Patient differs from the request's"),
    ('patient_unknown', "Patient not linked"),
    ]
#: The request states whose studies may still arrive
OPEN_STATES = ['requested', 'done']


def _local(value):
    "Return a UTC datetime of the database in the company's time zone"
    pool = Pool()
    Company = pool.get('company.company')
    company_id = Transaction().context.get('company')
    if not value or not company_id:
        return value
    company = Company(company_id)
    if not company.timezone:
        return value
    zone = tz.get_tzinfo(company.timezone)
    return value.replace(tzinfo=tz.UTC).astimezone(zone).replace(tzinfo=None)


class ImagingTestRequest(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging.test.request'

    worklist_state = fields.Selection(
        WORKLIST_STATES, "Worklist", readonly=True,
        help="Whether the modalities see this test in their DICOM "
        "worklist.")
    worklist_server = fields.Many2One(
        'gnuhealth.orthanc.config', "Worklist Server", readonly=True,
        ondelete='SET NULL')
    worklist_entry = fields.Char(
        "Worklist Entry", readonly=True,
        help="The file in the worklist folder, or the ID of the worklist "
        "in Orthanc.")
    worklist_error = fields.Text(
        "Worklist Error", readonly=True,
        states={'invisible': ~Eval('worklist_error')})
    studies = fields.One2Many(
        'gnuhealth.orthanc.study', 'request', "Orthanc Studies",
        readonly=True,
        help="The studies received for this request, found by their "
        "StudyInstanceUID or accession number.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'update_worklist': {
                    'invisible': ~(
                        ((Eval('state') == 'requested')
                            & (Eval('worklist_state') != 'published'))
                        | (Eval('state').in_(['done', 'cancelled'])
                            & (Eval('worklist_state') == 'stale'))),
                    'icon': 'tryton-refresh',
                    'depends': ['state', 'worklist_state'],
                    },
                })

    @classmethod
    def copy(cls, requests, default=None):
        default = default.copy() if default is not None else {}
        for name in ['worklist_state', 'worklist_server', 'worklist_entry',
                'worklist_error', 'studies']:
            default.setdefault(name)
        return super().copy(requests, default=default)

    @classmethod
    def requested(cls, requests):
        super().requested(requests)
        cls.publish_worklists([r for r in requests if r.state == 'requested'])

    @classmethod
    def cancel(cls, requests):
        super().cancel(requests)
        cls.remove_worklists([r for r in requests if r.state == 'cancelled'])

    @classmethod
    def done(cls, requests):
        super().done(requests)
        cls.remove_worklists([r for r in requests if r.state == 'done'])

    @classmethod
    @ModelView.button
    def update_worklist(cls, requests):
        "Publish or remove the entries again after a failure"
        cls.publish_worklists([
                r for r in requests if r.state == 'requested'
                and r.worklist_state != 'published'])
        cls.remove_worklists([
                r for r in requests if r.state in {'done', 'cancelled'}])

    # -- worklist -----------------------------------------------------------
    def get_worklist_entry(self, server):
        "Return the worklist entry of the request (see worklist.py)"
        party = self.patient.party
        doctor = self.doctor.party if self.doctor else None
        test = self.requested_test
        return {
            'accession_number': self.accession_number,
            'study_instance_uid': self.study_instance_uid,
            'patient_id': party.ref,
            'patient_family_name': party.lastname,
            'patient_given_name': party.name,
            'patient_birth_date': party.dob,
            'patient_sex': party.gender,
            'modality': test.test_type.code if test.test_type else None,
            'procedure': test.name,
            'procedure_code': test.code,
            'scheduled': _local(self.date),
            'station_aet': server.worklist_station_aet,
            'requesting_physician_family_name': (
                doctor.lastname if doctor else None),
            'requesting_physician_given_name': (
                doctor.name if doctor else None),
            'urgent': self.urgent,
            'comment': self.comment,
            }

    @classmethod
    def worklist_servers(cls):
        "Return the servers that publish worklists, in order of preference"
        Server = Pool().get('gnuhealth.orthanc.config')
        return Server.search(
            [('publish_worklists', '=', True)], order=[('id', 'ASC')])

    @classmethod
    def publish_worklists(cls, requests):
        """Publish the worklist entries of the requests.

        A failure never stops the request: it is recorded on the request
        (Worklist "Not Published" and the error), and the Update Worklist
        button tries again.  Without any server publishing worklists,
        nothing is done.
        """
        requests = [r for r in requests if r.accession_number]
        servers = cls.worklist_servers()
        if not requests or not servers:
            return
        choices = [(s, s.worklist_modalities) for s in servers]
        by_server = defaultdict(list)
        outcome = {}
        for request in requests:
            test = request.requested_test
            modality = test.test_type.code if test.test_type else None
            server = worklist.choose_server(choices, modality)
            if server is None:
                outcome[request] = cls._worklist_failure(None, gettext(
                        'health_orthanc.msg_worklist_no_server',
                        request=request.rec_name, modality=modality or '?'))
            else:
                by_server[server].append(request)
        for server, server_requests in by_server.items():
            if server.worklist_folder:
                outcome.update(cls._publish_folder(server, server_requests))
            else:
                outcome.update(cls._publish_rest(server, server_requests))
        cls._write_worklist(outcome)

    @staticmethod
    def _worklist_failure(server, message, state='failed'):
        return {
            'worklist_state': state,
            'worklist_server': server.id if server else None,
            'worklist_error': message,
            }

    @staticmethod
    def _worklist_success(server, entry, state='published'):
        return {
            'worklist_state': state,
            'worklist_server': server.id,
            'worklist_entry': entry,
            'worklist_error': None,
            }

    @classmethod
    def _publish_folder(cls, server, requests):
        outcome = {}
        for request in requests:
            try:
                name = worklist.write_file(
                    server.worklist_folder,
                    request.get_worklist_entry(server))
            except worklist.WorklistError as exception:
                logger.warning("Worklist of %s on %s: %s",
                    request.rec_name, server.label, exception)
                outcome[request] = cls._worklist_failure(server, gettext(
                        'health_orthanc.msg_worklist_folder_failed',
                        request=request.rec_name, server=server.label,
                        folder=server.worklist_folder, error=str(exception)))
            else:
                outcome[request] = cls._worklist_success(server, name)
        return outcome

    @classmethod
    def _publish_rest(cls, server, requests):
        outcome = {}
        try:
            with server.get_client() as client:
                if not worklist.rest_available(client):
                    message = gettext(
                        'health_orthanc.msg_worklist_no_rest',
                        server=server.label)
                    return {r: cls._worklist_failure(server, message)
                        for r in requests}
                for request in requests:
                    try:
                        entry_id = worklist.rest_create(
                            client, request.get_worklist_entry(server))
                    except worklist.WorklistError as exception:
                        outcome[request] = cls._worklist_failure(
                            server, gettext(
                                'health_orthanc.msg_worklist_invalid',
                                request=request.rec_name,
                                error=str(exception)))
                    else:
                        outcome[request] = cls._worklist_success(
                            server, entry_id)
        except oc.OrthancError as exception:
            logger.warning("Worklists on %s: %s", server.label, exception)
            message = gettext(
                'health_orthanc.msg_worklist_orthanc_failed',
                server=server.label,
                error=error_message(exception, server.domain))
            for request in requests:
                outcome.setdefault(
                    request, cls._worklist_failure(server, message))
        return outcome

    @classmethod
    def remove_worklists(cls, requests):
        """Remove the published entries of the requests.

        An entry that cannot be removed is recorded as "Not Removed" with
        the error; the Update Worklist button tries again.
        """
        by_server = defaultdict(list)
        for request in requests:
            if (request.worklist_state in {'published', 'stale'}
                    and request.worklist_server and request.worklist_entry):
                by_server[request.worklist_server].append(request)
        outcome = {}
        for server, server_requests in by_server.items():
            if server.worklist_folder and server_requests[0].worklist_entry \
                    .endswith(worklist.SUFFIX):
                for request in server_requests:
                    try:
                        worklist.remove_file(
                            server.worklist_folder, request.worklist_entry)
                    except worklist.WorklistError as exception:
                        outcome[request] = cls._worklist_failure(
                            server, gettext(
                                'health_orthanc.msg_worklist_remove_failed',
                                request=request.rec_name,
                                server=server.label, error=str(exception)),
                            state='stale')
                    else:
                        outcome[request] = cls._worklist_success(
                            server, None, state='removed')
                continue
            try:
                with server.get_client() as client:
                    for request in server_requests:
                        worklist.rest_delete(client, request.worklist_entry)
                        outcome[request] = cls._worklist_success(
                            server, None, state='removed')
            except oc.OrthancError as exception:
                message = gettext(
                    'health_orthanc.msg_worklist_remove_failed',
                    request=', '.join(r.rec_name for r in server_requests
                        if r not in outcome),
                    server=server.label,
                    error=error_message(exception, server.domain))
                for request in server_requests:
                    outcome.setdefault(request, cls._worklist_failure(
                            server, message, state='stale'))
        cls._write_worklist(outcome)

    @classmethod
    def _write_worklist(cls, outcome):
        "Write the worklist outcome of each request in one call"
        to_write = []
        for request, values in outcome.items():
            to_write.extend(([request], values))
        if to_write:
            with Transaction().set_context(_check_access=False):
                cls.write(*to_write)

    # -- studies ------------------------------------------------------------
    @classmethod
    def link_studies(cls, studies):
        """Link the studies to the requests they perform, in one batch.

        A study matches the request whose StudyInstanceUID it has, else
        the request whose accession number it has (requested or done).
        It is linked only when its Orthanc patient is linked to the
        request's patient (the linking rule is tried first on unlinked
        ones); otherwise it is left for review with the reason.
        Linked studies are added to the request's result, created if
        needed, and the request is marked performed and done.
        """
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        studies = [s for s in studies if not s.request]
        uids = {s.study_instance_uid for s in studies if s.study_instance_uid}
        accessions = {s.accession_number.strip() for s in studies
            if s.accession_number and s.accession_number.strip()}
        by_uid, by_accession = {}, {}
        for name, values, index in [
                ('study_instance_uid', uids, by_uid),
                ('accession_number', accessions, by_accession)]:
            for sub_values in grouped_slice(list(values)):
                for request in cls.search([
                            (name, 'in', list(sub_values)),
                            ('state', 'in', OPEN_STATES),
                            ]):
                    index[getattr(request, name)] = request
        matches = {}
        for study in studies:
            request = by_uid.get(study.study_instance_uid) or by_accession.get(
                (study.accession_number or '').strip())
            if request:
                matches[study.id] = request
        # Studies listed for review whose request is gone or cancelled
        stale = [s for s in studies
            if s.request_link and s.id not in matches]
        if not matches and not stale:
            return
        unlinked = {s.orthanc_patient for s in studies
            if s.id in matches and s.orthanc_patient
            and not s.orthanc_patient.patient
            and s.orthanc_patient.link_state != 'manual'}
        if unlinked:
            OrthancPatient.link(list(unlinked))
        studies = Study.browse([s.id for s in studies])
        decisions = defaultdict(list)
        linked = defaultdict(list)
        for study in studies:
            request = matches.get(study.id)
            if request is None:
                if study.request_link:
                    decisions[(None, None, None)].append(study)
                continue
            patient = (study.orthanc_patient.patient
                if study.orthanc_patient else None)
            if patient is None:
                decision = (None, 'patient_unknown', request.id)
            elif patient != request.patient:
                decision = (None, 'patient_differs', request.id)
            else:
                decision = (request.id, 'linked', None)
                linked[request].append(study)
            if (getattr(study.request, 'id', None), study.request_link,
                    getattr(study.request_candidate, 'id', None)
                    ) != decision:
                decisions[decision].append(study)
        to_write = []
        for (request, state, candidate), records in decisions.items():
            to_write.extend((records, {
                        'request': request,
                        'request_link': state,
                        'request_candidate': candidate,
                        }))
        if to_write:
            with Transaction().set_context(
                    orthanc_sync=True, _check_access=False):
                Study.write(*to_write)
        if linked:
            cls.perform(linked)

    @classmethod
    def perform(cls, studies_of):
        """Attach the studies to the results of their requests and mark the
        requests performed.

        studies_of is {request: [studies]}; the missing results are
        created (one create), their date being the study's.
        """
        pool = Pool()
        Result = pool.get('gnuhealth.imaging.test.result')
        ResultStudy = pool.get(
            'gnuhealth.imaging.test.result-gnuhealth.orthanc.study')
        requests = list(studies_of)

        def performed(request):
            dates = [s.study_datetime for s in studies_of[request]
                if s.study_datetime]
            return min(dates) if dates else datetime.datetime.now()

        results = {}
        for sub_requests in grouped_slice(requests):
            for result in Result.search([
                        ('request', 'in', [r.id for r in sub_requests])]):
                results[result.request] = result
        to_create = [dict(Result.values_from_request(r), date=performed(r))
            for r in requests if r not in results]
        with Transaction().set_context(_check_access=False):
            if to_create:
                for result in Result.create(to_create):
                    results[result.request] = result
            pairs = {(results[r].id, s.id)
                for r, studies in studies_of.items() for s in studies}
            existing = set()
            for sub_results in grouped_slice(
                    list({r for r, _ in pairs})):
                existing.update((l.result.id, l.study.id)
                    for l in ResultStudy.search([
                            ('result', 'in', list(sub_results)),
                            ]))
            new_pairs = sorted(pairs - existing)
            if new_pairs:
                ResultStudy.create([{'result': r, 'study': s}
                        for r, s in new_pairs])
            to_write = []
            for request in requests:
                if not request.performed_date:
                    to_write.extend(([request], {
                                'performed_date': performed(request),
                                }))
            if to_write:
                cls.write(*to_write)
            cls.done([r for r in requests if r.state == 'requested'])


class OrthancStudy(metaclass=PoolMeta):
    __name__ = 'gnuhealth.orthanc.study'

    request = fields.Many2One(
        'gnuhealth.imaging.test.request', "Imaging Request", readonly=True,
        ondelete='SET NULL',
        help="The imaging request this study performs, found by its "
        "StudyInstanceUID or accession number.")
    request_link = fields.Selection(
        REQUEST_LINKS, "Request Link", readonly=True,
        help="Why a study carrying a request's identifiers is not linked "
        "to it: linking would show one person's images in another's "
        "record.")
    request_candidate = fields.Many2One(
        'gnuhealth.imaging.test.request', "Matching Request", readonly=True,
        ondelete='SET NULL',
        states={'invisible': ~Eval('request_candidate')},
        help="The request whose identifiers the study carries, not linked "
        "because the patients do not match.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'link_request': {
                    'invisible': ~Eval('request_link').in_(
                        ['patient_differs', 'patient_unknown']),
                    'icon': 'tryton-link',
                    'depends': ['request_link'],
                    },
                })

    @classmethod
    def upsert(cls, server, records):
        "Store the page, then link its studies to their requests"
        created, updated = super().upsert(server, records)
        Request = Pool().get('gnuhealth.imaging.test.request')
        Request.link_studies(cls.browse(created + updated))
        return created, updated

    @classmethod
    @ModelView.button
    def link_request(cls, studies):
        """Try the link again, e.g. after the Orthanc patient was linked
        by hand to the request's patient"""
        Request = Pool().get('gnuhealth.imaging.test.request')
        Request.link_studies(studies)
