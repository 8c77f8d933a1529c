# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Build Radiation Dose Structured Reports with pydicom, for the tests.

The content trees follow DICOM PS3.16: TID 10011 (CT Radiation Dose, with
TID 10012 and 10013) and TID 10001 (Projection X-Ray Radiation Dose, with
TID 10002, 10003, 10004, 10005 and 10007).  The codes are written out here
on purpose, not taken from ``health_orthanc.dose``, so that the tests check
the parser against the standard and not against itself.  Everything is
deterministic: the same call gives the same bytes.

:data:`SAMPLES` names the scenarios used by the tests and the benchmark.
"""
import hashlib
import io
import uuid

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

XRAY_RADIATION_DOSE_SR = '1.2.840.10008.5.1.4.1.1.88.67'
ENHANCED_SR = '1.2.840.10008.5.1.4.1.1.88.22'
COMPREHENSIVE_SR = '1.2.840.10008.5.1.4.1.1.88.33'
CT_IMAGE = '1.2.840.10008.5.1.4.1.1.2'

# concept names: (value, scheme, meaning)
DOSE_REPORT = ('113701', 'DCM', 'X-Ray Radiation Dose Report')
PROCEDURE_REPORTED = ('121058', 'DCM', 'Procedure reported')
HAS_INTENT = ('363703001', 'SCT', 'Has Intent')
DIAGNOSTIC_INTENT = ('261004008', 'SCT', 'Diagnostic Intent')
CT_PROCEDURE = ('77477000', 'SCT', 'Computed Tomography X-Ray')
CT_PROCEDURE_SRT = ('P5-08000', 'SRT', 'Computed Tomography X-Ray')
PROJECTION_PROCEDURE = ('113704', 'DCM', 'Projection X-Ray')
MAMMOGRAPHY_PROCEDURE = ('71651007', 'SCT', 'Mammography')
MAMMOGRAPHY_PROCEDURE_SRT = ('P5-40010', 'SRT', 'Mammography')
OBSERVER_TYPE = ('121005', 'DCM', 'Observer Type')
DEVICE = ('121007', 'DCM', 'Device')
DEVICE_OBSERVER_UID = ('121012', 'DCM', 'Device Observer UID')
SCOPE_OF_ACCUMULATION = ('113705', 'DCM', 'Scope of Accumulation')
STUDY = ('113014', 'DCM', 'Study')
STUDY_INSTANCE_UID = ('110180', 'DCM', 'Study Instance UID')
SOURCE_OF_DOSE_INFORMATION = ('113854', 'DCM', 'Source of Dose Information')
AUTOMATED_DATA_COLLECTION = ('113856', 'DCM', 'Automated Data Collection')
START = ('113809', 'DCM', 'Start of X-Ray Irradiation')
END = ('113810', 'DCM', 'End of X-Ray Irradiation')
# TID 10012, 10013
CT_ACCUMULATED = ('113811', 'DCM', 'CT Accumulated Dose Data')
TOTAL_EVENTS = ('113812', 'DCM', 'Total Number of Irradiation Events')
DLP_TOTAL = ('113813', 'DCM', 'CT Dose Length Product Total')
CT_ACQUISITION = ('113819', 'DCM', 'CT Acquisition')
ACQUISITION_PROTOCOL = ('125203', 'DCM', 'Acquisition Protocol')
TARGET_REGION = ('123014', 'DCM', 'Target Region')
CT_ACQUISITION_TYPE = ('113820', 'DCM', 'CT Acquisition Type')
SPIRAL = ('116152004', 'SCT', 'Spiral Acquisition')
SEQUENCED = ('113804', 'DCM', 'Sequenced Acquisition')
EVENT_UID = ('113769', 'DCM', 'Irradiation Event UID')
CT_PARAMETERS = ('113822', 'DCM', 'CT Acquisition Parameters')
EXPOSURE_TIME = ('113824', 'DCM', 'Exposure Time')
SCANNING_LENGTH = ('113825', 'DCM', 'Scanning Length')
CT_DOSE = ('113829', 'DCM', 'CT Dose')
MEAN_CTDIVOL = ('113830', 'DCM', 'Mean CTDIvol')
PHANTOM_TYPE = ('113835', 'DCM', 'CTDIw Phantom Type')
DLP = ('113838', 'DCM', 'DLP')
PHANTOMS = {
    'head': ('113690', 'DCM', 'IEC Head Dosimetry Phantom'),
    'body': ('113691', 'DCM', 'IEC Body Dosimetry Phantom'),
    'nema': ('113692', 'DCM', 'NEMA XR21-2000 Phantom'),
    }
REGIONS = {
    'head': ('69536005', 'SCT', 'Head'),
    'chest': ('816094009', 'SCT', 'Chest'),
    'abdomen': ('818981001', 'SCT', 'Abdomen'),
    }
# TID 10002-10007
ACCUMULATED = ('113702', 'DCM', 'Accumulated X-Ray Dose Data')
ACQUISITION_PLANE = ('113764', 'DCM', 'Acquisition Plane')
PLANES = {
    'single': ('113622', 'DCM', 'Single Plane'),
    'a': ('113620', 'DCM', 'Plane A'),
    'b': ('113621', 'DCM', 'Plane B'),
    }
DAP_TOTAL = ('113722', 'DCM', 'Dose Area Product Total')
DOSE_RP_TOTAL = ('113725', 'DCM', 'Dose (RP) Total')
FLUORO_DAP_TOTAL = ('113726', 'DCM', 'Fluoro Dose Area Product Total')
FLUORO_DOSE_RP_TOTAL = ('113728', 'DCM', 'Fluoro Dose (RP) Total')
ACQUISITION_DAP_TOTAL = (
    '113727', 'DCM', 'Acquisition Dose Area Product Total')
ACQUISITION_DOSE_RP_TOTAL = ('113729', 'DCM', 'Acquisition Dose (RP) Total')
TOTAL_FLUORO_TIME = ('113730', 'DCM', 'Total Fluoro Time')
TOTAL_ACQUISITION_TIME = ('113855', 'DCM', 'Total Acquisition Time')
TOTAL_FRAMES = ('113731', 'DCM', 'Total Number of Radiographic Frames')
REFERENCE_POINT = ('113780', 'DCM', 'Reference Point Definition')
RP_15CM = ('113860', 'DCM', '15cm from Isocenter toward Source')
ACCUMULATED_AGD = ('111637', 'DCM', 'Accumulated Average Glandular Dose')
LATERALITY = ('272741003', 'SCT', 'Laterality')
LATERALITY_SRT = ('G-C171', 'SRT', 'Laterality')
BREASTS = {
    'right': ('73056007', 'SCT', 'Right breast'),
    'left': ('80248007', 'SCT', 'Left breast'),
    'both': ('63762007', 'SCT', 'Both breasts'),
    }
BREASTS_SRT = {
    'right': ('T-04020', 'SRT', 'Right breast'),
    'left': ('T-04030', 'SRT', 'Left breast'),
    'both': ('T-04080', 'SRT', 'Both breasts'),
    }
EVENT = ('113706', 'DCM', 'Irradiation Event X-Ray Data')
EVENT_TYPE = ('113721', 'DCM', 'Irradiation Event Type')
FLUOROSCOPY = ('44491008', 'SCT', 'Fluoroscopy')
STATIONARY = ('113611', 'DCM', 'Stationary Acquisition')
DATETIME_STARTED = ('111526', 'DCM', 'DateTime Started')
DAP = ('122130', 'DCM', 'Dose Area Product')
AGD = ('111631', 'DCM', 'Average Glandular Dose')


def make_uid(*parts, seed=0):
    "A deterministic 2.25 UID (PS3.5 B.2) derived from parts and seed"
    text = '\x1f'.join(['gnuhealth-dose-test', str(seed)]
        + [str(p) for p in parts])
    digest = hashlib.sha256(text.encode('utf-8')).digest()
    return '2.25.%d' % uuid.UUID(bytes=digest[:16], version=4).int


# -- content items ------------------------------------------------------------
def _code(code):
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def _item(relationship, value_type, concept, children=()):
    item = Dataset()
    if relationship:
        item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([_code(concept)])
    if value_type == 'CONTAINER':
        item.ContinuityOfContent = 'SEPARATE'
    if children:
        item.ContentSequence = Sequence(list(children))
    return item


def container(concept, *children, relationship='CONTAINS'):
    return _item(relationship, 'CONTAINER', concept, children)


def num(concept, value, unit, *children, relationship='CONTAINS'):
    """A NUM item; value None gives an empty measured value with the
    "value unknown" qualifier, as PS3.3 C.18.1 allows"""
    item = _item(relationship, 'NUM', concept, children)
    if value is None:
        item.MeasuredValueSequence = Sequence()
        item.NumericValueQualifierCodeSequence = Sequence([
                _code(('114006', 'DCM', 'Measurement failure'))])
        return item
    measured = Dataset()
    measured.NumericValue = value
    measured.MeasurementUnitsCodeSequence = Sequence([
            _code((unit, 'UCUM', unit))])
    item.MeasuredValueSequence = Sequence([measured])
    return item


def code(concept, value, *children, relationship='CONTAINS'):
    item = _item(relationship, 'CODE', concept, children)
    item.ConceptCodeSequence = Sequence([_code(value)])
    return item


def text(concept, value, relationship='CONTAINS'):
    item = _item(relationship, 'TEXT', concept)
    item.TextValue = value
    return item


def uidref(concept, value, relationship='CONTAINS'):
    item = _item(relationship, 'UIDREF', concept)
    item.UID = value
    return item


def datetime(concept, value, relationship='CONTAINS'):
    item = _item(relationship, 'DATETIME', concept)
    item.DateTime = value
    return item


# -- documents ----------------------------------------------------------------
def make_rdsr(content, template=('DCMR', '10011'), root=DOSE_REPORT,
        sop_class=XRAY_RADIATION_DOSE_SR, patient_id='DOSE-0001',
        patient_name='DOE^Jane', study_uid=None, seed=0,
        manufacturer='GNU Health Test Imaging', model='Scanner 1',
        study_date='20240305', instance_number=1):
    """Return an SR dataset whose root container is root, holding content.

    template is the (MappingResource, TemplateIdentifier) of the Content
    Template Sequence, None to leave it out.
    """
    study_uid = study_uid or make_uid('study', patient_id, seed=seed)
    series_uid = make_uid('dose series', study_uid, seed=seed)
    sop_uid = make_uid('dose', study_uid, instance_number, seed=seed)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = 'ISO_IR 192'
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = '19700101'
    ds.PatientSex = 'F'
    ds.StudyDate = ds.ContentDate = study_date
    ds.StudyTime = ds.ContentTime = '101500'
    ds.AccessionNumber = ('ACC-%s' % patient_id)[:16]
    ds.StudyID = '1'
    ds.ReferringPhysicianName = ''
    ds.Modality = 'SR'
    ds.SeriesNumber = 990
    ds.InstanceNumber = instance_number
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model
    ds.StationName = 'ROOM1'
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.PerformedProcedureCodeSequence = Sequence()
    ds.CompletionFlag = 'COMPLETE'
    ds.VerificationFlag = 'UNVERIFIED'
    ds.ValueType = 'CONTAINER'
    ds.ContinuityOfContent = 'SEPARATE'
    ds.ConceptNameCodeSequence = Sequence([_code(root)])
    if template:
        item = Dataset()
        item.MappingResource, item.TemplateIdentifier = template
        ds.ContentTemplateSequence = Sequence([item])
    ds.ContentSequence = Sequence(list(content))
    return ds


def to_bytes(ds):
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _context(study_uid, procedure, seed):
    "Procedure reported, observer context and scope of accumulation"
    return [
        code(PROCEDURE_REPORTED, procedure,
            code(HAS_INTENT, DIAGNOSTIC_INTENT,
                relationship='HAS CONCEPT MOD'),
            relationship='HAS CONCEPT MOD'),
        code(OBSERVER_TYPE, DEVICE, relationship='HAS OBS CONTEXT'),
        uidref(DEVICE_OBSERVER_UID, make_uid('device', seed=seed),
            relationship='HAS OBS CONTEXT'),
        code(SCOPE_OF_ACCUMULATION, STUDY,
            uidref(STUDY_INSTANCE_UID, study_uid,
                relationship='HAS PROPERTIES'),
            relationship='HAS OBS CONTEXT'),
        ]


def ct_event(protocol, ctdivol, dlp, phantom='body', region='chest',
        ctdivol_unit='mGy', dlp_unit='mGy.cm', number=1, seed=0):
    """One CT Acquisition (TID 10013); ctdivol or dlp None leaves the value
    empty, phantom None leaves the phantom type out"""
    dose = [num(MEAN_CTDIVOL, ctdivol, ctdivol_unit),
        num(DLP, dlp, dlp_unit)]
    if phantom:
        dose.append(code(PHANTOM_TYPE, PHANTOMS[phantom]))
    items = [
        code(TARGET_REGION, REGIONS[region]),
        code(CT_ACQUISITION_TYPE, SPIRAL if number % 2 else SEQUENCED),
        uidref(EVENT_UID, make_uid('ct event', number, seed=seed)),
        container(CT_PARAMETERS,
            num(EXPOSURE_TIME, '%.1f' % (3.5 * number), 's'),
            num(SCANNING_LENGTH, '%d' % (300 + number), 'mm')),
        container(CT_DOSE, *dose),
        ]
    if protocol is not None:
        items.insert(0, text(ACQUISITION_PROTOCOL, protocol))
    return container(CT_ACQUISITION, *items)


def ct_report(events, dlp_total, dlp_total_unit='mGy.cm',
        procedure=CT_PROCEDURE, seed=0, **kwargs):
    """TID 10011; events are ct_event() items; dlp_total None leaves the
    total out"""
    study_uid = kwargs.pop('study_uid', None) or make_uid(
        'study', kwargs.get('patient_id', 'DOSE-0001'), seed=seed)
    accumulated = [num(TOTAL_EVENTS, str(len(events)), '{events}')]
    if dlp_total is not None:
        accumulated.append(num(DLP_TOTAL, dlp_total, dlp_total_unit))
    content = _context(study_uid, procedure, seed) + [
        datetime(START, '20240305101000', relationship='HAS OBS CONTEXT'),
        datetime(END, '20240305101430', relationship='HAS OBS CONTEXT'),
        container(CT_ACCUMULATED, *accumulated),
        *events,
        code(SOURCE_OF_DOSE_INFORMATION, AUTOMATED_DATA_COLLECTION),
        ]
    return make_rdsr(content, study_uid=study_uid, seed=seed, **kwargs)


def accumulated(plane='single', totals=(), reference_point=True,
        breasts=None, breast_codes=BREASTS, laterality=LATERALITY,
        agd_unit='mGy'):
    """One Accumulated X-Ray Dose Data container (TID 10002): totals are
    (concept, value, unit); breasts maps 'right'/'left'/'both' to the
    accumulated average glandular dose (TID 10005)"""
    items = [code(ACQUISITION_PLANE, PLANES[plane],
            relationship='HAS CONCEPT MOD')]
    items += [num(concept, value, unit) for concept, value, unit in totals]
    for side, value in (breasts or {}).items():
        items.append(num(ACCUMULATED_AGD, value, agd_unit,
                code(laterality, breast_codes[side],
                    relationship='HAS CONCEPT MOD')))
    if reference_point:
        items.append(code(REFERENCE_POINT, RP_15CM))
    return container(ACCUMULATED, *items)


def xray_event(number, event_type=FLUOROSCOPY, dap='0.0001', seed=0,
        agd=None, side=None):
    "One Irradiation Event X-Ray Data container (TID 10003)"
    items = [
        code(EVENT_TYPE, event_type),
        uidref(EVENT_UID, make_uid('xray event', number, seed=seed)),
        datetime(DATETIME_STARTED, '20240305%02d%02d00' % (
                10 + number // 60, number % 60)),
        num(DAP, dap, 'Gy.m2'),
        ]
    if agd is not None:
        items.append(num(AGD, agd, 'mGy', code(LATERALITY, BREASTS[side],
                    relationship='HAS CONCEPT MOD')))
    return container(EVENT, *items)


def projection_report(planes, events=(), procedure=PROJECTION_PROCEDURE,
        seed=0, **kwargs):
    "TID 10001 with accumulated() containers and xray_event() events"
    kwargs.setdefault('template', ('DCMR', '10001'))
    study_uid = kwargs.pop('study_uid', None) or make_uid(
        'study', kwargs.get('patient_id', 'DOSE-0001'), seed=seed)
    content = _context(study_uid, procedure, seed) + list(planes) + list(
        events) + [code(SOURCE_OF_DOSE_INFORMATION, AUTOMATED_DATA_COLLECTION)]
    return make_rdsr(content, study_uid=study_uid, seed=seed, **kwargs)


# -- scenarios ----------------------------------------------------------------
def ct_three_events(**kwargs):
    "A chest-abdomen CT: scout, two spirals, body and head phantoms"
    return ct_report([
            ct_event('Topogram', '0.13', '1.45', number=1),
            ct_event('Thorax 1.0 Spiral', '6.72', '254.31', number=2),
            ct_event('Abdomen 1.0 Spiral', '8.11', '348.70',
                region='abdomen', number=3),
            ], dlp_total='604.46', **kwargs)


def ct_head_legacy(**kwargs):
    """A head CT of an older scanner: TID 10011 in an Enhanced SR, without
    Content Template Sequence, SNOMED-RT procedure code"""
    kwargs.setdefault('sop_class', ENHANCED_SR)
    kwargs.setdefault('template', None)
    return ct_report([
            ct_event('Head Routine', '52.3', '910.5', phantom='head',
                region='head'),
            ], dlp_total='910.5', procedure=CT_PROCEDURE_SRT, **kwargs)


def projection_radiography(**kwargs):
    "A chest radiograph: two stationary acquisitions"
    return projection_report([accumulated('single', [
                    (DAP_TOTAL, '0.000012', 'Gy.m2'),
                    (DOSE_RP_TOTAL, '0.00021', 'Gy'),
                    (ACQUISITION_DAP_TOTAL, '0.000012', 'Gy.m2'),
                    (ACQUISITION_DOSE_RP_TOTAL, '0.00021', 'Gy'),
                    (TOTAL_ACQUISITION_TIME, '0.04', 's'),
                    (TOTAL_FRAMES, '2', '1'),
                    ])],
        [xray_event(1, STATIONARY, '0.000005'),
            xray_event(2, STATIONARY, '0.000007')], **kwargs)


def fluoroscopy_biplane(**kwargs):
    "A biplane angiography: fluoroscopy and acquisitions on planes A and B"
    planes = [accumulated(plane, [
                (DAP_TOTAL, dap, 'Gy.m2'),
                (DOSE_RP_TOTAL, rp, 'Gy'),
                (FLUORO_DAP_TOTAL, fluoro_dap, 'Gy.m2'),
                (FLUORO_DOSE_RP_TOTAL, fluoro_rp, 'Gy'),
                (TOTAL_FLUORO_TIME, fluoro_time, 's'),
                (ACQUISITION_DAP_TOTAL, acquisition_dap, 'Gy.m2'),
                (ACQUISITION_DOSE_RP_TOTAL, acquisition_rp, 'Gy'),
                (TOTAL_ACQUISITION_TIME, '12.5', 's'),
                ])
        for plane, dap, rp, fluoro_dap, fluoro_rp, fluoro_time,
        acquisition_dap, acquisition_rp in [
            ('a', '0.00452', '0.385', '0.00301', '0.198', '612.4',
                '0.00151', '0.187'),
            ('b', '0.00211', '0.142', '0.00120', '0.081', '301.0',
                '0.00091', '0.061'),
            ]]
    events = [xray_event(n, FLUOROSCOPY if n % 2 else STATIONARY)
        for n in range(1, 7)]
    return projection_report(planes, events, **kwargs)


def mammography_both(**kwargs):
    "A screening mammography: two views of each breast"
    return projection_report(
        [accumulated('single', breasts={'right': '2.41', 'left': '2.63'},
                reference_point=False)],
        [xray_event(n, STATIONARY, agd=agd, side=side) for n, agd, side in [
                (1, '1.20', 'right'), (2, '1.21', 'right'),
                (3, '1.30', 'left'), (4, '1.33', 'left')]],
        procedure=MAMMOGRAPHY_PROCEDURE, **kwargs)


def mammography_legacy(**kwargs):
    """A mammography of an older device: SNOMED-RT codes and the
    accumulated glandular dose in dGy, as TID 10005 first required"""
    return projection_report(
        [accumulated('single', breasts={'both': '0.052'},
                breast_codes=BREASTS_SRT, laterality=LATERALITY_SRT,
                agd_unit='dGy', reference_point=False)],
        procedure=MAMMOGRAPHY_PROCEDURE_SRT, **kwargs)


def private_template(**kwargs):
    "A vendor's own dose template and root concept"
    kwargs.setdefault('template', ('99ACME', '4711'))
    kwargs.setdefault('root', ('DR-01', '99ACME', 'ACME Dose Summary'))
    return make_rdsr([num(('DLP-T', '99ACME', 'Total DLP'), '100', 'mGy.cm')],
        **kwargs)


def unknown_dcmr_template(**kwargs):
    "A DICOM template the parser does not know (Radiopharmaceutical dose)"
    return ct_three_events(template=('DCMR', '10021'), **kwargs)


def odd_units(**kwargs):
    "A CT whose device records Gy.cm, uGy and a DLP in cGy.cm"
    return ct_report([
            ct_event('Abdomen', '9100', '0.412', ctdivol_unit='uGy',
                dlp_unit='Gy.cm', region='abdomen', number=1),
            ct_event('Pelvis', '7.3', '21.9', dlp_unit='cGy.cm',
                region='abdomen', number=2),
            ], dlp_total='0.631', dlp_total_unit='Gy.cm', **kwargs)


def missing_values(**kwargs):
    """A CT whose total is missing, one event without CTDIvol value, one
    without DLP, protocol and phantom"""
    return ct_report([
            ct_event('Chest', None, '120.0', number=1),
            ct_event(None, '4.2', None, phantom=None, number=2),
            ], dlp_total=None, **kwargs)


def not_a_dose_report(**kwargs):
    "An Enhanced SR that is a plain imaging report"
    kwargs.setdefault('sop_class', ENHANCED_SR)
    kwargs.setdefault('template', ('DCMR', '2000'))
    kwargs.setdefault('root', ('18748-4', 'LN', 'Diagnostic Imaging Report'))
    return make_rdsr([text(('121071', 'DCM', 'Finding'), 'No finding')],
        **kwargs)


SAMPLES = {
    'ct_three_events': ct_three_events,
    'ct_head_legacy': ct_head_legacy,
    'projection_radiography': projection_radiography,
    'fluoroscopy_biplane': fluoroscopy_biplane,
    'mammography_both': mammography_both,
    'mammography_legacy': mammography_legacy,
    'private_template': private_template,
    'unknown_dcmr_template': unknown_dcmr_template,
    'odd_units': odd_units,
    'missing_values': missing_values,
    'not_a_dose_report': not_a_dose_report,
    }


IMAGE_CLASSES = {'CT': CT_IMAGE, 'MR': '1.2.840.10008.5.1.4.1.1.4'}


def make_image(study_uid, patient_id='DOSE-0001', patient_name='DOE^Jane',
        modality='CT', number=1, seed=0, character_set=None):
    "A small image of the study (8x8 pixels) to go with its RDSR"
    series_uid = make_uid('image series', study_uid, modality, seed=seed)
    sop_uid = make_uid('image', series_uid, number, seed=seed)
    sop_class = IMAGE_CLASSES[modality]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    if character_set:
        ds.SpecificCharacterSet = character_set
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.StudyDate = '20240305'
    ds.StudyTime = '101500'
    ds.AccessionNumber = ('ACC-%s' % patient_id)[:16]
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = 'MONOCHROME2'
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(64))
    return to_bytes(ds)
