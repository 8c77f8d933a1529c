# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The attacks of a hostile hospital user, over real JSON-RPC sessions.

Each test plays one hole found by an attack on the running server (issue
#10): a user of a real group, logged in with a password, calls trytond as
the web client would, with whatever context and values a client can send.
The data is prepared by the test process through the ORM; what the users
do, they do over RPC.
"""
import base64
import datetime
import io
import os
import shutil
import tempfile
import threading
import unittest
import zipfile

import pydicom
from trytond.pool import Pool

from trytond.modules.health_orthanc.tests.dicom_samples import make_study
from trytond.modules.health_orthanc.tests.fake_orthanc import (
    FakeOrthanc, Reply, orthanc_error)
from trytond.modules.health_orthanc.tests.orthanc_server import OrthancServer

from .rpc import RPCError, TrytondServer

CONFIG = 'gnuhealth.orthanc.config'
PATIENT = 'gnuhealth.orthanc.patient'
STUDY = 'gnuhealth.orthanc.study'
SERIES = 'gnuhealth.orthanc.series'
REQUEST = 'gnuhealth.imaging.test.request'
RESULT = 'gnuhealth.imaging.test.result'

USERS = {
    'doctor': ['health.group_health_doctor'],
    'imaging': ['health_imaging.group_health_imaging'],
    'healthadmin': ['health.group_health_admin'],
    'orthancadmin': ['health_orthanc.group_orthanc_admin'],
    'nogroup': [],
    }
CLINICAL = ['doctor', 'imaging', 'healthadmin']
#: Values that every password is at least, and that none is at least
LOW, HIGH = '', '\U0010ffff'


def server_where(domain):
    return [('server', 'where', domain)]


#: (model, a domain built on a condition on the server) reaching the server
#: records from each model that relates to them, directly or nested
SERVER_PATHS = [
    (CONFIG, lambda d: d),
    (CONFIG, lambda d: [('studies', 'where', server_where(d))]),
    (CONFIG, lambda d: [('patients', 'where', server_where(d))]),
    (STUDY, server_where),
    (STUDY, lambda d: [('server', 'not where', d)]),
    (PATIENT, server_where),
    (PATIENT, lambda d: [('studies', 'where', server_where(d))]),
    (SERIES, server_where),
    (SERIES, lambda d: [('study', 'where', server_where(d))]),
    (REQUEST, lambda d: [('worklist_server', 'where', d)]),
    (REQUEST, lambda d: [('studies', 'where', server_where(d))]),
    (RESULT, lambda d: [('studies', 'where', server_where(d))]),
    (RESULT, lambda d: [('request', 'where',
                [('worklist_server', 'where', d)])]),
    ]


def zip_bytes(members):
    "A zip of {name: bytes} (stored, not compressed)"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def lying_zip(members):
    """A zip whose members declare more bytes than they hold: the
    uncompressed size of their local header and central directory entry
    says 1 MiB, while their stored data is what it is (zipfile reads it
    without complaint)"""
    archive = bytearray(zip_bytes(members))
    lie = (1024 * 1024).to_bytes(4, 'little')
    for signature, offset in [(b'PK\x03\x04', 22), (b'PK\x01\x02', 24)]:
        position = archive.find(signature)
        while position >= 0:
            archive[position + offset:position + offset + 4] = lie
            position = archive.find(signature, position + 4)
    return bytes(archive)


def bomb_zip(size=2 * 1024 ** 3):
    """A zip of one member that inflates to size bytes of zeros, written
    in chunks (the inflated data is never held)"""
    buffer = io.BytesIO()
    chunk = bytes(16 * 1024 * 1024)
    with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_DEFLATED) as archive:
        with archive.open('bomb.dcm', 'w', force_zip64=True) as member:
            for _ in range(size // len(chunk)):
                member.write(chunk)
    return buffer.getvalue()


class AttackTestCase(unittest.TestCase):
    "Attacks over JSON-RPC as users of each group"

    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix='attacks-test-')
        cls.addClassCleanup(shutil.rmtree, cls.workdir, ignore_errors=True)
        cls.orthanc = OrthancServer(os.path.join(cls.workdir, 'orthanc'))
        cls.addClassCleanup(cls.orthanc.stop)
        cls.orthanc.start()
        cls.worklists = os.path.join(cls.workdir, 'worklists')
        os.mkdir(cls.worklists)
        cls.trytond = TrytondServer(cls.workdir)
        cls.addClassCleanup(cls.trytond.stop)
        cls.trytond.start()
        for login, groups in USERS.items():
            cls.trytond.create_user(login, *groups)
        cls.sessions = {login: cls.trytond.session(login) for login in USERS}
        cls.setUpData()

    @classmethod
    def setUpData(cls):
        from trytond.modules.health_imaging.tests.tools import create_patient
        with cls.trytond.transaction():
            pool = Pool()
            Server = pool.get(CONFIG)
            ana = create_patient('Ana', 'Betz', puid='PUID-ANA',
                dob=datetime.date(1980, 1, 15))
            bob = create_patient('Bob', 'Cruz', puid='PUID-BOB')
            # A PUID in Cyrillic, the name in Latin letters
            cyrillic = create_patient('Petr', 'Ivanov', puid='ПАЦ-77')
            # Relinked by a test: the others keep Ana's link
            cleo = create_patient('Cleo', 'Dunn', puid='PUID-CLEO',
                dob=datetime.date(1980, 1, 15))
            server, = Server.create([{
                        'label': 'Main',
                        'domain': cls.orthanc.url,
                        'user': cls.orthanc.user,
                        'password': cls.orthanc.password,
                        'validated': True,
                        'publish_worklists': True,
                        'worklist_folder': cls.worklists,
                        }])
            cls.ana, cls.bob, cls.cyrillic = ana.id, bob.id, cyrillic.id
            cls.cleo = cleo.id
            cls.server = server.id
        for instance in make_study(patient_id='PUID-ANA',
                patient_name='BETZ^Ana', accession='ACC-ANA-1'):
            cls.orthanc.upload(instance)
        cls.sessions['orthancadmin'].button(CONFIG, 'do_sync', [cls.server])
        cls.study, = cls.sessions['orthancadmin'].search(
            STUDY, [('patient_id', '=', 'PUID-ANA')])
        # Every path of SERVER_PATHS leads to data: a published request
        # and a result with a study
        cls.performed_request(seed=1)
        cls.published_request(cls.bob)

    def root(self):
        return self.trytond.transaction()

    def answer(self, session, model, domain, order=None):
        "The answer of a search, or the name of the error it raised"
        try:
            return sorted(session.search(model, domain, order=order))
        except RPCError as exception:
            return ('refused', exception.name)

    def assertNoOracle(self, session, model, make_domain, field):
        """A condition on field that holds for every value and one that
        holds for none must not give different answers"""
        answers = [self.answer(session, model, make_domain([(field, op, v)]))
            for op, v in [('>=', LOW), ('>=', HIGH)]]
        self.assertEqual(answers[0], answers[1],
            '%s reveals %s through %s' % (
                session.login, field, make_domain([(field, '>=', '?')])))

    # -- hole 1 -------------------------------------------------------------
    def test_password_not_reachable_by_search(self):
        "No user, admins included, learns the password through a domain"
        for login in USERS:
            session = self.sessions[login]
            for model, make_domain in SERVER_PATHS:
                with self.subTest(user=login, model=model,
                        path=make_domain([('password', '>=', '?')])):
                    self.assertNoOracle(
                        session, model, make_domain, 'password')

    def test_worklist_folder_reachable_by_orthanc_admins_only(self):
        "The worklist folder, an admin-only field, is as closed"
        for login in CLINICAL + ['nogroup']:
            session = self.sessions[login]
            for model, make_domain in SERVER_PATHS:
                with self.subTest(user=login, model=model,
                        path=make_domain([('worklist_folder', '>=', '?')])):
                    self.assertNoOracle(
                        session, model, make_domain, 'worklist_folder')

    def test_password_not_readable(self):
        "Read, dotted read, search_read, order and export are refused"
        password = self.orthanc.password
        calls = [
            (CONFIG, 'read', [self.server], ['password']),
            (STUDY, 'read', [self.study], ['server.password']),
            (STUDY, 'search_read', [], 0, None, None, ['server.password']),
            (STUDY, 'export_data', [self.study], ['server/password']),
            (STUDY, 'export_data_domain', [], ['server/password']),
            (STUDY, 'search', [], 0, None, [('server.password', 'ASC')]),
            (CONFIG, 'search', [], 0, None, [('password', 'ASC')]),
            ]
        for login in USERS:
            session = self.sessions[login]
            for model, method, *params in calls:
                with self.subTest(user=login, model=model, method=method):
                    try:
                        answer = session.model(model, method, *params)
                    except RPCError:
                        continue
                    if method == 'search':
                        self.fail('%s may order by the password' % login)
                    self.assertNotIn(password, repr(answer))

    # -- hole 2 -------------------------------------------------------------
    def test_no_health_group_reads_nothing(self):
        "A user without a health group reads no server, patient, study"
        session = self.sessions['nogroup']
        for model in [CONFIG, PATIENT, STUDY, SERIES]:
            with self.subTest(model=model):
                self.assertEqual(
                    self.answer(session, model, [])[0], 'refused')
        for model, domain in [
                (CONFIG, [('patients', 'where', [
                                ('patient_id', '=', 'PUID-ANA')])]),
                (CONFIG, [('studies', 'where', [
                                ('description', 'ilike', '%')])]),
                (CONFIG, [('patients.name', 'ilike', '%BETZ%')]),
                ]:
            with self.subTest(domain=domain):
                self.assertEqual(
                    self.answer(session, model, domain)[0], 'refused')

    def test_no_health_group_learns_nothing_through_where(self):
        "Nested where of a readable model does not reach imaging data"
        session = self.sessions['nogroup']
        for model, field, value in [
                (CONFIG, 'patients', ('patient_id', 'PUID-ANA')),
                (CONFIG, 'patients', ('name', 'BETZ^Ana')),
                (CONFIG, 'patients',
                    ('birth_date', datetime.date(1980, 1, 15))),
                (CONFIG, 'studies', ('description', 'Test study')),
                (REQUEST, 'studies', ('patient_id', 'PUID-ANA')),
                (RESULT, 'studies', ('patient_id', 'PUID-ANA')),
                ]:
            name, known = value
            wrong = known + 'X' if isinstance(known, str) \
                else known + datetime.timedelta(days=1)
            with self.subTest(model=model, field=field, value=value):
                answers = [self.answer(session, model, [(field, 'where',
                                    [(name, '=', v)])])
                    for v in [known, wrong]]
                self.assertEqual(answers[0], answers[1])

    # -- hole 3 -------------------------------------------------------------
    def test_context_flag_does_not_unlock_orthanc_values(self):
        "A doctor cannot rewrite what Orthanc holds with orthanc_sync"
        session = self.sessions['doctor']
        patient, = session.search(PATIENT, [('patient_id', '=', 'PUID-ANA')])
        names = ['name', 'patient_id', 'birth_date', 'link_state']
        before, = session.read(PATIENT, [patient], names)
        forged = {'name': 'FORGED^Name', 'patient_id': 'FORGED',
            'birth_date': datetime.date(1999, 9, 9), 'link_state': 'linked'}
        for key in ['orthanc_sync', 'orthanc_linking_studies',
                'orthanc_page_commit']:
            with self.subTest(key=key):
                with self.assertRaises(RPCError):
                    session.write(PATIENT, [patient], forged,
                        context={key: True})
        self.assertEqual(session.read(PATIENT, [patient], names), [before])

    def test_context_flag_does_not_keep_study_on_result(self):
        "Relinking with orthanc_linking_studies still detaches the study"
        session = self.sessions['doctor']
        request, result, study = self.performed_request(
            puid='PUID-CLEO', patient=self.cleo)
        orthanc_patient = self.orthanc_patient_of(study)
        session.write(PATIENT, [orthanc_patient], {'patient': self.bob},
            context={'orthanc_linking_studies': True})
        with self.root():
            Result = Pool().get(RESULT)
            self.assertNotIn(study, [s.id for s in Result(result).studies])
            Study = Pool().get(STUDY)
            self.assertEqual(Study(study).request_link, 'patient_differs')

    @classmethod
    def published_request(cls, patient):
        "Create a request for the patient and request it as imaging staff"
        from trytond.modules.health_imaging.tests.tools import create_request
        with cls.trytond.transaction():
            Request = Pool().get(REQUEST)
            request = create_request(Request.patient.get_target()(patient))
        cls.sessions['imaging'].button(REQUEST, 'requested', [request.id])
        return request.id

    @classmethod
    def performed_request(cls, puid='PUID-ANA', patient=None, seed=7):
        """Request a test for the patient, send its study to Orthanc and
        sync: return the request, its draft result and the study"""
        from trytond.modules.health_imaging.tests.tools import create_request
        with cls.trytond.transaction():
            Request = Pool().get(REQUEST)
            request = create_request(Request.patient.get_target()(
                    patient or cls.ana))
            Request.requested([request])
            request = Request(request.id)
            uid, accession = (request.study_instance_uid,
                request.accession_number)
        for instance in make_study(patient_id=puid, patient_name='BETZ^Ana',
                accession=accession, study_uid=uid, seed=seed):
            cls.orthanc.upload(instance)
        cls.sessions['orthancadmin'].button(CONFIG, 'do_sync', [cls.server])
        with cls.trytond.transaction():
            pool = Pool()
            Study = pool.get(STUDY)
            Result = pool.get(RESULT)
            study, = Study.search([('study_instance_uid', '=', uid)])
            result, = Result.search([('request', '=', request.id)])
            assert study.request == Pool().get(REQUEST)(request.id)
            return request.id, result.id, study.id

    def orthanc_patient_of(self, study):
        with self.root():
            return Pool().get(STUDY)(study).orthanc_patient.id

    # -- hole 4 -------------------------------------------------------------
    def test_readonly_request_fields_refused(self):
        "An imaging user cannot write the worklist entry nor the DICOM ids"
        session = self.sessions['imaging']
        request, _, _ = self.performed_request(seed=8)
        for values in [
                {'worklist_entry': '/etc/passwd'},
                {'accession_number': 'FORGED'},
                {'study_instance_uid': '1.2.3.4'},
                {'worklist_state': 'removed'},
                {'performed_date': None},
                ]:
            with self.subTest(values=values):
                with self.assertRaises(RPCError):
                    session.write(REQUEST, [request], values)

    def test_readonly_fields_refused_by_copy_and_import(self):
        "Copy defaults and imported columns are values a client gives"
        session = self.sessions['imaging']
        request = self.published_request(self.ana)
        with self.assertRaises(RPCError):
            session.model(REQUEST, 'copy', [request],
                {'accession_number': 'FORGED'})
        with self.assertRaises(RPCError):
            session.model(REQUEST, 'import_data',
                ['patient', 'requested_test', 'accession_number'],
                [['Ana', 'IMG-DX-CHEST', 'FORGED']])

    def test_removal_touches_only_its_own_file(self):
        "Cancelling never deletes a file the request did not write"
        decoy = os.path.join(self.workdir, 'decoy.wl')
        with open(decoy, 'w') as fp:
            fp.write('keep me')
        inside = os.path.join(self.worklists, 'other.wl')
        with open(inside, 'w') as fp:
            fp.write('keep me too')
        session = self.sessions['imaging']
        request = self.published_request(self.bob)
        for forged in [decoy, inside]:
            with self.root():
                Request = Pool().get(REQUEST)
                entry = Request(request).worklist_entry
                self.assertTrue(entry and os.path.exists(entry))
                # As if a hole let it be written: the removal must not trust it
                Request.write([Request(request)], {
                        'worklist_entry': forged})
            session.button(REQUEST, 'cancel', [request])
            self.assertTrue(os.path.exists(forged), forged)
            # and the modality no longer lists the cancelled test
            self.assertFalse(os.path.exists(entry), entry)
            session.button(REQUEST, 'draft', [request])
            session.button(REQUEST, 'requested', [request])

    # -- hole 5 -------------------------------------------------------------
    def test_result_patient_is_the_request_patient(self):
        "A result's patient cannot be made to differ from its request's"
        session = self.sessions['imaging']
        request = self.published_request(self.ana)
        session.wizard('gnuhealth.imaging.test.request.generate_results', [],
            active=(REQUEST, [request]))
        result, = session.search(RESULT, [('request', '=', request)])
        with self.assertRaises(RPCError):
            session.write(RESULT, [result], {'patient': self.bob})
        with self.assertRaises(RPCError):
            session.model(RESULT, 'create', [{
                        'request': request, 'patient': self.bob,
                        'requested_test': session.read(REQUEST, [request],
                            ['requested_test'])[0]['requested_test'],
                        }])

    def test_completed_result_keeps_its_studies(self):
        "The studies of a completed result are neither removed nor added"
        session = self.sessions['imaging']
        _, result, study = self.performed_request(seed=10)
        _, _, other = self.performed_request(seed=11)
        session.write(RESULT, [result], {'comment': 'No finding.'})
        session.button(RESULT, 'complete', [result])
        for action in [[('remove', [study])], [('add', [other])],
                [('unlink', [study])]]:
            with self.subTest(action=action):
                with self.assertRaises(RPCError):
                    session.write(RESULT, [result], {'studies': action})
        with self.root():
            Result = Pool().get(RESULT)
            self.assertEqual([s.id for s in Result(result).studies], [study])

    # -- hole 6 -------------------------------------------------------------
    def test_worklist_keeps_non_latin_patient_id(self):
        "A PUID in Cyrillic reaches the worklist as it is"
        request = self.published_request(self.cyrillic)
        with self.root():
            entry = Pool().get(REQUEST)(request).worklist_entry
        dataset = pydicom.dcmread(entry)
        self.assertEqual(dataset.PatientID, 'ПАЦ-77')
        self.assertIn('ISO_IR 192', str(dataset.SpecificCharacterSet))

    # -- hole 7 -------------------------------------------------------------
    def upload(self, files):
        "Upload files ({name: bytes}) with the wizard as an imaging user"
        session = self.sessions['imaging']
        answer = session.wizard('gnuhealth.orthanc.upload', [
                ('upload', {'start': {
                            'server': self.server,
                            'files': [{
                                    'file_name': name,
                                    'data': data,
                                    } for name, data in files.items()],
                            }}),
                ])
        return answer['view']['defaults']

    def test_upload_lying_zip(self):
        """Zip members that declare more than they hold are refused at
        once (Orthanc waited a minute for each missing byte count)"""
        instances = make_study(patient_id='UPLOAD-1', n_series=3,
            n_instances=1, seed=12)
        result = self.upload({'lie.zip': lying_zip({
                        'i%s.dcm' % i: data
                        for i, data in enumerate(instances)})})
        self.assertEqual(result['stored'], 0)
        self.assertEqual(len(result['lines']), 3)
        for line in result['lines']:
            self.assertEqual(line['status'], 'rejected')
            self.assertTrue(line['detail'])

    def test_upload_zip_bomb(self):
        """A zip bomb is refused with its own reason and never reaches
        Orthanc (which buffered it whole: 2 GiB of memory)"""
        peak = self.orthanc_peak_memory()
        result = self.upload({
                'bomb.zip': bomb_zip(),
                'text.zip': zip_bytes({'notes.txt': b'not an image' * 100}),
                'lie.zip': lying_zip({'lie.dcm': b'DICM' * 100}),
                'empty.zip': zip_bytes({'empty.dcm': b''}),
                })
        self.assertEqual(result['stored'], 0)
        details = [line['detail'] for line in result['lines']]
        self.assertEqual(len(details), 4)
        self.assertEqual(len(set(details)), 4, details)
        # Not a timing: a bound on what Orthanc was made to hold
        self.assertLess(self.orthanc_peak_memory() - peak, 256 * 1024)

    def orthanc_peak_memory(self):
        "The peak resident memory of the Orthanc process, in KiB"
        with open('/proc/%s/status' % self.orthanc.process.pid) as fp:
            for line in fp:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1])

    # -- hole 8 -------------------------------------------------------------
    def test_echoed_credentials_not_shown(self):
        "A server echoing the Authorization header leaks nothing"
        user, password = 'pacs-user', 'pacs-Secret-9'
        echo = base64.b64encode(
            ('%s:%s' % (user, password)).encode()).decode()
        with FakeOrthanc() as fake:
            fake.set('/system', Reply(status=500, body=orthanc_error(500,
                        'Internal error', 'Authorization: Basic %s '
                        'user=%s password=%s' % (echo, user, password))))
            with self.root():
                Server = Pool().get(CONFIG)
                server, = Server.create([{'label': 'Echo',
                            'domain': fake.url, 'user': user,
                            'password': password}])
                server_id = server.id
            self.sessions['orthancadmin'].button(
                CONFIG, 'check_servers', [server_id])
        for login in CLINICAL + ['orthancadmin']:
            try:
                values, = self.sessions[login].read(
                    CONFIG, [server_id], ['last_error'])
            except RPCError:
                continue
            error = values['last_error'] or ''
            self.assertTrue(login != 'orthancadmin' or error)
            for secret in [echo, password, user]:
                self.assertNotIn(secret, error)
        log = self.trytond.log()
        for secret in [echo, password]:
            self.assertNotIn(secret, log)

    # -- hole 9 -------------------------------------------------------------
    def test_sync_stops_on_a_change_log_that_never_advances(self):
        "A /changes that never advances stops the sync with an error"
        with FakeOrthanc() as fake:
            # A caching proxy answering the same page whatever the cursor
            fake.set_json('/changes', {
                    'Changes': [{'ChangeType': 'UpdatedAttachment',
                            'Date': '20260101T000000', 'ID': 'x' * 40,
                            'Path': '/instances/' + 'x' * 40,
                            'ResourceType': 'Instance', 'Seq': 5}],
                    'Done': False, 'Last': 5})
            with self.root():
                Server = Pool().get(CONFIG)
                server, = Server.create([{'label': 'Loop',
                            'domain': fake.url, 'validated': True,
                            'last': 5}])
                server_id = server.id
            self.sessions['orthancadmin'].button(
                CONFIG, 'do_sync', [server_id])
            self.assertLess(fake.count('/changes'), 20)
        values, = self.sessions['orthancadmin'].read(
            CONFIG, [server_id], ['last_error'])
        self.assertTrue(values['last_error'])

    # -- hole 10 ------------------------------------------------------------
    def test_concurrent_syncs(self):
        "Three syncs of one server at once: no error, nothing twice"
        with tempfile.TemporaryDirectory(dir=self.workdir) as workdir:
            orthanc = OrthancServer(workdir).start()
            try:
                for seed in range(40):
                    for instance in make_study(
                            patient_id='CONC-%s' % (seed % 10),
                            n_series=2, n_instances=1, seed=100 + seed):
                        orthanc.upload(instance)
                with self.root():
                    Server = Pool().get(CONFIG)
                    server, = Server.create([{'label': 'Concurrent',
                                'domain': orthanc.url, 'user': orthanc.user,
                                'password': orthanc.password,
                                'validated': True}])
                    server_id = server.id
                offset = len(self.trytond.log())
                errors = []

                def sync():
                    try:
                        self.sessions['orthancadmin'].button(
                            CONFIG, 'do_sync', [server_id])
                    except Exception as exception:
                        errors.append(exception)
                threads = [threading.Thread(target=sync) for _ in range(3)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                self.assertEqual(errors, [])
                log = self.trytond.log()[offset:]
                self.assertNotIn('Traceback', log)
                self.assertNotIn('ERROR', log)
                with self.root():
                    Study = Pool().get(STUDY)
                    studies = Study.search([('server', '=', server_id)])
                    self.assertEqual(len(studies), 40)
                    self.assertEqual(
                        len({s.orthanc_id for s in studies}), 40)
            finally:
                orthanc.stop()
