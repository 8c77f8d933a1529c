# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
import datetime
from unittest import mock

from trytond.model.exceptions import AccessError
from trytond.modules.company.tests import CompanyTestMixin
from trytond.pool import Pool
from trytond.tests.test_tryton import ModuleTestCase, with_transaction
from trytond.transaction import Transaction

from trytond.modules.health_imaging.tests.tools import (
    create_patient, create_request, create_user)
from trytond.modules.health_imaging.tests.translations import (
    TranslationTestMixin)
from trytond.modules.health_orthanc.store import ServerStore

from .fake_orthanc import FakeOrthanc
from .orthanc_case import RealOrthancCase, run_queue, upload_study
from .orthanc_server import free_port

NO_COMMIT = {'_orthanc_page_commit': False}


#: Context keys a client can send: Tryton strips only those starting with _
CLIENT_FLAGS = {
    'orthanc_sync': True,
    'orthanc_linking_studies': True,
    'orthanc_page_commit': False,
    }


class HealthOrthancTestCase(
        CompanyTestMixin, TranslationTestMixin, ModuleTestCase):
    "Test health_orthanc module"
    module = 'health_orthanc'

    @with_transaction()
    def test_client_context_switches_no_rule_off(self):
        """A doctor's write with the context keys that once switched the
        rules off is refused what Orthanc holds, and relinks the study"""
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        Study = pool.get('gnuhealth.orthanc.study')
        Request = pool.get('gnuhealth.imaging.test.request')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        bob = create_patient('Bob', 'Cruz', puid='PUID-BOB')
        server, = Server.create([{
                    'label': 'Main', 'domain': 'http://127.0.0.1:1',
                    'validated': True,
                    }])
        request = create_request(ana)
        Request.requested([request])
        patient, = OrthancPatient.create([{
                    'server': server.id, 'orthanc_id': 'p1',
                    'patient_id': 'PUID-ANA', 'name': 'BETZ, Ana',
                    }])
        OrthancPatient.link([patient])
        study, = Study.create([{
                    'server': server.id, 'orthanc_id': 's1',
                    'orthanc_patient': patient.id,
                    'study_instance_uid': request.study_instance_uid,
                    }])
        Study.link_to_requests([study])
        result, = request.results
        self.assertEqual((study.request, result.studies), (request, (study,)))

        doctor = create_user('clinician', 'health.group_health_doctor')
        with Transaction().set_user(doctor.id), \
                Transaction().set_context(_check_access=True, **CLIENT_FLAGS):
            for values in [
                    {'name': 'Forged'},
                    {'patient_id': 'PUID-BOB'},
                    {'link_state': 'linked'},
                    {'patient': bob.id, 'link_state': 'linked'},
                    ]:
                with self.subTest(values=values), \
                        self.assertRaises(AccessError):
                    OrthancPatient.write([OrthancPatient(patient.id)], values)
            OrthancPatient.write(
                [OrthancPatient(patient.id)], {'patient': bob.id})
        self.assertEqual(
            (patient.patient, patient.link_state, patient.name),
            (bob, 'manual', 'BETZ, Ana'))
        # Bob's images left Ana's request and result
        self.assertEqual(
            (study.request, study.request_link, study.request_candidate),
            (None, 'patient_differs', request))
        self.assertEqual(result.studies, ())

    @with_transaction()
    def test_client_context_keeps_page_commits(self):
        "A sync queued with orthanc_page_commit still commits its pages"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        server, = Server.create([{
                    'label': 'Main', 'domain': 'http://127.0.0.1:1',
                    'validated': True,
                    }])
        transaction = Transaction()
        with mock.patch.object(transaction, 'commit') as commit, \
                mock.patch.object(type(server), '_lock', return_value=True), \
                transaction.set_context(CLIENT_FLAGS):
            ServerStore(server).commit()
        commit.assert_called_once_with()


