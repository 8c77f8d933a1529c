"""A small in-process HTTP server to inject faults a real Orthanc won't make.

Example
-------
>>> with FakeOrthanc() as fake:  # doctest: +SKIP
...     fake.set('/system', status=503)
...     fake.set('/statistics', body='{"Count', truncate=True)
...     client = OrthancClient(fake.url)
...     fake.requests  # the request log

Each path (without the query string) answers with a :class:`Reply`; a list
of replies is served in turn (the last one is repeated), e.g. two 503 then
a 200 to test retries.  Unknown paths answer 404 with an Orthanc-style
JSON error body.
"""
import base64
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

__all__ = ['FakeOrthanc', 'Reply', 'LoggedRequest', 'SYSTEM', 'HTML_PAGE']

SYSTEM = {
    'ApiVersion': 16,
    'DatabaseVersion': 6,
    'DicomAet': 'FAKE',
    'DicomPort': 4242,
    'HttpPort': 8042,
    'Name': 'FakeOrthanc',
    'PluginsEnabled': False,
    'Version': '1.10.1',
    }
HTML_PAGE = ('<!DOCTYPE html><html><head><title>It works!</title></head>'
    '<body><h1>It works!</h1></body></html>')


@dataclass
class Reply:
    """One canned answer.

    Attributes
    ----------
    status : int
    body : str, bytes, dict or list
        A dict or list is sent as JSON.
    content_type : str
    headers : dict
    delay : float
        Seconds to wait before sending anything (read timeout).
    body_delay : float
        Seconds to wait after the headers, before the body.
    truncate : bool
        Announce a longer Content-Length than the body, then close.
    close : bool
        Close the connection without any answer.
    echo : bool
        Answer an Orthanc error body whose Message and Details repeat the
        request's headers (Authorization included), its URL and body, as
        a badly configured server or proxy does; ``body`` is ignored.
    """
    status: int = 200
    body: object = b''
    content_type: str = 'application/json; charset=utf-8'
    headers: dict = field(default_factory=dict)
    delay: float = 0
    body_delay: float = 0
    truncate: bool = False
    close: bool = False
    echo: bool = False

    def payload(self) -> bytes:
        body = self.body
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode('utf-8')
        return body or b''


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: dict
    headers: dict
    user: str | None = None
    password: str | None = None
    body: bytes = b''


def orthanc_error(status: int, message: str, details: str = '') -> dict:
    "Return an Orthanc-style JSON error body."
    body = {
        'HttpStatus': status,
        'Message': message,
        'Method': 'GET',
        'OrthancError': message,
        'OrthancStatus': 8,
        'Uri': '/',
        }
    if details:
        body['Details'] = details
    return body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'FakeOrthanc'

    def log_message(self, format, *args):  # silence stderr
        pass

    def _handle(self):
        fake = self.server.fake
        parts = urlsplit(self.path)
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length) if length else b''
        user = password = None
        auth = self.headers.get('Authorization', '')
        if auth.startswith('Basic '):
            try:
                user, _, password = base64.b64decode(
                    auth[6:]).decode('utf-8').partition(':')
            except ValueError:
                pass
        fake._log(LoggedRequest(self.command, parts.path,
                parse_qs(parts.query, keep_blank_values=True),
                dict(self.headers), user, password, body))
        if fake.credentials and (user, password) != fake.credentials:
            reply = Reply(401, b'', headers={
                    'WWW-Authenticate': 'Basic realm="Orthanc Secure Area"'})
        else:
            reply = fake._reply(parts.path)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.close:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        payload = reply.payload()
        if reply.echo:
            payload = self._echo(reply.status, body)
        self.send_response(reply.status)
        self.send_header('Content-Type', reply.content_type)
        length = len(payload) + (100 if reply.truncate else 0)
        self.send_header('Content-Length', str(length))
        for key, value in reply.headers.items():
            self.send_header(key, value)
        if reply.truncate:
            self.send_header('Connection', 'close')
        self.end_headers()
        self.wfile.flush()
        if reply.body_delay:
            time.sleep(reply.body_delay)
        if self.command != 'HEAD':
            self.wfile.write(payload)
        self.wfile.flush()
        if reply.truncate:
            self.close_connection = True

    def _echo(self, status, body):
        headers = '\n'.join('%s: %s' % h for h in self.headers.items())
        return json.dumps(orthanc_error(status,
                'Bad request, headers were %s' % headers,
                'Request %s %s %s body %r' % (self.command, self.path,
                    dict(self.headers), body[:40]))).encode('utf-8')

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeOrthanc:
    """Threaded fake Orthanc on 127.0.0.1 and a free port.

    Parameters
    ----------
    system : dict or None
        The ``/system`` answer (Orthanc-like by default); None for none.
    credentials : (str, str), optional
        Require these Basic credentials (401 otherwise).
    tls : (certfile, keyfile), optional
        Serve HTTPS with this certificate.
    """

    def __init__(self, system: dict | None = SYSTEM,
            credentials: tuple[str, str] | None = None,
            tls: tuple[str, str] | None = None):
        self.credentials = credentials
        self.tls = tls
        self.requests: list[LoggedRequest] = []
        self._routes: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self._server = None
        self._thread = None
        if system is not None:
            self.set('/system', body=system)

    # -- configuration ------------------------------------------------------
    def set(self, path: str, *replies: Reply, **kwargs) -> 'FakeOrthanc':
        """Set the answer(s) of ``path``.

        Either :class:`Reply` objects (served in turn, the last repeated)
        or the keyword arguments of one :class:`Reply`.
        """
        if not replies:
            replies = (Reply(**kwargs),)
        with self._lock:
            self._routes[path] = list(replies)
        return self

    def set_json(self, path: str, data, status: int = 200):
        return self.set(path, status=status, body=data)

    def html_server(self):
        "Behave like a plain web server (not an Orthanc) for every path."
        with self._lock:
            self._routes.clear()
        self._default = Reply(200, HTML_PAGE,
            content_type='text/html; charset=utf-8')
        return self

    _default = None

    def _reply(self, path: str) -> Reply:
        with self._lock:
            replies = self._routes.get(path)
            if not replies:
                if self._default is not None:
                    return self._default
                return Reply(404, orthanc_error(404, 'Unknown resource'))
            if len(replies) > 1:
                return replies.pop(0)
            return replies[0]

    def _log(self, request: LoggedRequest):
        with self._lock:
            self.requests.append(request)

    def count(self, path: str | None = None) -> int:
        "Return the number of requests received (for ``path``)."
        with self._lock:
            return sum(1 for r in self.requests
                if path is None or r.path == path)

    # -- life cycle ---------------------------------------------------------
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        scheme = 'https' if self.tls else 'http'
        return '%s://127.0.0.1:%d' % (scheme, self.port)

    def start(self) -> 'FakeOrthanc':
        self._server = _Server(('127.0.0.1', 0), _Handler)
        self._server.fake = self
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self._server.socket = context.wrap_socket(
                self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever,
            kwargs={'poll_interval': 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
