# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Tests of the worklist entries: building, files and the REST API."""
import datetime as dt
import glob
import io
import json
import os
import stat
import subprocess

import pydicom
import pytest

from trytond.modules.health_orthanc import worklist
from trytond.modules.health_orthanc.orthanc_client import (
    OrthancBadAnswer, OrthancClient, OrthancError)

from .fake_orthanc import FakeOrthanc, Reply
from .orthanc_server import OrthancServer, free_port, plugin_path

ENTRY = {
    'accession_number': 'IMGREQ2026/00001',
    'study_instance_uid': '2.25.1234',
    'patient_id': 'PUID-ANA',
    'patient_family_name': 'Betz',
    'patient_given_name': 'Ana',
    'patient_birth_date': dt.date(1980, 1, 15),
    'patient_sex': 'f',
    'modality': 'CT',
    'procedure': 'CT chest',
    'procedure_code': 'IMG-CT-CHEST',
    'scheduled': dt.datetime(2026, 11, 24, 9, 30, 5),
    'station_aet': 'CT1',
    'requesting_physician_family_name': 'House',
    'requesting_physician_given_name': 'Gregory',
    'urgent': False,
    'comment': 'Fasting',
    }


def entry(**values):
    return dict(ENTRY, **values)


@pytest.mark.parametrize('family, given, expected', [
    ('Betz', 'Ana', 'Betz^Ana'),
    ('Betz', None, 'Betz'),
    (None, 'Ana', '^Ana'),
    (None, None, ''),
    ('de la Cruz', 'Ana María', 'de la Cruz^Ana María'),
    ('Betz^X', 'A=B\\C', 'Betz X^A B C'),
    ('  Betz  ', '\tAna\n', 'Betz^Ana'),
    ('X' * 80, 'Ana', 'X' * 64),
    ])
def test_person_name(family, given, expected):
    assert worklist.person_name(family, given) == expected


@pytest.mark.parametrize('sex, expected', [
    ('m', 'M'), ('f', 'F'),
    # Not the sex of the body imaged: unknown, never guessed as "O"
    ('nb', ''), ('other', ''), ('nd', ''), ('u', ''),
    (None, ''), ('', ''),
    ])
def test_dicom_sex(sex, expected):
    assert worklist.dicom_sex(sex) == expected


@pytest.mark.parametrize('text, expected', [
    ('CT MR', {'CT', 'MR'}),
    ('ct, mr;US', {'CT', 'MR', 'US'}),
    ('  ', set()),
    (None, set()),
    ])
def test_parse_modalities(text, expected):
    assert worklist.parse_modalities(text) == expected


RADIOLOGY = [('ct-mr', 'CT MR'), ('all', ''), ('us', 'US'), ('all2', None)]


@pytest.mark.parametrize('servers, modality, expected', [
    (RADIOLOGY, 'CT', 'ct-mr'),
    (RADIOLOGY, 'mr', 'ct-mr'),
    (RADIOLOGY, 'US', 'us'),
    (RADIOLOGY, 'DX', 'all'),
    (RADIOLOGY, None, 'all'),
    ([('ct', 'CT')], 'MR', None),
    ([], 'CT', None),
    ([('a', 'CT'), ('b', 'CT')], 'CT', 'a'),
    ])
def test_choose_server(servers, modality, expected):
    assert worklist.choose_server(servers, modality) == expected


@pytest.mark.parametrize('values, code, params, text', [
    ({'accession_number': ''}, 'no_accession', {}, 'no accession number'),
    ({'accession_number': 'A' * 17}, 'accession_too_long', {'size': 16},
        'longer than 16'),
    ({'patient_id': None}, 'no_patient_id', {}, 'no PatientID'),
    ({'patient_id': 'P' * 65}, 'patient_id_too_long', {'size': 64},
        'PatientID longer than 64'),
    ({'modality': None}, 'no_modality', {}, 'no modality'),
    ({'study_instance_uid': ''}, 'no_study_uid', {}, 'no StudyInstanceUID'),
    ({'station_aet': 'S' * 17}, 'station_aet_too_long', {'size': 16},
        'station AE title'),
    # AE and CS are ASCII whatever the character set
    ({'station_aet': 'КТ1'}, 'station_aet_invalid', {}, 'station AE title'),
    ({'station_aet': 'CT\\1'}, 'station_aet_invalid', {},
        'station AE title'),
    ({'modality': 'КТ'}, 'modality_invalid', {'modality': 'КТ'},
        "modality 'КТ'"),
    ({'modality': 'C-T'}, 'modality_invalid', {'modality': 'C-T'},
        'not a DICOM code'),
    ])
