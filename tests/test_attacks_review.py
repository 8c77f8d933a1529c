# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The attacks found by the review of the fixes of issue #10.

Each test plays, over real JSON-RPC sessions as the user concerned, a
defect that the review of the access fixes of issue #10 found; each failed
before its fix.  The set-up is the one of ``tests/test_attacks.py`` (its
tests are not run again here), with a password given in trytond's
configuration.
"""
import base64
import datetime
import http.server
import logging
import os
import re
import shutil
import tempfile
import threading
import unittest
from unittest import mock

from trytond import backend
from trytond.pool import Pool
from trytond.transaction import Transaction, TransactionError

from trytond.modules.health_orthanc.resource import OrthancResourceMixin
from trytond.modules.health_orthanc.tests.dicom_samples import make_study
from trytond.modules.health_orthanc.tests.orthanc_server import OrthancServer

from . import test_attacks
from .rpc import RPCError, TrytondServer

CONFIG = test_attacks.CONFIG
STUDY = test_attacks.STUDY
REQUEST = test_attacks.REQUEST
RESULT = test_attacks.RESULT
AUDIT = 'gnuhealth.orthanc.audit'
DATABASE = '%s_r10_rpc' % (
    re.sub(r'\W', '', os.environ.get('DB_NAME', '')) or 'test_imaging')
#: A server whose password only trytond's configuration holds
CONFIGURED_LABEL, CONFIGURED_PASSWORD = 'Main PACS', 'Configured-Secret-77'
#: The configuration binds the password to the domain of the server
EXTRA_CONFIG = '\n[health_orthanc_passwords]\n%s = %s %s\n'


class Catcher:
    """An HTTP server that records the Authorization header of each
    request and answers 401, as a host under an attacker's control"""

    def __init__(self):
        self.seen = []
        seen = self.seen

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append(self.headers.get('Authorization'))
                self.send_response(401)
                self.send_header('WWW-Authenticate', 'Basic realm="x"')
                self.send_header('Content-Length', '0')
                self.end_headers()

            def log_message(self, *args):
                pass
        self.server = http.server.HTTPServer(('127.0.0.1', 0), Handler)
        self.url = 'http://127.0.0.1:%s' % self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *args):
        self.server.shutdown()
        self.server.server_close()

    def secrets(self):
        "The user:password pairs the clients sent"
        return [base64.b64decode(a.split()[1]).decode()
            for a in self.seen if a and a.startswith('Basic ')]


