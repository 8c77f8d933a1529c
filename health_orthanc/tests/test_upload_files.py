# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Tests of the upload of DICOM files and zip archives to a real Orthanc,
without database."""
import io
import zipfile

import pytest

from trytond.modules.health_orthanc.orthanc_client import OrthancClient
from trytond.modules.health_orthanc.upload_files import (
    ALREADY_STORED, EMPTY, ENCRYPTED, FAILED, NOT_DICOM, REJECTED, SEND_FAILED,
    STORED, UNREADABLE_ARCHIVE, UNREADABLE_MEMBER, UNSUPPORTED, count_statuses,
    iter_members, upload_files)

from .dicom_samples import make_study
from .orthanc_server import OrthancServer, free_port

A, B, C = make_study(n_series=1, n_instances=3, seed=11,
    patient_id='UP-1', patient_name='UPLOAD^Ann')


def make_zip(members, compression=zipfile.ZIP_DEFLATED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def patch_members(data, names, flag=0, method=None):
    """Return the zip data with the members of names marked encrypted
    (general purpose flag bit 0) or compressed with method, in their local
    header and their central directory entry, as another zip tool would
    write them (zipfile writes neither)."""
    data = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        infos = [i for i in archive.infolist() if i.filename in names]
        central = archive.start_dir
    assert len(infos) == len(names)
    headers = [i.header_offset for i in infos]
    position = central
    while (position := data.find(b'PK\x01\x02', position)) >= 0:
        name_length = int.from_bytes(data[position + 28:position + 30],
            'little')
        name = bytes(data[position + 46:position + 46 + name_length])
        if name.decode() in names:
            headers.append(position + 2)  # flags 2 bytes further
        position += 46
    for offset in headers:
        data[offset + 6] |= flag
        if method is not None:
            data[offset + 8:offset + 10] = method.to_bytes(2, 'little')
    return bytes(data)


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
    members = []
    for member in iter_members('x.zip', io.BytesIO(data)):
        with member.open() as file:
            members.append((member.name, file.read(), member.size))
    assert members == [('x.zip/dir/a.dcm', A, len(A)),
        ('x.zip/b.dcm', B, len(B))]
    stream = io.BytesIO(A)
    member, = iter_members('a.dcm', stream)
    assert (member.name, member.size, member.info) == ('a.dcm', len(A), None)
    with member.open() as file:
        assert file is stream


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
    assert all(r.reason for r in rejected)
    assert not any(r.reason for r in stored)


def test_not_dicom_reason(client):
    result, = upload_files(client, [('notes.txt', b'Not an image')])
    assert (result.status, result.reason) == (REJECTED, NOT_DICOM)
    assert set(result.params) == {'reason'}
    result, = upload_files(client, [('empty.dcm', b'')])
    assert (result.status, result.reason, result.params) == (
        REJECTED, EMPTY, {})


def test_bad_zip_members(client):
    """An encrypted member, one with an unsupported compression and a
    damaged one are each rejected; the members around them are stored"""
    data = make_zip([('a.dcm', A), ('secret.dcm', B), ('implode.dcm', B),
            ('crc.dcm', B), ('c.dcm', C)])
    data = patch_members(data, ['secret.dcm'], flag=0x1)
    data = patch_members(data, ['implode.dcm'], method=6)
    # Damage the compressed data of crc.dcm, keeping its headers
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo('crc.dcm')
        start = info.header_offset + 30 + len(info.filename)
    data = bytearray(data)
    for i in range(start + 40, start + 60):
        data[i] ^= 0xff
    results = upload_files(client, [('disc.zip', bytes(data)),
            ('after.dcm', A)])
    assert [(r.name, r.status, r.reason) for r in results] == [
        ('disc.zip/a.dcm', STORED, ''),
        ('disc.zip/secret.dcm', REJECTED, ENCRYPTED),
        ('disc.zip/implode.dcm', REJECTED, UNSUPPORTED),
        ('disc.zip/crc.dcm', REJECTED, UNREADABLE_MEMBER),
        ('disc.zip/c.dcm', STORED, ''),
        ('after.dcm', ALREADY_STORED, ''),
        ]
    assert results[2].params == {'method': '6'}
    assert results[3].params['error']
    assert client.statistics()['CountInstances'] == 2


def test_unreadable_archive(client):
    "A zip with a damaged directory is rejected whole, the next file is sent"
    broken = make_zip([('a.dcm', A)]).replace(b'PK\x01\x02', b'PK\x01\x00')
    results = upload_files(client, [('broken.zip', broken), ('b.dcm', B)])
    assert [(r.status, r.reason) for r in results] == [
        (REJECTED, UNREADABLE_ARCHIVE), (STORED, '')]


def test_server_down():
    "A file that could not be sent is failed, the others are tried"
    client = OrthancClient('http://127.0.0.1:%s' % free_port(), 'u', 'p',
        backoff=0)
    results = upload_files(client, [('a.dcm', A), ('b.dcm', B)])
    assert [(r.status, r.reason) for r in results] == [
        (FAILED, SEND_FAILED), (FAILED, SEND_FAILED)]
    assert 'reach' in results[0].params['error']
    assert results[0].error.__class__.__name__ == 'OrthancUnreachable'
    assert count_statuses(results) == {
        STORED: 0, ALREADY_STORED: 0, REJECTED: 0, FAILED: 2}
