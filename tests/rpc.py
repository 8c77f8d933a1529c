# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""A real trytond serving JSON-RPC, for the tests that act as a user would.

Access rules must hold where users reach the server: over RPC, with the
context a client sends, as the user concerned.  ``TrytondServer`` creates a
database of its own with the modules activated (by trytond's test tooling,
so ``DB_CACHE`` serves it), starts ``trytond`` on a free port of 127.0.0.1
and gives JSON-RPC sessions of users logged in with their password.  The
test process prepares data through the ORM in transactions of its own
(``server.transaction()``), committed before the users act.

Works on the database of the test run (``TRYTOND_DATABASE_URI``): a file
database in the work directory on SQLite, a database of its own on
PostgreSQL.
"""
import base64
import contextlib
import datetime
import decimal
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import requests
from trytond import backend
from trytond.config import config
from trytond.pool import Pool
from trytond.transaction import Transaction

from trytond.modules.health_orthanc.tests.orthanc_server import (
    OrthancServer, free_port)

BIN = os.path.dirname(sys.executable)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 120
# A guard against a hang, not a timed assertion
CALL_TIMEOUT = 120
PASSWORD = 'Secret-Pass-42'


def encode(value):
    "Tryton's JSON form of the values JSON has no type for"
    if isinstance(value, datetime.datetime):
        return {'__class__': 'datetime', 'year': value.year,
            'month': value.month, 'day': value.day, 'hour': value.hour,
            'minute': value.minute, 'second': value.second,
            'microsecond': value.microsecond}
    if isinstance(value, datetime.date):
        return {'__class__': 'date', 'year': value.year,
            'month': value.month, 'day': value.day}
    if isinstance(value, (bytes, bytearray)):
        return {'__class__': 'bytes',
            'base64': base64.b64encode(value).decode('ascii')}
    if isinstance(value, decimal.Decimal):
        return {'__class__': 'Decimal', 'decimal': str(value)}
    raise TypeError(repr(value))


def decode(value):
    "The Python value of Tryton's JSON forms"
    kind = value.get('__class__')
    if kind == 'date':
        return datetime.date(value['year'], value['month'], value['day'])
    if kind == 'datetime':
        return datetime.datetime(value['year'], value['month'],
            value['day'], value['hour'], value['minute'], value['second'],
            value.get('microsecond', 0))
    if kind == 'bytes':
        return base64.b64decode(value['base64'])
    if kind == 'Decimal':
        return decimal.Decimal(value['decimal'])
    return value


class RPCError(Exception):
    "A JSON-RPC call answered with an error"

    def __init__(self, name, args):
        super().__init__(name, args)
        self.name = name
        self.args_ = args

    @property
    def message(self):
        if isinstance(self.args_, (list, tuple)) and self.args_:
            return str(self.args_[0])
        return str(self.args_)

    def __str__(self):
        return '%s: %s' % (self.name, self.args_)


class Session:
    "A JSON-RPC session of a user logged in with a password"

    def __init__(self, url, database, login, password=PASSWORD):
        self.url = '%s/%s/' % (url, database)
        self.login = login
        self.http = requests.Session()
        self.user_id, self.key = self._call(
            'common.db.login', login, {'password': password}, 'en')[:2]
        token = base64.b64encode(
            ('%s:%s:%s' % (login, self.user_id, self.key)).encode()).decode()
        self.http.headers['Authorization'] = 'Session ' + token
        self.context = self._call('model.res.user.get_preferences', True, {})

    def _call(self, method, *params):
        response = self.http.post(self.url, data=json.dumps({
                    'id': 1, 'method': method, 'params': list(params)},
                default=encode), timeout=CALL_TIMEOUT,
            headers={'Content-Type': 'application/json'})
        if response.status_code != 200:
            raise RPCError('HTTP %s' % response.status_code, response.text)
        answer = json.loads(response.text, object_hook=decode)
        if answer.get('error'):
            name, args = (answer['error'] + [None])[:2]
            raise RPCError(name, args)
        return answer['result']

    def call(self, method, *params, context=None):
        "Call method with params, the user's context (updated) last"
        context = dict(self.context, **(context or {}))
        return self._call(method, *params, context)

    def model(self, model, method, *params, context=None):
        return self.call(
            'model.%s.%s' % (model, method), *params, context=context)

    def search(self, model, domain, order=None, context=None):
        return self.model(
            model, 'search', domain, 0, None, order, context=context)

    def read(self, model, ids, names, context=None):
        return self.model(model, 'read', ids, names, context=context)

    def write(self, model, ids, values, context=None):
        return self.model(model, 'write', ids, values, context=context)

    def button(self, model, name, ids, context=None):
        return self.model(model, name, ids, context=context)

    def wizard(self, name, states, context=None, active=None):
        """Run the wizard through states: [(state, {view: values}), ...]
        after its start; return the answer of the last execute"""
        ctx = dict(context or {})
        if active:
            model, ids = active
            ctx.update(active_model=model, active_id=ids[0], active_ids=ids)
        session_id, start, _ = self.call('wizard.%s.create' % name)
        answer = None
        try:
            data, state = {}, start
            answer = self.call('wizard.%s.execute' % name, session_id, data,
                state, context=ctx)
            for state, data in states:
                answer = self.call('wizard.%s.execute' % name, session_id,
                    data, state, context=ctx)
        finally:
            self.call('wizard.%s.delete' % name, session_id)
        return answer


class TrytondServer:
    "trytond over a database of its own, serving JSON-RPC on 127.0.0.1"

    def __init__(self, workdir, database=None, modules=('health_orthanc',)):
        self.workdir = workdir
        # Named after the run's database: runs sharing a cluster differ
        self.database = database or '%s_rpc' % (
            re.sub(r'\W', '', os.environ.get('DB_NAME', '')) or 'test_imaging')
        self.modules = list(modules)
        self.port = free_port()
        self.url = 'http://127.0.0.1:%s' % self.port
        self.process = None
        self.log_path = os.path.join(workdir, 'trytond.log')
        self._saved_path = None

    # -- database -----------------------------------------------------------
    def _database_env(self):
        env = dict(os.environ, DB_NAME=self.database)
        if backend.name == 'sqlite':
            env['TRYTOND_DATABASE__PATH'] = self.workdir
        return env

    def create_database(self):
        "Create the database with the modules, by trytond's test tooling"
        if backend.name == 'sqlite':
            # The process's own connections find the file there too
            self._saved_path = config.get('database', 'path')
            config.set('database', 'path', self.workdir)
        else:
            self._drop()  # left by an interrupted run
        subprocess.run([sys.executable, '-c',
                'from trytond.tests.test_tryton import activate_module; '
                'activate_module(%r)' % self.modules],
            env=self._database_env(), cwd=ROOT, check=True)
        Pool(self.database).init()

    def drop_database(self):
        if backend.name == 'sqlite':
            if self._saved_path is not None:
                config.set('database', 'path', self._saved_path)
            return
        deadline = time.monotonic() + 30
        Pool.stop(self.database)
        while True:
            try:
                self._drop()
                return
            except backend.DatabaseOperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _drop(self):
        """Drop the PostgreSQL database if it exists (trytond's drop_db
        trusts its cached list, which misses a database created by
        another process)"""
        try:
            # The connections of this process to it
            backend.Database(self.database).close()
        except backend.DatabaseOperationalError:
            pass  # it does not exist
        database = backend.Database()
        database.connect()
        connection = database.get_connection(autocommit=True)
        try:
            cursor = connection.cursor()
            cursor.execute('DROP DATABASE IF EXISTS "%s"' % self.database)
        finally:
            database.put_connection(connection, True)

    @contextlib.contextmanager
    def transaction(self, user=0, context=None):
        "A committed transaction of the test process on the database"
        with Transaction().start(self.database, user, context=context) \
                as transaction:
            yield transaction
            transaction.commit()

    # -- server -------------------------------------------------------------
    def config_file(self, extra=''):
        path = os.path.join(self.workdir, 'trytond.conf')
        with open(path, 'w') as fp:
            fp.write('[database]\nuri = %s\n' % config.get('database', 'uri'))
            if backend.name == 'sqlite':
                fp.write('path = %s\n' % self.workdir)
            fp.write('\n[web]\nlisten = 127.0.0.1:%s\n' % self.port)
            fp.write('\n[session]\nmax_attempt = 1000\n')
            fp.write(extra)
        return path

    def start(self, extra_config=''):
        self.create_database()
        log = open(self.log_path, 'ab')
        env = dict(os.environ)
        env.pop('TRYTOND_DATABASE_URI', None)
        self.process = subprocess.Popen([
                os.path.join(BIN, 'trytond'), '-c',
                self.config_file(extra_config), '-v'],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=ROOT, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    'trytond exited:\n%s' % self.log_tail())
            try:
                requests.post(self.url + '/', json={
                        'id': 0, 'method': 'common.server.version',
                        'params': []}, timeout=2)
                return self
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError('trytond did not answer:\n%s' % self.log_tail())

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.drop_database()

    def log(self):
        with open(self.log_path, 'rb') as fp:
            return fp.read().decode('utf-8', 'replace')

    def log_tail(self, size=4000):
        return self.log()[-size:]

    def session(self, login, password=PASSWORD):
        return Session(self.url, self.database, login, password)

    def create_user(self, login, *groups, password=PASSWORD):
        """Create a user in the groups ('module.xml_id') with the password;
        return its id"""
        with self.transaction():
            pool = Pool()
            User = pool.get('res.user')
            ModelData = pool.get('ir.model.data')
            user, = User.create([{
                        'name': login, 'login': login, 'password': password,
                        'groups': [('add', [ModelData.get_id(*g.split('.'))
                                    for g in groups])],
                        }])
            return user.id


def database_name(suffix):
    "The name of a database beside the tests' one, named after it"
    return '%s_%s' % (
        re.sub(r'\W', '', os.environ.get('DB_NAME', '')) or 'test_imaging',
        suffix)


class RPCTestCase(unittest.TestCase):
    """Tests as users over JSON-RPC: the Orthancs of the class and a real
    trytond started once for the class, a session of each user of USERS"""
    #: The login and the groups (module.xml_id) of each user
    USERS = {}
    #: The suffix of the database's name (see database_name)
    DATABASE = None
    #: trytond's configuration, beside its database and web server
    CONFIG = ''

    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix='%s-' % cls.__name__.lower())
        cls.addClassCleanup(shutil.rmtree, cls.workdir, ignore_errors=True)
        cls.start_orthancs()
        cls.trytond = TrytondServer(cls.workdir, database=(
                database_name(cls.DATABASE) if cls.DATABASE else None))
        cls.addClassCleanup(cls.trytond.stop)
        cls.trytond.start(cls.CONFIG)
        cls.users = {login: cls.trytond.create_user(login, *groups)
            for login, groups in cls.USERS.items()}
        cls.sessions = {login: cls.trytond.session(login)
            for login in cls.USERS}
        cls.setUpData()

    @classmethod
    def start_orthanc(cls, name='orthanc'):
        "Start an Orthanc in the class's folder, stopped after its tests"
        orthanc = OrthancServer(os.path.join(cls.workdir, name))
        cls.addClassCleanup(orthanc.stop)
        orthanc.start()
        return orthanc

    @classmethod
    def start_orthancs(cls):
        "Start the Orthancs of the tests: one, cls.orthanc"
        cls.orthanc = cls.start_orthanc()

    @classmethod
    def setUpData(cls):
        "Prepare the records of the tests (in cls.trytond.transaction())"