class ReviewTestCase(test_attacks.AttackTestCase):
    "The defects left by issue #10, over JSON-RPC"

    @classmethod
    def setUpClass(cls):
        start, init = TrytondServer.start, TrytondServer.__init__

        def start_configured(self, extra_config=''):
            return start(self, extra_config + EXTRA_CONFIG % (
                    CONFIGURED_LABEL, cls.orthanc.url, CONFIGURED_PASSWORD))

        def init_named(self, workdir, database=None, **kwargs):
            # test_attacks' fixed name would collide on a shared cluster
            init(self, workdir, database=database or DATABASE, **kwargs)
        with mock.patch.object(TrytondServer, 'start', start_configured), \
                mock.patch.object(TrytondServer, '__init__', init_named):
            super().setUpClass()
        with cls.trytond.transaction():
            Server = Pool().get(CONFIG)
            server, = Server.create([{
                        'label': CONFIGURED_LABEL,
                        'domain': cls.orthanc.url,
                        'user': cls.orthanc.user,
                        'validated': True,
                        }])
            cls.configured = server.id

    def audit_count(self, server=None):
        "The number of audit entries (of the server)"
        domain = [('server', '=', server)] if server else []
        with self.root():
            return Pool().get(AUDIT).search_count(domain)

    # -- the password ------------------------------------------------------
    def test_r10_domain_change_sends_the_password_away(self):
        """An Orthanc administrator, who never reads the password, points
        the server at a host of theirs and presses Check Connection: the
        host receives the password"""
        admin = self.sessions['orthancadmin']
        with self.root():
            domain = Pool().get(CONFIG)(self.server).domain
        try:
            with Catcher() as catcher:
                admin.write(CONFIG, [self.server], {'domain': catcher.url})
                admin.button(CONFIG, 'check_servers', [self.server])
            self.assertNotIn(
                '%s:%s' % (self.orthanc.user, self.orthanc.password),
                catcher.secrets())
        finally:
            # The moved server forgot its password: given again
            admin.write(CONFIG, [self.server], {
                    'domain': domain, 'password': self.orthanc.password})
            admin.button(CONFIG, 'check_servers', [self.server])

    def test_r10_configured_password_to_a_new_server(self):
        """Add Orthanc Server with the label of a configured password in
        another case and a host of the administrator's: the configured
        password is sent there, and nothing is audited"""
        admin = self.sessions['orthancadmin']
        with Catcher() as catcher:
            admin.wizard('gnuhealth.orthanc.add_server', [
                    ('connect', {'start': {
                                'label': CONFIGURED_LABEL.upper(),
                                'domain': catcher.url, 'user': 'x',
                                'password': None, 'verify_tls': False,
                                'ca_bundle': None}}),
                    ])
        self.assertNotIn('x:%s' % CONFIGURED_PASSWORD, catcher.secrets())

    def test_r10_label_change_changes_the_credentials_unaudited(self):
        """Renaming a server changes the configured password it sends:
        a change of credentials, neither audited nor checked again"""
        admin = self.sessions['orthancadmin']
        before = self.audit_count(self.configured)
        admin.write(CONFIG, [self.configured], {'label': 'Renamed PACS'})
        try:
            values, = admin.read(CONFIG, [self.configured],
                ['password_configured', 'validated'])
            self.assertFalse(values['password_configured'])
            self.assertGreater(self.audit_count(self.configured), before)
            self.assertFalse(values['validated'])
        finally:
            admin.write(CONFIG, [self.configured],
                {'label': CONFIGURED_LABEL})

    # -- admin-only fields -------------------------------------------------
    def test_r10_worklist_entry_gives_the_folder(self):
        """The worklist folder is the Orthanc administrators' only; the
        worklist entry (read or searched) gives it to every clinical
        user"""
        self.published_request(self.bob)
        with self.root():
            folder = os.path.realpath(
                Pool().get(CONFIG)(self.server).worklist_folder)
        for login in test_attacks.CLINICAL:
            session = self.sessions[login]
            with self.subTest(user=login):
                with self.assertRaises(RPCError):
                    session.read(CONFIG, [self.server], ['worklist_folder'])
                try:
                    entries = session.model(REQUEST, 'search_read',
                        [('worklist_entry', 'like', folder + '/%')], 0, None,
                        None, ['worklist_entry'])
                except RPCError:
                    entries = []  # refused
                self.assertEqual(entries, [])
                with self.assertRaises(RPCError):
                    session.model(REQUEST, 'search', [('worklist_server',
                                'where', [('worklist_folder', '!=', None)])],
                        0, None, None)

    def test_r10_last_error_gives_the_ca_bundle(self):
        """The CA bundle is the Orthanc administrators' only; a wrong one
        is written whole in the last error that clinical users read"""
        with self.root():
            broken, = Pool().get(CONFIG).create([{
                        'label': 'TLS', 'domain': 'https://127.0.0.1:9',
                        'verify_tls': True,
                        'ca_bundle': '/srv/private/internal-ca.pem'}])
        self.sessions['orthancadmin'].button(
            CONFIG, 'check_servers', [broken.id])
        for login in test_attacks.CLINICAL:
            session = self.sessions[login]
            with self.subTest(user=login):
                with self.assertRaises(RPCError):
                    session.read(CONFIG, [broken.id], ['ca_bundle'])
                error, = session.read(CONFIG, [broken.id], ['last_error'])
                self.assertNotIn('/srv/private', error['last_error'] or '')

    # -- completed results ---------------------------------------------------
    def test_r10_completed_result_changes(self):
        """A completed (signed) result keeps its patient, its test and its
        printed images; a result keeps the test of its request"""
        session = self.sessions['doctor']
        _, result, _ = self.performed_request(seed=60)
        with self.root():
            pool = Pool()
            Test = pool.get('gnuhealth.imaging.test')
            test = Pool().get(RESULT)(result).requested_test.id
            other = Test.search([('id', '!=', test)], limit=1)[0].id
        session.write(RESULT, [result], {'comment': 'No finding.'})
        session.button(RESULT, 'complete', [result])
        free, = session.model(RESULT, 'create', [{
                    'patient': self.ana, 'requested_test': test,
                    'comment': 'Fracture of the left radius.'}])
        session.button(RESULT, 'complete', [free])
        for record, values in [
                (free, {'patient': self.bob}),
                (result, {'requested_test': other}),
                (result, {'images': [('create', [{
                                    'name': 'other.png',
                                    'data': b'\x89PNG\r\n'}])]}),
                ]:
            with self.subTest(values=list(values)):
                with self.assertRaises(RPCError):
                    session.write(RESULT, [record], values)

    def test_r10_done_request_comment(self):
        "The comment of a done request is read-only in the form only"
        request, _, _ = self.performed_request(seed=61)
        with self.assertRaises(RPCError):
            self.sessions['doctor'].write(
                REQUEST, [request], {'comment': 'Changed afterwards'})

    # -- the audit -----------------------------------------------------------
    def test_r10_plain_delete_of_a_study_is_not_audited(self):
        """An Orthanc administrator deletes a study (and its Orthanc
        patient) with the plain delete: the images vanish from GNU Health
        (they stay in Orthanc; the next sync does not bring them back) and
        the audit says nothing"""
        admin = self.sessions['orthancadmin']
        for instance in make_study(patient_id='PUID-ANA',
                patient_name='BETZ^Ana', seed=62):
            self.orthanc.upload(instance)
        admin.button(CONFIG, 'do_sync', [self.server])
        with self.root():
            study, = Pool().get(STUDY).search([
                    ('patient_id', '=', 'PUID-ANA'),
                    ('request', '=', None), ('id', '!=', self.study)])
            study = study.id
        before = self.audit_count()
        try:
            admin.model(STUDY, 'delete', [study])
        except RPCError:
            return
        self.assertGreater(self.audit_count(), before)

    # -- hole 10 -------------------------------------------------------------
    def test_r10_sqlite_syncs_of_two_processes(self):
        """The Tryton server and another process (trytond-cron) sync the
        same server: the process lock does not reach across processes"""
        if backend.name != 'sqlite':
            self.skipTest('SQLite only')
        with tempfile.TemporaryDirectory(dir=self.workdir) as workdir:
            orthanc = OrthancServer(workdir).start()
            try:
                self.sync_from_both_processes(orthanc)
            finally:
                orthanc.stop()

    def sync_from_both_processes(self, orthanc):
        for seed in range(6):
            for instance in make_study(patient_id='XPROC-%s' % seed,
                    n_series=1, n_instances=1, seed=400 + seed):
                orthanc.upload(instance)
        with self.root():
            server, = Pool().get(CONFIG).create([{
                        'label': 'Two processes', 'domain': orthanc.url,
                        'user': orthanc.user, 'password': orthanc.password,
                        'validated': True}])
            server_id = server.id
        held, release = threading.Event(), threading.Event()
        stored = OrthancResourceMixin._orthanc_stored.__func__

        def gated(cls, server, orthanc_ids, names):
            result = stored(cls, server, orthanc_ids, names)
            if cls.__name__ == test_attacks.PATIENT and names:
                held.set()
                release.wait(60)
            return result
        results = {}

        def local_sync():
            # As trytond-cron runs the scheduled sync
            with Transaction().start(self.trytond.database, 0) as tr:
                Server = Pool().get(CONFIG)
                results.update(Server.sync_now([Server(server_id)]))
                tr.commit()
        logger = 'trytond.modules.health_orthanc'
        with self.assertLogs(logger, 'INFO') as logs, \
                mock.patch.object(OrthancResourceMixin, '_orthanc_stored',
                    classmethod(gated)):
            thread = threading.Thread(target=local_sync)
            thread.start()
            self.assertTrue(held.wait(60))
            # The user presses Sync meanwhile, in the Tryton server
            self.sessions['orthancadmin'].button(
                CONFIG, 'do_sync', [server_id])
            release.set()
            thread.join(120)
        errors = [r.getMessage() for r in logs.records
            if r.levelno >= logging.ERROR]
        self.assertEqual(errors, [])


