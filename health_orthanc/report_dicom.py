# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Store a result's PDF report into its study as an Encapsulated PDF.

Plain Python (no Tryton): the JSON body of Orthanc's
``POST /tools/create-dicom`` and the identifiers that let a re-completed
result find and replace its previous instance.  What Orthanc 1.10.1 does
with that body (checked against a running server by the tests):

* ``Parent`` (an Orthanc study ID) copies the patient and study modules
  of one instance of that study, its Specific Character Set included;
* those copied tags, and the SOP and Series Instance UIDs that Orthanc
  generates, can be given only with ``"Force": true``, which this body
  sets to give deterministic UIDs; it never gives a patient or study tag;
* ``Content`` as ``data:application/pdf;base64,...`` sets the SOP class
  to Encapsulated PDF Storage, ``ConversionType`` WSD and the MIME type,
  keeps a given ``Modality`` (``OT`` only when absent) and pads the PDF
  to an even length with a NUL byte; ``/instances/{id}/pdf`` strips the
  last byte when it is not CR or LF, hence :func:`prepare_pdf`;
* a SOP Instance UID already stored is answered ``AlreadyStored`` and the
  old content stays: each completion gets its own SOP Instance UID
  (``revision``), in a series whose UID is stable for (result, study).
"""
import base64
import datetime as dt
import hashlib
import unicodedata
import uuid
from collections.abc import Mapping

__all__ = [
    'REPORT_MODALITY', 'REPORT_MANUFACTURER', 'REPORT_SERIES_DESCRIPTION',
    'ENCAPSULATED_PDF_STORAGE', 'is_pdf', 'prepare_pdf', 'report_uids',
    'orthanc_id', 'report_orthanc_ids', 'is_report_series', 'person_name',
    'fit_character_set', 'create_dicom_body',
    ]

ENCAPSULATED_PDF_STORAGE = '1.2.840.10008.5.1.4.1.1.104.1'
REPORT_MODALITY = 'DOC'
REPORT_MANUFACTURER = 'GNU Health'
REPORT_SERIES_DESCRIPTION = 'GNU Health report'
REPORT_SERIES_NUMBER = 9901
# CID 7000 "Diagnostic Imaging Report Document Title"
DOCUMENT_CONCEPT = {'CodeValue': '18748-4', 'CodingSchemeDesignator': 'LN',
    'CodeMeaning': 'Diagnostic Imaging Report'}
# Fixed: changing it changes every report UID
UID_NAMESPACE = uuid.UUID('4dd4c67c-7ec8-4518-bc96-27feb9a809c6')
# Specific Character Set (single value) -> Python codec
CODECS = {
    'ISO_IR 6': 'ascii', 'ISO_IR 100': 'latin_1', 'ISO_IR 101': 'iso8859_2',
    'ISO_IR 109': 'iso8859_3', 'ISO_IR 110': 'iso8859_4',
    'ISO_IR 144': 'iso8859_5', 'ISO_IR 127': 'iso8859_6',
    'ISO_IR 126': 'iso8859_7', 'ISO_IR 138': 'iso8859_8',
    'ISO_IR 148': 'iso8859_9', 'ISO_IR 203': 'iso8859_15',
    'ISO_IR 166': 'tis_620', 'ISO_IR 192': 'utf-8', 'GB18030': 'gb18030',
    'GBK': 'gbk',
    }
# Orthanc's "DefaultEncoding" when the study declares no character set
ORTHANC_DEFAULT_CHARACTER_SET = 'ISO_IR 100'


def is_pdf(data: bytes) -> bool:
    return data[:5] == b'%PDF-'


def prepare_pdf(pdf: bytes) -> bytes:
    """Return pdf ending with an end of line, so that Orthanc's
    ``/instances/{id}/pdf`` gives back exactly these bytes.

    Raises ValueError when pdf is not a PDF (Orthanc refuses it).
    """
    if not is_pdf(pdf):
        raise ValueError('not a PDF document')
    return pdf if pdf.endswith((b'\n', b'\r')) else pdf + b'\n'


def _uid(*parts: str) -> str:
    "A UUID-derived UID (PS3.5 B.2)"
    name = '\x1f'.join(str(p) for p in parts)
    return '2.25.%d' % uuid.uuid5(UID_NAMESPACE, name).int


def report_uids(result_key: str, study_instance_uid: str, revision: int
        ) -> tuple[str, str]:
    """Return (SeriesInstanceUID, SOPInstanceUID) of a result's report.

    result_key must identify the result across databases that share the
    Orthanc server (e.g. the database name and the result's id).  The
    series is the same for every revision; the instance is new for each.
    """
    series_uid = _uid('report series', result_key, study_instance_uid)
    return series_uid, _uid('report', series_uid, revision)


def orthanc_id(*identifiers: str) -> str:
    """Return the Orthanc ID of a resource from its DICOM identifiers.

    Orthanc hashes PatientID, StudyInstanceUID, SeriesInstanceUID and
    SOPInstanceUID (as many as the level needs) joined by ``|`` with SHA-1.
    """
    digest = hashlib.sha1('|'.join(identifiers).encode('utf-8')).hexdigest()
    return '-'.join(digest[i:i + 8] for i in range(0, 40, 8))


def report_orthanc_ids(patient_id: str, study_instance_uid: str,
        result_key: str, revision: int) -> dict[str, str]:
    "Return the Orthanc IDs of the report's 'series' and 'instance'"
    series_uid, sop_uid = report_uids(
        result_key, study_instance_uid, revision)
    series = (patient_id, study_instance_uid, series_uid)
    return {'series': orthanc_id(*series),
        'instance': orthanc_id(*series, sop_uid)}


def is_report_series(main_dicom_tags: Mapping[str, str]) -> bool:
    "Tell whether an Orthanc series is a report series stored by us"
    return (main_dicom_tags.get('Modality') == REPORT_MODALITY
        and main_dicom_tags.get('Manufacturer') == REPORT_MANUFACTURER)


def fit_character_set(text: str, character_set: str | None) -> str:
    """Return text made of characters that character_set can encode.

    Orthanc silently drops what the study's character set cannot hold
    ('Иванов' becomes '' in an ISO_IR 100 study): accents are stripped
    instead ('Müller' stays in Latin-1, 'Dvořák' becomes 'Dvorák' there)
    and other characters become '?'.  The PDF keeps the exact text.
    """
    codec = CODECS.get(character_set or ORTHANC_DEFAULT_CHARACTER_SET,
        'ascii')
    result = []
    for char in unicodedata.normalize('NFC', text):
        if not _encodes(char, codec):
            char = ''.join(c for c in unicodedata.normalize('NFKD', char)
                if not unicodedata.combining(c) and _encodes(c, codec))
        result.append(char or '?')
    return ''.join(result)


def _encodes(char: str, codec: str) -> bool:
    try:
        char.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def person_name(family: str | None, given: str | None = None) -> str:
    "Return a DICOM person name (PN) 'Family^Given'"
    components = [' '.join(''.join(' ' if c in '^\\=' or not c.isprintable()
                else c for c in value or '').split())
        for value in [family, given]]
    return '^'.join(components).rstrip('^')[:64]


def _dicom_datetime(value: dt.datetime) -> dict[str, str]:
    tags = {
        'ContentDate': value.strftime('%Y%m%d'),
        'ContentTime': value.strftime('%H%M%S'),
        'AcquisitionDateTime': value.strftime('%Y%m%d%H%M%S'),
        }
    # Orthanc writes these with its own clock (UTC) unless given
    for prefix in ['Series', 'Acquisition']:
        tags[prefix + 'Date'] = tags['ContentDate']
        tags[prefix + 'Time'] = tags['ContentTime']
    offset = value.utcoffset()
    if offset is not None:
        minutes = int(offset.total_seconds()) // 60
        tags['TimezoneOffsetFromUTC'] = '%s%02d%02d' % (
            '-' if minutes < 0 else '+', abs(minutes) // 60,
            abs(minutes) % 60)
    return tags


def create_dicom_body(pdf: bytes, parent_study: str,
        study_instance_uid: str, result_key: str, revision: int,
        result_number: str, completed: dt.datetime,
        professional: str | None = None, title: str = 'Imaging report',
        character_set: str | None = None) -> dict:
    """Return the JSON body of ``POST /tools/create-dicom``.

    parent_study is the Orthanc ID of the study and study_instance_uid its
    StudyInstanceUID; revision counts the completions of the result (1 for
    the first).  completed is the local date-time of the completion (an
    aware date-time also records its offset).  professional is a DICOM
    person name (see :func:`person_name`).  character_set is the study's
    Specific Character Set when known (Orthanc keeps it for the new
    instance), else Orthanc's default is assumed.
    """
    pdf = prepare_pdf(pdf)
    series_uid, sop_uid = report_uids(
        result_key, study_instance_uid, revision)
    tags = {
        'Modality': REPORT_MODALITY,
        'Manufacturer': REPORT_MANUFACTURER,
        'SeriesDescription': REPORT_SERIES_DESCRIPTION,
        'SeriesNumber': str(REPORT_SERIES_NUMBER),
        'SeriesInstanceUID': series_uid,
        'SOPInstanceUID': sop_uid,
        'InstanceNumber': str(revision),
        'DocumentTitle': fit_character_set(
            ' '.join(filter(None, [title, result_number])), character_set),
        'ConceptNameCodeSequence': [dict(DOCUMENT_CONCEPT)],
        'BurnedInAnnotation': 'YES',
        'MIMETypeOfEncapsulatedDocument': 'application/pdf',
        'EncapsulatedDocumentLength': str(len(pdf)),
        **_dicom_datetime(completed),
        }
    if professional:
        tags['PerformingPhysicianName'] = fit_character_set(
            professional, character_set)
    return {
        'Parent': parent_study,
        'Force': True,
        'Tags': tags,
        'Content': 'data:application/pdf;base64,'
        + base64.b64encode(pdf).decode('ascii'),
        }
