# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""DICOM networking through Orthanc's REST API, between two real Orthancs.

One Orthanc plays the hospital PACS, the other is GNU Health's; each
declares the other in its DicomModalities.  No database.
"""
import functools
import shutil
import socket
import tempfile
import threading
import time
from datetime import date

import pytest

from trytond.modules.health_orthanc import dicom_network as dn
from trytond.modules.health_orthanc import orthanc_client as oc
from trytond.modules.health_orthanc.orthanc_client import OrthancClient
from trytond.modules.health_orthanc.query_plan import (
    StudyFilter, StudyQuery, parse_terms, plan_rows, run_plan, run_query)
from trytond.modules.health_orthanc.query_sheet import read_sheet
from trytond.modules.health_orthanc.tests.orthanc_server import free_port
from trytond.modules.health_orthanc.tests.pacs_samples import (
    PACS_STUDIES, PacsStudy, bulk_studies, load)

from .pacs_pair import OUR_AET, start_pacs, start_pair

TODAY = date(2024, 6, 1)
CAP = 4  # LimitFindResults of the capped PACS
UID = {s.accession: s.study_uid for s in PACS_STUDIES}


@pytest.fixture(scope='module')
def workdir():
    path = tempfile.mkdtemp(prefix='pacs-test-')
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope='module')
def servers(workdir):
    pacs, ours = start_pair(workdir,
        pacs_config={'DicomCheckCalledAet': True},
        our_config={'QueryRetrieveSize': 5, 'JobsHistorySize': 2})
    load(pacs.upload, PACS_STUDIES)
    yield pacs, ours
    ours.stop()
    pacs.stop()


@pytest.fixture(scope='module')
def pacs(servers):
    return servers[0]


@pytest.fixture(scope='module')
def ours(servers):
    return servers[1]


@pytest.fixture
def client(ours):
    with OrthancClient(ours.url, ours.user, ours.password, retries=0,
            timeout=(5, 60)) as client:
        yield client


@pytest.fixture
def empty_ours(ours):
    ours.clear()
    yield ours
    ours.clear()


@pytest.fixture(scope='module')
def capped(workdir, ours):
    "A second PACS that sends at most CAP answers, declared as CAPPED"
    server = start_pacs(workdir + '/capped', ours.dicom_port_used,
        aet='CAPPED', config={'LimitFindResults': CAP})
    load(server.upload, bulk_studies('SPREAD', 10, date(2023, 1, 1), 10)
        + bulk_studies('ONEDAY', CAP + 2, date(2023, 2, 1)))
    with OrthancClient(ours.url, ours.user, ours.password) as client:
        client.declare_node(dn.DicomNode('CAPPED', 'CAPPED',
                '127.0.0.1', server.dicom_port_used))
    yield server
    server.stop()


def accessions(answers):
    return sorted(a.accession for a in answers)


def wait_job(client, job_id, node='PACS', timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.job_status(job_id, node)
        if job.finished:
            return job
        time.sleep(0.05)
    raise AssertionError('job %s did not finish' % job_id)


# -- nodes -------------------------------------------------------------------
def test_local_ae(client, ours):
    assert client.local_ae() == dn.LocalAE(OUR_AET, ours.dicom_port_used)


def test_list_nodes_reads_configuration_file(client, pacs):
    node = client.list_nodes()['PACS']
    assert (node.aet, node.host, node.port) == (
        'PACS', '127.0.0.1', pacs.dicom_port_used)


def test_declare_update_delete_node(client, pacs):
    node = dn.DicomNode('HOSP-PACS_2', 'PACS', '127.0.0.1',
        pacs.dicom_port_used, manufacturer='GE')
    client.declare_node(node)
    assert client.list_nodes()['HOSP-PACS_2'] == node
    assert client.echo('HOSP-PACS_2') < 1

    moved = dn.DicomNode('HOSP-PACS_2', 'PACS', 'localhost', 11112)
    client.declare_node(moved)
    assert client.list_nodes()['HOSP-PACS_2'] == moved

    assert client.delete_node('HOSP-PACS_2') is True
    assert 'HOSP-PACS_2' not in client.list_nodes()
    assert client.delete_node('HOSP-PACS_2') is False


def test_declare_invalid_node_sends_nothing(client):
    before = client.request_count
    with pytest.raises(oc.NodeInvalid) as info:
        client.declare_node(dn.DicomNode('BAD NAME', '', 'http://x', 0))
    assert info.value.problems == [('name', 'name_invalid'),
        ('aet', 'aet_empty'), ('host', 'host_is_url'),
        ('port', 'port_out_of_range')]
    assert client.request_count == before


# -- echo --------------------------------------------------------------------
def test_echo(client):
    assert 0 <= client.echo('PACS') < 1
    assert 0 <= client.echo('PACS', timeout=3, check_find=True) < 1


def declare(client, name, port, aet='PACS', **kwargs):
    client.declare_node(dn.DicomNode(name, aet, '127.0.0.1', port,
            **kwargs))


def test_echo_closed_port(client):
    declare(client, 'CLOSED', free_port())
    start = time.monotonic()
    with pytest.raises(oc.NodeUnreachable) as info:
        client.echo('CLOSED')
    assert time.monotonic() - start < 1
    assert 'CLOSED' in str(info.value)
    assert 'Connection refused' in info.value.details


@pytest.fixture
def silent_port():
    "A TCP port that accepts connections and never answers"
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(8)
    accepted = []

    def accept():
        try:
            while True:
                accepted.append(server.accept()[0])
        except OSError:
            pass
    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for connection in accepted:
        connection.close()


def test_echo_silent_port_times_out(client, silent_port):
    declare(client, 'SILENT', silent_port)
    start = time.monotonic()
    with pytest.raises(oc.NodeTimeout):
        client.echo('SILENT', timeout=1)
    assert 1 <= time.monotonic() - start < 5


def test_echo_not_dicom(client, ours):
    declare(client, 'HTTPPORT', ours.http_port)
    with pytest.raises(oc.NotDicom):
        client.echo('HTTPPORT')


def test_echo_wrong_aet_rejected(client, pacs):
    declare(client, 'WRONGAET', pacs.dicom_port_used, aet='NOTPACS')
    with pytest.raises(oc.AssociationRejected) as info:
        client.echo('WRONGAET')
    assert 'WRONGAET' in str(info.value)


def test_echo_unknown_calling_aet(client, pacs):
    "A default Orthanc echoes anybody but refuses C-FIND to strangers"
    declare(client, 'STRANGER', pacs.dicom_port_used,
        local_aet='STRANGER')
    client.echo('STRANGER')
    with pytest.raises(oc.AssociationAborted) as info:
        client.echo('STRANGER', check_find=True)
    assert info.value.operation == 'find'


def test_echo_undeclared_node(client):
    with pytest.raises(oc.NodeNotDeclared):
        client.echo('NOSUCHNODE')


# -- query -------------------------------------------------------------------
def test_find_studies_maps_answers(client):
    answers = client.find_studies('PACS', {'AccessionNumber': 'ACC-1003'})
    assert answers == [dn.StudyAnswer(
            study_uid=UID['ACC-1003'], patient_id='PUID-0001',
            patient_name='GARCÍA^Ana', birth_date=date(1970, 1, 1), sex='O',
            study_date=date(2023, 3, 1), study_time='101010',
            description='PET-CT whole body', accession='ACC-1003',
            modalities=('CT', 'PT'), series_count=2, instance_count=2,
            retrieve_aet='PACS')]


@pytest.mark.parametrize('query, expected', [
    (StudyQuery(patient_id='PUID-0001'),
        ['ACC-1001', 'ACC-1002', 'ACC-1003', 'ACC-1004', 'ACC-1005']),
    (StudyQuery(patient_id='MRN-0002'), ['ACC-2001', 'ACC-2002', 'ACC-2003']),
    (StudyQuery(patient_id='puid-0001'), []),
    (StudyQuery(patient_id='NOBODY'), []),
    (StudyQuery(modalities=('CT',)),
        ['ACC-1001', 'ACC-1003', 'ACC-2001', 'ACC-2003', 'ACC-3002']),
    (StudyQuery(modalities=('MR', 'MG')),
        ['ACC-1002', 'ACC-2002', 'ACC-3001']),
    (StudyQuery(modalities=('PT',)), ['ACC-1003']),
    (StudyQuery(date_from=date(2023, 3, 1), date_to=date(2023, 3, 2)),
        ['ACC-1003', 'ACC-2001', 'ACC-2002', 'ACC-3001']),
    (StudyQuery(date_from=date(2023, 11, 20)), ['ACC-1004', 'ACC-1005']),
    (StudyQuery(date_to=date(2022, 6, 15)), ['ACC-1001', 'ACC-1002']),
    (StudyQuery(accession='ACC-2002'), ['ACC-2002']),
    (StudyQuery(include_terms=parse_terms('Chest')),
        ['ACC-1001', 'ACC-1005', 'ACC-2003']),
    (StudyQuery(include_terms=parse_terms('chest, HEAD')),
        ['ACC-1001', 'ACC-1005', 'ACC-2001', 'ACC-2003']),
    (StudyQuery(exclude_terms=parse_terms('contrast')),
        ['ACC-1002', 'ACC-1003', 'ACC-1004', 'ACC-1005', 'ACC-2002',
            'ACC-2003', 'ACC-3001', 'ACC-3002']),
    (StudyQuery(patient_id='PUID-0001', modalities=('CT', 'CR'),
            date_from=date(2022, 1, 1), date_to=date(2023, 12, 31),
            include_terms=('chest',), exclude_terms=('contrast',)), []),
    (StudyQuery(patient_id='PUID-0001', modalities=('CT', 'CR'),
            include_terms=('chest',), exclude_terms=('contrast',)),
        ['ACC-1005']),
    (StudyQuery(patient_id='MRN-0002', modalities=('CT',),
            date_from=date(2023, 3, 1), date_to=date(2023, 3, 3),
            include_terms=('ct',), exclude_terms=('head',)), ['ACC-2003']),
    ])
def test_query_filters(client, query, expected):
    find = functools.partial(client.find_studies, 'PACS')
    outcome = run_query(query, find, TODAY)
    assert accessions(outcome.answers) == expected
    assert (outcome.sent, outcome.complete) == (1, True)


def test_description_wildcards_are_case_sensitive_on_orthanc(client):
    "Why the description terms are applied to the answers, not sent"
    sent = client.find_studies('PACS', {'StudyDescription': '*chest*'})
    assert accessions(sent) == ['ACC-1005']


def test_query_from_spreadsheet(client):
    sheet = read_sheet((
            'PatientID;Modality;Study Date;Study Description\n'
            'PUID-0001;CT;2022-01-01 - 2022-12-31;\n'
            'MRN-0002;;;chest\n'
            ';CT;;\n'
            'EXT-0003;;31/02/2023;\n'
            'EXT-0003;MG;;\n').encode('cp1252'))
    assert [(p.row, p.code) for p in sheet.problems] == [
        (4, 'no_patient_id'), (5, 'bad_date')]
    queries = plan_rows(sheet.rows, StudyFilter())
    find = functools.partial(client.find_studies, 'PACS')
    answers, outcomes = run_plan(queries, find, TODAY)
    assert accessions(answers) == ['ACC-1001', 'ACC-2003', 'ACC-3001']
    assert [o.query.row for o in outcomes] == [2, 3, 6]


def test_query_expired(client):
    query_id = client.start_query('PACS', {'PatientID': 'PUID-0001'})
    for _ in range(5):  # QueryRetrieveSize is 5
        client.start_query('PACS', {'PatientID': 'MRN-0002'})
    with pytest.raises(oc.QueryExpired):
        client.query_answers(query_id)
    with pytest.raises(oc.QueryExpired):
        client.retrieve_query(query_id)


# -- answer limit ------------------------------------------------------------
def test_answer_limit_fails_whole_query(client, capped):
    with pytest.raises(oc.AnswerLimitReached) as info:
        client.find_studies('CAPPED', {'PatientID': 'SPREAD'})
    assert info.value.dimse_status == 0xFE00
    assert 'CAPPED' in str(info.value)
    assert len(client.find_studies('CAPPED', {
                'PatientID': 'SPREAD', 'StudyDate': '20230101-20230104'}
            )) == CAP


def test_answer_limit_split(client, capped):
    find = functools.partial(client.find_studies, 'CAPPED')
    outcome = run_query(StudyQuery(patient_id='SPREAD',
            date_from=date(2023, 1, 1), date_to=date(2023, 1, 31)),
        find, TODAY)
    assert accessions(outcome.answers) == sorted(
        'SPREAD-%d' % i for i in range(10))
    assert outcome.split and outcome.complete
    # 1-31, 1-16, 1-8, 1-4, 5-8, 9-16, 17-31
    assert outcome.sent == 7


def test_answer_limit_single_day_reported(client, capped):
    find = functools.partial(client.find_studies, 'CAPPED')
    outcome = run_query(StudyQuery(patient_id='ONEDAY'), find, TODAY)
    assert outcome.answers == []
    assert outcome.capped == [date(2023, 2, 1)]
    assert outcome.undated_missed
    assert not outcome.complete


# -- retrieve ----------------------------------------------------------------
def test_retrieve_studies(client, empty_ours, pacs):
    wanted = [UID['ACC-1001'], UID['ACC-2003'], '1.2.3.4.5']
    job_id, missing = client.retrieve_studies('PACS', wanted)
    assert missing == ['1.2.3.4.5']
    job = wait_job(client, job_id)
    assert (job.state, job.error, job.moved_count) == ('Success', None, 2)
    assert sorted(job.study_uids) == sorted(wanted[:2])
    here = client.find_local_studies(wanted)
    assert sorted(here) == sorted(wanted[:2])
    # the study keeps its Orthanc ID
    assert set(here.values()) <= set(pacs.request('GET', '/studies').json())


def test_retrieve_nothing_found(client):
    assert client.retrieve_studies('PACS', ['1.2.3']) == (None, ['1.2.3'])


def test_retrieve_one_answer(client, empty_ours):
    query_id = client.start_query('PACS', {
            'AccessionNumber': 'ACC-1002'})
    job = wait_job(client, client.retrieve_query(query_id, OUR_AET,
            answer=0))
    assert job.succeeded
    assert list(client.find_local_studies([UID['ACC-1002']])) == [
        UID['ACC-1002']]


def test_move_refused_when_pacs_lacks_target(client, empty_ours):
    query_id = client.start_query('PACS', {'AccessionNumber': 'ACC-1002'})
    job = wait_job(client, client.retrieve_query(query_id, 'NOBODY'))
    assert job.state == 'Failure'
    assert isinstance(job.error, oc.MoveRefused)
    assert job.error.dimse_status == 0xC000
    assert 'our AE title' in str(job.error)
    with pytest.raises(oc.MoveRefused):
        client.move_studies('PACS', [UID['ACC-1002']], 'NOBODY')


def test_move_studies_is_synchronous(client, empty_ours):
    client.move_studies('PACS', [UID['ACC-3001']])
    assert list(client.find_local_studies([UID['ACC-3001']])) == [
        UID['ACC-3001']]


def test_move_studies_in_one_move(client, empty_ours):
    wanted = [UID['ACC-1001'], UID['ACC-1002'], UID['ACC-3002']]
    client.move_studies('PACS', wanted, OUR_AET, one_move=True)
    assert sorted(client.find_local_studies(wanted)) == sorted(wanted)


def test_job_vanished(client, empty_ours):
    query_id = client.start_query('PACS', {'AccessionNumber': 'ACC-1004'})
    first = client.retrieve_query(query_id)
    wait_job(client, first)
    for _ in range(2):  # JobsHistorySize is 2
        wait_job(client, client.retrieve_query(query_id))
    with pytest.raises(oc.JobVanished):
        client.job_status(first)


def test_pacs_dies_during_retrieve(client, workdir, ours, empty_ours):
    dying = start_pacs(workdir + '/dying', ours.dicom_port_used, aet='DYING')
    try:
        studies = [PacsStudy('DYING-1', 'DOE^John', '19800101', '20230101',
                ('CT',), 'Big study %d' % i, 'DIE-%d' % i)
            for i in range(30)]
        load(dying.upload, studies, rows=256, instances=8)
        declare(client, 'DYING', dying.dicom_port_used, aet='DYING')
        uids = [s.study_uid for s in studies]
        job_id, missing = client.retrieve_studies('DYING', uids)
        assert missing == []
        deadline = time.monotonic() + 30
        while (client.job_status(job_id, 'DYING').progress < 10
                and time.monotonic() < deadline):
            time.sleep(0.01)
        dying.process.kill()
        dying.process.wait()
        job = wait_job(client, job_id, 'DYING')
    finally:
        dying.stop()
    assert job.state == 'Failure'
    assert isinstance(job.error, (oc.AssociationAborted, oc.NodeUnreachable))
    assert 0 < job.moved_count < len(uids)
    here = client.find_local_studies(uids)
    assert job.moved_count <= len(here) < len(uids)
    with pytest.raises(oc.NodeUnreachable):
        client.echo('DYING')


def test_cancel_job(client, empty_ours):
    """A job that ended keeps its state; one that Orthanc does not know is
    not cancelled, without an error"""
    query_id = client.start_query('PACS', {'AccessionNumber': 'ACC-1004'})
    job = client.retrieve_query(query_id)
    wait_job(client, job)
    client.cancel_job(job)
    assert client.job_status(job).state == 'Success'
    assert client.cancel_job('no-such-job') is False