def test_invalid_entry(values, code, params, text):
    "Problems are codes with parameters (translated by the module)"
    assert worklist.check_entry(entry(**values)) == [(code, params)]
    with pytest.raises(worklist.WorklistError, match=text) as info:
        worklist.build_dataset(entry(**values))
    assert info.value.problems == [(code, params)]


def test_problem_codes_have_texts():
    "Every code has an English text (logs) and parameters that fit it"
    codes = {c for c, _ in worklist.check_entry({'station_aet': 'S' * 17})}
    assert codes <= set(worklist.PROBLEMS)


def test_valid_entry():
    assert worklist.check_entry(ENTRY) == []
    minimal = {k: ENTRY[k] for k in [
            'accession_number', 'study_instance_uid', 'patient_id',
            'modality']}
    assert worklist.check_entry(minimal) == []
    worklist.build_dataset(minimal)


@pytest.mark.parametrize('keyword, expected', [
    ('AccessionNumber', 'IMGREQ2026/00001'),
    ('PatientID', 'PUID-ANA'),
    ('PatientName', 'Betz^Ana'),
    ('PatientBirthDate', '19800115'),
    ('PatientSex', 'F'),
    ('StudyInstanceUID', '2.25.1234'),
    ('RequestingPhysician', 'House^Gregory'),
    ('ReferringPhysicianName', 'House^Gregory'),
    ('RequestedProcedureDescription', 'CT chest'),
    ('RequestedProcedureID', 'IMGREQ2026/00001'),
    ('RequestedProcedurePriority', 'ROUTINE'),
    ])
def test_dataset(keyword, expected):
    ds = worklist.build_dataset(ENTRY)
    assert str(ds.data_element(keyword).value) == expected
    assert 'SpecificCharacterSet' not in ds


@pytest.mark.parametrize('keyword, expected', [
    ('Modality', 'CT'),
    ('ScheduledStationAETitle', 'CT1'),
    ('ScheduledProcedureStepStartDate', '20261124'),
    ('ScheduledProcedureStepStartTime', '093005'),
    ('ScheduledProcedureStepDescription', 'CT chest'),
    ('ScheduledProcedureStepID', 'IMGREQ2026/00001'),
    ('CommentsOnTheScheduledProcedureStep', 'Fasting'),
    ])
def test_dataset_step(keyword, expected):
    step, = worklist.build_dataset(ENTRY).ScheduledProcedureStepSequence
    assert str(step.data_element(keyword).value) == expected
    code, = step.ScheduledProtocolCodeSequence
    assert (code.CodeValue, code.CodeMeaning) == ('IMG-CT-CHEST', 'CT chest')


@pytest.mark.parametrize('values, expected', [
    ({'urgent': True}, 'STAT'),
    ({'urgent': None}, 'ROUTINE'),
    ])
def test_priority(values, expected):
    ds = worklist.build_dataset(entry(**values))
    assert ds.RequestedProcedurePriority == expected


@pytest.mark.parametrize('values', [
    {'patient_family_name': 'Müller'},
    {'requesting_physician_given_name': 'José'},
    {'procedure': 'Échographie'},
    {'patient_family_name': '山田', 'patient_given_name': '太郎'},
    ])
def test_non_ascii_names_are_utf8(values, tmp_path):
    "Non-ASCII names are written in UTF-8 and read back unchanged"
    path = worklist.write_file(str(tmp_path), entry(**values))
    ds = pydicom.dcmread(path)
    assert ds.SpecificCharacterSet == 'ISO_IR 192'
    expected = worklist.build_dataset(entry(**values))
    assert str(ds.PatientName) == str(expected.PatientName)
    assert str(ds.RequestingPhysician) == str(expected.RequestingPhysician)
    assert ds.RequestedProcedureDescription == \
        expected.RequestedProcedureDescription


