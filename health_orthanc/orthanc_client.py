# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""A small REST client for the Orthanc DICOM server.

Plain Python on top of :mod:`requests`; it does not depend on Tryton so it
can be used and tested on its own.

Behaviour of Orthanc (checked against Orthanc 1.10.1, API version 16) the
client relies on:

* With ``AuthenticationEnabled``, every route, ``/system`` included,
  answers 401 without or with wrong credentials.  Without it, any
  credentials are accepted (see :meth:`OrthancClient.authentication_enforced`).
* ``/patients``, ``/studies`` and ``/series`` accept ``since`` (an *offset*
  in the list, not a sequence number) only together with ``limit``; one
  without the other is an HTTP 400.
* ``/changes?since=N&limit=M`` returns the changes with ``Seq > N``.  When
  the page is empty, ``Last`` is the highest sequence number ever used
  (even if those changes are gone), otherwise the ``Seq`` of the last
  change returned.  ``limit`` defaults to 100; ``limit=0`` returns nothing
  with ``Done`` false.  Deletions are never reported, and deleting a
  resource also deletes its past changes from the log.
* ``HEAD`` is not supported on resources (always 404): use ``GET``.
* An unknown resource is a 404 with an empty body.

Orthanc also speaks DICOM to remote nodes for GNU Health (echo, C-FIND,
C-MOVE): the methods of the "DICOM networking" section, whose failures are
the typed errors of :class:`DicomNetworkError`; what they exchange is in
:mod:`.dicom_network`.
"""
import base64
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

import requests

from .dicom_network import (
    REASONS, STUDY_RETURN_KEYS, DicomNode, LocalAE, RetrieveJob, StudyAnswer,
    map_job, map_study_answer, validate_node)

__all__ = [
    'normalize_domain', 'credential_forms', 'Scrubber', 'OrthancClient',
    'Change', 'ChangesPage',
    'OrthancError', 'OrthancUnauthorized', 'OrthancNotFound',
    'OrthancUnreachable', 'OrthancTimeout', 'OrthancTLSError', 'NotOrthanc',
    'OrthancBadAnswer', 'OrthancStalled', 'BodySizeError', 'LEVELS',
    'DicomNetworkError', 'NodeInvalid', 'NodeNotDeclared', 'NodeUnreachable',
    'NodeTimeout', 'NotDicom', 'AssociationRejected', 'AssociationAborted',
    'AnswerLimitReached', 'MoveRefused', 'DimseFailure', 'QueryExpired',
    'JobVanished', 'classify_details', 'classify_error', 'local_ae_of',
    ]

logger = logging.getLogger(__name__)

#: Orthanc resource levels and their REST collection names.
LEVELS = {
    'patient': 'patients',
    'study': 'studies',
    'series': 'series',
    'instance': 'instances',
    }
RETRY_STATUS = {502, 503, 504}
IDEMPOTENT_METHODS = {'GET', 'HEAD', 'OPTIONS'}
SYSTEM_KEYS = ('ApiVersion', 'Version', 'Name')
MAX_DETAILS = 300
MAX_BACKOFF = 30
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
UPLOAD_BLOCK = 64 * 1024
#: A user name or password shorter than this is not scrubbed alone: it
#: would blank out ordinary words (the pair user:password always is)
MIN_SECRET = 3
MASK = '***'
CA_BUNDLE_MASK = '(CA bundle)'
#: The value of an Authorization header echoed in a text, whatever its
#: scheme: even cut short, a Basic value gives the credentials' start.
#: A token with a capital, a digit or a sign, not a word ("Basic auth")
AUTHORIZATION_VALUE = re.compile(
    r'\b((?i:basic|bearer|digest))(?:\s+|%20|\+)'
    r'(?=[\w+/=.~%-]*[A-Z0-9+/=%])[\w+/=.~%-]+')
PERCENT_ESCAPE = re.compile(r'%([0-9A-F])([0-9A-F])')
#: The characters from which the start of a base64 credential is masked
BASE64_START = 6
#: The first Orthanc whose worklists plugin has a REST API
WORKLISTS_VERSION = (1, 12, 10)


def normalize_domain(url: str) -> str:
    """Return the normalized base URL of an Orthanc server.

    Parameters
    ----------
    url : str
        An ``http`` or ``https`` URL, possibly with a path prefix when
        Orthanc is behind a reverse proxy
        (``https://pacs.example.org/orthanc/``).

    Returns
    -------
    str
        The URL without surrounding spaces, query, fragment and trailing
        slash; scheme and host in lower case; the path prefix is kept.

    Raises
    ------
    ValueError
        If the URL is empty, has no http/https scheme or host, has an
        invalid port or contains credentials.
    """
    if not isinstance(url, str):
        raise ValueError('The Orthanc URL must be a text.')
    url = url.strip()
    if not url:
        raise ValueError('The Orthanc URL is empty.')
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError('The Orthanc URL "%s" is not valid (%s).'
            % (url, exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in ('http', 'https'):
        raise ValueError('The Orthanc URL must start with http:// or '
            'https://, e.g. "https://pacs.example.org/orthanc".')
    if parts.username is not None or parts.password is not None:
        raise ValueError('The Orthanc URL must not contain a user name or a '
            'password; enter them in the user and password fields.')
    host = parts.hostname
    if not host:
        raise ValueError('The Orthanc URL has no host name.')
    if ':' in host:
        host = '[%s]' % host
    netloc = host if port is None else '%s:%d' % (host, port)
    path = parts.path.rstrip('/')
    return urlunsplit((scheme, netloc, path, '', ''))


# -- credentials in texts ----------------------------------------------------
def _encodings(value: str) -> list[bytes]:
    "The bytes an HTTP client may send for value (requests uses Latin-1)"
    forms = [value.encode('utf-8')]
    try:
        latin = value.encode('latin-1')
    except UnicodeEncodeError:
        pass
    else:
        if latin not in forms:
            forms.append(latin)
    return forms


def _written_forms(value: str) -> set[str]:
    "value as a server may write it back: as is, URL-encoded, JSON-escaped"
    forms = {value, json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1]}
    forms |= {quote(value, safe=''), quote(value), quote_plus(value)}
    return forms


def _pattern(form: str) -> str:
    "The regular expression of form, its %-escapes in either case"
    return PERCENT_ESCAPE.sub(
        lambda m: '%%[%s%s][%s%s]' % (m.group(1), m.group(1).lower(),
            m.group(2), m.group(2).lower()),
        re.escape(form))


def _secrets(user: str, password: str) -> set[str]:
    "The user name, the password and the user:password of HTTP Basic"
    values = {v for v in (user, password) if len(v) >= MIN_SECRET}
    if user or password:
        values.add('%s:%s' % (user, password))
    return values


def _base64_forms(values) -> set[str]:
    forms = set()
    for value in values:
        for raw in _encodings(value):
            for encoder in (base64.b64encode, base64.urlsafe_b64encode):
                encoded = encoder(raw).decode('ascii')
                forms |= {encoded, encoded.rstrip('=')}
    return forms


def credential_forms(user: str | None, password: str | None) -> list[str]:
    """Return every text that would give away the credentials, longest
    first.

    The user name and the password alone (from :data:`MIN_SECRET`
    characters), the ``user:password`` of HTTP Basic, each of them in
    base64 (standard and URL-safe, with and without padding, from UTF-8
    and Latin-1), and all of these URL-encoded (matched with their
    %-escapes in either case) or JSON-escaped.
    """
    values = _secrets(user or '', password or '')
    forms = set()
    for value in values | _base64_forms(values):
        forms |= _written_forms(value)
    forms.discard('')
    return sorted(forms, key=lambda f: (-len(f), f))


class Scrubber:
    """Remove credentials from texts.

    Every form of :func:`credential_forms`, any Authorization value
    (``Basic ...``) and the start of a base64 form cut short (from
    :data:`BASE64_START` characters) become ``***``.  Scrub a text before
    cutting it short: a form cut in the middle is no longer recognised.
    """

    def __init__(self, user: str | None, password: str | None):
        forms = credential_forms(user, password)
        # The user name alone is masked as a whole word: "admin" must not
        # turn "administrator" into "***istrator"
        words = _written_forms(user) if user and len(user) >= MIN_SECRET \
            and user != password else set()
        self._pattern = re.compile('|'.join(
                r'(?<!\w)%s(?!\w)' % _pattern(f) if f in words
                else _pattern(f) for f in forms)) if forms else None
        self._base64 = sorted(
            (f for f in _base64_forms(_secrets(user or '', password or ''))
                if len(f) > BASE64_START), key=len, reverse=True)

    def __call__(self, text: Any) -> str:
        text = '' if text is None else str(text)
        if not text:
            return text
        text = AUTHORIZATION_VALUE.sub(
            lambda m: '%s %s' % (m.group(1), MASK), text)
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        for form in self._base64:
            text = _mask_starts(text, form)
        return text


def _mask_starts(text: str, form: str) -> str:
    "Mask what begins like form for at least BASE64_START characters"
    head = form[:BASE64_START]
    start = text.find(head)
    while start >= 0:
        end = start + len(head)
        while (end < len(text) and end - start < len(form)
                and text[end] == form[end - start]):
            end += 1
        text = text[:start] + MASK + text[end:]
        start = text.find(head, start + len(MASK))
    return text


# -- errors ------------------------------------------------------------------
class OrthancError(Exception):
    """Base class of the errors of this client.

    ``str()`` is a short, user-safe message: an error made by
    :class:`OrthancClient` contains neither the user name nor the password
    in any form (see :class:`Scrubber`), even from a server that echoes
    the request's headers.

    Attributes
    ----------
    status : int or None
        The HTTP status, None if there was no HTTP answer.
    message : str
        Orthanc's ``Message`` of the error body, if any.
    details : str
        Orthanc's ``Details`` of the error body, if any.
    url : str or None
        The URL requested (never contains credentials).
    """
    default_text = 'Orthanc error'
    #: whether an idempotent request may be retried after this error
    retryable = False

    def __init__(self, text: str | None = None, status: int | None = None,
            message: str = '', details: str = '', url: str | None = None):
        self.text = text or self.default_text
        self.status = status
        self.message = message or ''
        self.details = details or ''
        self.url = url
        super().__init__(str(self))

    def __str__(self):
        text = self.text
        extra = [x for x in (self.message, self.details)
            if x and x not in text]
        if extra:
            text = '%s: %s' % (text, ' - '.join(extra))
        if len(text) > 2 * MAX_DETAILS:
            text = text[:2 * MAX_DETAILS] + '...'
        return text


class OrthancUnauthorized(OrthancError):
    "Wrong user or password (HTTP 401) or access forbidden (HTTP 403)."
    default_text = 'Orthanc refused the user name or password'


class OrthancNotFound(OrthancError):
    "The resource does not exist (HTTP 404)."
    default_text = 'Not found on Orthanc'


class OrthancUnreachable(OrthancError):
    "No HTTP answer: connection refused, DNS failure, connection lost."
    default_text = 'Cannot reach the Orthanc server'


class OrthancTimeout(OrthancUnreachable):
    "The server did not answer in time."
    default_text = 'The Orthanc server did not answer in time'


class OrthancTLSError(OrthancUnreachable):
    "The TLS handshake or the certificate verification failed."
    default_text = 'Secure connection to Orthanc failed (TLS/certificate)'


class NotOrthanc(OrthancError):
    "An HTTP server answered but it is not an Orthanc."
    default_text = 'The server answering at this address is not an Orthanc'


class OrthancBadAnswer(OrthancError):
    "Server error after retries, or an invalid/truncated/unexpected answer."
    default_text = 'Orthanc sent an invalid answer'


class OrthancStalled(OrthancBadAnswer):
    """A paged answer that does not advance: a page of changes that is not
    after the one asked for, an empty page that is not the last, the same
    page of a listing again (e.g. a caching proxy that ignores the
    query).  Following it would ask forever."""
    default_text = 'Orthanc sent the same page again'


# -- errors of DICOM networking -------------------------------------------
_OPERATION_TEXT = {
    'echo': 'the echo (C-ECHO)',
    'find': 'the query (C-FIND)',
    'move': 'the retrieval (C-MOVE)',
    }


class DicomNetworkError(OrthancError):
    """An error talking DICOM to a node, through Orthanc.

    ``code`` names the kind of error for the caller's messages; ``node``
    is the node's name in Orthanc; ``dimse_status`` the DIMSE status when
    the node answered with one; ``operation`` is ``echo``, ``find``,
    ``move``, ``declare``...
    """
    code = 'dicom_error'
    template = 'DICOM error with node "%(node)s"'

    def __init__(self, node: str = '', text: str | None = None,
            operation: str = '', dimse_status: int | None = None,
            **kwargs):
        self.node = node
        self.operation = operation
        self.dimse_status = dimse_status
        if text is None:
            text = self.template % {
                'node': node,
                'operation': _OPERATION_TEXT.get(operation, 'the request'),
                'status': dimse_status or 0,
                }
        super().__init__(text, **kwargs)


class NodeInvalid(DicomNetworkError, ValueError):
    """The node's settings are invalid; nothing was sent to Orthanc.

    ``problems`` lists ``(field, reason)``, reasons are keys of
    :data:`REASONS`.
    """
    code = 'node_invalid'
    template = 'The DICOM node "%(node)s" is not valid'

    def __init__(self, node, problems, **kwargs):
        self.problems = list(problems)
        text = '%s: %s' % (self.template % {'node': node}, ' '.join(
                '%s: %s' % (name, REASONS.get(reason, reason))
                for name, reason in self.problems))
        super().__init__(node, text, operation='declare', **kwargs)


class NodeNotDeclared(DicomNetworkError):
    code = 'node_not_declared'
    template = ('The DICOM node "%(node)s" is not declared in Orthanc: '
        'declare it again (Orthanc forgets nodes declared through its API '
        'when it restarts, unless DicomModalitiesInDatabase is true)')


class NodeUnreachable(DicomNetworkError):
    code = 'node_down'
    template = ('The DICOM node "%(node)s" cannot be reached: check that it '
        'is running and that its host and port are right')


class NodeTimeout(DicomNetworkError):
    code = 'node_timeout'
    template = ('The DICOM node "%(node)s" did not answer in time: check '
        'that its port is its DICOM port and that the network lets our '
        'Orthanc reach it, or give it a longer timeout')


class NotDicom(DicomNetworkError):
    code = 'not_dicom'
    template = ('Something answers at the host and port of the DICOM node '
        '"%(node)s" but it does not speak DICOM: check the port')


class AssociationRejected(DicomNetworkError):
    code = 'aet_rejected'
    template = ('The DICOM node "%(node)s" rejected the connection: check '
        'its AE title, and that it knows our AE title with our host and '
        'DICOM port')


class AssociationAborted(DicomNetworkError):
    code = 'aborted'
    template = ('The DICOM node "%(node)s" broke off %(operation)s: it may '
        'not allow it to our AE title (check that it knows our AE title '
        'with our host and DICOM port), or it stopped')


class AnswerLimitReached(DicomNetworkError):
    code = 'answer_limit'
    template = ('The DICOM node "%(node)s" has more answers than it agrees '
        'to send (status 0x%(status)04X): narrow the query, e.g. its date '
        'range')


class MoveRefused(DicomNetworkError):
    code = 'move_refused'
    template = ('The DICOM node "%(node)s" refused to send the studies '
        '(status 0x%(status)04X): check that it knows our AE title with '
        'our host and DICOM port, and that it still has the studies')


class DimseFailure(DicomNetworkError):
    code = 'dimse_failure'
    template = ('The DICOM node "%(node)s" failed %(operation)s with the '
        'status 0x%(status)04X')


class QueryExpired(DicomNetworkError):
    code = 'query_expired'
    template = ('Orthanc no longer keeps this query (it keeps only the last '
        'QueryRetrieveSize ones): query the node again')


class JobVanished(DicomNetworkError):
    code = 'job_vanished'
    template = ('Orthanc no longer knows this retrieval job (it forgets '
        'finished jobs after JobsHistorySize newer ones, and every job when '
        'it restarts): check which studies arrived')


# Details of Orthanc 1.10.1 (DCMTK 3.6.7) and what they mean, first match
_DETAILS = [
    (re.compile(r'DIMSE status 0x(FE00|A700)', re.I), AnswerLimitReached),
    (re.compile(r'C-MOVE.*DIMSE status 0xC0', re.I), MoveRefused),
    (re.compile(r'DIMSE status 0x([0-9A-F]{4})', re.I), DimseFailure),
    (re.compile(r'connection refused|unknown host|no route to host'
        r'|network is unreachable|host is unreachable', re.I),
        NodeUnreachable),
    (re.compile(r'timeout|timed out', re.I), NodeTimeout),
    (re.compile(r'association rejected', re.I), AssociationRejected),
    (re.compile(r'unrecognized PDU|illegal PDU|invalid PDU', re.I), NotDicom),
    (re.compile(r'peer aborted|association aborted|connection reset'
        r'|connection closed', re.I), AssociationAborted),
    ]
_OPERATION = re.compile(r'\b(C-FIND|C-MOVE|C-ECHO|C-STORE|C-GET)\b', re.I)


def classify_details(details: str, node: str, operation: str = '',
        **kwargs) -> DicomNetworkError | None:
    """Return the typed error that Orthanc's ``details`` describe, or None.

    ``details`` is the ``Details`` of an HTTP error or the
    ``ErrorDetails`` of a failed job.
    """
    details = details or ''
    match = _OPERATION.search(details)
    if match:
        operation = {
            'C-FIND': 'find', 'C-MOVE': 'move', 'C-ECHO': 'echo',
            }.get(match.group(1).upper(), operation)
    for pattern, cls in _DETAILS:
        found = pattern.search(details)
        if found:
            status = None
            if pattern.groups:
                status = int(found.group(1), 16)
            elif cls is MoveRefused:
                status = 0xC000
            return cls(node, operation=operation, dimse_status=status,
                details=details, **kwargs)
    return None


def classify_error(error: OrthancError, node: str,
        operation: str = '') -> OrthancError:
    """Return the typed error of a failed DICOM request, else ``error``.

    HTTP-level errors (Orthanc unreachable, wrong password...) are
    returned as they are: they are about our Orthanc, not the node.
    """
    if isinstance(error, DicomNetworkError):
        return error
    kwargs = dict(status=error.status, message=error.message, url=error.url)
    if isinstance(error, OrthancNotFound) and 'modality' in (
            error.details or '').lower():
        return NodeNotDeclared(node, operation=operation,
            details=error.details, **kwargs)
    if error.status in (400, 422, 500):
        typed = classify_details(error.details, node, operation, **kwargs)
        if typed is not None:
            return typed
    return error


def _dicom_path(*parts: str) -> str:
    return '/'.join(quote(str(p), safe='') for p in parts)


def _dicom_timeout(timeout) -> dict:
    return {'Timeout': int(timeout)} if timeout else {}


def local_ae_of(system: dict) -> LocalAE:
    "Return our Orthanc's AE title and DICOM port from ``/system``"
    try:
        return LocalAE(aet=str(system['DicomAet']),
            port=int(system['DicomPort']))
    except (KeyError, TypeError, ValueError):
        raise OrthancBadAnswer('Unexpected answer from Orthanc for system',
            details='no DicomAet or DicomPort') from None


# -- data --------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """One entry of Orthanc's ``/changes`` log."""
    seq: int
    change_type: str
    resource_type: str
    resource_id: str
    date: str = ''


@dataclass
class ChangesPage:
    """A page of ``/changes``.

    ``last`` is the sequence number to pass as ``since`` for the next
    page; ``done`` is true when there is nothing after this page.
    """
    changes: list[Change] = field(default_factory=list)
    last: int = 0
    done: bool = True


def _short(text: Any, size: int = MAX_DETAILS) -> str:
    text = '' if text is None else str(text).strip()
    if len(text) > size:
        text = text[:size] + '...'
    return text


class BodySizeError(ValueError):
    """A streamed body ended before its announced length, or went on after
    it: the request was cut off (its connection closed) before it was
    complete, so the server never took it nor waits for the rest."""

    def __init__(self, announced: int, sent: int, longer: bool = False):
        self.announced = announced
        self.sent = sent
        self.longer = longer
        super().__init__('%s bytes announced, %s %d read' % (
                announced, 'more than' if longer else 'only', sent))


class _Body:
    """A file-like body that requests sends in blocks, with its length.

    requests gives a Content-Length to bodies it can measure; a zip
    member cannot be measured without reading it, and Orthanc's HTTP
    server does not take chunked request bodies.  Exactly ``size`` bytes
    are sent: a stream that ends sooner, or that has more (checked before
    its last block is given), raises BodySizeError before the request is
    complete, instead of leaving the server waiting for bytes that never
    come or sending it what was not announced.
    """

    def __init__(self, stream, size=None):
        self.stream = stream
        if size is None:
            size = _stream_size(stream)
        self.size = int(size)
        self.left = self.size

    def __len__(self):
        return self.size

    def read(self, size=-1):
        if self.left <= 0:
            return b''
        if size is None or size < 0 or size > self.left:
            size = self.left
        block = self.stream.read(size)
        if not block:
            raise BodySizeError(self.size, self.size - self.left)
        self.left -= len(block)
        if not self.left and self.stream.read(1):
            raise BodySizeError(self.size, self.size, longer=True)
        return block

    def __iter__(self):
        while True:
            block = self.read(UPLOAD_BLOCK)
            if not block:
                return
            yield block


def _stream_size(stream) -> int:
    "Return the bytes left to read in a seekable stream"
    position = stream.tell()
    end = stream.seek(0, 2)
    stream.seek(position)
    return end - position


# -- client ------------------------------------------------------------------
def _version(text: str) -> tuple | None:
    match = re.match(r'(\d+)\.(\d+)\.(\d+)', text or '')
    return tuple(int(n) for n in match.groups()) if match else None


class OrthancClient:
    """Client of the Orthanc REST API.

    Parameters
    ----------
    domain : str
        Base URL, see :func:`normalize_domain`.
    user, password : str, optional
        HTTP Basic credentials.
    timeout : float or (float, float)
        Connect and read timeouts in seconds.
    retries : int
        Number of *additional* attempts for idempotent requests after a
        connection error or an HTTP 502/503/504.
    backoff : float
        First back-off delay in seconds, doubled at each retry.
    verify : bool or str
        Verify the TLS certificate (True), do not (False) or use the CA
        bundle at this path.
    session : requests.Session, optional
        Session to use (it is not closed by :meth:`close`).

    Attributes
    ----------
    request_count : int
        Number of HTTP requests sent (each attempt counts).
    """

    def __init__(self, domain: str, user: str | None = None,
            password: str | None = None,
            timeout: float | tuple[float, float] = (5, 60),
            retries: int = 3, backoff: float = 0.5,
            verify: bool | str = True,
            session: requests.Session | None = None):
        self.domain = normalize_domain(domain)
        self.user = user or None
        self._password = password or ''
        self._scrub = Scrubber(self.user, self._password)
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = max(0.0, float(backoff))
        self.verify = verify
        self._own_session = session is None
        self.session = session if session is not None else requests.Session()
        self.request_count = 0

    def __repr__(self):
        return '<OrthancClient %s user=%r>' % (self.domain, self.user)

    # -- plumbing -----------------------------------------------------------
    @property
    def _auth(self):
        if self.user:
            return (self.user, self._password)
        return None

    def url(self, path: str) -> str:
        """Return the absolute URL of ``path`` (the path prefix is kept)."""
        return '%s/%s' % (self.domain, path.lstrip('/'))

    def _error(self, cls, text=None, **kwargs):
        """Return the error cls: every error of the client is made here,
        its texts scrubbed of the credentials, then cut short"""
        for key in ('message', 'details'):
            if kwargs.get(key):
                kwargs[key] = _short(self._hide_paths(
                        self._scrub(kwargs[key])))
        if text:
            text = self._hide_paths(self._scrub(text))
        return cls(text, **kwargs)

    def _hide_paths(self, text):
        "The path of the CA bundle is the Tryton server's, not for users"
        if isinstance(self.verify, str) and self.verify:
            text = text.replace(self.verify, CA_BUNDLE_MASK)
        return text

    def _send(self, method: str, url: str, params=None, auth=True,
            data=None, headers=None):
        kwargs = {
            'params': params,
            'data': data,
            'headers': headers,
            'timeout': self.timeout,
            'verify': self.verify,
            'auth': self._auth if auth else None,
            'allow_redirects': False,
            }
        try:
            return self.session.request(method, url, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise self._error(OrthancTLSError,
                details=self._reason(exc), url=url) from None
        except requests.exceptions.ConnectTimeout:
            error = self._error(OrthancTimeout,
                'Timed out while connecting to the Orthanc server', url=url)
            error.retryable = True
            raise error from None
        except requests.exceptions.ReadTimeout:
            raise self._error(OrthancTimeout, url=url) from None
        except requests.exceptions.ConnectionError as exc:
            if 'read timed out' in str(exc).lower():
                # requests wraps a timeout while reading the body this way
                raise self._error(OrthancTimeout, url=url) from None
            error = self._error(OrthancUnreachable,
                details=self._reason(exc), url=url)
            error.retryable = True
            raise error from None
        except (requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError):
            raise self._error(OrthancBadAnswer,
                'The answer of Orthanc was cut off', url=url) from None
        except requests.exceptions.InvalidURL:
            raise self._error(OrthancUnreachable,
                'Invalid Orthanc URL', url=url) from None
        except OSError as exc:
            # e.g. a CA bundle path that does not exist
            raise self._error(OrthancTLSError,
                details=str(exc), url=url) from None

    @staticmethod
    def _reason(exc: Exception) -> str:
        text = str(exc)
        lowered = text.lower()
        for needle, reason in [
                ('certificate verify failed', 'certificate verification '
                    'failed'),
                ('hostname mismatch', 'certificate does not match the host '
                    'name'),
                ('wrong version number', 'the server does not speak TLS'),
                ('name or service not known', 'unknown host name'),
                ('nodename nor servname', 'unknown host name'),
                ('temporary failure in name resolution',
                    'host name resolution failed'),
                ('failed to resolve', 'unknown host name'),
                ('getaddrinfo failed', 'unknown host name'),
                ('connection refused', 'connection refused'),
                ('remotedisconnected', 'connection closed by the server'),
                ('connection aborted', 'connection closed by the server'),
                ('connection reset', 'connection reset by the server'),
                ('no route to host', 'no route to host'),
                ('network is unreachable', 'network is unreachable'),
                ]:
            if needle in lowered:
                return reason
        return 'connection failed'

    def request(self, method: str, path: str, params=None,
            auth: bool = True, data=None,
            headers=None) -> requests.Response:
        """Send a request and return the successful response.

        Idempotent requests are retried on connection errors (not on
        TLS errors nor read timeouts) and on HTTP 502/503/504.

        Raises
        ------
        OrthancError
            A subclass matching the failure.
        """
        method = method.upper()
        url = self.url(path)
        attempts = 1 + (self.retries if method in IDEMPOTENT_METHODS else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            self.request_count += 1
            logger.debug('%s %s %s (attempt %d)', method, url, params or '',
                attempt + 1)
            try:
                response = self._send(method, url, params=params, auth=auth,
                    data=data, headers=headers)
            except OrthancError as exc:
                if last or not exc.retryable:
                    raise
                logger.warning('Orthanc %s %s: %s, retrying', method, url,
                    exc)
            else:
                if response.status_code in RETRY_STATUS and not last:
                    logger.warning('Orthanc %s %s: HTTP %s, retrying',
                        method, url, response.status_code)
                    response.close()
                else:
                    return self._check_status(response, url)
            if self.backoff:
                time.sleep(min(self.backoff * 2 ** attempt, MAX_BACKOFF))
        raise AssertionError('unreachable')  # pragma: no cover

    def _check_status(self, response: requests.Response, url: str):
        status = response.status_code
        if 200 <= status < 300:
            return response
        message, details = self._error_body(response)
        kwargs = dict(status=status, message=message, details=details,
            url=url)
        if status in (401, 403):
            if status == 401:
                text = 'Orthanc refused the user name or password (HTTP 401)'
            else:
                text = 'Access forbidden by Orthanc (HTTP 403)'
            raise self._error(OrthancUnauthorized, text, **kwargs)
        if status == 404:
            raise self._error(OrthancNotFound,
                'Not found on Orthanc (HTTP 404)', **kwargs)
        if status >= 500:
            raise self._error(OrthancBadAnswer,
                'Orthanc server error (HTTP %d)' % status, **kwargs)
        if 300 <= status < 400:
            location = response.headers.get('Location', '')
            raise self._error(NotOrthanc,
                'The server redirects (HTTP %d) instead of answering; check '
                'the URL (http/https, path prefix)' % status,
                details=location, status=status, url=url)
        raise self._error(OrthancError,
            'Orthanc rejected the request (HTTP %d)' % status, **kwargs)

    @staticmethod
    def _error_body(response: requests.Response) -> tuple[str, str]:
        "Orthanc's Message and Details, whole: cut once scrubbed"
        try:
            body = response.json()
        except ValueError:
            return '', ''
        if not isinstance(body, dict):
            return '', ''
        return (str(body.get('Message') or ''),
            str(body.get('Details') or ''))

    def get_json(self, path: str, params=None, auth: bool = True) -> Any:
        """GET ``path`` and return the decoded JSON.

        Raises
        ------
        OrthancBadAnswer
            If the body is not valid JSON.
        """
        url = self.url(path)
        response = self.request('GET', path, params=params, auth=auth)
        try:
            return response.json()
        except ValueError:
            raise self._error(OrthancBadAnswer,
                'Orthanc sent an answer that is not valid JSON',
                status=response.status_code, url=url) from None

    def _expect(self, value: Any, kind: type, what: str) -> Any:
        if not isinstance(value, kind):
            raise self._error(OrthancBadAnswer,
                'Unexpected answer from Orthanc for %s' % what,
                details='expected %s, got %s' % (kind.__name__,
                    type(value).__name__))
        return value

    def _expect_list_of_dicts(self, value: Any, what: str) -> list[dict]:
        self._expect(value, list, what)
        for item in value:
            self._expect(item, dict, what)
        return value

    # -- system -------------------------------------------------------------
    def system(self) -> dict:
        """Return ``GET /system``, checking that the server is an Orthanc.

        Raises
        ------
        NotOrthanc
            If ``/system`` is missing, is not JSON or lacks Orthanc's keys.
        OrthancUnauthorized
            With wrong credentials (when authentication is enabled).
        """
        url = self.url('system')
        try:
            response = self.request('GET', 'system')
        except OrthancNotFound:
            raise self._error(NotOrthanc,
                'No Orthanc at this address (/system not found); check the '
                'URL and its path prefix', status=404, url=url) from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or not all(
                key in data for key in SYSTEM_KEYS):
            raise self._error(NotOrthanc,
                'The server answering at this address is not an Orthanc '
                '(unexpected /system answer)',
                status=response.status_code, url=url)
        return data

    def check(self) -> dict:
        """Check the server is an Orthanc and the credentials work.

        Returns
        -------
        dict
            The ``/system`` answer.

        Raises
        ------
        OrthancUnauthorized
            On wrong credentials.  Note that an Orthanc without
            ``AuthenticationEnabled`` accepts any credentials.
        """
        system = self.system()
        # /system needs credentials on Orthanc 1.10 but may be public on a
        # reverse proxy or other versions: prove them on a protected route.
        self.last_change()
        return system

    def authentication_enforced(self) -> bool:
        """Return whether Orthanc refuses an anonymous request.

        False means that anybody reaching the server can read it (and
        that wrong credentials are not detected by :meth:`check`).
        """
        try:
            self.request('GET', 'changes', params={'last': ''}, auth=False)
        except OrthancUnauthorized:
            return True
        except OrthancNotFound:
            pass
        return False

    def statistics(self) -> dict:
        "Return ``GET /statistics`` (counts and sizes)."
        return self._expect(self.get_json('statistics'), dict, 'statistics')

    # -- changes ------------------------------------------------------------
    def last_change(self) -> int:
        """Return the sequence number of the last change (0 if none)."""
        data = self._expect(self.get_json('changes', {'last': ''}), dict,
            'changes')
        try:
            return int(data['Last'])
        except (KeyError, TypeError, ValueError):
            raise self._error(OrthancBadAnswer,
                'Unexpected answer from Orthanc for changes',
                details='missing "Last"') from None

    def get_changes(self, since: int, limit: int = 1000) -> ChangesPage:
        """Return the changes with a sequence number greater than ``since``.

        Parameters
        ----------
        since : int
            Last sequence number already processed (0 for all).
        limit : int
            Maximum number of changes (at least 1).

        Returns
        -------
        ChangesPage
            ``last`` is the next ``since``: the sequence of the last change
            returned, or when the page is empty Orthanc's highest sequence
            number (lower than ``since`` if Orthanc's database was reset).
        """
        limit = max(1, int(limit))
        data = self._expect(self.get_json('changes',
                {'since': int(since), 'limit': limit}), dict, 'changes')
        try:
            changes = [Change(
                    seq=int(c['Seq']),
                    change_type=str(c['ChangeType']),
                    resource_type=str(c['ResourceType']),
                    resource_id=str(c['ID']),
                    date=str(c.get('Date') or ''))
                for c in data['Changes']]
            last = int(data['Last'])
            done = bool(data['Done'])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._error(OrthancBadAnswer,
                'Unexpected answer from Orthanc for changes',
                details=_short(repr(exc))) from None
        page = ChangesPage(changes=changes, last=last, done=done)
        self._check_changes(page, int(since))
        return page

    def _check_changes(self, page: ChangesPage, since: int):
        """Raise OrthancStalled unless the page is after since: Orthanc
        only returns changes after since, and an empty page is the last"""
        if page.changes:
            first = min(c.seq for c in page.changes)
            if first > since and page.last > since:
                return
            raise self._error(OrthancStalled,
                'The change log of Orthanc did not advance',
                details='asked for the changes after %s, received changes '
                '%s to %s with Last %s' % (since, first,
                    max(c.seq for c in page.changes), page.last),
                url=self.url('changes'))
        if not page.done:
            raise self._error(OrthancStalled,
                'The change log of Orthanc did not advance',
                details='asked for the changes after %s, received none '
                'with Last %s and Done false' % (since, page.last),
                url=self.url('changes'))

    # -- listings -----------------------------------------------------------
    def _list(self, collection: str, since: int, limit: int) -> list[dict]:
        limit = max(1, int(limit))
        data = self.get_json(collection,
            {'expand': '', 'since': max(0, int(since)), 'limit': limit})
        return self._expect_list_of_dicts(data, collection)

    def list_ids(self, collection: str) -> list[str]:
        """Return the IDs of every resource of ``collection``.

        ``collection`` is ``'patients'``, ``'studies'`` or ``'series'``;
        one request, used to find what was deleted in Orthanc.
        """
        data = self._expect(self.get_json(collection), list, collection)
        if not all(isinstance(i, str) for i in data):
            raise self._error(OrthancBadAnswer,
                'Orthanc sent an invalid list of %s' % collection)
        return data

    def list_patients(self, since: int = 0, limit: int = 500) -> list[dict]:
        """Return expanded patients ``since`` (an offset) up to ``limit``.

        Orthanc's order is its internal insertion order, not guaranteed;
        deleting resources while paging shifts the offsets.
        """
        return self._list('patients', since, limit)

    def list_studies(self, since: int = 0, limit: int = 500) -> list[dict]:
        "Return expanded studies, see :meth:`list_patients`."
        return self._list('studies', since, limit)

    def list_series(self, since: int = 0, limit: int = 500) -> list[dict]:
        "Return expanded series, see :meth:`list_patients`."
        return self._list('series', since, limit)

    def check_page(self, collection: str, items: list[dict], limit: int,
            previous: list[str] | None = None) -> list[str]:
        """Return the IDs of a page of a listing; raise OrthancStalled
        when it cannot be the page asked for.

        A page holds at most ``limit`` items, and a full page is not the
        previous one (``previous``, its IDs) again: a server or proxy
        ignoring ``since`` or ``limit`` would be listed forever.
        """
        ids = [i.get('ID') for i in items]
        if len(items) > limit:
            raise self._error(OrthancStalled,
                'Orthanc did not page the list of %s' % collection,
                details='received %d for a page of %d' % (
                    len(items), limit),
                url=self.url(collection))
        if previous and len(items) == limit and ids == previous:
            raise self._error(OrthancStalled,
                'Orthanc sent the same page of %s again' % collection,
                details='%d identical items from %s' % (len(ids), ids[0]),
                url=self.url(collection))
        return ids

    def _iter(self, collection: str, page_size: int) -> Iterator[dict]:
        page_size = max(1, int(page_size))
        since, ids = 0, None
        while True:
            page = self._list(collection, since, page_size)
            ids = self.check_page(collection, page, page_size, ids)
            yield from page
            if len(page) < page_size:
                return
            since += len(page)

    def iter_patients(self, page_size: int = 500) -> Iterator[dict]:
        "Yield every expanded patient, fetching ``page_size`` at a time."
        return self._iter('patients', page_size)

    def iter_studies(self, page_size: int = 500) -> Iterator[dict]:
        "Yield every expanded study, fetching ``page_size`` at a time."
        return self._iter('studies', page_size)

    def iter_series(self, page_size: int = 500) -> Iterator[dict]:
        "Yield every expanded series, fetching ``page_size`` at a time."
        return self._iter('series', page_size)

    # -- resources ----------------------------------------------------------
    @staticmethod
    def _path(collection: str, resource_id: str, *rest: str) -> str:
        if not resource_id or not isinstance(resource_id, str):
            raise ValueError('An Orthanc identifier is required.')
        return '/'.join((collection, quote(resource_id, safe='')) + rest)

    def get_patient(self, patient_id: str) -> dict:
        "Return ``GET /patients/{id}``; raise OrthancNotFound if unknown."
        return self._expect(self.get_json(
                self._path('patients', patient_id)), dict, 'patient')

    def get_study(self, study_id: str) -> dict:
        "Return ``GET /studies/{id}``; raise OrthancNotFound if unknown."
        return self._expect(self.get_json(
                self._path('studies', study_id)), dict, 'study')

    def get_series(self, series_id: str) -> dict:
        "Return ``GET /series/{id}``; raise OrthancNotFound if unknown."
        return self._expect(self.get_json(
                self._path('series', series_id)), dict, 'series')

    def get_study_series(self, study_id: str) -> list[dict]:
        "Return the expanded series of a study (``/studies/{id}/series``)."
        data = self.get_json(self._path('studies', study_id, 'series'),
            {'expand': ''})
        return self._expect_list_of_dicts(data, 'study series')

    def get_study_statistics(self, study_id: str) -> dict:
        "Return ``GET /studies/{id}/statistics`` (counts and sizes)."
        return self._expect(self.get_json(
                self._path('studies', study_id, 'statistics')), dict,
            'study statistics')

    def get_series_instances(self, series_id: str) -> list[dict]:
        """Return the instances of a series (``/series/{id}/instances``).

        Each has its ``ID``, ``IndexInSeries`` (may be None) and
        ``MainDicomTags`` (``InstanceNumber``...).
        """
        data = self.get_json(self._path('series', series_id, 'instances'))
        return self._expect_list_of_dicts(data, 'series instances')

    def instance_preview(self, instance_id: str) -> bytes:
        """Return the PNG rendering of an instance (its first frame).

        ``GET /instances/{id}/preview`` renders the image with Orthanc's
        own decoder, scaled to 8 bits.

        Raises
        ------
        OrthancBadAnswer
            If the answer is not a PNG image (e.g. an instance without
            pixel data that Orthanc cannot render: HTTP 500 or 415).
        """
        response = self.request('GET',
            self._path('instances', instance_id, 'preview'),
            headers={'Accept': 'image/png'})
        content = response.content
        if not content.startswith(PNG_SIGNATURE):
            raise self._error(OrthancBadAnswer,
                'Orthanc did not send a PNG image for the preview',
                status=response.status_code, url=response.url)
        return content

    def upload_instance(self, stream, size: int | None = None) -> dict:
        """Store one DICOM file (``POST /instances``) and return the answer.

        Parameters
        ----------
        stream : bytes or file-like object
            The DICOM Part 10 file; a file object is sent in blocks as it
            is read, never held whole in memory.
        size : int, optional
            The length in bytes of ``stream`` when it cannot tell it (e.g.
            a member of a zip file), so it is sent with a Content-Length;
            exactly that many bytes are sent.

        Returns
        -------
        dict
            Orthanc's answer: ``ID``, ``ParentStudy``... and ``Status``,
            ``Success`` or ``AlreadyStored``.

        Raises
        ------
        OrthancError
            With ``status`` 400 when Orthanc cannot parse a DICOM file in
            ``stream``.  The request is never retried: the stream is
            consumed.
        BodySizeError
            When the stream holds fewer or more bytes than ``size``: the
            request was cut off before it was complete.
        """
        if not isinstance(stream, (bytes, bytearray)):
            stream = _Body(stream, size)
            if not len(stream):
                # requests would send an empty stream chunked
                stream = b''
        response = self.request('POST', 'instances', data=stream,
            headers={'Content-Type': 'application/dicom'})
        try:
            data = response.json()
        except ValueError:
            data = None
        return self._expect(data, dict, 'instance upload')

    def delete_study(self, study_id: str) -> dict:
        """Delete a study and its series and instances from Orthanc.

        Returns Orthanc's answer (``RemainingAncestor``: the patient if it
        has other studies, else None); raises OrthancNotFound if unknown.
        """
        response = self.request('DELETE', self._path('studies', study_id))
        try:
            return response.json()
        except ValueError:
            return {}

    # -- instances (dose reports, report documents) ------------------------
    def instance_metadata(self, instance_id: str, name: str) -> str | None:
        """Return the metadata name of an instance (``SopClassUid``...) from
        Orthanc's index, without reading the file; None when it has none"""
        try:
            response = self.request('GET',
                self._path('instances', instance_id, 'metadata', name))
        except OrthancNotFound:
            return None
        return response.text

    def instance_file(self, instance_id: str) -> bytes:
        "Return the DICOM file of an instance (``/instances/{id}/file``)"
        return self.request('GET',
            self._path('instances', instance_id, 'file')).content

    def instance_tag(self, instance_id: str, tag: str) -> str | None:
        """Return the value of a tag (``0008-0005``) of an instance as text,
        None when the instance does not have it"""
        try:
            response = self.request('GET',
                self._path('instances', instance_id, 'content', tag))
        except OrthancNotFound:
            return None
        return response.text

    def create_dicom(self, body: dict) -> dict:
        """Create an instance (``POST /tools/create-dicom``) and return
        Orthanc's answer (``ID``, ``ParentSeries``, ``ParentStudy``...).

        Not retried: a POST that reached Orthanc may have created it.
        """
        response = self.request('POST', 'tools/create-dicom',
            data=json.dumps(body),
            headers={'Content-Type': 'application/json'})
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not answer.get('ID'):
            raise self._error(OrthancBadAnswer,
                'Unexpected answer from Orthanc for tools/create-dicom',
                status=response.status_code, url=response.url)
        return answer

    def delete_instance(self, instance_id: str) -> bool:
        "Delete an instance; return False if it was already gone"
        try:
            self.request('DELETE', self._path('instances', instance_id)
                ).close()
        except OrthancNotFound:
            return False
        return True

    def plugins(self) -> list[str]:
        """Return the IDs of the plugins Orthanc runs (``GET /plugins``).

        ``explorer.js`` (the extensions of Orthanc Explorer the plugins
        register) is not a plugin and is left out.
        """
        data = self._expect(self.get_json('plugins'), list, 'plugins')
        return [p for p in data if isinstance(p, str) and p != 'explorer.js']

    def exists(self, level: str, resource_id: str) -> bool:
        """Return whether a resource exists.

        Parameters
        ----------
        level : str
            ``patient``, ``study``, ``series`` or ``instance`` (or the
            collection name, e.g. ``studies``; case-insensitive).
        resource_id : str
            Orthanc identifier.
        """
        level = (level or '').lower()
        collection = LEVELS.get(level, level)
        if collection not in LEVELS.values():
            raise ValueError('Unknown Orthanc level "%s".' % level)
        try:
            self.request('GET', self._path(collection, resource_id)).close()
        except OrthancNotFound:
            return False
        return True

    # -- worklists plugin (Orthanc 1.12.10 and later) ----------------------
    def worklists_available(self) -> bool:
        """Return whether the server offers the worklists REST API.

        The worklists plugin must be loaded (``GET /plugins`` lists
        ``worklists``) in version 1.12.10 or later (``GET /plugins/worklists``;
        ``mainline`` builds count as recent): Orthanc 1.10's
        ModalityWorklists plugin has the same name but no REST API.  Two
        small requests: the worklists themselves are never listed.
        """
        plugins = self.get_json('plugins')
        if not isinstance(plugins, list) or 'worklists' not in plugins:
            return False
        try:
            plugin = self.get_json('plugins/worklists')
        except OrthancNotFound:
            return False
        version = plugin.get('Version') if isinstance(plugin, dict) else None
        if not isinstance(version, str):
            return False
        if version.strip().lower() == 'mainline':
            return True
        parsed = _version(version)
        return parsed is not None and parsed >= WORKLISTS_VERSION

    def create_worklist(self, body: dict) -> str:
        """Create a worklist (``POST /worklists/create``); return its ID.

        body is ``{"Tags": {...}}``, Orthanc's JSON of the tags by keyword.
        Not retried: a POST that reached Orthanc may have created it.
        """
        response = self.request(
            'POST', 'worklists/create', data=json.dumps(body),
            headers={'Content-Type': 'application/json'})
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not answer.get('ID'):
            raise OrthancBadAnswer(
                'Unexpected answer from Orthanc for worklists/create',
                status=response.status_code)
        return str(answer['ID'])

    def delete_worklist(self, worklist_id: str) -> bool:
        "Delete a worklist by its ID; return False if it was already gone"
        try:
            self.request(
                'DELETE', 'worklists/%s' % quote(worklist_id, safe='')).close()
        except OrthancNotFound:
            return False
        return True

    # -- DICOM networking: Orthanc talks to the remote nodes ---------------
    def _post_dicom(self, path: str, body, node: str = '',
            operation: str = '') -> requests.Response:
        "POST ``body`` as JSON; raise the typed error of a DICOM failure"
        try:
            return self.request('POST', path, data=json.dumps(body),
                headers={'Content-Type': 'application/json'})
        except OrthancError as error:
            raise classify_error(error, node, operation) from None

    def _answer(self, response: requests.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise self._error(OrthancBadAnswer,
                'Unexpected answer from Orthanc for %s' % what,
                status=response.status_code) from None

    def _id_of(self, response: requests.Response, what: str) -> str:
        "The ``ID`` of the answer of a query or a job"
        data = self._answer(response, what)
        if not isinstance(data, dict) or not data.get('ID'):
            raise self._error(OrthancBadAnswer,
                'Unexpected answer from Orthanc for %s' % what)
        return str(data['ID'])

    def declare_node(self, node: DicomNode):
        """Create or update ``node`` in Orthanc (``PUT /modalities/{name}``).

        Raises
        ------
        NodeInvalid
            Before sending anything, if a setting is invalid.
        """
        problems = validate_node(node)
        if problems:
            raise NodeInvalid(node.name, problems)
        try:
            self.request('PUT', _dicom_path('modalities', node.name),
                data=json.dumps(node.payload()),
                headers={'Content-Type': 'application/json'})
        except OrthancError as error:
            raise classify_error(error, node.name, 'declare') from None

    def delete_node(self, name: str) -> bool:
        "Remove the node ``name`` from Orthanc; False if it was not there"
        try:
            self.request('DELETE', _dicom_path('modalities', name))
        except OrthancNotFound:
            return False
        return True

    def list_nodes(self) -> dict[str, DicomNode]:
        """Return the nodes Orthanc knows, by name (``/modalities?expand``).

        Nodes of the configuration file and nodes declared through the API
        look the same.
        """
        data = self._expect(self.get_json('modalities', {'expand': ''}),
            dict, 'modalities')
        return {name: DicomNode.from_orthanc(name, value)
            for name, value in data.items() if isinstance(value, dict)}

    def local_ae(self) -> LocalAE:
        "Return our Orthanc's own AE title and DICOM port (``/system``)"
        return local_ae_of(self._expect(self.get_json('system'), dict,
                'system'))

    def echo(self, name: str, timeout: int | None = None,
            check_find: bool = False) -> float:
        """C-ECHO the node ``name``; return the time it took, in seconds.

        Parameters
        ----------
        timeout : int, optional
            DICOM timeout in seconds (default: the node's, else Orthanc's
            ``DicomScuTimeout``, 10 s).  A port that accepts connections but
            never speaks DICOM waits this long; a closed port fails at once.
        check_find : bool
            Also check that the node accepts our C-FIND (a node may answer
            an echo from any AE title but refuse its queries).
        """
        body = _dicom_timeout(timeout)
        if check_find:
            body['CheckFind'] = True
        start = time.monotonic()
        self._post_dicom(_dicom_path('modalities', name, 'echo'), body, name,
            'echo')
        return time.monotonic() - start

    def start_query(self, name: str, query: dict, level: str = 'Study',
            timeout: int | None = None) -> str:
        """Send a C-FIND to the node ``name``; return Orthanc's query ID.

        ``query`` maps DICOM keywords to matching values; an empty value
        asks the node to send the attribute back.

        Raises
        ------
        AnswerLimitReached
            The node has more answers than it agrees to send; an Orthanc
            peer then sends none at all.
        """
        body = {'Level': level, 'Query': query}
        body.update(_dicom_timeout(timeout))
        return self._id_of(self._post_dicom(
                _dicom_path('modalities', name, 'query'), body, name, 'find'),
            'query')

    def query_answers(self, query_id: str) -> list[dict]:
        """Return the answers of a query, keyed by DICOM keyword.

        Raises
        ------
        QueryExpired
            Orthanc no longer keeps the query.
        """
        try:
            data = self.get_json(_dicom_path('queries', query_id, 'answers'),
                {'expand': '', 'simplify': ''})
        except OrthancNotFound:
            raise QueryExpired(operation='find') from None
        return self._expect_list_of_dicts(data, 'answers')

    def query_studies(self, name: str, query: dict,
            timeout: int | None = None) -> tuple[str, list[StudyAnswer]]:
        """C-FIND studies on the node ``name``; return the query ID (to
        retrieve them) and the answers.

        Answers without a StudyInstanceUID (which cannot be retrieved) are
        left out.
        """
        query_id, answers = self.query_indexed_studies(name, query, timeout)
        return query_id, [a for _, a in answers]

    def query_indexed_studies(self, name: str, query: dict,
            timeout: int | None = None
            ) -> tuple[str, list[tuple[int, StudyAnswer]]]:
        """C-FIND studies on the node ``name``; return the query ID and
        the answers with their index in the query (to retrieve one of
        them: ``retrieve_query(query_id, answer=index)``).

        Answers without a StudyInstanceUID are left out.
        """
        query = dict({key: '' for key in STUDY_RETURN_KEYS}, **query)
        query_id = self.start_query(name, query, timeout=timeout)
        answers = [(i, map_study_answer(a))
            for i, a in enumerate(self.query_answers(query_id))]
        return query_id, [(i, a) for i, a in answers if a.study_uid]

    def find_studies(self, name: str, query: dict,
            timeout: int | None = None) -> list[StudyAnswer]:
        "C-FIND studies on the node ``name``; see :meth:`query_studies`"
        return self.query_studies(name, query, timeout)[1]

    def retrieve_query(self, query_id: str, target_aet: str | None = None,
            answer: int | None = None, timeout: int | None = None,
            node: str = '') -> str:
        """Move the answers of a query (or its answer ``answer``); return a
        job.

        ``target_aet`` defaults to our Orthanc's AE title.  The job runs in
        Orthanc; follow it with :meth:`job_status`.

        Raises
        ------
        QueryExpired
            Orthanc no longer keeps the query.
        """
        parts = ['queries', query_id]
        if answer is not None:
            parts += ['answers', str(int(answer))]
        body = {'Synchronous': False}
        if target_aet:
            body['TargetAet'] = target_aet
        body.update(_dicom_timeout(timeout))
        try:
            response = self._post_dicom(_dicom_path(*parts, 'retrieve'), body,
                node, 'move')
        except OrthancNotFound:
            raise QueryExpired(node, operation='move') from None
        return self._id_of(response, 'retrieve')

    def retrieve_studies(self, name: str, study_uids, target_aet=None,
            timeout: int | None = None) -> tuple[str | None, list[str]]:
        """Start moving the studies ``study_uids`` from the node ``name``.

        Queries the node for exactly these studies (list of UID matching),
        then retrieves the answers as one job.  Keep ``study_uids`` under
        the node's answer limit.

        Returns
        -------
        (str or None, list of str)
            The job ID (None when the node has none of the studies) and
            the UIDs the node no longer has.
        """
        study_uids = list(dict.fromkeys(study_uids))
        query_id, answers = self.query_studies(name, {
                'StudyInstanceUID': '\\'.join(study_uids)}, timeout=timeout)
        found = {a.study_uid for a in answers}
        missing = [uid for uid in study_uids if uid not in found]
        if not found:
            return None, missing
        return self.retrieve_query(query_id, target_aet, timeout=timeout,
            node=name), missing

    def move_studies(self, name: str, study_uids, target_aet=None,
            timeout: int | None = None, one_move: bool = False):
        """Move the studies from the node ``name`` and wait until done.

        ``/modalities/{name}/move`` is synchronous whatever the body says:
        prefer :meth:`retrieve_studies` for large studies.  Orthanc sends
        one C-MOVE per study, each making the node open a new association
        to the target; ``one_move`` sends a single C-MOVE of the list of
        UIDs instead (2.5 times faster for 100 small studies on loopback,
        but a failure then tells nothing about which studies arrived).
        """
        study_uids = list(study_uids)
        if one_move:
            study_uids = ['\\'.join(study_uids)]
        body = {
            'Level': 'Study',
            'Resources': [{'StudyInstanceUID': uid} for uid in study_uids],
            }
        if target_aet:
            body['TargetAet'] = target_aet
        body.update(_dicom_timeout(timeout))
        self._post_dicom(_dicom_path('modalities', name, 'move'), body, name,
            'move')

    def job_status(self, job_id: str, node: str = '') -> RetrieveJob:
        """Return the state of a retrieve job (``GET /jobs/{id}``).

        Raises
        ------
        JobVanished
            Orthanc no longer knows the job.
        """
        try:
            data = self.get_json(_dicom_path('jobs', job_id))
        except OrthancNotFound:
            raise JobVanished(node, operation='move') from None
        job = map_job(self._expect(data, dict, 'job'), job_id)
        if job.state != 'Failure':
            return job
        error = classify_details(job.error_details, node, 'move') or (
            DimseFailure(node, text='Retrieval from DICOM node "%s" failed: '
                '%s' % (node, job.error_description or 'unknown error'),
                operation='move', details=job.error_details))
        return replace(job, error=error)

    def cancel_job(self, job_id: str) -> bool:
        """Cancel a job (``POST /jobs/{id}/cancel``); return whether Orthanc
        took the request: False for a job it does not know (Orthanc 1.10
        answers 400).  A job that already ended keeps its state."""
        try:
            self.request('POST', _dicom_path('jobs', job_id, 'cancel'),
                data='{}')
        except OrthancNotFound:
            return False
        except OrthancError as exception:
            if exception.status == 400:
                return False
            raise
        return True

    def find_local_studies(self, study_uids) -> dict[str, str]:
        """Return the Orthanc IDs of those of ``study_uids`` our Orthanc
        has.

        One ``/tools/find``; use it to see what a failed or vanished job
        brought in (a study may be there only in part).
        """
        study_uids = list(dict.fromkeys(study_uids))
        if not study_uids:
            return {}
        response = self.request('POST', 'tools/find', data=json.dumps({
                    'Level': 'Study', 'Expand': True,
                    'Query': {'StudyInstanceUID': '\\'.join(study_uids)},
                    }), headers={'Content-Type': 'application/json'})
        found = {}
        for study in self._answer(response, 'find') or []:
            uid = (study.get('MainDicomTags') or {}).get('StudyInstanceUID')
            if uid:
                found[uid] = study['ID']
        return found

    # -- life cycle ---------------------------------------------------------
    def close(self):
        "Close the HTTP session (if the client created it)."
        if self._own_session:
            self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
