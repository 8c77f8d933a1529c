# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The attacks found by the review of PACS query/retrieve (issue #12).

Each test plays, over real JSON-RPC sessions as the user concerned, a
defect that the review found; each failed before its fix.  The set-up is
the one of ``tests/test_pacs_rpc.py`` (its tests are not run again here).
"""

import requests
from trytond.pool import Pool

from trytond.modules.health_orthanc.tests.pacs_samples import PACS_STUDIES

from .rpc import RPCError
from .test_pacs_rpc import AUDIT, NODE, QUERY, RETRIEVAL, PacsRPCCase

START = 'gnuhealth.orthanc.query.start'
UID = {s.accession: s.study_uid for s in PACS_STUDIES}
#: The fields of an answer row that a forged page leaves empty
BLANK = dict.fromkeys(['patient_name', 'birth_date', 'study_date',
        'modalities', 'description', 'accession', 'series_count',
        'instance_count', 'patient', 'link', 'already_here'])


class PacsAttacksTestCase(PacsRPCCase):
    "The attacks of the review of #12, over JSON-RPC"
    DATABASE = 'r12_rpc'

    @classmethod
    def setUpData(cls):
        super().setUpData()
        with cls.trytond.transaction():
            Node = Pool().get(NODE)
            closed, inactive = Node.create([{
                        'name': 'CLOSED', 'server': cls.server,
                        'aet': 'PACS', 'host': '127.0.0.1',
                        'port': cls.pacs.dicom_port_used,
                        'may_query': False, 'may_retrieve': False,
                        }, {
                        'name': 'INACTIVE', 'server': cls.server,
                        'aet': 'PACS', 'host': '127.0.0.1',
                        'port': cls.pacs.dicom_port_used,
                        'active': False,
                        }])
            cls.closed, cls.inactive = closed.id, inactive.id

    def our_uids(self):
        "The StudyInstanceUIDs our Orthanc holds"
        response = requests.get(self.ours.url + '/studies',
            params={'expand': ''}, auth=(self.ours.user, self.ours.password))
        return {s['MainDicomTags']['StudyInstanceUID']
            for s in response.json()}

    def forged_retrieve(self, session, node, *answers):
        "Go straight to Retrieve with the answers given"
        return self.execute(session, 'retrieve', {'answers': {
                    'node': node, 'may_retrieve': True,
                    'answers': [dict(BLANK, selected=True, **a)
                        for a in answers],
                    }})

    def execute(self, session, state, data):
        "Run a state of a new Query PACS wizard with the data given"
        session_id, _, _ = session.call('wizard.%s.create' % QUERY)
        try:
            return session.call('wizard.%s.execute' % QUERY, session_id,
                data, state)
        finally:
            session.call('wizard.%s.delete' % QUERY, session_id)

    def test_on_change_patient_reads_no_identifiers(self):
        """The on_change of the wizard's start page gives the identifiers
        of any patient to any user: refused outside the wizard's groups"""
        with self.root():
            pool = Pool()
            Party = pool.get('party.party')
            Patient = pool.get('gnuhealth.patient')
            Party.write([Patient(self.ana).party], {'alternative_ids': [
                        ('create', [{
                                    'code': 'SECRET-MRN-77',
                                    'alternative_id_type': 'medical_record',
                                    }])]})
        for login in ['nogroup', 'healthadmin']:
            with self.subTest(user=login), self.assertRaises(RPCError):
                self.sessions[login].model(START, 'on_change',
                    {'patient': self.ana}, ['patient'])
        changes = self.sessions['doctor'].model(START, 'on_change',
            {'patient': self.ana}, ['patient'])
        self.assertEqual(changes['patient_ids'], 'PUID-0001, SECRET-MRN-77')
        self.assertIn('SECRET-MRN-77', changes['identifiers'])

    def test_query_node_not_allowed(self):
        """The start page names a node the user may not query (Query off,
        inactive, none): refused with a message, nothing queried"""
        doctor = self.sessions['doctor']
        for node, text in [
                (self.closed, 'may not be queried'),
                (self.inactive, 'may not be queried'),
                (None, 'Choose the DICOM node')]:
            with self.subTest(node=node), \
                    self.assertRaises(RPCError) as raised:
                self.execute(doctor, 'query', {'start': {
                            'node': node, 'source': 'patient',
                            'patient_ids': 'MRN-0002', 'skip_here': False}})
            self.assertEqual(raised.exception.name, 'UserError')
            self.assertIn(text, raised.exception.message)
        with self.root():
            Audit = Pool().get(AUDIT)
            self.assertFalse(Audit.search([('action', '=', 'pacs_query')]))

    def test_retrieve_from_node_not_allowed(self):
        "Retrieve off, or the node inactive: refused, nothing moved"
        doctor = self.sessions['doctor']
        before = self.our_uids()
        retrievals = doctor.search(RETRIEVAL, [])
        for node in [self.closed, self.inactive]:
            with self.subTest(node=node), \
                    self.assertRaises(RPCError) as raised:
                self.forged_retrieve(doctor, node,
                    {'study_uid': UID['ACC-2002'], 'patient_id': 'MRN-0002'})
            self.assertIn('not retrieved from', raised.exception.message)
        self.assertEqual(self.our_uids(), before)
        self.assertEqual(doctor.search(RETRIEVAL, []), retrievals)

    def test_retrieve_uid_list_smuggled(self):
        """A forged StudyInstanceUID holding a list ("a\\b") made the
        C-FIND match several studies, all moved, none recorded nor
        audited: refused"""
        doctor = self.sessions['doctor']
        before = self.our_uids()
        retrievals = doctor.search(RETRIEVAL, [])
        for uid in ['%s\\%s' % (UID['ACC-3001'], UID['ACC-3002']),
                UID['ACC-3001'][:-1] + '*']:
            with self.subTest(uid=uid), \
                    self.assertRaises(RPCError) as raised:
                self.forged_retrieve(doctor, self.node,
                    {'study_uid': UID['ACC-1001'], 'patient_id': 'PUID-0001'},
                    {'study_uid': uid, 'patient_id': 'forged'})
            self.assertIn('is not a StudyInstanceUID',
                raised.exception.message)
        self.assertEqual(self.our_uids(), before)
        self.assertEqual(doctor.search(RETRIEVAL, []), retrievals)

    def test_retrieve_records_what_the_node_answers(self):
        """A forged answer names another PatientID and patient: the
        retrieval records and audits what the node answers"""
        doctor = self.sessions['doctor']
        self.forged_retrieve(doctor, self.node, {
                'study_uid': UID['ACC-1003'], 'patient_id': 'MRN-0002',
                'patient_name': 'Somebody Else', 'description': 'forged'}, {
                'study_uid': '1.2.3.999', 'patient_id': 'PUID-0001',
                'description': 'forged'})
        with self.root():
            pool = Pool()
            Audit = pool.get(AUDIT)
            Retrieval = pool.get(RETRIEVAL)
            retrieval, = Retrieval.search([
                    ('studies.study_uid', '=', '1.2.3.999')])
            self.assertEqual(retrieval.state, 'partly_failed')
            study, = [s for s in retrieval.studies if s.state == 'retrieved']
            # Not on the node: nothing of the forged answer is kept
            missing, = [s for s in retrieval.studies if s.state == 'failed']
            self.assertEqual(
                (missing.study_uid, missing.patient, missing.patient_id,
                    missing.description), ('1.2.3.999', None, '', ''))
            self.assertEqual(
                (study.patient_id, study.patient and study.patient.id),
                ('PUID-0001', self.ana))
            self.assertNotEqual(study.description, 'forged')
            entry, = Audit.search([('action', '=', 'pacs_retrieve')])
            self.assertEqual(entry.patient.id, self.ana)
            self.assertIn('PUID-0001', entry.description)

    def test_retry_node_closed_and_requester_kept(self):
        """Retry of a retrieval whose node no longer allows Retrieve:
        refused, nothing moved; allowed again, the retry keeps who asked
        and the audit names who retried"""
        with self.root():
            pool = Pool()
            Node = pool.get(NODE)
            Retrieval = pool.get(RETRIEVAL)
            node, = Node.create([{
                        'name': 'LATER', 'server': self.server,
                        'aet': 'PACS', 'host': '127.0.0.1',
                        'port': self.pacs.dicom_port_used,
                        }])
            retrieval, = Retrieval.create([{
                        'node': node.id, 'state': 'failed', 'progress': 100,
                        'user': self.users['imaging'],
                        'studies': [('create', [{
                                        'study_uid': UID['ACC-2001'],
                                        'state': 'failed'}])],
                        }])
            Node.write([node], {'may_retrieve': False})
            node, retrieval = node.id, retrieval.id
        doctor = self.sessions['doctor']
        before = self.our_uids()
        with self.assertRaises(RPCError) as raised:
            doctor.button(RETRIEVAL, 'retry', [retrieval])
        self.assertIn('no longer retrieved from the DICOM node "LATER"',
            raised.exception.message)
        self.assertEqual(self.our_uids(), before)

        with self.root():
            Node = Pool().get(NODE)
            Node.write([Node(node)], {'may_retrieve': True})
        doctor.button(RETRIEVAL, 'retry', [retrieval])
        values, = doctor.read(RETRIEVAL, [retrieval], ['state', 'user'])
        self.assertEqual((values['state'], values['user']),
            ('done', self.users['imaging']))
        with self.root():
            Audit = Pool().get(AUDIT)
            entry, = Audit.search([('action', '=', 'pacs_retrieve'),
                    ('record', '=', '%s,%s' % (RETRIEVAL, retrieval))])
            self.assertEqual(entry.user.id, self.users['doctor'])
