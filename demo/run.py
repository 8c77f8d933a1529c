# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Run the demo: GNU Health with both modules, a local Orthanc with sample
studies, the sao web client, trytond-cron and trytond-worker.

Started by bin/demo, which installs what is needed first.
"""
import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

from trytond.modules.health_orthanc.tests.orthanc_server import (
    OrthancServer, plugin_path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATABASE = 'health'
ADMIN_EMAIL = 'admin@example.org'
# The AE title of the scanner that the demo's worklist entries are for
MODALITY_AET = 'MODALITY'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--reset', action='store_true',
        help="delete the demo database and Orthanc storage, start over")
    parser.add_argument('--postgresql', metavar='URI', nargs='?',
        const='private', default=os.environ.get('DEMO_DATABASE_URI'),
        help="use PostgreSQL instead of the embedded SQLite database: a "
        "private cluster in the state directory, or the server of URI "
        "(postgresql://user@host:port/)")
    parser.add_argument('--port', type=int, default=8000,
        help="port of the web client (default %(default)s)")
    parser.add_argument('--orthanc-port', type=int, default=8042,
        help="port of Orthanc (default %(default)s)")
    parser.add_argument('--state', default=os.path.join(ROOT, '.var', 'demo'),
        help="where the demo keeps its files (default %(default)s)")
    parser.add_argument('--sao', default=os.path.join(ROOT, '.var', 'sao'),
        help="the installed sao directory (default %(default)s)")
    parser.add_argument('--no-wait', action='store_true',
        help="set everything up, start the servers, print the summary "
        "and stop them again (for tests)")
    return parser.parse_args(argv)


class Demo:

    def __init__(self, args):
        self.args = args
        self.state = os.path.abspath(args.state)
        self.processes = []
        self.orthanc = None
        self.pg_stop = None

    @property
    def worklist_folder(self):
        return self.path('orthanc', 'worklists')

    def path(self, *names):
        return os.path.join(self.state, *names)

    def secrets(self):
        "The demo passwords, made once and kept"
        path = self.path('secrets.json')
        if os.path.exists(path):
            with open(path) as fp:
                return json.load(fp)
        values = {
            'admin': 'gnuhealth',
            'orthanc': secrets.token_urlsafe(12),
            }
        with open(path, 'w') as fp:
            json.dump(values, fp)
        os.chmod(path, 0o600)
        return values

    def start_postgresql(self):
        "Start the private PostgreSQL cluster; return its URI"
        script = ('. "$1/bin/lib.sh"; start_postgresql "$2" >&2; '
            'echo "$PG_URI"; printf "%s\\n" "${PG_STOP[@]}"')
        output = subprocess.run(
            ['bash', '-c', script, '_', ROOT, self.path('pg')],
            check=True, stdout=subprocess.PIPE, text=True).stdout.split('\n')
        self.pg_stop = [a for a in output[1:] if a]
        return output[0]

    def create_pg_database(self, uri):
        import psycopg2
        connection = psycopg2.connect(uri + 'postgres')
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(
                'SELECT 1 FROM pg_database WHERE datname = %s', (DATABASE,))
            if not cursor.fetchone():
                cursor.execute('CREATE DATABASE "%s"' % DATABASE)
        connection.close()

    def write_config(self):
        uri = self.args.postgresql or 'sqlite://'
        if uri == 'private':
            uri = self.start_postgresql()
        if uri.startswith('postgresql'):
            self.create_pg_database(uri)
        config = '\n'.join([
                '[database]',
                'uri = %s' % uri,
                'path = %s' % self.path('db'),
                '',
                '[web]',
                'listen = 127.0.0.1:%s' % self.args.port,
                'root = %s' % self.args.sao,
                '',
                '[queue]',
                # trytond-worker needs PostgreSQL's LISTEN/NOTIFY: on
                # SQLite queued tasks run in trytond after each commit
                'worker = %s' % bool(self.args.postgresql),
                '',
                '[session]',
                'timeout = 36000',
                '',
                ])
        with open(self.path('trytond.conf'), 'w') as fp:
            fp.write(config)
        return self.path('trytond.conf')

    def start_orthanc(self, password):
        self.orthanc = OrthancServer(
            self.path('orthanc'), user='orthanc', password=password,
            port=self.args.orthanc_port,
            plugins=[plugin_path('DicomWeb'), plugin_path('WebViewer'),
                plugin_path('ModalityWorklists')],
            dicom=True, aet='GNUHEALTH', extra_config={
                'Name': 'GNU Health Demo',
                # GNU Health writes the worklist entries of the requested
                # tests there; Orthanc answers the modalities' queries
                'Worklists': {
                    'Enable': True, 'Database': self.worklist_folder},
                # Orthanc answers only the modalities it knows
                'DicomModalities': {
                    'modality': [MODALITY_AET, '127.0.0.1', 11112]},
                })
        os.makedirs(self.worklist_folder, exist_ok=True)
        self.orthanc.start()
        count = self.orthanc.request('GET', '/statistics').json()[
            'CountStudies']
        if not count:
            from .data import upload_samples
            log("loading the sample studies into Orthanc")
            upload_samples(self.orthanc)
            count = self.orthanc.request('GET', '/statistics').json()[
                'CountStudies']
        return count

    def env(self):
        env = dict(os.environ)
        env['TRYTOND_CONFIG'] = self.path('trytond.conf')
        return env

    def bin(self, name):
        return os.path.join(os.path.dirname(sys.executable), name)

    def create_database(self, admin_password):
        marker = self.path('db', '.activated')
        if os.path.exists(marker):
            return False
        os.makedirs(self.path('db'), exist_ok=True)
        if not self.args.postgresql:
            # The SQLite backend needs the file to exist
            open(self.path('db', DATABASE + '.sqlite'), 'a').close()
        passfile = self.path('adminpass')
        with open(passfile, 'w') as fp:
            fp.write(admin_password)
        env = self.env()
        env['TRYTONPASSFILE'] = passfile
        log("creating the database with GNU Health, health_imaging and "
            "health_orthanc (takes a minute)")
        with self.logfile('trytond-admin') as logfile:
            subprocess.run([
                    self.bin('trytond-admin'), '-d', DATABASE,
                    '--email', ADMIN_EMAIL,
                    '-u', 'health_imaging', 'health_orthanc',
                    '--activate-dependencies'],
                env=env, check=True, stdout=logfile,
                stderr=subprocess.STDOUT)
        os.remove(passfile)
        open(marker, 'w').close()
        return True

    def populate(self):
        from proteus import config as pconfig

        from .data import populate
        marker = self.path('db', '.populated')
        if os.path.exists(marker):
            return None
        log("adding the Orthanc server, patients and imaging orders")
        pconfig.set_trytond(
            DATABASE, config_file=self.path('trytond.conf'))
        summary = populate(
            self.orthanc, self.worklist_folder, MODALITY_AET)
        with open(marker, 'w') as fp:
            json.dump(summary, fp)
        return summary

    def logfile(self, name):
        os.makedirs(self.path('logs'), exist_ok=True)
        return open(self.path('logs', name + '.log'), 'ab')

    def spawn(self, name, *args):
        with self.logfile(name) as logfile:
            process = subprocess.Popen(
                [self.bin(name), *args], env=self.env(),
                stdout=logfile, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        self.processes.append((name, process))
        return process

    def spawn_python(self, name, *args):
        with self.logfile(name) as logfile:
            process = subprocess.Popen(
                [sys.executable, *args], env=self.env(), cwd=ROOT,
                stdout=logfile, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        self.processes.append((name, process))
        return process

    def start_servers(self):
        self.spawn('trytond', '-d', DATABASE)
        if self.args.postgresql:
            self.spawn('trytond-cron', '-v', '-d', DATABASE)
            self.spawn('trytond-worker', '-v', '-d', DATABASE)
        else:
            # trytond-cron runs every job inside a transaction that keeps
            # the write lock of the jobs before: on SQLite a job that writes
            # after another waits and fails.  Run each in its own.
            self.spawn_python('demo-cron', '-m', 'demo.cron', DATABASE)
        url = 'http://127.0.0.1:%s/' % self.args.port
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for name, process in self.processes:
                if process.poll() is not None:
                    raise SystemExit(
                        "%s stopped; see %s" % (
                            name, self.path('logs', name + '.log')))
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return url
            except OSError:
                time.sleep(0.3)
        raise SystemExit("trytond did not answer on %s" % url)

    def stop(self):
        for name, process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for name, process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()
        if self.orthanc:
            self.orthanc.stop()
        if self.pg_stop:
            subprocess.run(self.pg_stop, stdout=subprocess.DEVNULL)
            self.pg_stop = None

    def run(self):
        if self.args.reset and os.path.isdir(self.state):
            log("--reset: deleting %s" % self.state)
            shutil.rmtree(self.state)
        os.makedirs(self.state, exist_ok=True)
        passwords = self.secrets()
        started = time.monotonic()
        try:
            self.write_config()
            studies = self.start_orthanc(passwords['orthanc'])
            self.create_database(passwords['admin'])
            summary = self.populate()
            url = self.start_servers()
            self.print_summary(url, passwords, studies, summary,
                time.monotonic() - started)
            if self.args.no_wait:
                return
            signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
            while all(p.poll() is None for _, p in self.processes):
                time.sleep(1)
            log("a server stopped; see the logs in %s" % self.path('logs'))
        except KeyboardInterrupt:
            pass
        finally:
            log("stopping trytond, cron, worker and Orthanc")
            self.stop()

    def print_summary(self, url, passwords, studies, summary, seconds):
        lines = [
            '',
            'GNU Health imaging demo is running (ready in %.0f s)' % seconds,
            '',
            '  Web client:  %s' % url,
            '  Database:    %s   login: admin   password: %s' % (
                DATABASE, passwords['admin']),
            '  Orthanc:     %s/app/explorer.html   user: orthanc   '
            'password: %s' % (self.orthanc.url, passwords['orthanc']),
            '  Loaded:      %s sample studies in Orthanc, synced into GNU '
            'Health; patients linked by PUID and MRN; imaging orders in '
            'draft, requested and done, a result with a study attached' % (
                studies),
            '  Running:     trytond, %s (Orthanc sync every 15 minutes)%s' % (
                ('trytond-cron', ', trytond-worker') if self.args.postgresql
                else ('the demo scheduler (demo/cron.py)',
                    '; on SQLite queued tasks run in trytond')),
            '  Worklist:    findscu -W -aet %s -aec %s -k PatientID '
            '-k AccessionNumber -k PatientName 127.0.0.1 %s' % (
                MODALITY_AET, self.orthanc.aet, self.orthanc.dicom_port),
            '  Files:       %s (logs in logs/)' % self.state,
            '',
            '  Stop with Ctrl-C.  Run again to reuse this data; '
            'bin/demo --reset starts over.',
            '',
            ]
        print('\n'.join(lines), flush=True)


def log(message):
    print('[demo] %s' % message, flush=True)


def main(argv=None):
    Demo(parse_args(argv)).run()


if __name__ == '__main__':
    main()
