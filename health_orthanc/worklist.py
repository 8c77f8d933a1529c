# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""DICOM Modality Worklist entries of imaging requests.

Plain Python (pydicom), without Tryton.  An entry is a plain dict (see
:func:`build_dataset`); it is published either as a
``<accession>-<hash>.wl`` file in the folder that Orthanc's
ModalityWorklists plugin serves (``"Worklists": {"Enable": true,
"Database": "<folder>"}``, the plugin of Orthanc 1.10), or through the
REST API of the worklists plugin of Orthanc 1.12.10 and later, with the
body built by :func:`rest_tags` (the HTTP calls are the client's:
``OrthancClient.create_worklist``, ``delete_worklist``).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import re
import tempfile
import uuid
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

__all__ = [
    'WorklistError', 'build_dataset', 'dataset_bytes', 'file_name',
    'write_file', 'remove_file', 'is_file_entry', 'rest_tags', 'person_name',
    'dicom_sex', 'parse_modalities', 'choose_server', 'check_entry',
    ]

#: The SOP class of the Modality Worklist information model (C-FIND)
MWL_FIND = '1.2.840.10008.5.1.4.31'
SUFFIX = '.wl'
SH_MAX = 16
LO_MAX = 64
PN_MAX = 64
SEXES = {'m': 'M', 'f': 'F'}
PRIORITIES = {True: 'STAT', False: 'ROUTINE'}
#: Characters kept in file names: the rest becomes "_"
UNSAFE = re.compile(r'[^A-Za-z0-9._-]')
#: DICOM separators that may not appear inside a name component
PN_SEPARATORS = re.compile(r'[\^=\\\x00-\x1f]')
#: Hexadecimal digits of the StudyInstanceUID hash in a file name
HASH_SIZE = 10
#: The character set of an entry with any text that is not ASCII
UTF8 = 'ISO_IR 192'
#: What DICOM allows in an AE title (AE): the default repertoire, without
#: backslash and control characters
AE_VALUE = re.compile(r'[\x20-\x5b\x5d-\x7e]*')
#: What DICOM allows in a code string (CS), here the modality
CS_VALUE = re.compile(r'[A-Z0-9 _]*')

#: English texts of the problems, for the logs (the user reads the
#: translated message of the same code, see request.py)
PROBLEMS = {
    'no_accession': "no accession number",
    'accession_too_long': "accession number longer than %(size)s characters",
    'no_patient_id': "no PatientID (PUID)",
    'patient_id_too_long': "PatientID longer than %(size)s characters",
    'no_modality': "no modality",
    'no_study_uid': "no StudyInstanceUID",
    'station_aet_too_long': "station AE title longer than %(size)s "
    "characters",
    'station_aet_invalid': "station AE title with characters other than "
    "ASCII letters, digits, spaces and punctuation",
    'modality_invalid': "modality %(modality)r is not a DICOM code (ASCII "
    "letters, digits, spaces and underscores)",
    'folder_missing': "the folder %(folder)s does not exist",
    'folder_unwritable': "cannot write in %(folder)s: %(reason)s",
    'write_failed': "cannot write %(name)s in %(folder)s: %(reason)s",
    'remove_failed': "cannot remove %(path)s: %(reason)s",
    'not_an_entry': "%(name)r is not a worklist file",
    }


def problem_text(code: str, params: dict) -> str:
    "Return the English text of a problem"
    return PROBLEMS[code] % params


class WorklistError(Exception):
    """An entry cannot be built, written or published.

    ``problems`` is a list of ``(code, parameters)`` (codes of
    :data:`PROBLEMS`); str() is their English text, for the logs.
    """

    def __init__(self, problems):
        if isinstance(problems, tuple):
            problems = [problems]
        self.problems = list(problems)
        super().__init__('; '.join(
                problem_text(c, p) for c, p in self.problems))


def _clean(value: Any, size: int) -> str:
    "A single-line text of at most size characters"
    if value is None:
        return ''
    text = ' '.join(str(value).replace('\\', '/').split())
    return text[:size]


