# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""RDSRs and report PDFs through a real Orthanc (no database).

RDSRs built after the templates are stored with an image, chosen for
download from what Orthanc says of each instance, and read back from
``/instances/{id}/file``; report PDFs are created into a study with the
body of ``report_dicom`` and checked through REST and C-FIND (dcmtk's
findscu).
"""
import base64
import datetime as dt
import glob
import os
import shutil
import subprocess
import tempfile
import zlib

import pydicom
import pytest

from trytond.modules.health_orthanc.dose import (
    NOT_DOSE, OK, is_dose_report_candidate, parse_dose_report)
from trytond.modules.health_orthanc.orthanc_client import OrthancClient
from trytond.modules.health_orthanc.report_dicom import (
    ENCAPSULATED_PDF_STORAGE, create_dicom_body, is_report_series, person_name,
    prepare_pdf, report_orthanc_ids, report_uids)
from trytond.modules.health_orthanc.sync import Synchronizer

from . import rdsr_samples as samples
from .orthanc_server import OrthancServer, free_port
from .test_sync import MemoryStore

AET = 'DOSETEST'


@pytest.fixture(scope='module')
def orthanc(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('orthanc-dose'))
    with OrthancServer(workdir, dicom=True, extra_config={
                'DicomModalities': {
                    'dosetest': [AET, '127.0.0.1', free_port()]},
                }) as server:
        yield server


def make_pdf(text):
    "A one-page PDF showing text, ending with %%EOF and no end of line"
    stream = b'BT /F1 12 Tf 72 770 Td (%s) Tj ET' % text.encode('latin-1')
    objects = [
        b'<< /Type /Catalog /Pages 2 0 R >>',
        b'<< /Type /Pages /Kids [3 0 R] /Count 1 >>',
        b'<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] '
        b'/Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>',
        b'<< /Length %d >>\nstream\n%s\nendstream' % (len(stream), stream),
        b'<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>',
        ]
    pdf, offsets = b'%PDF-1.4\n', []
    for number, content in enumerate(objects, 1):
        offsets.append(len(pdf))
        pdf += b'%d 0 obj\n%s\nendobj\n' % (number, content)
    xref = len(pdf)
    pdf += b'xref\n0 %d\n0000000000 65535 f \n' % (len(objects) + 1)
    pdf += b''.join(b'%010d 00000 n \n' % offset for offset in offsets)
    pdf += b'trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF' % (
        len(objects) + 1, xref)
    return pdf


def store_study(orthanc, patient_id, sample_names=(), modality='CT',
        character_set=None):
    """Store an image and the named RDSR samples as one study; return
    the Orthanc study ID, its StudyInstanceUID and {name: instance ID}"""
    study_uid = samples.make_uid('study', patient_id, 'orthanc')
    answer = orthanc.upload(samples.make_image(study_uid, patient_id,
            modality=modality, character_set=character_set))
    instances = {'image': answer['ID'], 'study': answer['ParentStudy']}
    for seed, name in enumerate(sample_names, 1):
        ds = samples.SAMPLES[name](patient_id=patient_id,
            study_uid=study_uid, seed=seed)
        instances[name] = orthanc.upload(samples.to_bytes(ds))['ID']
    return answer['ParentStudy'], study_uid, instances


def get(orthanc, path):
    return orthanc.request('GET', path)


def create(orthanc, body):
    return orthanc.request('POST', '/tools/create-dicom', json=body).json()


def find(orthanc, level, **keys):
    "C-FIND (study root) with findscu; return the answers as datasets"
    output = tempfile.mkdtemp()
    arguments = ['findscu', '-S', '-X', '-od', output, '-aet', AET,
        '-aec', orthanc.aet, '-k', 'QueryRetrieveLevel=%s' % level]
    for key, value in keys.items():
        arguments += ['-k', '%s=%s' % (key, value) if value else key]
    arguments += ['127.0.0.1', str(orthanc.dicom_port)]
    try:
        process = subprocess.run(arguments, capture_output=True, text=True)
        assert process.returncode == 0, process.stderr
        assert 'Find Failed' not in process.stderr, process.stderr
        return [pydicom.dcmread(path) for path in sorted(
                glob.glob(os.path.join(output, 'rsp*.dcm')))]
    finally:
        shutil.rmtree(output)


# -- RDSR --------------------------------------------------------------------
@pytest.mark.parametrize('name', sorted(samples.SAMPLES))
def test_rdsr_read_back_from_orthanc(orthanc, name):
    patient_id = 'DOSE-%08x' % zlib.crc32(name.encode())
    _, _, instances = store_study(orthanc, patient_id, [name])
    data = get(orthanc, '/instances/%s/file' % instances[name]).content
    local = samples.SAMPLES[name](patient_id=patient_id,
        study_uid=samples.make_uid('study', patient_id, 'orthanc'), seed=1)
    assert data == samples.to_bytes(local)
    report = parse_dose_report(data)
    assert report.as_dict() == parse_dose_report(local).as_dict()
    assert report.sop_instance_uid == local.SOPInstanceUID


def candidates(orthanc, study_id):
    """The instances of a study to download as RDSR, decided as the sync
    does: series Modality, then each instance's SopClassUid metadata"""
    series = get(orthanc, '/studies/%s/series' % study_id).json()
    modalities = {s['MainDicomTags'].get('Modality') for s in series}
    chosen = set()
    for item in series:
        modality = item['MainDicomTags'].get('Modality')
        for instance_id in item['Instances']:
            sop_class = get(orthanc, '/instances/%s/metadata/SopClassUid'
                % instance_id).text
            if is_dose_report_candidate({'SopClassUid': sop_class,
                        'Modality': modality}, modalities):
                chosen.add(instance_id)
    return chosen


