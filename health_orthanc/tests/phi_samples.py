# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""DICOM studies that carry a patient's identifying values in many places.

For the tests of de-identification: every instance holds the patient's
name, PUID, MRN, birth date, accession number, institution and physicians
in their usual attributes, plus a name in StudyDescription, the PUID in a
private tag and in a nested sequence, and dates in several attributes that
differ between series and instances.  Deterministic: the same arguments
give the same bytes.
"""
import dataclasses
import datetime as dt
import hashlib
import io
import uuid

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

__all__ = ['Patient', 'PATIENT', 'sample_uid', 'make_phi_study']

CT = '1.2.840.10008.5.1.4.1.1.2'
PRIVATE_CREATOR = 'GNUHEALTH TEST'


@dataclasses.dataclass(frozen=True)
class Patient:
    "The identifying values written into a sample study."
    name: str = 'MÜLLER^Jörg^Anton'
    puid: str = 'PUID-8472-KX'
    mrn: str = 'MRN00918273'
    other_ids: tuple = ('NHS-4471-9902',)
    birth_date: str = '19750321'
    sex: str = 'M'
    age: str = '048Y'
    institution: str = 'Saint Barnabas General Hospital'
    referring: str = 'HOUSE^Gregory^^Dr.'
    performing: str = 'CUDDY^Lisa'


PATIENT = Patient()


def sample_uid(*parts) -> str:
    "A deterministic 2.25 UID made of ``parts``."
    digest = hashlib.sha256('\x1f'.join(map(str, parts)).encode()).digest()
    return '2.25.%d' % uuid.UUID(bytes=digest[:16], version=4).int


def _instance(patient, accession, study_uid, series, index, dates, extra):
    series_uid = sample_uid(study_uid, 'series', series)
    sop_uid = sample_uid(series_uid, 'sop', index)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = 'ISO_IR 192'
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = sample_uid(study_uid, 'frame')
    ds.Modality = 'CT'
    ds.SeriesNumber = series + 1
    ds.InstanceNumber = index + 1
    ds.StudyID = 'S%s' % accession[-4:]
    ds.PatientName = patient.name
    ds.PatientID = patient.puid
    ds.OtherPatientIDs = [patient.mrn, *patient.other_ids]
    ids = Dataset()
    ids.PatientID = patient.mrn
    ids.TypeOfPatientID = 'TEXT'
    ds.OtherPatientIDsSequence = Sequence([ids])
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientAge = patient.age
    ds.PatientWeight = '81.5'
    ds.AccessionNumber = accession
    ds.InstitutionName = patient.institution
    ds.ReferringPhysicianName = patient.referring
    ds.PerformingPhysicianName = patient.performing
    family, given = patient.name.split('^')[:2]
    ds.StudyDescription = 'CT thorax follow-up of %s %s' % (given, family)
    ds.SeriesDescription = 'Axial %d' % (series + 1)
    ds.StudyDate, ds.StudyTime = dates['study'], '101010'
    ds.SeriesDate, ds.SeriesTime = dates['series'][series], '101500'
    content = dates['content'][series][index]
    ds.AcquisitionDate = content
    ds.AcquisitionTime = '1016%02d' % index
    ds.ContentDate, ds.ContentTime = content, '1017%02d.5' % index
    ds.AcquisitionDateTime = '%s1016%02d.5+0100' % (content, index)
    ds.InstanceCreationDate = content
    request = Dataset()
    request.RequestedProcedureID = patient.puid
    request.ScheduledProcedureStepID = 'SPS-%s' % accession
    ds.RequestAttributesSequence = Sequence([request])
    if index:
        # reference the first image of the series, as a localizer would
        ref = Dataset()
        ref.ReferencedSOPClassUID = CT
        ref.ReferencedSOPInstanceUID = sample_uid(series_uid, 'sop', 0)
        ds.ReferencedImageSequence = Sequence([ref])
    block = ds.private_block(0x0009, PRIVATE_CREATOR, create=True)
    block.add_new(0x10, 'LO', patient.puid)
    block.add_new(0x11, 'LO', 'Exam of %s' % patient.name)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = 'MONOCHROME2'
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(16))
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def make_phi_study(patient: Patient = PATIENT, accession: str = 'ACC552211',
        study_date: str = '20230315', n_series: int = 2,
        n_instances: int = 2, extra: dict | None = None) -> list[bytes]:
    """Return the instances of one study full of identifying values.

    Series ``i`` is dated ``study_date`` + ``i`` days; in each series the
    last instance's content and acquisition date is one day later than the
    others (an acquisition past midnight).  ``extra`` maps keywords to
    values set last on every instance (e.g. a name in InstitutionName).
    """
    start = dt.datetime.strptime(study_date, '%Y%m%d').date()

    def day(n):
        return (start + dt.timedelta(days=n)).strftime('%Y%m%d')
    dates = {
        'study': study_date,
        'series': [day(i) for i in range(n_series)],
        'content': [[day(i + (1 if j == n_instances - 1 and j else 0))
                for j in range(n_instances)] for i in range(n_series)],
        }
    study_uid = sample_uid('study', patient.puid, accession)
    return [_instance(patient, accession, study_uid, i, j, dates, extra)
        for i in range(n_series) for j in range(n_instances)]
