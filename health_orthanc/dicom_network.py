# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The vocabulary of DICOM networking through Orthanc: nodes, answers, jobs.

Orthanc speaks DICOM to the remote nodes (PACS, modalities); the methods of
:class:`~.orthanc_client.OrthancClient` send it the REST requests and raise
its typed errors (``NodeUnreachable``, ``AnswerLimitReached``...).  This
module holds what they exchange, without any I/O: the validators of a
node's settings, the node as Orthanc declares it, a study found on a node,
the state of a retrieve job, and the mapping of Orthanc's answers.

Behaviour of Orthanc 1.10.1 the client relies on (measured on two real
servers):

* ``PUT /modalities/{name}`` takes effect at once but is forgotten at
  restart unless ``DicomModalitiesInDatabase`` is true (which then ignores
  the configuration file's modalities).  Orthanc accepts an empty AE title
  or host and a 17-character AE title: validate before sending.
* A failed DICOM exchange is an HTTP 500 (422 for C-MOVE) whose
  ``Details`` says what happened ("Connection refused", "DUL network read
  timeout", "DUL Association Rejected", "DIMSE status 0xFE00"...).
* An Orthanc peer with ``LimitFindResults`` fails the whole C-FIND with
  DIMSE status 0xFE00 and sends no answer at all.
* Orthanc keeps the last ``QueryRetrieveSize`` (100) queries and the last
  ``JobsHistorySize`` (10) finished jobs: older ones answer 404.
* ``/modalities/{name}/move`` is always synchronous; ``/queries/{id}/retrieve``
  with ``"Synchronous": false`` returns a job.
* A C-MOVE refused with status 0xC000 means the peer does not know our AE
  title (with our host and port), or no longer has the study.
"""
import ipaddress
import re
from dataclasses import dataclass, field
from datetime import date

__all__ = [
    'DicomNode', 'LocalAE', 'StudyAnswer', 'RetrieveJob',
    'validate_node_name', 'validate_aet', 'validate_host', 'validate_port',
    'validate_manufacturer', 'validate_node', 'REASONS', 'MANUFACTURERS',
    'INCOMING', 'STUDY_RETURN_KEYS', 'map_study_answer', 'map_job',
    ]

#: Manufacturers Orthanc 1.10 accepts (case-sensitive); others are a 400.
MANUFACTURERS = ('Generic', 'GenericNoWildcardInDates',
    'GenericNoUniversalWildcard', 'Vitrea', 'GE')
#: What a declared node may ask of our Orthanc.  A PACS only needs to
#: echo us and to store the studies we move; it must not query our
#: patients or move them elsewhere.
INCOMING = ('echo', 'store')
_INCOMING_KEYS = {
    'echo': 'AllowEcho',
    'find': 'AllowFind',
    'worklist': 'AllowFindWorklist',
    'get': 'AllowGet',
    'move': 'AllowMove',
    'store': 'AllowStore',
    'storage_commitment': ('AllowNAction', 'AllowEventReport'),
    }
#: The study attributes asked of the node (empty means "send it back").
STUDY_RETURN_KEYS = (
    'PatientID', 'PatientName', 'PatientBirthDate', 'PatientSex',
    'StudyInstanceUID', 'StudyDate', 'StudyTime', 'StudyDescription',
    'AccessionNumber', 'ModalitiesInStudy', 'NumberOfStudyRelatedSeries',
    'NumberOfStudyRelatedInstances')
JOB_FINISHED = ('Success', 'Failure')
AET_LENGTH = 16
MAX_PORT = 65534  # Orthanc refuses 65535
_NAME = re.compile(r'[A-Za-z0-9_-]+')
_HOST_LABEL = re.compile(r'(?!-)[A-Za-z0-9-]{1,63}(?<!-)')
#: A DICOM UID: digits separated by dots, no wildcard nor list
_UID = re.compile(r'[0-9]+(\.[0-9]+)*')
UID_LENGTH = 64

#: Reason codes of the validators, in English (the Tryton side has its own
#: translatable messages keyed by these codes).
REASONS = {
    'name_empty': 'The name is empty.',
    'name_invalid': ('The name may only contain letters, digits, "-" and '
        '"_".'),
    'aet_empty': 'The AE title is empty.',
    'aet_too_long': 'The AE title is longer than 16 characters.',
    'aet_invalid': ('The AE title may only contain printable ASCII '
        'characters, without "\\".'),
    'host_empty': 'The host is empty.',
    'host_is_url': ('Enter the host name or IP address only, without '
        '"http://" or a path.'),
    'host_invalid': 'The host is not a valid host name or IP address.',
    'port_invalid': 'The port is not a whole number.',
    'port_out_of_range': 'The port must be between 1 and 65534.',
    'manufacturer_unknown': ('The manufacturer must be one of: %s.'
        % ', '.join(MANUFACTURERS)),
    }


# -- validators --------------------------------------------------------------
def valid_uid(uid) -> bool:
    """Whether uid is a DICOM UID: a backslash would make a C-FIND match a
    list, a "*" any study"""
    return (isinstance(uid, str) and len(uid) <= UID_LENGTH
        and _UID.fullmatch(uid) is not None)


def validate_node_name(name: str) -> tuple[bool, str]:
    """Return ``(ok, reason)``: whether ``name`` may name an Orthanc modality.

    Orthanc allows ASCII letters, digits, ``-`` and ``_`` only.
    """
    if not isinstance(name, str) or not name:
        return False, 'name_empty'
    if not _NAME.fullmatch(name):
        return False, 'name_invalid'
    return True, ''


def validate_aet(aet: str) -> tuple[bool, str]:
    """Return ``(ok, reason)``: whether ``aet`` is a valid AE title.

    At most 16 characters of the default repertoire without backslash;
    leading and trailing spaces are not significant (PS3.5 6.2).
    """
    if not isinstance(aet, str) or not aet.strip():
        return False, 'aet_empty'
    aet = aet.strip()
    if len(aet) > AET_LENGTH:
        return False, 'aet_too_long'
    if any(c == '\\' or not ' ' <= c <= '~' for c in aet):
        return False, 'aet_invalid'
    return True, ''


def validate_host(host: str) -> tuple[bool, str]:
    "Return ``(ok, reason)``: whether ``host`` is a host name or IP address"
    if not isinstance(host, str) or not host.strip():
        return False, 'host_empty'
    if '://' in host or '/' in host:
        return False, 'host_is_url'
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True, ''
    labels = host[:-1].split('.') if host.endswith('.') else host.split('.')
    if (len(host) > 253
            or not all(_HOST_LABEL.fullmatch(label) for label in labels)
            or labels[-1].isdigit()):
        return False, 'host_invalid'
    return True, ''


def validate_port(port) -> tuple[bool, str]:
    "Return ``(ok, reason)``: whether ``port`` is a TCP port Orthanc takes"
    if isinstance(port, bool):
        return False, 'port_invalid'
    try:
        number = int(port)
    except (TypeError, ValueError):
        return False, 'port_invalid'
    if isinstance(port, float) and number != port:
        return False, 'port_invalid'
    if not 1 <= number <= MAX_PORT:
        return False, 'port_out_of_range'
    return True, ''


def validate_manufacturer(manufacturer: str) -> tuple[bool, str]:
    "Return ``(ok, reason)``: whether Orthanc knows this manufacturer"
    if manufacturer not in MANUFACTURERS:
        return False, 'manufacturer_unknown'
    return True, ''


# -- data --------------------------------------------------------------------
@dataclass(frozen=True)
class DicomNode:
    """A remote DICOM node as Orthanc knows it (a "modality").

    ``incoming`` lists what the node may ask of our Orthanc (see
    :data:`INCOMING`); ``timeout`` is the DICOM timeout in seconds, 0 for
    Orthanc's ``DicomScuTimeout``.
    """
    name: str
    aet: str
    host: str
    port: int
    manufacturer: str = 'Generic'
    incoming: tuple[str, ...] = INCOMING
    timeout: int = 0
    local_aet: str = ''

    def payload(self) -> dict:
        "Return the body of ``PUT /modalities/{name}``"
        body = {
            'AET': self.aet.strip(),
            'Host': self.host.strip(),
            'Port': int(self.port),
            'Manufacturer': self.manufacturer,
            'Timeout': int(self.timeout or 0),
            }
        for right, keys in _INCOMING_KEYS.items():
            for key in (keys if isinstance(keys, tuple) else (keys,)):
                body[key] = right in self.incoming
        if self.local_aet:
            body['LocalAet'] = self.local_aet.strip()
        return body

    @classmethod
    def from_orthanc(cls, name: str, data: dict) -> 'DicomNode':
        "Return the node of an entry of ``/modalities?expand``"
        incoming = tuple(right for right, keys in _INCOMING_KEYS.items()
            if all(data.get(k) for k in (
                    keys if isinstance(keys, tuple) else (keys,))))
        return cls(name=name, aet=str(data.get('AET') or ''),
            host=str(data.get('Host') or ''),
            port=int(data.get('Port') or 0),
            manufacturer=str(data.get('Manufacturer') or 'Generic'),
            incoming=incoming, timeout=int(data.get('Timeout') or 0),
            local_aet=str(data.get('LocalAet') or ''))


def validate_node(node: DicomNode) -> list[tuple[str, str]]:
    "Return the ``(field, reason)`` of every invalid field of ``node``"
    checks = [
        ('name', validate_node_name(node.name)),
        ('aet', validate_aet(node.aet)),
        ('host', validate_host(node.host)),
        ('port', validate_port(node.port)),
        ('manufacturer', validate_manufacturer(node.manufacturer)),
        ]
    if node.local_aet:
        checks.append(('local_aet', validate_aet(node.local_aet)))
    return [(name, reason) for name, (ok, reason) in checks if not ok]


@dataclass(frozen=True)
class LocalAE:
    "Our Orthanc's own AE title and DICOM port, to declare on the nodes"
    aet: str
    port: int


@dataclass(frozen=True)
class StudyAnswer:
    """One study found on a node (a C-FIND answer at study level).

    Dates are None when the node sent none or an unreadable one; counts
    are None when the node does not give them.
    """
    study_uid: str
    patient_id: str = ''
    patient_name: str = ''
    birth_date: date | None = None
    sex: str = ''
    study_date: date | None = None
    study_time: str = ''
    description: str = ''
    accession: str = ''
    modalities: tuple[str, ...] = ()
    series_count: int | None = None
    instance_count: int | None = None
    retrieve_aet: str = ''


@dataclass(frozen=True)
class RetrieveJob:
    """The state of an Orthanc retrieve (C-MOVE) job.

    ``state`` is Orthanc's: Pending, Running, Paused, Retry, Success or
    Failure.  ``error`` is the typed error of a failed job.
    ``study_uids`` are the studies the job moves, in the order it moves
    them; ``moved_count`` is how many of them it has finished (from the
    progress, one study per step).  ``error`` is set by the client.
    """
    id: str
    state: str
    progress: int = 0
    error_code: int = 0
    error_description: str = ''
    error_details: str = ''
    study_uids: tuple[str, ...] = ()
    node_aet: str = ''
    error: Exception | None = field(default=None, compare=False)

    @property
    def finished(self) -> bool:
        return self.state in JOB_FINISHED

    @property
    def succeeded(self) -> bool:
        return self.state == 'Success'

    @property
    def moved_count(self) -> int:
        if self.succeeded:
            return len(self.study_uids)
        return len(self.study_uids) * max(0, min(self.progress, 100)) // 100


# -- mapping -----------------------------------------------------------------
def _date(value) -> date | None:
    text = str(value or '').strip()
    if not re.fullmatch(r'\d{8}', text):
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def _count(value) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _text(value) -> str:
    if isinstance(value, list):  # a multi-valued attribute
        value = '\\'.join(str(v) for v in value)
    return str(value or '').strip()


def map_study_answer(data: dict) -> StudyAnswer:
    "Return the :class:`StudyAnswer` of a simplified C-FIND answer"
    modalities = _text(data.get('ModalitiesInStudy'))
    return StudyAnswer(
        study_uid=_text(data.get('StudyInstanceUID')),
        patient_id=_text(data.get('PatientID')),
        patient_name=_text(data.get('PatientName')),
        birth_date=_date(data.get('PatientBirthDate')),
        sex=_text(data.get('PatientSex')),
        study_date=_date(data.get('StudyDate')),
        study_time=_text(data.get('StudyTime')),
        description=_text(data.get('StudyDescription')),
        accession=_text(data.get('AccessionNumber')),
        modalities=tuple(m for m in (
                x.strip() for x in modalities.split('\\')) if m),
        series_count=_count(data.get('NumberOfStudyRelatedSeries')),
        instance_count=_count(data.get('NumberOfStudyRelatedInstances')),
        retrieve_aet=_text(data.get('RetrieveAETitle')))


def map_job(data: dict, job_id: str = '') -> RetrieveJob:
    "Return the :class:`RetrieveJob` of ``GET /jobs/{id}``, without error"
    content = data.get('Content') or {}
    uids = tuple(str(q.get('0020,000d', '')) for q in (
            content.get('Query') or []) if isinstance(q, dict))
    return RetrieveJob(
        id=str(data.get('ID') or job_id), state=str(data.get('State') or ''),
        progress=int(data.get('Progress') or 0),
        error_code=int(data.get('ErrorCode') or 0),
        error_description=str(data.get('ErrorDescription') or ''),
        error_details=str(data.get('ErrorDetails') or ''), study_uids=uids,
        node_aet=str(content.get('RemoteAet') or ''))
