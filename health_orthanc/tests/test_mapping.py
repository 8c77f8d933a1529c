# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Tests of the mapping of Orthanc JSON to record values."""
import datetime as dt
import zlib

import pytest

from trytond.modules.health_orthanc.mapping import (
    MAX_LENGTH, MappingError, clean_text, combine_datetime, format_person_name,
    map_many, map_patient, map_series, map_study, parse_dicom_date,
    parse_dicom_time, parse_orthanc_datetime)
from trytond.modules.health_orthanc.orthanc_client import OrthancClient

from .dicom_samples import make_study
from .orthanc_server import OrthancServer


@pytest.mark.parametrize('value, expected', [
    ('20231001', dt.date(2023, 10, 1)),
    (' 20231001 ', dt.date(2023, 10, 1)),
    ('2023.10.01', dt.date(2023, 10, 1)),
    ('2023-10-01', dt.date(2023, 10, 1)),
    ('19000101', dt.date(1900, 1, 1)),
    ('20240229', dt.date(2024, 2, 29)),
    ('20230229', None),
    ('20230230', None),
    ('20231301', None),
    ('00000000', None),
    ('19800100', None),
    ('', None),
    ('   ', None),
    (None, None),
    (20231001, None),
    ('2023', None),
    ('202310', None),
    ('20231001-20231031', None),
    ('2023100', None),
    ('UNKNOWN', None),
    ('２０２３１００１', None),
    ])
def test_parse_dicom_date(value, expected):
    assert parse_dicom_date(value) == expected


@pytest.mark.parametrize('value, expected', [
    ('101010', dt.time(10, 10, 10)),
    ('101010.123', dt.time(10, 10, 10, 123000)),
    ('101010.123456', dt.time(10, 10, 10, 123456)),
    ('101010.1234567', dt.time(10, 10, 10, 123456)),
    ('101010.', dt.time(10, 10, 10)),
    ('1010', dt.time(10, 10)),
    ('10', dt.time(10)),
    ('10:10:10', dt.time(10, 10, 10)),
    ('10:10:10.5', dt.time(10, 10, 10, 500000)),
    (' 101010 ', dt.time(10, 10, 10)),
    ('235960', dt.time(23, 59, 59)),
    ('000000', dt.time(0)),
    ('240000', None),
    ('106000', None),
    ('101061', None),
    ('1', None),
    ('101', None),
    ('10101', None),
    ('1010101', None),
    ('10a010', None),
    ('１０１０１０', None),
    ('101010.12a', None),
    ('', None),
    (None, None),
    (101010, None),
    ])
def test_parse_dicom_time(value, expected):
    assert parse_dicom_time(value) == expected


@pytest.mark.parametrize('date, time, expected', [
    (dt.date(2023, 10, 1), dt.time(10, 10), dt.datetime(2023, 10, 1, 10, 10)),
    (dt.date(2023, 10, 1), None, dt.datetime(2023, 10, 1)),
    (None, dt.time(10, 10), None),
    (None, None, None),
    ])
def test_combine_datetime(date, time, expected):
    assert combine_datetime(date, time) == expected


@pytest.mark.parametrize('value, expected', [
    ('20231001T101010', dt.datetime(2023, 10, 1, 10, 10, 10)),
    ('20231001T101010.5', dt.datetime(2023, 10, 1, 10, 10, 10)),
    ('20231001', None),
    ('garbage', None),
    ('', None),
    (None, None),
    ])
def test_parse_orthanc_datetime(value, expected):
    assert parse_orthanc_datetime(value) == expected