def person_name(family: str | None, given: str | None = None) -> str:
    """Return a DICOM PN ``Family^Given`` from GNU Health's names.

    The separators ``^``, ``=`` and ``\\`` are removed from the components
    and trailing empty components are left out.
    """
    parts = [' '.join(PN_SEPARATORS.sub(' ', p or '').split())
        for p in (family, given)]
    return '^'.join(parts).rstrip('^')[:PN_MAX]


def dicom_sex(sex: str | None) -> str:
    """Return the DICOM PatientSex (M, F or empty) of a GNU Health
    biological sex (or gender, when the biological sex is unknown).

    DICOM's PatientSex is the sex of the body imaged; anything but male
    or female is left empty (unknown) rather than guessed as ``O``.
    """
    return SEXES.get(sex or '', '')


def _date(value: dt.date | None) -> str:
    return value.strftime('%Y%m%d') if value else ''


def _time(value: dt.datetime | None) -> str:
    return value.strftime('%H%M%S') if value else ''


def _texts(ds: Dataset):
    "Yield the text of every element of ds and of its sequences' items"
    for element in ds:
        if element.VR == 'SQ':
            for item in element.value:
                yield from _texts(item)
        elif element.value is not None:
            yield str(element.value)


def _needs_utf8(ds: Dataset) -> bool:
    "Whether any text of ds, identifiers included, is not ASCII"
    return any(not text.isascii() for text in _texts(ds))


def parse_modalities(text: str | None) -> set[str]:
    "Return the modality codes of a text like ``CT, MR`` (upper case)"
    return {m.upper() for m in re.split(r'[\s,;]+', text or '') if m}


def choose_server(servers, modality: str | None):
    """Return the key of the server that publishes the modality, or None.

    Parameters
    ----------
    servers : iterable of (key, modalities text)
        The servers that publish worklists, in order of preference.
    modality : str
        The DICOM modality of the test.

    A server listing the modality wins over one that takes every modality
    (an empty list); among equals the first one wins.
    """
    modality = (modality or '').strip().upper()
    catch_all = None
    for key, text in servers:
        modalities = parse_modalities(text)
        if modality and modality in modalities:
            return key
        if not modalities and catch_all is None:
            catch_all = key
    return catch_all


def check_entry(entry: dict) -> list[tuple[str, dict]]:
    """Return what makes the entry unusable, as ``(code, parameters)``
    (an empty list when none; the codes are those of :data:`PROBLEMS`).

    An accession number and a PatientID must fit DICOM SH/LO, the modality
    and the StudyInstanceUID are required.  The modality (CS) and the
    station AE title (AE) are ASCII in every character set; the other
    texts may be in any script (see :func:`build_dataset`).
    """
    problems = []
    accession = entry.get('accession_number') or ''
    if not accession:
        problems.append(('no_accession', {}))
    elif len(accession) > SH_MAX:
        problems.append(('accession_too_long', {'size': SH_MAX}))
    if not entry.get('patient_id'):
        problems.append(('no_patient_id', {}))
    elif len(entry['patient_id']) > LO_MAX:
        problems.append(('patient_id_too_long', {'size': LO_MAX}))
    modality = (entry.get('modality') or '').strip().upper()
    if not modality:
        problems.append(('no_modality', {}))
    elif not CS_VALUE.fullmatch(modality):
        problems.append(('modality_invalid', {'modality': modality}))
    if not entry.get('study_instance_uid'):
        problems.append(('no_study_uid', {}))
    station_aet = entry.get('station_aet') or ''
    if len(station_aet) > SH_MAX:
        problems.append(('station_aet_too_long', {'size': SH_MAX}))
    if not AE_VALUE.fullmatch(station_aet):
        problems.append(('station_aet_invalid', {}))
    return problems


