# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Memory of trytond while the Upload DICOM Files wizard sends a big zip.

Prints figures, never asserts on them.  Usage (from the repository root)::

    python -m bench.upload_bench [--megabytes 100] [--member-megabytes 1]
        [--plain] [--json]

Starts a real Orthanc and a trytond server (a SQLite database file with
``health_orthanc`` in a temporary folder, ``DB_CACHE`` used when set), then
sends a zip of DICOM files (random pixels: nothing compresses) through the
wizard over JSON-RPC, as the web client does: one ``execute`` call carries
the file in base64.  trytond's peak RSS (``VmHWM`` reset through
``/proc/PID/clear_refs`` before each call) is printed over its RSS before:

- *floor*: the same JSON-RPC body sent to a method that fails on its
  arguments once trytond parsed them: what any call carrying the file
  costs, before the module runs;
- *upload*: the wizard's ``execute``, which parses the same body, sends
  every member to Orthanc and synchronizes the server;
- *module alone*: ``upload_files`` on the same file held in memory, in
  this process: its own peak allocations (``tracemalloc``) while it sends
  every member again.

See bench/README.md.
"""
import argparse
import base64
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile

import requests

from trytond.modules.health_orthanc.orthanc_client import OrthancClient
from trytond.modules.health_orthanc.tests.dicom_samples import make_instance
from trytond.modules.health_orthanc.tests.orthanc_server import (
    OrthancServer, free_port)
from trytond.modules.health_orthanc.upload_files import (
    count_statuses, upload_files)

MIB = 1024 * 1024
DATABASE = 'bench_upload'
READY_TIMEOUT = 120

SETUP = '''
import sys
from trytond.tests.test_tryton import activate_module
activate_module('health_orthanc')
from trytond.pool import Pool
from trytond.transaction import Transaction
with Transaction().start(%(database)r, 0) as transaction:
    pool = Pool()
    User = pool.get('res.user')
    ModelData = pool.get('ir.model.data')
    Server = pool.get('gnuhealth.orthanc.config')
    admin, = User.search([('login', '=', 'admin')])
    admin.password = %(password)r
    admin.groups += (ModelData.get_id(
            'health_orthanc', 'group_orthanc_admin'),)
    admin.save()
    server, = Server.create([{
                'label': 'Bench', 'domain': %(domain)r, 'user': %(user)r,
                'password': %(orthanc_password)r, 'validated': True}])
    print(server.id)
'''


def status_kb(pid):
    "Return VmRSS and VmHWM of process pid, in KiB"
    values = {}
    with open('/proc/%d/status' % pid) as fp:
        for line in fp:
            if line.startswith(('VmRSS:', 'VmHWM:')):
                key, value = line.split(':')
                values[key] = int(value.split()[0])
    return values['VmRSS'], values['VmHWM']


def reset_peak(pid):
    with open('/proc/%d/clear_refs' % pid, 'w') as fp:
        fp.write('5')


def make_zip(path, megabytes, member_megabytes, plain):
    """Write the upload: a zip of DICOM instances of member_megabytes each
    (or one DICOM file of megabytes with plain); return its size"""
    side = int((member_megabytes * MIB) ** 0.5)
    if plain:
        side = int((megabytes * MIB) ** 0.5)
        data = make_instance(rows=side, columns=side, extra={
                'PixelData': os.urandom(side * side)})
        with open(path, 'wb') as fp:
            fp.write(data)
        return len(data)
    count = max(1, round(megabytes / member_megabytes))
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as archive:
        for index in range(count):
            archive.writestr('study/%04d.dcm' % index, make_instance(
                    rows=side, columns=side, instance_number=index + 1,
                    extra={'PixelData': os.urandom(side * side)}))
    return os.path.getsize(path)


class Trytond:
    "A trytond server on a free port, talking JSON-RPC"

    def __init__(self, workdir, uri):
        self.port = free_port()
        self.config = os.path.join(workdir, 'trytond.conf')
        with open(self.config, 'w') as fp:
            fp.write('[database]\nuri = %s\npath = %s\n\n'
                '[web]\nlisten = 127.0.0.1:%d\n' % (uri, workdir, self.port))
        self.log = open(os.path.join(workdir, 'trytond.log'), 'ab')
        self.process = None
        self.url = 'http://127.0.0.1:%d/%s/' % (self.port, DATABASE)
        self.session = requests.Session()
        self.auth = None
        self.counter = 0

    def start(self):
        self.process = subprocess.Popen([
                os.path.join(os.path.dirname(sys.executable), 'trytond'),
                '-c', self.config, '-d', DATABASE],
            stdout=self.log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                self.session.post('http://127.0.0.1:%d/' % self.port,
                    json={'method': 'common.server.version', 'params': []},
                    timeout=2)
                return self
            except requests.ConnectionError:
                time.sleep(0.5)
        raise SystemExit('trytond did not start')

    def stop(self):
        if self.process is not None:
            self.process.terminate()
            self.process.wait(15)
        self.log.close()

    def body(self, method, params):
        self.counter += 1
        return json.dumps({'id': self.counter, 'method': method,
                'params': params}).encode('utf-8')

    def post(self, body):
        headers = {'Content-Type': 'application/json'}
        if self.auth:
            headers['Authorization'] = self.auth
        response = self.session.post(self.url, data=body, headers=headers,
            timeout=3600)
        return response.json()

    def call(self, method, *params):
        answer = self.post(self.body(method, list(params)))
        if answer.get('error'):
            raise RuntimeError(answer['error'])
        return answer['result']

    def login(self, password):
        user_id, session = self.call('common.db.login', 'admin',
            {'password': password}, 'en')
        self.auth = 'Session ' + base64.b64encode(
            ('admin:%s:%s' % (user_id, session)).encode()).decode()
        self.context = self.call('model.res.user.get_preferences', True, {})

    def measure(self, body):
        "Post body; return (answer, RSS before, peak, seconds) in KiB"
        pid = self.process.pid
        reset_peak(pid)
        before, _ = status_kb(pid)
        start = time.monotonic()
        answer = self.post(body)
        seconds = time.monotonic() - start
        _, peak = status_kb(pid)
        return answer, before, peak, seconds


def file_value(name, data):
    return {'file_name': name,
        'data': {'__class__': 'bytes',
            'base64': base64.b64encode(data).decode('ascii')}}


def upload_body(trytond, server_id, name, data):
    "The execute call of the wizard, as sao sends it"
    session_id, _, _ = trytond.call(
        'wizard.gnuhealth.orthanc.upload.create', trytond.context)
    body = trytond.body('wizard.gnuhealth.orthanc.upload.execute', [
            session_id,
            {'start': {'server': server_id,
                    'files': [file_value(name, data)]}},
            'upload', trytond.context])
    return body


def floor_body(trytond, name, data):
    "A call that carries the same file and fails once parsed"
    return trytond.body('model.res.user.get_preferences', [
            True, [file_value(name, data)], trytond.context])


def measure_module(orthanc, name, data):
    "Peak allocations of upload_files sending data (already in memory)"
    stream = io.BytesIO(data)
    with OrthancClient(orthanc.url, orthanc.user, orthanc.password) as client:
        tracemalloc.start()
        start = time.monotonic()
        results = upload_files(client, [(name, stream)])
        seconds = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {'peak_kib': round(peak / 1024), 'seconds': round(seconds, 2),
        'statuses': count_statuses(results)}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--megabytes', type=int, default=100,
        help='size of the upload in MiB (default 100)')
    parser.add_argument('--member-megabytes', type=float, default=1,
        help='size of each DICOM file of the zip in MiB (default 1)')
    parser.add_argument('--plain', action='store_true',
        help='one DICOM file instead of a zip')
    parser.add_argument('--json', action='store_true',
        help='also print the figures as JSON')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    workdir = tempfile.mkdtemp(prefix='upload-bench-')
    uri = 'sqlite://'
    orthanc = OrthancServer(os.path.join(workdir, 'orthanc'))
    trytond = Trytond(workdir, uri)
    report = {'megabytes': args.megabytes, 'plain': args.plain,
        'member_megabytes': None if args.plain else args.member_megabytes}
    try:
        orthanc.start()
        password = secrets.token_urlsafe(16)
        env = dict(os.environ, TRYTOND_DATABASE_URI=uri, DB_NAME=DATABASE,
            TRYTOND_DATABASE__PATH=workdir)
        setup = subprocess.run([sys.executable, '-c', SETUP % {
                    'database': DATABASE, 'password': password,
                    'domain': orthanc.url, 'user': orthanc.user,
                    'orthanc_password': orthanc.password}],
            env=env, check=True, stdout=subprocess.PIPE, text=True)
        server_id = int(setup.stdout.split()[-1])
        name = 'upload.dcm' if args.plain else 'upload.zip'
        path = os.path.join(workdir, name)
        report['file_bytes'] = make_zip(path, args.megabytes,
            args.member_megabytes, args.plain)
        trytond.start()
        trytond.login(password)
        with open(path, 'rb') as fp:
            data = fp.read()
        # Warm up: every model loaded, a small upload done
        trytond.post(upload_body(trytond, server_id, 'warm.dcm',
                make_instance(seed=1)))

        body = floor_body(trytond, name, data)
        report['body_bytes'] = len(body)
        answer, before, peak, seconds = trytond.measure(body)
        assert answer.get('error'), 'the floor call must fail'
        report['floor'] = {'rss_before_kib': before, 'peak_kib': peak,
            'extra_mib': round((peak - before) / 1024, 1),
            'seconds': round(seconds, 2)}
        del body

        report['module'] = measure_module(orthanc, name, data)

        body = upload_body(trytond, server_id, name, data)
        del data
        answer, before, peak, seconds = trytond.measure(body)
        if answer.get('error'):
            raise SystemExit('upload failed: %s' % (answer['error'],))
        values = answer['result']['view']['defaults']
        report['upload'] = {'rss_before_kib': before, 'peak_kib': peak,
            'extra_mib': round((peak - before) / 1024, 1),
            'seconds': round(seconds, 2),
            'stored': values['stored'],
            'already_stored': values['already_stored'],
            'rejected': values['rejected'], 'failed': values['failed']}
    finally:
        trytond.stop()
        orthanc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print_report(report)
    if args.json:
        print(json.dumps(report, indent=2))


def print_report(report):
    what = ('one DICOM file' if report['plain'] else
        'a zip of %s MiB DICOM files' % report['member_megabytes'])
    print('Upload of %.1f MiB (%s), JSON-RPC body %.1f MiB' % (
            report['file_bytes'] / MIB, what, report['body_bytes'] / MIB))
    for key, label in [('floor', 'floor (parse only)'),
            ('upload', 'wizard upload')]:
        figures = report[key]
        print('  %-20s +%7.1f MiB peak RSS over %6.1f MiB, %6.2f s' % (
                label, figures['extra_mib'],
                figures['rss_before_kib'] / 1024, figures['seconds']))
    upload = report['upload']
    print('  stored %s, already stored %s, rejected %s, failed %s' % (
            upload['stored'], upload['already_stored'], upload['rejected'],
            upload['failed']))
    module = report['module']
    print('  module alone (upload_files): %.1f MiB peak allocations, '
        '%.2f s, %s' % (module['peak_kib'] / 1024, module['seconds'],
            module['statuses']))


if __name__ == '__main__':
    main()
