"""Start a real, throw-away Orthanc server for tests and demonstrations.

The server listens on 127.0.0.1 only, on a free port, with its own JSON
configuration, storage and log in a given directory.  HTTP authentication
is always enabled explicitly, so tests exercise the same code paths as a
production PACS.

Example
-------
>>> with OrthancServer('/tmp/orthanc-test') as server:  # doctest: +SKIP
...     server.upload(dicom_bytes)
...     print(server.url)
"""
import atexit
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from typing import Any

import requests

__all__ = ['OrthancServer', 'OrthancMissing', 'OrthancStartError',
    'find_orthanc', 'free_port']

DEBIAN_PACKAGE = 'orthanc'
DEFAULT_BIN = '/usr/sbin/Orthanc'
PLUGIN_DIR = '/usr/share/orthanc/plugins'
START_TIMEOUT = 20


class OrthancMissing(RuntimeError):
    "The Orthanc executable cannot be found."


class OrthancStartError(RuntimeError):
    "Orthanc did not start or did not answer in time."


def find_orthanc() -> str:
    """Return the path of the Orthanc executable.

    The environment variable ``ORTHANC_BIN`` wins over ``/usr/sbin/Orthanc``
    and over ``Orthanc`` found on ``PATH``.

    Raises
    ------
    OrthancMissing
        With the name of the Debian package to install.
    """
    candidates = []
    if os.environ.get('ORTHANC_BIN'):
        candidates.append(os.environ['ORTHANC_BIN'])
    else:
        candidates.append(DEFAULT_BIN)
        found = shutil.which('Orthanc')
        if found:
            candidates.append(found)
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise OrthancMissing(
        'Orthanc executable not found (tried %s). Install it with '
        '"apt-get install %s" (Debian/Ubuntu) or set ORTHANC_BIN to its '
        'path.' % (', '.join(candidates), DEBIAN_PACKAGE))


