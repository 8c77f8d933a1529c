# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Query PACS and retrievals over real JSON-RPC sessions, as each user.

A clinician queries the PACS and retrieves a study as the web client does
(the wizard's calls, the queued retrieval run by trytond after the commit);
a user without an imaging group cannot; only Orthanc administrators manage
nodes and scheduled queries; no nested where through the new models
reaches what the user may not read.
"""
import datetime

from trytond.pool import Pool

from trytond.modules.health_orthanc.tests.pacs_pair import start_pair
from trytond.modules.health_orthanc.tests.pacs_samples import (
    PACS_STUDIES, load)

from .rpc import RPCError, RPCTestCase

CONFIG = 'gnuhealth.orthanc.config'
NODE = 'gnuhealth.orthanc.dicom_node'
RETRIEVAL = 'gnuhealth.orthanc.retrieval'
RETRIEVAL_STUDY = 'gnuhealth.orthanc.retrieval.study'
SCHEDULED = 'gnuhealth.orthanc.scheduled_query'
STUDY = 'gnuhealth.orthanc.study'
AUDIT = 'gnuhealth.orthanc.audit'
QUERY = 'gnuhealth.orthanc.query'

USERS = {
    'doctor': ['health.group_health_doctor'],
    'imaging': ['health_imaging.group_health_imaging'],
    'healthadmin': ['health.group_health_admin'],
    'orthancadmin': ['health_orthanc.group_orthanc_admin'],
    'nogroup': [],
    }
QUERYING = ['doctor', 'imaging', 'orthancadmin']
#: Values that every text is at least, and that none is at least
LOW, HIGH = '', '\U0010ffff'


def server_where(domain):
    return [('server', 'where', domain)]


def node_where(domain):
    return [('node', 'where', server_where(domain))]


#: (model, a domain built on a condition on the server) through the new
#: models, nested
SERVER_PATHS = [
    (NODE, server_where),
    (NODE, lambda d: [('server', 'not where', d)]),
    (RETRIEVAL, node_where),
    (RETRIEVAL, lambda d: [('studies', 'where', [
                    ('retrieval', 'where', node_where(d))])]),
    (RETRIEVAL_STUDY, lambda d: [('retrieval', 'where', node_where(d))]),
    (SCHEDULED, node_where),
    (SCHEDULED, lambda d: [('retrievals', 'where', node_where(d))]),
    ]


class PacsRPCCase(RPCTestCase):
    "Two Orthancs, a trytond server and a session per group (no test)"
    USERS = USERS
    DATABASE = 'pacs_rpc'

    @classmethod
    def start_orthancs(cls):
        cls.pacs, cls.ours = start_pair(cls.workdir)
        cls.addClassCleanup(cls.pacs.stop)
        cls.addClassCleanup(cls.ours.stop)
        load(cls.pacs.upload, PACS_STUDIES)

    @classmethod
    def setUpData(cls):
        from trytond.modules.health_imaging.tests.tools import create_patient
        with cls.trytond.transaction():
            pool = Pool()
            Server = pool.get(CONFIG)
            Scheduled = pool.get(SCHEDULED)
            ana = create_patient('Ana', 'García', puid='PUID-0001',
                dob=datetime.date(1970, 1, 1))
            server, = Server.create([{
                        'label': 'Ours', 'domain': cls.ours.url,
                        'user': cls.ours.user,
                        'password': cls.ours.password,
                        'validated': True,
                        }])
            cls.ana, cls.server = ana.id, server.id
        admin = cls.sessions['orthancadmin']
        admin.button(CONFIG, 'check_servers', [cls.server])
        cls.node, = admin.model(NODE, 'create', [{
                    'name': 'HOSPITAL', 'server': cls.server, 'aet': 'PACS',
                    'host': '127.0.0.1', 'port': cls.pacs.dicom_port_used,
                    }])
        with cls.trytond.transaction():
            Scheduled = Pool().get(SCHEDULED)
            scheduled, = Scheduled.create([{
                        'name': 'Nightly CT', 'node': cls.node,
                        'modalities': 'CT',
                        }])
            cls.scheduled = scheduled.id

    def root(self):
        return self.trytond.transaction()

    def query(self, session, **start):
        """Open the wizard, query; return the session ID and the answers
        page, as sao does"""
        session_id, state, _ = session.call('wizard.%s.create' % QUERY)
        page = session.call('wizard.%s.execute' % QUERY, session_id, {},
            state)
        # What sao sends back: the fields, not the names of the records
        values = {k: v for k, v in page['view']['defaults'].items()
            if not k.endswith('.') and k != 'template'}
        values.update(start)
        page = session.call('wizard.%s.execute' % QUERY, session_id,
            {'start': values}, 'query')
        return session_id, page

    def answer(self, session, model, domain):
        "The answer of a search, or the name of the error it raised"
        try:
            return sorted(session.search(model, domain))
        except RPCError as exception:
            return ('refused', exception.name)


class PacsRPCTestCase(PacsRPCCase):
    "The PACS features over JSON-RPC as users of each group"

    # -- who queries and retrieves ------------------------------------------
    def test_clinician_queries_and_retrieves(self):
        """A doctor queries the PACS for a patient and retrieves a study:
        queued, done after the call, synced, linked, audited"""
        doctor = self.sessions['doctor']
        session_id, page = self.query(doctor,
            patient=self.ana, patient_ids='PUID-0001')
        self.assertEqual(page['view']['state'], 'answers')
        answers = page['view']['defaults']['answers']
        self.assertEqual(len(answers), 5)
        for answer in answers:
            answer['selected'] = answer['accession'] == 'ACC-1002'
        values = {k: v for k, v in page['view']['defaults'].items()
            if not k.endswith('.')}
        values['answers'] = [{k: v for k, v in a.items()
                if not k.endswith('.')} for a in answers]
        page = doctor.call('wizard.%s.execute' % QUERY, session_id,
            {'answers': values}, 'retrieve')
        action, = page['actions']
        self.assertEqual(action[0]['res_model'], RETRIEVAL)
        doctor.call('wizard.%s.delete' % QUERY, session_id)

        # trytond ran the queued retrieval, then the sync, after the call
        retrieval, = doctor.search(RETRIEVAL, [])
        values, = doctor.read(RETRIEVAL, [retrieval],
            ['state', 'user', 'retrieved_count', 'studies'])
        self.assertEqual(
            (values['state'], values['user'], values['retrieved_count']),
            ('done', self.users['doctor'], 1))
        study, = doctor.search(STUDY, [('patient', '=', self.ana)])
        read, = doctor.read(STUDY, [study], ['accession_number'])
        self.assertEqual(read['accession_number'], 'ACC-1002')
        # Who queried and who pulled the patient's images
        with self.root():
            Audit = Pool().get(AUDIT)
            entries = {(e.action, e.user.id, e.patient.id)
                for e in Audit.search([('action', 'like', 'pacs_%')])}
        self.assertEqual(entries, {
                ('pacs_query', self.users['doctor'], self.ana),
                ('pacs_retrieve', self.users['doctor'], self.ana),
                })

    def test_imaging_staff_and_admins_query(self):
        for login in ['imaging', 'orthancadmin']:
            with self.subTest(user=login):
                _, page = self.query(self.sessions[login],
                    patient_ids='MRN-0002')
                self.assertEqual(
                    len(page['view']['defaults']['answers']), 3)

    def test_others_may_not_query_nor_retrieve(self):
        "Without an imaging group: no wizard, no node, no retrieval"
        for login in ['nogroup', 'healthadmin']:
            session = self.sessions[login]
            with self.subTest(user=login), self.assertRaises(RPCError):
                self.query(session, patient_ids='PUID-0001')
        session = self.sessions['nogroup']
        for model in [NODE, RETRIEVAL, RETRIEVAL_STUDY, SCHEDULED]:
            with self.subTest(model=model):
                self.assertEqual(
                    self.answer(session, model, [])[0], 'refused')
        with self.assertRaises(RPCError):
            session.button(NODE, 'echo', [self.node])

    # -- who manages nodes --------------------------------------------------
    def test_only_administrators_manage_nodes(self):
        values = {
            'name': 'OTHER', 'server': self.server, 'aet': 'OTHER',
            'host': '127.0.0.1', 'port': 104,
            }
        for login in ['doctor', 'imaging', 'healthadmin', 'nogroup']:
            session = self.sessions[login]
            for method, args in [
                    ('create', [[values]]),
                    ('write', [[self.node], {'port': 105}]),
                    ('delete', [[self.node]]),
                    ]:
                with self.subTest(user=login, model=NODE, method=method), \
                        self.assertRaises(RPCError):
                    session.model(NODE, method, *args)
            for method, args in [
                    ('create', [[{'name': 'X', 'node': self.node}]]),
                    ('write', [[self.scheduled], {'days': 3}]),
                    ]:
                with self.subTest(user=login, model=SCHEDULED,
                        method=method), self.assertRaises(RPCError):
                    session.model(SCHEDULED, method, *args)
            with self.assertRaises(RPCError):
                session.button(SCHEDULED, 'run_now', [self.scheduled])
        admin = self.sessions['orthancadmin']
        other, = admin.model(NODE, 'create', [values])
        admin.write(NODE, [other], {'port': 105})
        admin.model(NODE, 'delete', [other])
        admin.write(SCHEDULED, [self.scheduled], {'days': 2})

    def test_what_the_server_writes_is_refused(self):
        """The status of a node, a retrieval and what a scheduled query
        reports: written by the server only, administrators included"""
        admin = self.sessions['orthancadmin']
        for model, ids, values in [
                (NODE, [self.node], {'echo_state': 'ok'}),
                (NODE, [self.node], {'from_orthanc': True}),
                (SCHEDULED, [self.scheduled], {'last_report': 'forged'}),
                ]:
            with self.subTest(model=model, values=values), \
                    self.assertRaises(RPCError):
                admin.write(model, ids, values)
        for login in USERS:
            with self.subTest(user=login), self.assertRaises(RPCError):
                self.sessions[login].model(RETRIEVAL, 'create', [{
                            'node': self.node, 'state': 'done'}])

    def test_echo_by_the_users_who_query(self):
        for login in QUERYING:
            with self.subTest(user=login):
                self.sessions[login].button(NODE, 'echo', [self.node])
                values, = self.sessions[login].read(
                    NODE, [self.node], ['echo_state'])
                self.assertEqual(values['echo_state'], 'ok')

    # -- nested where -------------------------------------------------------
    def test_nested_where_reaches_nothing_closed(self):
        """Through nodes, retrievals and scheduled queries, no user learns
        the password, nor a clinician the server's user name"""
        for login in USERS:
            session = self.sessions[login]
            for model, make_domain in SERVER_PATHS:
                for field in ['password', 'user', 'ca_bundle']:
                    if field != 'password' and login == 'orthancadmin':
                        continue
                    with self.subTest(user=login, model=model, field=field,
                            path=make_domain([(field, '>=', '?')])):
                        answers = [self.answer(session, model,
                                make_domain([(field, op, value)]))
                            for op, value in [('>=', LOW), ('>=', HIGH)]]
                        self.assertEqual(answers[0], answers[1])

    def test_nested_where_opens_what_is_readable(self):
        "The same paths answer on the fields the user may read"
        for login in QUERYING:
            session = self.sessions[login]
            with self.subTest(user=login):
                self.assertEqual(session.search(RETRIEVAL_STUDY, [
                            ('retrieval', 'where', node_where(
                                    [('label', '=', 'Ours')]))]),
                    session.search(RETRIEVAL_STUDY, []))
                self.assertIn(self.node, session.search(NODE, server_where(
                            [('label', '=', 'Ours')])))
        admin = self.sessions['orthancadmin']
        self.assertIn(self.node, admin.search(NODE, server_where(
                    [('user', '=', self.ours.user)])))
        self.assertEqual(admin.search(NODE, server_where(
                    [('user', '=', 'somebody else')])), [])
