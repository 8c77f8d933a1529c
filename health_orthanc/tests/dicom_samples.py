"""Generate small, valid DICOM instances in memory with pydicom.

Everything is deterministic: UIDs are derived from a seed and from the
identifying arguments, so the same call always returns the same bytes
(except ``InstanceCreationDate/Time`` which are fixed too).
"""
import hashlib
import io
import random
import uuid
from collections.abc import Sequence

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

__all__ = ['make_uid', 'make_instance', 'make_study', 'SOP_CLASSES']

SECONDARY_CAPTURE = '1.2.840.10008.5.1.4.1.1.7'
SOP_CLASSES = {
    'CT': '1.2.840.10008.5.1.4.1.1.2',
    'MR': '1.2.840.10008.5.1.4.1.1.4',
    'CR': '1.2.840.10008.5.1.4.1.1.1',
    'DX': '1.2.840.10008.5.1.4.1.1.1.1',
    'US': '1.2.840.10008.5.1.4.1.1.6.1',
    'MG': '1.2.840.10008.5.1.4.1.1.1.2',
    'NM': '1.2.840.10008.5.1.4.1.1.20',
    'PT': '1.2.840.10008.5.1.4.1.1.128',
    'OT': SECONDARY_CAPTURE,
    }

_DEFAULT = object()


def make_uid(*parts, seed: int = 0) -> str:
    """Return a deterministic ``2.25.`` UID derived from ``parts`` and seed.

    The UID is the decimal form of a UUID made of a SHA-256 digest, as
    DICOM PS3.5 B.2 allows.
    """
    text = '\x1f'.join(['gnuhealth-imaging-test', str(seed)]
        + [str(p) for p in parts])
    digest = hashlib.sha256(text.encode('utf-8')).digest()
    return '2.25.%d' % uuid.UUID(bytes=digest[:16], version=4).int


def _set(ds: Dataset, keyword: str, value):
    if value is not None:
        setattr(ds, keyword, value)


def make_instance(
        patient_id: str | None = 'PAT-0001',
        patient_name: str | None = 'DOE^John',
        birth_date: str | None = '19800115',
        sex: str | None = 'M',
        study_uid: str | None = None,
        series_uid: str | None = None,
        sop_uid: str | None = None,
        modality: str | None = 'CT',
        study_date: str | None = '20231001',
        study_time: str | None = '101010',
        accession: str | None = 'ACC-0001',
        description: str | None = 'Test study',
        referring_physician: str | None = 'HOUSE^Gregory^^Dr.',
        institution: str | None = 'GNU Health Hospital',
        study_id: str | None = 'S1',
        series_number: int | None = 1,
        instance_number: int | None = 1,
        series_description: str | None = None,
        body_part: str | None = None,
        specific_character_set: str | Sequence[str] | None = None,
        rows: int = 8,
        columns: int = 8,
        seed: int = 0,
        extra: dict | None = None) -> bytes:
    """Return the bytes of one DICOM Part 10 file.

    Parameters are DICOM-formatted strings (dates ``YYYYMMDD``, times
    ``HHMMSS``, person names ``Family^Given``).  ``None`` leaves the
    attribute out, except for the UIDs where ``None`` means "generate a
    deterministic UID".  ``specific_character_set`` (e.g. ``'ISO_IR 100'``,
    ``'ISO_IR 192'`` or ``['', 'ISO 2022 IR 87']``) is written as
    (0008,0005) and used to encode the text values.  ``extra`` maps pydicom
    keywords to values set last (may override anything).  The image is a
    ``rows`` x ``columns`` 8-bit grey gradient.
    """
    if study_uid is None:
        study_uid = make_uid('study', patient_id, accession, seed=seed)
    if series_uid is None:
        series_uid = make_uid('series', study_uid, series_number, seed=seed)
    if sop_uid is None:
        sop_uid = make_uid('sop', series_uid, instance_number, seed=seed)
    sop_class = SOP_CLASSES.get(modality or 'OT', SECONDARY_CAPTURE)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    if specific_character_set:
        ds.SpecificCharacterSet = specific_character_set
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = '20240101'
    ds.InstanceCreationTime = '000000'
    _set(ds, 'StudyDate', study_date)
    _set(ds, 'SeriesDate', study_date)
    _set(ds, 'StudyTime', study_time)
    _set(ds, 'SeriesTime', study_time)
    _set(ds, 'AccessionNumber', accession)
    _set(ds, 'Modality', modality)
    _set(ds, 'InstitutionName', institution)
    _set(ds, 'ReferringPhysicianName', referring_physician)
    _set(ds, 'StudyDescription', description)
    _set(ds, 'SeriesDescription', series_description
        or ('%s series %s' % (modality or 'OT', series_number)))
    _set(ds, 'PatientName', patient_name)
    _set(ds, 'PatientID', patient_id)
    _set(ds, 'PatientBirthDate', birth_date)
    _set(ds, 'PatientSex', sex)
    _set(ds, 'BodyPartExamined', body_part)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    _set(ds, 'StudyID', study_id)
    _set(ds, 'SeriesNumber', series_number)
    _set(ds, 'InstanceNumber', instance_number)

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = 'MONOCHROME2'
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((x * 255 // max(columns - 1, 1) + y) % 256
        for y in range(rows) for x in range(columns))
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)

    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def make_study(n_series: int = 2, n_instances: int = 2,
        modalities: Sequence[str] = ('CT', 'MR'), seed: int = 0,
        **kwargs) -> list[bytes]:
    """Return the instances of one study: ``n_series`` x ``n_instances``.

    Series ``i`` gets the modality ``modalities[i % len(modalities)]``.
    ``kwargs`` are passed to :func:`make_instance` (patient, study data…).
    The same arguments and ``seed`` always give the same bytes.
    """
    kwargs.setdefault('study_uid', make_uid('study',
        kwargs.get('patient_id', 'PAT-0001'), kwargs.get('accession'),
        seed=seed))
    study_uid = kwargs.pop('study_uid')
    instances = []
    for i in range(n_series):
        series_uid = make_uid('series', study_uid, i, seed=seed)
        for j in range(n_instances):
            instances.append(make_instance(
                study_uid=study_uid, series_uid=series_uid,
                sop_uid=make_uid('sop', series_uid, j, seed=seed),
                modality=modalities[i % len(modalities)],
                series_number=i + 1, instance_number=j + 1,
                seed=seed, **kwargs))
    return instances


def random_patients(count: int, seed: int = 0) -> list[dict]:
    """Return ``count`` reproducible patient keyword sets for
    :func:`make_instance` (patient_id, patient_name, birth_date, sex)."""
    rng = random.Random(seed)
    families = ['DOE', 'SMITH', 'GARCÍA', 'MÜLLER', 'NGUYEN', 'DUBOIS']
    givens = ['John', 'Ana', 'Jörg', 'Marie', 'Li', 'Omar']
    patients = []
    for i in range(count):
        patients.append({
            'patient_id': 'PAT-%05d' % (i + 1),
            'patient_name': '%s^%s' % (rng.choice(families),
                rng.choice(givens)),
            'birth_date': '%04d%02d%02d' % (rng.randint(1930, 2020),
                rng.randint(1, 12), rng.randint(1, 28)),
            'sex': rng.choice('MFO'),
            })
    return patients
