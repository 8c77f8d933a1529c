# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Table tests of DICOM networking: the validators and mapping of
dicom_network, the client's DICOM methods and the classification of their
errors.

The exchanges with real Orthancs are in the top-level
``tests/test_dicom_network.py``; here a client whose ``request`` is stubbed
replays the answers Orthanc 1.10.1 gave there.
"""
import json
from datetime import date

import pytest

from trytond.modules.health_orthanc import dicom_network as dn
from trytond.modules.health_orthanc import orthanc_client as oc
from trytond.modules.health_orthanc.orthanc_client import (
    OrthancClient, OrthancError, OrthancNotFound, OrthancUnauthorized)


# -- validators --------------------------------------------------------------
@pytest.mark.parametrize('name, expected', [
    ('PACS', (True, '')),
    ('hosp-pacs_2', (True, '')),
    ('0', (True, '')),
    ('', (False, 'name_empty')),
    (None, (False, 'name_empty')),
    ('bad name', (False, 'name_invalid')),
    ('bad.name', (False, 'name_invalid')),
    ('badé', (False, 'name_invalid')),
    ('a/b', (False, 'name_invalid')),
    ])
def test_validate_node_name(name, expected):
    assert dn.validate_node_name(name) == expected


@pytest.mark.parametrize('aet, expected', [
    ('PACS', (True, '')),
    ('ORTHANC_1-A', (True, '')),
    ('A B', (True, '')),
    (' PACS ', (True, '')),
    ('X' * 16, (True, '')),
    ('X' * 17, (False, 'aet_too_long')),
    (' ' + 'X' * 16 + ' ', (True, '')),
    ('', (False, 'aet_empty')),
    ('   ', (False, 'aet_empty')),
    (None, (False, 'aet_empty')),
    ('A\\B', (False, 'aet_invalid')),
    ('PACSÉ', (False, 'aet_invalid')),
    ('A\tB', (False, 'aet_invalid')),
    ])
def test_validate_aet(aet, expected):
    assert dn.validate_aet(aet) == expected


@pytest.mark.parametrize('host, expected', [
    ('127.0.0.1', (True, '')),
    ('::1', (True, '')),
    ('fe80::1', (True, '')),
    ('localhost', (True, '')),
    ('pacs.hospital.example.org', (True, '')),
    ('pacs.hospital.example.org.', (True, '')),
    ('pacs-01', (True, '')),
    ('', (False, 'host_empty')),
    ('  ', (False, 'host_empty')),
    (None, (False, 'host_empty')),
    ('http://pacs', (False, 'host_is_url')),
    ('pacs/dicom', (False, 'host_is_url')),
    ('pacs 01', (False, 'host_invalid')),
    ('-pacs', (False, 'host_invalid')),
    ('pacs_01', (False, 'host_invalid')),
    ('pacs:104', (False, 'host_invalid')),
    ('256.1.1.1', (False, 'host_invalid')),
    ('a..b', (False, 'host_invalid')),
    ('x' * 64 + '.org', (False, 'host_invalid')),
    ])
def test_validate_host(host, expected):
    assert dn.validate_host(host) == expected


@pytest.mark.parametrize('port, expected', [
    (104, (True, '')),
    ('11112', (True, '')),
    (1, (True, '')),
    (65534, (True, '')),
    (104.0, (True, '')),
    (0, (False, 'port_out_of_range')),
    (65535, (False, 'port_out_of_range')),
    (-1, (False, 'port_out_of_range')),
    (104.5, (False, 'port_invalid')),
    ('abc', (False, 'port_invalid')),
    (None, (False, 'port_invalid')),
    (True, (False, 'port_invalid')),
    ])
def test_validate_port(port, expected):
    assert dn.validate_port(port) == expected


@pytest.mark.parametrize('manufacturer, expected', [
    ('Generic', (True, '')),
    ('GE', (True, '')),
    ('GenericNoWildcardInDates', (True, '')),
    ('ge', (False, 'manufacturer_unknown')),
    ('Siemens', (False, 'manufacturer_unknown')),
    ('', (False, 'manufacturer_unknown')),
    ])
def test_validate_manufacturer(manufacturer, expected):
    assert dn.validate_manufacturer(manufacturer) == expected


def test_reasons_have_text():
    codes = set()
    for validate, values in [
            (dn.validate_node_name, ['', 'a b']),
            (dn.validate_aet, ['', 'X' * 17, 'a\\b']),
            (dn.validate_host, ['', 'http://x', 'a b']),
            (dn.validate_port, ['x', 0]),
            (dn.validate_manufacturer, ['x'])]:
        codes.update(validate(v)[1] for v in values)
    assert codes == set(dn.REASONS)


# -- nodes -------------------------------------------------------------------
def test_node_payload_least_rights():
    node = dn.DicomNode('PACS', ' PACS ', 'pacs.example.org ', '104')
    assert node.payload() == {
        'AET': 'PACS', 'Host': 'pacs.example.org', 'Port': 104,
        'Manufacturer': 'Generic', 'Timeout': 0,
        'AllowEcho': True, 'AllowStore': True,
        'AllowFind': False, 'AllowFindWorklist': False, 'AllowGet': False,
        'AllowMove': False, 'AllowNAction': False, 'AllowEventReport': False,
        }


def test_node_payload_options():
    node = dn.DicomNode('MOD', 'CT1', '10.0.0.5', 104, manufacturer='GE',
        incoming=('echo', 'find', 'storage_commitment'), timeout=30,
        local_aet='GNUHEALTH2')
    payload = node.payload()
    assert payload['LocalAet'] == 'GNUHEALTH2'
    assert payload['Timeout'] == 30
    assert [k for k, v in payload.items() if v is True] == [
        'AllowEcho', 'AllowFind', 'AllowNAction', 'AllowEventReport']


ORTHANC_ENTRY = {
    'AET': 'PACS', 'AllowEcho': True, 'AllowEventReport': True,
    'AllowFind': True, 'AllowFindWorklist': True, 'AllowGet': True,
    'AllowMove': True, 'AllowNAction': True, 'AllowStore': True,
    'AllowTranscoding': True, 'Host': '127.0.0.1', 'LocalAet': '',
    'Manufacturer': 'Generic', 'Port': 32867, 'Timeout': 0,
    'UseDicomTls': False,
    }


def test_node_from_orthanc():
    node = dn.DicomNode.from_orthanc('PACS', ORTHANC_ENTRY)
    assert node == dn.DicomNode('PACS', 'PACS', '127.0.0.1', 32867,
        incoming=('echo', 'find', 'worklist', 'get', 'move', 'store',
            'storage_commitment'))


def test_node_round_trip():
    node = dn.DicomNode('N', 'AE', 'h', 5, 'GE', ('echo', 'store'), 3, 'L')
    assert dn.DicomNode.from_orthanc('N', node.payload()) == node


@pytest.mark.parametrize('node, problems', [
    (dn.DicomNode('PACS', 'PACS', 'pacs', 104), []),
    (dn.DicomNode('', 'X' * 17, '', 70000, 'ge', local_aet='a\\b'), [
            ('name', 'name_empty'), ('aet', 'aet_too_long'),
            ('host', 'host_empty'), ('port', 'port_out_of_range'),
            ('manufacturer', 'manufacturer_unknown'),
            ('local_aet', 'aet_invalid')]),
    ])
def test_validate_node(node, problems):
    assert dn.validate_node(node) == problems


# -- a stub of OrthancClient -------------------------------------------------
class Response:
    def __init__(self, data=None, status=200):
        self.data = data
        self.status_code = status

    def json(self):
        if self.data is None:
            raise ValueError('no JSON')
        return self.data


class StubClient(OrthancClient):
    """A client that replays ``answers``: ``{(method, path): data or
    OrthancError}``"""

    def __init__(self, answers):
        super().__init__('http://orthanc')
        self.answers = answers
        self.sent = []

    def request(self, method, path, params=None, auth=True, data=None,
            headers=None):
        self.sent.append((method, path, params,
                json.loads(data) if data else None))
        answer = self.answers[(method, path)]
        if isinstance(answer, Exception):
            raise answer
        return Response(answer)


def orthanc_500(details, status=500):
    return OrthancError('Orthanc server error (HTTP %d)' % status,
        status=status, message='Error in the network protocol',
        details=details, url='http://orthanc/x')


def test_declare_node_sends_put():
    client = StubClient({('PUT', 'modalities/PACS'): None})
    client.declare_node(dn.DicomNode('PACS', 'PACS', 'h', 104))
    assert client.sent[0][:2] == ('PUT', 'modalities/PACS')
    assert client.sent[0][3]['AET'] == 'PACS'


def test_declare_invalid_node_sends_nothing():
    client = StubClient({})
    with pytest.raises(oc.NodeInvalid) as info:
        client.declare_node(dn.DicomNode('P', 'PACS', 'h', 0))
    assert isinstance(info.value, ValueError)
    assert info.value.problems == [('port', 'port_out_of_range')]
    assert 'port' in str(info.value)
    assert client.sent == []


def test_delete_node():
    client = StubClient({
            ('DELETE', 'modalities/A'): None,
            ('DELETE', 'modalities/B'): OrthancNotFound(status=404),
            })
    assert client.delete_node('A') is True
    assert client.delete_node('B') is False


def test_list_nodes():
    client = StubClient({('GET', 'modalities'): {'PACS': ORTHANC_ENTRY}})
    assert list(client.list_nodes()) == ['PACS']
    assert client.sent[0][2] == {'expand': ''}


def test_local_ae():
    client = StubClient({('GET', 'system'): {
                'DicomAet': 'GNUHEALTH', 'DicomPort': 4242}})
    assert client.local_ae() == dn.LocalAE('GNUHEALTH', 4242)


def test_local_ae_bad_answer():
    client = StubClient({('GET', 'system'): {'Name': 'x'}})
    with pytest.raises(OrthancError):
        client.local_ae()


@pytest.mark.parametrize('kwargs, body', [
    ({}, {}),
    ({'timeout': 3}, {'Timeout': 3}),
    ({'check_find': True}, {'CheckFind': True}),
    ])
def test_echo_body(kwargs, body):
    client = StubClient({('POST', 'modalities/PACS/echo'): {}})
    assert client.echo('PACS', **kwargs) >= 0
    assert client.sent[0][3] == body


def test_echo_node_name_is_quoted():
    client = StubClient({('POST', 'modalities/A%2FB/echo'): {}})
    client.echo('A/B')


def test_echo_errors_are_typed():
    client = StubClient({('POST', 'modalities/PACS/echo'): orthanc_500(
                'DicomAssociation - connecting to AET "PACS": TCP '
                'Initialization Error: Connection refused')})
    with pytest.raises(oc.NodeUnreachable) as info:
        client.echo('PACS')
    assert info.value.node == 'PACS'
    assert info.value.status == 500
    assert str(info.value).startswith(
        'The DICOM node "PACS" cannot be reached')


@pytest.mark.parametrize('uid, expected', [
    ('1.2.840.10008.5.1.4.1.1.2', True),
    ('1', True),
    ('1.' + '2' * 62, True),
    ('1.' + '2' * 63, False),
    ('1.2\\1.3', False),
    ('1.2*', False),
    ('*', False),
    ('', False),
    ('1..2', False),
    ('.1', False),
    ('1.2.', False),
    (' 1.2', False),
    ('1.2\n', False),
    (None, False),
    ])
def test_valid_uid(uid, expected):
    assert dn.valid_uid(uid) is expected


def test_indexed_answers():
    "The index of each answer in the query, those without a UID left out"
    client = StubClient({
            ('POST', 'modalities/PACS/query'): {'ID': 'q1', 'Path': 'x'},
            ('GET', 'queries/q1/answers'): [{'PatientID': 'X'},
                {'StudyInstanceUID': '1.2'}, {'StudyInstanceUID': '1.3'}],
            })
    query_id, answers = client.query_indexed_studies('PACS', {})
    assert query_id == 'q1'
    assert [(i, a.study_uid) for i, a in answers] == [(1, '1.2'), (2, '1.3')]


def test_start_query_and_answers():
    client = StubClient({
            ('POST', 'modalities/PACS/query'): {'ID': 'q1', 'Path': 'x'},
            ('GET', 'queries/q1/answers'): [{'StudyInstanceUID': '1.2',
                    'ModalitiesInStudy': 'CT\\PT'}, {'PatientID': 'X'}],
            })
    answers = client.find_studies('PACS', {'PatientID': 'X'},
        timeout=5)
    assert answers == [dn.StudyAnswer('1.2', modalities=('CT', 'PT'))]
    body = client.sent[0][3]
    assert body['Level'] == 'Study' and body['Timeout'] == 5
    assert body['Query']['PatientID'] == 'X'
    assert body['Query']['StudyDescription'] == ''
    assert client.sent[1][2] == {'expand': '', 'simplify': ''}


def test_query_answer_limit():
    client = StubClient({('POST', 'modalities/PACS/query'): orthanc_500(
                'C-FIND SCU to AET "PACS" has failed with DIMSE status '
                '0xFE00')})
    with pytest.raises(oc.AnswerLimitReached) as info:
        client.start_query('PACS', {})
    assert info.value.dimse_status == 0xFE00


def test_query_expired():
    client = StubClient({('GET', 'queries/q1/answers'): OrthancNotFound(
                status=404)})
    with pytest.raises(oc.QueryExpired):
        client.query_answers('q1')


@pytest.mark.parametrize('answer, path', [
    (None, 'queries/q1/retrieve'),
    (3, 'queries/q1/answers/3/retrieve'),
    ])
def test_retrieve_query(answer, path):
    client = StubClient({('POST', path): {'ID': 'job1', 'Path': '/jobs/1'}})
    assert client.retrieve_query('q1', 'GNUHEALTH', answer=answer) == (
        'job1')
    assert client.sent[0][3] == {'Synchronous': False,
        'TargetAet': 'GNUHEALTH'}


def test_retrieve_studies():
    client = StubClient({
            ('POST', 'modalities/PACS/query'): {'ID': 'q1'},
            ('GET', 'queries/q1/answers'): [{'StudyInstanceUID': '1.1'}],
            ('POST', 'queries/q1/retrieve'): {'ID': 'job1'},
            })
    assert client.retrieve_studies('PACS', ['1.1', '1.2', '1.1']) == (
        'job1', ['1.2'])
    query = client.sent[0][3]['Query']
    assert query['StudyInstanceUID'] == '1.1\\1.2'
    assert query['PatientID'] == ''  # the answers describe the studies
    assert client.sent[2][3] == {'Synchronous': False}


def test_move_studies():
    client = StubClient({('POST', 'modalities/PACS/move'): {}})
    client.move_studies('PACS', ['1.1', '1.2'], 'US', timeout=9)
    assert client.sent[0][3] == {'Level': 'Study', 'Resources': [
            {'StudyInstanceUID': '1.1'}, {'StudyInstanceUID': '1.2'}],
        'TargetAet': 'US', 'Timeout': 9}


def test_move_studies_one_move():
    client = StubClient({('POST', 'modalities/PACS/move'): {}})
    client.move_studies('PACS', iter(['1.1', '1.2']), one_move=True)
    assert client.sent[0][3]['Resources'] == [
        {'StudyInstanceUID': '1.1\\1.2'}]


FAILED_JOB = {
    'CompletionTime': '20261206T195816.757019',
    'Content': {'Description': 'REST API', 'LocalAet': 'GNUHEALTH',
        'Query': [{'0008,0052': 'STUDY', '0020,000d': '1.%d' % i}
            for i in range(40)],
        'RemoteAet': 'PACS'},
    'ErrorCode': 9,
    'ErrorDescription': 'Error in the network protocol',
    'ErrorDetails': 'DicomAssociation - C-MOVE to AET "PACS": Peer aborted '
        'Association (or never connected)',
    'ID': 'job1', 'Progress': 20, 'State': 'Failure',
    'Type': 'DicomMoveScu',
    }


def test_job_status_failed():
    client = StubClient({('GET', 'jobs/job1'): FAILED_JOB})
    job = client.job_status('job1', 'PACS')
    assert (job.state, job.finished, job.succeeded) == ('Failure', True, False)
    assert job.moved_count == 8
    assert job.study_uids[:2] == ('1.0', '1.1')
    assert job.node_aet == 'PACS'
    assert isinstance(job.error, oc.AssociationAborted)
    assert job.error.operation == 'move'


def test_job_status_unknown_failure():
    client = StubClient({('GET', 'jobs/job1'): dict(FAILED_JOB,
                ErrorDetails='', ErrorDescription='Internal error')})
    job = client.job_status('job1', 'PACS')
    assert isinstance(job.error, oc.DimseFailure)
    assert 'Internal error' in str(job.error)


@pytest.mark.parametrize('state, progress, moved', [
    ('Pending', 0, 0),
    ('Running', 50, 20),
    ('Success', 100, 40),
    ('Running', 120, 40),
    ])
def test_job_moved_count(state, progress, moved):
    client = StubClient({('GET', 'jobs/job1'): dict(FAILED_JOB,
                State=state, Progress=progress, ErrorCode=0)})
    job = client.job_status('job1')
    assert job.moved_count == moved
    assert job.error is None


def test_job_vanished():
    client = StubClient({('GET', 'jobs/job1'): OrthancNotFound(status=404)})
    with pytest.raises(oc.JobVanished):
        client.job_status('job1')


def test_find_local_studies():
    client = StubClient({('POST', 'tools/find'): [
                {'ID': 'o1', 'MainDicomTags': {'StudyInstanceUID': '1.1'}}]})
    assert client.find_local_studies(['1.1', '1.2']) == {'1.1': 'o1'}
    assert client.sent[0][3]['Query'] == {'StudyInstanceUID': '1.1\\1.2'}
    assert client.find_local_studies([]) == {}


# -- answers -----------------------------------------------------------------
@pytest.mark.parametrize('data, expected', [
    ({}, dn.StudyAnswer('')),
    ({
            'StudyInstanceUID': ' 1.2 ', 'PatientID': 'P1',
            'PatientName': 'DOE^John', 'PatientBirthDate': '19800115',
            'PatientSex': 'M', 'StudyDate': '20230301', 'StudyTime': '1010',
            'StudyDescription': 'CT Chest', 'AccessionNumber': 'A1',
            'ModalitiesInStudy': 'CT\\PT', 'NumberOfStudyRelatedSeries': '2',
            'NumberOfStudyRelatedInstances': '10',
            'RetrieveAETitle': 'PACS',
            },
        dn.StudyAnswer('1.2', 'P1', 'DOE^John', date(1980, 1, 15), 'M',
            date(2023, 3, 1), '1010', 'CT Chest', 'A1', ('CT', 'PT'), 2, 10,
            'PACS')),
    ({'StudyInstanceUID': '1', 'StudyDate': '2023', 'PatientBirthDate': '',
        'NumberOfStudyRelatedSeries': '', 'ModalitiesInStudy': ''},
        dn.StudyAnswer('1')),
    ({'StudyInstanceUID': '1', 'StudyDate': '20230231',
        'NumberOfStudyRelatedInstances': 'many'},
        dn.StudyAnswer('1')),
    ({'StudyInstanceUID': '1', 'ModalitiesInStudy': ['MR', 'SR']},
        dn.StudyAnswer('1', modalities=('MR', 'SR'))),
    ])
def test_map_study_answer(data, expected):
    assert dn.map_study_answer(data) == expected


# -- classification ----------------------------------------------------------
@pytest.mark.parametrize('details, cls, operation, status', [
    ('DicomAssociation - connecting to AET "X": TCP Initialization Error: '
        'Connection refused', oc.NodeUnreachable, '', None),
    ('DicomAssociation - connecting to AET "PACS": Attempt to connect to '
        'unknown host: no-such-host.invalid', oc.NodeUnreachable, '', None),
    ('DicomAssociation - connecting to AET "X": DUL network read timeout',
        oc.NodeTimeout, '', None),
    ('DicomAssociation - connecting to AET "X": Unrecognized PDU type: 48',
        oc.NotDicom, '', None),
    ('DicomAssociation - connecting to AET "NOTPACS": DUL Association '
        'Rejected', oc.AssociationRejected, '', None),
    ('DicomAssociation - C-FIND to AET "PACS": Peer aborted Association '
        '(or never connected)', oc.AssociationAborted, 'find', None),
    ('DicomAssociation - C-MOVE to AET "PACS": Peer aborted Association '
        '(or never connected)', oc.AssociationAborted, 'move', None),
    ('C-FIND SCU to AET "PACS" has failed with DIMSE status 0xFE00',
        oc.AnswerLimitReached, 'find', 0xFE00),
    ('C-FIND SCU to AET "PACS" has failed with DIMSE status 0xA700',
        oc.AnswerLimitReached, 'find', 0xA700),
    ('C-MOVE SCU to AET "PACS" has failed with DIMSE status 0xC000 (unable '
        'to process - resource not found ?)', oc.MoveRefused, 'move',
        0xC000),
    ('C-MOVE SCU to AET "PACS" has failed with DIMSE status 0xA801',
        oc.DimseFailure, 'move', 0xA801),
    ('C-FIND SCU to AET "PACS" has failed with DIMSE status 0xC001',
        oc.DimseFailure, 'find', 0xC001),
    ('Something else', None, '', None),
    ('', None, '', None),
    ])
def test_classify_details(details, cls, operation, status):
    error = oc.classify_details(details, 'PACS')
    if cls is None:
        assert error is None
        return
    assert type(error) is cls
    assert (error.node, error.operation, error.dimse_status) == (
        'PACS', operation, status)
    assert error.details == details
    assert '"PACS"' in str(error)
    assert error.code


def test_move_refused_says_what_to_check():
    error = oc.classify_details('C-MOVE SCU to AET "PACS" has failed with '
        'DIMSE status 0xC000', 'Hospital')
    assert str(error).startswith('The DICOM node "Hospital" refused to send '
        'the studies (status 0xC000): check that it knows our AE title')


@pytest.mark.parametrize('error, cls', [
    (OrthancNotFound(status=404, details='No modality with symbolic name: '
            'X'), oc.NodeNotDeclared),
    (OrthancNotFound(status=404, details='Unknown resource'),
        OrthancNotFound),
    (OrthancUnauthorized(status=401), OrthancUnauthorized),
    (orthanc_500('DUL Association Rejected'), oc.AssociationRejected),
    (orthanc_500('C-MOVE SCU to AET "P" has failed with DIMSE status '
            '0xC000', 422), oc.MoveRefused),
    (orthanc_500('An unhandled exception'), OrthancError),
    ])
def test_classify_error(error, cls):
    result = oc.classify_error(error, 'X', 'echo')
    assert type(result) is cls
    if result is not error:
        assert (result.status, result.url) == (error.status, error.url)


def test_typed_error_is_orthanc_error():
    error = oc.NodeTimeout('PACS', operation='find', details='timeout')
    assert isinstance(error, OrthancError)
    assert 'PACS' in str(error) and 'timeout' in str(error)
