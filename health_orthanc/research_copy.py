# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The de-identified copies of studies for research projects (the copy
log), the queued tasks that make and delete them, and the Copy to Project
wizard.

A copy is made and checked in the Orthanc holding the study, sent to the
project's research Orthanc, then the intermediate copy is deleted (see
the plain module ``deid_copy``)."""
import datetime
import logging
from collections import defaultdict

from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Unique, fields
from trytond.pool import Pool
from trytond.pyson import Bool, Eval, If
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from trytond.modules.health_imaging.access import (
    DomainAccessMixin, ReadonlyFieldsMixin, server_queue)

from . import deid_copy
from . import orthanc_client as oc
from .deidentify import ProfileError, Subject
from .exceptions import ResearchError
from .phi_scan import Identity
from .research_rules import AGAIN, NEW, REFUSE, decide_copy
from .viewer import study_urls

logger = logging.getLogger(__name__)

COPY_STATES = [
    ('queued', "Queued"),
    ('done', "Done"),
    ('failed', "Failed"),
    ('deleted', "Deleted"),
    ]
#: The name under which a source Orthanc knows a research Orthanc
PEER_NAME = 'gnuhealth-research-%s'
#: Lets the tests keep a copy in their transaction (see ServerStore.commit)
COMMIT = '_orthanc_page_commit'


def _commit():
    transaction = Transaction()
    if transaction.context.get(COMMIT, True):
        transaction.commit()


def _rollback():
    transaction = Transaction()
    if transaction.context.get(COMMIT, True):
        transaction.rollback()


class ResearchCopy(DomainAccessMixin, ReadonlyFieldsMixin, ModelSQL,
        ModelView):
    "Research Copy"
    __name__ = 'gnuhealth.imaging.research.copy'

    project = fields.Many2One(
        'gnuhealth.imaging.research.project', "Project", required=True,
        readonly=True, ondelete='RESTRICT')
    subject = fields.Many2One(
        'gnuhealth.imaging.research.subject', "Subject", required=True,
        readonly=True, ondelete='RESTRICT')
    pseudonym = fields.Function(fields.Many2One(
            'gnuhealth.imaging.research.pseudonym', "Pseudonym"),
        'get_pseudonym', searcher='search_pseudonym')
    patient = fields.Function(fields.Many2One(
            'gnuhealth.patient', "Patient"), 'get_patient')
    study = fields.Many2One(
        'gnuhealth.orthanc.study', "Clinical Study", readonly=True,
        ondelete='SET NULL',
        help="The study copied, in the clinical Orthanc.")
    source_uid = fields.Char(
        "Clinical StudyInstanceUID", readonly=True, required=True,
        help="One copy per study and project.")
    source_copy = fields.Many2One(
        'gnuhealth.imaging.research.copy', "Registry Copy", readonly=True,
        ondelete='RESTRICT',
        help="The registry's copy this copy was made from.")
    state = fields.Selection(COPY_STATES, "State", readonly=True,
        required=True)
    reason = fields.Text(
        "Reason", readonly=True,
        help="Why the copy failed, or what it removed instead of "
        "shifting.")
    research_server = fields.Many2One(
        'gnuhealth.orthanc.config', "Research Orthanc", readonly=True,
        ondelete='RESTRICT')
    copy_orthanc_id = fields.Char("Orthanc ID", readonly=True)
    copy_uid = fields.Char("StudyInstanceUID", readonly=True)
    series = fields.Integer("Series", readonly=True)
    instances = fields.Integer("Instances", readonly=True)
    done_date = fields.DateTime("Copied", readonly=True)
    deleted_date = fields.DateTime("Deleted", readonly=True)
    viewer_url = fields.Function(
        fields.Char("Viewer", states={'invisible': ~Eval('viewer_url')}),
        'get_viewer_url')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('project_source_uniq', Unique(t, t.project, t.source_uid),
                'health_orthanc.msg_research_copy_unique'),
            ]
        cls._sql_indexes.update({
                Index(t, (t.subject, Index.Range())),
                Index(t, (t.source_uid, Index.Equality())),
                })
        cls._order = [('create_date', 'DESC'), ('id', 'DESC')]

    def get_rec_name(self, name):
        return '%s %s' % (self.subject.pseudonym,
            self.copy_uid or self.create_date.date().isoformat())

    def get_pseudonym(self, name):
        return self.subject.id

    @classmethod
    def search_pseudonym(cls, name, clause):
        """Search the pseudonyms, never the subjects: the subject's patient
        and date shift must not answer a researcher's domain"""
        Pseudonym = Pool().get('gnuhealth.imaging.research.pseudonym')
        _, operator, value = clause[:3]
        _, _, rest = clause[0].partition('.')
        if rest:
            return [('subject', 'in', Pseudonym.search(
                        [(rest,) + tuple(clause[1:])], order=[],
                        query=True))]
        if operator in {'where', 'not where'}:
            return [('subject', 'in' if operator == 'where' else 'not in',
                    Pseudonym.search(value, order=[], query=True))]
        if isinstance(value, str):
            return [('subject', 'in', Pseudonym.search(
                        [('rec_name',) + tuple(clause[1:])], order=[],
                        query=True))]
        return [('subject',) + tuple(clause[1:])]

    def get_patient(self, name):
        return self.subject.patient.id

    @classmethod
    def get_viewer_url(cls, copies, name):
        result = {}
        for copy in copies:
            result[copy.id] = None
            server = copy.research_server
            if copy.state == 'done' and server and copy.copy_orthanc_id:
                urls = study_urls(server.base_url, server.plugins,
                    copy.copy_orthanc_id, copy.copy_uid)
                result[copy.id] = (urls.get('stone') or urls.get('ohif')
                    or urls.get('explorer'))
        return result

    # -- requests ------------------------------------------------------------
    @classmethod
    def request_copies(cls, project, studies):
        """Queue the copy of each study that may be copied to project;
        return the copies queued and {study: message} of those refused"""
        today = datetime.date.today()
        subjects = cls._subjects_of(project, studies)
        existing = cls._copies_of(project, studies)
        registry, registry_copies = None, {}
        from_registry = project.source == 'registry'
        if from_registry:
            registry = project.registry_project()
            if registry:
                registry_copies = cls._copies_of(registry, studies)
        to_create, again, refusals = [], [], {}
        for study in studies:
            subject = subjects.get(study.patient.id if study.patient
                else None)
            copy = existing.get(study.study_instance_uid)
            source = registry_copies.get(study.study_instance_uid)
            decision = decide_copy(today, project.start_date,
                project.end_date,
                subject.enrolment() if subject else None,
                existing=copy.state if copy else None,
                registry_copy=source.state if source else None,
                from_registry=from_registry)
            if decision.action == REFUSE:
                reason = decision.reason
                if not study.patient:
                    reason = 'no_patient'
                refusals[study] = cls._refusal(
                    reason, project, study.rec_name, registry)
            elif decision.action == NEW:
                to_create.append(cls._new_values(
                        project, subject, study, source))
            elif decision.action == AGAIN:
                again.append(copy)
        with without_check_access():
            copies = cls.create(to_create) if to_create else []
            if again:
                cls.write(again, {'state': 'queued', 'reason': None,
                        'research_server': project.research_server.id})
        copies += again
        if copies:
            with server_queue():
                cls.__queue__.run_copies(copies)
        return copies, refusals

    @classmethod
    def _subjects_of(cls, project, studies):
        "{patient id: subject of project}"
        Subject = Pool().get('gnuhealth.imaging.research.subject')
        patients = list({s.patient.id for s in studies if s.patient})
        result = {}
        for sub_ids in grouped_slice(patients):
            for subject in Subject.search([
                        ('project', '=', project.id),
                        ('patient', 'in', list(sub_ids)),
                        ]):
                result[subject.patient.id] = subject
        return result

    @classmethod
    def _copies_of(cls, project, studies):
        "{clinical StudyInstanceUID: copy of project}"
        uids = [s.study_instance_uid for s in studies]
        result = {}
        for sub_uids in grouped_slice(uids):
            for copy in cls.search([
                        ('project', '=', project.id),
                        ('source_uid', 'in', list(sub_uids)),
                        ]):
                result[copy.source_uid] = copy
        return result

    @classmethod
    def _new_values(cls, project, subject, study, source):
        return {
            'project': project.id,
            'subject': subject.id,
            'study': study.id,
            'source_uid': study.study_instance_uid,
            'source_copy': source.id if source else None,
            'research_server': project.research_server.id,
            'state': 'queued',
            }

    @classmethod
    def _refusal(cls, reason, project, study, registry):
        return gettext('health_orthanc.msg_research_refused_%s' % reason,
            study=study, project=project.rec_name,
            registry=registry.rec_name if registry else '')

    # -- the queued copy ----------------------------------------------------
    @classmethod
    def run_copies(cls, copies):
        """Make each queued copy (the task of Copy to Project): one copy
        at a time, each committed; one failing never stops the others"""
        declared = set()
        for copy in cls.browse([c.id for c in copies]):
            if copy.state != 'queued':
                continue
            try:
                copy._run(declared)
            except Exception as exception:
                logger.exception("Research copy %s failed", copy.id)
                _rollback()
                copy._failed(
                    gettext('health_orthanc.msg_research_copy_failed'),
                    detail=gettext('health_orthanc.msg_research_copy_error',
                        error=str(exception) or type(exception).__name__))
            _commit()

    def _run(self, declared):
        decision = decide_copy(datetime.date.today(),
            self.project.start_date, self.project.end_date,
            self.subject.enrolment(),
            registry_copy=self.source_copy.state if self.source_copy
            else None, from_registry=bool(self.source_copy))
        if decision.action == REFUSE:
            # The study's name holds its date and PatientID: for the audit
            registry = self.source_copy.project if self.source_copy else None
            self._failed(
                self._refusal(decision.reason, self.project,
                    '%s #%s' % (self.subject.pseudonym, self.id), registry),
                detail=self._refusal(decision.reason, self.project,
                    self.study.rec_name if self.study else self.source_uid,
                    registry))
            return
        source, study_id = self._source()
        target = self.research_server
        with source.get_client() as client, \
                target.get_client() as target_client:
            if self.copy_orthanc_id:
                # Left by a run that stopped before it was recorded
                for orthanc in {client, target_client}:
                    deid_copy.discard_copy(orthanc, self.copy_orthanc_id)
            try:
                outcome = self._make(client, study_id)
                if source != target:
                    self._send(client, target_client, outcome, declared)
            except deid_copy.CopyLeak as leak:
                self._failed(gettext('health_orthanc.msg_research_copy_leak',
                        attributes=', '.join(
                            '%s (%s, %s)' % (deid_copy.describe_path(p),
                                kind, n) for p, kind, n in leak.problems)))
                return
            except (deid_copy.CopyError, oc.OrthancError,
                    ProfileError) as exception:
                if self.copy_orthanc_id:
                    for orthanc in {client, target_client}:
                        deid_copy.discard_copy(orthanc, self.copy_orthanc_id)
                self._failed(*self._error_texts(exception, source, target))
                return
        self._done(outcome)

    def _source(self):
        "The server and Orthanc ID of the study to copy"
        if self.source_copy:
            return (self.source_copy.research_server,
                self.source_copy.copy_orthanc_id)
        if not self.study:
            raise deid_copy.CopyError(gettext(
                    'health_orthanc.msg_research_study_gone'))
        return self.study.server, self.study.orthanc_id

    def _job(self, study_id):
        subject = self.subject
        days = subject.date_shift
        if self.source_copy:
            # The registry copy's dates are shifted already
            days -= self.source_copy.subject.date_shift
        return deid_copy.CopyJob(study_id, self.project.profile.to_profile(),
            Subject(subject.pseudonym, days), self._identity(),
            identify_source=not self.source_copy)

    def _identity(self):
        "What identifies the patient, as GNU Health knows it"
        patient = self.subject.patient
        party = patient.party
        names = [party.name, party.lastname, patient.rec_name]
        identifiers = [party.ref, getattr(party, 'federation_account', None)]
        identifiers += [a.code for a in party.alternative_ids]
        accession, institution, physicians = [], [], []
        if self.study:
            study = self.study
            identifiers.append(study.patient_id)
            accession.append(study.accession_number)
            institution.append(study.institution)
            physicians.append(study.referring_physician)
            if study.orthanc_patient:
                names.append(study.orthanc_patient.name)
        if self.source_copy:
            # The registry's pseudonym would link the two projects
            identifiers.append(self.source_copy.subject.pseudonym)
        return Identity(
            names=[n for n in names if n],
            identifiers=[i for i in identifiers if i],
            birth_date=party.dob, accession_numbers=[a for a in accession
                if a], institutions=[i for i in institution if i],
            physicians=[p for p in physicians if p])

    def _make(self, client, study_id):
        def made(copy_id):
            self.copy_orthanc_id = copy_id
            with without_check_access():
                self.save()
            _commit()
        return deid_copy.make_copy(client, self._job(study_id), made=made)

    def _send(self, client, target_client, outcome, declared):
        target = self.research_server
        peer = PEER_NAME % target.id
        if (client.domain, peer) not in declared:
            deid_copy.declare_peer(client, peer, target.domain, target.user,
                target.secret())
            declared.add((client.domain, peer))
        deid_copy.send_copy(client, peer, outcome.copy_id)
        received = target_client.get_study_statistics(
            outcome.copy_id).get('CountInstances')
        if received != outcome.instances:
            raise deid_copy.CopyError(gettext(
                    'health_orthanc.msg_research_copy_incomplete',
                    received=received, instances=outcome.instances))
        deid_copy.discard_copy(client, outcome.copy_id)

    def _error_texts(self, exception, source, target):
        """The reason of a failed copy, read by the researchers, and the
        detail for the audit: the errors name the clinical study (its
        Orthanc ID, its URL), the reason never does"""
        if isinstance(exception, oc.OrthancError):
            url = exception.url or ''
            server = target if url.startswith(target.domain) else source
            return (gettext('health_orthanc.msg_research_copy_failed_orthanc',
                    server=server.rec_name), server.log_error(exception))
        logger.warning("Research copy %s failed: %s", self.id, exception)
        detail = gettext('health_orthanc.msg_research_copy_error',
            error=str(exception))
        if isinstance(exception, ProfileError):
            return (gettext('health_orthanc.msg_research_copy_failed_profile',
                    profile=self.project.profile.rec_name), detail)
        return gettext('health_orthanc.msg_research_copy_failed'), detail

    def _done(self, outcome):
        with without_check_access():
            self.write([self], {
                    'state': 'done',
                    'copy_orthanc_id': outcome.copy_id,
                    'copy_uid': outcome.study_instance_uid,
                    'series': outcome.series,
                    'instances': outcome.instances,
                    'done_date': datetime.datetime.now(),
                    'reason': '\n'.join(outcome.notes) or None,
                    })
        self._audit([self], 'research_copy', 'msg_audit_research_copy',
            values=outcome.values)

    def _failed(self, reason, detail=None):
        """Record the failure: reason, read by the researchers, names no
        one; detail, which may, goes to the audit (the managers)"""
        with without_check_access():
            self.write([self], {
                    'state': 'failed',
                    'reason': reason,
                    'copy_orthanc_id': None,
                    })
        self._audit([self], 'research_copy_failed',
            'msg_audit_research_copy_failed', reason=detail or reason)

    # -- deletion -----------------------------------------------------------
    @classmethod
    def delete_from_research(cls, copies):
        """Delete the done copies from their research Orthanc (the task of
        Withdraw Consent); record what was deleted and what was not"""
        by_server = defaultdict(list)
        for copy in cls.browse([c.id for c in copies]):
            if copy.state == 'done':
                by_server[copy.research_server].append(copy)
        deleted, failed = [], {}
        for server, server_copies in by_server.items():
            with server.get_client() as client:
                for copy in server_copies:
                    try:
                        client.delete_study(copy.copy_orthanc_id)
                    except oc.OrthancNotFound:
                        pass
                    except oc.OrthancError as exception:
                        failed[copy] = server.log_error(exception)
                        continue
                    deleted.append(copy)
        with without_check_access():
            if deleted:
                cls.write(deleted, {
                        'state': 'deleted',
                        'deleted_date': datetime.datetime.now(),
                        })
            for copy, reason in failed.items():
                cls.write([copy], {'reason': reason})
        cls._audit(deleted, 'research_copy_delete',
            'msg_audit_research_copy_delete')
        for copy, reason in failed.items():
            cls._audit([copy], 'research_copy_not_deleted',
                'msg_audit_research_copy_not_deleted', reason=reason)
        return deleted, failed

    # -- audit --------------------------------------------------------------
    @classmethod
    def _audit(cls, copies, action, message, **values):
        Audit = Pool().get('gnuhealth.orthanc.audit')
        vlist = []
        for copy in copies:
            entry = {
                'action': action,
                'record': str(copy),
                'record_name': copy.rec_name,
                'patient': copy.subject.patient.id,
                'project': copy.project.id,
                }
            # Never the clinical study's server and Orthanc ID: the entry
            # would show on its Audit tab, read by the clinicians
            if action in {'research_copy_delete',
                    'research_copy_not_deleted'}:
                entry.update(server=copy.research_server.id,
                    orthanc_id=copy.copy_orthanc_id)
            entry['description'] = gettext('health_orthanc.' + message,
                study=copy.study.rec_name if copy.study else copy.source_uid,
                uid=copy.source_uid, project=copy.project.rec_name,
                pseudonym=copy.subject.pseudonym,
                patient=Audit._patient_text(copy.subject.patient),
                copy_uid=copy.copy_uid or '',
                instances=copy.instances or 0,
                server=copy.research_server.rec_name, **values)
            vlist.append(entry)
        return Audit.add(vlist)


