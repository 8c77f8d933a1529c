# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Faults met by the database sync: a real Orthanc killed in the middle of
a sync, poison DICOM data, and servers failing each in their own way.

Like ``OrthancSyncTestCase`` these tests start a real Orthanc
(``health_orthanc/tests/orthanc_server.py``; a missing Orthanc is an
error, not a skip) and run in one transaction each, without the commit of
every page (``_orthanc_page_commit``): what a page saved stays in the
transaction, as it would be committed in production.
"""
import shutil
import tempfile
import warnings
from unittest import mock

from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction
from trytond.transaction import Transaction

from trytond.modules.health_orthanc.mapping import MAX_LENGTH
from trytond.modules.health_orthanc.orthanc_client import OrthancClient
from trytond.modules.health_orthanc.store import ServerStore
from trytond.modules.health_orthanc.sync import Synchronizer
from trytond.modules.health_orthanc.tests.fake_orthanc import (
    FakeOrthanc, orthanc_error)
from trytond.modules.health_orthanc.tests.orthanc_case import (
    RealOrthancCase, upload_study)
from trytond.modules.health_orthanc.tests.orthanc_server import OrthancServer

NO_COMMIT = {'_orthanc_page_commit': False}
EMPTY_CHANGES = {'Changes': [], 'Done': True, 'Last': 0}


def small_pages(page_size, changes_page_size):
    "Make the synchronizers of the server sync with small pages"
    return mock.patch.object(Synchronizer.__init__, '__defaults__',
        (page_size, changes_page_size))


def last_change(orthanc):
    return orthanc.request(
        'GET', '/changes', params={'last': ''}).json()['Last']


class OrthancFaultsTestCase(RealOrthancCase):
    "Sync faults with a real Orthanc"

    def own_orthanc(self):
        "Start an Orthanc of this test only, that the test may kill"
        workdir = tempfile.mkdtemp(prefix='orthanc-killed-')
        self.addCleanup(shutil.rmtree, workdir, ignore_errors=True)
        orthanc = OrthancServer(workdir)
        self.addCleanup(orthanc.stop)
        return orthanc.start()

    def kill_after_saves(self, orthanc, count=1):
        """Kill orthanc (SIGKILL) once the database has saved count pages
        of the sync; return the list of the saves done"""
        save = ServerStore.save
        saves = []

        def side_effect(store, *args, **kwargs):
            errors = save(store, *args, **kwargs)
            saves.append(kwargs)
            if len(saves) == count:
                orthanc.process.kill()
                orthanc.stop()
            return errors
        patcher = mock.patch.object(
            ServerStore, 'save', autospec=True, side_effect=side_effect)
        patcher.start()
        self.addCleanup(patcher.stop)
        return saves, patcher

    def assert_same_as_orthanc(self, server, orthanc):
        "The server's records are those of Orthanc, each once"
        pool = Pool()
        for model, collection in [
                ('gnuhealth.orthanc.patient', 'patients'),
                ('gnuhealth.orthanc.study', 'studies'),
                ('gnuhealth.orthanc.series', 'series'),
                ]:
            with self.subTest(collection=collection):
                records = pool.get(model).search([('server', '=', server.id)])
                ids = [r.orthanc_id for r in records]
                expected = orthanc.request('GET', '/' + collection).json()
                self.assertEqual(len(ids), len(set(ids)), 'duplicates')
                self.assertEqual(sorted(ids), sorted(expected))
                self.assertFalse([r for r in records if r.missing])
        Study = pool.get('gnuhealth.orthanc.study')
        studies = {s.orthanc_id: s
            for s in Study.search([('server', '=', server.id)])}
        for item in orthanc.request(
                'GET', '/studies', params={'expand': ''}).json():
            study = studies[item['ID']]
            self.assertEqual(
                study.orthanc_patient.orthanc_id, item['ParentPatient'])
            self.assertEqual(
                sorted(s.orthanc_id for s in study.series),
                sorted(item['Series']))
            self.assertEqual(study.number_of_series, len(item['Series']))
            self.assertEqual(study.number_of_instances, len(item['Series']))

    # -- Orthanc killed in the middle of a sync ------------------------------
    def record_listings(self):
        "Record the listing requests of every client: [(collection, since)]"
        listings = []
        list_ = OrthancClient._list

        def recorded(client, collection, since, limit):
            listings.append((collection, since))
            return list_(client, collection, since, limit)
        patcher = mock.patch.object(OrthancClient, '_list', recorded)
        patcher.start()
        self.addCleanup(patcher.stop)
        return listings

    @with_transaction(context=NO_COMMIT)
    def test_killed_during_first_import(self):
        """Killed after the first page of the import: the next sync
        continues from the saved progress and completes"""
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        orthanc = self.own_orthanc()
        for i in range(30):
            upload_study(orthanc, 'P%02d' % (i % 15), 'KILL^P%02d' % (i % 15),
                seed=i)
        self.assertEqual(len(orthanc.request('GET', '/studies').json()), 30)
        server = self.create_server(orthanc=orthanc)

        saves, patcher = self.kill_after_saves(orthanc)
        with small_pages(7, 5):
            results = Server.sync_now([server])
        patcher.stop()
        self.assertIsNone(results[server.id])
        self.assertEqual(len(saves), 1)
        self.assertEqual(len(saves[0]['patients']), 7)
        self.assertFalse(orthanc.running)
        self.assertIn('Cannot reach Orthanc at %s' % orthanc.url,
            server.last_error)
        self.assertTrue(server.last_error_time)
        self.assertTrue(server.validated)
        self.assertIsNone(server.last)
        self.assertIsNone(server.sync_time)
        # The page saved before the kill is kept, with the progress
        self.assertEqual(
            OrthancPatient.search_count([('server', '=', server.id)]), 7)
        self.assertEqual((server.import_phase, server.import_offset),
            ('patients', 7))
        start = server.import_cursor
        self.assertIsNotNone(start)

        orthanc.start()
        # On another port: a moved server needs its password again
        Server.write([server], {
                'domain': orthanc.url, 'password': orthanc.password})
        listings = self.record_listings()
        with small_pages(7, 5):
            result = Server.sync_now([server])[server.id]
        self.assertIsNotNone(result, server.last_error)
        self.assertTrue(result.full)
        self.assertTrue(result.resumed)
        # From the offset saved: 15 patients, 30 studies, 60 series
        self.assertEqual(listings, [('patients', 7), ('patients', 14),
                ('studies', 0), ('studies', 7), ('studies', 14),
                ('studies', 21), ('studies', 28)]
            + [('series', i) for i in range(0, 63, 7)])
        self.assertEqual(result.patients, 8)
        self.assertEqual(result.errors, [])
        self.assertIsNone(server.last_error)
        self.assertTrue(server.validated)
        self.assertEqual(server.last, last_change(orthanc))
        self.assertGreaterEqual(server.last, start)
        self.assertEqual(
            (server.import_cursor, server.import_phase,
                server.import_offset), (None, None, None))
        self.assert_same_as_orthanc(server, orthanc)
        self.assertEqual(server.patient_count, 15)
        self.assertEqual(server.study_count, 30)

        # Nothing left behind: the next sync finds everything done
        upload_study(orthanc, 'P99', 'LATE^Comer', seed=99)
        with small_pages(7, 5):
            result = Server.sync_now([server])[server.id]
        self.assertFalse(result.full)
        self.assertEqual(result.studies, 1)
        self.assert_same_as_orthanc(server, orthanc)

    @with_transaction(context=NO_COMMIT)
    def test_killed_while_following_changes(self):
        "Killed after the first page of changes: the next sync resumes there"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.orthanc.study')
        orthanc = self.own_orthanc()
        for i in range(4):
            upload_study(orthanc, 'P%02d' % i, 'KILL^P%02d' % i, seed=i)
        server = self.create_server(orthanc=orthanc)
        first = Server.sync_now([server])[server.id]
        self.assertTrue(first.full)
        self.assertEqual(server.study_count, 4)
        before = server.last

        for i in range(4, 30):
            upload_study(orthanc, 'P%02d' % (i % 15), 'KILL^P%02d' % (i % 15),
                seed=i)
        feed_end = last_change(orthanc)
        saves, patcher = self.kill_after_saves(orthanc)
        with small_pages(7, 10):
            results = Server.sync_now([server])
        patcher.stop()
        self.assertIsNone(results[server.id])
        self.assertEqual(len(saves), 1)
        self.assertIn('Cannot reach Orthanc', server.last_error)
        self.assertTrue(server.validated)
        # The cursor of the saved page, not beyond
        self.assertEqual(server.last, saves[0]['cursor'])
        self.assertGreater(server.last, before)
        self.assertLess(server.last, feed_end)
        partial = Study.search_count([('server', '=', server.id)])
        self.assertLess(partial, 30)

        orthanc.start()
        # On another port: a moved server needs its password again
        Server.write([server], {
                'domain': orthanc.url, 'password': orthanc.password})
        with small_pages(7, 10):
            result = Server.sync_now([server])[server.id]
        self.assertIsNotNone(result, server.last_error)
        self.assertFalse(result.full)
        self.assertEqual(result.errors, [])
        self.assertIsNone(server.last_error)
        self.assertGreaterEqual(server.last, feed_end)
        self.assert_same_as_orthanc(server, orthanc)
        self.assertEqual(server.patient_count, 15)
        self.assertEqual(server.study_count, 30)

    @with_transaction(context=NO_COMMIT)
    def test_reconcile_imports_what_was_skipped(self):
        """Resources a sync missed (e.g. skipped by an offset shifted by a
        deletion while listing) are imported by the reconciliation"""
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Patient = pool.get('gnuhealth.orthanc.patient')
        Study = pool.get('gnuhealth.orthanc.study')
        Series = pool.get('gnuhealth.orthanc.series')
        for i in range(3):
            upload_study(self.orthanc, 'P%s' % i, 'SKIP^P%s' % i, seed=i)
        server = self.create_server()
        self.assertTrue(Server.sync_now([server])[server.id].full)
        last = server.last
        # As if the import had skipped a patient and its study, and a
        # series of another study
        patient, = Patient.search([('patient_id', '=', 'P0')])
        Patient.delete([patient])
        study, = Study.search([('patient_id', '=', 'P1')])
        Series.delete([study.series[0]])
        self.assertEqual(Study.search_count([]), 2)

        self.assertEqual(Server.reconcile_now([server])[server.id], 0)
        self.assert_same_as_orthanc(server, self.orthanc)
        self.assertEqual(server.last, last)
        self.assertIsNone(server.last_error)

    # -- poison data ---------------------------------------------------------
    @with_transaction(context=NO_COMMIT)
    def test_poison_data(self):
        "Odd DICOM values are imported sanely and never block the others"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.orthanc.study')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        japanese = 'Yamada^Tarou=山田^太郎=やまだ^たろう'
        cases = {
            'GOOD-1': dict(name='GOOD^One'),
            'NONAME': dict(name=None),
            'NODATE': dict(name='NO^Date', study_date=None, study_time=None),
            'BADDATE': dict(name='BAD^Date', study_date='20231350',
                birth_date='19801399'),
            'ZERODATE': dict(name='ZERO^Date', study_date='00000000',
                birth_date='00000000'),
            'BADTIME': dict(name='BAD^Time', study_time='996100', sex='X'),
            'GOOD-2': dict(name='GOOD^Two'),
            'LATIN1': dict(name='Müller^Jürgen',
                specific_character_set='ISO_IR 100',
                description='Schädel nativ', institution='Klinikum Köln'),
            'UTF8': dict(name='Ødegård^Åse',
                specific_character_set='ISO_IR 192',
                description='Åpen – “test” ✓'),
            'JIS': dict(name=japanese,
                specific_character_set=['', 'ISO 2022 IR 87'],
                description='頭部'),
            'LONG': dict(name='LONG^' + 'Given' * 30,
                description='D' * 1500, accession='A' * 1500,
                institution='I' * 2000),
            'CTRL': dict(name='CTRL^Char', description='abc\x01def\\ghi'),
            'GOOD-3': dict(name='GOOD^Three'),
            }
        # Followed in the change feed, the other imported from the lists
        incremental = self.create_server('Incremental')
        self.assertTrue(Server.sync_now([incremental])[incremental.id])
        with warnings.catch_warnings():
            # pydicom warns of the invalid values: they are the point
            warnings.simplefilter('ignore', UserWarning)
            for seed, (patient_id, values) in enumerate(cases.items()):
                values = dict(values)
                upload_study(self.orthanc, patient_id, values.pop('name'),
                    seed=seed, **values)
            # One without any PatientID
            upload_study(self.orthanc, None, 'NO^PatientID', seed=100,
                accession='ACC-NOPID')
        full = self.create_server('Full')
        results = Server.sync_now([incremental, full])
        self.assertFalse(results[incremental.id].full)
        self.assertTrue(results[full.id].full)

        orthanc_studies = self.orthanc.request(
            'GET', '/studies', params={'expand': ''}).json()
        self.assertEqual(len(orthanc_studies), len(cases) + 1)
        by_patient_id = {
            s['PatientMainDicomTags'].get('PatientID'): s
            for s in orthanc_studies}
        for server in [incremental, full]:
            with self.subTest(server=server.label):
                self.assertTrue(server.validated)
                studies = {s.orthanc_id: s
                    for s in Study.search([('server', '=', server.id)])}
                patients = {p.orthanc_id: p for p in OrthancPatient.search(
                        [('server', '=', server.id)])}
                # Imported, or reported: never silently dropped
                for item in orthanc_studies:
                    if item['ID'] not in studies:
                        self.assertIn(item['ID'], server.last_error or '')
                for patient_id in ['GOOD-1', 'GOOD-2', 'GOOD-3']:
                    item = by_patient_id[patient_id]
                    study = studies[item['ID']]
                    self.assertEqual(study.number_of_series, 2)
                    self.assertEqual(study.modalities, 'CT, MR')
                    self.assertEqual(
                        study.study_date.isoformat(), '2023-10-01')
                # Everything is imported here: no error
                self.assertEqual(len(studies), len(orthanc_studies))
                self.assertEqual(len(patients), len(orthanc_studies))
                self.assertIsNone(server.last_error)
                self.assert_same_as_orthanc(server, self.orthanc)

                def study(patient_id):
                    return studies[by_patient_id[patient_id]['ID']]

                def patient(patient_id):
                    return patients[
                        by_patient_id[patient_id]['ParentPatient']]

                self.assertFalse(patient('NONAME').name)
                self.assertEqual(patient('NONAME').patient_id, 'NONAME')
                for patient_id in ['NODATE', 'BADDATE', 'ZERODATE']:
                    self.assertIsNone(study(patient_id).study_date)
                    self.assertIsNone(study(patient_id).study_datetime)
                for patient_id in ['BADDATE', 'ZERODATE']:
                    self.assertIsNone(patient(patient_id).birth_date)
                self.assertEqual(
                    study('BADTIME').study_datetime.isoformat(),
                    '2023-10-01T00:00:00')
                self.assertIsNone(patient('BADTIME').sex)
                self.assertEqual(patient('LATIN1').name, 'Müller, Jürgen')
                self.assertEqual(study('LATIN1').description, 'Schädel nativ')
                self.assertEqual(study('LATIN1').institution, 'Klinikum Köln')
                self.assertEqual(patient('UTF8').name, 'Ødegård, Åse')
                self.assertEqual(study('UTF8').description, 'Åpen – “test” ✓')
                self.assertEqual(
                    patient('JIS').name, 'Yamada, Tarou (山田 太郎)')
                self.assertEqual(study('JIS').description, '頭部')
                # What Orthanc kept of the values longer than DICOM allows
                long_tags = by_patient_id['LONG']['MainDicomTags']
                for field, tag, char in [
                        ('description', 'StudyDescription', 'D'),
                        ('accession_number', 'AccessionNumber', 'A'),
                        ('institution', 'InstitutionName', 'I')]:
                    value = getattr(study('LONG'), field)
                    if tag in long_tags:
                        self.assertEqual(value, char * min(
                                len(long_tags[tag]), MAX_LENGTH))
                    else:
                        self.assertIsNone(value)
                self.assertTrue(patient('LONG').name.startswith('LONG, Given'))
                self.assertLessEqual(len(patient('LONG').name), MAX_LENGTH)
                self.assertEqual(study('CTRL').description, 'abcdef\\ghi')
                nopid = patient(None)
                self.assertIsNone(nopid.patient_id)
                self.assertEqual(nopid.name, 'NO, PatientID')
                self.assertEqual(nopid.link_state, 'no_patient_id')
                self.assertIsNone(study(None).patient_id)

    # -- errors per server ---------------------------------------------------
    @with_transaction(context=NO_COMMIT)
    def test_errors_per_server(self):
        "Each failing server gets its own error; the good one is synced"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        for i in range(3):
            upload_study(self.orthanc, 'GOOD-%s' % i, 'GOOD^%s' % i, seed=i)
        with FakeOrthanc() as error500, FakeOrthanc() as garbage, \
                FakeOrthanc() as shape, \
                FakeOrthanc(credentials=('orthanc', 'old')) as changed:
            error500.set('/changes', status=500, body=orthanc_error(
                    500, 'Internal error', 'SQLite: database is locked'))
            garbage.set('/changes', body=EMPTY_CHANGES)
            garbage.set('/patients', body='[{"ID": "abc", "MainDicomT')
            shape.set('/changes', body={'Changes': 'none', 'Last': 'x'})
            for path in ['/patients', '/studies', '/series']:
                changed.set(path, body=[])
            changed.set('/changes', body=EMPTY_CHANGES)

            bad1 = self.create_server('500', domain=error500.url, last=7)
            bad2 = self.create_server('Garbage', domain=garbage.url)
            bad3 = self.create_server('Password changed',
                domain=changed.url, user='orthanc', password='old')
            bad4 = self.create_server('Shape', domain=shape.url, last=3)
            good = self.create_server('Good')
            # Valid with its password, then changed on the server
            self.assertTrue(Server.sync_now([bad3])[bad3.id])
            self.assertIsNone(bad3.last_error)
            self.assertTrue(bad3.validated)
            self.assertEqual(bad3.last, 0)
            changed.credentials = ('orthanc', 'new')

            results = Server.sync_now([bad1, bad2, bad3, bad4, good])

        for server in [bad1, bad2, bad3, bad4]:
            self.assertIsNone(results[server.id], server.label)
            self.assertTrue(server.last_error_time, server.label)
            self.assertEqual(server.study_count, 0)
            self.assertEqual(server.patient_count, 0)
        for server in [bad1, bad2, bad4]:
            self.assertIsNone(server.sync_time, server.label)
        bad_answer = ('Orthanc at %s sent an answer GNU Health cannot read '
            '(%s). Check Orthanc\'s log; the next sync tries again.')
        self.assertEqual(bad1.last_error, bad_answer % (bad1.domain,
                'Orthanc server error (HTTP 500): Internal error - '
                'SQLite: database is locked'))
        self.assertTrue(bad1.validated)
        self.assertEqual(bad1.last, 7)
        self.assertEqual(bad2.last_error, bad_answer % (bad2.domain,
                'Orthanc sent an answer that is not valid JSON'))
        self.assertTrue(bad2.validated)
        self.assertIsNone(bad2.last)
        self.assertEqual(bad3.last_error, (
                'Orthanc at %s refused the username or password. Check the '
                'credentials (Orthanc\'s RegisteredUsers) and enter them '
                'again.' % bad3.domain))
        self.assertFalse(bad3.validated)
        self.assertEqual(bad3.last, 0)
        self.assertIn('sent an answer GNU Health cannot read', bad4.last_error)
        self.assertIn('Unexpected answer from Orthanc for changes',
            bad4.last_error)
        self.assertTrue(bad4.validated)
        self.assertEqual(bad4.last, 3)
        for server in [bad1, bad2, bad3, bad4, good]:
            self.assertNotIn(self.orthanc.password, server.last_error or '')

        result = results[good.id]
        self.assertTrue(result.full)
        self.assertEqual(result.errors, [])
        self.assertIsNone(good.last_error)
        self.assertTrue(good.validated)
        self.assertEqual(good.last, last_change(self.orthanc))
        self.assert_same_as_orthanc(good, self.orthanc)
        self.assertEqual(good.study_count, 3)
        # The servers in error are not checked again by the sync
        self.assertEqual(
            pool.get('ir.queue').search_count([]), 0)

    @with_transaction(context=NO_COMMIT)
    def test_feed_that_never_advances(self):
        """A proxy answering the same page of changes: the sync stops after
        two requests of /changes, keeps the first page and records why"""
        Server = Pool().get('gnuhealth.orthanc.config')
        stuck = {'Changes': [{'Seq': 6, 'ChangeType': 'NewPatient',
                    'ResourceType': 'Patient', 'ID': 'p1', 'Date': ''}],
            'Done': False, 'Last': 6}
        with FakeOrthanc() as proxy:
            proxy.set('/changes', body=stuck)
            proxy.set('/patients/p1', body={'ID': 'p1', 'Type': 'Patient',
                    'MainDicomTags': {'PatientID': 'STUCK-1'}})
            server = self.create_server('Proxy', domain=proxy.url, last=5)
            results = Server.sync_now([server])
            self.assertEqual(proxy.count('/changes'), 2)
        self.assertIsNone(results[server.id])
        self.assertEqual(server.last, 6)
        self.assertEqual(server.patient_count, 1)
        self.assertTrue(server.validated)
        self.assertTrue(server.last_error_time)
        self.assertIn('answered a page that does not follow',
            server.last_error)
        self.assertIn('asked for the changes after 6', server.last_error)

    @with_transaction()
    def test_taken_over_between_pages(self):
        "A sync that loses its server's lock at a commit stops there"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.orthanc.study')
        for seed in range(4):
            upload_study(self.orthanc, 'P%s' % seed, 'TAKE^Over', seed=seed)
        server = self.create_server('Taken over')
        # The page commits run, but keep the test's transaction isolated;
        # the lock is held at the start and lost at the first commit
        with small_pages(2, 2), \
                mock.patch.object(Transaction(), 'commit'), \
                mock.patch.object(type(server), '_lock',
                    side_effect=[True, False]):
            result = Server.sync_now([server])[server.id]
        self.assertIsNone(result)
        self.assertFalse(server.last_error)
        self.assertIsNone(server.sync_time)
        # Only the first page (patients) was saved before the lock was lost
        self.assertEqual(Study.search_count([('server', '=', server.id)]), 0)

        # The sync that took over (here: the next one) imports everything;
        # without committing: the database is shared by the next tests
        with small_pages(2, 2), Transaction().set_context(NO_COMMIT):
            result = Server.sync_now([server])[server.id]
        self.assertEqual(result.studies, 4)
        self.assertEqual(server.study_count, 4)
