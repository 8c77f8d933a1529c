# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""The steps of a research copy on real Orthancs (no database): make and
check the copy where the study is, send it to a peer, discard it."""
import datetime
import io
import shutil
import tempfile

import pydicom
import pytest

from trytond.modules.health_orthanc import deid_copy
from trytond.modules.health_orthanc.deid_copy import (
    CopyError, CopyJob, CopyLeak, declare_peer, describe_path, discard_copy,
    identity_from_tags, make_copy, send_copy, study_tags)
from trytond.modules.health_orthanc.deidentify import (
    BASIC, PROFILES, Profile, Subject, TagRule)
from trytond.modules.health_orthanc.orthanc_client import (
    OrthancClient, OrthancNotFound)
from trytond.modules.health_orthanc.phi_scan import Identity
from trytond.modules.health_orthanc.report_dicom import (
    create_dicom_body, is_report_series)

from .orthanc_server import OrthancServer
from .phi_samples import PATIENT, make_phi_study

SUBJECT = Subject('TRIAL-K3M9Q2XZ-7', -123)
CLEAN = {'StudyDescription': 'CT thorax follow-up'}


@pytest.fixture(scope='module')
def servers():
    workdir = tempfile.mkdtemp(prefix='orthanc-deid-copy-')
    research = OrthancServer(workdir + '/research').start()
    clinical = OrthancServer(workdir + '/clinical').start()
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


def client(orthanc):
    return OrthancClient(orthanc.url, orthanc.user, orthanc.password,
        backoff=0)


def upload(orthanc, **kwargs):
    return orthanc.upload_many(make_phi_study(**kwargs))[0]['ParentStudy']


def job(orthanc, study_id, profile, subject=SUBJECT):
    "The job the model makes: the patient's values (and the original's)"
    return CopyJob(study_id, profile, subject,
        Identity(names=['Jörg Müller']))


def test_identity_from_tags(orthancs):
    clinical, _ = orthancs
    study_id = upload(clinical, n_series=1, n_instances=2)
    identity = identity_from_tags(study_tags(client(clinical), study_id),
        Identity(names=['Jörg Müller'], identifiers=['X-1']))
    assert identity.names == sorted(['Jörg Müller', PATIENT.name])
    assert identity.identifiers == sorted(
        ['X-1', PATIENT.puid, PATIENT.mrn, *PATIENT.other_ids])
    assert identity.birth_date == PATIENT.birth_date
    assert identity.accession_numbers == ['ACC552211']
    assert identity.institutions == [PATIENT.institution]
    assert identity.physicians == sorted(
        [PATIENT.referring, PATIENT.performing])


@pytest.mark.parametrize('profile', list(PROFILES.values()),
    ids=list(PROFILES))
def test_make_copy(orthancs, profile):
    clinical, _ = orthancs
    study_id = upload(clinical, n_series=2, n_instances=3, extra=CLEAN)
    made = []
    outcome = make_copy(client(clinical), job(clinical, study_id, profile),
        made=made.append)
    assert made == [outcome.copy_id]
    assert (outcome.series, outcome.instances) == (2, 6)
    assert outcome.values > 6 * 30
    study = clinical.request('GET', '/studies/%s' % outcome.copy_id).json()
    assert study['MainDicomTags']['StudyInstanceUID'] == (
        outcome.study_instance_uid)
    # after the corrections the copy is still known as one: the sync
    # skips it
    assert study['AnonymizedFrom'] == study_id
    patient = clinical.request('GET', '/patients/%s'
        % study['ParentPatient']).json()
    assert patient['AnonymizedFrom']


def test_copy_without_corrections_is_refused(orthancs, monkeypatch):
    """The check compares every date with its original: without the
    per-instance corrections, the second series keeps the first's date"""
    clinical, _ = orthancs
    study_id = upload(clinical, n_series=2, n_instances=1, extra=CLEAN)
    monkeypatch.setattr(deid_copy, '_apply_corrections', lambda *a: None)
    with pytest.raises(CopyLeak) as info:
        make_copy(client(clinical), job(
                clinical, study_id, PROFILES['basic_dates_shifted']))
    problems = {(p, k) for p, k, _ in info.value.problems}
    assert ('0008,0021', 'not shifted by -123 days') in problems
    assert clinical.request('GET', '/studies').json() == [study_id]


def test_leak_is_caught_and_the_copy_deleted(orthancs):
    "A profile keeping InstitutionName leaks the name the data puts there"
    clinical, _ = orthancs
    study_id = upload(clinical, n_series=1, n_instances=2,
        extra={'InstitutionName': 'Clinic of Dr MÜLLER Jörg', **CLEAN})
    leaky = Profile('leaky', 'Leaky', rules=(
            TagRule('keep', 'InstitutionName'),))
    made = []
    with pytest.raises(CopyLeak) as info:
        make_copy(client(clinical), job(clinical, study_id, leaky),
            made=made.append)
    assert info.value.problems == [('0008,0080', 'patient name', 2)]
    assert str(info.value) == '0008,0080 InstitutionName (patient name)'
    assert clinical.request('GET', '/studies').json() == [study_id]
    assert len(made) == 1


def test_kept_description_naming_the_patient(orthancs):
    clinical, _ = orthancs
    study_id = upload(clinical, n_series=1, n_instances=1)
    with pytest.raises(CopyLeak) as info:
        make_copy(client(clinical), job(
                clinical, study_id, PROFILES['basic_dates_shifted']))
    assert info.value.problems == [('0008,1030', 'patient name', 1)]


