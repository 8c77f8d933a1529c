# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Query and retrieve from a PACS, in GNU Health, with two real Orthancs.

One Orthanc plays the hospital PACS (loaded with ``pacs_samples``), the
other is GNU Health's; GNU Health declares the PACS as a node of its own.
"""
import datetime
import io
import os
import shutil
import tempfile
import threading
import time
import unittest
from unittest import mock

import openpyxl
from trytond.model.exceptions import AccessError, DomainValidationError
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction, without_check_access

from trytond.modules.health_imaging.tests.tools import create_patient
from trytond.modules.health_orthanc import orthanc_client as oc
from trytond.modules.health_orthanc.dicom_network import RetrieveJob
from trytond.modules.health_orthanc.exceptions import (
    DicomNodeError, DicomNodeValidationError, PacsQueryError)
from trytond.modules.health_orthanc.orthanc_client import OrthancClient

from .orthanc_case import run_queue
from .orthanc_server import free_port
from .pacs_pair import OUR_AET, PACS_AET, start_pacs, start_pair
from .pacs_samples import PACS_STUDIES, PacsStudy, bulk_studies, load

NO_COMMIT = {'_orthanc_page_commit': False}
UID = {s.accession: s.study_uid for s in PACS_STUDIES}
ANA_STUDIES = ['ACC-1001', 'ACC-1002', 'ACC-1003', 'ACC-1004', 'ACC-1005']
CAP = 4


def accessions(rows):
    return sorted(r.accession for r in rows)


class PacsTestCase(unittest.TestCase):
    "Query PACS, retrievals and scheduled queries against real Orthancs"

    @classmethod
    def setUpClass(cls):
        activate_module('health_orthanc')
        cls.workdir = tempfile.mkdtemp(prefix='pacs-module-test-')
        cls.pacs, cls.ours = start_pair(cls.workdir,
            pacs_config={'DicomCheckCalledAet': True})
        load(cls.pacs.upload, PACS_STUDIES)

    @classmethod
    def tearDownClass(cls):
        cls.ours.stop()
        cls.pacs.stop()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        self.ours.clear()
        # Orthanc keeps the nodes that the tests before declared
        with OrthancClient(self.ours.url, self.ours.user,
                self.ours.password) as client:
            for name in client.list_nodes():
                if name != PACS_AET:
                    client.delete_node(name)

    # -- helpers ------------------------------------------------------------
    def setup_data(self):
        "Two patients known to GNU Health, our server and the PACS node"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        self.ana = create_patient('Ana', 'García', puid='PUID-0001',
            dob=datetime.date(1970, 1, 1))
        self.jorg = create_patient('Jörg', 'Müller', puid='GNU-JM',
            mrn='MRN-0002', dob=datetime.date(1955, 12, 24))
        self.server, = Server.create([{
                    'label': 'Ours', 'domain': self.ours.url,
                    'user': self.ours.user, 'password': self.ours.password,
                    'validated': True,
                    }])
        Server.check_servers([self.server])
        self.node = self.create_node('HOSPITAL', self.pacs.dicom_port_used)

    def create_node(self, name, port, aet='PACS', **values):
        Node = Pool().get('gnuhealth.orthanc.dicom_node')
        node, = Node.create([dict({
                        'name': name, 'server': self.server.id, 'aet': aet,
                        'host': '127.0.0.1', 'port': port,
                        }, **values)])
        return node

    def client(self):
        return self.server.get_client()

    def declared(self):
        with self.client() as client:
            return client.list_nodes()

    def query(self, **values):
        "Run the Query PACS wizard up to its answers; return the wizard"
        Wizard = Pool().get('gnuhealth.orthanc.query', type='wizard')
        session_id, _, _ = Wizard.create()
        wizard = Wizard(session_id)
        defaults = wizard.default_start(None)
        for name, value in dict(defaults, **values).items():
            setattr(wizard.start, name, value)
        self.assertEqual(wizard.transition_query(), 'answers')
        return wizard

    def retrieve(self, wizard, accessions=None):
        "Tick the answers of these accessions (all if None) and retrieve"
        for answer in wizard.answers.answers:
            answer.selected = (
                accessions is None or answer.accession in accessions)
        self.assertEqual(wizard.transition_retrieve(), 'open_retrieval')
        return wizard.answers.retrieval

    def here(self, uids):
        with self.client() as client:
            return client.find_local_studies(uids)

    # -- nodes --------------------------------------------------------------
    @with_transaction(context=NO_COMMIT)
    def test_node_saved_in_orthanc(self):
        "Saving a node creates or updates it in Orthanc; deleting removes it"
        Node = Pool().get('gnuhealth.orthanc.dicom_node')
        self.setup_data()
        declared = self.declared()['HOSPITAL']
        self.assertEqual((declared.aet, declared.host, declared.port),
            ('PACS', '127.0.0.1', self.pacs.dicom_port_used))
        self.assertEqual(declared.incoming, ('echo', 'store'))

        Node.write([self.node], {'port': 11112, 'timeout': 7})
        declared = self.declared()['HOSPITAL']
        self.assertEqual((declared.port, declared.timeout), (11112, 7))

        Node.write([self.node], {'name': 'HOSPITAL-2'})
        declared = self.declared()
        self.assertNotIn('HOSPITAL', declared)
        self.assertIn('HOSPITAL-2', declared)

        Node.delete([self.node])
        self.assertNotIn('HOSPITAL-2', self.declared())

    @with_transaction(context=NO_COMMIT)
    def test_node_renamed_kept_when_refused(self):
        """A renamed node that Orthanc refuses to declare: the former one
        is still declared (it was removed first)"""
        Node = Pool().get('gnuhealth.orthanc.dicom_node')
        self.setup_data()
        with mock.patch.object(OrthancClient, 'declare_node',
                    side_effect=oc.OrthancUnreachable('down')), \
                self.assertRaises(DicomNodeError):
            Node.write([self.node], {'name': 'RENAMED'})
        self.assertIn('HOSPITAL', self.declared())
        self.assertNotIn('RENAMED', self.declared())

    @with_transaction(context=NO_COMMIT)
    def test_invalid_node_sends_nothing(self):
        "An invalid node is refused before anything is sent to Orthanc"
        self.setup_data()
        for values, words in [
                ({'name': 'BAD NAME'}, 'letters, digits'),
                ({'name': 'AET', 'aet': 'X' * 17}, '16 characters'),
                ({'name': 'HOST', 'host': 'http://pacs'},
                    'without "http://"'),
                ({'name': 'PORT', 'port': 0}, 'between 1 and 65534'),
                ]:
            with self.subTest(values=values):
                with self.assertRaises(DicomNodeValidationError) as raised:
                    self.create_node(**dict({'port': 104}, **values))
                self.assertIn(words, raised.exception.message)
                self.assertNotIn(values['name'], self.declared())

    @with_transaction(context=NO_COMMIT)
    def test_node_declared_again_when_orthanc_forgot_it(self):
        "Orthanc forgets the nodes of its API when it restarts"
        self.setup_data()
        with self.client() as client:
            client.delete_node('HOSPITAL')
        self.node.echo([self.node])
        self.assertEqual(self.node.echo_state, 'ok')
        self.assertIn('HOSPITAL', self.declared())

    @with_transaction(context=NO_COMMIT)
    def test_configuration_nodes_listed_and_ours_shown(self):
        """The nodes of Orthanc's configuration file are listed, marked, and
        not changed here; our AE title and DICOM port are on the server"""
        Node = Pool().get('gnuhealth.orthanc.dicom_node')
        self.setup_data()
        self.assertEqual((self.server.dicom_aet, self.server.dicom_port),
            (OUR_AET, self.ours.dicom_port_used))
        listed, = Node.search([('from_orthanc', '=', True)])
        self.assertEqual(
            (listed.name, listed.aet, listed.port, listed.from_orthanc),
            ('PACS', 'PACS', self.pacs.dicom_port_used, True))
        self.assertEqual((self.node.our_aet, self.node.our_port),
            (OUR_AET, self.ours.dicom_port_used))
        with self.assertRaises(AccessError):
            Node.write([listed], {'port': 4242})
        Node.write([listed], {'answer_limit': 100})
        # Read again: no duplicate
        self.server.check_servers([self.server])
        self.assertEqual(Node.search_count([]), 2)

    # -- echo ---------------------------------------------------------------
    @with_transaction(context=NO_COMMIT)
    def test_echo(self):
        "Echo OK, a closed port, an AE title refused: said on each node"
        Node = Pool().get('gnuhealth.orthanc.dicom_node')
        self.setup_data()
        closed = self.create_node('CLOSED', free_port())
        refused = self.create_node('REFUSED', self.pacs.dicom_port_used,
            aet='NOTPACS')
        Node.echo([self.node, closed, refused])
        self.assertEqual(
            [(n.echo_state, bool(n.echo_time))
                for n in [self.node, closed, refused]],
            [('ok', True), ('failed', True), ('failed', True)])
        self.assertIsNone(self.node.echo_message)
        self.assertIn('The DICOM node "CLOSED" cannot be reached',
            closed.echo_message)
        self.assertIn('check that the node is running', closed.echo_message)
        self.assertIn('The DICOM node "REFUSED" refused the connection',
            refused.echo_message)
        self.assertIn('our AE title "%s"' % OUR_AET, refused.echo_message)

    @with_transaction(context=NO_COMMIT)
    def test_echo_cron(self):
        "The scheduled action echoes every node"
        pool = Pool()
        Node = pool.get('gnuhealth.orthanc.dicom_node')
        Cron = pool.get('ir.cron')
        self.setup_data()
        cron, = Cron.search([
                ('method', '=', 'gnuhealth.orthanc.dicom_node|echo_all')])
        self.assertEqual((cron.interval_number, cron.interval_type),
            (1, 'hours'))
        Node.echo_all()
        self.assertEqual({n.name: n.echo_state for n in Node.search([])},
            {'HOSPITAL': 'ok', 'PACS': 'ok'})

    # -- query --------------------------------------------------------------
    @with_transaction(context=NO_COMMIT)
    def test_query_patient_by_puid(self):
        "A patient's studies, linked to the patient, the query audited"
        Audit = Pool().get('gnuhealth.orthanc.audit')
        self.setup_data()
        wizard = self.query(patient=self.ana.id, patient_ids='PUID-0001')
        answers = wizard.answers.answers
        self.assertEqual(accessions(answers), ANA_STUDIES)
        self.assertEqual({(a.patient, a.link, a.selected, a.already_here)
                for a in answers}, {(self.ana, 'linked', True, False)})
        pet, = [a for a in answers if a.accession == 'ACC-1003']
        self.assertEqual(
            (pet.modalities, pet.study_date, pet.series_count,
                pet.instance_count, pet.patient_name),
            ('CT, PT', datetime.date(2023, 3, 1), 2, 2, 'GARCÍA, Ana'))
        # The newest first
        self.assertEqual(answers[0].accession, 'ACC-1005')
        self.assertIn('5 studies found on the node "HOSPITAL"',
            wizard.answers.notes)
        entry, = Audit.search([('action', '=', 'pacs_query')])
        self.assertEqual((entry.patient, entry.user.id, entry.record),
            (self.ana, Transaction().user, self.node))
        self.assertIn('PatientID "PUID-0001"', entry.description)

    @with_transaction(context=NO_COMMIT)
    def test_query_defaults_from_patient_and_request(self):
        "The wizard opened on a patient or a request is filled in"
        pool = Pool()
        Wizard = pool.get('gnuhealth.orthanc.query', type='wizard')
        self.setup_data()
        from trytond.modules.health_imaging.tests.tools import create_request
        request = create_request(self.jorg)
        for model, record in [
                ('gnuhealth.patient', self.jorg),
                ('gnuhealth.imaging.test.request', request)]:
            with self.subTest(model=model), Transaction().set_context(
                    active_model=model, active_id=record.id):
                session_id, _, _ = Wizard.create()
                defaults = Wizard(session_id).default_start(None)
            self.assertEqual(
                (defaults['patient'], defaults['patient_ids'],
                    defaults['node']),
                (self.jorg.id, 'GNU-JM, MRN-0002', self.node.id))
            self.assertIn('Medical Record: MRN-0002',
                defaults['identifiers'])
            self.assertTrue(defaults['template'].startswith(b'PK'))

    @with_transaction(context=NO_COMMIT)
    def test_query_patient_by_mrn(self):
        self.setup_data()
        wizard = self.query(patient=self.jorg.id,
            patient_ids='GNU-JM, MRN-0002')
        answers = wizard.answers.answers
        self.assertEqual(accessions(answers),
            ['ACC-2001', 'ACC-2002', 'ACC-2003'])
        self.assertEqual({(a.patient, a.link) for a in answers},
            {(self.jorg, 'linked')})

    @with_transaction(context=NO_COMMIT)
    def test_query_filters(self):
        "Each filter alone and combined, with the exact answers"
        self.setup_data()
        d = datetime.date
        for values, expected in [
                ({'modality_ct': True}, ['ACC-1001', 'ACC-1003']),
                ({'modality_mr': True, 'modality_us': True},
                    ['ACC-1002', 'ACC-1004']),
                ({'other_modalities': 'pt'}, ['ACC-1003']),
                ({'date_from': d(2023, 1, 1)},
                    ['ACC-1003', 'ACC-1004', 'ACC-1005']),
                ({'date_to': d(2022, 6, 15)}, ['ACC-1001', 'ACC-1002']),
                ({'date_from': d(2022, 6, 15), 'date_to': d(2023, 3, 1)},
                    ['ACC-1002', 'ACC-1003']),
                ({'include_terms': 'CHEST'}, ['ACC-1001', 'ACC-1005']),
                ({'include_terms': 'chest, brain'},
                    ['ACC-1001', 'ACC-1002', 'ACC-1005']),
                ({'exclude_terms': 'Contrast, x-ray'},
                    ['ACC-1002', 'ACC-1003', 'ACC-1004']),
                (dict(modality_ct=True, modality_cr=True,
                    include_terms='chest', exclude_terms='contrast'),
                    ['ACC-1005']),
                (dict(modality_ct=True, date_from=d(2022, 1, 1),
                    date_to=d(2023, 12, 31), exclude_terms='contrast'),
                    ['ACC-1003']),
                ]:
            with self.subTest(values=values):
                wizard = self.query(patient_ids='PUID-0001', **values)
                self.assertEqual(accessions(wizard.answers.answers),
                    expected)

    @with_transaction(context=NO_COMMIT)
    def test_query_spreadsheets_with_bad_rows(self):
        "CSV and XLSX: the bad rows listed with their reason, the rest run"
        self.setup_data()
        csv = ('PatientID;Modality;Study Date;Study Description\n'
            'PUID-0001;CT;2022-01-01 - 2022-12-31;\n'
            'MRN-0002;;;chest\n'
            ';CT;;\n'
            'EXT-0003;;31/02/2023;\n'
            'EXT-0003;MG;;\n').encode('cp1252')
        workbook = openpyxl.Workbook()
        sheet = workbook.active
        sheet.append(['Title of the list'])
        sheet.append(['PatientID', 'Modality', 'StudyDate',
                'StudyDescription'])
        sheet.append(['PUID-0001', 'CT', '2022-01-01 - 2022-12-31', None])
        sheet.append(['MRN-0002', None, None, 'chest'])
        sheet.append([None, 'CT', None, None])
        sheet.append(['EXT-0003', None, 'someday', None])
        sheet.append(['EXT-0003', 'MG', datetime.datetime(2023, 3, 1), None])
        buffer = io.BytesIO()
        workbook.save(buffer)
        for name, data, rows in [
                ('queries.csv', csv, (4, 5)),
                ('queries.xlsx', buffer.getvalue(), (5, 6)),
                ]:
            with self.subTest(name=name):
                wizard = self.query(source='sheet', sheet=data,
                    sheet_name=name)
                self.assertEqual(accessions(wizard.answers.answers),
                    ['ACC-1001', 'ACC-2003', 'ACC-3001'])
                notes = wizard.answers.notes
                self.assertIn('Row %d: the row has no PatientID.' % rows[0],
                    notes)
                self.assertIn('Row %d: unreadable StudyDate' % rows[1],
                    notes)

    @with_transaction(context=NO_COMMIT)
    def test_query_spreadsheet_row_fails(self):
        """The query of a row fails: reported with its row, the other rows
        queried, every query that reached the node audited; the node down
        stops the rest"""
        Audit = Pool().get('gnuhealth.orthanc.audit')
        self.setup_data()
        csv = b'PatientID\nPUID-0001\nBROKEN\nMRN-0002\nDOWN\nEXT-0003\n'
        find = OrthancClient.find_studies

        def failing(client, name, query, timeout=None):
            if query.get('PatientID') == 'BROKEN':
                raise oc.DimseFailure(name, operation='find',
                    dimse_status=0xC000)
            if query.get('PatientID') == 'DOWN':
                raise oc.NodeUnreachable(name, operation='find')
            return find(client, name, query, timeout)
        with mock.patch.object(OrthancClient, 'find_studies', failing):
            wizard = self.query(source='sheet', sheet=csv,
                sheet_name='queries.csv')
        self.assertEqual(accessions(wizard.answers.answers),
            ANA_STUDIES + ['ACC-2001', 'ACC-2002', 'ACC-2003'])
        notes = wizard.answers.notes
        self.assertIn('Row 3: the query failed, the other rows were '
            'queried: The DICOM node "HOSPITAL" answered with the error '
            'status 0xC000', notes)
        self.assertIn('Row 5: the query failed', notes)
        self.assertIn('The 1 queries after it were not sent', notes)
        self.assertEqual(sorted(e.description.split('"')[1]
                for e in Audit.search([('action', '=', 'pacs_query')])),
            ['BROKEN', 'MRN-0002', 'PUID-0001'])

    @with_transaction(context=NO_COMMIT)
    def test_query_unreadable_spreadsheet(self):
        self.setup_data()
        with self.assertRaises(PacsQueryError) as raised:
            self.query(source='sheet', sheet=b'Name;Age\nAna;3\n',
                sheet_name='people.csv')
        self.assertIn('"people.csv" has no PatientID column',
            raised.exception.message)

    @with_transaction(context=NO_COMMIT)
    def test_query_skip_already_here(self):
        "A study GNU Health's Orthanc has is left out, or shown as here"
        self.setup_data()
        with self.client() as client:
            client.move_studies('HOSPITAL', [UID['ACC-1002']])
        wizard = self.query(patient_ids='PUID-0001')
        self.assertEqual(accessions(wizard.answers.answers),
            ['ACC-1001', 'ACC-1003', 'ACC-1004', 'ACC-1005'])
        self.assertIn('1 already here left out', wizard.answers.notes)
        wizard = self.query(patient_ids='PUID-0001', skip_here=False)
        here = {a.accession: (a.already_here, a.selected)
            for a in wizard.answers.answers}
        self.assertEqual(here['ACC-1002'], (True, False))
        self.assertEqual(here['ACC-1001'], (False, True))

    @with_transaction(context=NO_COMMIT)
    def test_query_answer_limit_split(self):
        "A node that caps its answers: the dates are split, and it is said"
        self.setup_data()
        capped = start_pacs(os.path.join(self.workdir, 'capped'),
            self.ours.dicom_port_used, aet='CAPPED',
            config={'LimitFindResults': CAP})
        self.addCleanup(capped.stop)
        load(capped.upload, bulk_studies('SPREAD', 10,
                datetime.date(2023, 1, 1), 10))
        self.create_node('CAPPED', capped.dicom_port_used, aet='CAPPED',
            answer_limit=CAP)
        wizard = self.query(node=self.node.search([
                    ('name', '=', 'CAPPED')])[0].id, patient_ids='SPREAD',
            date_from=datetime.date(2023, 1, 1),
            date_to=datetime.date(2023, 1, 31))
        self.assertEqual(accessions(wizard.answers.answers),
            sorted('SPREAD-%d' % i for i in range(10)))
        self.assertIn('10 studies found', wizard.answers.notes)
        # 1-31, 1-16, 1-8 refused; 1-4 and 5-8 give as many as the limit,
        # so they are split too: 1-2, 3-4, 5-6, 7-8; 9-16, 17-31
        self.assertIn('the dates were split and 11 queries sent',
            wizard.answers.notes)

    @with_transaction(context=NO_COMMIT)
    def test_node_down_creates_nothing(self):
        "A node down: a message naming it and what to check, nothing kept"
        pool = Pool()
        Audit = pool.get('gnuhealth.orthanc.audit')
        Retrieval = pool.get('gnuhealth.orthanc.retrieval')
        self.setup_data()
        down = self.create_node('DOWN', free_port())
        with self.assertRaises(PacsQueryError) as raised:
            self.query(node=down.id, patient_ids='PUID-0001')
        self.assertIn('The query of the DICOM node "DOWN" failed',
            raised.exception.message)
        self.assertIn('check that the node is running, that its host and '
            'port are right', raised.exception.message)
        self.assertEqual(Audit.search([('action', 'like', 'pacs_%')]), [])
        self.assertEqual(Retrieval.search([]), [])

    @with_transaction(context=NO_COMMIT)
    def test_our_orthanc_down_keeps_no_node(self):
        "A node that cannot be declared is not saved"
        Node = Pool().get('gnuhealth.orthanc.dicom_node')
        self.setup_data()
        self.server.domain = 'http://127.0.0.1:%d' % free_port()
        self.server.save()
        cursor = Transaction().connection.cursor()
        cursor.execute('SAVEPOINT node')
        with self.assertRaises(DicomNodeError) as raised:
            self.create_node('LATER', 104)
        # What a call over RPC does
        cursor.execute('ROLLBACK TO SAVEPOINT node')
        self.assertIn('The DICOM node "LATER" could not be declared in the '
            'Orthanc server "Ours", so it was not saved: Cannot reach',
            raised.exception.message)
        self.assertFalse(Node.search([('name', '=', 'LATER')]))

    # -- retrieve -----------------------------------------------------------
    @with_transaction(context=NO_COMMIT)
    def test_retrieve_synced_and_linked(self):
        "Retrieve two studies: queued, done, synced, linked, audited"
        pool = Pool()
        Audit = pool.get('gnuhealth.orthanc.audit')
        Study = pool.get('gnuhealth.orthanc.study')
        self.setup_data()
        wizard = self.query(patient=self.ana.id, patient_ids='PUID-0001')
        retrieval = self.retrieve(wizard, {'ACC-1001', 'ACC-1004'})
        # Queued: nothing moved inside the wizard's call
        self.assertEqual((retrieval.state, retrieval.study_count),
            ('queued', 2))
        self.assertEqual(self.here([UID['ACC-1001']]), {})
        action, _ = wizard.do_open_retrieval(
            wizard.open_retrieval.get_action())
        self.assertIn(str(retrieval.id), action['pyson_domain'])

        self.assertGreaterEqual(run_queue(), 2)  # the retrieval, the sync
        self.assertEqual(
            (retrieval.state, retrieval.progress, retrieval.retrieved_count,
                retrieval.error), ('done', 100, 2, None))
        self.assertEqual({s.state for s in retrieval.studies}, {'retrieved'})
        studies = Study.search([('patient', '=', self.ana.id)])
        self.assertEqual(sorted(s.accession_number for s in studies),
            ['ACC-1001', 'ACC-1004'])
        self.assertEqual({s.study.id for s in retrieval.studies},
            {s.id for s in studies})
        # Who pulled which patient's images
        entries = Audit.search([('action', '=', 'pacs_retrieve')])
        self.assertEqual(
            {(e.patient, e.user.id, e.record) for e in entries},
            {(self.ana, Transaction().user, retrieval)})
        self.assertEqual(sorted(e.orthanc_id for e in entries),
            sorted(s.orthanc_id for s in studies))
        # The study's Audit tab says it came from the PACS
        self.assertIn('pacs_retrieve', [e.action for e in studies[0].audit])

    @with_transaction(context=NO_COMMIT)
    def test_retrieve_moves_only_what_was_asked(self):
        """A node that answers more studies than the UIDs asked: only those
        asked are moved (the query's other answers were moved unrecorded)"""
        self.setup_data()
        wizard = self.query(patient_ids='PUID-0001')
        retrieval = self.retrieve(wizard, {'ACC-1001'})
        asked = OrthancClient.query_indexed_studies

        def wider(client, name, query, timeout=None):
            # Every study of the patient, whatever the UIDs asked
            return asked(client, name, {'PatientID': 'PUID-0001'}, timeout)
        with mock.patch.object(OrthancClient, 'query_indexed_studies',
                wider):
            run_queue()
        self.assertEqual((retrieval.state, retrieval.retrieved_count),
            ('done', 1))
        self.assertEqual(set(self.here([UID[a] for a in ANA_STUDIES])),
            {UID['ACC-1001']})

    @with_transaction(context=NO_COMMIT)
    def test_retrieve_from_node_down(self):
        "The node stopped after the query: failed, the reason on each study"
        Node = Pool().get('gnuhealth.orthanc.dicom_node')
        self.setup_data()
        wizard = self.query(patient_ids='PUID-0001')
        Node.write([self.node], {'port': free_port()})
        retrieval = self.retrieve(wizard, {'ACC-1001'})
        run_queue()
        self.assertEqual(retrieval.state, 'failed')
        study, = retrieval.studies
        self.assertEqual(study.state, 'failed')
        self.assertIn('The DICOM node "HOSPITAL" cannot be reached',
            study.error)

    @with_transaction(context=NO_COMMIT)
    def test_pacs_dies_midway_then_retry(self):
        """A PACS that dies during a retrieval: partly failed, the studies
        retrieved whole, Retry brings the rest"""
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        self.setup_data()
        workdir = os.path.join(self.workdir, 'dying')
        dying = start_pacs(workdir, self.ours.dicom_port_used, aet='DYING')
        self.addCleanup(lambda: dying.stop())
        studies = [PacsStudy('DYING-1', 'DOE^John', '19800101', '20230101',
                ('CT',), 'Big study %d' % i, 'DIE-%d' % i)
            for i in range(30)]
        load(dying.upload, studies, rows=256, instances=8)
        node = self.create_node('DYING', dying.dicom_port_used, aet='DYING')
        wizard = self.query(node=node.id, patient_ids='DYING-1')
        self.assertEqual(len(wizard.answers.answers), 30)
        retrieval = self.retrieve(wizard)

        killer = threading.Thread(target=self.kill_midway, args=(dying,))
        killer.start()
        run_queue()
        killer.join()
        self.assertEqual(retrieval.state, 'partly_failed')
        retrieved = [s for s in retrieval.studies if s.state == 'retrieved']
        failed = [s for s in retrieval.studies if s.state == 'failed']
        self.assertTrue(retrieved and failed)
        self.assertEqual(len(retrieved) + len(failed), 30)
        self.assertIn('broke off', failed[0].error)
        # Nothing half-retrieved counts as retrieved
        with self.client() as client:
            for study in retrieved:
                self.assertEqual(client.get_study_statistics(
                        study.orthanc_id)['CountInstances'], 8)

        dying.stop()
        dying = start_pacs(workdir, self.ours.dicom_port_used,
            port=node.port, aet='DYING')
        retrieval.retry([retrieval])
        self.assertEqual(retrieval.state, 'queued')
        run_queue()
        self.assertEqual((retrieval.state, retrieval.retrieved_count),
            ('done', 30))
        self.assertEqual(Study.search_count([
                    ('patient_id', '=', 'DYING-1')]), 30)

    @with_transaction(context=NO_COMMIT)
    def test_retrieval_from_node_closed_since(self):
        """Retrieve turned off, or the node made inactive, after the
        request: the retrieval fails with the reason, Retry is refused"""
        pool = Pool()
        Node = pool.get('gnuhealth.orthanc.dicom_node')
        Retrieval = pool.get('gnuhealth.orthanc.retrieval')
        self.setup_data()
        wizard = self.query(patient_ids='PUID-0001')
        for values in [{'may_retrieve': False}, {'active': False}]:
            with self.subTest(values=values):
                retrieval = self.retrieve(wizard, {'ACC-1001'})
                Node.write([self.node], values)
                run_queue()
                self.assertEqual(retrieval.state, 'failed')
                self.assertIn('no longer retrieved from the DICOM node '
                    '"HOSPITAL"', retrieval.error)
                with self.assertRaises(PacsQueryError):
                    Retrieval.retry([retrieval])
                Node.write([self.node], {'may_retrieve': True, 'active': True})
        self.assertEqual(self.here([UID['ACC-1001']]), {})

    @with_transaction(context=NO_COMMIT)
    def test_retrieval_job_never_ends(self):
        "A job that never ends (paused) is given up after the limit"
        from trytond.modules.health_orthanc import retrieval as module
        self.setup_data()
        wizard = self.query(patient_ids='PUID-0001')
        retrieval = self.retrieve(wizard, {'ACC-1001'})
        paused = RetrieveJob('stuck', 'Paused', progress=50)
        with mock.patch.object(module, 'FOLLOW_LIMIT',
                    datetime.timedelta(seconds=1)), \
                mock.patch.object(OrthancClient, 'retrieve_query',
                    return_value='stuck'), \
                mock.patch.object(OrthancClient, 'job_status',
                    return_value=paused), \
                mock.patch.object(OrthancClient, 'cancel_job',
                    return_value=True) as cancel_job:
            run_queue()
        # Orthanc is told to stop it
        cancel_job.assert_called_once_with('stuck')
        self.assertEqual(retrieval.state, 'failed')
        study, = retrieval.studies
        self.assertIn('did not end within 0 hours and was given up',
            study.error)

    @with_transaction(context=NO_COMMIT)
    def test_retrieval_run_once_at_a_time(self):
        """A retrieval that a worker follows is not run by another; one
        that nobody follows any more (a worker stopped) is"""
        pool = Pool()
        Retrieval = pool.get('gnuhealth.orthanc.retrieval')
        self.setup_data()
        wizard = self.query(patient_ids='PUID-0001')
        retrieval = self.retrieve(wizard, {'ACC-1001'})
        Transaction().tasks.clear()
        with without_check_access():
            Retrieval.write([retrieval], {'state': 'running'})
        Retrieval.run([retrieval])
        self.assertEqual([s.state for s in retrieval.studies], ['pending'])
        self.assertEqual(self.here([UID['ACC-1001']]), {})

        table = Retrieval.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.update([table.write_date],
                [datetime.datetime.now() - datetime.timedelta(hours=1)],
                where=table.id == retrieval.id))
        Retrieval.run([Retrieval(retrieval.id)])
        run_queue()
        self.assertEqual(Retrieval(retrieval.id).retrieved_count, 1)

    @with_transaction(context=NO_COMMIT)
    def test_queue_context_of_the_client_ignored(self):
        """A client's queue context (a century later, another queue) does
        not hold back a retrieval, a retry or a scheduled query"""
        pool = Pool()
        Queue = pool.get('ir.queue')
        Retrieval = pool.get('gnuhealth.orthanc.retrieval')
        Scheduled = pool.get('gnuhealth.orthanc.scheduled_query')
        self.setup_data()
        scheduled, = Scheduled.create([{'name': 'CT', 'node': self.node.id}])
        wizard = self.query(patient_ids='PUID-0001')
        Transaction().tasks.clear()
        with Transaction().set_context(queue_name='slow',
                queue_scheduled_at=datetime.timedelta(days=36500)):
            retrieval = self.retrieve(wizard, {'ACC-1001'})
            with without_check_access():
                Retrieval.write([retrieval], {'state': 'failed'})
            Retrieval.retry([retrieval])
            Scheduled.run_now([scheduled])
        tasks = Queue.browse(Transaction().tasks)
        self.assertEqual(len(tasks), 3)
        self.assertEqual({(t.name, t.scheduled_at) for t in tasks},
            {('default', None)})

    def kill_midway(self, pacs, timeout=60):
        "Kill the PACS once a retrieve job of our Orthanc is 10 % done"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            jobs = self.ours.request('GET', '/jobs',
                params={'expand': ''}).json()
            if any(j['State'] == 'Running' and j['Progress'] >= 10
                    for j in jobs):
                pacs.process.kill()
                pacs.process.wait()
                return
            time.sleep(0.01)

    # -- scheduled queries --------------------------------------------------
    @with_transaction(context=NO_COMMIT)
    def test_scheduled_query_twice(self):
        """The scheduled action retrieves what is new, and nothing the
        second time; the record says what it did"""
        pool = Pool()
        Date = pool.get('ir.date')
        Query = pool.get('gnuhealth.orthanc.scheduled_query')
        Retrieval = pool.get('gnuhealth.orthanc.retrieval')
        self.setup_data()
        query, = Query.create([{
                    'name': "CT of the last 3 days", 'node': self.node.id,
                    'days': 3, 'modalities': 'CT',
                    'exclude_terms': 'follow-up',
                    }])
        with mock.patch.object(Date, 'today',
                return_value=datetime.date(2023, 3, 3)):
            Query.run_scheduled()
            run_queue()
            retrieval, = Retrieval.search([])
            self.assertEqual(retrieval.scheduled_query, query)
            self.assertEqual(sorted(s.accession for s in retrieval.studies),
                ['ACC-1003', 'ACC-2001'])
            self.assertEqual(retrieval.state, 'done')
            self.assertIn('2 studies found on the node "HOSPITAL": 0 '
                'already here, 0 being retrieved, 2 new.', query.last_report)
            self.assertIn('2 retrieved, 0 failed', query.last_report)

            Query.run_scheduled()
            run_queue()
        self.assertEqual(Retrieval.search([]), [retrieval])
        self.assertIn('2 already here, 0 being retrieved, 0 new.',
            query.last_report)

    @with_transaction(context=NO_COMMIT)
    def test_scheduled_query_invalid_uid(self):
        """A study answered with an invalid StudyInstanceUID is not
        retrieved (it would move what a list or a wildcard matches), and
        the report says so"""
        from trytond.modules.health_orthanc import scheduled_query as module
        pool = Pool()
        Date = pool.get('ir.date')
        Query = pool.get('gnuhealth.orthanc.scheduled_query')
        Retrieval = pool.get('gnuhealth.orthanc.retrieval')
        self.setup_data()
        query, = Query.create([{
                    'name': "CT of the last 3 days", 'node': self.node.id,
                    'days': 3, 'modalities': 'CT',
                    'exclude_terms': 'follow-up',
                    }])
        bad = UID['ACC-1003']
        with mock.patch.object(Date, 'today',
                    return_value=datetime.date(2023, 3, 3)), \
                mock.patch.object(module, 'valid_uid',
                    side_effect=lambda uid: uid != bad):
            Query.run_scheduled()
            run_queue()
        retrieval, = Retrieval.search([])
        self.assertEqual([s.accession for s in retrieval.studies],
            ['ACC-2001'])
        self.assertIn('answered 1 studies whose StudyInstanceUID is not '
            'valid', query.last_report)
        self.assertIn(bad, query.last_report)

    @with_transaction(context=NO_COMMIT)
    def test_scheduled_query_node_closed_or_failing(self):
        """A node made inactive or whose Retrieve was turned off is not
        queried; an unexpected error is reported on the record; no more
        than a century back"""
        pool = Pool()
        Node = pool.get('gnuhealth.orthanc.dicom_node')
        Query = pool.get('gnuhealth.orthanc.scheduled_query')
        Retrieval = pool.get('gnuhealth.orthanc.retrieval')
        self.setup_data()
        query, = Query.create([{'name': 'All', 'node': self.node.id,
                    'days': 10000}])
        for values in [{'may_retrieve': False}, {'active': False}]:
            with self.subTest(values=values):
                Node.write([self.node], values)
                Query.run_scheduled()
                self.assertIn('Nothing was queried: the DICOM node '
                    '"HOSPITAL" is inactive', query.last_report)
                Node.write([self.node], {'may_retrieve': True, 'active': True})
        self.assertEqual(Retrieval.search([]), [])
        with mock.patch.object(Query, '_asked', side_effect=KeyError('x')):
            Query.run_scheduled()
        self.assertIn('stopped on an unexpected error', query.last_report)
        self.assertEqual(Retrieval.search([]), [])
        # Last: the record refused stays in the transaction of the test
        with self.assertRaises(DomainValidationError):
            Query.write([query], {'days': 10 ** 6})

    @with_transaction(context=NO_COMMIT)
    def test_scheduled_query_patients(self):
        "A list of PatientIDs; an unknown modality is refused"
        pool = Pool()
        Query = pool.get('gnuhealth.orthanc.scheduled_query')
        Retrieval = pool.get('gnuhealth.orthanc.retrieval')
        self.setup_data()
        with self.assertRaises(DicomNodeValidationError):
            Query.create([{'name': 'X', 'node': self.node.id,
                        'modalities': 'CT XYZ'}])
        query, = Query.create([{
                    'name': "Ana", 'node': self.node.id, 'days': 10000,
                    'patient_ids': 'PUID-0001\nNOBODY',
                    'include_terms': 'chest',
                    }])
        query.run_now([query])
        run_queue()
        retrieval, = Retrieval.search([])
        self.assertEqual(sorted(s.accession for s in retrieval.studies),
            ['ACC-1001', 'ACC-1005'])
        self.assertEqual({s.patient for s in retrieval.studies}, {self.ana})
