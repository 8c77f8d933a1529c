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

from sql import For
from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice, reduce_ids
from trytond.tools import timezone as tz
from trytond.transaction import Transaction

from . import linking
from . import orthanc_client as oc
from . import worklist
from .exceptions import OrthancWorklistError
from .patient import KEPT_LINKS

logger = logging.getLogger(__name__)

WORKLIST_STATES = [
    (None, ''),
    ('pending', "To Publish"),
    ('published', "Published"),
    ('failed', "Not Published"),
    ('removing', "To Remove"),
    ('removed', "Removed"),
    ('stale', "Not Removed"),
    ]
#: The worklist states of a request whose entry may be on a server
ENTRY_STATES = {'pending', 'published', 'removing', 'stale'}
REQUEST_LINKS = [
    (None, ''),
    ('linked', "Linked"),
    ('patient_differs', "Patient differs from the request's"),
    ('patient_unknown', "Patient not linked"),
    ('result_done', "Result already completed"),
    ]
#: The links of the studies listed for review
REVIEW_LINKS = ['patient_differs', 'patient_unknown', 'result_done']
#: The request states whose studies may still arrive
OPEN_STATES = ['requested', 'done']
#: The link states of an Orthanc patient that an order may decide: its
#: PatientID names no local patient.  Not a missing PatientID: Orthanc
#: files every study without one under the same patient.
ORDER_LINKABLE = {linking.NO_MATCH}


_UNSET = object()


def _zone():
    """Return the time zone of the company of the context (or of the only
    company, for the scheduler that runs without one), or None"""
    Company = Pool().get('company.company')
    company_id = Transaction().context.get('company')
    if company_id:
        company = Company(company_id)
    else:
        companies = Company.search([], limit=2)
        if len(companies) != 1:
            return None
        company, = companies
    return tz.get_tzinfo(company.timezone) if company.timezone else None


def _local(value, zone):
    "Return a UTC datetime of the database in the time zone (of _zone)"
    if not (value and zone):
        return value
    return value.replace(tzinfo=tz.UTC).astimezone(zone).replace(tzinfo=None)


def _utc(value, zone):
    """Return a datetime of the time zone of _zone (a DICOM date and time)
    in UTC, as the database keeps it"""
    if not (value and zone):
        return value
    return value.replace(tzinfo=zone).astimezone(tz.UTC).replace(tzinfo=None)


def _problems(exception):
    "Return the translated text of the problems of a WorklistError"
    return '; '.join(
        gettext('health_orthanc.msg_worklist_problem_%s' % code, **params)
        for code, params in exception.problems)


