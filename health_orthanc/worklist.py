# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""DICOM Modality Worklist entries of imaging requests.

Plain Python (pydicom), without Tryton.  An entry is a plain dict (see
:func:`build_dataset`); it is published either as a ``<accession>.wl`` file
in the folder that Orthanc's ModalityWorklists plugin serves
(``"Worklists": {"Enable": true, "Database": "<folder>"}``, the plugin of
Orthanc 1.10), or through the REST API of the worklists plugin of Orthanc
1.12.10 and later (``POST /worklists/create`` with ``{"Tags": {...}}``,
``DELETE /worklists/{id}``).
"""
from __future__ import annotations

import datetime as dt
import io
import json
import os
import re
import tempfile
import uuid
from typing import Any
from urllib.parse import quote

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from . import orthanc_client as oc

__all__ = [
    'WorklistError', 'build_dataset', 'dataset_bytes', 'file_name',
    'write_file', 'remove_file', 'rest_tags', 'rest_available',
    'rest_create', 'rest_delete', 'person_name', 'dicom_sex',
    'parse_modalities', 'choose_server', 'check_entry',
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


class WorklistError(Exception):
    "An entry cannot be built, written or published; str() says why"


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


def dicom_sex(gender: str | None) -> str:
    "Return the DICOM PatientSex (M, F, O) of a GNU Health gender"
    if not gender:
        return ''
    return SEXES.get(gender, 'O')


def _date(value: dt.date | None) -> str:
    return value.strftime('%Y%m%d') if value else ''


def _time(value: dt.datetime | None) -> str:
    return value.strftime('%H%M%S') if value else ''


def _needs_utf8(*values: str) -> bool:
    return any(not v.isascii() for v in values if v)


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


def check_entry(entry: dict) -> list[str]:
    """Return what makes the entry unusable (an empty list when none).

    An accession number and a PatientID must fit DICOM SH/LO, the modality
    and the StudyInstanceUID are required.
    """
    problems = []
    accession = entry.get('accession_number') or ''
    if not accession:
        problems.append('no accession number')
    elif len(accession) > SH_MAX:
        problems.append('accession number longer than 16 characters')
    if not entry.get('patient_id'):
        problems.append('no PatientID (PUID)')
    elif len(entry['patient_id']) > LO_MAX:
        problems.append('PatientID longer than 64 characters')
    if not entry.get('modality'):
        problems.append('no modality')
    if not entry.get('study_instance_uid'):
        problems.append('no StudyInstanceUID')
    if len(entry.get('station_aet') or '') > SH_MAX:
        problems.append('station AE title longer than 16 characters')
    return problems


def build_dataset(entry: dict) -> Dataset:
    """Return the worklist item of an entry.

    Parameters
    ----------
    entry : dict
        ``accession_number``, ``study_instance_uid``, ``patient_id``,
        ``patient_family_name``, ``patient_given_name``,
        ``patient_birth_date`` (date), ``patient_sex`` (GNU Health gender),
        ``modality``, ``procedure`` (the requested test),
        ``procedure_code``, ``scheduled`` (datetime), ``station_aet``,
        ``requesting_physician_family_name``,
        ``requesting_physician_given_name``, ``urgent`` (bool),
        ``comment``.  Only the first four and the modality are required.

    Raises
    ------
    WorklistError
        When :func:`check_entry` finds a problem.
    """
    problems = check_entry(entry)
    if problems:
        raise WorklistError('; '.join(problems))
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
    if _needs_utf8(patient_name, physician, procedure, comment):
        ds.SpecificCharacterSet = 'ISO_IR 192'
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
    step.Modality = entry['modality'][:SH_MAX]
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


def file_name(accession: str) -> str:
    """Return the worklist file name of an accession number.

    Characters that are not letters, digits, ``.``, ``_`` or ``-`` become
    ``_`` (``IMG2024/001`` is written as ``IMG2024_001.wl``).
    """
    name = UNSAFE.sub('_', accession or '').strip('.')
    if not name:
        raise WorklistError('no accession number')
    return name + SUFFIX


def write_file(folder: str, entry: dict) -> str:
    """Write the entry as ``<accession>.wl`` in folder, atomically.

    The file is written under a temporary name in the same folder, synced
    and renamed, so that Orthanc never reads half a file; an existing
    entry of the same accession number is replaced.  Returns the file
    name.

    Raises
    ------
    WorklistError
        When the entry is invalid or the folder cannot be written.
    """
    data = dataset_bytes(build_dataset(entry))
    name = file_name(entry['accession_number'])
    if not folder or not os.path.isdir(folder):
        raise WorklistError('the folder %s does not exist' % (folder or '""'))
    try:
        fd, temporary = tempfile.mkstemp(
            dir=folder, prefix='.', suffix='.tmp')
    except OSError as exception:
        raise WorklistError('cannot write in %s: %s'
            % (folder, exception.strerror or exception)) from None
    try:
        with os.fdopen(fd, 'wb') as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
        # mkstemp creates 0600: Orthanc runs as another user
        os.chmod(temporary, 0o644)
        os.replace(temporary, os.path.join(folder, name))
    except OSError as exception:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise WorklistError('cannot write %s in %s: %s'
            % (name, folder, exception.strerror or exception)) from None
    return name


def remove_file(folder: str, name: str) -> bool:
    """Remove a worklist file; return False if it was already gone.

    Raises
    ------
    WorklistError
        When the file exists but cannot be removed.
    """
    if not name or os.path.basename(name) != name \
            or not name.endswith(SUFFIX):
        raise WorklistError('%r is not a worklist file name' % name)
    try:
        os.unlink(os.path.join(folder or '', name))
    except FileNotFoundError:
        return False
    except OSError as exception:
        raise WorklistError('cannot remove %s from %s: %s'
            % (name, folder, exception.strerror or exception)) from None
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
        for element in ds if element.keyword
        and element.keyword != 'SpecificCharacterSet'}


def rest_tags(entry: dict) -> dict:
    """Return the body of ``POST /worklists/create`` for the entry.

    Orthanc's JSON of tags by keyword, a sequence being a list of
    objects; Orthanc encodes the values itself (UTF-8).
    """
    return {'Tags': _json_tags(build_dataset(entry))}


def rest_available(client: oc.OrthancClient) -> bool:
    """Return whether the server offers the worklists REST API.

    The worklists plugin must be loaded (``GET /plugins`` lists
    ``worklists``) and answer ``GET /worklists`` with a list: Orthanc
    1.10's ModalityWorklists plugin has the same name but no REST API
    (404).
    """
    plugins = client.get_json('plugins')
    if not isinstance(plugins, list) or 'worklists' not in plugins:
        return False
    try:
        listing = client.get_json('worklists')
    except oc.OrthancNotFound:
        return False
    return isinstance(listing, list)


def rest_create(client: oc.OrthancClient, entry: dict) -> str:
    """Create the worklist through the REST API; return its Orthanc ID.

    Not retried: a POST that reached Orthanc may have created it.
    """
    response = client.request(
        'POST', 'worklists/create', data=json.dumps(rest_tags(entry)),
        headers={'Content-Type': 'application/json'})
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not answer.get('ID'):
        raise oc.OrthancBadAnswer(
            'Unexpected answer from Orthanc for worklists/create',
            status=response.status_code)
    return str(answer['ID'])


def rest_delete(client: oc.OrthancClient, worklist_id: str) -> bool:
    "Delete a worklist by its Orthanc ID; return False if already gone"
    try:
        client.request(
            'DELETE', 'worklists/%s' % quote(worklist_id, safe='')).close()
    except oc.OrthancNotFound:
        return False
    return True