class OrthancSyncTestCase(RealOrthancCase):
    "Sync with a real Orthanc"

    def run_wizard(self, label, domain, user, password):
        Wizard = Pool().get('gnuhealth.orthanc.add_server', type='wizard')
        session_id, _, _ = Wizard.create()
        wizard = Wizard(session_id)
        wizard.start.label = label
        wizard.start.domain = domain
        wizard.start.user = user
        wizard.start.password = password
        wizard.start.verify_tls = True
        wizard.start.ca_bundle = None
        return wizard, wizard.transition_connect()

    @with_transaction(context=NO_COMMIT)
    def test_wizard_imports_and_links(self):
        "The wizard checks, creates, imports and links"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA',
            dob=datetime.date(1980, 1, 15))
        bob = create_patient('Bob', 'Cruz', mrn='MRN-BOB')
        upload_study(self.orthanc, 'PUID-ANA', 'BETZ^Ana')
        upload_study(self.orthanc, 'PUID-ANA', 'BETZ^Ana', seed=1)
        upload_study(self.orthanc, 'MRN-BOB', 'CRUZ^Bob', birth_date=None)
        upload_study(self.orthanc, 'NOBODY', 'DOE^Jane')

        wizard, state = self.run_wizard(
            'Main', self.orthanc.url + '/', self.orthanc.user,
            self.orthanc.password)
        self.assertEqual(state, 'succeeded')
        server, = Server.search([('label', '=', 'Main')])
        defaults = wizard.default_succeeded(None)
        self.assertEqual(defaults['server'], server.id)
        self.assertIn('first import runs in the background',
            defaults['message'])
        # The import is queued: it runs after the wizard's commit
        self.assertIsNone(server.last)
        self.assertEqual(run_queue(), 1)
        self.assertEqual(server.patient_count, 3)
        self.assertEqual(server.study_count, 4)
        self.assertEqual(OrthancPatient.search_count([
                    ('server', '=', server.id),
                    ('patient', '!=', None),
                    ]), 2)
        self.assertTrue(server.validated)
        self.assertEqual(server.domain, self.orthanc.url)
        self.assertTrue(server.sync_time)
        self.assertFalse(server.last_error)
        self.assertGreater(server.last, 0)

        links = {p.patient_id: (p.patient, p.link_state)
            for p in OrthancPatient.search([('server', '=', server.id)])}
        self.assertEqual(links['PUID-ANA'], (ana, 'linked'))
        self.assertEqual(links['MRN-BOB'], (bob, 'linked'))
        self.assertEqual(links['NOBODY'], (None, 'no_match'))
        self.assertEqual(len(ana.orthanc_studies), 2)
        study = ana.orthanc_studies[0]
        self.assertEqual(study.patient, ana)
        self.assertEqual(study.modalities, 'CT, MR')
        self.assertEqual(study.number_of_series, 2)
        self.assertEqual(study.number_of_instances, 2)
        self.assertEqual(study.orthanc_patient.name, 'BETZ, Ana')
        self.assertTrue(study.explorer_url.startswith(self.orthanc.url))

    @with_transaction(context=NO_COMMIT)
    def test_wizard_errors_create_nothing(self):
        "Each failure has its own error page and creates no server"
        Server = Pool().get('gnuhealth.orthanc.config')
        with FakeOrthanc() as fake:
            fake.html_server()
            cases = [
                ('wrong password', self.orthanc.url, self.orthanc.user,
                    'wrong', 'refused the username or password'),
                ('closed port', 'http://127.0.0.1:%s' % free_port(),
                    'u', 'p', 'Cannot reach'),
                ('invalid', 'ftp://example.org', 'u', 'p',
                    'not a valid Orthanc address'),
                ('not orthanc', fake.url, 'u', 'p', 'not an Orthanc'),
                ]
            for label, domain, user, password, text in cases:
                with self.subTest(case=label):
                    wizard, state = self.run_wizard(
                        label, domain, user, password)
                    self.assertEqual(state, 'failed')
                    message = wizard.default_failed(None)['message']
                    self.assertIn(text, message)
                    self.assertNotIn(self.orthanc.password, message)
        self.assertEqual(Server.search([]), [])

    @with_transaction(context=NO_COMMIT)
    def test_wizard_label_unique(self):
        self.create_server('Main')
        _, state = self.run_wizard(
            'Main', self.orthanc.url, self.orthanc.user,
            self.orthanc.password)
        self.assertEqual(state, 'failed')

    @with_transaction(context=NO_COMMIT)
    def test_incremental_sync(self):
        "New studies come with the change feed; no change costs one request"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.orthanc.study')
        upload_study(self.orthanc, 'P1', 'ONE^Patient')
        server = self.create_server()
        first = Server.sync_now([server])[server.id]
        self.assertTrue(first.full)
        self.assertEqual(Study.search_count([('server', '=', server.id)]), 1)

        nothing = Server.sync_now([server])[server.id]
        self.assertFalse(nothing.full)
        self.assertEqual(nothing.requests, 1)

        upload_study(self.orthanc, 'P1', 'ONE^Patient', seed=2)
        upload_study(self.orthanc, 'P2', 'TWO^Patient', seed=3)
        incremental = Server.sync_now([server])[server.id]
        self.assertFalse(incremental.full)
        self.assertEqual(incremental.studies, 2)
        self.assertEqual(Study.search_count([('server', '=', server.id)]), 3)
        self.assertEqual(server.patient_count, 2)
        self.assertEqual(server.study_count, 3)

        again = Server.sync_now([server])[server.id]
        self.assertEqual(again.requests, 1)
        self.assertEqual(Study.search_count([('server', '=', server.id)]), 3)

    @with_transaction(context=NO_COMMIT)
    def test_empty_server(self):
        "An empty Orthanc is imported once, then followed incrementally"
        Server = Pool().get('gnuhealth.orthanc.config')
        server = self.create_server()
        self.assertIsNone(server.last)
        first = Server.sync_now([server])[server.id]
        self.assertTrue(first.full)
        self.assertIsNotNone(server.last)
        second = Server.sync_now([server])[server.id]
        self.assertFalse(second.full)
        self.assertEqual(second.requests, 1)

    @with_transaction(context=NO_COMMIT)
    def test_database_replaced(self):
        "A cursor beyond the server's last change imports everything again"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        upload_study(self.orthanc, 'P1', 'ONE^Patient')
        server = self.create_server()
        Server.write([server], {'last': 10 ** 6})
        result = Server.sync_now([server])[server.id]
        self.assertTrue(result.full)
        self.assertEqual(server.study_count, 1)

    @with_transaction(context=NO_COMMIT)
    def test_reconcile_deleted_studies(self):
        "Studies deleted in Orthanc are flagged, never deleted"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.orthanc.study')
        Patient = pool.get('gnuhealth.orthanc.patient')
        Test = pool.get('gnuhealth.imaging.test')
        Result = pool.get('gnuhealth.imaging.test.result')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        upload_study(self.orthanc, 'PUID-ANA', 'BETZ^Ana', seed=1)
        upload_study(self.orthanc, 'PUID-ANA', 'BETZ^Ana', seed=2)
        upload_study(self.orthanc, 'GONE', 'GONE^Person', seed=3)
        server = self.create_server()
        Server.sync_now([server])
        self.assertEqual(Study.search_count([('missing', '=', True)]), 0)
        first, second = Study.search([('patient', '=', ana.id)])
        test, = Test.search([], limit=1)
        result, = Result.create([{
                    'patient': ana.id, 'requested_test': test.id,
                    'studies': [('add', [first.id])],
                    }])
        gone, = Patient.search([('patient_id', '=', 'GONE')])
        self.orthanc.request('DELETE', '/studies/' + first.orthanc_id)
        self.orthanc.request('DELETE', '/patients/' + gone.orthanc_id)

        flagged = Server.reconcile_now([server])[server.id]
        self.assertEqual(flagged, 2)
        self.assertTrue(first.missing)
        self.assertTrue(first.missing_since)
        self.assertFalse(second.missing)
        self.assertTrue(gone.missing)
        self.assertEqual(result.studies, (first,))
        self.assertEqual(
            Server.reconcile_now([server])[server.id], 0)

        # Back on the server (e.g. restored from a backup)
        Study.mark_missing(server, [first.orthanc_id, second.orthanc_id])
        self.assertFalse(first.missing)
        self.assertIsNone(first.missing_since)

    @with_transaction(context=NO_COMMIT)
    def test_cron_queues_reconcile(self):
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Queue = pool.get('ir.queue')
        Cron = pool.get('ir.cron')
        self.create_server('A')
        self.assertTrue(Cron.search(
                [('method', '=', 'gnuhealth.orthanc.config|reconcile')]))
        Server.reconcile()
        task, = Queue.search([])
        self.assertEqual(task.data['method'], 'reconcile_now')

    @with_transaction(context=NO_COMMIT)
    def test_link_rules(self):
        "Ambiguous or contradicting matches are never linked"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        create_patient('Twin', 'One', mrn='MRN-TWIN')
        create_patient('Twin', 'Two', mrn='MRN-TWIN')
        create_patient('Carl', 'Dunn', puid='PUID-CARL',
            dob=datetime.date(1950, 5, 5))
        upload_study(self.orthanc, 'MRN-TWIN', 'ONE^Twin')
        upload_study(self.orthanc, 'PUID-CARL', 'DUNN^Carl',
            birth_date='19600606')
        upload_study(self.orthanc, 'LATER', 'LATE^Lee')
        server = self.create_server()
        Server.sync_now([server])
        states = {p.patient_id: (p.patient, p.link_state)
            for p in OrthancPatient.search([('server', '=', server.id)])}
        self.assertEqual(states['MRN-TWIN'], (None, 'ambiguous'))
        self.assertEqual(states['PUID-CARL'], (None, 'birth_date_mismatch'))
        self.assertEqual(states['LATER'], (None, 'no_match'))

        # Registered after the images arrived: linked at the next sync
        lee = create_patient('Lee', 'Late', puid='LATER')
        Server.sync_now([server])
        later, = OrthancPatient.search([('patient_id', '=', 'LATER')])
        self.assertEqual((later.patient, later.link_state), (lee, 'linked'))

        # The same identifier given to another patient: the link is no
        # longer certain and is removed
        create_patient('Lea', 'Late', mrn='LATER')
        Server.sync_now([server])
        self.assertEqual(
            (later.patient, later.link_state), (None, 'ambiguous'))

    @with_transaction(context=NO_COMMIT)
    def test_manual_link_kept(self):
        "A link set by hand is never changed by a sync"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        other = create_patient('Other', 'Person')
        upload_study(self.orthanc, 'PUID-ANA', 'BETZ^Ana')
        server = self.create_server()
        Server.sync_now([server])
        patient, = OrthancPatient.search([('server', '=', server.id)])
        self.assertEqual(patient.patient, ana)

        with Transaction().set_context(_check_access=True):
            OrthancPatient.write([patient], {'patient': other.id})
            with self.assertRaises(AccessError):
                OrthancPatient.write([patient], {'name': 'Someone Else'})
        self.assertEqual(patient.link_state, 'manual')
        upload_study(self.orthanc, 'PUID-ANA', 'BETZ^Ana', seed=5)
        Server.sync_now([server])
        self.assertEqual(patient.patient, other)
        self.assertEqual(len(other.orthanc_studies), 2)

        # Unlinked by hand: stays unlinked
        OrthancPatient.write([patient], {'patient': None})
        Server.sync_now([server])
        self.assertIsNone(patient.patient)
        self.assertEqual(patient.link_state, 'manual')

        OrthancPatient.relink([patient])
        self.assertEqual((patient.patient, patient.link_state),
            (ana, 'linked'))

    @with_transaction(context=NO_COMMIT)
    def test_failing_server_does_not_stop_others(self):
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        upload_study(self.orthanc, 'P1', 'ONE^Patient')
        down = self.create_server(
            'Down', domain='http://127.0.0.1:%s' % free_port())
        wrong = self.create_server('Wrong', password='not-the-password')
        good = self.create_server('Good')
        results = Server.sync_now([down, wrong, good])
        self.assertIsNone(results[down.id])
        self.assertIsNone(results[wrong.id])
        self.assertEqual(good.study_count, 1)
        self.assertIn('Cannot reach', down.last_error)
        self.assertTrue(down.validated)
        self.assertIn('refused the username or password', wrong.last_error)
        self.assertFalse(wrong.validated)
        self.assertNotIn('not-the-password', wrong.last_error)
        self.assertFalse(good.last_error)

    @with_transaction(context=NO_COMMIT)
    def test_changing_credentials_revalidates(self):
        "Changing how the server is reached queues a check"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Queue = pool.get('ir.queue')
        server = self.create_server()
        Server.write([server], {'password': 'new'})
        self.assertFalse(server.validated)
        self.assertEqual(Queue.search_count([]), 1)
        Server.check_servers([server])
        self.assertFalse(server.validated)
        self.assertTrue(server.last_error)
        Server.write([server], {'password': self.orthanc.password})
        Server.check_servers([server])
        self.assertTrue(server.validated)
        self.assertFalse(server.last_error)

    @with_transaction(context=NO_COMMIT)
    def test_domain_normalized(self):
        from trytond.model.exceptions import ValidationError
        server = self.create_server(domain=' HTTP://127.0.0.1:8042/ ')
        self.assertEqual(server.domain, 'http://127.0.0.1:8042')
        with self.assertRaises(ValidationError):
            self.create_server('Bad', domain='127.0.0.1:8042')

    @with_transaction(context=NO_COMMIT)
    def test_cron_queues_validated_servers(self):
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Queue = pool.get('ir.queue')
        self.create_server('A')
        b = self.create_server('B', validated=False)
        # Created not validated: checked in the background
        check, = Queue.search([])
        self.assertEqual(check.data['method'], 'check_servers')
        self.assertEqual(list(check.data['instances']), [b.id])
        Queue.delete([check])
        Server.sync()
        tasks = Queue.search([])
        self.assertEqual(len(tasks), 1)
        self.assertEqual(tasks[0].data['method'], 'sync_now')

    @with_transaction(context=NO_COMMIT)
    def test_result_studies(self):
        "Results list the Orthanc studies of their patient"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.orthanc.study')
        Test = pool.get('gnuhealth.imaging.test')
        Result = pool.get('gnuhealth.imaging.test.result')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        upload_study(self.orthanc, 'PUID-ANA', 'BETZ^Ana')
        upload_study(self.orthanc, 'OTHER', 'OTHER^Person', seed=9)
        server = self.create_server()
        Server.sync_now([server])
        study, = Study.search([('patient', '=', ana.id)])
        test, = Test.search([], limit=1)
        result, = Result.create([{
                    'patient': ana.id,
                    'requested_test': test.id,
                    'studies': [('add', [study.id])],
                    }])
        self.assertEqual(result.studies, (study,))
        other, = Study.search([('patient_id', '=', 'OTHER')])
        from trytond.model.exceptions import DomainValidationError
        with self.assertRaises(DomainValidationError):
            Result.write([result], {'studies': [('add', [other.id])]})

    @with_transaction(context=NO_COMMIT)
    def test_password_only_for_orthanc_admins(self):
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        server = self.create_server()
        user = create_user('clinician', 'health.group_health_doctor')
        with Transaction().set_user(user.id), \
                Transaction().set_context(_check_access=True):
            label, = Server.read([server.id], ['label'])
            self.assertEqual(label['label'], 'Main')
            with self.assertRaises(AccessError):
                Server.read([server.id], ['password'])
        with Transaction().set_context(_check_access=True):
            values, = Server.read([server.id], ['password'])
            # Kept, never read back (issue #10, hole 1)
            self.assertEqual(values['password'], '*' * 8)
            self.assertEqual(Server(server.id).secret(),
                self.orthanc.password)


del ModuleTestCase