class ImagingTestRequest(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging.test.request'

    worklist_state = fields.Selection(
        WORKLIST_STATES, "Worklist", readonly=True,
        help="Whether the modalities see this test in their DICOM "
        "worklist.  The entry is written or removed just after the "
        "request is saved (To Publish, To Remove meanwhile).")
    worklist_state_string = worklist_state.translated('worklist_state')
    worklist_server = fields.Many2One(
        'gnuhealth.orthanc.config', "Worklist Server", readonly=True,
        ondelete='SET NULL')
    worklist_entry = fields.Char(
        "Worklist Entry", readonly=True,
        help="The file written in the worklist folder, or the ID of the "
        "worklist in Orthanc.")
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
                            & Eval('worklist_state').in_(
                                ['stale', 'removing']))),
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
    def delete(cls, requests):
        for request in requests:
            if request.worklist_state in ENTRY_STATES:
                raise OrthancWorklistError(gettext(
                        'health_orthanc.msg_worklist_delete_request',
                        request=request.rec_name,
                        state=request.worklist_state_string))
        super().delete(requests)

    @classmethod
    def requested(cls, requests):
        super().requested(requests)
        # Studies that arrived before (e.g. while the request was
        # cancelled) are linked now
        cls.link_stored_studies(requests)
        requests = cls.browse(requests)
        cls.queue_publication([r for r in requests if r.state == 'requested'])

    @classmethod
    def draft(cls, requests):
        for request in requests:
            if (request.state == 'cancelled'
                    and request.worklist_state in {'removing', 'stale'}):
                raise OrthancWorklistError(gettext(
                        'health_orthanc.msg_worklist_draft_not_removed',
                        request=request.rec_name))
        super().draft(requests)
        drafts = [r for r in cls.browse(requests) if r.state == 'draft']
        if drafts:
            with Transaction().set_context(_check_access=False):
                cls.write(drafts, {
                        'worklist_state': None,
                        'worklist_server': None,
                        'worklist_entry': None,
                        'worklist_error': None,
                        })

    @classmethod
    def cancel(cls, requests):
        super().cancel(requests)
        cls.queue_removal([r for r in requests if r.state == 'cancelled'])

    @classmethod
    def done(cls, requests):
        super().done(requests)
        cls.queue_removal([r for r in requests if r.state == 'done'])

    @classmethod
    @ModelView.button
    def update_worklist(cls, requests):
        "Publish or remove the entries again after a failure"
        cls.queue_publication([
                r for r in requests if r.state == 'requested'
                and r.worklist_state != 'published'])
        cls.queue_removal([
                r for r in requests if r.state in {'done', 'cancelled'}])

    # -- worklist -----------------------------------------------------------
    def get_worklist_entry(self, server, zone=_UNSET):
        """Return the worklist entry of the request (see worklist.py);
        zone is the company's time zone when the caller has it"""
        if zone is _UNSET:
            zone = _zone()
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
            # DICOM's PatientSex is the sex of the body imaged
            'patient_sex': self.patient.biological_sex or party.gender,
            'modality': test.test_type.code if test.test_type else None,
            'procedure': test.name,
            'procedure_code': test.code,
            'scheduled': _local(self.date, zone),
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
    def queue_publication(cls, requests):
        """Mark the requests To Publish and publish them after the commit.

        The files and the Orthanc worklists are written by a queued task
        (:meth:`publish_worklists`), in its own transaction once this one
        is committed: a transaction rolled back or retried never leaves an
        entry behind.  Without any server publishing worklists, nothing is
        done.
        """
        requests = [r for r in requests if r.accession_number]
        if not requests or not cls.worklist_servers():
            return
        cls._write_worklist({r: {
                    'worklist_state': 'pending',
                    'worklist_error': None,
                    } for r in requests})
        cls.__queue__.publish_worklists(requests)

    @classmethod
    def queue_removal(cls, requests):
        """Mark the entries of the requests To Remove and remove them after
        the commit (:meth:`remove_worklists`)"""
        # A failed publication may have kept an older entry to remove
        to_remove = [r for r in requests if r.worklist_state in ENTRY_STATES
            or (r.worklist_state == 'failed' and r.worklist_entry)]
        never = [r for r in requests if r.worklist_state == 'failed'
            and not r.worklist_entry]
        outcome = {r: {'worklist_state': 'removing'} for r in to_remove}
        # Never published: nothing to remove, no problem left to solve
        outcome.update({r: {
                    'worklist_state': None,
                    'worklist_error': None,
                    } for r in never})
        cls._write_worklist(outcome)
        if to_remove:
            cls.__queue__.remove_worklists(to_remove)

    @classmethod
    def publish_worklists(cls, requests):
        """Publish the worklist entries of the requests To Publish.

        The queued task of :meth:`queue_publication`.  What it does
        depends on the committed state only, so running it again does no
        harm: a request published meanwhile, done or cancelled is skipped,
        and an entry left by an earlier publication is removed before the
        new one is written.  A failure never stops the request: it is
        recorded on it (Worklist "Not Published" and the error) and the
        Update Worklist button tries again.
        """
        requests = cls._lock_worklists(requests)
        requests = [r for r in requests if r.state == 'requested'
            and r.worklist_state == 'pending' and r.accession_number]
        if not requests:
            return
        outcome = {}
        previous = [r for r in requests if r.worklist_entry]
        if previous:
            for request, (done, message) in cls._remove_entries(
                    previous).items():
                if not done:
                    # Publishing again would leave the old entry behind
                    outcome[request] = cls._worklist_failure(
                        request.worklist_server, message)
        servers = cls.worklist_servers()
        choices = [(s, s.worklist_modalities) for s in servers]
        by_server = defaultdict(list)
        for request in requests:
            if request in outcome:
                continue
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
            'worklist_server': server.id if server else None,
            'worklist_entry': entry,
            'worklist_error': None,
            }

    @classmethod
    def _publish_folder(cls, server, requests):
        outcome = {}
        zone = _zone()
        for request in requests:
            try:
                path = worklist.write_file(
                    server.worklist_folder,
                    request.get_worklist_entry(server, zone))
            except worklist.WorklistError as exception:
                logger.warning("Worklist of %s on %s: %s",
                    request.rec_name, server.label, exception)
                outcome[request] = cls._worklist_failure(server, gettext(
                        'health_orthanc.msg_worklist_folder_failed',
                        request=request.rec_name, server=server.label,
                        folder=server.worklist_folder,
                        error=_problems(exception)))
            else:
                outcome[request] = cls._worklist_success(server, path)
        return outcome

    @classmethod
    def _publish_rest(cls, server, requests):
        outcome = {}
        try:
            with server.get_client() as client:
                if not client.worklists_available():
                    message = gettext(
                        'health_orthanc.msg_worklist_no_rest',
                        server=server.label)
                    return {r: cls._worklist_failure(server, message)
                        for r in requests}
                zone = _zone()
                for request in requests:
                    try:
                        entry_id = client.create_worklist(worklist.rest_tags(
                                request.get_worklist_entry(server, zone)))
                    except worklist.WorklistError as exception:
                        outcome[request] = cls._worklist_failure(
                            server, gettext(
                                'health_orthanc.msg_worklist_invalid',
                                request=request.rec_name,
                                error=_problems(exception)))
                    else:
                        outcome[request] = cls._worklist_success(
                            server, entry_id)
        except oc.OrthancError as exception:
            message = gettext(
                'health_orthanc.msg_worklist_orthanc_failed',
                server=server.label, error=server.log_error(exception))
            for request in requests:
                outcome.setdefault(
                    request, cls._worklist_failure(server, message))
        return outcome

    @classmethod
    def remove_worklists(cls, requests):
        """Remove the entries of the requests To Remove.

        The queued task of :meth:`queue_removal`; a request requested
        again meanwhile is skipped.  An entry that cannot be removed is
        recorded as "Not Removed" with the error; the Update Worklist
        button tries again.
        """
        requests = cls._lock_worklists(requests)
        requests = [r for r in requests if r.state != 'requested'
            and r.worklist_state == 'removing']
        outcome = {}
        for request, (done, message) in cls._remove_entries(
                requests).items():
            if done:
                outcome[request] = cls._worklist_success(
                    request.worklist_server, None, state='removed')
            else:
                outcome[request] = cls._worklist_failure(
                    request.worklist_server, message, state='stale')
        cls._write_worklist(outcome)

    @classmethod
    def _lock_worklists(cls, requests):
        """Lock the requests before touching their entries and read them
        again: a task for the same requests, a Cancel or a Done committed
        meanwhile make this task fail (and be retried) before it writes a
        file or calls Orthanc, not after"""
        transaction = Transaction()
        ids = [r.id for r in requests]
        if transaction.database.has_select_for():
            # Waits for a task holding them; a concurrent commit makes
            # this one fail to serialize, and the queue retries it
            table = cls.__table__()
            cursor = transaction.connection.cursor()
            for sub_ids in grouped_slice(ids):
                cursor.execute(*table.select(table.id,
                        where=reduce_ids(table.id, sub_ids),
                        for_=For('UPDATE')))
        return cls.browse(ids)

    @classmethod
    def _remove_entries(cls, requests):
        """Remove the entries of the requests from where they were
        published; return {request: (removed, error message)}.

        Each entry decides how: a file is removed from the path where it
        was written (even if the server's folder changed since), any
        other entry is the ID of a worklist of the server's REST API.
        """
        outcome = {}
        by_server = defaultdict(list)
        for request in requests:
            entry = request.worklist_entry
            server = request.worklist_server
            if not entry:
                outcome[request] = (True, None)
            elif worklist.is_file_entry(entry):
                try:
                    worklist.remove_file(entry)
                except worklist.WorklistError as exception:
                    logger.warning("Worklist of %s: %s",
                        request.rec_name, exception)
                    outcome[request] = (False, gettext(
                            'health_orthanc.msg_worklist_remove_failed',
                            request=request.rec_name,
                            server=server.label if server else '',
                            error=_problems(exception)))
                else:
                    outcome[request] = (True, None)
            elif server is None:
                # The server was deleted: its worklists went with it
                outcome[request] = (True, None)
            else:
                by_server[server].append(request)
        for server, server_requests in by_server.items():
            try:
                with server.get_client() as client:
                    for request in server_requests:
                        client.delete_worklist(request.worklist_entry)
                        outcome[request] = (True, None)
            except oc.OrthancError as exception:
                message = gettext(
                    'health_orthanc.msg_worklist_remove_failed',
                    request=', '.join(r.rec_name for r in server_requests
                        if r not in outcome),
                    server=server.label, error=server.log_error(exception))
                for request in server_requests:
                    outcome.setdefault(request, (False, message))
        return outcome

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
    def link_stored_studies(cls, requests):
        """Link the studies already stored that carry the identifiers of
        the requests (one search)"""
        Study = Pool().get('gnuhealth.orthanc.study')
        uids = [r.study_instance_uid for r in requests
            if r.study_instance_uid]
        accessions = [r.accession_number for r in requests
            if r.accession_number]
        if not uids and not accessions:
            return
        domain = ['OR']
        for name, values in [('study_instance_uid', uids),
                ('accession_number', accessions)]:
            for sub_values in grouped_slice(values):
                domain.append((name, 'in', list(sub_values)))
        studies = Study.search([('request', '=', None), domain])
        if studies:
            cls.link_studies(studies)

    @classmethod
    def link_studies(cls, studies):
        """Link the studies to the requests they perform, in one batch.

        A study matches the request whose StudyInstanceUID it has, else
        the request whose accession number it has (requested or done); a
        study already linked keeps its request as long as its patient is
        the request's.  It is linked only when its Orthanc patient is
        linked to the request's patient (the linking rule is tried first
        on unlinked ones) and the result of the request is not completed;
        otherwise it is left for review with the reason, and it leaves the
        draft results of other patients.  Linked studies are added to the
        request's result, created if needed, and the request is marked
        performed and done.
        """
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        Result = pool.get('gnuhealth.imaging.test.result')
        ResultStudy = pool.get(
            'gnuhealth.imaging.test.result-gnuhealth.orthanc.study')
        studies = list(studies)
        to_match = [s for s in studies if not s.request]
        uids = {s.study_instance_uid for s in to_match
            if s.study_instance_uid}
        accessions = {s.accession_number.strip() for s in to_match
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
            request = study.request or by_uid.get(
                study.study_instance_uid) or by_accession.get(
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
            and s.orthanc_patient.link_state not in KEPT_LINKS}
        if unlinked:
            # The studies of these patients are decided below
            with Transaction().set_context(orthanc_linking_studies=True):
                OrthancPatient.link(list(unlinked))
            cls._link_patients_by_order(Study.browse([
                        s.id for s in to_match
                        if s.study_instance_uid in by_uid]), by_uid)
        studies = Study.browse([s.id for s in studies])
        requests = {r.id: r for r in matches.values()}
        results = {}
        for sub_ids in grouped_slice(list(requests)):
            for result in Result.search([('request', 'in', list(sub_ids))]):
                results[result.request.id] = result
        attached = set()
        for sub_ids in grouped_slice([s.id for s in studies]):
            attached.update((l.result.id, l.study.id)
                for l in ResultStudy.search([
                        ('study', 'in', list(sub_ids)),
                        ]))
        decisions = defaultdict(list)
        linked = defaultdict(list)
        to_detach = []
        for study in studies:
            request = matches.get(study.id)
            patient = (study.orthanc_patient.patient
                if study.orthanc_patient else None)
            result = results.get(request.id) if request else None
            if request is None:
                decision = (None, None, None)
            elif patient is None:
                decision = (None, 'patient_unknown', request.id)
            elif patient != request.patient:
                decision = (None, 'patient_differs', request.id)
            elif (result and result.state != 'draft'
                    and (result.id, study.id) not in attached):
                # A completed result is signed: it takes no new study
                decision = (None, 'result_done', request.id)
            else:
                decision = (request.id, 'linked', None)
            current = (getattr(study.request, 'id', None),
                study.request_link,
                getattr(study.request_candidate, 'id', None))
            if current != decision:
                decisions[decision].append(study)
                if decision[1] == 'linked':
                    linked[request].append(study)
            if decision[1] != 'linked' and (current[0] or current[1]):
                to_detach.append(study)
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
        if to_detach:
            cls._detach_other_patients(to_detach)
        if linked:
            cls.perform(linked, results, attached)

    @classmethod
    def _link_patients_by_order(cls, studies, by_uid):
        """Link to the patient of their order the Orthanc patients whose
        PatientID names no local patient, in one write.

        Only the StudyInstanceUID, given to one request and never reused,
        is taken as evidence (an accession number may be given again or
        come from elsewhere).  Every study of the Orthanc patient that
        points to a request (linked or for review) must point to requests
        of the same patient, and no birth date may contradict it;
        otherwise the studies stay for review.
        """
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        evidence = defaultdict(list)
        for study in studies:
            orthanc_patient = study.orthanc_patient
            if (orthanc_patient and not orthanc_patient.patient
                    and orthanc_patient.link_state in ORDER_LINKABLE):
                evidence[orthanc_patient].append(
                    by_uid[study.study_instance_uid])
        if not evidence:
            return
        # What their other studies already say (one search)
        for sub_patients in grouped_slice(list(evidence)):
            for study in Study.search([
                        ('orthanc_patient', 'in',
                            [p.id for p in sub_patients]),
                        ['OR',
                            ('request', '!=', None),
                            ('request_candidate', '!=', None),
                            ],
                        ]):
                evidence[study.orthanc_patient].append(
                    study.request or study.request_candidate)
        by_patient = defaultdict(list)
        for orthanc_patient, requests in evidence.items():
            patients = {r.patient for r in requests}
            if len(patients) != 1:
                continue
            patient, = patients
            dob = patient.party.dob
            if (orthanc_patient.birth_date and dob
                    and orthanc_patient.birth_date != dob):
                continue
            by_patient[patient].append(orthanc_patient)
        to_write = []
        for patient, orthanc_patients in by_patient.items():
            to_write.extend((orthanc_patients, {
                        'patient': patient.id,
                        'link_state': 'order',
                        }))
        if to_write:
            with Transaction().set_context(
                    orthanc_sync=True, orthanc_linking_studies=True,
                    _check_access=False):
                OrthancPatient.write(*to_write)
            # Their studies of other pages, waiting for review
            OrthancPatient.check_request_studies(
                [p for ps in by_patient.values() for p in ps])

    @classmethod
    def _detach_other_patients(cls, studies):
        """Remove the studies from the draft results of another patient
        (one search, one delete); a completed result is left as signed,
        its study being listed for review"""
        ResultStudy = Pool().get(
            'gnuhealth.imaging.test.result-gnuhealth.orthanc.study')
        to_delete = []
        for sub_studies in grouped_slice(studies):
            patients = {s.id: s.patient for s in sub_studies}
            for link in ResultStudy.search([
                        ('study', 'in', list(patients)),
                        ('result.state', '=', 'draft'),
                        ]):
                if link.result.patient != patients[link.study.id]:
                    to_delete.append(link)
        if to_delete:
            with Transaction().set_context(_check_access=False):
                ResultStudy.delete(to_delete)

    @classmethod
    def perform(cls, studies_of, results=None, attached=None):
        """Attach the studies to the results of their requests and mark the
        requests performed.

        studies_of is {request: [studies]}; results ({request id: result})
        and attached ({(result id, study id)}) when known save their
        searches.  The missing results are created (one create), their
        date being the study's (converted from the company's time zone).
        Only draft results take studies.
        """
        pool = Pool()
        Result = pool.get('gnuhealth.imaging.test.result')
        ResultStudy = pool.get(
            'gnuhealth.imaging.test.result-gnuhealth.orthanc.study')
        requests = list(studies_of)
        zone = _zone()

        def performed(request):
            dates = [s.study_datetime for s in studies_of[request]
                if s.study_datetime]
            return _utc(min(dates), zone) if dates else datetime.datetime.now()

        if results is None:
            results = {}
            for sub_requests in grouped_slice(requests):
                for result in Result.search([
                            ('request', 'in', [r.id for r in sub_requests])]):
                    results[result.request.id] = result
        results = dict(results)
        to_create = [dict(Result.values_from_request(r), date=performed(r))
            for r in requests if r.id not in results]
        with Transaction().set_context(_check_access=False):
            if to_create:
                for result in Result.create(to_create):
                    results[result.request.id] = result
            pairs = {(results[r.id].id, s.id)
                for r, studies in studies_of.items() for s in studies
                if results[r.id].state == 'draft'}
            if attached is not None:
                existing = attached
            else:
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
        "record, or change a completed result (reset the result to draft, "
        "then press Link to Request).")
    request_candidate = fields.Many2One(
        'gnuhealth.imaging.test.request', "Matching Request", readonly=True,
        ondelete='SET NULL',
        states={'invisible': ~Eval('request_candidate')},
        help="The request whose identifiers the study carries, not linked "
        "because the patients do not match or its result is completed.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'link_request': {
                    'invisible': ~Eval('request_link').in_(REVIEW_LINKS),
                    'icon': 'tryton-link',
                    'depends': ['request_link'],
                    },
                })

    @classmethod
    def upsert(cls, server, records, context=None):
        "Store the page, then link its studies to their requests"
        created, updated = super().upsert(server, records, context=context)
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


class OrthancServer(metaclass=PoolMeta):
    __name__ = 'gnuhealth.orthanc.config'

    @classmethod
    def delete(cls, servers):
        "Refuse to delete a server that still holds worklist entries"
        Request = Pool().get('gnuhealth.imaging.test.request')
        for sub_servers in grouped_slice(servers):
            requests = Request.search([
                    ('worklist_server', 'in', [s.id for s in sub_servers]),
                    ('worklist_state', 'in', list(ENTRY_STATES)),
                    ], limit=1)
            if requests:
                request, = requests
                raise OrthancWorklistError(gettext(
                        'health_orthanc.msg_worklist_delete_server',
                        server=request.worklist_server.label,
                        request=request.rec_name))
        super().delete(servers)