def build_dataset(entry: dict) -> Dataset:
    """Return the worklist item of an entry.

    Parameters
    ----------
    entry : dict
        ``accession_number``, ``study_instance_uid``, ``patient_id``,
        ``patient_family_name``, ``patient_given_name``,
        ``patient_birth_date`` (date), ``patient_sex`` (GNU Health
        biological sex or gender, see :func:`dicom_sex`),
        ``modality``, ``procedure`` (the requested test),
        ``procedure_code``, ``scheduled`` (datetime), ``station_aet``,
        ``requesting_physician_family_name``,
        ``requesting_physician_given_name``, ``urgent`` (bool),
        ``comment``.  Only the first four and the modality are required.

    The item is in UTF-8 (SpecificCharacterSet ``ISO_IR 192``) as soon as
    any of its texts is not ASCII, identifiers included: a PatientID
    ``ПАЦ-77`` written without it would reach the modality as ``???-77``,
    and the images it sends back would match nobody.

    Raises
    ------
    WorklistError
        When :func:`check_entry` finds a problem.
    """
    problems = check_entry(entry)
    if problems:
        raise WorklistError(problems)
    patient_name = person_name(
        entry.get('patient_family_name'), entry.get('patient_given_name'))
    physician = person_name(
        entry.get('requesting_physician_family_name'),
        entry.get('requesting_physician_given_name'))
    procedure = _clean(entry.get('procedure'), LO_MAX)
    comment = _clean(entry.get('comment'), 10240)
    accession = entry['accession_number']
    scheduled = entry.get('scheduled')

    ds = Dataset()
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = physician
    ds.PatientName = patient_name
    ds.PatientID = entry['patient_id']
    ds.PatientBirthDate = _date(entry.get('patient_birth_date'))
    ds.PatientSex = dicom_sex(entry.get('patient_sex'))
    ds.StudyInstanceUID = entry['study_instance_uid']
    ds.RequestingPhysician = physician
    ds.RequestedProcedureDescription = procedure
    ds.RequestedProcedureID = accession
    ds.RequestedProcedurePriority = PRIORITIES[bool(entry.get('urgent'))]

    step = Dataset()
    step.Modality = entry['modality'].strip().upper()[:SH_MAX]
    step.ScheduledStationAETitle = entry.get('station_aet') or ''
    step.ScheduledProcedureStepStartDate = _date(scheduled)
    step.ScheduledProcedureStepStartTime = _time(scheduled)
    step.ScheduledPerformingPhysicianName = ''
    step.ScheduledProcedureStepDescription = procedure
    step.ScheduledProcedureStepID = accession
    if entry.get('procedure_code'):
        code = Dataset()
        code.CodeValue = _clean(entry['procedure_code'], SH_MAX)
        code.CodingSchemeDesignator = 'GNUHEALTH'
        code.CodeMeaning = procedure
        step.ScheduledProtocolCodeSequence = Sequence([code])
    step.CommentsOnTheScheduledProcedureStep = comment
    ds.ScheduledProcedureStepSequence = Sequence([step])
    if _needs_utf8(ds):
        # Read when the file is written: the values are encoded then
        ds.SpecificCharacterSet = UTF8
    return ds


def dataset_bytes(ds: Dataset) -> bytes:
    "Return the worklist item as a DICOM Part 10 file"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MWL_FIND
    meta.MediaStorageSOPInstanceUID = '2.25.%d' % uuid.uuid5(
        uuid.NAMESPACE_OID, ds.StudyInstanceUID).int
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = ds.copy()
    ds.file_meta = meta
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def file_name(accession: str, study_instance_uid: str) -> str:
    """Return the worklist file name of an entry.

    ``<accession>-<hash>.wl``: characters of the accession number that are
    not letters, digits, ``.``, ``_`` or ``-`` become ``_``
    (``IMG2024/001`` gives ``IMG2024_001-…``), and the first hexadecimal
    digits of the SHA-1 of the StudyInstanceUID make the name unique, also
    for accession numbers that differ only by those characters or by
    case (on a case-insensitive file system).
    """
    name = UNSAFE.sub('_', accession or '').strip('.')
    if not name:
        raise WorklistError(('no_accession', {}))
    if not study_instance_uid:
        raise WorklistError(('no_study_uid', {}))
    digest = hashlib.sha1(study_instance_uid.encode()).hexdigest()
    return '%s-%s%s' % (name, digest[:HASH_SIZE], SUFFIX)