class CopyStudiesStart(ModelView):
    "Copy to Project"
    __name__ = 'gnuhealth.imaging.research.copy_studies.start'

    project = fields.Many2One(
        'gnuhealth.imaging.research.project', "Project", required=True,
        states={'readonly': Bool(Eval('patient'))})
    patient = fields.Many2One(
        'gnuhealth.patient', "Patient", readonly=True,
        states={'invisible': ~Eval('patient')})
    studies = fields.Many2Many(
        'gnuhealth.orthanc.study', None, None, "Studies", required=True,
        domain=[
            ('server.research', '=', False),
            If(Bool(Eval('patient')),
                ('patient', '=', Eval('patient', -1)),
                ()),
            ],
        help="The studies to copy: each must be of a patient enrolled in "
        "the project, whose consent stands.")


class CopyStudiesResult(ModelView):
    "Copy to Project"
    __name__ = 'gnuhealth.imaging.research.copy_studies.result'

    message = fields.Text("Message", readonly=True)
    copies = fields.Many2Many(
        'gnuhealth.imaging.research.copy', None, None, "Copies Queued",
        readonly=True)


class CopyStudies(Wizard):
    """Copy to Project

    From Orthanc studies (choose the project) or from a subject (choose
    its studies).  The copies are queued; a study that may not be copied
    is refused with the reason."""
    __name__ = 'gnuhealth.imaging.research.copy_studies'

    start = StateView(
        'gnuhealth.imaging.research.copy_studies.start',
        'health_orthanc.research_copy_studies_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Copy", 'request', 'tryton-ok', default=True),
            ])
    request = StateTransition()
    result = StateView(
        'gnuhealth.imaging.research.copy_studies.result',
        'health_orthanc.research_copy_studies_result_view_form', [
            Button("Close", 'end', 'tryton-close', default=True),
            ])

    def default_start(self, fields):
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Copy = pool.get('gnuhealth.imaging.research.copy')
        model = Transaction().context.get('active_model')
        if model == Study.__name__:
            return {'studies': [s.id for s in self.records]}
        if model == 'gnuhealth.imaging.research.subject' and self.record:
            subject = self.record
            studies = Study.search([
                    ('patient', '=', subject.patient.id),
                    ('server.research', '=', False),
                    ])
            copied = Copy._copies_of(subject.project, studies)
            return {
                'project': subject.project.id,
                'patient': subject.patient.id,
                'studies': [s.id for s in studies
                    if copied.get(s.study_instance_uid) is None
                    or copied[s.study_instance_uid].state in {
                        'failed', 'deleted'}],
                }
        return {}

    def transition_request(self):
        Copy = Pool().get('gnuhealth.imaging.research.copy')
        copies, refusals = Copy.request_copies(
            self.start.project, list(self.start.studies))
        if not copies:
            raise ResearchError('\n'.join(refusals.values()))
        self.result.message = '\n'.join([gettext(
                    'health_orthanc.msg_research_copies_queued',
                    count=len(copies), project=self.start.project.rec_name)]
            + list(refusals.values()))
        self.result.copies = copies
        return 'result'

    def default_result(self, fields):
        return {
            'message': self.result.message,
            'copies': [c.id for c in self.result.copies],
            }