def test_send_and_discard(orthancs):
    clinical, research = orthancs
    study_id = upload(clinical, n_series=2, n_instances=2, extra=CLEAN)
    source = client(clinical)
    outcome = make_copy(source, job(clinical, study_id, BASIC))
    declare_peer(source, 'gnuhealth-research-1', research.url,
        research.user, research.password)
    assert send_copy(source, 'gnuhealth-research-1', outcome.copy_id) == 4
    assert research.request('GET', '/studies').json() == [outcome.copy_id]
    assert discard_copy(source, outcome.copy_id)
    assert not discard_copy(source, outcome.copy_id)
    assert clinical.request('GET', '/studies').json() == [study_id]

    # a wrong password: the job fails
    declare_peer(source, 'gnuhealth-research-1', research.url,
        research.user, 'wrong')
    outcome = make_copy(source, job(clinical, study_id, BASIC))
    with pytest.raises(CopyError):
        send_copy(source, 'gnuhealth-research-1', outcome.copy_id)


def test_unknown_study(orthancs):
    clinical, _ = orthancs
    with pytest.raises(OrthancNotFound):
        make_copy(client(clinical), CopyJob(
                '0' * 8, BASIC, SUBJECT, Identity()))


@pytest.mark.parametrize('path, text', [
    ('0008,0080', '0008,0080 InstitutionName'),
    ('0008,1110[0].0008,1150', '0008,1110[0].0008,1150 '
        'ReferencedStudySequence'),
    ('0009,1010', '0009,1010'),
    ('(instance)', '(instance)'),
    ])
def test_describe_path(path, text):
    assert describe_path(path) == text


def _with_private(data, vr, value):
    "The instance with a private element of vr (as stored: no dictionary)"
    dataset = pydicom.dcmread(io.BytesIO(data))
    dataset.add_new(0x00910010, 'LO', 'SITE PRIVATE')
    dataset.add_new(0x00911001, vr, value)
    out = io.BytesIO()
    dataset.save_as(out)
    return out.getvalue()


def test_long_description_is_checked(orthancs):
    """Orthanc shows a value of more than 256 characters as null: a kept
    description that long naming the patient is read from the file"""
    clinical, _ = orthancs
    long = 'CT thorax ' + 'x' * 260 + ' of %s' % PATIENT.puid
    study_id = upload(clinical, n_series=1, n_instances=2,
        extra={'StudyDescription': long})
    assert study_tags(client(clinical), study_id).popitem()[1][
        '0008,1030'] is None
    with pytest.raises(CopyLeak) as info:
        make_copy(client(clinical), CopyJob(study_id,
                PROFILES['basic_dates_shifted'], SUBJECT,
                Identity(identifiers=[PATIENT.puid])))
    assert ('0008,1030', 'patient identifier', 2) in info.value.problems
    assert clinical.request('GET', '/studies').json() == [study_id]


@pytest.mark.parametrize('value, kind', [
        (b'Patient PUID-8472-KX ', 'patient identifier'),
        (b'\x00\x01\x02\xff\xfe\x03', 'value not checkable'),
        ])
def test_private_unknown_value_is_checked(orthancs, value, kind):
    """A private tag kept (UN: Orthanc shows it as null) is read from the
    file; one that is not text cannot be checked: refused"""
    clinical, _ = orthancs
    assert PATIENT.puid == 'PUID-8472-KX'
    data = _with_private(make_phi_study(n_series=1, n_instances=1,
            extra=CLEAN)[0], 'UN', value)
    study_id = clinical.upload_many([data])[0]['ParentStudy']
    private = Profile('private', 'Private kept', keep_private_tags=True)
    with pytest.raises(CopyLeak) as info:
        make_copy(client(clinical), CopyJob(study_id, private, SUBJECT,
                Identity(identifiers=[PATIENT.puid])))
    assert ('0091,1001', kind, 1) in info.value.problems


def test_clean_copy_reads_no_file(orthancs, monkeypatch):
    "Only the instances with values Orthanc does not show are read"
    clinical, _ = orthancs
    study_id = upload(clinical, n_series=1, n_instances=2, extra=CLEAN)
    read = []
    request = OrthancClient.request

    def spy(self, method, path, *args, **kwargs):
        read.append(path)
        return request(self, method, path, *args, **kwargs)
    monkeypatch.setattr(OrthancClient, 'request', spy)
    make_copy(client(clinical), job(clinical, study_id, BASIC))
    assert not [p for p in read if p.endswith('/file')], read


def test_gnuhealth_report_left_out(orthancs):
    """The report GNU Health stored in the study (a PDF naming the
    patient, which no check can read) is left out of the copy"""
    clinical, _ = orthancs
    study_id = upload(clinical, n_series=1, n_instances=2, extra=CLEAN)
    study = clinical.request('GET', '/studies/%s' % study_id).json()
    pdf = b'%PDF-1.4\n% Report of ' + PATIENT.name.encode() + b'\n%%EOF\n'
    clinical.request('POST', '/tools/create-dicom', json=create_dicom_body(
            pdf, study_id, study['MainDicomTags']['StudyInstanceUID'],
            'result-1', 1, 'IMG2026/00001',
            datetime.datetime(2026, 3, 2, 10, 30))).raise_for_status()
    assert len(clinical.request(
            'GET', '/studies/%s/instances' % study_id).json()) == 3

    outcome = make_copy(client(clinical),
        job(clinical, study_id, PROFILES['basic']))
    assert (outcome.series, outcome.instances) == (1, 2)
    series = clinical.request(
        'GET', '/studies/%s/series' % outcome.copy_id).json()
    assert [s['MainDicomTags'].get('Modality') for s in series] != ['DOC']
    assert all(not is_report_series(s['MainDicomTags']) for s in series)
    # The original keeps its report
    assert len(clinical.request(
            'GET', '/studies/%s/instances' % study_id).json()) == 3