def test_candidates_in_a_ct_study(orthanc):
    names = ['ct_three_events', 'ct_head_legacy', 'not_a_dose_report']
    study_id, _, instances = store_study(orthanc, 'DOSE-CAND-CT', names)
    chosen = candidates(orthanc, study_id)
    assert chosen == {instances[n] for n in names}
    statuses = {name: parse_dose_report(get(orthanc,
                '/instances/%s/file' % instances[name]).content).status
        for name in names}
    assert statuses == {'ct_three_events': OK, 'ct_head_legacy': OK,
        'not_a_dose_report': NOT_DOSE}


def test_candidates_in_an_mr_study(orthanc):
    "An Enhanced SR in a study without X-ray is no dose report to fetch"
    names = ['projection_radiography', 'not_a_dose_report']
    study_id, _, instances = store_study(orthanc, 'DOSE-CAND-MR', names,
        modality='MR')
    assert candidates(orthanc, study_id) == {
        instances['projection_radiography']}


# -- report PDF --------------------------------------------------------------
def report_body(study_id, study_uid, pdf, revision=1, **kwargs):
    values = dict(result_key='dose-test:7', revision=revision,
        result_number='IMGR0007', professional=person_name('House', 'Greg'),
        completed=dt.datetime(2024, 3, 5, 14, 30, 5))
    values.update(kwargs)
    return create_dicom_body(pdf, study_id, study_uid, **values)


def test_report_pdf_stored_under_its_study(orthanc):
    other_id, _, _ = store_study(orthanc, 'DOSE-PDF-0', [])
    study_id, study_uid, instances = store_study(orthanc, 'DOSE-PDF-1', [],
        modality='CT')
    # a second study of the same patient must stay untouched
    pdf = make_pdf('Report of IMGR0007')
    answer = create(orthanc, report_body(study_id, study_uid, pdf))

    ids = report_orthanc_ids('DOSE-PDF-1', study_uid, 'dose-test:7', 1)
    assert answer['Status'] == 'Success'
    assert answer['ParentStudy'] == study_id
    assert (answer['ID'], answer['ParentSeries']) == (
        ids['instance'], ids['series'])
    series = get(orthanc, '/studies/%s/series' % study_id).json()
    reports = [s for s in series if is_report_series(s['MainDicomTags'])]
    assert [s['ID'] for s in reports] == [ids['series']]
    assert reports[0]['MainDicomTags']['SeriesDescription'] == (
        'GNU Health report')
    assert len(get(orthanc, '/studies/%s/instances' % other_id).json()) == 1

    tags = get(orthanc, '/instances/%s/simplified-tags' % answer['ID']
        ).json()
    series_uid, sop_uid = report_uids('dose-test:7', study_uid, 1)
    assert {k: tags.get(k) for k in [
            'SOPClassUID', 'SOPInstanceUID', 'SeriesInstanceUID',
            'StudyInstanceUID', 'PatientID', 'PatientName', 'Modality',
            'DocumentTitle', 'PerformingPhysicianName', 'ContentDate',
            'ContentTime', 'MIMETypeOfEncapsulatedDocument',
            'InstanceNumber']} == {
        'SOPClassUID': ENCAPSULATED_PDF_STORAGE,
        'SOPInstanceUID': sop_uid,
        'SeriesInstanceUID': series_uid,
        'StudyInstanceUID': study_uid,
        'PatientID': 'DOSE-PDF-1',
        'PatientName': 'DOE^Jane',
        'Modality': 'DOC',
        'DocumentTitle': 'Imaging report IMGR0007',
        'PerformingPhysicianName': 'House^Greg',
        'ContentDate': '20240305',
        'ContentTime': '143005',
        'MIMETypeOfEncapsulatedDocument': 'application/pdf',
        'InstanceNumber': '1',
        }

    prepared = prepare_pdf(pdf)
    assert get(orthanc, '/instances/%s/pdf' % answer['ID']).content == (
        prepared)
    encapsulated = get(orthanc, '/instances/%s/content/0042-0011'
        % answer['ID']).content
    length = int(tags['EncapsulatedDocumentLength'])
    assert encapsulated[:length] == prepared
    assert len(encapsulated) == length + length % 2


