# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Send DICOM files and zip archives to Orthanc, one instance at a time.

Plain Python, without Tryton.  Each file, or each member of a zip file,
is sent on its own with ``POST /instances`` and gets one
:class:`FileResult`: ``stored``, ``already_stored`` (Orthanc had the
instance), ``rejected`` (Orthanc cannot read it as DICOM: HTTP 400, or a
``Status`` other than ``Success``/``AlreadyStored``, e.g. a filter) or
``failed`` (any other error: the connection, the server).  A bad file is
reported and the others go on.

Memory: a zip member is decompressed block by block while it is sent,
so an upload is never held a second time in memory, whatever its size.
"""
import io
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .orthanc_client import OrthancError

__all__ = ['STORED', 'ALREADY_STORED', 'REJECTED', 'FAILED', 'STATUSES',
    'FileResult', 'iter_members', 'upload_files', 'count_statuses']

STORED = 'stored'
ALREADY_STORED = 'already_stored'
REJECTED = 'rejected'
FAILED = 'failed'
STATUSES = (STORED, ALREADY_STORED, REJECTED, FAILED)
#: Files of zip archives that are never DICOM (macOS resource forks)
SKIPPED_PREFIXES = ('__MACOSX/',)


@dataclass
class FileResult:
    """What became of one file.

    ``name`` is the file name, ``archive/member`` for a zip member;
    ``study`` and ``instance`` are Orthanc's IDs when it was stored.
    """
    name: str
    status: str
    detail: str = ''
    study: str | None = None
    instance: str | None = None


def _is_zip(stream) -> bool:
    position = stream.tell()
    try:
        return zipfile.is_zipfile(stream)
    finally:
        stream.seek(position)


def iter_members(name: str, stream) -> Iterator[tuple[str, object, int]]:
    """Yield (name, file object, size) for each file to send.

    ``stream`` is a seekable binary file object.  A zip archive yields
    its members one by one (each opened only while it is sent; folders
    and ``__MACOSX/`` entries are left out), anything else yields itself.
    """
    if _is_zip(stream):
        with zipfile.ZipFile(stream) as archive:
            for info in archive.infolist():
                if info.is_dir() or info.filename.startswith(
                        SKIPPED_PREFIXES):
                    continue
                with archive.open(info) as member:
                    yield ('%s/%s' % (name, info.filename), member,
                        info.file_size)
    else:
        position = stream.tell()
        size = stream.seek(0, io.SEEK_END) - position
        stream.seek(position)
        yield name, stream, size


def _send(client, name, stream, size) -> FileResult:
    if not size:
        return FileResult(name, REJECTED, 'empty file')
    try:
        answer = client.upload_instance(stream, size=size)
    except OrthancError as exception:
        if exception.status == 400:
            return FileResult(name, REJECTED,
                'not DICOM: %s' % (exception.details or exception.message
                    or 'Orthanc cannot read it'))
        return FileResult(name, FAILED, str(exception))
    status = answer.get('Status')
    if status == 'Success':
        result = STORED
    elif status == 'AlreadyStored':
        result = ALREADY_STORED
    else:
        return FileResult(name, REJECTED, 'Orthanc answered %s' % status)
    return FileResult(name, result, study=answer.get('ParentStudy'),
        instance=answer.get('ID'))


def upload_files(client, files: Iterable[tuple[str, object]]
        ) -> list[FileResult]:
    """Send every DICOM file of files to Orthanc; return a result each.

    Parameters
    ----------
    client : OrthancClient
    files : iterable of (name, bytes or seekable binary file object)
        DICOM files or zip archives of DICOM files.
    """
    results = []
    for name, data in files:
        name = name or 'file'
        stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray,
                memoryview)) else data
        try:
            for member_name, member, size in iter_members(name, stream):
                try:
                    results.append(_send(client, member_name, member, size))
                except (zipfile.BadZipFile, OSError, EOFError,
                        RuntimeError) as exception:
                    # e.g. a corrupt member: its CRC is checked at the end
                    results.append(FileResult(member_name, REJECTED,
                            'unreadable in the archive: %s' % exception))
        except (zipfile.BadZipFile, OSError, EOFError,
                NotImplementedError) as exception:
            results.append(FileResult(name, REJECTED,
                    'unreadable archive: %s' % exception))
    return results


def count_statuses(results: Iterable[FileResult]) -> dict[str, int]:
    "Return {status: number of files} for every status"
    counts = Counter(r.status for r in results)
    return {s: counts.get(s, 0) for s in STATUSES}