def is_file_entry(entry: str | None) -> bool:
    "Return whether a stored worklist entry is a file (else a REST ID)"
    return bool(entry) and os.path.isabs(entry) and entry.endswith(SUFFIX)


def entry_path(folder: str | None, accession: str,
        study_instance_uid: str) -> str:
    """Return the path of the file that :func:`write_file` writes in
    folder for these identifiers: the only file a removal may touch, never
    a path read from elsewhere.

    Raises
    ------
    WorklistError
        When there is no folder or no accession number.
    """
    if not folder:
        raise WorklistError(('folder_missing', {'folder': '""'}))
    return os.path.join(os.path.realpath(folder),
        file_name(accession, study_instance_uid))


def write_file(folder: str, entry: dict) -> str:
    """Write the entry as ``<accession>-<hash>.wl`` in folder, atomically.

    The file is written under a temporary name in the same folder, synced
    and renamed, so that Orthanc never reads half a file; writing the same
    entry again replaces it.  Returns the absolute path of the file: it is
    removed from there even if the server's folder changes meanwhile.

    Raises
    ------
    WorklistError
        When the entry is invalid or the folder cannot be written.
    """
    data = dataset_bytes(build_dataset(entry))
    name = file_name(entry['accession_number'], entry['study_instance_uid'])
    if not folder or not os.path.isdir(folder):
        raise WorklistError(('folder_missing', {'folder': folder or '""'}))
    folder = os.path.abspath(folder)
    try:
        fd, temporary = tempfile.mkstemp(
            dir=folder, prefix='.', suffix='.tmp')
    except OSError as exception:
        raise WorklistError(('folder_unwritable', {
                    'folder': folder,
                    'reason': exception.strerror or str(exception),
                    })) from None
    path = os.path.join(folder, name)
    try:
        with os.fdopen(fd, 'wb') as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
        # mkstemp creates 0600: Orthanc runs as another user
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as exception:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise WorklistError(('write_failed', {
                    'name': name, 'folder': folder,
                    'reason': exception.strerror or str(exception),
                    })) from None
    return path


def remove_file(path: str) -> bool:
    """Remove the worklist file written at path (as returned by
    :func:`write_file`); return False if it was already gone.

    Raises
    ------
    WorklistError
        When path is not a worklist file, or it exists but cannot be
        removed.
    """
    if not is_file_entry(path) \
            or os.path.basename(path).startswith('.'):
        raise WorklistError(('not_an_entry', {'name': path}))
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exception:
        raise WorklistError(('remove_failed', {
                    'path': path, 'name': os.path.basename(path),
                    'reason': exception.strerror or str(exception),
                    })) from None
    return True


# -- REST API (worklists plugin of Orthanc 1.12.10 and later) ---------------
def _json_value(element):
    if element.VR == 'SQ':
        return [_json_tags(item) for item in element.value]
    value = element.value
    if value is None:
        return ''
    return str(value)


def _json_tags(ds: Dataset) -> dict:
    return {element.keyword: _json_value(element)
        for element in ds if element.keyword}


def rest_tags(entry: dict) -> dict:
    """Return the body of ``POST /worklists/create`` for the entry.

    Orthanc's JSON of tags by keyword, a sequence being a list of
    objects.  The JSON is UTF-8; the SpecificCharacterSet of an entry
    with text that is not ASCII tells Orthanc to keep it in UTF-8 rather
    than in its ``DefaultEncoding`` (Latin-1 unless configured), where
    Cyrillic or CJK would be lost.
    """
    return {'Tags': _json_tags(build_dataset(entry))}
