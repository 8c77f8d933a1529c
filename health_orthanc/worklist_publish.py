# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Worklist publishing: the DICOM Modality Worklist entries of imaging
requests.

A request that is requested is published as a worklist entry (built by
worklist.py) on the Orthanc server that takes its modality; cancelled or
done, the entry is removed.  Files and REST calls happen in queued tasks,
after the commit.
"""
import logging
import os
from collections import defaultdict

from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import timezone as tz
from trytond.transaction import Transaction, without_check_access

from trytond.modules.health_imaging.access import (
    check_field_search, server_queue)

from . import orthanc_client as oc
from . import worklist
from .exceptions import OrthancWorklistError

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

_UNSET = object()


def company_zone():
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


def to_local(value, zone):
    "Return a UTC datetime of the database in the zone (of company_zone)"
    if not (value and zone):
        return value
    return value.replace(tzinfo=tz.UTC).astimezone(zone).replace(tzinfo=None)


def to_utc(value, zone):
    """Return a datetime of the zone of company_zone (a DICOM date and
    time) in UTC, as the database keeps it"""
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
        "worklist in Orthanc (shown to Orthanc administrators).")
    worklist_error = fields.Text(
        "Worklist Error", readonly=True,
        states={'invisible': ~Eval('worklist_error')})

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
    def domain_worklist_entry(cls, domain, tables):
        "A path on the Tryton server: searched by Orthanc administrators"
        check_field_search(cls, 'worklist_entry')
        return fields.Field.convert_domain.__wrapped__(
            cls._fields['worklist_entry'], domain, tables, cls)

    @classmethod
    def copy(cls, requests, default=None):
        default = default.copy() if default is not None else {}
        for name in ['worklist_state', 'worklist_server', 'worklist_entry',
                'worklist_error']:
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
            with without_check_access():
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

    def get_worklist_entry(self, server, zone=_UNSET):
        """Return the worklist entry of the request (see worklist.py);
        zone is the company's time zone when the caller has it"""
        if zone is _UNSET:
            zone = company_zone()
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
            'scheduled': to_local(self.date, zone),
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
        with server_queue():
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
            with server_queue():
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
        zone = company_zone()
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
                zone = company_zone()
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
        cls.lock(requests)
        return cls.browse([r.id for r in requests])

    @classmethod
    def _remove_entries(cls, requests):
        """Remove the entries of the requests from where they were
        published; return {request: (removed, error message)}.

        A file is removed only under the name made of the request's own
        identifiers: from the server's worklist folder, and from where it
        was written if the folder changed since; a stored path under
        another name is never touched.  Any other entry is the ID of a
        worklist of the server's REST API.
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
                    for path in cls._entry_files(request):
                        worklist.remove_file(path)
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

    @staticmethod
    def _entry_files(request):
        "Return the paths where the file of the request may be"
        entry = request.worklist_entry
        server = request.worklist_server
        name = worklist.file_name(
            request.accession_number, request.study_instance_uid)
        paths = []
        if server and server.worklist_folder:
            paths.append(worklist.entry_path(server.worklist_folder,
                    request.accession_number, request.study_instance_uid))
        if os.path.basename(entry) == name:
            if entry not in paths:
                paths.append(entry)
        else:
            logger.warning("Worklist of %s: the recorded entry %s is not "
                "its file %s, left as it is", request.rec_name, entry, name)
        if not paths:
            raise worklist.WorklistError(
                ('folder_missing', {'folder': '""'}))
        return paths

    @classmethod
    def _write_worklist(cls, outcome):
        "Write the worklist outcome of each request in one call"
        to_write = []
        for request, values in outcome.items():
            to_write.extend(([request], values))
        if to_write:
            with without_check_access():
                cls.write(*to_write)
