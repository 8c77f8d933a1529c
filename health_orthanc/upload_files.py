# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Send DICOM files and zip archives to Orthanc, one instance at a time.

Plain Python, without Tryton.  Each file, or each member of a zip file,
is sent on its own with ``POST /instances`` and gets one
:class:`FileResult`: ``stored``, ``already_stored`` (Orthanc had the
instance), ``rejected`` (not something Orthanc can store: an empty file,
HTTP 400 or a ``Status`` other than ``Success``/``AlreadyStored``, e.g. a
filter, an encrypted zip member, a compression zipfile cannot read, a
damaged archive) or ``failed`` (any other error: the connection, the
server).  A bad file, or a bad member of a zip file, is reported and the
others go on.

Why a file was rejected or failed is a code (``REASONS``) with its
parameters, never a text: the caller words it for the user.

Safety: a file larger than ``max_size``, or a zip member that its archive
says inflates more than ``max_ratio`` times (a zip bomb), is refused before
anything is sent; exactly the announced bytes are sent, so a member that
holds fewer bytes than its archive says is cut off at once, instead of
leaving Orthanc waiting for the rest.

Memory: a zip member is decompressed block by block while it is sent,
so an upload is never held a second time in memory, whatever its size.
"""
import contextlib
import io
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .orthanc_client import BodySizeError, OrthancError

__all__ = ['STORED', 'ALREADY_STORED', 'REJECTED', 'FAILED', 'STATUSES',
    'EMPTY', 'NOT_DICOM', 'ORTHANC_STATUS', 'ENCRYPTED', 'UNSUPPORTED',
    'UNREADABLE_MEMBER', 'SIZE_MISMATCH', 'TOO_LARGE', 'TOO_COMPRESSED',
    'UNREADABLE_ARCHIVE', 'SEND_FAILED', 'REASONS', 'MAX_SIZE', 'MAX_RATIO',
    'RATIO_FLOOR', 'FileResult', 'Member', 'iter_members', 'refusal',
    'upload_files', 'count_statuses', 'studies_received']

STORED = 'stored'
ALREADY_STORED = 'already_stored'
REJECTED = 'rejected'
FAILED = 'failed'
STATUSES = (STORED, ALREADY_STORED, REJECTED, FAILED)
#: Files of zip archives that are never DICOM (macOS resource forks)
SKIPPED_PREFIXES = ('__MACOSX/',)

# Why a file was not stored, and the parameters of each reason
#: An empty file (no parameter)
EMPTY = 'empty'
#: Orthanc cannot read it as DICOM (HTTP 400): ``reason``, Orthanc's words
NOT_DICOM = 'not_dicom'
#: Orthanc did not store it: ``status``, the Status it answered
ORTHANC_STATUS = 'orthanc_status'
#: A zip member protected by a password (no parameter)
ENCRYPTED = 'encrypted'
#: A zip member compressed with a method zipfile cannot read: ``method``
UNSUPPORTED = 'unsupported_compression'
#: A zip member that cannot be decompressed (e.g. bad CRC): ``error``
UNREADABLE_MEMBER = 'unreadable_member'
#: A zip member that holds fewer (or more) bytes than its archive says:
#: ``declared`` and ``actual`` (a text: ``1234`` or ``more than 1234``)
SIZE_MISMATCH = 'size_mismatch'
#: Larger than the maximum: ``size`` and ``max_size``, in MiB (texts)
TOO_LARGE = 'too_large'
#: A zip member inflating more than the maximum ratio: ``ratio`` and
#: ``max_ratio``
TOO_COMPRESSED = 'too_compressed'
#: Not a readable zip archive (e.g. truncated): ``error``
UNREADABLE_ARCHIVE = 'unreadable_archive'
#: Could not be sent to Orthanc: ``error``, and the OrthancError in
#: :attr:`FileResult.error`
SEND_FAILED = 'send_failed'
REASONS = (EMPTY, NOT_DICOM, ORTHANC_STATUS, ENCRYPTED, UNSUPPORTED,
    UNREADABLE_MEMBER, SIZE_MISMATCH, TOO_LARGE, TOO_COMPRESSED,
    UNREADABLE_ARCHIVE, SEND_FAILED)
MIB = 1024 * 1024
#: The largest file sent, by default: Orthanc holds a whole instance in
#: memory while it receives it
MAX_SIZE = 512 * MIB
#: The highest compression of a zip member, by default: DICOM images
#: seldom deflate more than 10 times, a zip bomb about 1000 times
MAX_RATIO = 100
#: Members up to this size are not checked for their ratio: small files
#: of the same bytes deflate a lot and can do no harm
RATIO_FLOOR = MIB
#: What reading a zip member may raise (zlib.error is no OSError)
MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError,
    RuntimeError)


@dataclass
class FileResult:
    """What became of one file.

    ``name`` is the file name, ``archive/member`` for a zip member;
    ``reason`` (one of :data:`REASONS`) and ``params`` say why it was not
    stored; ``error`` is the OrthancError of a failed file; ``study`` and
    ``instance`` are Orthanc's IDs when it was stored.
    """
    name: str
    status: str
    reason: str = ''
    params: dict = field(default_factory=dict)
    study: str | None = None
    instance: str | None = None
    error: Exception | None = None


@dataclass
class Member:
    """One file to send: its name, its size and how to open it.

    ``open()`` returns a context manager giving a binary file object; a
    zip member is opened (and may fail) only then.  ``info`` is the
    ZipInfo of a zip member, None for a plain file.
    """
    name: str
    size: int
    open: Callable[[], contextlib.AbstractContextManager]
    info: zipfile.ZipInfo | None = None


def _is_zip(stream) -> bool:
    position = stream.tell()
    try:
        return zipfile.is_zipfile(stream)
    finally:
        stream.seek(position)


def iter_members(name: str, stream) -> Iterator[Member]:
    """Yield a :class:`Member` for each file to send.

    ``stream`` is a seekable binary file object.  A zip archive yields
    its members one by one (folders and ``__MACOSX/`` entries are left
    out; a member is opened only by ``Member.open``), anything else
    yields itself.  A damaged archive raises zipfile.BadZipFile (or
    OSError, EOFError) when iterated.
    """
    if _is_zip(stream):
        with zipfile.ZipFile(stream) as archive:
            for info in archive.infolist():
                if info.is_dir() or info.filename.startswith(
                        SKIPPED_PREFIXES):
                    continue
                yield Member('%s/%s' % (name, info.filename),
                    info.file_size,
                    lambda info=info: archive.open(info), info)
    else:
        position = stream.tell()
        size = stream.seek(0, io.SEEK_END) - position
        stream.seek(position)
        yield Member(name, size, lambda: contextlib.nullcontext(stream))


def _mib(size) -> str:
    return '%.1f' % (size / MIB)


def refusal(member: Member, max_size: int = MAX_SIZE,
        max_ratio: float = MAX_RATIO) -> FileResult | None:
    "Return the FileResult of a member refused before it is read, or None"
    if not member.size:
        return FileResult(member.name, REJECTED, EMPTY)
    if member.size > max_size:
        return FileResult(member.name, REJECTED, TOO_LARGE, {
                'size': _mib(member.size), 'max_size': _mib(max_size)})
    info = member.info
    if info is not None and member.size > RATIO_FLOOR:
        ratio = member.size / max(info.compress_size, 1)
        if ratio > max_ratio:
            return FileResult(member.name, REJECTED, TOO_COMPRESSED, {
                    'ratio': '%d' % ratio, 'max_ratio': '%g' % max_ratio})
    return None


def _send(client, name, stream, size) -> FileResult:
    try:
        answer = client.upload_instance(stream, size=size)
    except BodySizeError as exception:
        return FileResult(name, REJECTED, SIZE_MISMATCH, {
                'declared': str(exception.announced),
                'actual': ('more than %d' % exception.sent
                    if exception.longer else str(exception.sent)),
                })
    except OrthancError as exception:
        if exception.status == 400:
            return FileResult(name, REJECTED, NOT_DICOM, {
                    'reason': exception.details or exception.message or '',
                    })
        return FileResult(name, FAILED, SEND_FAILED,
            {'error': str(exception)}, error=exception)
    status = answer.get('Status')
    if status == 'Success':
        result = STORED
    elif status == 'AlreadyStored':
        result = ALREADY_STORED
    else:
        return FileResult(name, REJECTED, ORTHANC_STATUS,
            {'status': str(status)})
    return FileResult(name, result, study=answer.get('ParentStudy'),
        instance=answer.get('ID'))


def _send_member(client, member: Member, max_size: int = MAX_SIZE,
        max_ratio: float = MAX_RATIO) -> FileResult:
    "Open and send one member; an unreadable member is rejected alone"
    info = member.info
    if info is not None and info.flag_bits & 0x1:
        # zipfile would raise RuntimeError: no password is ever asked
        return FileResult(member.name, REJECTED, ENCRYPTED)
    refused = refusal(member, max_size, max_ratio)
    if refused is not None:
        return refused
    try:
        with member.open() as data:
            return _send(client, member.name, data, member.size)
    except NotImplementedError:
        # A compression method zipfile cannot read (e.g. implode, AES)
        return FileResult(member.name, REJECTED, UNSUPPORTED, {
                'method': str(info.compress_type if info else '?')})
    except MEMBER_ERRORS as exception:
        # e.g. a corrupt member: its CRC is checked at the end
        return FileResult(member.name, REJECTED, UNREADABLE_MEMBER,
            {'error': str(exception)})


def upload_files(client, files: Iterable[tuple[str, object]],
        max_size: int = MAX_SIZE, max_ratio: float = MAX_RATIO
        ) -> list[FileResult]:
    """Send every DICOM file of files to Orthanc; return a result each.

    Parameters
    ----------
    client : OrthancClient
    files : iterable of (name, bytes or seekable binary file object)
        DICOM files or zip archives of DICOM files.
    max_size : int
        The largest file or zip member sent, in bytes (as its archive
        says; a member holding more is cut off).
    max_ratio : float
        The highest ratio of a zip member's size to its compressed size
        (members up to :data:`RATIO_FLOOR` bytes are not checked).
    """
    results = []
    for name, data in files:
        name = name or 'file'
        stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray,
                memoryview)) else data
        try:
            for member in iter_members(name, stream):
                results.append(
                    _send_member(client, member, max_size, max_ratio))
        except (zipfile.BadZipFile, zlib.error, OSError,
                EOFError) as exception:
            results.append(FileResult(name, REJECTED, UNREADABLE_ARCHIVE,
                    {'error': str(exception)}))
    return results


def count_statuses(results: Iterable[FileResult]) -> dict[str, int]:
    "Return {status: number of files} for every status"
    counts = Counter(r.status for r in results)
    return {s: counts.get(s, 0) for s in STATUSES}


def studies_received(
        results: Iterable[FileResult]) -> dict[str, dict[str, int]]:
    """Return {Orthanc study ID: {STORED: n, ALREADY_STORED: n}} of the
    files Orthanc took, in the order the studies first came"""
    studies = {}
    for result in results:
        if result.study and result.status in (STORED, ALREADY_STORED):
            counts = studies.setdefault(
                result.study, {STORED: 0, ALREADY_STORED: 0})
            counts[result.status] += 1
    return studies