TEXTS = [
    # (entry key, where it is written)
    ('patient_id', ['PatientID']),
    ('accession_number', ['AccessionNumber', 'RequestedProcedureID',
            'ScheduledProcedureStepSequence[0].ScheduledProcedureStepID']),
    ('patient_family_name', ['PatientName']),
    ('requesting_physician_family_name', ['RequestingPhysician',
            'ReferringPhysicianName']),
    ('procedure', ['RequestedProcedureDescription',
            'ScheduledProcedureStepSequence[0]'
            '.ScheduledProcedureStepDescription']),
    ('procedure_code', ['ScheduledProcedureStepSequence[0]'
            '.ScheduledProtocolCodeSequence[0].CodeValue']),
    ('comment', ['ScheduledProcedureStepSequence[0]'
            '.CommentsOnTheScheduledProcedureStep']),
    ]


def read_path(ds, path):
    "Return the value at a path like 'Sequence[0].Keyword'"
    for part in path.split('.'):
        keyword, _, index = part.partition('[')
        ds = getattr(ds, keyword)
        if index:
            ds = ds[int(index[:-1])]
    return str(ds)


@pytest.mark.parametrize('key, paths', TEXTS, ids=[k for k, _ in TEXTS])
@pytest.mark.parametrize('text', ['ПАЦ-77', 'Ψ7', '山田-1', 'É'])
def test_any_text_decides_the_character_set(tmp_path, key, paths, text):
    """Identifiers as much as names: a PUID ПАЦ-77 written without a
    character set reaches the modality as ???-77"""
    values = {key: text, 'patient_given_name': None,
        'requesting_physician_given_name': None}
    path = worklist.write_file(str(tmp_path), entry(**values))
    ds = pydicom.dcmread(path)
    assert ds.SpecificCharacterSet == 'ISO_IR 192'
    for where in paths:
        assert read_path(ds, where) == text
    with open(path, 'rb') as fp:
        assert text.encode('utf-8') in fp.read()
    # The same for the REST API
    assert worklist.rest_tags(entry(**values))['Tags'][
        'SpecificCharacterSet'] == 'ISO_IR 192'


def test_same_length_puids_stay_apart(tmp_path):
    "Two Cyrillic PUIDs of the same length are two patients"
    first = worklist.write_file(str(tmp_path), entry(
            patient_id='ПАЦ-77', accession_number='A1',
            study_instance_uid='2.25.1'))
    second = worklist.write_file(str(tmp_path), entry(
            patient_id='ЖУК-77', accession_number='A2',
            study_instance_uid='2.25.2'))
    assert {pydicom.dcmread(p).PatientID for p in [first, second]} == {
        'ПАЦ-77', 'ЖУК-77'}


def test_empty_optional_values():
    ds = worklist.build_dataset(entry(
            patient_birth_date=None, patient_sex=None, scheduled=None,
            station_aet=None, procedure_code=None))
    assert ds.PatientBirthDate == ''
    assert ds.PatientSex == ''
    step, = ds.ScheduledProcedureStepSequence
    assert step.ScheduledProcedureStepStartDate == ''
    assert step.ScheduledStationAETitle == ''
    assert 'ScheduledProtocolCodeSequence' not in step


def test_dataset_bytes_part10():
    data = worklist.dataset_bytes(worklist.build_dataset(ENTRY))
    assert data[128:132] == b'DICM'
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.file_meta.MediaStorageSOPClassUID == worklist.MWL_FIND
    assert ds.AccessionNumber == ENTRY['accession_number']


UID_HASH = '2.25.1234'


@pytest.mark.parametrize('accession, prefix', [
    ('IMGREQ2026/00001', 'IMGREQ2026_00001'),
    ('ACC-1.2_3', 'ACC-1.2_3'),
    ('../x', '_x'),
    ('A B', 'A_B'),
    ])
def test_file_name(accession, prefix):
    name = worklist.file_name(accession, UID_HASH)
    assert name.startswith(prefix + '-')
    assert name.endswith('.wl')
    digest = name[len(prefix) + 1:-len('.wl')]
    assert len(digest) == worklist.HASH_SIZE
    assert set(digest) <= set('0123456789abcdef')


@pytest.mark.parametrize('first, second', [
    # Sanitized alike
    (('A/1', '2.25.1'), ('A_1', '2.25.2')),
    # Alike on a case-insensitive file system
    (('acc1', '2.25.1'), ('ACC1', '2.25.2')),
    ])
def test_file_name_unique(first, second):
    "Two requests never share a file, whatever their accession numbers"
    names = {worklist.file_name(*first), worklist.file_name(*second)}
    assert len({n.lower() for n in names}) == 2