def test_report_pdf_found_by_findscu(orthanc):
    study_id, study_uid, _ = store_study(orthanc, 'DOSE-FIND-1', [])
    create(orthanc, report_body(study_id, study_uid, make_pdf('Found')))
    series_uid, _ = report_uids('dose-test:7', study_uid, 1)

    study, = find(orthanc, 'STUDY', StudyInstanceUID=study_uid,
        ModalitiesInStudy='', NumberOfStudyRelatedSeries='',
        NumberOfStudyRelatedInstances='')
    assert set(study.ModalitiesInStudy) == {'CT', 'DOC'}
    assert (study.NumberOfStudyRelatedSeries,
        study.NumberOfStudyRelatedInstances) == (2, 2)
    answers = find(orthanc, 'SERIES', StudyInstanceUID=study_uid,
        SeriesInstanceUID='', Modality='DOC', SeriesDescription='')
    assert [(a.SeriesInstanceUID, a.SeriesDescription) for a in answers] == [
        (series_uid, 'GNU Health report')]
    instance, = find(orthanc, 'IMAGE', StudyInstanceUID=study_uid,
        SeriesInstanceUID=series_uid, SOPInstanceUID='', SOPClassUID='')
    assert instance.SOPClassUID == ENCAPSULATED_PDF_STORAGE


def test_report_pdf_replaced_on_recompletion(orthanc):
    study_id, study_uid, _ = store_study(orthanc, 'DOSE-REDO-1', [])
    first = create(orthanc, report_body(study_id, study_uid,
            make_pdf('First')))
    # the same SOP Instance UID again keeps the first content
    again = create(orthanc, report_body(study_id, study_uid,
            make_pdf('Changed')))
    assert (again['Status'], again['ID']) == ('AlreadyStored', first['ID'])

    second_pdf = make_pdf('Second')
    second = create(orthanc, report_body(study_id, study_uid, second_pdf,
            revision=2))
    assert second['ParentSeries'] == first['ParentSeries']
    previous = report_orthanc_ids('DOSE-REDO-1', study_uid, 'dose-test:7', 1)
    assert previous['instance'] == first['ID']
    orthanc.request('DELETE', '/instances/%s' % previous['instance'])

    remaining = get(orthanc, '/series/%s/instances' % second['ParentSeries']
        ).json()
    assert [(i['ID'], i['MainDicomTags']['InstanceNumber'])
        for i in remaining] == [(second['ID'], '2')]
    assert get(orthanc, '/instances/%s/pdf' % second['ID']).content == (
        prepare_pdf(second_pdf))


def even_pdf(text):
    pdf = make_pdf(text)
    while len(pdf) % 2:
        text += ' '
        pdf = make_pdf(text)
    return pdf


def test_pdf_end_of_line_is_needed(orthanc):
    """Orthanc takes a last byte other than CR or LF for padding: an
    even-length PDF ending with %%EOF loses its F without prepare_pdf"""
    study_id, study_uid, _ = store_study(orthanc, 'DOSE-EOL-1', [])
    pdf = even_pdf('Even')
    body = report_body(study_id, study_uid, pdf)
    prepared = create(orthanc, body)
    body = report_body(study_id, study_uid, pdf, revision=2)
    body['Content'] = 'data:application/pdf;base64,' + (
        base64.b64encode(pdf).decode())
    raw = create(orthanc, body)
    assert get(orthanc, '/instances/%s/pdf' % prepared['ID']).content == (
        prepare_pdf(pdf))
    assert get(orthanc, '/instances/%s/pdf' % raw['ID']).content == pdf[:-1]


@pytest.mark.parametrize('character_set, fitted, stored', [
    (None, True, '??????^????'),
    # what Orthanc makes of the same name when it is not fitted
    (None, False, '^'),
    ('ISO_IR 192', True, 'Иванов^Иван'),
    ])
