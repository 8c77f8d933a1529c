# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""End-to-end test in a real browser: the demo served to headless Chromium.

Starts the demo (demo/run.py: a real Orthanc with the sample studies, a
SQLite GNU Health database with both modules, trytond serving sao and
trytond-cron) on free ports in a temporary state directory, then runs
tests/browser/e2e.mjs (playwright-core driving /usr/bin/chromium, see that
file for the steps) against it.

Needs, besides what the other tests need:

- Chromium:            apt-get install chromium
- node (18 or newer) and npm: apt-get install nodejs npm
- playwright-core:     npm ci --prefix tests/browser
- sao 7.0:             bin/install-sao .var/sao

Environment: E2E_CHROMIUM (default /usr/bin/chromium), SAO_DIR (default
.var/sao), E2E_SCREENSHOTS (default screenshots/ at the root).
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from trytond.modules.health_orthanc.tests.orthanc_server import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROWSER_DIR = os.path.join(ROOT, 'tests', 'browser')
E2E = os.path.join(BROWSER_DIR, 'e2e.mjs')
CHROMIUM = os.environ.get('E2E_CHROMIUM', '/usr/bin/chromium')
SAO_DIR = os.environ.get('SAO_DIR', os.path.join(ROOT, '.var', 'sao'))
SCREENSHOTS = os.environ.get(
    'E2E_SCREENSHOTS', os.path.join(ROOT, 'screenshots'))

# The first start creates the database with GNU Health (about a minute or
# two); the browser run itself takes well under a minute.
DEMO_TIMEOUT = 300
E2E_TIMEOUT = 240


def node_minimum():
    "The oldest Node.js major version of tests/browser/package.json"
    with open(os.path.join(BROWSER_DIR, 'package.json')) as fp:
        engine = json.load(fp)['engines']['node']
    return int(re.fullmatch(r'>=\s*(\d+)(\.\d+)*', engine).group(1))


def node_major():
    "The major version of the node on PATH, None without one"
    if not shutil.which('node'):
        return None
    version = subprocess.run(['node', '-p', 'process.versions.node'],
        stdout=subprocess.PIPE, text=True).stdout
    return int(version.split('.')[0])


def check_requirements():
    "Fail, naming the install command, when something is missing"
    missing = []
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append('Chromium (%s): apt-get install chromium' % CHROMIUM)
    major, minimum = node_major(), node_minimum()
    if major is None:
        missing.append('node: apt-get install nodejs npm')
    elif major < minimum:
        missing.append('Node.js %s or newer for playwright-core (node on '
            'PATH is %s): apt-get install nodejs npm (Debian 12 has 18)' % (
                minimum, major))
    if not os.path.isfile(os.path.join(
                BROWSER_DIR, 'node_modules', 'playwright-core',
                'package.json')):
        missing.append(
            'playwright-core (tests/browser/node_modules): '
            'npm ci --prefix tests/browser')
    if not os.path.isfile(os.path.join(SAO_DIR, 'index.html')):
        where = SAO_DIR
        if os.path.abspath(SAO_DIR).startswith(ROOT + os.sep):
            where = os.path.relpath(SAO_DIR, ROOT)
        missing.append('the sao web client (%s): bin/install-sao %s' % (
                SAO_DIR, where))
    if missing:
        pytest.fail(
            'the browser test needs:\n  ' + '\n  '.join(missing),
            pytrace=False)


class Demo:
    "The demo started as a subprocess, its output kept"

    def __init__(self, state, port, orthanc_port):
        self.state = state
        self.url = None
        self.lines = []
        self.ready = threading.Event()
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        env.pop('TRYTOND_CONFIG', None)
        env.pop('DEMO_DATABASE_URI', None)  # always the SQLite demo
        self.process = subprocess.Popen([
                sys.executable, '-m', 'demo.run',
                '--state', state, '--sao', SAO_DIR,
                '--port', str(port), '--orthanc-port', str(orthanc_port)],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=self._child_setup)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    @staticmethod
    def _child_setup():
        # Its own process group, to clean up after a hang; and the default
        # SIGINT even when ours is ignored (a background job of a shell), so
        # that Python turns Ctrl-C into KeyboardInterrupt in the demo
        os.setsid()
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line.rstrip('\n'))
            if 'Web client:' in line:
                self.url = line.split('Web client:', 1)[1].strip()
                self.ready.set()
        self.ready.set()

    def output(self):
        return '\n'.join(self.lines)

    def wait_ready(self, timeout):
        if not self.ready.wait(timeout) or not self.url:
            pytest.fail(
                'the demo did not print its web client URL within %s s '
                '(exit code %s); its output:\n%s\n%s' % (
                    timeout, self.process.poll(), self.output(),
                    self.log_tail()), pytrace=False)
        return self.url

    def log_tail(self, lines=40):
        "The end of the server logs, without the HTTP access lines"
        parts = []
        for name in ['trytond', 'trytond-cron']:
            path = os.path.join(self.state, 'logs', name + '.log')
            try:
                with open(path, errors='replace') as fp:
                    tail = [line for line in fp
                        if ' INFO werkzeug ' not in line][-lines:]
            except OSError:
                tail = ['(missing)\n']
            parts.append('--- %s (without access lines) ---\n%s' % (
                    path, ''.join(tail)))
        return '\n'.join(parts)

    def stop(self):
        """Ctrl-C, as a user would; then SIGTERM (also a clean stop of the
        demo), and as a last resort kill its process group"""
        for sig, timeout in [(signal.SIGINT, 60), (signal.SIGTERM, 30)]:
            if self.process.poll() is not None:
                break
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.reader.join(10)


def test_browser(tmp_path):
    check_requirements()
    state = str(tmp_path / 'state')
    demo = Demo(state, free_port(), free_port())
    try:
        url = demo.wait_ready(DEMO_TIMEOUT)
        with open(os.path.join(state, 'secrets.json')) as fp:
            password = json.load(fp)['admin']
        env = dict(os.environ,
            E2E_URL=url, E2E_LOGIN='admin', E2E_PASSWORD=password,
            E2E_DATABASE='health', E2E_SCREENSHOTS=SCREENSHOTS,
            E2E_CHROMIUM=CHROMIUM, E2E_TIMEOUT=str(E2E_TIMEOUT - 20))
        started = time.monotonic()
        try:
            result = subprocess.run(
                ['node', E2E], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                timeout=E2E_TIMEOUT)
        except subprocess.TimeoutExpired as error:
            pytest.fail('node %s did not finish in %s s:\n%s' % (
                    E2E, E2E_TIMEOUT, error.output or ''), pytrace=False)
        print(result.stdout)
        print('browser run: %.0f s' % (time.monotonic() - started))
        if result.returncode != 0:
            pytest.fail(
                'the browser test failed (exit code %s); screenshots in %s, '
                'demo files in %s\n%s\n%s' % (
                    result.returncode, SCREENSHOTS, state, result.stdout,
                    demo.log_tail()), pytrace=False)
    finally:
        demo.stop()