@pytest.mark.parametrize('accession, uid', [
    ('', '2.25.1'), (None, '2.25.1'), ('..', '2.25.1'), ('A1', ''),
    ])
def test_file_name_invalid(accession, uid):
    with pytest.raises(worklist.WorklistError):
        worklist.file_name(accession, uid)


def test_write_replace_remove(tmp_path):
    folder = str(tmp_path)
    path = worklist.write_file(folder, ENTRY)
    assert os.path.isabs(path)
    assert worklist.is_file_entry(path)
    assert os.path.dirname(path) == folder
    assert os.listdir(folder) == [os.path.basename(path)]
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode & stat.S_IROTH, "Orthanc, another user, must read it"
    assert worklist.write_file(
        folder, entry(procedure='CT abdomen')) == path
    assert os.listdir(folder) == [os.path.basename(path)]
    ds = pydicom.dcmread(path)
    assert ds.RequestedProcedureDescription == 'CT abdomen'
    assert worklist.remove_file(path) is True
    assert os.listdir(folder) == []
    assert worklist.remove_file(path) is False


def test_colliding_accessions_keep_their_files(tmp_path):
    "Removing one entry never removes another request's"
    folder = str(tmp_path)
    first = worklist.write_file(folder, entry(
            accession_number='A/1', study_instance_uid='2.25.1'))
    second = worklist.write_file(folder, entry(
            accession_number='A_1', study_instance_uid='2.25.2'))
    assert first != second
    assert len(os.listdir(folder)) == 2
    worklist.remove_file(first)
    assert os.listdir(folder) == [os.path.basename(second)]
    assert pydicom.dcmread(second).AccessionNumber == 'A_1'


def test_remove_from_where_it_was_written(tmp_path):
    "The folder of the server may change: the path stays right"
    old, new = tmp_path / 'old', tmp_path / 'new'
    old.mkdir()
    new.mkdir()
    path = worklist.write_file(str(old), ENTRY)
    assert worklist.remove_file(path) is True
    assert os.listdir(old) == []


@pytest.mark.parametrize('name', [
    '/tmp/x.dcm', 'relative.wl', '/tmp/.hidden.wl', '', None])
def test_remove_refuses_other_files(tmp_path, name):
    with pytest.raises(worklist.WorklistError):
        worklist.remove_file(name)


def test_is_file_entry():
    assert worklist.is_file_entry('/srv/worklists/A-0123456789.wl')
    assert not worklist.is_file_entry('5fdc7404-f9dc')
    assert not worklist.is_file_entry(None)


def test_write_missing_folder(tmp_path):
    with pytest.raises(worklist.WorklistError, match='does not exist'):
        worklist.write_file(str(tmp_path / 'missing'), ENTRY)


def test_write_read_only_folder(tmp_path, monkeypatch):
    "A folder GNU Health may not write in (as root, chmod is not enough)"
    def refuse(*args, **kwargs):
        raise PermissionError(13, 'Permission denied')
    monkeypatch.setattr(worklist.tempfile, 'mkstemp', refuse)
    with pytest.raises(worklist.WorklistError,
            match='cannot write in .*Permission denied'):
        worklist.write_file(str(tmp_path), ENTRY)


def test_write_failure_leaves_nothing(tmp_path, monkeypatch):
    "A failed write leaves neither the entry nor a temporary file"
    def fail(*args):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(worklist.os, 'replace', fail)
    with pytest.raises(worklist.WorklistError, match='No space left'):
        worklist.write_file(str(tmp_path), ENTRY)
    assert os.listdir(tmp_path) == []


def test_write_invalid_entry_leaves_nothing(tmp_path):
    with pytest.raises(worklist.WorklistError):
        worklist.write_file(str(tmp_path), entry(modality=''))
    assert os.listdir(tmp_path) == []


def test_rest_tags():
    tags = worklist.rest_tags(ENTRY)['Tags']
    assert tags['AccessionNumber'] == 'IMGREQ2026/00001'
    assert tags['PatientName'] == 'Betz^Ana'
    assert tags['PatientBirthDate'] == '19800115'
    step, = tags['ScheduledProcedureStepSequence']
    assert step['Modality'] == 'CT'
    assert step['ScheduledProcedureStepStartDate'] == '20261124'
    code, = step['ScheduledProtocolCodeSequence']
    assert code['CodeValue'] == 'IMG-CT-CHEST'
    assert 'SpecificCharacterSet' not in tags
    json.dumps(tags)


