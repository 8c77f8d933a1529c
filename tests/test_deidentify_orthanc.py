# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""De-identified copies made by a real Orthanc (no database).

A clinical and a research Orthanc on loopback.  Studies full of
identifying values (health_orthanc/tests/phi_samples.py) are copied with
each shipped profile; every attribute of every instance of the copy is
checked against its original.
"""
import shutil
import tempfile
import time

import pytest

from trytond.modules.health_orthanc.deidentify import (
    BASIC, BASIC_SHIFTED, PROFILES, Profile, Subject, TagRule, check_dates,
    correction_body, plan_anonymization)
from trytond.modules.health_orthanc.phi_scan import Identity, PhiScanner
from trytond.modules.health_orthanc.tests.orthanc_server import OrthancServer
from trytond.modules.health_orthanc.tests.phi_samples import (
    PATIENT, make_phi_study)

SUBJECT = Subject('TRIAL-K3M9Q2XZ-7', -123)
IDENTITY = Identity(
    names=[PATIENT.name], identifiers=[PATIENT.puid, PATIENT.mrn,
        *PATIENT.other_ids], birth_date=PATIENT.birth_date,
    accession_numbers=['ACC552211'], institutions=[PATIENT.institution],
    physicians=[PATIENT.referring, PATIENT.performing])
CLEAN_DESCRIPTION = {'StudyDescription': 'CT thorax follow-up'}
UID_TAGS = ('0020,000d', '0020,000e', '0008,0018', '0020,0052')


@pytest.fixture(scope='module')
def servers():
    workdir = tempfile.mkdtemp(prefix='orthanc-deid-')
    research = OrthancServer(workdir + '/research', dicom=True,
        aet='RESEARCH').start()
    clinical = OrthancServer(workdir + '/clinical', dicom=True, aet='CLINIC',
        extra_config={'OrthancPeers': {'research-config': {
                    'Url': research.url, 'Username': research.user,
                    'Password': research.password}}}).start()
    try:
        yield clinical, research
    finally:
        clinical.stop()
        research.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def orthancs(servers):
    for server in servers:
        server.clear()
    return servers


def upload(orthanc, **kwargs):
    "Upload a sample study; return its Orthanc ID"
    answers = orthanc.upload_many(make_phi_study(**kwargs))
    return answers[0]['ParentStudy']


def instance_tags(orthanc, study_id):
    "Orthanc instance ID -> tags (?short) of every instance of a study"
    return {i['ID']: orthanc.request(
            'GET', '/instances/%s/tags?short' % i['ID']).json()
        for i in orthanc.request(
            'GET', '/studies/%s/instances' % study_id).json()}


def make_copy(orthanc, study_id, profile, subject=SUBJECT, correct=True):
    """De-identify a study as the Tryton half will: plan, anonymize, then
    rewrite the instances whose own dates differ.  Return (copy ID, plan)"""
    plan = plan_anonymization(profile, subject, instance_tags(
            orthanc, study_id))
    copy_id = orthanc.request('POST', '/studies/%s/anonymize' % study_id,
        json=plan.body).json()['ID']
    if correct and plan.corrections:
        copies = {orthanc.request('GET', '/instances/%s/metadata/'
                    'AnonymizedFrom' % i['ID']).text: i['ID']
            for i in orthanc.request(
                'GET', '/studies/%s/instances' % copy_id).json()}
        for original, changes in plan.corrections.items():
            copy = copies[original]
            data = orthanc.request('POST', '/instances/%s/modify' % copy,
                json=correction_body(changes)).content
            orthanc.request('DELETE', '/instances/%s' % copy)
            orthanc.upload(data)
    return copy_id, plan


def by_position(tags):
    "(SeriesNumber, InstanceNumber) -> tags: both survive the copy"
    return {(t['0020,0011'], t['0020,0013']): t for t in tags.values()}


@pytest.mark.parametrize('profile', list(PROFILES.values()),
    ids=list(PROFILES))
def test_copy_leaves_nothing_identifying(orthancs, profile):
    clinical, _ = orthancs
    study_id = upload(clinical, n_series=2, n_instances=3,
        extra=CLEAN_DESCRIPTION)
    copy_id, plan = make_copy(clinical, study_id, profile)
    originals = by_position(instance_tags(clinical, study_id))
    copies = by_position(instance_tags(clinical, copy_id))
    assert copies.keys() == originals.keys()

    # nothing identifying in any attribute, private and nested included
    scanner = PhiScanner(IDENTITY)
    assert scanner.scan_many(copies.items()) == []
    for tags in copies.values():
        assert tags['0010,0020'] == tags['0010,0010'] == SUBJECT.pseudonym
        assert tags['0012,0062'] == 'YES'
        assert tags['0012,0063'].startswith('PS 3.15-2021b')
        assert not any(key.startswith('0009,') for key in tags)

    # dates: shifted by exactly the offset, or none left
    days = SUBJECT.date_shift if profile.dates == 'shift' else None
    for position, tags in copies.items():
        assert check_dates(originals[position], tags, days,
            profile.birth_date) == []
    if profile.dates == 'shift':
        dates = {p: (t['0008,0021'], t['0008,0023']) for p, t in
            copies.items()}
        # series 2 is a day later, the last image of each series too
        assert dates == {
            ('1', '1'): ('20221112', '20221112'),
            ('1', '2'): ('20221112', '20221112'),
            ('1', '3'): ('20221112', '20221113'),
            ('2', '1'): ('20221113', '20221113'),
            ('2', '2'): ('20221113', '20221113'),
            ('2', '3'): ('20221113', '20221114')}
        assert {t['0010,0030'] for t in copies.values()} == {'19740101'}
        assert {t['0028,0303'] for t in copies.values()} == {'MODIFIED'}
        assert {t['0008,1030'] for t in copies.values()} == {
            'CT thorax follow-up'}
    else:
        assert {t['0028,0303'] for t in copies.values()} == {'REMOVED'}
        assert all('0008,1030' not in t for t in copies.values())

    # UIDs: all new, one study, one per series, references followed
    check_uids(originals, copies)
    assert clinical.request('GET', '/studies/%s' % copy_id).json()[
        'AnonymizedFrom'] == study_id


def check_uids(originals, copies):
    old = {t[k] for t in originals.values() for k in UID_TAGS}
    new = {t[k] for t in copies.values() for k in UID_TAGS}
    assert not old & new
    assert len({t['0020,000d'] for t in copies.values()}) == 1
    assert len({t['0020,0052'] for t in copies.values()}) == 1
    series = {}
    for (series_number, _), tags in copies.items():
        series.setdefault(series_number, set()).add(tags['0020,000e'])
    assert all(len(uids) == 1 for uids in series.values())
    assert len(set.union(*series.values())) == len(series)
    sop = {p: t['0008,0018'] for p, t in copies.items()}
    for (series_number, number), tags in copies.items():
        if number != '1':
            ref, = tags['0008,1140']
            assert ref['0008,1155'] == sop[(series_number, '1')]


def test_kept_description_with_a_name_is_caught(orthancs):
    "A description naming the patient is found where it was kept"
    clinical, _ = orthancs
    study_id = upload(clinical, n_series=1, n_instances=2)
    copy_id, _ = make_copy(clinical, study_id, BASIC_SHIFTED)
    findings = PhiScanner(IDENTITY).scan_many(
        instance_tags(clinical, copy_id).items())
    assert {(f.path, f.kind) for f in findings} == {
        ('0008,1030', 'patient name')}
    assert len(findings) == 2


def test_injected_leak_is_caught(orthancs):
    "A profile that keeps InstitutionName leaks a name put there"
    clinical, _ = orthancs
    study_id = upload(clinical, n_series=1, n_instances=2,
        extra={'InstitutionName': 'Clinic of Dr MÜLLER Jörg',
            **CLEAN_DESCRIPTION})
    leaky = Profile('leaky', 'Leaky', rules=(
            TagRule('keep', 'InstitutionName'),))
    copy_id, _ = make_copy(clinical, study_id, leaky)
    findings = PhiScanner(IDENTITY).scan_many(
        instance_tags(clinical, copy_id).items())
    assert {(f.path, f.kind) for f in findings} == {
        ('0008,0080', 'patient name')}
    # the same data through a shipped profile is clean
    copy_id, _ = make_copy(clinical, study_id, BASIC)
    assert PhiScanner(IDENTITY).scan_many(
        instance_tags(clinical, copy_id).items()) == []


def test_replace_is_one_value_per_study(orthancs):
    """Orthanc writes a Replace value into every instance: without the
    corrections, the series of the next day gets the first day's date"""
    clinical, _ = orthancs
    study_id = upload(clinical, n_series=2, n_instances=1,
        extra=CLEAN_DESCRIPTION)
    copy_id, plan = make_copy(clinical, study_id, BASIC_SHIFTED,
        correct=False)
    assert plan.corrections
    copies = by_position(instance_tags(clinical, copy_id))
    assert {t['0008,0021'] for t in copies.values()} == {'20221112'}
    originals = by_position(instance_tags(clinical, study_id))
    problems = check_dates(originals[('2', '1')], copies[('2', '1')],
        SUBJECT.date_shift, 'year')
    # creation, series, acquisition, content dates and acquisition DT
    assert {path for path, _ in problems} == {
        '0008,0012', '0008,0021', '0008,0022', '0008,0023', '0008,002a'}
    assert check_dates(originals[('1', '1')], copies[('1', '1')],
        SUBJECT.date_shift, 'year') == []


