# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The pseudonym register over real JSON-RPC sessions.

An Imaging Research Manager enrols a patient and copies her study to a
project, as the web client does; researchers (one of them also a doctor,
who reads the clinical studies) then try every path a client has to the
patient behind a pseudonym: reads, dotted reads, search_read, exports,
domains (dotted and nested ``where``), orders, the audit, the attachments
of the register.  None answers, and none of them can trigger a copy.
"""
import datetime

from trytond.pool import Pool
from trytond.transaction import Transaction

from trytond.modules.health_orthanc.tests.phi_samples import (
    PATIENT, make_phi_study)

from .rpc import RPCError, RPCTestCase

CONFIG = 'gnuhealth.orthanc.config'
STUDY = 'gnuhealth.orthanc.study'
AUDIT = 'gnuhealth.orthanc.audit'
PROJECT = 'gnuhealth.imaging.research.project'
SUBJECT = 'gnuhealth.imaging.research.subject'
PSEUDONYM = 'gnuhealth.imaging.research.pseudonym'
COPY = 'gnuhealth.imaging.research.copy'
ATTACHMENT = 'ir.attachment'
COPY_WIZARD = 'gnuhealth.imaging.research.copy_studies'

USERS = {
    'manager': ['health_orthanc.group_research_manager'],
    'researcher': ['health_orthanc.group_researcher'],
    # A clinician who also does research: reads the clinical studies
    'clinician': ['health_orthanc.group_researcher',
        'health.group_health_doctor',
        'health_imaging.group_health_imaging'],
    'doctor': ['health.group_health_doctor'],
    'orthancadmin': ['health_orthanc.group_orthanc_admin'],
    }
RESEARCHERS = ['researcher', 'clinician']


class ResearchRPCTestCase(RPCTestCase):
    "Who is who, for the managers only"
    USERS = USERS
    DATABASE = 'research_rpc'

    @classmethod
    def start_orthancs(cls):
        cls.clinical = cls.start_orthanc('clinical')
        cls.research = cls.start_orthanc('research')

    @classmethod
    def setUpData(cls):
        from trytond.modules.health_imaging.tests.tools import create_patient
        cls.clinical.upload_many(make_phi_study(
                n_series=1, n_instances=2,
                extra={'StudyDescription': 'CT thorax'}))
        with cls.trytond.transaction():
            pool = Pool()
            Server = pool.get(CONFIG)
            ModelData = pool.get('ir.model.data')
            patient = create_patient('Jörg', 'Müller', puid=PATIENT.puid,
                dob=datetime.date(1975, 3, 21))
            other = create_patient('Ana', 'Betz', puid='PUID-ANA')
            clinical, research = Server.create([{
                        'label': 'Clinical', 'domain': cls.clinical.url,
                        'user': cls.clinical.user,
                        'password': cls.clinical.password,
                        'validated': True,
                        }, {
                        'label': 'Research', 'domain': cls.research.url,
                        'user': cls.research.user,
                        'password': cls.research.password,
                        'validated': True, 'research': True,
                        }])
            Server.sync_now([clinical])
            cls.patient, cls.other = patient.id, other.id
            cls.basic = ModelData.get_id(
                'health_orthanc', 'deid_profile_basic')
            cls.research_server = research.id
        cls.study, = cls.sessions['manager'].search(
            STUDY, [('patient_id', '=', PATIENT.puid)])
        cls.manager_enrols_and_copies()

    @classmethod
    def manager_enrols_and_copies(cls):
        "What a manager does in the web client"
        manager = cls.sessions['manager']
        cls.project, = manager.model(PROJECT, 'create', [{
                    'code': 'TRIAL', 'name': 'Trial',
                    'pseudonym_prefix': 'TRIAL',
                    'research_server': cls.research_server,
                    'profile': cls.basic,
                    }])
        cls.subject, = manager.model(SUBJECT, 'create', [{
                    'project': cls.project, 'patient': cls.patient,
                    'consent_date': datetime.date.today(),
                    'consent_reference': 'CONSENT-MULLER-1',
                    }])
        cls.attachment, = manager.model(ATTACHMENT, 'create', [{
                    'name': 'consent Müller Jörg.pdf',
                    'resource': '%s,%s' % (SUBJECT, cls.subject),
                    'data': b'%PDF consent of Joerg Mueller',
                    }])
        answer = manager.wizard(COPY_WIZARD, [
                ('request', {'start': {
                            'project': cls.project,
                            'studies': [cls.study],
                            }}),
                ], active=(STUDY, [cls.study]))
        cls.copy, = answer['view']['defaults']['copies']
        values, = manager.read(SUBJECT, [cls.subject],
            ['pseudonym', 'date_shift'])
        cls.pseudonym = values['pseudonym']
        cls.date_shift = values['date_shift']

    def secrets(self):
        "What must never reach a researcher: who, and the date shift"
        return [PATIENT.puid, 'Müller', 'Jörg', 'CONSENT-MULLER-1',
            'consent Müller', 'Mueller']

    def assertRefusedOrBlind(self, login, model, method, *params):
        "The call is refused, or its answer holds nothing of the patient"
        session = self.sessions[login]
        try:
            answer = session.model(model, method, *params)
        except RPCError:
            return
        text = repr(answer)
        for secret in self.secrets():
            self.assertNotIn(secret, text,
                '%s learns %r by %s.%s%r' % (
                    login, secret, model, method, params))
        return answer

    # -- the copy was made --------------------------------------------------
    def test_manager_copied(self):
        "The copy queued by the manager's wizard ran after the call"
        manager = self.sessions['manager']
        copy, = manager.read(COPY, [self.copy], [
                'state', 'reason', 'copy_orthanc_id', 'patient', 'study'])
        self.assertEqual(copy['state'], 'done', copy['reason'])
        self.assertEqual(copy['patient'], self.patient)
        self.assertEqual(copy['study'], self.study)
        self.assertEqual(self.research.request('GET', '/studies').json(),
            [copy['copy_orthanc_id']])
        entries = manager.search(AUDIT, [
                ('project', '=', self.project),
                ('record', 'in', ['%s,%s' % (SUBJECT, self.subject),
                        '%s,%s' % (COPY, self.copy)]),
                ])
        actions = {e['action'] for e in manager.read(
                AUDIT, entries, ['action', 'user', 'patient'])}
        self.assertEqual(actions, {'research_enrol', 'research_copy'})
        for entry in manager.read(AUDIT, entries, ['user', 'patient']):
            self.assertEqual(entry['user'], self.users['manager'])
            self.assertEqual(entry['patient'], self.patient)

    # -- what researchers see -----------------------------------------------
    def test_researchers_see_pseudonyms_and_copies(self):
        for login in RESEARCHERS:
            session = self.sessions[login]
            with self.subTest(user=login):
                self.assertEqual(session.search(PROJECT, []), [self.project])
                project, = session.read(PROJECT, [self.project],
                    ['pseudonyms', 'copies', 'profile.rec_name'])
                pseudonym, = session.read(PSEUDONYM, project['pseudonyms'],
                    ['pseudonym', 'state', 'copies'])
                self.assertEqual(pseudonym['pseudonym'], self.pseudonym)
                self.assertEqual(pseudonym['state'], 'enrolled')
                self.assertEqual(pseudonym['copies'], [self.copy])
                copy, = session.read(COPY, project['copies'], [
                        'state', 'pseudonym.rec_name', 'copy_uid',
                        'instances', 'viewer_url', 'rec_name'])
                self.assertEqual(copy['state'], 'done')
                self.assertEqual(
                    copy['pseudonym.']['rec_name'], self.pseudonym)
                self.assertEqual(copy['instances'], 2)

    # -- the register, closed -----------------------------------------------
    def test_register_not_readable(self):
        """No read, dotted read, search_read or export reaches the patient
        of a pseudonym, its date shift or its consent"""
        calls = [
            (SUBJECT, 'search', [], 0, None, None),
            (SUBJECT, 'read', [self.subject], ['patient']),
            (SUBJECT, 'read', [self.subject], ['pseudonym']),
            (SUBJECT, 'search_read', [], 0, None, None, ['patient']),
            (SUBJECT, 'export_data', [self.subject], ['patient/rec_name']),
            (SUBJECT, 'export_data_domain', [], ['date_shift']),
            (COPY, 'read', [self.copy], ['subject']),
            (COPY, 'read', [self.copy], ['patient']),
            (COPY, 'read', [self.copy], ['study']),
            (COPY, 'read', [self.copy], ['source_uid']),
            (COPY, 'read', [self.copy], ['subject.patient']),
            (COPY, 'read', [self.copy], ['patient.rec_name']),
            (COPY, 'read', [self.copy], ['study.patient_id']),
            (COPY, 'read', [self.copy], ['pseudonym.patient']),
            (COPY, 'search_read', [], 0, None, None,
                ['subject.patient.rec_name']),
            (COPY, 'search_read', [], 0, None, None, ['patient']),
            (COPY, 'export_data', [self.copy], ['subject/patient/rec_name']),
            (COPY, 'export_data', [self.copy], ['patient/rec_name']),
            (COPY, 'export_data', [self.copy], ['subject/date_shift']),
            (COPY, 'export_data', [self.copy], ['study/accession_number']),
            (COPY, 'export_data_domain', [], ['patient/party/ref']),
            (PSEUDONYM, 'read', [self.subject], ['patient']),
            (PSEUDONYM, 'export_data', [self.subject], ['copies/patient']),
            (PROJECT, 'read', [self.project], ['subjects']),
            (PROJECT, 'read', [self.project], ['subjects.patient']),
            (PROJECT, 'read', [self.project], ['audit']),
            (PROJECT, 'export_data', [self.project],
                ['subjects/patient/rec_name']),
            (PROJECT, 'export_data', [self.project],
                ['copies/subject/consent_reference']),
            (AUDIT, 'search', [], 0, None, None),
            (AUDIT, 'read', [1, 2, 3], ['description']),
            (ATTACHMENT, 'read', [self.attachment], ['name', 'data']),
            (ATTACHMENT, 'search_read',
                [('resource', 'like', SUBJECT + ',%')], 0, None, None,
                ['name']),
            (ATTACHMENT, 'export_data', [self.attachment], ['name']),
            (ATTACHMENT, 'export_data', [self.attachment], ['data']),
            ]
        for login in RESEARCHERS + ['doctor']:
            for model, method, *params in calls:
                with self.subTest(user=login, model=model, method=method,
                        params=params):
                    answer = self.assertRefusedOrBlind(
                        login, model, method, *params)
                    if method in {'read', 'export_data'} and answer:
                        self.assertNotIn(str(self.date_shift), repr(
                                [v for v in answer if 'date_shift' in str(
                                        params)]))

    def test_register_not_searchable(self):
        """No domain tells whether a pseudonym is a given patient: dotted,
        nested where, not where, order; the same answer for the patient
        and for another (refused, both)"""
        paths = [
            (COPY, lambda p: [('patient', '=', p)]),
            (COPY, lambda p: [('subject.patient', '=', p)]),
            (COPY, lambda p: [('subject', 'where', [('patient', '=', p)])]),
            (COPY, lambda p: [('pseudonym', 'where', [
                            ('copies', 'where', [('patient', '=', p)])])]),
            (COPY, lambda p: [('project', 'where', [
                            ('subjects', 'where', [('patient', '=', p)])])]),
            (COPY, lambda p: [('project', 'not where', [
                            ('subjects.patient', '!=', p)])]),
            (COPY, lambda p: [('study', 'where', [('patient', '=', p)])]),
            (COPY, lambda p: [('source_copy', 'where', [
                            ('patient', '=', p)])]),
            # The pseudonym's searcher: the clause is the pseudonym's,
            # never the subject's
            (COPY, lambda p: [('pseudonym.patient', '=', p)]),
            (COPY, lambda p: [('pseudonym', 'where', [('patient', '=', p)])]),
            (COPY, lambda p: [('pseudonym', 'not where', [
                            ('patient', '!=', p)])]),
            (COPY, lambda p: [('pseudonym', 'where', [
                            ('patient.party.ref', '=',
                                'PUID-ANA' if p == self.other
                                else PATIENT.puid)])]),
            (COPY, lambda p: [('pseudonym', 'where', [
                            ('copies', 'where', [
                                    ('subject.patient', '=', p)])])]),
            (PSEUDONYM, lambda p: [('copies.patient', '=', p)]),
            (PSEUDONYM, lambda p: [('copies', 'where', [
                            ('subject', 'where', [('patient', '=', p)])])]),
            (PROJECT, lambda p: [('subjects.patient', '=', p)]),
            (PROJECT, lambda p: [('copies', 'where', [
                            ('patient', '=', p)])]),
            (SUBJECT, lambda p: [('patient', '=', p)]),
            (AUDIT, lambda p: [('patient', '=', p),
                    ('action', 'like', 'research_%')]),
            ]
        for login in RESEARCHERS + ['doctor', 'orthancadmin']:
            session = self.sessions[login]
            for model, make in paths:
                with self.subTest(user=login, model=model, domain=make('?')):
                    answers = [self.answer(session, model, make(p))
                        for p in [self.patient, self.other]]
                    self.assertEqual(answers[0], answers[1])
            self.assertShiftNotSearchable(login)
            for model, order in [
                    (COPY, [('subject.patient', 'ASC')]),
                    (COPY, [('patient', 'ASC')]),
                    (COPY, [('subject', 'ASC')]),
                    (PSEUDONYM, [('copies.subject.patient', 'ASC')]),
                    ]:
                with self.subTest(user=login, model=model, order=order), \
                        self.assertRaises(RPCError):
                    session.search(model, [], order=order)

    def assertShiftNotSearchable(self, login):
        "No domain tells the date shift of the pseudonym"
        session = self.sessions[login]
        for make in [
                lambda d: [('pseudonym', 'where', [('date_shift', '=', d)])],
                lambda d: [('pseudonym.date_shift', '=', d)],
                lambda d: [('pseudonym', 'where', [
                            ('subject.date_shift', '=', d)])],
                ]:
            with self.subTest(user=login, domain=make('?')):
                answers = [self.answer(session, COPY, make(d))
                    for d in [self.date_shift, self.date_shift + 1]]
                self.assertEqual(answers[0], answers[1])

    def test_pseudonym_searchable(self):
        "What researchers read of the pseudonym, they search"
        for login in RESEARCHERS:
            session = self.sessions[login]
            for domain in [
                    [('pseudonym', '=', self.subject)],
                    [('pseudonym', 'ilike', 'TRIAL-%')],
                    [('pseudonym.pseudonym', '=', self.pseudonym)],
                    [('pseudonym', 'where', [('state', '=', 'enrolled')])],
                    [('pseudonym', 'where', [
                                ('project.code', '=', 'TRIAL')])],
                    ]:
                with self.subTest(user=login, domain=domain):
                    self.assertIn(self.copy, session.search(COPY, domain))
            self.assertNotIn(self.copy, session.search(COPY, [
                        ('pseudonym', 'not where', [
                                ('state', '=', 'enrolled')])]))

    def answer(self, session, model, domain):
        try:
            return sorted(session.search(model, domain))
        except RPCError as exception:
            return ('refused', exception.name)

    def test_audit_of_research_for_managers_only(self):
        """The entries of research name the patient and the pseudonym:
        the doctor and the Orthanc administrator, who read the audit of
        images, do not see them, on the study's Audit tab neither"""
        for login in ['doctor', 'orthancadmin', 'clinician']:
            session = self.sessions[login]
            with self.subTest(user=login):
                self.assertEqual(session.search(
                        AUDIT, [('action', 'like', 'research_%')]), [])
                study, = session.read(STUDY, [self.study], ['audit'])
                if study['audit']:
                    for entry in session.read(
                            AUDIT, study['audit'], ['action']):
                        self.assertFalse(
                            entry['action'].startswith('research_'))
        manager = self.sessions['manager']
        entries = manager.search(AUDIT, [('action', 'like', 'research_%')])
        self.assertEqual(len(entries), 2)

    # -- copies: the managers only ------------------------------------------
    def test_researchers_cannot_copy(self):
        for login in RESEARCHERS + ['doctor']:
            session = self.sessions[login]
            for call in [
                    lambda: session.wizard(COPY_WIZARD, [
                            ('request', {'start': {
                                        'project': self.project,
                                        'studies': [self.study]}})],
                        active=(STUDY, [self.study])),
                    lambda: session.button(
                        STUDY, 'copy_to_project', [self.study]),
                    lambda: session.button(
                        SUBJECT, 'copy_studies', [self.subject]),
                    lambda: session.model(
                        COPY, 'request_copies', self.project, [self.study]),
                    lambda: session.model(COPY, 'run_copies', [self.copy]),
                    lambda: session.model(COPY, 'create', [{
                                'project': self.project,
                                'subject': self.subject,
                                'source_uid': '1.2.3', 'state': 'queued'}]),
                    lambda: session.write(COPY, [self.copy],
                        {'state': 'queued'}),
                    lambda: session.model(COPY, 'delete', [self.copy]),
                    lambda: session.model(SUBJECT, 'create', [{
                                'project': self.project,
                                'patient': self.other,
                                'consent_date': datetime.date.today()}]),
                    lambda: session.write(PROJECT, [self.project],
                        {'name': 'Hijacked'}),
                    ]:
                with self.subTest(user=login), self.assertRaises(RPCError):
                    call()
        self.assertEqual(len(self.research.request(
                    'GET', '/studies').json()), 1)

    def test_manager_cannot_forge(self):
        "Even a manager never sets what the server draws or records"
        manager = self.sessions['manager']
        for call in [
                lambda: manager.write(SUBJECT, [self.subject],
                    {'pseudonym': 'TRIAL-AAAAAAAA-A'}),
                lambda: manager.write(SUBJECT, [self.subject],
                    {'date_shift': 0}),
                lambda: manager.write(SUBJECT, [self.subject],
                    {'patient': self.other}),
                lambda: manager.model(SUBJECT, 'create', [{
                            'project': self.project,
                            'patient': self.other,
                            'consent_date': datetime.date.today(),
                            'date_shift': 5}]),
                lambda: manager.model(SUBJECT, 'create', [{
                            'project': self.project,
                            'patient': self.other,
                            'consent_date': datetime.date.today(),
                            'pseudonym': 'TRIAL-AAAAAAAA-A'}]),
                lambda: manager.write(COPY, [self.copy], {'state': 'queued'}),
                lambda: manager.model(COPY, 'create', [{
                            'project': self.project,
                            'subject': self.subject,
                            'source_uid': '1.2.3', 'state': 'done'}]),
                ]:
            with self.subTest(), self.assertRaises(RPCError):
                call()