# Only the tests above: those of the attacks run in test_attacks
for _name in dir(test_attacks.AttackTestCase):
    if _name.startswith('test_') and not _name.startswith('test_r10_'):
        setattr(ReviewTestCase, _name, None)
del _name


class QueueContextTestCase(unittest.TestCase):
    "The queued work of a user's action, where trytond-workers run it"

    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix='review10-queue-')
        cls.addClassCleanup(shutil.rmtree, cls.workdir, ignore_errors=True)
        cls.worklists = os.path.join(cls.workdir, 'worklists')
        os.mkdir(cls.worklists)
        cls.trytond = TrytondServer(cls.workdir, database='%s_r10_queue' % (
                re.sub(r'\W', '', os.environ.get('DB_NAME', ''))
                or 'test_imaging'))
        cls.addClassCleanup(cls.trytond.stop)
        cls.trytond.start('\n[queue]\nworker = True\n')
        cls.trytond.create_user(
            'imaging', 'health_imaging.group_health_imaging')
        cls.session = cls.trytond.session('imaging')

    def test_r10_client_delays_the_worklist_removal(self):
        """A client cancels a request with queue_scheduled_at in its
        context: the removal of the worklist entry is put off for a
        century, the modality keeps listing the cancelled exam"""
        from trytond.modules.health_imaging.tests.tools import (
            create_patient, create_request)
        with self.trytond.transaction():
            pool = Pool()
            pool.get(CONFIG).create([{'label': 'Worklists',
                        'domain': 'http://127.0.0.1:9', 'validated': True,
                        'publish_worklists': True,
                        'worklist_folder': self.worklists}])
            request = create_request(create_patient(puid='PUID-Q')).id
        century = {'__class__': 'timedelta', 'seconds': 100 * 365 * 86400}
        self.session.button(REQUEST, 'requested', [request])
        self.session.button(REQUEST, 'cancel', [request],
            context={'queue_scheduled_at': century})
        with self.trytond.transaction():
            Queue = Pool().get('ir.queue')
            tasks = [t for t in Queue.search([])
                if t.data['method'] == 'remove_worklists']
            self.assertTrue(tasks)
            for task in tasks:
                self.assertFalse(task.scheduled_at
                    and task.scheduled_at > datetime.datetime.now()
                    + datetime.timedelta(days=1), task.scheduled_at)

    def test_r14_client_delays_the_report_store(self):
        """A client completes a result with queue_scheduled_at in its
        context: the store of the report into its studies must not be put
        off (the result would say To Store for a century)"""
        from trytond.modules.health_imaging.tests.tools import (
            create_patient, create_request)
        with self.trytond.transaction():
            pool = Pool()
            Request = pool.get(REQUEST)
            Result = pool.get(RESULT)
            server, = pool.get(CONFIG).create([{'label': 'Reports',
                        'domain': 'http://127.0.0.1:9', 'validated': True}])
            patient = create_patient(puid='PUID-R14')
            opatient, = pool.get(test_attacks.PATIENT).create([{
                        'server': server.id, 'orthanc_id': 'p14',
                        'patient_id': 'PUID-R14', 'patient': patient.id,
                        'link_state': 'manual'}])
            study, = pool.get(STUDY).create([{
                        'server': server.id, 'orthanc_id': 's14',
                        'orthanc_patient': opatient.id}])
            request = create_request(patient)
            Request.requested([request])
            result, = Result.create(
                [Result.values_from_request(Request(request.id))])
            Result.write([result], {'comment': 'Fine',
                    'studies': [('add', [study.id])]})
            result = result.id
        century = {'__class__': 'timedelta', 'seconds': 100 * 365 * 86400}
        self.session.button(RESULT, 'complete', [result],
            context={'queue_scheduled_at': century})
        with self.trytond.transaction():
            Queue = Pool().get('ir.queue')
            tasks = [t for t in Queue.search([])
                if t.data['method'] == 'update_study_reports']
            self.assertTrue(tasks)
            for task in tasks:
                self.assertFalse(task.scheduled_at
                    and task.scheduled_at > datetime.datetime.now()
                    + datetime.timedelta(days=1), task.scheduled_at)