def test_each_copy_has_new_uids(orthancs):
    "Copying twice makes two copies: no duplicate check in Orthanc"
    clinical, _ = orthancs
    study_id = upload(clinical, n_series=1, n_instances=1)
    first, _ = make_copy(clinical, study_id, BASIC)
    second, _ = make_copy(clinical, study_id, BASIC)
    assert first != second
    assert len(clinical.request('GET', '/studies').json()) == 3
    changes = clinical.request('GET', '/changes?limit=1000').json()
    new_studies = {c['ID'] for c in changes['Changes']
        if c['ChangeType'] == 'NewStudy'}
    assert {first, second} <= new_studies


def test_send_copy_by_peer_and_by_modality(orthancs):
    """Send a copy to the research Orthanc over HTTP (peer) and DICOM
    (modality); the copy carries PatientIdentityRemoved there, but not
    Orthanc's AnonymizedFrom"""
    clinical, research = orthancs
    study_id = upload(clinical, n_series=1, n_instances=2,
        extra=CLEAN_DESCRIPTION)
    copy_id, _ = make_copy(clinical, study_id, BASIC)
    session = clinical.session()

    # a peer declared in the configuration, the body is the resource ID
    answer = clinical.request('POST', '/peers/research-config/store',
        data=copy_id).json()
    assert answer['InstancesCount'] == 2
    assert answer['FailedInstancesCount'] == 0
    received, = research.request('GET', '/studies').json()
    assert received == copy_id      # same UIDs, same Orthanc ID
    study = research.request('GET', '/studies/%s' % received).json()
    assert 'AnonymizedFrom' not in study
    assert study['PatientMainDicomTags']['PatientID'] == SUBJECT.pseudonym
    tags = research.request('GET', '/instances/%s/tags?short' % research
        .request('GET', '/instances').json()[0]).json()
    assert tags['0012,0062'] == 'YES'
    research.clear()

    # a peer declared over REST, sent as a job
    response = session.put(clinical.url + '/peers/research-rest', json={
            'Url': research.url, 'Username': research.user,
            'Password': research.password})
    assert response.status_code == 200
    peers = clinical.request('GET', '/peers?expand').json()
    assert peers['research-rest']['Password'] is None   # never echoed
    job = clinical.request('POST', '/peers/research-rest/store', json={
            'Resources': [copy_id], 'Asynchronous': True}).json()
    wait_job(clinical, job['ID'])
    assert research.request('GET', '/studies').json() == [copy_id]
    research.clear()

    # a DICOM modality declared over REST
    response = session.put(clinical.url + '/modalities/research', json={
            'AET': 'RESEARCH', 'Host': '127.0.0.1',
            'Port': research.dicom_port})
    assert response.status_code == 200
    answer = clinical.request('POST', '/modalities/research/store',
        data=copy_id).json()
    assert answer['InstancesCount'] == 2
    assert research.request('GET', '/studies').json() == [copy_id]


def wait_job(orthanc, job_id, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = orthanc.request('GET', '/jobs/%s' % job_id).json()['State']
        if state in ('Success', 'Failure'):
            assert state == 'Success'
            return
        time.sleep(0.1)
    raise AssertionError('job %s did not end' % job_id)


@pytest.mark.parametrize('in_database, kept', [(False, []),
        (True, ['research'])])
def test_rest_declared_peers_at_restart(in_database, kept):
    "Peers and modalities declared over REST are forgotten at restart"
    workdir = tempfile.mkdtemp(prefix='orthanc-deid-')
    server = OrthancServer(workdir, extra_config={
            'OrthancPeersInDatabase': in_database,
            'DicomModalitiesInDatabase': in_database})
    try:
        server.start()
        session = server.session()
        session.put(server.url + '/peers/research', json={
                'Url': 'http://127.0.0.1:9/'}).raise_for_status()
        session.put(server.url + '/modalities/research', json={
                'AET': 'RESEARCH', 'Host': '127.0.0.1', 'Port': 9}
            ).raise_for_status()
        server.port = server.http_port
        server.stop()
        server.start()
        assert server.request('GET', '/peers').json() == kept
        assert server.request('GET', '/modalities').json() == kept
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
