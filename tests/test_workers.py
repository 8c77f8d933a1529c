# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Two trytond-worker processes share the syncs of four real Orthancs
through PostgreSQL.

The scheduled action queues one ``sync_now`` task per server
(``gnuhealth.orthanc.config|sync``); the workers pull them from the
``ir.queue`` table and the per-server lock keeps two of them from
importing the same server at once.  This test runs it for real:

- its own database (``<DB_NAME>_workers``, dropped at the end) with
  ``health_orthanc`` activated, created by trytond's test tooling in a
  subprocess (so ``DB_CACHE`` is used when set);
- four real Orthancs (``health_orthanc/tests/orthanc_server.py``), each
  with its own studies, and four validated server records;
- two ``trytond-worker`` processes (one process each) with a
  configuration file pointing to the PostgreSQL database;
- every sync queued twice to provoke contention: in a row for each server
  in the first round (two clicks on Sync), as two scheduled runs in the
  second one.

It then checks that every task ran once, that both workers ran tasks,
that every server is synced (cursor at Orthanc's last change, no error)
with exactly Orthanc's patients, studies and series and no duplicate; then
a second round with new studies on two servers.

PostgreSQL is required: on SQLite the test fails (bin/test deselects it
in its SQLite pass), as it does when Orthanc is missing.
"""
import datetime
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

from trytond import backend
from trytond.config import config
from trytond.pool import Pool
from trytond.tests.test_tryton import db_exist, drop_db
from trytond.transaction import Transaction

from trytond.modules.health_orthanc.tests.orthanc_case import upload_study
from trytond.modules.health_orthanc.tests.orthanc_server import OrthancServer

# Beside the tests' database (test_imaging_workers under bin/test)
DATABASE = '%s_workers' % os.environ.get('DB_NAME', 'test_imaging')
WORKERS = 2
SERVERS = 4
# Guards against a hang, not timed assertions: the whole test takes well
# under a minute on a quiet machine
READY_TIMEOUT = 180
QUEUE_TIMEOUT = 300
STABLE_TIMEOUT = 60
QUIET_SECONDS = 2  # after the expected Stable* changes
TASK_DONE = re.compile(r'<Task (\d+)@%s> in \d+ ms' % re.escape(DATABASE))
SYNC_LOG = re.compile(r'Orthanc server Worker-\d: ([a-z ]+?)(?: sync,|$)',
    re.MULTILINE)
TASK_FAILED = re.compile(r'<Task (\d+)@%s> failed' % re.escape(DATABASE))
BIN = os.path.dirname(sys.executable)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def now():
    "The local time, as the workers write sync_time, to the second"
    return datetime.datetime.now().replace(microsecond=0)


def changes(orthanc):
    "Return the whole change log of orthanc and its last sequence number"
    result, since = [], 0
    while True:
        page = orthanc.request('GET', '/changes', params={
                'since': since, 'limit': 1000}).json()
        result.extend(page['Changes'])
        since = page['Last']
        if page['Done']:
            return result, page['Last']


def wait_stable(orthanc, studies, series, patients):
    """Wait until Orthanc logged at least these Stable* changes and its
    change log stays quiet: later syncs then see a still change log.
    Return the last change."""
    expected = {'StableStudy': studies, 'StableSeries': series,
        'StablePatient': patients}
    deadline = time.monotonic() + STABLE_TIMEOUT
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        log, current = changes(orthanc)
        counts = {k: sum(c['ChangeType'] == k for c in log)
            for k in expected}
        if current != last:
            last, since = current, time.monotonic()
        elif (all(counts[k] >= v for k, v in expected.items())
                and time.monotonic() - since >= QUIET_SECONDS):
            return last
        time.sleep(0.25)
    raise AssertionError('Orthanc %s did not become stable: %s, expected %s'
        % (orthanc.url, counts, expected))


class Worker:
    "A trytond-worker process, its output in a log file"

    def __init__(self, name, config_file, workdir):
        self.name = name
        self.log_path = os.path.join(workdir, '%s.log' % name)
        self.log = open(self.log_path, 'ab')
        # Its own process group: stopping it stops its pool processes too
        self.process = subprocess.Popen([
                os.path.join(BIN, 'trytond-worker'), '-c', config_file,
                '-d', DATABASE, '-n', '1', '-vv'],
            stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)

    @property
    def running(self):
        return self.process.poll() is None

    def output(self, offset=0):
        with open(self.log_path, 'rb') as fp:
            fp.seek(offset)
            return fp.read().decode('utf-8', 'replace')

    def size(self):
        return os.path.getsize(self.log_path)

    def tasks_done(self, offset=0):
        return [int(i) for i in TASK_DONE.findall(self.output(offset))]

    def stop(self):
        if self.running:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.log.close()


def create_database():
    """Create DATABASE with health_orthanc activated by trytond's test
    tooling, in a subprocess as its DB_NAME is read at import"""
    env = dict(os.environ, DB_NAME=DATABASE)
    subprocess.run([sys.executable, '-c',
            'from trytond.tests.test_tryton import activate_module; '
            'activate_module("health_orthanc")'],
        env=env, cwd=ROOT, check=True)
    Pool(DATABASE).init()


def drop_database():
    "Drop DATABASE, waiting for the connections of stopped workers to go"
    deadline = time.monotonic() + 30
    while True:
        try:
            drop_db(DATABASE)
            return
        except backend.DatabaseOperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class TwoWorkersFourServersTestCase(unittest.TestCase):
    "Two trytond-workers sync four real Orthancs through PostgreSQL"

    @classmethod
    def setUpClass(cls):
        if backend.name != 'postgresql':
            raise AssertionError(
                'tests/test_workers.py needs PostgreSQL (workers share the '
                'queue through it), not %s: run it with '
                'TRYTOND_DATABASE_URI=postgresql://user@host:port/ (bin/test '
                'does in its PostgreSQL pass and deselects it on SQLite)'
                % backend.name)
        cls.workdir = tempfile.mkdtemp(prefix='workers-test-')
        cls.addClassCleanup(shutil.rmtree, cls.workdir, ignore_errors=True)
        if db_exist(DATABASE):
            drop_database()  # left by an interrupted run
        create_database()
        cls.addClassCleanup(drop_database)

        cls.orthancs = []
        for index in range(SERVERS):
            orthanc = OrthancServer(
                os.path.join(cls.workdir, 'orthanc-%d' % index))
            cls.addClassCleanup(orthanc.stop)
            cls.orthancs.append(orthanc.start())

        cls.config_file = os.path.join(cls.workdir, 'trytond.conf')
        with open(cls.config_file, 'w') as fp:
            fp.write('[database]\nuri = %s\n\n[queue]\nworker = True\n'
                % config.get('database', 'uri'))
        cls.workers = []
        for index in range(WORKERS):
            worker = Worker('worker-%d' % index, cls.config_file, cls.workdir)
            cls.addClassCleanup(worker.stop)
            cls.workers.append(worker)

    # -- helpers ------------------------------------------------------------
    def upload(self, index, patient, study, seed):
        """Upload a study of 2 series (one instance each) to Orthanc index;
        count what its change log will show once stable"""
        upload_study(self.orthancs[index], 'W%d-%s' % (index, patient),
            'WORKER%d^%s' % (index, patient), seed=seed, n_series=2,
            accession='ACC-W%d-%s' % (index, study))
        expected = self.expected_stable[index]
        expected['studies'] += 1
        expected['series'] += 2
        expected['patients'] += 1

    def wait_orthancs_stable(self):
        return [wait_stable(o, **e)
            for o, e in zip(self.orthancs, self.expected_stable)]

    def wait_workers_ready(self):
        """Wait until both workers listen for queued tasks: their pools are
        initialized and they will wake up on the next task"""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            for worker in self.workers:
                self.assertTrue(worker.running,
                    '%s exited:\n%s' % (worker.name, worker.output()[-3000:]))
            with Transaction().start(DATABASE, 0, readonly=True) as tr:
                cursor = tr.connection.cursor()
                cursor.execute('SELECT COUNT(*) FROM pg_stat_activity '
                    'WHERE datname = %s AND query LIKE %s',
                    (DATABASE, 'LISTEN %'))
                listening, = cursor.fetchone()
            if listening >= WORKERS:
                return
            time.sleep(0.5)
        self.fail('the workers did not start within %s s:\n%s' % (
                READY_TIMEOUT, '\n'.join(
                    w.output()[-2000:] for w in self.workers)))

    def queue_syncs(self, times, adjacent=False):
        """Queue the sync of every validated server times over, as the
        scheduled action does (or, adjacent, each server times in a row, as
        repeated clicks on Sync do); return the ids of the queued tasks"""
        with Transaction().start(DATABASE, 1) as transaction:
            pool = Pool()
            Server = pool.get('gnuhealth.orthanc.config')
            Queue = pool.get('ir.queue')
            before = {q.id for q in Queue.search([])}
            if adjacent:
                for server in Server.browse(self.server_ids):
                    for _ in range(times):
                        Server.sync([server])
            else:
                for _ in range(times):
                    Server.sync()
            tasks = Queue.search([('id', 'not in', list(before))])
            self.assertEqual(len(tasks), times * SERVERS)
            self.assertEqual(
                {(t.data['method'], tuple(t.data['instances']))
                    for t in tasks},
                {('sync_now', (s,)) for s in self.server_ids})
            transaction.commit()
            return sorted(t.id for t in tasks)

    def wait_tasks(self, task_ids, offsets):
        "Wait until the workers finished every task; fail at a failed one"
        deadline = time.monotonic() + QUEUE_TIMEOUT
        while time.monotonic() < deadline:
            for worker, offset in zip(self.workers, offsets):
                self.assertTrue(worker.running,
                    '%s exited:\n%s' % (worker.name, worker.output()[-3000:]))
                output = worker.output(offset)
                self.assertEqual(TASK_FAILED.findall(output), [], output)
            with Transaction().start(DATABASE, 0, readonly=True):
                Queue = Pool().get('ir.queue')
                pending = Queue.search([
                        ('id', 'in', task_ids),
                        ('finished_at', '=', None),
                        ])
                if not pending:
                    return
            time.sleep(0.5)
        self.fail('tasks %s not finished after %s s:\n%s' % (
                [t.id for t in pending], QUEUE_TIMEOUT, '\n'.join(
                    w.output()[-3000:] for w in self.workers)))

    def check_tasks(self, task_ids, offsets):
        "Each task ran once, without failure, and both workers ran some"
        done = {w.name: w.tasks_done(o)
            for w, o in zip(self.workers, offsets)}
        for worker, offset in zip(self.workers, offsets):
            self.assertEqual(TASK_FAILED.findall(worker.output(offset)), [],
                worker.output(offset))
        ran = sorted(i for ids in done.values() for i in ids)
        self.assertEqual(ran, task_ids, done)
        for name, ids in done.items():
            self.assertTrue(ids, '%s ran no task: %s' % (name, done))
        return done

    def sync_outcomes(self, offsets):
        """Count what the syncs logged (full, incremental, already syncing,
        taken over): shown, not asserted, as it depends on timing"""
        outcomes = {}
        for worker, offset in zip(self.workers, offsets):
            for outcome in SYNC_LOG.findall(worker.output(offset)):
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return outcomes

    def check_servers(self, lasts, counts, since):
        """Every server synced after since, its cursor at Orthanc's last
        change, without error, with exactly Orthanc's resources"""
        with Transaction().start(DATABASE, 0, readonly=True):
            pool = Pool()
            Server = pool.get('gnuhealth.orthanc.config')
            models = {
                'patients': pool.get('gnuhealth.orthanc.patient'),
                'studies': pool.get('gnuhealth.orthanc.study'),
                'series': pool.get('gnuhealth.orthanc.series'),
                }
            servers = Server.browse(self.server_ids)
            for server, orthanc, last, expected in zip(
                    servers, self.orthancs, lasts, counts):
                with self.subTest(server=server.label):
                    self.assertIsNone(server.last_error)
                    self.assertTrue(server.validated)
                    self.assertIsNotNone(server.sync_time)
                    self.assertGreaterEqual(server.sync_time, since)
                    self.assertEqual(server.last, last)
                    for kind, Model in models.items():
                        records = Model.search([('server', '=', server.id)])
                        ids = [r.orthanc_id for r in records]
                        self.assertEqual(len(ids), expected[kind], kind)
                        self.assertEqual(set(ids), set(orthanc.request(
                                    'GET', '/%s' % kind).json()), kind)
            # No duplicate whatever the table says
            cursor = Transaction().connection.cursor()
            for kind, Model in models.items():
                table = Model._table
                cursor.execute('SELECT server, orthanc_id, COUNT(*) '
                    'FROM "%s" GROUP BY server, orthanc_id '
                    'HAVING COUNT(*) > 1' % table)
                self.assertEqual(cursor.fetchall(), [], kind)

    # -- the test -----------------------------------------------------------
    def test_two_workers_four_servers(self):
        "Two workers sync four servers, twice queued, then the increments"
        self.expected_stable = [
            {'studies': 0, 'series': 0, 'patients': 0}
            for _ in range(SERVERS)]
        # Server i: i + 1 patients of one study of two series each
        for index in range(SERVERS):
            for number in range(index + 1):
                self.upload(index, 'P%d' % number, 'S%d' % number,
                    seed=100 * index + number)
        lasts = self.wait_orthancs_stable()
        counts = [{'patients': i + 1, 'studies': i + 1,
                'series': 2 * (i + 1)} for i in range(SERVERS)]

        with Transaction().start(DATABASE, 1) as transaction:
            Server = Pool().get('gnuhealth.orthanc.config')
            servers = Server.create([{
                        'label': 'Worker-%d' % index,
                        'domain': orthanc.url,
                        'user': orthanc.user,
                        'password': orthanc.password,
                        'validated': True,
                        } for index, orthanc in enumerate(self.orthancs)])
            self.server_ids = [s.id for s in servers]
            transaction.commit()

        self.wait_workers_ready()
        offsets = [w.size() for w in self.workers]
        since = now()
        # Both workers most likely take the two tasks of a server at once
        tasks = self.queue_syncs(times=2, adjacent=True)
        self.wait_tasks(tasks, offsets)
        done = self.check_tasks(tasks, offsets)
        self.check_servers(lasts, counts, since)
        print('round 1: tasks per worker %s, syncs %s' % (
                {k: len(v) for k, v in done.items()},
                self.sync_outcomes(offsets)))

        # Round 2: a new patient on server 0, a new study of an existing
        # patient on server 2; servers 1 and 3 unchanged
        self.upload(0, 'P9', 'S9', seed=9)
        counts[0] = {k: v + (2 if k == 'series' else 1)
            for k, v in counts[0].items()}
        self.upload(2, 'P0', 'S9', seed=209)
        counts[2] = {'patients': counts[2]['patients'],
            'studies': counts[2]['studies'] + 1,
            'series': counts[2]['series'] + 2}
        new_lasts = self.wait_orthancs_stable()
        self.assertEqual([n > o for n, o in zip(new_lasts, lasts)],
            [True, False, True, False])

        offsets = [w.size() for w in self.workers]
        since = now()
        tasks = self.queue_syncs(times=2)
        self.wait_tasks(tasks, offsets)
        done = self.check_tasks(tasks, offsets)
        self.check_servers(new_lasts, counts, since)
        print('round 2: tasks per worker %s, syncs %s' % (
                {k: len(v) for k, v in done.items()},
                self.sync_outcomes(offsets)))
