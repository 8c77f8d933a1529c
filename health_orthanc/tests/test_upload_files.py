# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Tests of the upload of DICOM files and zip archives to a real Orthanc,
without database."""
import io
import zipfile

import pytest

from tests.dicom_samples import make_study
from tests.orthanc_server import OrthancServer, free_port
from trytond.modules.health_orthanc.orthanc_client import OrthancClient
from trytond.modules.health_orthanc.upload_files import (
    ALREADY_STORED, FAILED, REJECTED, STORED, count_statuses, iter_members,
    upload_files)

A, B, C = make_study(n_series=1, n_instances=3, seed=11,
    patient_id='UP-1', patient_name='UPLOAD^Ann')


def make_zip(members, compression=zipfile.ZIP_DEFLATED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope='module')
def orthanc(tmp_path_factory):
    with OrthancServer(str(tmp_path_factory.mktemp('orthanc'))) as server:
        yield server


@pytest.fixture
def client(orthanc):
    orthanc.clear()
    with OrthancClient(orthanc.url, orthanc.user, orthanc.password,
            backoff=0) as client:
        yield client


def test_iter_members():
    data = make_zip([('dir/', b''), ('dir/a.dcm', A), ('b.dcm', B),
            ('__MACOSX/._b.dcm', b'junk')])
    members = [(n, m.read(), s) for n, m, s in iter_members(
            'x.zip', io.BytesIO(data))]
    assert members == [('x.zip/dir/a.dcm', A, len(A)),
        ('x.zip/b.dcm', B, len(B))]
    stream = io.BytesIO(A)
    (name, member, size), = iter_members('a.dcm', stream)
    assert (name, member, size) == ('a.dcm', stream, len(A))


@pytest.mark.parametrize('files, expected', [
    # one DICOM file, twice
    ([('a.dcm', A), ('again.dcm', A)],
        [('a.dcm', STORED), ('again.dcm', ALREADY_STORED)]),
    # 2 DICOM + 1 duplicate + 1 text file in a zip
    ([('batch.zip', make_zip([('a.dcm', A), ('b.dcm', B),
                        ('copy/a.dcm', A), ('readme.txt', b'Hello')]))],
        [('batch.zip/a.dcm', STORED), ('batch.zip/b.dcm', STORED),
            ('batch.zip/copy/a.dcm', ALREADY_STORED),
            ('batch.zip/readme.txt', REJECTED)]),
    # a stored zip, a file object, an empty file, a broken zip
    ([('s.zip', make_zip([('c', C)], zipfile.ZIP_STORED)),
        ('b.dcm', io.BytesIO(B)), ('empty.dcm', b''),
        ('broken.zip', make_zip([('a.dcm', A)])[:-30])],
        [('s.zip/c', STORED), ('b.dcm', STORED), ('empty.dcm', REJECTED),
            ('broken.zip', REJECTED)]),
    ])
def test_upload_files(client, files, expected):
    results = upload_files(client, files)
    assert [(r.name, r.status) for r in results] == expected
    stored = [r for r in results if r.status in {STORED, ALREADY_STORED}]
    assert len({r.study for r in stored}) <= 1
    assert all(r.instance for r in stored)
    counts = count_statuses(results)
    assert client.statistics()['CountInstances'] == counts[STORED]
    rejected = [r for r in results if r.status == REJECTED]
    assert all(r.detail for r in rejected)


def test_not_dicom_detail(client):
    result, = upload_files(client, [('notes.txt', b'Not an image')])
    assert result.status == REJECTED
    assert result.detail.startswith('not DICOM')


def test_server_down():
    "A file that could not be sent is failed, the others are tried"
    client = OrthancClient('http://127.0.0.1:%s' % free_port(), 'u', 'p',
        backoff=0)
    results = upload_files(client, [('a.dcm', A), ('b.dcm', B)])
    assert [r.status for r in results] == [FAILED, FAILED]
    assert 'reach' in results[0].detail
    assert count_statuses(results) == {
        STORED: 0, ALREADY_STORED: 0, REJECTED: 0, FAILED: 2}