@pytest.mark.parametrize('value, expected', [
    ('DOE^John', 'DOE, John'),
    ('Doe^John^Paul', 'Doe, John Paul'),
    ('DOE^John^Paul^Dr.^Jr.', 'DOE, Dr. John Paul Jr.'),
    ('DOE^John^^^', 'DOE, John'),
    ('DOE', 'DOE'),
    ('DOE^', 'DOE'),
    ('^John', 'John'),
    ('^^^Dr.', 'Dr.'),
    ('^^^^Jr.', 'Jr.'),
    (' DOE ^ John ', 'DOE, John'),
    ('DOE  SMITH^Mary   Ann', 'DOE SMITH, Mary Ann'),
    ('John Doe', 'John Doe'),
    ('de la Cruz^María José', 'de la Cruz, María José'),
    ('MÜLLER^Jörg', 'MÜLLER, Jörg'),
    ('Wang^XiaoDong=王^小東=', 'Wang, XiaoDong (王 小東)'),
    ('Yamada^Tarou=山田^太郎=やまだ^たろう', 'Yamada, Tarou (山田 太郎)'),
    ('=山田^太郎=やまだ^たろう', '山田 太郎'),
    ('==やまだ^たろう', 'やまだ, たろう'),
    ('Hong^Gildong=洪^吉洞=홍^길동', 'Hong, Gildong (洪 吉洞)'),
    ('Иванов^Иван', 'Иванов, Иван'),
    ('Buc^Jérôme', 'Buc, Jérôme'),
    ('DOE\x00^John', 'DOE, John'),
    ('^^^^', ''),
    ('', ''),
    ('   ', ''),
    ('==', ''),
    (None, ''),
    ])
def test_format_person_name(value, expected):
    assert format_person_name(value) == expected


def test_format_person_name_too_many_components():
    "Malformed names keep every part (extra ones with the middle name)."
    name = format_person_name('A^B^C^D^E^F^G')
    assert name.startswith('A, ')
    for part in 'BCDEFG':
        assert part in name


def test_format_person_name_long():
    assert len(format_person_name('X' * 5000 + '^John')) == MAX_LENGTH


@pytest.mark.parametrize('value, expected', [
    ('  abc  ', 'abc'),
    ('a\x00b', 'ab'),
    ('a\r\nb\tc', 'a b c'),
    ('', None),
    ('   ', None),
    (None, None),
    (12, '12'),
    (['CT', 'MR'], 'CT\\MR'),
    ('x' * 2000, 'x' * MAX_LENGTH),
    ])
def test_clean_text(value, expected):
    assert clean_text(value) == expected


PATIENT = {
    'ID': 'b2e5f9a0-11111111-22222222-33333333-44444444',
    'IsStable': True,
    'LastUpdate': '20231001T101010',
    'MainDicomTags': {
        'PatientBirthDate': '19800115',
        'PatientID': 'P-001',
        'PatientName': 'DOE^John',
        'PatientSex': 'M',
        },
    'Studies': ['s1'],
    'Type': 'Patient',
    }


def patient(**tags):
    result = dict(PATIENT, MainDicomTags=dict(PATIENT['MainDicomTags']))
    for key, value in tags.items():
        if value is None:
            result['MainDicomTags'].pop(key, None)
        else:
            result['MainDicomTags'][key] = value
    return result


def test_map_patient():
    assert map_patient(PATIENT) == {
        'orthanc_id': PATIENT['ID'],
        'patient_id': 'P-001',
        'name': 'DOE, John',
        'birth_date': dt.date(1980, 1, 15),
        'sex': 'm',
        'last_update': dt.datetime(2023, 10, 1, 10, 10, 10),
        }


@pytest.mark.parametrize('tags, key, expected', [
    ({'PatientSex': 'F'}, 'sex', 'f'),
    ({'PatientSex': 'O'}, 'sex', 'o'),
    ({'PatientSex': 'f '}, 'sex', 'f'),
    ({'PatientSex': ''}, 'sex', None),
    ({'PatientSex': 'U'}, 'sex', None),
    ({'PatientSex': 'X'}, 'sex', None),
    ({'PatientSex': None}, 'sex', None),
    ({'PatientName': None}, 'name', ''),
    ({'PatientName': '^^^^'}, 'name', ''),
    ({'PatientName': 'García^José'}, 'name', 'García, José'),
    ({'PatientBirthDate': ''}, 'birth_date', None),
    ({'PatientBirthDate': '19800230'}, 'birth_date', None),
    ({'PatientBirthDate': '1980.01.15'}, 'birth_date', dt.date(1980, 1, 15)),
    ({'PatientID': '  P-001  '}, 'patient_id', 'P-001'),
    ({'PatientID': ''}, 'patient_id', None),
    ({'PatientID': None}, 'patient_id', None),
    ({'PatientID': 'X' * 3000}, 'patient_id', 'X' * MAX_LENGTH),
    ])
