# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"Tests of the create-dicom body that stores a report into its study"
import base64
import datetime as dt
import re

import pytest

from trytond.modules.health_orthanc.report_dicom import (
    create_dicom_body, fit_character_set, is_report_series, orthanc_id,
    person_name, prepare_pdf, report_orthanc_ids, report_uids)

PDF = b'%PDF-1.4\n%%EOF\n'
STUDY_UID = '2.25.140749623117994284134804958853899918417'
UID = re.compile(r'^2\.25\.(0|[1-9][0-9]*)$')


def body(**kwargs):
    values = dict(pdf=PDF, parent_study='e3f9cbea-orthanc-study',
        study_instance_uid=STUDY_UID, result_key='gnuhealth:42',
        revision=1, result_number='IMGR0042',
        completed=dt.datetime(2024, 3, 5, 14, 30, 5))
    values.update(kwargs)
    return create_dicom_body(**values)


def test_body():
    series_uid, sop_uid = report_uids('gnuhealth:42', STUDY_UID, 1)
    assert body(professional='HOUSE^Gregory') == {
        'Parent': 'e3f9cbea-orthanc-study',
        'Force': True,
        'Tags': {
            'Modality': 'DOC',
            'Manufacturer': 'GNU Health',
            'SeriesDescription': 'GNU Health report',
            'SeriesNumber': '9901',
            'SeriesInstanceUID': series_uid,
            'SOPInstanceUID': sop_uid,
            'InstanceNumber': '1',
            'DocumentTitle': 'Imaging report IMGR0042',
            'ConceptNameCodeSequence': [{'CodeValue': '18748-4',
                    'CodingSchemeDesignator': 'LN',
                    'CodeMeaning': 'Diagnostic Imaging Report'}],
            'BurnedInAnnotation': 'YES',
            'MIMETypeOfEncapsulatedDocument': 'application/pdf',
            'EncapsulatedDocumentLength': str(len(PDF)),
            'ContentDate': '20240305',
            'ContentTime': '143005',
            'SeriesDate': '20240305',
            'SeriesTime': '143005',
            'AcquisitionDate': '20240305',
            'AcquisitionTime': '143005',
            'AcquisitionDateTime': '20240305143005',
            'PerformingPhysicianName': 'HOUSE^Gregory',
            },
        'Content': 'data:application/pdf;base64,'
        + base64.b64encode(PDF).decode(),
        }


def test_body_gives_no_patient_or_study_tag():
    "Those come from the parent study; giving them with Force would fork it"
    tags = body(professional='X^Y')['Tags']
    assert not {'PatientName', 'PatientID', 'PatientBirthDate',
        'StudyInstanceUID', 'AccessionNumber', 'StudyDate', 'StudyID',
        'SpecificCharacterSet'} & set(tags)


@pytest.mark.parametrize('completed, offset', [
    (dt.datetime(2024, 3, 5, 14, 30, 5), None),
    (dt.datetime(2024, 3, 5, 14, 30, 5, tzinfo=dt.timezone.utc), '+0000'),
    (dt.datetime(2024, 3, 5, 14, 30, 5,
            tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
        '-0330'),
    (dt.datetime(2024, 3, 5, 14, 30, 5,
            tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=45))), '+0545'),
    ])
def test_body_time_zone(completed, offset):
    tags = body(completed=completed)['Tags']
    assert tags['ContentTime'] == '143005'
    assert tags.get('TimezoneOffsetFromUTC') == offset


def test_body_refuses_what_is_not_a_pdf():
    with pytest.raises(ValueError):
        body(pdf=b'PK\x03\x04 an ODT document')


@pytest.mark.parametrize('pdf, prepared', [
    (b'%PDF-1.4\n%%EOF\n', b'%PDF-1.4\n%%EOF\n'),
    (b'%PDF-1.4\r\n%%EOF\r\n', b'%PDF-1.4\r\n%%EOF\r\n'),
    (b'%PDF-1.4\r%%EOF\r', b'%PDF-1.4\r%%EOF\r'),
    (b'%PDF-1.4\n%%EOF', b'%PDF-1.4\n%%EOF\n'),
    (b'%PDF-1.4\n%%EOF ', b'%PDF-1.4\n%%EOF \n'),
    ])
