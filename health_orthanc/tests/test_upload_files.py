# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Tests of the upload of DICOM files and zip archives to a real Orthanc,
without database."""
import base64
import io
import zipfile
import zlib

import pytest

from trytond.modules.health_orthanc.orthanc_client import OrthancClient
from trytond.modules.health_orthanc.upload_files import (
    ALREADY_STORED, EMPTY, ENCRYPTED, FAILED, MAX_RATIO, MAX_SIZE, NOT_DICOM,
    RATIO_FLOOR, REJECTED, SEND_FAILED, SIZE_MISMATCH, STORED, TOO_COMPRESSED,
    TOO_LARGE, UNREADABLE_ARCHIVE, UNREADABLE_MEMBER, UNSUPPORTED, FileResult,
    Member, count_statuses, iter_members, refusal, studies_received,
    upload_files)

from .dicom_samples import make_study
from .fake_orthanc import FakeOrthanc
from .orthanc_server import OrthancServer, free_port

A, B, C = make_study(n_series=1, n_instances=3, seed=11,
    patient_id='UP-1', patient_name='UPLOAD^Ann')


def make_zip(members, compression=zipfile.ZIP_DEFLATED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def patch_members(data, names, flag=0, method=None, crc=None,
        file_size=None):
    """Return the zip data with the members of names marked encrypted
    (general purpose flag bit 0), compressed with method, or with another
    CRC-32 or uncompressed size, in their local header and their central
    directory entry, as another zip tool would write them (zipfile writes
    none of these)."""
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
    # The central entry's fields are 2 bytes further than the local ones
    for offset in headers:
        data[offset + 6] |= flag
        for start, size, value in [(8, 2, method), (14, 4, crc),
                (22, 4, file_size)]:
            if value is not None:
                data[offset + start:offset + start + size] = \
                    value.to_bytes(size, 'little')
    return bytes(data)


def lying_zip(members, declared):
    """A zip whose deflated members declare declared bytes, more than they
    hold; their CRC-32 is right, so zipfile gives the shorter data"""
    data = make_zip(members)
    return patch_members(data, [n for n, _ in members], file_size=declared)


def zip_bomb(gibibytes, name='bomb.dcm', declared=None):
    """A zip of one member of gibibytes GiB of zeros, deflated to about a
    thousandth of it; built in memory from one compressed MiB repeated
    (a full flush makes each MiB compress alike), never inflated"""
    mib = 1024 * 1024
    size = gibibytes * 1024 * mib
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(mib)) + compressor.flush(
        zlib.Z_FULL_FLUSH)
    again = compressor.compress(bytes(mib)) + compressor.flush(
        zlib.Z_FULL_FLUSH)
    assert again == block
    deflated = block * (size // mib) + compressor.flush()
    crc = 0
    zeros = bytes(mib)
    for _ in range(size // mib):
        crc = zlib.crc32(zeros, crc)
    # Stored as the deflated bytes, then declared deflated
    data = make_zip([(name, deflated)], zipfile.ZIP_STORED)
    return patch_members(data, [name], method=zipfile.ZIP_DEFLATED,
        crc=crc, file_size=size if declared is None else declared)


@pytest.fixture(scope='module')
def orthanc(tmp_path_factory):
    with OrthancServer(str(tmp_path_factory.mktemp('orthanc'))) as server:
        yield server


@pytest.fixture
def client(orthanc):
    orthanc.clear()
    # Orthanc waiting for bytes that never come times out: a failed file
    with OrthancClient(orthanc.url, orthanc.user, orthanc.password,
            backoff=0, timeout=(5, 10)) as client:
        yield client


MIB = 1024 * 1024


def zip_info(size, compress_size):
    info = zipfile.ZipInfo('x.dcm')
    info.file_size, info.compress_size = size, compress_size
    return info


@pytest.mark.parametrize('size, info, expected', [
    (0, None, EMPTY),
    (0, zip_info(0, 2), EMPTY),
    (1000, None, None),
    (MAX_SIZE, None, None),
    (MAX_SIZE + 1, None, TOO_LARGE),
    (MAX_SIZE + 1, zip_info(MAX_SIZE + 1, MAX_SIZE), TOO_LARGE),
    # a DICOM image deflated 2 to 10 times
    (100 * MIB, zip_info(100 * MIB, 10 * MIB), None),
    (100 * MIB, zip_info(100 * MIB, MIB), None),
    (100 * MIB, zip_info(100 * MIB, MIB - 1), TOO_COMPRESSED),
    # a zip bomb: 1000 times, or a size from nothing
    (300 * MIB, zip_info(300 * MIB, 300 * 1024), TOO_COMPRESSED),
    (2 * MIB, zip_info(2 * MIB, 0), TOO_COMPRESSED),
    # small members are not checked for their ratio
    (RATIO_FLOOR, zip_info(RATIO_FLOOR, 10), None),
    (RATIO_FLOOR + 1, zip_info(RATIO_FLOOR + 1, 10), TOO_COMPRESSED),
    ])
def test_limits(size, info, expected):
    "What is refused before anything is read or sent"
    result = refusal(Member('x.dcm', size, None, info))
    if expected is None:
        assert result is None
    else:
        assert (result.status, result.reason) == (REJECTED, expected)


@pytest.mark.parametrize('size, max_size, max_ratio, expected', [
    (10 * MIB, 10 * MIB, 100, None),
    (10 * MIB, 10 * MIB - 1, 100, TOO_LARGE),
    (10 * MIB, 10 * MIB, 9, TOO_COMPRESSED),
    ])
def test_configured_limits(size, max_size, max_ratio, expected):
    member = Member('x.dcm', size, None, zip_info(size, MIB))
    result = refusal(member, max_size, max_ratio)
    assert (result.reason if result else None) == expected


@pytest.fixture
def orthanc_config():
    from trytond.config import config
    if not config.has_section('health_orthanc'):
        config.add_section('health_orthanc')
    yield config
    config.remove_section('health_orthanc')


def test_upload_limits(orthanc_config):
    "The wizard reads the limits in trytond's configuration"
    from trytond.modules.health_orthanc.upload import upload_limits
    assert upload_limits() == {'max_size': MAX_SIZE, 'max_ratio': MAX_RATIO}
    orthanc_config.set('health_orthanc', 'upload_member_max_size', '1048576')
    orthanc_config.set('health_orthanc', 'upload_max_ratio', '250')
    assert upload_limits() == {'max_size': MIB, 'max_ratio': 250}


def test_refusal_params():
    result = refusal(Member('x', 3 * MIB, None), max_size=MIB)
    assert result.params == {'size': '3.0', 'max_size': '1.0'}
    result = refusal(Member('x', 3 * MIB, None, zip_info(3 * MIB, 3 * 1024)))
    assert result.params == {'ratio': '1024', 'max_ratio': '100'}


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


def test_echoed_credentials_not_in_reasons():
    """Orthanc's words are shown to the user: a server echoing the request
    headers gives none of the credentials away"""
    with FakeOrthanc() as fake:
        fake.set('/instances', status=400, echo=True)
        client = OrthancClient(fake.url, 'uploader', 'Up-S3cret', backoff=0)
        result, = upload_files(client, [('a.dcm', A)])
    assert (result.status, result.reason) == (REJECTED, NOT_DICOM)
    basic = base64.b64encode(b'uploader:Up-S3cret').decode()
    assert 'Basic ***' in result.params['reason']
    assert basic[:6] not in result.params['reason']
    assert 'Up-S3cret' not in result.params['reason']


# -- hostile archives ---------------------------------------------------------
def test_members_shorter_than_declared(client):
    """A 1.3 KB zip whose members declare more bytes than they hold: each
    is cut off and rejected at once (Orthanc waited 60 s for each before),
    nothing of them is stored, the next file is"""
    lie = lying_zip([('a.dcm', A), ('b.dcm', B)], 100_000)
    assert len(lie) < 1500
    results = upload_files(client, [('lie.zip', lie), ('c.dcm', C)])
    assert [(r.name, r.status, r.reason) for r in results] == [
        ('lie.zip/a.dcm', REJECTED, SIZE_MISMATCH),
        ('lie.zip/b.dcm', REJECTED, SIZE_MISMATCH),
        ('c.dcm', STORED, ''),
        ]
    assert results[0].params == {'declared': '100000', 'actual': str(len(A))}
    assert client.statistics()['CountInstances'] == 1


@pytest.mark.parametrize('max_ratio, reason', [
    # refused from what the archive says
    (MAX_RATIO, TOO_COMPRESSED),
    # else cut off while it is sent
    (float('inf'), SIZE_MISMATCH),
    ])
def test_member_declaring_megabytes(client, max_ratio, reason):
    lie = lying_zip([('a.dcm', A)], 10 * MIB)
    result, = upload_files(client, [('lie.zip', lie)], max_ratio=max_ratio)
    assert (result.status, result.reason) == (REJECTED, reason)
    assert client.statistics()['CountInstances'] == 0


@pytest.fixture(scope='module')
def bomb():
    "A 3 MB zip of one member inflating to 3 GiB"
    data = zip_bomb(3)
    assert len(data) < 4 * MIB
    return data


@pytest.mark.parametrize('max_size, reason', [
    (MAX_SIZE, TOO_LARGE),
    (4 * 1024 * MIB, TOO_COMPRESSED),
    ])
def test_zip_bomb(client, bomb, max_size, reason):
    """Refused from what the archive says: nothing is inflated nor sent
    (Orthanc held 2 GiB in memory before)"""
    results = upload_files(client, [('bomb.zip', bomb), ('a.dcm', A)],
        max_size=max_size)
    assert [(r.status, r.reason) for r in results] == [
        (REJECTED, reason), (STORED, '')]
    assert client.statistics()['CountInstances'] == 1


def test_zip_bomb_sends_nothing(bomb):
    "Not even a request: Orthanc never sees the bomb"
    with FakeOrthanc() as fake:
        client = OrthancClient(fake.url, backoff=0)
        result, = upload_files(client, [('bomb.zip', bomb)])
        assert (result.status, result.reason) == (REJECTED, TOO_LARGE)
        assert fake.count() == 0


def test_zip_bomb_declaring_little(client):
    """A bomb whose archive says 1000 bytes: zipfile gives no more than
    that, its CRC does not match, nothing is stored"""
    bomb = zip_bomb(1, declared=1000)
    results = upload_files(client, [('bomb.zip', bomb), ('a.dcm', A)])
    assert [(r.status, r.reason) for r in results] == [
        (REJECTED, UNREADABLE_MEMBER), (STORED, '')]
    assert client.statistics()['CountInstances'] == 1


def test_plain_file_too_large(client):
    result, = upload_files(client, [('a.dcm', A)], max_size=len(A) - 1)
    assert (result.status, result.reason) == (REJECTED, TOO_LARGE)
    assert client.statistics()['CountInstances'] == 0


@pytest.mark.parametrize('results, expected', [
    ([], {}),
    ([
        FileResult('a', STORED, study='s1'),
        FileResult('b', ALREADY_STORED, study='s1'),
        FileResult('c', STORED, study='s2'),
        FileResult('d', STORED, study='s1'),
        ], {
        's1': {STORED: 2, ALREADY_STORED: 1},
        's2': {STORED: 1, ALREADY_STORED: 0},
        }),
    # Nothing stored, no study
    ([
        FileResult('e', REJECTED, reason=EMPTY),
        FileResult('f', FAILED, reason=SEND_FAILED),
        ], {}),
    ], ids=['nothing', 'two studies', 'none received'])
def test_studies_received(results, expected):
    received = studies_received(results)
    assert received == expected
    assert list(received) == list(expected)  # in the order they came