def test_map_patient_oddities(tags, key, expected):
    assert map_patient(patient(**tags))[key] == expected


@pytest.mark.parametrize('item', [
    {'MainDicomTags': {'PatientID': 'x'}},
    {'ID': '', 'MainDicomTags': {}},
    {'ID': None},
    {'ID': 42},
    'not a dict',
    None,
    ])
def test_map_patient_fatal(item):
    with pytest.raises(MappingError):
        map_patient(item)


def test_map_patient_minimal():
    values = map_patient({'ID': 'abc', 'MainDicomTags': None})
    assert values['orthanc_id'] == 'abc'
    assert values['name'] == ''
    assert values['patient_id'] is values['birth_date'] is None
    assert values['last_update'] is None


STUDY = {
    'ID': 'study-1',
    'IsStable': True,
    'LastUpdate': '20231001T111111',
    'MainDicomTags': {
        'AccessionNumber': 'ACC-1',
        'InstitutionName': 'GNU Health Hospital',
        'ReferringPhysicianName': 'HOUSE^Gregory^^Dr.',
        'StudyDate': '20231001',
        'StudyDescription': 'CT THORAX',
        'StudyID': 'S1',
        'StudyInstanceUID': '1.2.3.4',
        'StudyTime': '101010.25',
        },
    'ParentPatient': 'patient-1',
    'PatientMainDicomTags': {
        'PatientBirthDate': '19800115',
        'PatientID': 'P-001',
        'PatientName': 'DOE^John',
        'PatientSex': 'M',
        },
    'Series': ['series-1', 'series-2', 'series-3'],
    'Type': 'Study',
    }


def series(id_, modality, instances=1, parent='study-1'):
    result = {
        'ID': id_,
        'Instances': ['%s-i%d' % (id_, i) for i in range(instances)],
        'MainDicomTags': {'SeriesInstanceUID': '1.2.3.4.%s' % id_,
            'SeriesNumber': '1', 'SeriesDescription': 'desc'},
        'ParentStudy': parent,
        'Type': 'Series',
        }
    if modality is not None:
        result['MainDicomTags']['Modality'] = modality
    return result


def study(**tags):
    result = dict(STUDY, MainDicomTags=dict(STUDY['MainDicomTags']))
    for key, value in tags.items():
        if value is None:
            result['MainDicomTags'].pop(key, None)
        else:
            result['MainDicomTags'][key] = value
    return result


def test_map_study():
    values = map_study(STUDY, [series('series-1', 'CT', 3),
            series('series-2', 'MR', 2), series('series-3', 'CT', 1)])
    assert values == {
        'orthanc_id': 'study-1',
        'orthanc_patient_id': 'patient-1',
        'patient_id': 'P-001',
        'study_instance_uid': '1.2.3.4',
        'study_datetime': dt.datetime(2023, 10, 1, 10, 10, 10, 250000),
        'study_date': dt.date(2023, 10, 1),
        'description': 'CT THORAX',
        'accession_number': 'ACC-1',
        'referring_physician': 'HOUSE, Dr. Gregory',
        'institution': 'GNU Health Hospital',
        'study_id': 'S1',
        'modalities': 'CT, MR',
        'number_of_series': 3,
        'number_of_instances': 6,
        'last_update': dt.datetime(2023, 10, 1, 11, 11, 11),
        }


def test_map_study_without_series():
    values = map_study(STUDY)
    assert values['modalities'] is None
    assert values['number_of_series'] == 3
    assert values['number_of_instances'] is None
    values = map_study(dict(STUDY, Series=None))
    assert values['number_of_series'] is None


