# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Two syncs of one server at once on a SQLite file database.

SQLite has no row locks: the two syncs used to import the same patients,
and one failed with "already recorded" and an ERROR traceback.  Now the
second one skips quietly while the first holds the server.

The test runs the two syncs in two threads of this process against a real
Orthanc, on a database file of its own (``health_orthanc`` activated by
trytond's test tooling in a subprocess, so ``DB_CACHE`` is used when set).
The first sync is held after it read which patients are stored, until the
other one read them too or ended: without a guard both would then create
the same patients.  On PostgreSQL the server's row lock does the same; two
trytond-workers are tested by ``tests/test_workers.py``.
"""
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest
from unittest import mock

from trytond import backend
from trytond.config import config
from trytond.pool import Pool
from trytond.transaction import Transaction

from trytond.modules.health_orthanc.resource import OrthancResourceMixin
from trytond.modules.health_orthanc.tests.orthanc_case import upload_study
from trytond.modules.health_orthanc.tests.orthanc_server import OrthancServer

DATABASE = 'test_concurrent_syncs'
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {
    'patients': 'gnuhealth.orthanc.patient',
    'studies': 'gnuhealth.orthanc.study',
    'series': 'gnuhealth.orthanc.series',
    }
# Guards against a hang, not timed assertions
TIMEOUT = 120


class Gate:
    """Hold the first sync that reads which patients are stored until
    another one reads them too, or the gate is opened"""

    def __init__(self):
        self.opened = threading.Event()
        self.lock = threading.Lock()
        self.arrived = 0

    def pass_(self):
        with self.lock:
            self.arrived += 1
            first = self.arrived == 1
        if first:
            self.opened.wait(TIMEOUT)
        else:
            self.opened.set()

    def open(self):
        self.opened.set()

    def patched(self):
        "Put the gate after the read of the stored patients of a page"
        stored = OrthancResourceMixin._orthanc_stored.__func__
        gate = self

        def gated(cls, server, orthanc_ids, names):
            result = stored(cls, server, orthanc_ids, names)
            # names: the read of a page's upsert, not a lookup of IDs
            if cls.__name__ == MODELS['patients'] and names:
                gate.pass_()
            return result
        return mock.patch.object(
            OrthancResourceMixin, '_orthanc_stored', classmethod(gated))


class ConcurrentSyncsTestCase(unittest.TestCase):
    "Two syncs of one server at once on SQLite"

    @classmethod
    def setUpClass(cls):
        if backend.name != 'sqlite':
            raise unittest.SkipTest('SQLite only: on PostgreSQL the row '
                'lock of the server is tested by tests/test_workers.py')
        cls.workdir = tempfile.mkdtemp(prefix='concurrent-syncs-')
        cls.addClassCleanup(shutil.rmtree, cls.workdir, ignore_errors=True)
        env = dict(os.environ, DB_NAME=DATABASE,
            TRYTOND_DATABASE__PATH=cls.workdir)
        subprocess.run([sys.executable, '-c',
                'from trytond.tests.test_tryton import activate_module; '
                'activate_module("health_orthanc")'],
            env=env, cwd=ROOT, check=True)
        cls.addClassCleanup(
            config.set, 'database', 'path', config.get('database', 'path'))
        config.set('database', 'path', cls.workdir)
        Pool(DATABASE).init()
        cls.orthanc = OrthancServer(os.path.join(cls.workdir, 'orthanc'))
        cls.addClassCleanup(cls.orthanc.stop)
        cls.orthanc.start()

    def create_server(self):
        with Transaction().start(DATABASE, 0, close=True) as transaction:
            Server = Pool().get('gnuhealth.orthanc.config')
            server, = Server.create([{
                        'label': 'Concurrent',
                        'domain': self.orthanc.url,
                        'user': self.orthanc.user,
                        'password': self.orthanc.password,
                        'validated': True,
                        }])
            transaction.commit()
            return server.id

    def sync_twice_at_once(self, server_id):
        "Run two syncs of the server in two threads; return their results"
        gate = Gate()
        start = threading.Barrier(2)
        results, errors = {}, []

        def sync(name):
            try:
                start.wait(TIMEOUT)
                with Transaction().start(DATABASE, 0, close=True) as tr:
                    Server = Pool().get('gnuhealth.orthanc.config')
                    results[name] = Server.sync_now(
                        [Server(server_id)])[server_id]
                    tr.commit()
            except Exception as exception:
                errors.append(exception)
            finally:
                gate.open()

        with gate.patched():
            threads = [threading.Thread(target=sync, args=(n,))
                for n in ['first', 'second']]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(TIMEOUT)
        self.assertFalse([t for t in threads if t.is_alive()])
        self.assertEqual(errors, [])
        return results

    def test_one_syncs_the_other_skips(self):
        "One sync imports everything, the other skips without error"
        for seed in range(6):
            upload_study(self.orthanc, 'C%s' % seed, 'CONCURRENT^%s' % seed,
                seed=seed)
        server_id = self.create_server()

        with self.assertLogs('trytond', logging.INFO) as logs:
            results = self.sync_twice_at_once(server_id)

        self.assertEqual(
            [r for r in logs.records if r.levelno >= logging.ERROR], [])
        self.assertEqual(sorted(r is None for r in results.values()),
            [False, True])
        self.assertIn('already syncing', '\n'.join(logs.output))
        with Transaction().start(DATABASE, 0, readonly=True, close=True):
            pool = Pool()
            server = pool.get('gnuhealth.orthanc.config')(server_id)
            self.assertIsNone(server.last_error)
            self.assertIsNotNone(server.last)
            cursor = Transaction().connection.cursor()
            for kind, model in MODELS.items():
                with self.subTest(kind=kind):
                    Model = pool.get(model)
                    ids = [r.orthanc_id for r in Model.search(
                            [('server', '=', server_id)])]
                    self.assertEqual(sorted(ids), sorted(
                            self.orthanc.request('GET', '/' + kind).json()))
                    cursor.execute('SELECT server, orthanc_id, COUNT(*) '
                        'FROM "%s" GROUP BY server, orthanc_id '
                        'HAVING COUNT(*) > 1' % Model._table)
                    self.assertEqual(cursor.fetchall(), [])