def free_port() -> int:
    "Return a TCP port that is currently free on 127.0.0.1."
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _die_with_parent():
    "In the child: get SIGTERM when the parent dies (Linux only)."
    try:
        import ctypes
        import signal
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def plugin_path(name: str) -> str:
    """Return the path of a Debian-packaged plugin, e.g. ``'DicomWeb'``.

    ``name`` may be a short name (``DicomWeb`` → ``libOrthancDicomWeb.so``)
    or a file name.
    """
    candidates = [name, 'libOrthanc%s.so' % name, 'lib%s.so' % name]
    for candidate in candidates:
        path = os.path.join(PLUGIN_DIR, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError('Orthanc plugin %r not found in %s'
        % (name, PLUGIN_DIR))


class OrthancServer:
    """A real Orthanc process bound to 127.0.0.1.

    Parameters
    ----------
    workdir : str
        Directory for the configuration, the storage and the log.  It is
        created if missing; it is not removed by :meth:`stop`.
    user, password : str
        The user registered in ``RegisteredUsers``.  A random password is
        generated when none is given.
    plugins : iterable of str
        Paths of plugins (shared libraries) to load.
    dicom : bool
        Enable the DICOM server on a free port (AET ``ORTHANCTEST``).
    extra_config : mapping, optional
        Merged over the generated configuration (shallow merge).
    users : mapping, optional
        More users ``{name: password}`` to register.
    port : int, optional
        A fixed HTTP port (default: a free one).
    """

    def __init__(self, workdir: str, user: str = 'orthanc',
            password: str | None = None, plugins: Iterable[str] = (),
            dicom: bool = False, extra_config: Mapping[str, Any] | None = None,
            users: Mapping[str, str] | None = None,
            stable_age: int = 1, aet: str = 'ORTHANCTEST',
            port: int | None = None):
        self.workdir = os.path.abspath(workdir)
        self._user = user
        self._password = password or secrets.token_urlsafe(12)
        self.plugins = [os.path.abspath(p) for p in plugins]
        self.dicom = dicom
        self.extra_config = dict(extra_config or {})
        self.users = dict(users or {})
        self.stable_age = stable_age
        self.aet = aet
        self.port = port
        self.http_port = None
        self._dicom_port = None
        self.process = None
        self._log = None
        self._session = None

    # -- properties ---------------------------------------------------------
    @property
    def url(self) -> str:
        "Base URL, without trailing slash, e.g. ``http://127.0.0.1:8042``."
        if self.http_port is None:
            raise OrthancStartError('Orthanc server is not started')
        return 'http://127.0.0.1:%d' % self.http_port

    @property
    def user(self) -> str:
        return self._user

    @property
    def password(self) -> str:
        return self._password

    @property
    def auth(self) -> tuple[str, str]:
        return (self._user, self._password)

    @property
    def dicom_port(self) -> int | None:
        "The DICOM port, or None when the DICOM server is disabled."
        return self._dicom_port

    @property
    def config_path(self) -> str:
        return os.path.join(self.workdir, 'orthanc.json')

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, 'orthanc.log')

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- configuration ------------------------------------------------------
    def make_config(self) -> dict:
        "Return the configuration dictionary written for Orthanc."
        users = {self._user: self._password}
        users.update(self.users)
        config = {
            'Name': 'OrthancTest',
            'StorageDirectory': os.path.join(self.workdir, 'storage'),
            'IndexDirectory': os.path.join(self.workdir, 'storage'),
            'HttpServerEnabled': True,
            'HttpPort': self.http_port,
            'RemoteAccessAllowed': False,
            'AuthenticationEnabled': True,
            'RegisteredUsers': users,
            'StableAge': self.stable_age,
            'DicomServerEnabled': bool(self.dicom),
            'DicomAet': self.aet,
            'DicomPort': self._dicom_port or 4242,
            'Plugins': list(self.plugins),
            'SaveJobs': False,
            'HttpThreadsCount': 20,
            'ConcurrentJobs': 2,
            }
        config.update(self.extra_config)
        return config

    # -- life cycle ---------------------------------------------------------
    def start(self) -> 'OrthancServer':
        """Start Orthanc and wait until ``/system`` answers.

        Raises
        ------
        OrthancMissing
            If the executable is not installed.
        OrthancStartError
            With the tail of the log if Orthanc does not answer within
            about 20 seconds.
        """
        if self.running:
            return self
        binary = find_orthanc()
        os.makedirs(self.workdir, exist_ok=True)
        last_error = None
        # A free port may be taken between probing and binding: retry.
        for attempt in range(1 if self.port else 3):
            self.http_port = self.port or free_port()
            self._dicom_port = free_port() if self.dicom else None
            with open(self.config_path, 'w', encoding='utf-8') as fp:
                json.dump(self.make_config(), fp, indent=2)
            self._log = open(self.log_path, 'ab')
            self.process = subprocess.Popen(
                [binary, '--no-jobs', self.config_path],
                stdin=subprocess.DEVNULL, stdout=self._log,
                stderr=subprocess.STDOUT, cwd=self.workdir,
                preexec_fn=_die_with_parent)
            _servers.add(self)
            try:
                self._wait_ready()
            except OrthancStartError as exc:
                last_error = exc
                self.stop()
                continue
            return self
        raise last_error

    def _wait_ready(self):
        session = self.session()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise OrthancStartError(
                    'Orthanc exited with code %s:\n%s'
                    % (self.process.returncode, self.log_tail()))
            try:
                response = session.get(self.url + '/system', timeout=2)
            except requests.RequestException:
                time.sleep(0.1)
                continue
            if response.status_code == 200:
                return
            time.sleep(0.1)
        raise OrthancStartError(
            'Orthanc did not answer on %s within %d s:\n%s'
            % (self.url, START_TIMEOUT, self.log_tail()))

    def log_tail(self, lines: int = 30) -> str:
        "Return the last lines of Orthanc's log."
        try:
            with open(self.log_path, 'rb') as fp:
                data = fp.read()
        except OSError:
            return '(no log)'
        text = data.decode('utf-8', 'replace').splitlines()
        return '\n'.join(text[-lines:])

    def stop(self):
        "Stop Orthanc (SIGTERM, then SIGKILL after 15 s) and wait for it."
        process, self.process = self.process, None
        if self._session is not None:
            # idle keep-alive connections slow down Orthanc's shutdown
            self._session.close()
            self._session = None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        _servers.discard(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- helpers ------------------------------------------------------------
    def session(self) -> requests.Session:
        "Return an authenticated session on this server."
        if self._session is None:
            self._session = requests.Session()
            self._session.auth = self.auth
        return self._session

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault('timeout', 60)
        response = self.session().request(method, self.url + path, **kwargs)
        response.raise_for_status()
        return response

    def upload(self, dicom_bytes: bytes) -> dict:
        "Store one DICOM instance (``POST /instances``); return the answer."
        return self.request('POST', '/instances', data=dicom_bytes,
            headers={'Content-Type': 'application/dicom'}).json()

    def upload_many(self, instances: Iterable[bytes]) -> list[dict]:
        return [self.upload(data) for data in instances]

    def clear(self):
        "Delete all the patients (hence every resource)."
        for patient_id in self.request('GET', '/patients').json():
            self.request('DELETE', '/patients/%s' % patient_id)


_servers = set()


@atexit.register
def _stop_all():
    for server in list(_servers):
        server.stop()