def test_prepare_pdf(pdf, prepared):
    assert prepare_pdf(pdf) == prepared


@pytest.mark.parametrize('data', [b'', b'%PDF', b'<html>', b' %PDF-1.4\n'])
def test_prepare_pdf_refuses(data):
    with pytest.raises(ValueError):
        prepare_pdf(data)


def test_report_uids():
    series1, sop1 = report_uids('db:1', STUDY_UID, 1)
    series2, sop2 = report_uids('db:1', STUDY_UID, 2)
    other_study = report_uids('db:1', STUDY_UID + '1', 1)
    other_result = report_uids('db:2', STUDY_UID, 1)
    assert (series1, sop1) == report_uids('db:1', STUDY_UID, 1)
    assert series1 == series2 and sop1 != sop2
    assert len({series1, other_study[0], other_result[0]}) == 3
    assert len({sop1, sop2, other_study[1], other_result[1]}) == 4
    for uid in [series1, sop1, sop2, *other_study, *other_result]:
        assert UID.match(uid) and len(uid) <= 64


def test_orthanc_id():
    "The value that Orthanc 1.10.1 gave that instance"
    assert orthanc_id('P1', STUDY_UID, '2.25.1234', '2.25.12345') == (
        'd3235687-c550814d-d2ddb299-2a443e89-1d19ccfa')


def test_report_orthanc_ids():
    series_uid, sop_uid = report_uids('db:1', STUDY_UID, 3)
    assert report_orthanc_ids('P1', STUDY_UID, 'db:1', 3) == {
        'series': orthanc_id('P1', STUDY_UID, series_uid),
        'instance': orthanc_id('P1', STUDY_UID, series_uid, sop_uid),
        }


@pytest.mark.parametrize('tags, result', [
    ({'SeriesDescription': 'GNU Health report', 'Modality': 'DOC',
        'Manufacturer': 'GNU Health'}, True),
    ({'Modality': 'DOC', 'Manufacturer': 'GNU Health'}, True),
    ({'Modality': 'DOC', 'Manufacturer': 'ACME Scanner'}, False),
    ({'Modality': 'OT', 'Manufacturer': 'GNU Health'}, False),
    ({'Modality': 'CT'}, False),
    ({}, False),
    ])
def test_is_report_series(tags, result):
    assert is_report_series(tags) is result


@pytest.mark.parametrize('text, character_set, result', [
    ('Müller', None, 'Müller'),
    ('Müller', 'ISO_IR 100', 'Müller'),
    ('Mu\u0308ller', None, 'Müller'),
    ('Dvořák', None, 'Dvorák'),
    ('Dvořák', 'ISO_IR 101', 'Dvořák'),
    ('Иванов^Иван', None, '??????^????'),
    ('Иванов^Иван', 'ISO_IR 144', 'Иванов^Иван'),
    ('Иванов^Иван', 'ISO_IR 192', 'Иванов^Иван'),
    ('王^小東', 'ISO_IR 192', '王^小東'),
    ('王^小東', 'GB18030', '王^小東'),
    ('Ångström', 'ISO_IR 6', 'Angstrom'),
    ('Ångström', '\\ISO 2022 IR 87', 'Angstrom'),
    ('ﬁle', None, 'file'),
    ('', None, ''),
    ])
def test_fit_character_set(text, character_set, result):
    assert fit_character_set(text, character_set) == result


@pytest.mark.parametrize('family, given, result', [
    ('House', 'Gregory', 'House^Gregory'),
    ('House', None, 'House'),
    (None, 'Gregory', '^Gregory'),
    ('de la Cruz', 'Ana María', 'de la Cruz^Ana María'),
    ('A^B', 'C\\D=E', 'A B^C D E'),
    ('  House\n', '\tGregory ', 'House^Gregory'),
    ('X' * 80, 'Y', 'X' * 64),
    (None, None, ''),
    ])
def test_person_name(family, given, result):
    assert person_name(family, given) == result