@pytest.mark.parametrize('items, modalities, n_series, n_instances', [
    ([], None, 0, 0),
    ([series('a', 'CT')], 'CT', 1, 1),
    ([series('a', 'ct '), series('b', ' CT')], 'CT', 2, 2),
    ([series('a', 'MR'), series('b', 'CT'), series('c', 'SR', 0)],
        'CT, MR, SR', 3, 2),
    ([series('a', None), series('b', ''), series('c', 'US', 4)], 'US', 3, 6),
    ([series('a', 'CT'), series('x', 'MR', 9, parent='other-study')],
        'CT', 1, 1),
    ([series('a', 'CT'), 'garbage', None], 'CT', 1, 1),
    ([dict(series('a', 'CT'), Instances=None)], 'CT', 1, 0),
    ])
def test_map_study_series(items, modalities, n_series, n_instances):
    values = map_study(STUDY, items)
    assert values['modalities'] == modalities
    assert values['number_of_series'] == n_series
    assert values['number_of_instances'] == n_instances


@pytest.mark.parametrize('tags, key, expected', [
    ({'StudyTime': None}, 'study_datetime', dt.datetime(2023, 10, 1)),
    ({'StudyTime': ''}, 'study_datetime', dt.datetime(2023, 10, 1)),
    ({'StudyTime': '99'}, 'study_datetime', dt.datetime(2023, 10, 1)),
    ({'StudyTime': '10'}, 'study_datetime', dt.datetime(2023, 10, 1, 10)),
    ({'StudyTime': '10:11:12'}, 'study_datetime',
        dt.datetime(2023, 10, 1, 10, 11, 12)),
    ({'StudyDate': None}, 'study_datetime', None),
    ({'StudyDate': None}, 'study_date', None),
    ({'StudyDate': '00000000'}, 'study_datetime', None),
    ({'StudyDate': '2023.10.01'}, 'study_date', dt.date(2023, 10, 1)),
    ({'StudyDescription': None}, 'description', None),
    ({'StudyDescription': '  '}, 'description', None),
    ({'StudyDescription': 'Ü' * 5000}, 'description', 'Ü' * MAX_LENGTH),
    ({'StudyDescription': 'IRM\x00 cérébrale'}, 'description',
        'IRM cérébrale'),
    ({'AccessionNumber': ''}, 'accession_number', None),
    ({'ReferringPhysicianName': None}, 'referring_physician', ''),
    ({'ReferringPhysicianName': '^^^^'}, 'referring_physician', ''),
    ({'InstitutionName': None}, 'institution', None),
    ({'StudyID': None}, 'study_id', None),
    ({'StudyInstanceUID': ' 1.2.3 '}, 'study_instance_uid', '1.2.3'),
    ])
def test_map_study_oddities(tags, key, expected):
    assert map_study(study(**tags))[key] == expected


def test_map_study_no_patient_tags():
    values = map_study({'ID': 'x', 'MainDicomTags': {
                'StudyInstanceUID': '1.2'}})
    assert values['patient_id'] is None
    assert values['orthanc_patient_id'] is None
    assert values['study_datetime'] is None
    assert values['number_of_series'] is None


@pytest.mark.parametrize('item', [
    dict(STUDY, ID=None),
    {k: v for k, v in STUDY.items() if k != 'ID'},
    study(StudyInstanceUID=None),
    study(StudyInstanceUID='   '),
    dict(STUDY, MainDicomTags=None),
    [],
    None,
    ])
def test_map_study_fatal(item):
    with pytest.raises(MappingError):
        map_study(item)


def test_map_series():
    values = map_series(series('s1', 'mr', 3))
    assert values == {
        'orthanc_id': 's1',
        'orthanc_study_id': 'study-1',
        'series_instance_uid': '1.2.3.4.s1',
        'modality': 'MR',
        'description': 'desc',
        'series_number': 1,
        'body_part': None,
        'number_of_instances': 3,
        'last_update': None,
        }
    item = series('s2', None)
    item['MainDicomTags']['SeriesNumber'] = 'abc'
    values = map_series(item)
    assert values['series_number'] is None
    assert values['modality'] is None


