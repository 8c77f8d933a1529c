# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Studies to load on a PACS for the query/retrieve tests.

Small valid DICOM instances made with pydicom, deterministic: the same
arguments always give the same bytes and UIDs.  Self-contained (module
tests must not import the top-level ``tests`` package); the top-level
tests and the benchmark import it.
"""
import hashlib
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

__all__ = ['PacsStudy', 'PACS_STUDIES', 'KNOWN_PATIENTS', 'make_uid',
    'study_instances', 'bulk_studies', 'load']

SECONDARY_CAPTURE = '1.2.840.10008.5.1.4.1.1.7'
SOP_CLASSES = {
    'CT': '1.2.840.10008.5.1.4.1.1.2',
    'MR': '1.2.840.10008.5.1.4.1.1.4',
    'CR': '1.2.840.10008.5.1.4.1.1.1',
    'US': '1.2.840.10008.5.1.4.1.1.6.1',
    'MG': '1.2.840.10008.5.1.4.1.1.1.2',
    'PT': '1.2.840.10008.5.1.4.1.1.128',
    }


def make_uid(*parts) -> str:
    "Return a deterministic ``2.25.`` UID derived from ``parts``"
    text = '\x1f'.join(['gnuhealth-pacs-test'] + [str(p) for p in parts])
    digest = hashlib.sha256(text.encode('utf-8')).digest()
    return '2.25.%d' % uuid.UUID(bytes=digest[:16], version=4).int


@dataclass(frozen=True)
class PacsStudy:
    """A study on the test PACS: one series of one image per modality."""
    patient_id: str
    patient_name: str
    birth_date: str
    study_date: str
    modalities: tuple[str, ...]
    description: str
    accession: str

    @property
    def study_uid(self) -> str:
        return make_uid('study', self.patient_id, self.accession)


#: Patients GNU Health knows: by PUID (PUID-0001) and by an MRN (MRN-0002).
#: EXT-0003 is unknown to GNU Health.
KNOWN_PATIENTS = ('PUID-0001', 'MRN-0002')

PACS_STUDIES = (
    PacsStudy('PUID-0001', 'GARCÍA^Ana', '19700101', '20220110', ('CT',),
        'CT Chest with contrast', 'ACC-1001'),
    PacsStudy('PUID-0001', 'GARCÍA^Ana', '19700101', '20220615', ('MR',),
        'MR Brain', 'ACC-1002'),
    PacsStudy('PUID-0001', 'GARCÍA^Ana', '19700101', '20230301',
        ('CT', 'PT'), 'PET-CT whole body', 'ACC-1003'),
    PacsStudy('PUID-0001', 'GARCÍA^Ana', '19700101', '20231120', ('US',),
        'US Abdomen', 'ACC-1004'),
    PacsStudy('PUID-0001', 'GARCÍA^Ana', '19700101', '20240105', ('CR',),
        'chest x-ray PA', 'ACC-1005'),
    PacsStudy('MRN-0002', 'MÜLLER^Jörg', '19551224', '20230301', ('CT',),
        'CT HEAD without contrast', 'ACC-2001'),
    PacsStudy('MRN-0002', 'MÜLLER^Jörg', '19551224', '20230302', ('MR',),
        'MR Knee', 'ACC-2002'),
    PacsStudy('MRN-0002', 'MÜLLER^Jörg', '19551224', '20230303', ('CT',),
        'CT CHEST follow-up', 'ACC-2003'),
    PacsStudy('EXT-0003', 'NGUYEN^Li', '19900505', '20230301', ('MG',),
        'Mammography screening', 'ACC-3001'),
    PacsStudy('EXT-0003', 'NGUYEN^Li', '19900505', '20221231', ('CT',),
        'CT Abdomen', 'ACC-3002'),
    )


def study_instances(study: PacsStudy, rows: int = 8,
        instances: int = 1) -> Iterator[bytes]:
    """Yield the DICOM files of ``study``: one series per modality.

    ``rows`` is the size of the square image, ``instances`` the number of
    images per series (larger studies for the benchmark).
    """
    for number, modality in enumerate(study.modalities, 1):
        series_uid = make_uid('series', study.study_uid, number)
        for index in range(1, instances + 1):
            yield _instance(study, modality, series_uid, number, index, rows)


def _instance(study, modality, series_uid, number, index, rows) -> bytes:
    sop_class = SOP_CLASSES.get(modality, SECONDARY_CAPTURE)
    sop_uid = make_uid('sop', series_uid, index)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = 'ISO_IR 192'
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = study.study_date
    ds.StudyTime = ds.SeriesTime = '101010'
    ds.AccessionNumber = study.accession
    ds.Modality = modality
    ds.StudyDescription = study.description
    ds.SeriesDescription = '%s series %d' % (modality, number)
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.birth_date
    ds.PatientSex = 'O'
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = '1'
    ds.SeriesNumber = number
    ds.InstanceNumber = index
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = 'MONOCHROME2'
    ds.Rows = ds.Columns = rows
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((x + y + index) % 256
        for y in range(rows) for x in range(rows))
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def bulk_studies(patient_id: str, count: int, first_day: date,
        days: int = 1, modality: str = 'CT',
        description: str = 'Bulk study') -> list[PacsStudy]:
    """Return ``count`` studies of one patient spread over ``days`` days.

    Study ``i`` is on day ``first_day + i % days``; accessions are
    ``<patient_id>-<i>``.
    """
    return [PacsStudy(patient_id, 'BULK^%s' % patient_id, '19800101',
            (first_day + timedelta(days=i % days)).strftime('%Y%m%d'),
            (modality,), '%s %d' % (description, i),
            '%s-%d' % (patient_id, i)[-16:])
        for i in range(count)]


def load(upload, studies, **kwargs) -> int:
    """Store ``studies`` with ``upload(bytes)``; return the instance count.

    ``kwargs`` go to :func:`study_instances`.
    """
    count = 0
    for study in studies:
        for data in study_instances(study, **kwargs):
            upload(data)
            count += 1
    return count
