# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Run the demo: GNU Health with both modules, a local Orthanc with sample
studies, the sao web client, trytond-cron and trytond-worker.

Started by bin/demo, which installs what is needed first.  bin/demo
checks the options (and prints the help) with the system's Python before
installing anything: import here only the standard library.
"""
import argparse
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATABASE = 'health'
ADMIN_EMAIL = 'admin@example.org'
# The AE title of the scanner that the demo's worklist entries are for
MODALITY_AET = 'MODALITY'
PORT = 8000
ORTHANC_PORT = 8042
# The Orthanc that receives the de-identified research copies
RESEARCH_PORT = 8043
# The demo's well-known admin password, only when it listens on loopback
ADMIN_PASSWORD = 'gnuhealth'
ORTHANC_SERVICE_HINT = (
    "Debian's orthanc service? Stop it with: systemctl disable --now orthanc")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog='bin/demo', description=__doc__
        .split('\n\n')[0], epilog="Stop the demo with Ctrl-C, or kill "
        "the PID it prints (SIGTERM).  See doc/installation.rst.")
    parser.add_argument('--reset', action='store_true',
        help="delete the demo database and Orthanc storage, start over")
    parser.add_argument('--postgresql', metavar='URI', nargs='?',
        const='private', default=os.environ.get('DEMO_DATABASE_URI'),
        help="use PostgreSQL instead of the embedded SQLite database: a "
        "private cluster in the state directory, or the server of URI "
        "(postgresql://user@host:port/)")
    parser.add_argument('--host', default='127.0.0.1', metavar='ADDRESS',
        help="the address trytond listens on, and Orthanc lets in (default "
        "%(default)s: this machine only).  To reach a demo on a VM from "
        "another machine give the VM's address, or 0.0.0.0 for all its "
        "addresses: anyone who reaches it can then log in")
    parser.add_argument('--port', type=int,
        help="port of the web client (default %d, or the next free one)"
        % PORT)
    parser.add_argument('--orthanc-port', type=int,
        help="HTTP port of Orthanc (default the one used last time, "
        "%d, or the next free one)" % ORTHANC_PORT)
    parser.add_argument('--research-port', type=int,
        help="HTTP port of the research Orthanc (default the one used last "
        "time, %d, or the next free one)" % RESEARCH_PORT)
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
        self.orthanc = self.research = self.pacs = None
        self.pg_stop = None
        self.port = self.orthanc_port = self.research_port = None

    @property
    def database_key(self):
        """What tells the demo's databases apart in the names of its marker
        files: nothing for SQLite, a hash of --postgresql's value"""
        if not self.args.postgresql:
            return ''
        return '-pg-' + hashlib.sha1(
            self.args.postgresql.encode()).hexdigest()[:8]

    @property
    def remote(self):
        "Whether the demo answers other machines (--host)"
        return not is_loopback(self.args.host)

    @property
    def public_host(self):
        "The name of this machine in the URLs printed"
        host = self.args.host
        if host in ('0.0.0.0', '::'):
            return socket.getfqdn()
        return '[%s]' % host if ':' in host else host

    @property
    def orthanc_public_url(self):
        "Orthanc's URL for the browsers of other machines (--host)"
        if self.remote:
            return 'http://%s:%s' % (self.public_host, self.orthanc.http_port)

    @property
    def research_public_url(self):
        if self.remote:
            return 'http://%s:%s' % (
                self.public_host, self.research.http_port)

    def choose_ports(self):
        "The ports asked for, or the usual ones, or the next free ones"
        recorded = self.recorded_orthanc()
        last = (recorded.get('domain') or '').rsplit(':', 1)[-1]
        last_research = (recorded.get('research') or '').rsplit(':', 1)[-1]
        self.port = choose_port(
            self.args.host, self.args.port, PORT, '--port')
        # Orthanc listens on every address; RemoteAccessAllowed refuses
        # other machines unless --host
        self.orthanc_port = choose_port(
            '0.0.0.0', self.args.orthanc_port,
            int(last) if last.isdigit() else ORTHANC_PORT,
            '--orthanc-port', ORTHANC_SERVICE_HINT)
        self.research_port = choose_port(
            '0.0.0.0', self.args.research_port,
            int(last_research) if last_research.isdigit() else RESEARCH_PORT,
            '--research-port')
        if self.research_port == self.orthanc_port:
            self.research_port = choose_port('0.0.0.0', None,
                self.orthanc_port + 1, '--research-port')

    @property
    def worklist_folder(self):
        return self.path('orthanc', 'worklists')

    def path(self, *names):
        return os.path.join(self.state, *names)

    def secrets(self):
        "The demo passwords, made once and kept"
        path = self.path('secrets.json')
        values = {}
        if os.path.exists(path):
            with open(path) as fp:
                values = json.load(fp)
            if 'research' in values:
                return values
        values.setdefault('admin', secrets.token_urlsafe(9) if self.remote
            else ADMIN_PASSWORD)
        values.setdefault('orthanc', secrets.token_urlsafe(12))
        # Added with the research Orthanc: kept in an older state too
        values['research'] = secrets.token_urlsafe(12)
        with open(path, 'w') as fp:
            json.dump(values, fp)
        os.chmod(path, 0o600)
        return values

    def start_postgresql(self):
        "Start the private PostgreSQL cluster; return its URI"
        script = ('set -e; . "$1/bin/lib.sh"; start_postgresql "$2" >&2; '
            'echo "$PG_URI"; printf "%s\\n" "${PG_STOP[@]}"')
        try:
            output = subprocess.run(
                ['bash', '-c', script, 'demo', ROOT, self.path('pg')],
                check=True, stdout=subprocess.PIPE, text=True
                ).stdout.split('\n')
        except subprocess.CalledProcessError:
            raise SystemExit("the private PostgreSQL cluster did not start "
                "(see above)")
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
                'listen = %s:%s' % (
                    '[%s]' % self.args.host if ':' in self.args.host
                    else self.args.host, self.port),
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
        from trytond.modules.health_orthanc.tests.orthanc_server import (
            OrthancMissing, OrthancServer, OrthancStartError, plugin_path)
        self.orthanc = OrthancServer(
            self.path('orthanc'), user='orthanc', password=password,
            port=self.orthanc_port,
            plugins=[plugin_path('DicomWeb'), plugin_path('WebViewer'),
                plugin_path('ModalityWorklists')],
            dicom=True, aet='GNUHEALTH', extra_config={
                'Name': 'GNU Health Demo',
                # Authentication is always on (OrthancServer): other
                # machines get in only with --host
                'RemoteAccessAllowed': self.remote,
                # GNU Health writes the worklist entries of the requested
                # tests there; Orthanc answers the modalities' queries
                'Worklists': {
                    'Enable': True, 'Database': self.worklist_folder},
                # Orthanc answers only the modalities it knows, from
                # their address; its DICOM port listens on every address
                'DicomModalities': {
                    'modality': [MODALITY_AET, '127.0.0.1', 11112]},
                'DicomCheckModalityHost': True,
                'DicomAlwaysAllowStore': False,
                })
        os.makedirs(self.worklist_folder, exist_ok=True)
        try:
            self.orthanc.start()
        except OrthancMissing as error:
            raise SystemExit(str(error))
        except OrthancStartError:
            # Orthanc's log lines of errors (E) and fatal errors (F)
            errors = [line for line in self.orthanc.log_tail(200).split('\n')
                if line[:1] in 'EF'][-5:]
            hint = ''
            if any('already in use' in line for line in errors):
                hint = ("%s; or choose another port with --orthanc-port "
                    "N; " % ORTHANC_SERVICE_HINT)
            raise SystemExit("Orthanc did not start on port %s:\n%s\n"
                "(%sits log: %s)" % (self.orthanc_port, '\n'.join(errors),
                    hint, self.orthanc.log_path))
        count = self.orthanc.request('GET', '/statistics').json()[
            'CountStudies']
        if not count:
            from .data import upload_samples
            log("loading the sample studies into Orthanc")
            upload_samples(self.orthanc)
            count = self.orthanc.request('GET', '/statistics').json()[
                'CountStudies']
        return count

    def start_research_orthanc(self, password):
        "The research Orthanc: it receives the de-identified copies"
        from trytond.modules.health_orthanc.tests.orthanc_server import (
            OrthancServer, OrthancStartError, plugin_path)
        self.research = OrthancServer(
            self.path('orthanc-research'), user='orthanc', password=password,
            port=self.research_port, plugins=[plugin_path('WebViewer')],
            extra_config={
                'Name': 'GNU Health Demo Research',
                'RemoteAccessAllowed': self.remote,
                })
        try:
            self.research.start()
        except OrthancStartError:
            raise SystemExit("the research Orthanc did not start on port "
                "%s: choose another port with --research-port N (its log: "
                "%s)" % (self.research_port, self.research.log_path))

    def start_pacs(self):
        """Start the second Orthanc, the hospital PACS holding the priors;
        its DICOM port is kept from one run to the next when free"""
        from trytond.modules.health_orthanc.tests.orthanc_server import (
            OrthancStartError, free_port)
        from trytond.modules.health_orthanc.tests.pacs_pair import start_pacs
        port = self.recorded_pacs().get('dicom_port')
        if not port or not port_free('0.0.0.0', port):
            port = free_port()
        try:
            # It knows our Orthanc (AE title GNUHEALTH) to send it studies
            self.pacs = start_pacs(self.path('pacs'), self.orthanc.dicom_port,
                port=port, config={'Name': 'Hospital PACS (demo)'})
        except OrthancStartError:
            raise SystemExit("the PACS Orthanc did not start (its log: %s)"
                % os.path.join(self.path('pacs'), 'orthanc.log'))
        count = self.pacs.request('GET', '/statistics').json()[
            'CountStudies']
        if not count:
            from .data import upload_priors
            log("loading the prior studies into the PACS")
            upload_priors(self.pacs)

    def recorded_pacs(self):
        try:
            with open(self.path(
                        'db', 'pacs-node%s.json' % self.database_key)) as fp:
                return json.load(fp)
        except OSError:
            return {}

    def record_pacs(self):
        with open(self.path('db', 'pacs-node%s.json' % self.database_key),
                'w') as fp:
            json.dump({'dicom_port': self.pacs.dicom_port_used}, fp)

    def update_pacs_node(self):
        "Declare the PACS node, or point it at the PACS's new port"
        from .data import pacs_node
        if self.recorded_pacs().get('dicom_port') == (
                self.pacs.dicom_port_used):
            return
        log("declaring the hospital PACS as a DICOM node")
        self.connect()
        pacs_node(self.pacs.dicom_port_used)
        self.record_pacs()

    def env(self):
        env = dict(os.environ)
        env['TRYTOND_CONFIG'] = self.path('trytond.conf')
        return env

    def bin(self, name):
        return os.path.join(os.path.dirname(sys.executable), name)

    def create_database(self, admin_password):
        marker = self.path('db', '.activated' + self.database_key)
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
            status = subprocess.run([
                    self.bin('trytond-admin'), '-d', DATABASE,
                    '--email', ADMIN_EMAIL,
                    '-u', 'health_imaging', 'health_orthanc',
                    '--activate-dependencies'],
                env=env, stdout=logfile, stderr=subprocess.STDOUT
                ).returncode
        if status:
            raise SystemExit("trytond-admin could not create the database:\n"
                "%s" % self.log_tail('trytond-admin'))
        os.remove(passfile)
        open(marker, 'w').close()
        return True

    def populate(self):
        from .data import populate
        marker = self.path('db', '.populated' + self.database_key)
        if os.path.exists(marker):
            return None
        log("adding the Orthanc server, patients and imaging orders")
        self.connect()
        summary = populate(
            self.orthanc, self.worklist_folder, MODALITY_AET,
            public_url=self.orthanc_public_url, research=self.research,
            research_public_url=self.research_public_url,
            pacs_port=self.pacs.dicom_port_used)
        self.record_orthanc()
        self.record_pacs()
        with open(marker, 'w') as fp:
            json.dump(summary, fp)
        return summary

    def connect(self):
        "Connect proteus to the database, quietly"
        import trytond.report  # noqa: F401
        from proteus import config as pconfig

        # trytond.report resets the warning filters on import: only then
        # hide what passlib's import of crypt says on Python 3.11
        warnings.filterwarnings(
            'ignore', "'crypt' is deprecated", DeprecationWarning)
        pconfig.set_trytond(
            DATABASE, config_file=self.path('trytond.conf'))

    def recorded_orthanc(self):
        "The URLs of Orthanc that the GNU Health server record holds"
        try:
            with open(self.path(
                        'db', 'orthanc-server%s.json' % self.database_key)
                    ) as fp:
                return json.load(fp)
        except OSError:
            return {}

    def record_orthanc(self):
        with open(self.path(
                    'db', 'orthanc-server%s.json' % self.database_key),
                'w') as fp:
            json.dump(self.orthanc_urls(), fp)

    def orthanc_urls(self):
        return {
            'domain': self.orthanc.url,
            'public_url': self.orthanc_public_url,
            'research': self.research.url,
            'research_public_url': self.research_public_url,
            }

    def update_orthanc_urls(self):
        "Point the server record at Orthanc when its port or host changed"
        from .data import update_server
        recorded = self.recorded_orthanc()
        if recorded == self.orthanc_urls():
            return
        log("Orthanc moved: updating its servers in GNU Health")
        self.connect()
        update_server(self.orthanc.url, self.orthanc_public_url,
            self.research, self.research_public_url)
        self.record_orthanc()

    def logfile(self, name):
        os.makedirs(self.path('logs'), exist_ok=True)
        return open(self.path('logs', name + '.log'), 'ab')

    def log_tail(self, name, lines=15):
        "The end of a log, without the HTTP access lines, and its path"
        path = self.path('logs', name + '.log')
        try:
            with open(path, errors='replace') as fp:
                tail = [line.rstrip('\n') for line in fp
                    if ' INFO werkzeug ' not in line][-lines:]
        except OSError:
            tail = []
        return '\n'.join(tail + ['(whole log: %s)' % path])

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
        host = self.args.host
        if host in ('0.0.0.0', '::'):
            host = '127.0.0.1' if host == '0.0.0.0' else '::1'
        url = 'http://%s:%s/' % ('[%s]' % host if ':' in host else host,
            self.port)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for name, process in self.processes:
                if process.poll() is not None:
                    raise SystemExit("%s stopped:\n%s" % (
                            name, self.log_tail(name)))
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return 'http://%s:%s/' % (self.public_host, self.port)
            except OSError:
                time.sleep(0.3)
        raise SystemExit("trytond did not answer on %s:\n%s" % (
                url, self.log_tail('trytond')))

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
        for orthanc in [self.pacs, self.orthanc, self.research]:
            if orthanc:
                orthanc.stop()
        if self.pg_stop:
            subprocess.run(self.pg_stop, stdout=subprocess.DEVNULL)
            self.pg_stop = None

    def reset(self):
        log("--reset: deleting %s" % self.state)
        pg = self.path('pg')
        if os.path.islink(pg):
            # root's cluster, where the postgres user can reach it
            shutil.rmtree(os.path.realpath(pg), ignore_errors=True)
        shutil.rmtree(self.state)

    def run(self):
        if self.args.reset and os.path.isdir(self.state):
            self.reset()
        os.makedirs(self.state, exist_ok=True)
        self.choose_ports()
        passwords = self.secrets()
        started = time.monotonic()
        try:
            self.write_config()
            studies = self.start_orthanc(passwords['orthanc'])
            self.start_research_orthanc(passwords['research'])
            self.start_pacs()
            self.create_database(passwords['admin'])
            summary = self.populate()
            if summary is None:
                self.update_orthanc_urls()
                self.update_pacs_node()
            url = self.start_servers()
            self.print_summary(url, passwords, studies, summary,
                time.monotonic() - started)
            if self.args.no_wait:
                return
            signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
            while (self.orthanc.running
                    and all(p.poll() is None for _, p in self.processes)):
                time.sleep(1)
            for name, process in self.processes:
                if process.poll() is not None:
                    log("%s stopped:\n%s" % (name, self.log_tail(name)))
            if not self.orthanc.running:
                log("Orthanc stopped:\n%s" % self.orthanc.log_tail(10))
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
            'password: %s' % (self.orthanc_public_url or self.orthanc.url,
                passwords['orthanc']),
            '  Research:    %s/app/explorer.html   user: orthanc   '
            'password: %s (the de-identified copies of project LUNG)' % (
                self.research_public_url or self.research.url,
                passwords['research']),
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
            '  PACS:        a second Orthanc with prior studies of the '
            'patients, the DICOM node HOSPITAL-PACS (Query PACS); %s/app/'
            'explorer.html   user: orthanc   password: %s' % (
                self.pacs.url, self.pacs.password),
            '  Files:       %s (logs in logs/)' % self.state,
            ]
        if self.remote:
            lines.append('  Reachable:   from other machines over plain '
                'HTTP (--host %s): anyone who reaches them can try to log '
                'in; for a trusted network only' % self.args.host)
            if passwords['admin'] == ADMIN_PASSWORD:
                lines.append('  Warning:     the admin password is the '
                    "demo's usual one: change it in the web client "
                    '(Preferences), or start over with --reset --host')
        lines += [
            '',
            '  Stop with Ctrl-C (or: kill %s).  Run again to reuse this '
            'data; bin/demo --reset starts over.' % os.getpid(),
            '',
            ]
        print('\n'.join(lines), flush=True)


def log(message):
    print('[demo] %s' % message, flush=True)


def is_loopback(host):
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def port_free(host, port):
    "Whether a server can listen on host:port"
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # as the servers do: a closed connection's TIME_WAIT does not count
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(host, asked, usual, option, hint=None):
    """The port asked for on the command line, which must be free;
    otherwise the usual one or the next free one after it"""
    hint = ' (%s)' % hint if hint else ''
    if asked:
        if not port_free(host, asked):
            raise SystemExit("port %s is in use%s: free it, or choose "
                "another one with %s N" % (asked, hint, option))
        return asked
    for port in range(usual, usual + 100):
        if port_free(host, port):
            if port != usual:
                log("port %s is in use%s: using %s instead (or choose one "
                    "with %s N)" % (usual, hint, port, option))
            return port
    raise SystemExit("ports %s to %s are in use: choose a free one with "
        "%s N" % (usual, usual + 99, option))


def main(argv=None):
    Demo(parse_args(argv)).run()


if __name__ == '__main__':
    main()