@pytest.mark.parametrize('key, value, keyword', [
    ('patient_family_name', 'Müller', 'PatientName'),
    ('patient_id', 'ПАЦ-77', 'PatientID'),
    ('accession_number', 'АКЦ-1', 'AccessionNumber'),
    ])
def test_rest_tags_carry_the_character_set(key, value, keyword):
    """Without it Orthanc would encode the values in its DefaultEncoding
    (Latin-1 unless configured)"""
    tags = worklist.rest_tags(entry(**{key: value}))['Tags']
    assert tags['SpecificCharacterSet'] == 'ISO_IR 192'
    assert tags[keyword].startswith(value)


@pytest.fixture
def fake():
    with FakeOrthanc() as fake:
        yield fake


def plugin(version):
    return {'ID': 'worklists', 'Version': version}


@pytest.mark.parametrize('routes, expected', [
    ({'/plugins': ['explorer.js'],
        '/plugins/worklists': plugin('1.12.10')}, False),
    ({'/plugins': ['explorer.js', 'worklists']}, False),
    ({'/plugins': ['explorer.js', 'worklists'],
        '/plugins/worklists': plugin('1.10.1')}, False),
    ({'/plugins': ['worklists'],
        '/plugins/worklists': plugin('1.12.9')}, False),
    ({'/plugins': ['worklists'],
        '/plugins/worklists': plugin('1.12.10')}, True),
    ({'/plugins': ['worklists'],
        '/plugins/worklists': plugin('1.13.0')}, True),
    ({'/plugins': ['worklists'],
        '/plugins/worklists': plugin('mainline')}, True),
    ({'/plugins': ['worklists'],
        '/plugins/worklists': plugin('x')}, False),
    ({'/plugins': ['worklists'], '/plugins/worklists': ['x']}, False),
    ({'/plugins': {}}, False),
    ])
def test_rest_available(fake, routes, expected):
    """Orthanc 1.10's plugin is 'worklists' too but has no REST API; the
    worklists themselves are never listed"""
    for path, body in routes.items():
        fake.set_json(path, body)
    with OrthancClient(fake.url, backoff=0) as client:
        assert client.worklists_available() is expected
    assert fake.count('/worklists') == 0


def test_rest_available_server_error(fake):
    fake.set('/plugins', status=500)
    with OrthancClient(fake.url, backoff=0, retries=0) as client:
        with pytest.raises(OrthancError):
            client.worklists_available()


def test_rest_create(fake):
    fake.set_json('/worklists/create', {
            'ID': '5fdc7404-f9dc', 'Path': '/worklists/5fdc7404-f9dc'})
    with OrthancClient(fake.url, 'u', 'p', backoff=0) as client:
        assert client.create_worklist(
            worklist.rest_tags(ENTRY)) == '5fdc7404-f9dc'
    request, = [r for r in fake.requests if r.path == '/worklists/create']
    assert request.method == 'POST'
    assert request.headers['Content-Type'] == 'application/json'
    body = json.loads(request.body)
    assert body == worklist.rest_tags(ENTRY)


def test_rest_create_non_ascii(fake):
    "The body is UTF-8 JSON with the character set of the entry"
    fake.set_json('/worklists/create', {'ID': 'w1'})
    with OrthancClient(fake.url, 'u', 'p', backoff=0) as client:
        client.create_worklist(worklist.rest_tags(entry(patient_id='ПАЦ-77')))
    request, = [r for r in fake.requests if r.path == '/worklists/create']
    tags = json.loads(request.body.decode('utf-8'))['Tags']
    assert tags['PatientID'] == 'ПАЦ-77'
    assert tags['SpecificCharacterSet'] == 'ISO_IR 192'


@pytest.mark.parametrize('reply', [
    Reply(200, {'Path': '/worklists/x'}),
    Reply(200, 'not json', content_type='text/plain'),
    Reply(200, ['x']),
    ])
def test_rest_create_bad_answer(fake, reply):
    fake.set('/worklists/create', reply)
    with OrthancClient(fake.url, backoff=0) as client:
        with pytest.raises(OrthancBadAnswer):
            client.create_worklist(worklist.rest_tags(ENTRY))