CENTURY = {'__class__': 'timedelta', 'seconds': 100 * 365 * 86400}


class ResearchQueueRPCTestCase(ResearchRPCTestCase):
    """The queued copies and deletions where trytond-workers run them: the
    tasks stay in ir.queue, as in production"""

    DATABASE = 'research_rpc_queue'
    CONFIG = '\n[queue]\nworker = True\n'

    def tasks(self, method):
        "(queue name, scheduled at) of the tasks of method"
        with self.trytond.transaction():
            Queue = Pool().get('ir.queue')
            return [(t.name, t.scheduled_at) for t in Queue.search([])
                if t.data['method'] == method]

    def assertNotDelayed(self, tasks):
        self.assertTrue(tasks)
        late = [t for t in tasks if t[0] != 'default' or (t[1] and t[1]
                > datetime.datetime.now() + datetime.timedelta(days=1))]
        self.assertFalse(late, tasks)

    def new_project(self, code):
        manager = self.sessions['manager']
        project, = manager.model(PROJECT, 'create', [{
                    'code': code, 'name': code, 'pseudonym_prefix': code,
                    'research_server': self.research_server,
                    'profile': self.basic}])
        subject, = manager.model(SUBJECT, 'create', [{
                    'project': project, 'patient': self.patient,
                    'consent_date': datetime.date.today()}])
        return project, subject

    def run_copies(self, project, end_project=False):
        "Run the copy task of the study to project, as a worker does"
        # The task queued here is run below: the next tests' must not
        tasks = Transaction().tasks
        self.addCleanup(tasks.__setitem__, slice(None), list(tasks))
        with self.trytond.transaction(
                context={'_orthanc_page_commit': False}):
            pool = Pool()
            Copy = pool.get(COPY)
            Project = pool.get(PROJECT)
            copies, _ = Copy.request_copies(
                Project(project), [pool.get(STUDY)(self.study)])
            if end_project:
                yesterday = datetime.date.today() - datetime.timedelta(1)
                Project.write([Project(project)], {
                        'start_date': yesterday, 'end_date': yesterday})
            Copy.run_copies(copies)
            return copies[0].id

    def test_client_cannot_delay_copies(self):
        "The queue context keys of the manager's client are not the task's"
        project, _ = self.new_project('QDELAY')
        self.sessions['manager'].wizard(COPY_WIZARD, [
                ('request', {'start': {'project': project,
                            'studies': [self.study]}})],
            active=(STUDY, [self.study]),
            context={'queue_scheduled_at': CENTURY, 'queue_name': 'nowhere'})
        self.assertNotDelayed(self.tasks('run_copies'))

    def test_client_cannot_delay_deletions(self):
        "Nor the deletion of the copies of a withdrawn subject"
        project, subject = self.new_project('WDELAY')
        copy = self.run_copies(project)
        state, = self.sessions['manager'].read(COPY, [copy], ['state'])
        self.assertEqual(state['state'], 'done')
        self.sessions['manager'].wizard('gnuhealth.imaging.research.withdraw',
            [('withdraw', {'start': {'date': datetime.date.today(),
                            'delete_copies': True}})],
            active=(SUBJECT, [subject]),
            context={'queue_scheduled_at': CENTURY, 'queue_name': 'nowhere'})
        self.assertNotDelayed(self.tasks('delete_from_research'))

    def test_refusal_names_no_patient(self):
        """A copy refused when its task runs (the project ended while it
        was queued): the reason the researchers read has neither the
        study's date nor its PatientID"""
        project, _ = self.new_project('REASON')
        copy = self.run_copies(project, end_project=True)
        study, = self.sessions['manager'].read(STUDY, [self.study],
            ['rec_name', 'patient_id'])
        for login in RESEARCHERS:
            values, = self.sessions[login].read(COPY, [copy],
                ['reason', 'state'])
            self.assertEqual(values['state'], 'failed')
            self.assertIn('is not active today', values['reason'])
            # rec_name: 'date description (PatientID)'
            for secret in self.secrets() + [
                    study['rec_name'], study['rec_name'].split()[0]]:
                self.assertNotIn(secret, values['reason'], login)


for _name in dir(ResearchRPCTestCase):
    if _name.startswith('test_'):
        setattr(ResearchQueueRPCTestCase, _name, None)
del _name
