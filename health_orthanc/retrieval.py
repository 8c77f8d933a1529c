# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Retrievals: studies brought from a DICOM node into Orthanc (C-MOVE).

A retrieval is queued work: it asks the node for its studies by
StudyInstanceUID, starts an Orthanc job per batch, follows the job until it
ends, looks which studies arrived, and queues the sync of the server.
"""
import datetime
import logging
import time

from sql.conditionals import Coalesce
from trytond.config import config
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access

from trytond.modules.health_imaging.access import (
    DomainAccessMixin, ReadonlyFieldsMixin, server_queue)

from . import linking
from . import orthanc_client as oc
from .dicom_network import valid_uid
from .exceptions import PacsQueryError
from .mapping import format_person_name
from .patient import LINK_STATES

logger = logging.getLogger(__name__)

STATES = [
    ('queued', "Queued"),
    ('running', "Running"),
    ('done', "Done"),
    ('failed', "Failed"),
    ('partly_failed', "Partly Failed"),
    ]
STUDY_STATES = [
    ('pending', "To Retrieve"),
    ('retrieved', "Retrieved"),
    ('failed', "Failed"),
    ]
ACTIVE_STATES = ['queued', 'running']
#: The values of a study of a retrieval, from the node's answer
ANSWER_FIELDS = {
    'patient_id': 'patient_id',
    'patient_name': 'patient_name',
    'birth_date': 'birth_date',
    'study_date': 'study_date',
    'description': 'description',
    'accession': 'accession',
    'series_count': 'series_count',
    'instance_count': 'instance_count',
    }
#: How often the state of an Orthanc job is read, in seconds
POLL = config.getfloat('health_orthanc', 'retrieve_poll', default=0.5)
#: A retrieval not written for this long is no longer followed
STALE = datetime.timedelta(minutes=10)
#: The write that tells a follower is alive, at least this often
HEARTBEAT = datetime.timedelta(seconds=60)
#: A job followed for longer is given up (a paused job, a node that
#: never ends): a worker is not held forever
FOLLOW_LIMIT = datetime.timedelta(hours=2)
#: The internal key that keeps a retrieval in its transaction (tests)
COMMIT = '_orthanc_page_commit'


def answer_links(answers):
    """Return {(PatientID, birth date): (GNU Health patient id or None,
    link state)} of the answers, by the rule of the sync
    (linking.choose_patient).  One PatientID under several birth dates
    names several people on the node: none of them is linked."""
    OrthancPatient = Pool().get('gnuhealth.orthanc.patient')
    identifiers = {linking.normalize_identifier(a.patient_id)
        for a in answers} - {None}
    candidates = OrthancPatient.local_candidates(identifiers)
    birth_dates = {}
    for answer in answers:
        identifier = linking.normalize_identifier(answer.patient_id)
        if answer.birth_date:
            birth_dates.setdefault(identifier, set()).add(answer.birth_date)
    links = {}
    for answer in answers:
        identifier = linking.normalize_identifier(answer.patient_id)
        key = answer_key(answer)
        if identifier and len(birth_dates.get(identifier, ())) > 1:
            links[key] = (None, linking.AMBIGUOUS)
        else:
            links[key] = linking.choose_patient(
                candidates.get(identifier, []), answer.birth_date,
                identifier)
    return links


def answer_key(answer):
    "The key of an answer in answer_links"
    return (answer.patient_id, answer.birth_date)


def identifier_links(identifiers):
    """Return {PatientID: GNU Health patient id or None}: the patient each
    identifier names by the rule of the sync, birth date aside"""
    OrthancPatient = Pool().get('gnuhealth.orthanc.patient')
    normalized = {i: linking.normalize_identifier(i) for i in identifiers}
    candidates = OrthancPatient.local_candidates(
        set(normalized.values()) - {None})
    return {i: linking.choose_patient(
            candidates.get(n, []), None, n)[0]
        for i, n in normalized.items()}


def studies_here(client, uids):
    """Return the StudyInstanceUIDs among uids that GNU Health has, or that
    the server of client holds already (not synced yet)"""
    Study = Pool().get('gnuhealth.orthanc.study')
    uids = list(dict.fromkeys(uids))
    here = set()
    for sub_uids in grouped_slice(uids):
        here.update(s.study_instance_uid for s in Study.search([
                    ('study_instance_uid', 'in', list(sub_uids)),
                    ]))
    for sub_uids in grouped_slice(uids, 500):
        here.update(client.find_local_studies(list(sub_uids)))
    return here


class Retrieval(DomainAccessMixin, ReadonlyFieldsMixin, ModelSQL, ModelView):
    "PACS Retrieval"
    __name__ = 'gnuhealth.orthanc.retrieval'

    date = fields.DateTime("Date", readonly=True)
    user = fields.Many2One(
        'res.user', "User", readonly=True, ondelete='RESTRICT',
        help="Who asked for the studies.")
    node = fields.Many2One(
        'gnuhealth.orthanc.dicom_node', "DICOM Node", required=True,
        readonly=True, ondelete='RESTRICT',
        context={'active_test': False})
    scheduled_query = fields.Many2One(
        'gnuhealth.orthanc.scheduled_query', "Scheduled Query",
        readonly=True, ondelete='SET NULL',
        states={'invisible': ~Eval('scheduled_query')})
    state = fields.Selection(STATES, "State", readonly=True, required=True)
    progress = fields.Integer(
        "Progress", readonly=True,
        help="The share of the studies finished, in percent.")
    error = fields.Text(
        "Error", readonly=True, states={'invisible': ~Eval('error')})
    studies = fields.One2Many(
        'gnuhealth.orthanc.retrieval.study', 'retrieval', "Studies",
        readonly=True)
    study_count = fields.Function(
        fields.Integer("Studies"), 'get_counts')
    retrieved_count = fields.Function(
        fields.Integer("Retrieved"), 'get_counts')
    failed_count = fields.Function(
        fields.Integer("Failed"), 'get_counts')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('date', 'DESC'), ('id', 'DESC')]
        t = cls.__table__()
        cls._sql_indexes.add(Index(t, (t.state, Index.Equality())))
        cls._buttons.update({
                'retry': {
                    'invisible': ~Eval('state').in_(
                        ['failed', 'partly_failed']),
                    'depends': ['state'],
                    'icon': 'tryton-refresh',
                    },
                })

    def get_rec_name(self, name):
        date = self.date.strftime('%Y-%m-%d %H:%M') if self.date else ''
        return '%s %s' % (self.node.rec_name if self.node else '', date)

    @classmethod
    def get_counts(cls, retrievals, names):
        result = {n: {} for n in names}
        for retrieval in retrievals:
            states = [s.state for s in retrieval.studies]
            for name in names:
                state = name[:-len('_count')]
                result[name][retrieval.id] = (len(states)
                    if state == 'study' else states.count(state))
        return result

    # -- asking -------------------------------------------------------------
    @classmethod
    def request_studies(cls, node, answers, scheduled_query=None):
        """Create the retrieval of the answers from node, queue it, and
        return it"""
        bad = [a.study_uid for a in answers if not valid_uid(a.study_uid)]
        if bad:
            raise PacsQueryError(gettext(
                    'health_orthanc.msg_query_bad_study_uid', uid=bad[0]))
        links = answer_links(answers)
        studies = [dict(study_values(a),
                study_uid=a.study_uid,
                patient=links[answer_key(a)][0],
                link=links[answer_key(a)][1],
                state='pending')
            for a in answers]
        with without_check_access():
            retrieval, = cls.create([{
                        'date': datetime.datetime.now(),
                        'user': Transaction().user,
                        'node': node.id,
                        'scheduled_query': (
                            scheduled_query.id if scheduled_query else None),
                        'state': 'queued',
                        'progress': 0,
                        'studies': [('create', studies)],
                        }])
        with server_queue():
            cls.__queue__.run([retrieval])
        return retrieval

    @classmethod
    @ModelView.button
    def retry(cls, retrievals):
        "Queue the retrieval again of the studies that failed"
        Study = Pool().get('gnuhealth.orthanc.retrieval.study')
        retrievals = [r for r in retrievals
            if r.state in {'failed', 'partly_failed'}]
        for retrieval in retrievals:
            if not retrieval.node_allowed():
                raise PacsQueryError(gettext(
                        'health_orthanc.msg_retrieval_node_not_allowed',
                        node=retrieval.node.name))
        # The user who asked stays; the audit of the studies retrieved
        # names who retried (the queued task runs as that user)
        with without_check_access():
            Study.write([s for r in retrievals for s in r.studies
                    if s.state == 'failed'], {
                    'state': 'pending',
                    'error': None,
                    'job': None,
                    })
            cls.write(retrievals, {
                    'state': 'queued',
                    'error': None,
                    'progress': 0,
                    })
        with server_queue():
            cls.__queue__.run(retrievals)

    def node_allowed(self):
        "Whether the node is active and may still be retrieved from"
        Node = Pool().get('gnuhealth.orthanc.dicom_node')
        with Transaction().set_context(active_test=True):
            return bool(Node.search([
                        ('id', '=', self.node.id),
                        ('may_retrieve', '=', True),
                        ]))

    @classmethod
    def resume(cls):
        """Queue again the retrievals that nobody follows any more (a
        worker stopped): the method of the scheduled action"""
        limit = datetime.datetime.now() - STALE
        retrievals = cls.search([
                ('state', 'in', ACTIVE_STATES),
                ['OR',
                    ('write_date', '<', limit),
                    [('write_date', '=', None), ('create_date', '<', limit)],
                    ],
                ])
        if retrievals:
            with server_queue():
                cls.__queue__.run(retrievals)

    # -- retrieving (queued) ------------------------------------------------
    @classmethod
    def run(cls, retrievals):
        "Retrieve the pending studies of each retrieval (a queued task)"
        for retrieval in retrievals:
            if retrieval.state not in ACTIVE_STATES:
                continue
            try:
                retrieval._run()
            except Exception:
                logger.exception("Retrieval %s failed", retrieval.id)
                Transaction().rollback()
                cls(retrieval.id)._end(gettext(
                        'health_orthanc.msg_retrieval_unexpected'))

    def _run(self):
        if not self._claim():
            # Another worker follows it
            return
        self._write(progress=self._progress())
        node = self.node
        if not self.node_allowed():
            self._end(gettext('health_orthanc.msg_retrieval_node_not_allowed',
                    node=node.name))
            return
        pending = [s for s in self.studies if s.state == 'pending']
        error = None
        try:
            with node.server.get_client() as client:
                node.ensure_declared(client)
                # A job started before an interruption is followed first
                for job in sorted({s.job for s in pending if s.job}):
                    self._follow(client, job,
                        [s for s in pending if s.job == job])
                fresh = [s for s in pending if not s.job]
                for batch in grouped_slice(fresh, node.batch_size):
                    self._retrieve(client, list(batch))
        except oc.OrthancError as exception:
            logger.warning("Retrieval %s from %s: %s", self.id, node.name,
                exception)
            error = node.error_text(exception)
        self._end(error)

    def _claim(self):
        """Set the retrieval running if it is queued, or running but not
        followed any more (a worker stopped); return whether it was:
        two workers never follow one retrieval"""
        table = self.__table__()
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        now = datetime.datetime.now()
        cursor.execute(*table.update(
                [table.state, table.write_date, table.write_uid],
                ['running', now, transaction.user],
                where=(table.id == self.id) & (
                    (table.state == 'queued')
                    | ((table.state == 'running')
                        & (Coalesce(table.write_date, table.create_date)
                            < now - STALE)))))
        claimed = cursor.rowcount == 1
        self._commit()
        return claimed

    def _retrieve(self, client, studies):
        """Start the jobs moving the studies, follow them to their end.

        The node is asked for exactly these UIDs; only its answers whose
        UID was asked are moved, and what it answers is recorded."""
        Study = Pool().get('gnuhealth.orthanc.retrieval.study')
        node = self.node
        timeout = node.timeout or None
        asked = {s.study_uid for s in studies}
        query_id, answers = client.query_indexed_studies(node.name, {
                'StudyInstanceUID': '\\'.join(sorted(asked)),
                }, timeout=timeout)
        indexes = {}
        for index, answer in answers:
            if answer.study_uid in asked:
                indexes.setdefault(answer.study_uid, (index, answer))
        found = {uid: answer for uid, (_, answer) in indexes.items()}
        Study._set([s for s in studies if s.study_uid not in found],
            'failed', error=gettext(
                'health_orthanc.msg_retrieval_not_on_node', node=node.name))
        studies = [s for s in studies if s.study_uid in found]
        if not studies:
            return
        # What the node says, not what the client sent, is recorded
        Study.describe(studies, found)
        if all(a.study_uid in asked for _, a in answers):
            job = client.retrieve_query(query_id, timeout=timeout,
                node=node.name)
            jobs = {s.id: job for s in studies}
        else:
            # The node answered more than asked: each answer on its own
            jobs = {s.id: client.retrieve_query(query_id,
                    answer=indexes[s.study_uid][0], timeout=timeout,
                    node=node.name)
                for s in studies}
        to_write = []
        for study in studies:
            to_write.extend(([study], {'job': jobs[study.id]}))
        with without_check_access():
            Study.write(*to_write)
        self._commit()
        for job in dict.fromkeys(jobs.values()):
            self._follow(client, job, Study.browse(
                    [i for i, j in jobs.items() if j == job]))

    def _follow(self, client, job_id, studies):
        "Wait for the end of the job, then record which studies arrived"
        Study = Pool().get('gnuhealth.orthanc.retrieval.study')
        job, beat = None, datetime.datetime.now()
        deadline = time.monotonic() + FOLLOW_LIMIT.total_seconds()
        progress = self.progress
        given_up = False
        while True:
            try:
                job = client.job_status(job_id, self.node.name)
            except oc.JobVanished:
                job = None
                break
            if job.finished:
                break
            if time.monotonic() > deadline:
                given_up = True
                # It would go on moving studies nobody waits for
                try:
                    client.cancel_job(job_id)
                except oc.OrthancError as exception:
                    logger.warning("%s: the retrieve job %s given up could "
                        "not be cancelled: %s", self.rec_name, job_id,
                        exception)
                break
            current = self._progress(len(studies) * job.progress / 100)
            now = datetime.datetime.now()
            if current != progress or now - beat > HEARTBEAT:
                self._write(progress=current)
                progress, beat = current, now
            time.sleep(POLL)
        arrived = self._arrived(client, job, studies)
        for study in studies:
            study.orthanc_id = arrived.get(study.study_uid)
        Study._set([s for s in studies if s.orthanc_id], 'retrieved')
        Study._set([s for s in studies if not s.orthanc_id], 'failed',
            error=gettext('health_orthanc.msg_retrieval_too_long',
                node=self.node.name,
                hours='%g' % round(FOLLOW_LIMIT.total_seconds() / 3600, 1))
            if given_up else self._job_error(job))
        self._write(progress=self._progress())

    def _arrived(self, client, job, studies):
        """Return {StudyInstanceUID: Orthanc ID} of the studies that arrived
        whole: all of a job that succeeded; else those the job finished,
        and those Orthanc holds with as many instances as the node has"""
        here = client.find_local_studies([s.study_uid for s in studies])
        if job is not None and job.succeeded:
            return here
        finished = set(job.study_uids[:job.moved_count]) if job else set()
        whole = {}
        for study in studies:
            orthanc_id = here.get(study.study_uid)
            if not orthanc_id:
                continue
            if study.study_uid not in finished:
                if not study.instance_count:
                    continue
                counts = client.get_study_statistics(orthanc_id)
                if int(counts.get('CountInstances') or 0) < (
                        study.instance_count):
                    continue
            whole[study.study_uid] = orthanc_id
        return whole

    def _job_error(self, job):
        if job is None:
            return gettext('health_orthanc.msg_retrieval_job_vanished',
                node=self.node.name)
        if job.error is not None:
            return self.node.error_text(job.error)
        return gettext('health_orthanc.msg_retrieval_not_received',
            node=self.node.name)

    def _progress(self, running=0):
        "The share of the studies finished, running the part given"
        studies = self.__class__(self.id).studies
        if not studies:
            return 100
        finished = sum(1 for s in studies if s.state != 'pending')
        return int(100 * (finished + running) / len(studies))

    def _end(self, error=None):
        """Record the outcome, audit the studies retrieved, queue the sync
        of the server and report to the scheduled query"""
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.orthanc.retrieval.study')
        retrieval = self.__class__(self.id)
        # What was not tried, the node or Orthanc having failed first
        Study._set([s for s in retrieval.studies if s.state == 'pending'],
            'failed', error=error or gettext(
                'health_orthanc.msg_retrieval_unexpected'))
        retrieval = self.__class__(self.id)
        retrieved = [s for s in retrieval.studies if s.state == 'retrieved']
        failed = [s for s in retrieval.studies if s.state == 'failed']
        if not failed:
            state = 'done'
        elif retrieved:
            state = 'partly_failed'
        else:
            state = 'failed'
        if failed and not error:
            error = gettext('health_orthanc.msg_retrieval_failed_studies',
                failed=len(failed), count=len(retrieval.studies))
        retrieval._write(state=state, progress=100, error=error)
        retrieval._audit([s for s in retrieved if not s.audited])
        if retrieved:
            Server.sync([retrieval.node.server])
        if retrieval.scheduled_query:
            retrieval.scheduled_query.retrieval_ended(retrieval)
        retrieval._commit()

    def _audit(self, studies):
        "Record who retrieved each study, for whom"
        pool = Pool()
        Audit = pool.get('gnuhealth.orthanc.audit')
        Study = pool.get('gnuhealth.orthanc.retrieval.study')
        if not studies:
            return
        node = self.node
        Audit.add([{
                    'action': 'pacs_retrieve',
                    'record': str(self),
                    'record_name': self.rec_name,
                    'server': node.server.id,
                    'orthanc_id': s.orthanc_id,
                    'patient': s.patient.id if s.patient else None,
                    'description': gettext(
                        'health_orthanc.msg_audit_pacs_retrieve',
                        study=s.rec_name, uid=s.study_uid, node=node.name,
                        server=node.server.rec_name,
                        patient_id=s.patient_id or '',
                        patient=Audit._patient_text(s.patient)),
                    } for s in studies])
        with without_check_access():
            Study.write(studies, {'audited': True})

    def _write(self, **values):
        "Write the state of the retrieval, and commit it"
        with without_check_access():
            self.write([self], values)
        self._commit()

    @staticmethod
    def _commit():
        "Commit what the queued task did so far (not in the tests)"
        transaction = Transaction()
        if transaction.context.get(COMMIT, True):
            transaction.commit()


def study_values(answer):
    "The values of a study of a retrieval, from a node's answer"
    values = {f: getattr(answer, a) for f, a in ANSWER_FIELDS.items()}
    values['patient_name'] = format_person_name(answer.patient_name)
    values['modalities'] = ', '.join(answer.modalities)
    return values


class RetrievalStudy(
        DomainAccessMixin, ReadonlyFieldsMixin, ModelSQL, ModelView):
    "PACS Retrieval Study"
    __name__ = 'gnuhealth.orthanc.retrieval.study'
    _rec_name = 'description'

    retrieval = fields.Many2One(
        'gnuhealth.orthanc.retrieval', "Retrieval", required=True,
        readonly=True, ondelete='CASCADE')
    study_uid = fields.Char("StudyInstanceUID", readonly=True, required=True)
    patient_id = fields.Char("PatientID", readonly=True)
    patient_name = fields.Char("Name", readonly=True)
    birth_date = fields.Date("Birth Date", readonly=True)
    study_date = fields.Date("Study Date", readonly=True)
    description = fields.Char("Description", readonly=True)
    modalities = fields.Char("Modalities", readonly=True)
    accession = fields.Char("Accession Number", readonly=True)
    series_count = fields.Integer("Series", readonly=True)
    instance_count = fields.Integer("Instances", readonly=True)
    patient = fields.Many2One(
        'gnuhealth.patient', "Patient", readonly=True, ondelete='SET NULL',
        help="The GNU Health patient that the PatientID links to.")
    link = fields.Selection(
        [(None, '')] + LINK_STATES, "Link", readonly=True)
    state = fields.Selection(STUDY_STATES, "State", readonly=True,
        required=True)
    error = fields.Text(
        "Error", readonly=True, states={'invisible': ~Eval('error')})
    job = fields.Char(
        "Orthanc Job", readonly=True,
        help="The job of Orthanc that moves the study.")
    orthanc_id = fields.Char("Orthanc ID", readonly=True)
    audited = fields.Boolean("Audited", readonly=True)
    study = fields.Function(fields.Many2One(
            'gnuhealth.orthanc.study', "Orthanc Study",
            help="The study in GNU Health, once the server is synced."),
        'get_study')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t, (t.study_uid, Index.Equality())),
                Index(t, (t.retrieval, Index.Range())),
                })
        cls._order = [('study_date', 'DESC NULLS LAST'), ('id', 'ASC')]

    @staticmethod
    def default_audited():
        return False

    def get_rec_name(self, name):
        date = self.study_date.isoformat() if self.study_date else '?'
        return '%s %s (%s)' % (date, self.description or self.modalities
            or '', self.patient_id or '')

    @classmethod
    def get_study(cls, studies, name):
        Study = Pool().get('gnuhealth.orthanc.study')
        result = {s.id: None for s in studies}
        by_server = {}
        for study in studies:
            if study.orthanc_id:
                server = study.retrieval.node.server
                by_server.setdefault(server, {})[study.orthanc_id] = study.id
        for server, ids in by_server.items():
            for orthanc_id, study_id in Study.orthanc_ids(
                    server, list(ids)).items():
                result[ids[orthanc_id]] = study_id
        return result

    @classmethod
    def _set(cls, studies, state, error=None):
        "Write the state of the studies (with their Orthanc IDs)"
        if not studies:
            return
        to_write = []
        for study in studies:
            to_write.extend(([study], {
                        'state': state,
                        'error': error,
                        'orthanc_id': getattr(study, 'orthanc_id', None),
                        }))
        with without_check_access():
            cls.write(*to_write)

    @classmethod
    def describe(cls, studies, answers):
        """Write what the node answered for each study ({UID: answer}) and
        the patient its PatientID links to"""
        links = answer_links(list(answers.values()))
        to_write = []
        for study in studies:
            answer = answers[study.study_uid]
            patient, link = links[answer_key(answer)]
            to_write.extend(([study], dict(study_values(answer),
                        patient=patient, link=link)))
        with without_check_access():
            cls.write(*to_write)