class ResultStudyRaceTestCase(unittest.TestCase):
    """The order matching attaches a study to a result while a person does
    (PostgreSQL: transactions really run at once)"""

    @classmethod
    def setUpClass(cls):
        if backend.name != 'postgresql':
            raise unittest.SkipTest('PostgreSQL only')
        cls.workdir = tempfile.mkdtemp(prefix='review10-race-')
        cls.addClassCleanup(shutil.rmtree, cls.workdir, ignore_errors=True)
        cls.trytond = TrytondServer(cls.workdir, database='%s_r10_race' % (
                re.sub(r'\W', '', os.environ.get('DB_NAME', ''))
                or 'test_imaging'))
        cls.addClassCleanup(cls.trytond.drop_database)
        cls.trytond.create_database()

    def test_r10_study_attached_twice(self):
        "Nothing keeps one study from being on one result twice"
        from trytond.modules.health_imaging.tests.tools import (
            create_patient, create_request)
        database = self.trytond.database
        with self.trytond.transaction():
            pool = Pool()
            Request = pool.get(REQUEST)
            Result = pool.get(RESULT)
            server, = pool.get(CONFIG).create([{
                        'label': 'Race', 'domain': 'http://127.0.0.1:9'}])
            patient = create_patient(puid='PUID-RACE')
            orthanc_patient, = pool.get(test_attacks.PATIENT).create([{
                        'server': server.id, 'orthanc_id': 'p1',
                        'patient_id': 'PUID-RACE', 'patient': patient.id,
                        'link_state': 'manual'}])
            study, = pool.get(STUDY).create([{
                        'server': server.id, 'orthanc_id': 's1',
                        'orthanc_patient': orthanc_patient.id}])
            request = create_request(patient)
            Request.requested([request])
            result, = Result.create(
                [Result.values_from_request(Request(request.id))])
            ids = request.id, result.id, study.id
        # A person adds the study to the result (not committed yet) ...
        extras = {'_lock_records': {
                Pool(database).get(RESULT)._table: [ids[1]]}}
        with Transaction().start(database, 0, **extras) as person:
            Result = Pool().get(RESULT)
            Result.write([Result(ids[1])], {'studies': [('add', [ids[2]])]})
            # ... while the sync's order matching attaches it too: it
            # cannot take the result, and is retried once the person's
            # transaction ended
            with self.assertRaises((TransactionError,
                        backend.DatabaseOperationalError)):
                with Transaction().new_transaction(**extras) as sync:
                    pool = Pool()
                    Request = pool.get(REQUEST)
                    Request._attach_studies(
                        {Request(ids[0]): [pool.get(STUDY)(ids[2])]},
                        {ids[0]: pool.get(RESULT)(ids[1])})
                    sync.commit()
            person.commit()
        with Transaction().start(database, 0, **extras) as sync:
            pool = Pool()
            Request = pool.get(REQUEST)
            Request._attach_studies(
                {Request(ids[0]): [pool.get(STUDY)(ids[2])]},
                {ids[0]: pool.get(RESULT)(ids[1])})
            sync.commit()
        with self.trytond.transaction():
            ResultStudy = Pool().get(
                'gnuhealth.imaging.test.result-gnuhealth.orthanc.study')
            self.assertEqual(ResultStudy.search_count([
                        ('result', '=', ids[1]), ('study', '=', ids[2])]), 1)