def test_map_many():
    items = [PATIENT, {'MainDicomTags': {}}, None,
        dict(PATIENT, ID='p2'), {'ID': 'p3', 'MainDicomTags': []}]
    records, errors = map_many(map_patient, items)
    assert [r['orthanc_id'] for r in records] == [PATIENT['ID'], 'p2', 'p3']
    assert [e[0] for e in errors] == [1, 2]
    assert all(isinstance(e[1], str) and e[1] for e in errors)


def test_map_many_unexpected_error():
    def boom(item):
        if item['ID'] == 'bad':
            raise KeyError('x')
        return item

    records, errors = map_many(boom, [{'ID': 'ok'}, {'ID': 'bad'}])
    assert records == [{'ID': 'ok'}]
    assert errors == [('bad', "'x'")]


def test_map_many_studies():
    items = [STUDY, study(StudyInstanceUID=None), dict(STUDY, ID='s2')]
    records, errors = map_many(map_study, items)
    assert [r['orthanc_id'] for r in records] == ['study-1', 's2']
    assert errors == [('study-1', 'study study-1 has no StudyInstanceUID')]


# -- a real study uploaded into a real Orthanc ------------------------------
REAL_CASES = [
    # character set, PN written, readable name expected, description,
    # institution
    (None, 'DOE^John', 'DOE, John', 'CHEST PA', 'General Hospital'),
    ('ISO_IR 100', 'MÜLLER^Jörg^^Dr.', 'MÜLLER, Dr. Jörg', 'Tête et cou',
        'Hôpital Général'),
    ('ISO_IR 192', 'Wang^XiaoDong=王^小東', 'Wang, XiaoDong (王 小東)',
        '胸部 CT', 'Hôpital Général 医院'),
    ('ISO_IR 144', 'Иванов^Иван', 'Иванов, Иван', 'Грудная клетка',
        'Больница'),
    (['', 'ISO 2022 IR 87'], 'Yamada^Tarou=山田^太郎=やまだ^たろう',
        'Yamada, Tarou (山田 太郎)', 'MR HEAD', '病院'),
    ]


@pytest.fixture(scope='module')
def orthanc(tmp_path_factory):
    with OrthancServer(str(tmp_path_factory.mktemp('orthanc'))) as server:
        yield server


@pytest.mark.parametrize('charset, pn, name, description, institution',
    REAL_CASES)
def test_real_study_maps(orthanc, charset, pn, name, description,
        institution):
    accession = 'ACC-%08x' % zlib.crc32(pn.encode('utf-8'))
    instances = make_study(2, 3, modalities=('MR', 'CT'), seed=11,
        patient_id='RP-%s' % accession, patient_name=pn, birth_date='19751231',
        sex='F', accession=accession, description=description,
        study_date='20240305', study_time='081500.5',
        referring_physician=pn, institution=institution,
        specific_character_set=charset)
    answers = orthanc.upload_many(instances)
    study_id = answers[0]['ParentStudy']
    with OrthancClient(orthanc.url, orthanc.user, orthanc.password) as client:
        study_json = client.get_study(study_id)
        series_json = client.get_study_series(study_id)
        patient_json = client.get_patient(study_json['ParentPatient'])
    values = map_study(study_json, series_json)
    assert values['orthanc_id'] == study_id
    assert values['orthanc_patient_id'] == patient_json['ID']
    assert values['patient_id'] == 'RP-%s' % accession
    assert values['study_instance_uid'] == study_json['MainDicomTags'][
        'StudyInstanceUID']
    assert values['study_datetime'] == dt.datetime(2024, 3, 5, 8, 15, 0,
        500000)
    assert values['study_date'] == dt.date(2024, 3, 5)
    assert values['description'] == description
    assert values['accession_number'] == accession
    assert values['referring_physician'] == name
    assert values['institution'] == institution
    assert values['modalities'] == 'CT, MR'
    assert values['number_of_series'] == 2
    assert values['number_of_instances'] == 6
    assert isinstance(values['last_update'], dt.datetime)
    patient_values = map_patient(patient_json)
    assert patient_values['name'] == name
    assert patient_values['birth_date'] == dt.date(1975, 12, 31)
    assert patient_values['sex'] == 'f'
    assert [map_series(s)['modality'] for s in series_json] in (
        ['MR', 'CT'], ['CT', 'MR'])
