# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Tests of the Orthanc REST client.

Faults are injected with an in-process fake server; the happy paths run
against a real Orthanc (``/usr/sbin/Orthanc`` or ``$ORTHANC_BIN``).  A
missing Orthanc is an error, not a skip.
"""
import base64
import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
from urllib.parse import quote, quote_plus

import pydicom
import pytest

from trytond.modules.health_orthanc.orthanc_client import (
    BodySizeError, Change, ChangesPage, NotOrthanc, OrthancBadAnswer,
    OrthancClient, OrthancError, OrthancNotFound, OrthancStalled,
    OrthancTimeout, OrthancTLSError, OrthancUnauthorized, OrthancUnreachable,
    Scrubber, _Body, credential_forms, normalize_domain)

from .dicom_samples import make_instance, make_study
from .fake_orthanc import SYSTEM, FakeOrthanc, Reply, orthanc_error
from .orthanc_server import (
    OrthancMissing, OrthancServer, free_port, plugin_path)

PASSWORD = 'S3cr3t-P@ss!'


# -- normalize_domain --------------------------------------------------------
@pytest.mark.parametrize('url, expected', [
    ('http://localhost:8042', 'http://localhost:8042'),
    ('  http://localhost:8042/  ', 'http://localhost:8042'),
    ('HTTPS://PACS.Example.org/orthanc/', 'https://pacs.example.org/orthanc'),
    ('https://pacs.example.org/a/b//', 'https://pacs.example.org/a/b'),
    ('http://10.0.0.5:8042/?x=1#frag', 'http://10.0.0.5:8042'),
    ('http://[::1]:8042/orthanc', 'http://[::1]:8042/orthanc'),
    ('https://pacs.example.org', 'https://pacs.example.org'),
    ])
def test_normalize_domain(url, expected):
    assert normalize_domain(url) == expected


@pytest.mark.parametrize('url, fragment', [
    ('', 'empty'),
    ('   ', 'empty'),
    ('localhost:8042', 'http'),
    ('pacs.example.org', 'http'),
    ('ftp://pacs.example.org', 'http'),
    ('dicom://pacs:104', 'http'),
    ('http://', 'host'),
    ('http://user:pass@pacs.example.org', 'password'),
    ('http://user@pacs.example.org', 'password'),
    ('http://pacs.example.org:99999', 'not valid'),
    ('http://pacs.example.org:port', 'not valid'),
    (None, 'text'),
    ])
def test_normalize_domain_invalid(url, fragment):
    with pytest.raises(ValueError) as info:
        normalize_domain(url)
    assert fragment in str(info.value)
    assert 'pass@' not in str(info.value)


# -- fault injection with the fake server ------------------------------------
@pytest.fixture
def fake():
    with FakeOrthanc() as server:
        yield server


def make_client(url, **kwargs):
    kwargs.setdefault('user', 'orthanc')
    kwargs.setdefault('password', PASSWORD)
    kwargs.setdefault('retries', 2)
    kwargs.setdefault('backoff', 0)
    kwargs.setdefault('timeout', (2, 0.5))
    return OrthancClient(url, **kwargs)


ORTHANC_500 = orthanc_error(500, 'Internal error', 'SQLite: database locked')
# path, replies, call, expected exception (None: success), request count
FAULTS = [
    ('/system', [Reply(500, ORTHANC_500)], 'system', OrthancBadAnswer, 1),
    ('/system', [Reply(503)], 'system', OrthancBadAnswer, 3),
    ('/system', [Reply(504)], 'system', OrthancBadAnswer, 3),
    ('/system', [Reply(503), Reply(502), Reply(200, SYSTEM)], 'system',
        None, 3),
    ('/system', [Reply(close=True), Reply(200, SYSTEM)], 'system', None, 2),
    ('/system', [Reply(close=True)], 'system', OrthancUnreachable, 3),
    ('/system', [Reply(401)], 'system', OrthancUnauthorized, 1),
    ('/system', [Reply(403)], 'system', OrthancUnauthorized, 1),
    ('/system', [Reply(404)], 'system', NotOrthanc, 1),
    ('/system', [Reply(200, '<html><body>nginx</body></html>',
                content_type='text/html')], 'system', NotOrthanc, 1),
    ('/system', [Reply(200, {'status': 'ok'})], 'system', NotOrthanc, 1),
    ('/system', [Reply(200, [1, 2])], 'system', NotOrthanc, 1),
    ('/system', [Reply(302, headers={'Location': 'https://sso/login'})],
        'system', NotOrthanc, 1),
    ('/system', [Reply(200, SYSTEM, delay=2)], 'system', OrthancTimeout, 1),
    ('/system', [Reply(200, SYSTEM, body_delay=2)], 'system',
        OrthancTimeout, 1),
    ('/system', [Reply(200, '{"ApiVersion": 16, "Na', truncate=True)],
        'system', OrthancBadAnswer, 1),
    ('/statistics', [Reply(200, '{"CountStudies": 3, "Count')],
        'statistics', OrthancBadAnswer, 1),
    ('/statistics', [Reply(200, [])], 'statistics', OrthancBadAnswer, 1),
    ('/statistics', [Reply(200, 'null')], 'statistics', OrthancBadAnswer, 1),
    ('/changes', [Reply(200, {'Changes': []})], 'last_change',
        OrthancBadAnswer, 1),
    ('/changes', [Reply(200, {'Changes': [{'Seq': 1}], 'Done': True,
                    'Last': 1})], 'get_changes', OrthancBadAnswer, 1),
    ('/changes', [Reply(200, {'Changes': None, 'Done': True, 'Last': 1})],
        'get_changes', OrthancBadAnswer, 1),
    ('/studies', [Reply(200, {'ID': 'x'})], 'list_studies',
        OrthancBadAnswer, 1),
    ('/studies', [Reply(200, ['abc'])], 'list_studies', OrthancBadAnswer, 1),
    ('/studies', [Reply(400, orthanc_error(400, 'Bad request',
                    'Missing "limit" argument'))], 'list_studies',
        OrthancError, 1),
    ('/studies/abc', [Reply(404, b'')], 'get_study', OrthancNotFound, 1),
    ('/studies/abc', [Reply(500, 'Internal Server Error',
                content_type='text/plain')], 'get_study',
        OrthancBadAnswer, 1),
    ]

CALLS = {
    'system': lambda c: c.system(),
    'statistics': lambda c: c.statistics(),
    'last_change': lambda c: c.last_change(),
    'get_changes': lambda c: c.get_changes(0),
    'list_studies': lambda c: c.list_studies(0, 10),
    'get_study': lambda c: c.get_study('abc'),
    }


@pytest.mark.parametrize('path, replies, call, error, count', FAULTS)
def test_faults(fake, path, replies, call, error, count):
    fake.set(path, *replies)
    client = make_client(fake.url)
    if error is None:
        CALLS[call](client)
    else:
        with pytest.raises(error) as info:
            CALLS[call](client)
        assert type(info.value) is error
        assert PASSWORD not in str(info.value)
        assert str(info.value)
    assert client.request_count == count
    assert fake.count(path) == count


def test_error_carries_orthanc_message(fake):
    fake.set('/statistics', status=500, body=ORTHANC_500)
    client = make_client(fake.url)
    with pytest.raises(OrthancBadAnswer) as info:
        client.statistics()
    error = info.value
    assert error.status == 500
    assert error.message == 'Internal error'
    assert error.details == 'SQLite: database locked'
    assert 'database locked' in str(error)


@pytest.mark.parametrize('error, status', [
    (OrthancUnauthorized, 401), (OrthancNotFound, 404),
    (OrthancBadAnswer, 503), (OrthancError, 400), (OrthancError, 405),
    ])
def test_error_status(fake, error, status):
    fake.set('/statistics', status=status)
    with pytest.raises(error) as info:
        make_client(fake.url, retries=0).statistics()
    assert info.value.status == status


@pytest.mark.parametrize('cls', [
    OrthancUnauthorized, OrthancNotFound, OrthancUnreachable,
    OrthancTimeout, OrthancTLSError, NotOrthanc, OrthancBadAnswer])
def test_error_hierarchy(cls):
    assert issubclass(cls, OrthancError)
    assert cls().status is None
    assert str(cls())


def test_timeout_and_tls_are_unreachable():
    assert issubclass(OrthancTimeout, OrthancUnreachable)
    assert issubclass(OrthancTLSError, OrthancUnreachable)


def test_only_get_is_retried(fake):
    fake.set('/tools/reset', status=503)
    client = make_client(fake.url, retries=3)
    with pytest.raises(OrthancBadAnswer):
        client.request('POST', 'tools/reset')
    assert client.request_count == 1
    with pytest.raises(OrthancBadAnswer):
        client.request('GET', 'tools/reset')
    assert client.request_count == 5


def test_backoff(fake, monkeypatch):
    sleeps = []
    monkeypatch.setattr('time.sleep', sleeps.append)
    fake.set('/system', Reply(503))
    client = make_client(fake.url, retries=3, backoff=0.5)
    with pytest.raises(OrthancBadAnswer):
        client.system()
    assert sleeps == [0.5, 1.0, 2.0]


def test_connection_refused():
    client = make_client('http://127.0.0.1:%d' % free_port(), retries=1)
    with pytest.raises(OrthancUnreachable) as info:
        client.system()
    assert type(info.value) is OrthancUnreachable
    assert 'refused' in str(info.value)
    assert client.request_count == 2


def test_unknown_host():
    client = make_client('http://orthanc.invalid:8042', retries=0)
    with pytest.raises(OrthancUnreachable) as info:
        client.system()
    assert type(info.value) is OrthancUnreachable
    assert 'host name' in str(info.value)


def test_https_to_plain_http_server(fake):
    client = make_client(fake.url.replace('http:', 'https:'), retries=2)
    with pytest.raises(OrthancTLSError):
        client.system()
    assert client.request_count == 1  # TLS errors are not retried


def test_missing_ca_bundle(fake):
    client = make_client(fake.url.replace('http:', 'https:'),
        verify='/nonexistent/ca.pem')
    with pytest.raises(OrthancTLSError):
        client.system()


@pytest.fixture(scope='module')
def certificate(tmp_path_factory):
    openssl = shutil.which('openssl')
    if not openssl:
        pytest.skip('openssl command not available')
    directory = tmp_path_factory.mktemp('tls')
    cert, key = directory / 'cert.pem', directory / 'key.pem'
    subprocess.run([openssl, 'req', '-x509', '-newkey', 'rsa:2048',
            '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1',
            '-addext', 'subjectAltName=IP:127.0.0.1',
            '-keyout', str(key), '-out', str(cert)],
        check=True, capture_output=True)
    return str(cert), str(key)


@pytest.mark.filterwarnings(
    'ignore::urllib3.exceptions.InsecureRequestWarning')
@pytest.mark.parametrize('verify, error', [
    (True, OrthancTLSError),
    (False, None),
    ('cert', None),
    ])
def test_tls_certificate(certificate, verify, error):
    if verify == 'cert':
        verify = certificate[0]
    with FakeOrthanc(tls=certificate) as server:
        client = make_client(server.url, verify=verify)
        if error:
            with pytest.raises(error) as info:
                client.system()
            assert 'certificate' in str(info.value)
            assert client.request_count == 1
        else:
            assert client.system()['Version'] == '1.10.1'


def test_path_prefix(fake):
    fake.set('/orthanc/system', body=SYSTEM)
    fake.set('/orthanc/studies/abc', body={'ID': 'abc'})
    client = make_client(fake.url + '/orthanc/')
    assert client.domain == fake.url + '/orthanc'
    assert client.system()['Name'] == 'FakeOrthanc'
    assert client.get_study('abc') == {'ID': 'abc'}
    assert [r.path for r in fake.requests] == [
        '/orthanc/system', '/orthanc/studies/abc']


def test_identifiers_are_quoted(fake):
    client = make_client(fake.url)
    with pytest.raises(OrthancNotFound):
        client.get_study('../system')
    assert fake.requests[-1].path == '/studies/..%2Fsystem'
    with pytest.raises(ValueError):
        client.get_study('')


def test_credentials_sent_and_never_logged(caplog):
    caplog.set_level(logging.DEBUG)
    with FakeOrthanc(credentials=('orthanc', PASSWORD)) as server:
        server.set('/statistics', Reply(503), Reply(500, orthanc_error(
                    500, 'Error', 'bad password %s' % PASSWORD)))
        client = make_client(server.url)
        assert client.system()['ApiVersion'] == 16
        assert server.requests[-1].user == 'orthanc'
        assert server.requests[-1].password == PASSWORD
        with pytest.raises(OrthancBadAnswer) as info:
            client.statistics()
        assert PASSWORD not in str(info.value)
        assert PASSWORD not in info.value.details
        wrong = make_client(server.url, password='wrong')
        with pytest.raises(OrthancUnauthorized):
            wrong.check()
    assert PASSWORD not in repr(client)
    assert PASSWORD not in caplog.text
    assert 'retrying' in caplog.text


# -- credentials in error texts -----------------------------------------------
def b64(text, encoding='utf-8'):
    return base64.b64encode(text.encode(encoding)).decode()


CREDENTIALS = [
    ('orthanc', 'S3cr3t-P@ss!'),
    ('gnuhealth', 'p a/s%s:w+rd&é'),
    ('врач', 'пароль-77'),
    ('abc', 'Zx9'),  # the shortest scrubbed alone
    ]

#: How a server or a proxy may write the credentials back
ECHOES = {
    'password': lambda u, p: p,
    'user': lambda u, p: u,
    'basic header': lambda u, p: 'Authorization: Basic ' + b64(
        '%s:%s' % (u, p)),
    'pair base64 alone': lambda u, p: b64('%s:%s' % (u, p)),
    'pair base64 no padding': lambda u, p: b64('%s:%s' % (u, p)).rstrip('='),
    'pair base64 cut short': lambda u, p: b64('%s:%s' % (u, p))[:-2],
    'pair base64 url-safe': lambda u, p: base64.urlsafe_b64encode(
        ('%s:%s' % (u, p)).encode()).decode(),
    'password base64': lambda u, p: b64(p),
    'user base64': lambda u, p: b64(u),
    'password url-encoded': lambda u, p: quote(p, safe=''),
    'password url-encoded mixed-case hex': lambda u, p: quote(
        p, safe='').replace('%C3%A9', '%c3%a9'),
    'password url-encoded lower hex': lambda u, p: re.sub(
        '%..', lambda m: m.group().lower(), quote(p, safe='')),
    'password form-encoded': lambda u, p: quote_plus(p),
    'pair url-encoded': lambda u, p: quote('%s:%s' % (u, p), safe=''),
    'password JSON-escaped': lambda u, p: json.dumps(p)[1:-1],
    'header in a URL': lambda u, p: 'auth=Basic%20' + quote(
        b64('%s:%s' % (u, p)), safe=''),
    }


def leaks(text, user, password):
    "Return the forms of the secrets still in text"
    found = [f for f in credential_forms(user, password) if f in text]
    if len(password) >= 3 and password in text:
        found.append(password)
    return found


@pytest.mark.parametrize('user, password', CREDENTIALS)
@pytest.mark.parametrize('echo', list(ECHOES.values()), ids=list(ECHOES))
def test_scrubber(user, password, echo):
    scrub = Scrubber(user, password)
    secret = echo(user, password)
    text = scrub('Orthanc said: [%s] (HTTP 400)' % secret)
    assert secret not in text or len(secret) < 3
    assert not leaks(text, user, password)
    assert text.startswith('Orthanc said: [')
    assert text.endswith('] (HTTP 400)')


@pytest.mark.parametrize('text', [
    'Orthanc refused the user name or password (HTTP 401)',
    'Basic authentication is required',
    'basic auth',
    'Unknown resource /studies/abc',
    '',
    ])
def test_scrubber_leaves_other_texts(text):
    assert Scrubber('orthanc', 'S3cr3t-P@ss!')(text) == text


@pytest.mark.parametrize('user, password, kept', [
    # too short alone to be told from ordinary words; the pair is masked
    ('ab', 'cd', 'ab and cd'),
    (None, None, 'nothing to hide'),
    ])
def test_scrubber_short_secrets(user, password, kept):
    scrub = Scrubber(user, password)
    assert scrub(kept) == kept
    if user:
        assert scrub('x %s:%s y' % (user, password)) == 'x *** y'


@pytest.mark.parametrize('text, expected', [
    ('the administrator of admin', 'the administrator of ***'),
    ('user=admin;', 'user=***;'),
    ('admins', 'admins'),
    ])
def test_scrubber_user_as_a_word(text, expected):
    "The user name alone is masked as a whole word only"
    assert Scrubber('admin', 'S3cr3t-P@ss!')(text) == expected


def test_error_hides_the_ca_bundle():
    "The path of the CA bundle is the Tryton server's: never in errors"
    client = OrthancClient('https://127.0.0.1:9', verify='/srv/private/ca.pem')
    error = client._error(OrthancError, 'invalid path: /srv/private/ca.pem',
        message='cannot read /srv/private/ca.pem')
    assert '/srv/private' not in str(error)
    assert '/srv/private' not in error.message


def test_credential_forms():
    forms = credential_forms('orthanc', 'S3cr3t')
    assert forms == sorted(forms, key=lambda f: -len(f))
    assert {'orthanc', 'S3cr3t', 'orthanc:S3cr3t', b64('orthanc:S3cr3t'),
        b64('S3cr3t'), b64('orthanc'), 'orthanc%3AS3cr3t'} <= set(forms)
    assert credential_forms(None, None) == []


def test_scrubbed_before_cut_short(fake):
    "A long body is cut after scrubbing: no secret is left half-cut"
    pair = b64('orthanc:' + PASSWORD)
    fake.set('/statistics', status=500, body=orthanc_error(500,
            'x' * 290 + pair, 'y' * 295 + PASSWORD))
    with pytest.raises(OrthancBadAnswer) as info:
        make_client(fake.url, retries=0).statistics()
    error = info.value
    for text in [str(error), error.message, error.details]:
        assert not leaks(text, 'orthanc', PASSWORD)
        assert pair[:8] not in text and PASSWORD[:6] not in text


@pytest.mark.parametrize('status, error_class', [
    (400, OrthancError),
    (401, OrthancUnauthorized),
    (403, OrthancUnauthorized),
    (404, OrthancNotFound),
    (500, OrthancBadAnswer),
    (503, OrthancBadAnswer),
    ])
def test_echoed_headers_never_reach_the_error(fake, caplog, status,
        error_class):
    """A server that echoes the request's headers (Authorization: Basic
    base64 of user:password) in its error body: nothing of the credentials
    reaches the error nor the log"""
    caplog.set_level(logging.DEBUG)
    fake.set('/statistics', status=status, echo=True)
    client = make_client(fake.url, user='gnuhealth', password=PASSWORD)
    with pytest.raises(error_class) as info:
        client.statistics()
    error = info.value
    # the fake did echo them
    request = fake.requests[-1]
    assert request.password == PASSWORD
    assert request.headers['Authorization'] == 'Basic ' + b64(
        'gnuhealth:' + PASSWORD)
    for text in [str(error), error.message, error.details, caplog.text,
            repr(error.args)]:
        assert not leaks(text, 'gnuhealth', PASSWORD), text
    assert 'Basic ***' in error.message


def test_redirect_with_credentials(fake):
    "A Location carrying the credentials is scrubbed too"
    fake.set('/system', status=302, headers={
            'Location': 'https://orthanc:%s@pacs.example.org/?a=%s' % (
                quote(PASSWORD, safe=''), b64('orthanc:' + PASSWORD))})
    with pytest.raises(NotOrthanc) as info:
        make_client(fake.url).system()
    assert not leaks(str(info.value), 'orthanc', PASSWORD)
    assert 'pacs.example.org' in info.value.details


# -- bodies sent with a Content-Length ----------------------------------------
class Trickle(io.BytesIO):
    "A stream that gives at most 3 bytes a read, as a socket may"

    def read(self, size=-1):
        return super().read(3 if size is None or size < 0 else min(size, 3))


@pytest.mark.parametrize('data, size', [
    (b'0123456789', 10),
    (b'', 0),
    (Trickle(b'0123456789'), 10),
    ])
def test_body_exact(data, size):
    stream = data if isinstance(data, io.BytesIO) else io.BytesIO(data)
    body = _Body(stream, size)
    assert len(body) == size
    assert b''.join(iter(lambda: body.read(4), b'')) == b'0123456789'[:size]


@pytest.mark.parametrize('data, size, sent, longer', [
    # holds less than announced: raised at its end, never completed
    (b'0123456789', 20, 10, False),
    (b'', 5, 0, False),
    # holds more: raised before its last block is given
    (b'0123456789', 4, 4, True),
    (b'0123456789', 8, 8, True),
    ])
def test_body_size_mismatch(data, size, sent, longer):
    body = _Body(io.BytesIO(data), size)
    given = b''
    with pytest.raises(BodySizeError) as info:
        while True:
            block = body.read(4)
            if not block:
                break
            given += block
    assert (info.value.announced, info.value.sent, info.value.longer) == (
        size, sent, longer)
    # what was given never completes the announced length
    assert len(given) < size or size == 0
    assert not isinstance(info.value, OSError)


# -- pages that do not advance -----------------------------------------------
def new_study(seq):
    return {'Seq': seq, 'ChangeType': 'NewStudy', 'ResourceType': 'Study',
        'ID': 's'}


@pytest.mark.parametrize('since, page', [
    (5, {'Changes': [new_study(5)], 'Done': True, 'Last': 5}),
    (5, {'Changes': [new_study(6)], 'Done': False, 'Last': 4}),
    (5, {'Changes': [], 'Done': False, 'Last': 5}),
    (5, {'Changes': [], 'Done': False, 'Last': 9}),
    ], ids=['change not after since', 'Last backwards', 'empty not done',
        'empty not done ahead'])
def test_changes_not_after_since(fake, since, page):
    fake.set_json('/changes', page)
    with pytest.raises(OrthancStalled) as info:
        make_client(fake.url).get_changes(since, 10)
    assert 'did not advance' in str(info.value)
    assert isinstance(info.value, OrthancBadAnswer)


@pytest.mark.parametrize('since, page', [
    (5, {'Changes': [], 'Done': True, 'Last': 5}),
    # a replaced database: empty, done, Last behind (run() reimports)
    (5, {'Changes': [], 'Done': True, 'Last': 2}),
    (5, {'Changes': [new_study(9)], 'Done': False, 'Last': 9}),
    ])
def test_changes_after_since(fake, since, page):
    fake.set_json('/changes', page)
    assert make_client(fake.url).get_changes(since, 10).last == page['Last']


@pytest.mark.parametrize('pages, requests', [
    # a proxy ignoring since: the same full page again
    ([[{'ID': 'a'}, {'ID': 'b'}]], 2),
    # a proxy ignoring limit
    ([[{'ID': 'a'}, {'ID': 'b'}, {'ID': 'c'}]], 1),
    ])
def test_listing_that_never_advances(fake, pages, requests):
    fake.set('/studies', *[Reply(200, page) for page in pages])
    client = make_client(fake.url)
    with pytest.raises(OrthancStalled):
        list(client.iter_studies(page_size=2))
    assert fake.count('/studies') == requests


def test_check_page():
    client = make_client('http://127.0.0.1:1')
    page = [{'ID': 'a'}, {'ID': 'b'}]
    assert client.check_page('studies', page, 2, None) == ['a', 'b']
    assert client.check_page('studies', page, 2, ['x', 'a']) == ['a', 'b']
    # a last page shorter than the limit ends the listing anyway
    assert client.check_page('studies', page[:1], 2, ['a']) == ['a']
    with pytest.raises(OrthancStalled):
        client.check_page('studies', page, 2, ['a', 'b'])
    with pytest.raises(OrthancStalled):
        client.check_page('studies', page, 1, None)


def test_check_needs_protected_route(fake):
    "A proxy may publish /system: check() must still prove credentials."
    fake.set('/changes', status=401)
    client = make_client(fake.url)
    assert client.system()['Version']
    with pytest.raises(OrthancUnauthorized):
        client.check()


def test_authentication_enforced():
    with FakeOrthanc() as server:
        assert not make_client(server.url).authentication_enforced()
    with FakeOrthanc(credentials=('orthanc', PASSWORD)) as server:
        server.set('/changes', body={'Changes': [], 'Done': True, 'Last': 0})
        client = make_client(server.url)
        assert client.authentication_enforced()
        assert server.requests[-1].user is None
        assert client.check()['Version']


def test_context_manager_closes_session(fake):
    with make_client(fake.url) as client:
        client.system()
        session = client.session
    assert client.session is session
    assert not session.adapters['http://'].poolmanager.pools


def test_get_changes_limit_is_positive(fake):
    fake.set('/changes', body={'Changes': [], 'Done': True, 'Last': 7})
    client = make_client(fake.url)
    page = client.get_changes(7, limit=0)
    assert page == ChangesPage([], 7, True)
    assert fake.requests[-1].query == {'since': ['7'], 'limit': ['1']}


def test_list_query_parameters(fake):
    fake.set('/series', body=[])
    make_client(fake.url).list_series(since=20, limit=10)
    assert fake.requests[-1].query == {
        'expand': [''], 'since': ['20'], 'limit': ['10']}


# -- real Orthanc ------------------------------------------------------------
PATIENTS = [
    # patient_id, name, studies (accessions)
    ('P-001', 'DOE^John', ['A-1', 'A-2']),
    ('P-002', 'ROE^Jane', ['A-3']),
    ('P-003', 'MÜLLER^Jörg', ['A-4']),
    ('P-004', 'NGUYEN^Li', ['A-5']),
    ]
N_STUDIES = sum(len(p[2]) for p in PATIENTS)
N_SERIES, N_INSTANCES = 2, 2


@pytest.fixture(scope='module')
def orthanc(tmp_path_factory):
    with OrthancServer(str(tmp_path_factory.mktemp('orthanc')),
            password=PASSWORD) as server:
        for patient_id, name, accessions in PATIENTS:
            for accession in accessions:
                for data in make_study(N_SERIES, N_INSTANCES,
                        patient_id=patient_id, patient_name=name,
                        accession=accession, seed=7,
                        specific_character_set='ISO_IR 192'):
                    server.upload(data)
        yield server


@pytest.fixture
def client(orthanc):
    with OrthancClient(orthanc.url, orthanc.user, orthanc.password,
            backoff=0) as client:
        yield client


def test_real_system(client):
    system = client.system()
    assert system['ApiVersion'] >= 16
    assert system['Name'] == 'OrthancTest'
    assert client.check() == system
    assert client.authentication_enforced()


@pytest.mark.parametrize('user, password', [
    ('orthanc', 'wrong'),
    ('nobody', PASSWORD),
    (None, None),
    ('orthanc', ''),
    ])
def test_real_wrong_credentials(orthanc, user, password):
    client = OrthancClient(orthanc.url, user, password, backoff=0)
    with pytest.raises(OrthancUnauthorized) as info:
        client.check()
    assert info.value.status == 401
    assert PASSWORD not in str(info.value)
    assert client.request_count == 1  # 401 is not retried


def test_real_statistics(client):
    stats = client.statistics()
    assert stats['CountPatients'] == len(PATIENTS)
    assert stats['CountStudies'] == N_STUDIES
    assert stats['CountInstances'] == N_STUDIES * N_SERIES * N_INSTANCES


@pytest.mark.parametrize('limit', [1, 3, 7, 1000])
def test_real_changes_paging(client, limit):
    last = client.last_change()
    assert last > 0
    seen, since, pages = [], 0, 0
    while True:
        page = client.get_changes(since, limit=limit)
        pages += 1
        assert len(page.changes) <= limit
        assert all(isinstance(c, Change) for c in page.changes)
        seen.extend(page.changes)
        if page.changes:
            assert page.last == page.changes[-1].seq
        since = page.last
        if page.done:
            break
        assert pages < 1000
    seqs = [c.seq for c in seen]
    assert seqs == sorted(set(seqs))
    assert seqs[-1] == last
    new_studies = {c.resource_id for c in seen if c.change_type == 'NewStudy'}
    assert len(new_studies) == N_STUDIES
    assert {c.resource_type for c in seen} >= {
        'Patient', 'Study', 'Series', 'Instance'}
    # nothing new: an empty page, done, Last is still the last sequence
    assert client.get_changes(last) == ChangesPage([], last, True)
    # beyond the end (e.g. Orthanc database reset): Last < since
    page = client.get_changes(last + 100)
    assert page.changes == [] and page.done and page.last == last


@pytest.mark.parametrize('method, count', [
    ('iter_patients', len(PATIENTS)),
    ('iter_studies', N_STUDIES),
    ('iter_series', N_STUDIES * N_SERIES),
    ])
@pytest.mark.parametrize('page_size', [1, 2, 5, 500])
def test_real_listing_paging(client, method, count, page_size):
    items = list(getattr(client, method)(page_size=page_size))
    ids = [i['ID'] for i in items]
    assert len(ids) == count == len(set(ids))
    assert all('MainDicomTags' in i for i in items)  # expanded
    # a last short page ends the loop; an exact multiple needs one more
    expected = count // page_size + 1
    assert client.request_count == expected
    assert math.ceil(count / page_size) <= expected


def test_real_list_offsets(client):
    studies = client.list_studies(0, 100)
    assert len(studies) == N_STUDIES
    assert client.list_studies(2, 2) == studies[2:4]
    assert client.list_studies(N_STUDIES, 10) == []
    assert studies[0]['PatientMainDicomTags']['PatientID']


def test_real_study(client):
    study = next(s for s in client.iter_studies()
        if s['MainDicomTags']['AccessionNumber'] == 'A-4')
    assert client.get_study(study['ID']) == study
    patient = client.get_patient(study['ParentPatient'])
    assert patient['MainDicomTags']['PatientName'] == 'MÜLLER^Jörg'
    series = client.get_study_series(study['ID'])
    assert sorted(s['MainDicomTags']['Modality'] for s in series) == [
        'CT', 'MR']
    assert all(len(s['Instances']) == N_INSTANCES for s in series)
    assert {s['ID'] for s in series} == set(study['Series'])
    stats = client.get_study_statistics(study['ID'])
    assert stats['CountSeries'] == N_SERIES
    assert stats['CountInstances'] == N_SERIES * N_INSTANCES
    assert client.get_series(series[0]['ID'])['ParentStudy'] == study['ID']
    for level in ['study', 'studies', 'Study']:
        assert client.exists(level, study['ID'])
    assert client.exists('patient', study['ParentPatient'])
    assert client.exists('series', series[0]['ID'])


@pytest.mark.parametrize('call', [
    lambda c: c.get_study('0000-no-such-study'),
    lambda c: c.get_patient('0000-no-such-patient'),
    lambda c: c.get_study_series('0000-no-such-study'),
    lambda c: c.get_study_statistics('0000-no-such-study'),
    ])
def test_real_not_found(client, call):
    with pytest.raises(OrthancNotFound) as info:
        call(client)
    assert info.value.status == 404
    assert client.request_count == 1


@pytest.mark.parametrize('level', ['patient', 'study', 'series', 'instance'])
def test_real_exists_false(client, level):
    assert client.exists(level, 'no-such-id') is False


def test_exists_bad_level(client):
    with pytest.raises(ValueError):
        client.exists('hospital', 'x')


def test_real_not_orthanc_path(orthanc):
    "A wrong path prefix: /system is a 404 (or 401) on the real server."
    client = OrthancClient(orthanc.url + '/wrong/prefix', orthanc.user,
        orthanc.password)
    with pytest.raises(NotOrthanc):
        client.system()


def test_real_deletion_not_in_changes(tmp_path):
    "Orthanc never reports deletions and forgets the deleted changes."
    with OrthancServer(str(tmp_path), password=PASSWORD) as server:
        pid = server.process.pid
        client = OrthancClient(server.url, server.user, server.password)
        for data in make_study(1, 1, patient_id='DEL', seed=3):
            server.upload(data)
        last = client.last_change()
        study_id = client.list_studies(0, 10)[0]['ID']
        server.request('DELETE', '/studies/%s' % study_id)
        assert not client.exists('study', study_id)
        page = client.get_changes(0)
        assert page.changes == []
        assert page.last == last
        assert client.last_change() == last
    # stopped cleanly: no orphan process
    assert server.process is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# -- test helpers ------------------------------------------------------------
def test_samples_are_deterministic():
    first = make_study(2, 3, seed=5, patient_id='X')
    assert first == make_study(2, 3, seed=5, patient_id='X')
    assert first != make_study(2, 3, seed=6, patient_id='X')
    assert len(first) == 6 and len(set(first)) == 6
    datasets = [pydicom.dcmread(io.BytesIO(data)) for data in first]
    assert len({d.StudyInstanceUID for d in datasets}) == 1
    assert len({d.SeriesInstanceUID for d in datasets}) == 2
    assert {d.Modality for d in datasets} == {'CT', 'MR'}
    assert datasets[0].pixel_array.shape == (8, 8)


def test_sample_charset():
    data = make_instance(patient_name='MÜLLER^Jörg',
        specific_character_set='ISO_IR 100')
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.SpecificCharacterSet == 'ISO_IR 100'
    assert str(ds.PatientName) == 'MÜLLER^Jörg'
    assert 'MÜLLER'.encode('latin-1') in data


def test_server_missing_orthanc(tmp_path, monkeypatch):
    monkeypatch.setenv('ORTHANC_BIN', str(tmp_path / 'no-Orthanc'))
    with pytest.raises(OrthancMissing) as info:
        OrthancServer(str(tmp_path)).start()
    assert 'apt-get install orthanc' in str(info.value)


def test_server_dicom_and_plugins(tmp_path):
    plugin = plugin_path('DicomWeb')
    with OrthancServer(str(tmp_path), dicom=True, plugins=[plugin]) as server:
        client = OrthancClient(server.url, server.user, server.password)
        system = client.system()
        assert server.dicom_port and system['DicomPort'] == server.dicom_port
        assert system['DicomAet'] == 'ORTHANCTEST'
        assert 'dicom-web' in client.get_json('plugins')
        server.upload(make_instance())
        server.clear()
        assert client.statistics()['CountInstances'] == 0
        echoscu = shutil.which('echoscu')
        if echoscu:
            subprocess.run([echoscu, '-aec', 'ORTHANCTEST', '127.0.0.1',
                    str(server.dicom_port)], check=True, timeout=30)
    assert server.dicom_port  # kept for the log after stop


# -- plugins, previews, uploads and deletions ------------------------------
def test_real_plugins(client):
    "The shared server runs no plugin; explorer.js is never listed"
    assert client.plugins() == []


def test_real_plugins_listed(tmp_path):
    with OrthancServer(str(tmp_path), plugins=[plugin_path('WebViewer')]) \
            as server:
        client = OrthancClient(server.url, server.user, server.password)
        assert client.plugins() == ['web-viewer']


def test_real_preview(client):
    series = client.list_series(0, 1)[0]
    instances = client.get_series_instances(series['ID'])
    assert len(instances) == N_INSTANCES
    assert {i['ID'] for i in instances} == set(series['Instances'])
    png = client.instance_preview(instances[0]['ID'])
    assert png.startswith(b'\x89PNG\r\n\x1a\n')
    with pytest.raises(OrthancNotFound):
        client.instance_preview('no-such-instance')


def test_preview_not_png(fake):
    fake.set('/instances/abc/preview',
        Reply(200, b'<html>login</html>', content_type='text/html'))
    with pytest.raises(OrthancBadAnswer) as info:
        make_client(fake.url).instance_preview('abc')
    assert 'PNG' in str(info.value)


def test_real_upload_and_delete(tmp_path):
    "Stored, already stored, not DICOM; from bytes, a file and a zip"
    import zipfile
    with OrthancServer(str(tmp_path), password=PASSWORD) as server:
        client = OrthancClient(server.url, server.user, server.password,
            backoff=0)
        first, second = make_study(n_series=1, n_instances=2, seed=3)
        answer = client.upload_instance(first)
        assert answer['Status'] == 'Success'
        assert client.upload_instance(io.BytesIO(first))['Status'] == (
            'AlreadyStored')
        archive = tmp_path / 'upload.zip'
        with zipfile.ZipFile(archive, 'w', zipfile.ZIP_DEFLATED) as zf:
            zf.writestr('a/second.dcm', second)
        with zipfile.ZipFile(archive) as zf:
            info = zf.getinfo('a/second.dcm')
            with zf.open(info) as member:
                stored = client.upload_instance(member, size=info.file_size)
        assert stored['Status'] == 'Success'
        assert stored['ParentStudy'] == answer['ParentStudy']
        for body in [b'not a DICOM file', io.BytesIO(b'x' * 200), b'']:
            with pytest.raises(OrthancError) as error:
                client.upload_instance(body)
            assert error.value.status == 400
            assert PASSWORD not in str(error.value)
        assert client.request_count == 6  # a POST is never retried
        assert client.statistics()['CountInstances'] == 2

        remaining = client.delete_study(answer['ParentStudy'])
        assert remaining['RemainingAncestor'] is None
        assert client.statistics()['CountStudies'] == 0
        with pytest.raises(OrthancNotFound):
            client.delete_study(answer['ParentStudy'])