def test_rest_create_not_retried(fake):
    "A POST is sent once: it may have created the worklist"
    fake.set('/worklists/create', status=503)
    with OrthancClient(fake.url, backoff=0) as client:
        with pytest.raises(OrthancError):
            client.create_worklist(worklist.rest_tags(ENTRY))
    assert fake.count('/worklists/create') == 1


def test_rest_create_invalid_entry_sends_nothing(fake):
    with OrthancClient(fake.url, backoff=0) as client:
        with pytest.raises(worklist.WorklistError):
            client.create_worklist(worklist.rest_tags(entry(patient_id='')))
    assert fake.count('/worklists/create') == 0


def test_rest_delete(fake):
    fake.set_json('/worklists/5fdc7404-f9dc', {})
    with OrthancClient(fake.url, backoff=0) as client:
        assert client.delete_worklist('5fdc7404-f9dc') is True
        assert client.delete_worklist('gone') is False
    methods = [(r.method, r.path) for r in fake.requests]
    assert ('DELETE', '/worklists/5fdc7404-f9dc') in methods
    assert ('DELETE', '/worklists/gone') in methods


def test_rest_delete_error(fake):
    fake.set('/worklists/x', status=500)
    with OrthancClient(fake.url, backoff=0, retries=0) as client:
        with pytest.raises(OrthancError):
            client.delete_worklist('x')


# -- a real Orthanc 1.10 serving the folder, queried as a modality does -----
# Orthanc answers a C-FIND in its DefaultEncoding (Latin-1 unless
# configured, Cyrillic becomes nothing): a hospital with non-Latin PUIDs
# sets it to Utf8, as the administration guide says
MODALITY_AET = 'CT1'


@pytest.fixture(scope='module')
def orthanc(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('orthanc-worklists')
    folder = workdir / 'worklists'
    folder.mkdir()
    with OrthancServer(str(workdir), dicom=True,
            plugins=[plugin_path('ModalityWorklists')], extra_config={
                'Worklists': {'Enable': True, 'Database': str(folder)},
                'DefaultEncoding': 'Utf8',
                'DicomModalities': {
                    'ct1': [MODALITY_AET, '127.0.0.1', free_port()]},
                }) as server:
        server.folder = str(folder)
        yield server


@pytest.fixture
def folder(orthanc):
    for name in os.listdir(orthanc.folder):
        os.unlink(os.path.join(orthanc.folder, name))
    return orthanc.folder


def find_worklist(orthanc, tmp_path, **keys):
    "Query the worklist with dcmtk's findscu; return the answers"
    query = dict.fromkeys(['AccessionNumber', 'PatientName', 'PatientID',
            'ScheduledProcedureStepSequence[0].Modality'], '')
    query.update(keys)
    output = tmp_path / ('answers-%d' % len(list(tmp_path.iterdir())))
    output.mkdir()
    arguments = ['findscu', '-W', '-X', '-od', str(output),
        '-aet', MODALITY_AET, '-aec', orthanc.aet]
    for key, value in query.items():
        arguments += ['-k', '%s=%s' % (key, value) if value else key]
    arguments += ['127.0.0.1', str(orthanc.dicom_port)]
    process = subprocess.run(arguments, capture_output=True)
    assert process.returncode == 0, process.stderr
    assert b'Find Failed' not in process.stderr
    return [pydicom.dcmread(f)
        for f in sorted(glob.glob(str(output / 'rsp*.dcm')))]


def test_orthanc_answers_non_latin_puids(orthanc, folder, tmp_path):
    """The worklist plugin of a real Orthanc answers the PatientID,
    accession number and names as written, and tells two PUIDs of the
    same length apart"""
    worklist.write_file(folder, entry(patient_id='ПАЦ-77',
            accession_number='АКЦ-1', study_instance_uid='2.25.1',
            patient_family_name='Иванова', patient_given_name='Анна'))
    worklist.write_file(folder, entry(patient_id='ЖУК-77',
            accession_number='АКЦ-2', study_instance_uid='2.25.2'))
    answers = find_worklist(orthanc, tmp_path)
    assert sorted((a.PatientID, a.AccessionNumber) for a in answers) == [
        ('ЖУК-77', 'АКЦ-2'), ('ПАЦ-77', 'АКЦ-1')]
    answer, = find_worklist(orthanc, tmp_path, PatientID='ПАЦ-77',
        SpecificCharacterSet='ISO_IR 192')
    assert answer.AccessionNumber == 'АКЦ-1'
    assert str(answer.PatientName) == 'Иванова^Анна'