def test_report_professional_name_character_sets(orthanc, character_set,
        fitted, stored):
    patient_id = 'DOSE-CS-%s-%s' % (character_set or 'none', fitted)
    study_id, study_uid, _ = store_study(orthanc, patient_id, [],
        character_set=character_set)
    body = report_body(study_id, study_uid, make_pdf('Names'),
        professional='Иванов^Иван', character_set=character_set)
    if not fitted:
        body['Tags']['PerformingPhysicianName'] = 'Иванов^Иван'
    answer = create(orthanc, body)
    tags = get(orthanc, '/instances/%s/simplified-tags' % answer['ID']
        ).json()
    assert tags['PerformingPhysicianName'] == stored


# -- the sync ----------------------------------------------------------------
@pytest.fixture
def quiet_orthanc(tmp_path):
    "An empty Orthanc that never logs Stable* changes by itself"
    with OrthancServer(str(tmp_path), stable_age=24 * 3600) as server:
        yield server


@pytest.fixture
def counted(monkeypatch):
    "{client method: [instance IDs]} of the dose requests of the sync"
    calls = {'instance_metadata': [], 'instance_file': []}
    for name, ids in calls.items():
        method = getattr(OrthancClient, name)

        def record(self, instance_id, *args, _method=method, _ids=ids):
            _ids.append(instance_id)
            return _method(self, instance_id, *args)
        monkeypatch.setattr(OrthancClient, name, record)
    return calls


def connect(orthanc):
    return OrthancClient(orthanc.url, orthanc.user, orthanc.password,
        backoff=0)


def test_sync_reads_each_dose_report_once(quiet_orthanc, counted):
    "First import, then the change log: each SR instance read once"
    orthanc = quiet_orthanc
    _, _, first = store_study(orthanc, 'SYNC-DOSE-1',
        ['ct_three_events', 'not_a_dose_report'])
    store = MemoryStore()
    with connect(orthanc) as client:
        sync = Synchronizer(client, store)
        sync.run(None)
        # A first import lists series: the studies' modalities are not
        # known, so an Enhanced SR is downloaded and found no dose report
        assert {i: (s, r.status) for i, (s, r) in store.doses.items()} == {
            first['ct_three_events']: (first['study'], OK),
            first['not_a_dose_report']: (first['study'], NOT_DOSE),
            }
        report = store.doses[first['ct_three_events']][1]
        assert report.ct_dlp_total.value == 604.46
        assert sorted(counted['instance_file']) == sorted(
            [first['ct_three_events'], first['not_a_dose_report']])

        # The study changes: read again, its reports are not
        study_uid = samples.make_uid('study', 'SYNC-DOSE-1', 'orthanc')
        orthanc.upload(samples.make_image(study_uid, 'SYNC-DOSE-1',
                number=2))
        _, _, second = store_study(orthanc, 'SYNC-DOSE-2',
            ['ct_head_legacy', 'not_a_dose_report'], modality='MR')
        for calls in counted.values():
            calls.clear()
        sync.run(store.cursor)
        assert sorted(counted['instance_metadata']) == sorted(
            [second['ct_head_legacy'], second['not_a_dose_report']])
        # An Enhanced SR in a study without X-ray is no dose report: not
        # downloaded (ct_head_legacy is such an SR, from an old scanner)
        assert counted['instance_file'] == []
        assert {store.doses[second[n]][1].status for n in [
                'ct_head_legacy', 'not_a_dose_report']} == {NOT_DOSE}

        # Nothing changed: one request
        start = client.request_count
        sync.run(store.cursor)
        assert client.request_count - start == 1
    store.check_integrity()


def test_sync_leaves_report_series_out(quiet_orthanc, counted):
    "A report stored into a study is no new series for GNU Health"
    orthanc = quiet_orthanc
    study_id, study_uid, _ = store_study(orthanc, 'SYNC-REPORT-1', [])
    store = MemoryStore()
    with connect(orthanc) as client:
        sync = Synchronizer(client, store)
        sync.run(None)
        before = store.content()
        create(orthanc, report_body(study_id, study_uid, make_pdf('Sync')))
        saves = len(store.saves)
        start = client.request_count
        result = sync.run(store.cursor)
        # The changes, and the new series, found to be a report
        assert client.request_count - start == 2
        assert result.studies == result.series == 0
        assert store.content() == before
        assert [s['studies'] for s in store.saves[saves:]] == [[]]
        start = client.request_count
        sync.run(store.cursor)
        assert client.request_count - start == 1
        # Read whole again (its StableStudy change), the study keeps its
        # series and summary without the report
        sync.import_ids(studies=[study_id])
        assert store.series == before[2]
        assert (store.studies[study_id]['modalities'],
            store.studies[study_id]['number_of_series']) == ('CT', 1)
        assert counted['instance_metadata'] == []
