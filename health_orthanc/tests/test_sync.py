# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Tests of the synchronizer, without a database.

The synchronizer writes into an in-memory store and reads a real Orthanc
(``/usr/sbin/Orthanc`` or ``$ORTHANC_BIN``; a missing Orthanc is an error,
not a skip).  Faults a real Orthanc does not make are injected with an
in-process fake server.

The Orthanc servers are shared by the module (see the ``servers``
fixture): ``base`` is never modified (exact counts); ``mutable`` receives
the uploads and deletions of the incremental tests, which therefore only
count what they add.

"""
import base64
import copy
import itertools
import logging
import math
import threading
import time

import pytest

from trytond.modules.health_orthanc.orthanc_client import (
    OrthancBadAnswer, OrthancClient, OrthancError, OrthancStalled,
    OrthancTimeout, OrthancUnauthorized)
from trytond.modules.health_orthanc.sync import (
    CHANGES_PAGE_SIZE, PAGE_SIZE, PHASES, ImportProgress, Synchronizer,
    SyncResult)

from .dicom_samples import make_study
from .fake_orthanc import FakeOrthanc, Reply, orthanc_error
from .orthanc_server import OrthancServer

PASSWORD = 'Sync-S3cr3t!'
STABLE_TIMEOUT = 20

# patient_id, name, birth date, accessions of its studies
PATIENTS = [
    ('P-001', 'DOE^John', '19800115', ['A-1', 'A-2']),
    ('P-002', 'ROE^Jane', '19750302', ['A-3']),
    ('P-003', 'MÜLLER^Jörg', '19621224', ['A-4']),
    ('P-004', 'NGUYEN^Li', None, ['A-5']),
    ]
N_PATIENTS = len(PATIENTS)
N_STUDIES = sum(len(p[3]) for p in PATIENTS)
N_SERIES = 2  # per study
N_ALL_SERIES = N_STUDIES * N_SERIES


# -- the in-memory store -----------------------------------------------------
class StoreFailure(Exception):
    "Raised on purpose by MemoryStore.save"


class MemoryStore:
    """A Store keeping records in dicts keyed by Orthanc ID.

    Each ``save`` is atomic (all or nothing), like the database page of
    the Tryton store; the calls are recorded in ``saves`` (those that
    failed too), the ``missing_patients`` questions in ``lookups`` and the
    ``series_studies`` ones in ``series_lookups``.
    ``fail_on`` holds the numbers (1-based) of the save calls that raise
    StoreFailure without writing anything.
    """

    def __init__(self, fail_on=()):
        self.patients = {}
        self.studies = {}
        self.series = {}
        #: {instance Orthanc ID: (study Orthanc ID, DoseReport)}
        self.doses = {}
        self.cursor = None
        self.progress = None
        self.saves = []
        self.lookups = []
        self.series_lookups = []
        self.fail_on = set(fail_on)

    def save(self, patients=(), studies=(), series=(), replace_series_of=(),
            cursor=None, progress=None, doses=()):
        call = {
            'patients': list(patients),
            'studies': list(studies),
            'series': list(series),
            'replace_series_of': list(replace_series_of),
            'cursor': cursor,
            'progress': progress,
            }
        if doses:
            # Only then: the other tests compare the calls
            call['doses'] = list(doses)
        assert cursor is None or progress is None
        self.saves.append(call)
        for kind in ['patients', 'studies', 'series']:
            ids = [r['orthanc_id'] for r in call[kind]]
            assert len(ids) == len(set(ids)), (
                'the same %s twice in one save: %s' % (kind, ids))
        if len(self.saves) in self.fail_on:
            raise StoreFailure('save #%d failed' % len(self.saves))
        for record in call['patients']:
            self.patients[record['orthanc_id']] = record
        for record in call['studies']:
            self.studies[record['orthanc_id']] = record
        replaced = set(call['replace_series_of'])
        kept = {r['orthanc_id'] for r in call['series']}
        for orthanc_id, record in list(self.series.items()):
            if (record['orthanc_study_id'] in replaced
                    and orthanc_id not in kept):
                del self.series[orthanc_id]
        for record in call['series']:
            self.series[record['orthanc_id']] = record
        for study_id, instance_id, report in call.get('doses', ()):
            assert study_id in self.studies, study_id
            assert instance_id not in self.doses, 'read twice: ' + instance_id
            self.doses[instance_id] = (study_id, report)
        if cursor is not None:
            self.cursor, self.progress = cursor, None
        elif progress is not None:
            self.cursor, self.progress = None, progress
        return []

    def missing_patients(self, orthanc_ids):
        orthanc_ids = set(orthanc_ids)
        missing = orthanc_ids - set(self.patients)
        self.lookups.append((orthanc_ids, missing))
        return missing

    def missing_ids(self, kind, orthanc_ids):
        return set(orthanc_ids) - set(getattr(self, kind))

    def dose_instances(self, orthanc_ids):
        return set(orthanc_ids) & set(self.doses)

    def series_studies(self, orthanc_ids):
        orthanc_ids = set(orthanc_ids)
        self.series_lookups.append(orthanc_ids)
        return {i: self.series[i]['orthanc_study_id']
            for i in orthanc_ids if i in self.series}

    # -- test helpers -------------------------------------------------------
    def content(self):
        "Return a deep copy of the records, to compare stores"
        return copy.deepcopy((self.patients, self.studies, self.series))

    def ids(self):
        return set(self.patients), set(self.studies), set(self.series)

    def copy(self):
        "Return a store with the same content and cursor, no history"
        other = MemoryStore()
        other.patients, other.studies, other.series = self.content()
        other.cursor, other.progress = self.cursor, self.progress
        return other

    def check_integrity(self):
        """Every study has its patient, every series its study, and no
        DICOM UID is there twice"""
        for study in self.studies.values():
            assert study['orthanc_patient_id'] in self.patients, study
        for series in self.series.values():
            assert series['orthanc_study_id'] in self.studies, series
        for records, key in [(self.studies, 'study_instance_uid'),
                (self.series, 'series_instance_uid')]:
            uids = [r[key] for r in records.values() if r.get(key)]
            assert len(uids) == len(set(uids)), key

    def touched(self, start=0):
        "Return the Orthanc IDs written by the saves from number start"
        result = set()
        for call in self.saves[start:]:
            for kind in ['patients', 'studies', 'series']:
                result.update(r['orthanc_id'] for r in call[kind])
        return result


def test_memory_store():
    "The store of these tests behaves as the protocol says"
    store = MemoryStore(fail_on={3})
    store.save(patients=[{'orthanc_id': 'p'}])
    store.save(
        studies=[{'orthanc_id': 's', 'orthanc_patient_id': 'p'}],
        series=[{'orthanc_id': 'a', 'orthanc_study_id': 's'},
            {'orthanc_id': 'b', 'orthanc_study_id': 's'}], cursor=5)
    assert store.missing_patients(['p', 'q']) == {'q'}
    assert store.missing_ids('studies', ['s', 't']) == {'t'}
    assert store.series_studies(['a', 'c']) == {'a': 's'}
    with pytest.raises(StoreFailure):
        store.save(patients=[{'orthanc_id': 'q'}], cursor=6)
    assert store.cursor == 5 and 'q' not in store.patients
    store.save(series=[{'orthanc_id': 'b', 'orthanc_study_id': 's'}],
        replace_series_of=['s'])
    assert set(store.series) == {'b'}
    assert store.cursor == 5
    store.check_integrity()
    progress = ImportProgress(7, 'studies', 3)
    store.save(progress=progress)
    assert (store.cursor, store.progress) == (None, progress)
    store.save(cursor=7)
    assert (store.cursor, store.progress) == (7, None)
    with pytest.raises(AssertionError):
        store.save(patients=[{'orthanc_id': 'p'}, {'orthanc_id': 'p'}])


# -- Orthanc helpers ---------------------------------------------------------
def last_change(server):
    return server.request('GET', '/changes', params={'last': ''}).json()[
        'Last']


def wait_stable(server):
    """Wait until Orthanc has logged the Stable* changes of everything.

    Returns the last change.  Incremental syncs then see a feed that no
    longer grows by itself.
    """
    deadline = time.monotonic() + STABLE_TIMEOUT
    previous = None
    while True:
        unstable = [r['ID'] for kind in ['patients', 'studies', 'series']
            for r in server.request('GET', '/' + kind,
                params={'expand': ''}).json()
            if not r.get('IsStable')]
        last = last_change(server)
        if not unstable and last == previous:
            return last
        previous = None if unstable else last
        if time.monotonic() > deadline:
            raise AssertionError('Orthanc resources still unstable after '
                '%s s: %s' % (STABLE_TIMEOUT, unstable))
        time.sleep(0.2)


_unique = itertools.count(1)


def upload_study(server, patient_id=None, accession=None, n_series=1,
        **kwargs):
    """Upload a study (one instance per series); return its Orthanc IDs.

    Without patient_id, a new patient is made; without accession, a new
    study.
    """
    number = next(_unique)
    patient_id = patient_id or 'NEW-%03d' % number
    accession = accession or 'ACC-%03d' % number
    kwargs.setdefault('patient_name', 'NEW^Patient%03d' % number)
    answers = server.upload_many(make_study(n_series, 1,
            patient_id=patient_id, accession=accession, seed=11, **kwargs))
    return {
        'patient': answers[0]['ParentPatient'],
        'study': answers[0]['ParentStudy'],
        'series': {a['ParentSeries'] for a in answers},
        }


def upload_base(server):
    for patient_id, name, birth_date, accessions in PATIENTS:
        for accession in accessions:
            server.upload_many(make_study(N_SERIES, 1,
                    patient_id=patient_id, patient_name=name,
                    birth_date=birth_date, accession=accession, seed=7))


def orthanc_ids(server):
    "Return the Orthanc IDs of the patients, studies and series"
    return tuple(set(server.request('GET', '/' + kind).json())
        for kind in ['patients', 'studies', 'series'])


NEVER_STABLE = 24 * 3600


def stop_all(servers):
    "Stop the servers together (Orthanc takes seconds to stop)"
    threads = [threading.Thread(target=s.stop) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.fixture(scope='module')
def servers(tmp_path_factory):
    """The real Orthanc servers shared by the module.

    base: PATIENTS, stable; no test modifies it.
    mutable: PATIENTS, never stable (no Stable* changes, the feed holds
        only what the tests upload); for the tests that modify it.
    settling: PATIENTS, stable after a second like a production server
        after its StableAge; for the tests of the Stable* changes.
    replacement: one other study, stable; it replaces base.
    """
    started = {}
    try:
        for name, stable_age in [('base', 1), ('mutable', NEVER_STABLE),
                ('settling', 1), ('replacement', 1)]:
            started[name] = OrthancServer(
                str(tmp_path_factory.mktemp('orthanc-' + name)),
                password=PASSWORD, stable_age=stable_age).start()
        for name in ['base', 'mutable', 'settling']:
            upload_base(started[name])
        upload_study(started['replacement'], 'OTHER-1', n_series=2)
        for name in ['base', 'settling', 'replacement']:
            wait_stable(started[name])
        yield started
    finally:
        stop_all(started.values())


@pytest.fixture
def base(servers):
    return servers['base']


@pytest.fixture
def mutable(servers):
    return servers['mutable']


@pytest.fixture
def settling(servers):
    wait_stable(servers['settling'])
    return servers['settling']


@pytest.fixture
def replacement(servers):
    return servers['replacement']


@pytest.fixture
def connect():
    "Return a function giving a new client (own request count) on a server"
    clients = []

    def connect(server, **kwargs):
        kwargs.setdefault('backoff', 0)
        kwargs.setdefault('timeout', (5, 30))
        client = OrthancClient(server.url, server.user, server.password,
            **kwargs)
        clients.append(client)
        return client
    yield connect
    for client in clients:
        client.close()


def full_import(connect, server, **kwargs):
    "Return a store holding everything server has, and the result"
    store = MemoryStore()
    result = Synchronizer(connect(server), store, **kwargs).run(None)
    return store, result


def listing_requests(count, page_size):
    "Requests to list count items; an exact multiple needs an empty page"
    return count // page_size + 1


#: The lists of IDs that end a first import: patients, studies, series
RECONCILE_REQUESTS = 3


def count_listings(client):
    """Record the listing requests of client: [(collection, since)]"""
    listings = []
    list_ = client._list

    def recorded(collection, since, limit):
        listings.append((collection, since))
        return list_(collection, since, limit)
    client._list = recorded
    return listings


# -- first import ------------------------------------------------------------
def test_defaults():
    assert PAGE_SIZE > 0 and CHANGES_PAGE_SIZE > 0
    result = SyncResult()
    assert (result.full, result.patients, result.studies, result.series,
        result.gone, result.cursor, result.requests, result.errors,
        result.resumed, result.present) == (
        False, 0, 0, 0, 0, 0, 0, [], False, None)
    assert SyncResult().errors is not result.errors


@pytest.mark.parametrize('page_size', [1, 2, 3, 500])
def test_first_import(base, connect, page_size, cursor=None):
    last = last_change(base)
    client = connect(base)
    store = MemoryStore()
    result = Synchronizer(client, store, page_size=page_size).run(cursor)

    assert result.full
    assert (result.patients, result.studies, result.series) == (
        N_PATIENTS, N_STUDIES, N_ALL_SERIES)
    assert (result.gone, result.errors) == (0, [])
    assert result.cursor == store.cursor == last
    assert store.progress is None and not result.resumed
    assert store.ids() == orthanc_ids(base)
    # the patients and studies listed, to flag what is missing
    assert {k: set(v) for k, v in result.present.items()} == dict(
        zip(PHASES[:2], store.ids()))
    store.check_integrity()
    # last change, three listings, the feed since the last change, then
    # the lists of IDs (nothing missing)
    expected = (1 + listing_requests(N_PATIENTS, page_size)
        + listing_requests(N_STUDIES, page_size)
        + listing_requests(N_ALL_SERIES, page_size) + 1
        + RECONCILE_REQUESTS)
    assert result.requests == client.request_count == expected

    # one save per non-empty page, in order, with the progress, then the
    # cursor alone
    kinds = []
    offsets = dict.fromkeys(PHASES, 0)
    for call in store.saves[:-1]:
        kind, = [k for k in PHASES if call[k]]
        assert 0 < len(call[kind]) <= page_size
        assert call['cursor'] is None
        offsets[kind] += len(call[kind])
        assert call['progress'] == ImportProgress(last, kind, offsets[kind])
        kinds.append(kind)
    assert kinds == sorted(kinds, key=['patients', 'studies',
            'series'].index)
    assert kinds.count('patients') == math.ceil(N_PATIENTS / page_size)
    assert kinds.count('studies') == math.ceil(N_STUDIES / page_size)
    assert kinds.count('series') == math.ceil(N_ALL_SERIES / page_size)
    assert store.saves[-1] == {'patients': [], 'studies': [], 'series': [],
        'replace_series_of': [], 'cursor': last, 'progress': None}


def test_first_import_values(base, connect):
    store, _ = full_import(connect, base, page_size=2)
    by_patient_id = {p['patient_id']: p for p in store.patients.values()}
    assert set(by_patient_id) == {p[0] for p in PATIENTS}
    assert by_patient_id['P-003']['name'] == 'MÜLLER, Jörg'
    assert str(by_patient_id['P-001']['birth_date']) == '1980-01-15'
    assert by_patient_id['P-004']['birth_date'] is None
    for patient_id, _, _, accessions in PATIENTS:
        studies = [s for s in store.studies.values()
            if s['orthanc_patient_id']
            == by_patient_id[patient_id]['orthanc_id']]
        assert sorted(s['accession_number'] for s in studies) == accessions
        assert all(s['patient_id'] == patient_id for s in studies)
    for study in store.studies.values():
        series = [s for s in store.series.values()
            if s['orthanc_study_id'] == study['orthanc_id']]
        assert sorted(s['modality'] for s in series) == ['CT', 'MR']
        assert study['number_of_series'] == N_SERIES


def test_no_change_costs_one_request(base, connect):
    store, _ = full_import(connect, base)
    saves = len(store.saves)
    for _ in range(3):
        client = connect(base)
        result = Synchronizer(client, store).run(store.cursor)
        assert result == SyncResult(cursor=store.cursor, requests=1)
        assert client.request_count == 1
    assert len(store.saves) == saves  # nothing written


def test_wrong_password_on_real_orthanc(base):
    client = OrthancClient(base.url, base.user, 'wrong', backoff=0)
    store = MemoryStore()
    for cursor in [None, 10]:
        with pytest.raises(OrthancUnauthorized):
            Synchronizer(client, store).run(cursor)
    assert store.saves == []
    assert client.request_count == 2  # 401 is not retried


# -- interrupted syncs -------------------------------------------------------
# 11 saves with page_size 2: 2 of patients, 3 of studies, 5 of series and
# the cursor; 12 listing requests: 3 of patients (the last one empty), 3
# of studies, 6 of series (the last one empty).  The resumed import lists
# from the offset saved with the last page that went through.
@pytest.mark.parametrize('fail_on, listings', [
    (1, [('patients', 0), ('patients', 2)]),  # nothing saved: from 0
    (2, [('patients', 2)]),
    (3, [('patients', 4)]),  # the patients done: an empty page says so
    (6, [('studies', 5)]),
    (11, [('series', 10)]),  # only the cursor was missing
    ])
def test_interrupted_first_import(base, connect, fail_on, listings):
    reference, _ = full_import(connect, base, page_size=2)
    assert len(reference.saves) == 11
    store = MemoryStore(fail_on={fail_on})
    with pytest.raises(StoreFailure):
        Synchronizer(connect(base), store, page_size=2).run(None)
    assert len(store.saves) == fail_on
    assert store.cursor is None  # the cursor comes with the last save
    if fail_on > 1:
        assert store.progress == store.saves[fail_on - 2]['progress']
    else:
        assert store.progress is None

    # resumed (nothing fails any more) where the last page ended
    client = connect(base)
    listed = count_listings(client)
    result = Synchronizer(client, store, page_size=2).run(
        store.cursor, store.progress)
    assert result.full
    assert result.resumed == (fail_on > 1)
    assert listed[:len(listings)] == listings
    expected = {1: 12, 2: 11, 3: 10, 6: 7, 11: 1}[fail_on]
    assert len(listed) == expected
    # the last change, the listings, the feed, the lists of IDs
    assert result.requests == 1 + expected + 1 + RECONCILE_REQUESTS
    assert store.content() == reference.content()
    assert store.cursor == reference.cursor
    assert store.progress is None
    assert store.ids() == orthanc_ids(base)
    store.check_integrity()
    # nothing is read twice when resumed: each page once
    pages = [c for c in store.saves if c['progress']]
    assert len(pages) == 10 + (fail_on < 11)


@pytest.mark.parametrize('beyond, phase', [
    (1000, 'series'),  # the Orthanc database was replaced since
    (0, 'instances'),  # not a phase
    ])
def test_resume_from_the_start(base, connect, beyond, phase):
    """The progress of an import started at a change beyond the server's
    last one, or that makes no sense: import from the start"""
    reference, _ = full_import(connect, base)
    store = MemoryStore()
    store.save(progress=ImportProgress(reference.cursor + beyond, phase, 3))
    client = connect(base)
    listed = count_listings(client)
    result = Synchronizer(client, store).run(store.cursor, store.progress)
    assert result.full and not result.resumed
    assert [c for c, _ in listed] == list(PHASES)
    assert store.content() == reference.content()
    assert store.cursor == reference.cursor and store.progress is None


def test_interrupted_incremental(mutable, connect):
    start, _ = full_import(connect, mutable)
    new = [upload_study(mutable, n_series=2) for _ in range(3)]
    new_ids = set().union(*(
            {i['patient'], i['study']} | i['series'] for i in new))

    reference = start.copy()
    complete = Synchronizer(connect(mutable), reference,
        changes_page_size=4).run(reference.cursor)
    # 18 changes (per study: NewInstance, NewSeries, NewStudy, NewPatient,
    # NewInstance, NewSeries) in pages of 4: the second study's first
    # NewSeries is on the page before its NewStudy; read for it after the
    # next page was listed, it is not read again for that page
    assert (complete.patients, complete.studies, complete.series) == (
        4, 3, 6)
    assert reference.touched() == new_ids

    store = start.copy()
    store.fail_on = {2}
    with pytest.raises(StoreFailure):
        Synchronizer(connect(mutable), store, changes_page_size=4).run(
            store.cursor)
    first_page = store.saves[0]['cursor']
    assert start.cursor < first_page < reference.cursor
    assert store.cursor == first_page  # the first page is kept

    store.fail_on = set()
    resumed = Synchronizer(connect(mutable), store, changes_page_size=4).run(
        store.cursor)
    assert not resumed.full
    assert resumed.requests < complete.requests  # the first page is done
    assert store.content() == reference.content()
    assert store.cursor == reference.cursor
    assert store.ids() == orthanc_ids(mutable)
    store.check_integrity()
    # what the first page brought is not read again
    assert not (store.touched(2)
        & {s['orthanc_id'] for s in store.saves[0]['studies']})


# -- incremental syncs -------------------------------------------------------
@pytest.mark.parametrize('n', [1, 4])
def test_incremental(mutable, connect, n):
    store, _ = full_import(connect, mutable)
    before = store.content()
    new = [upload_study(mutable, n_series=2) for _ in range(n)]
    new_ids = set().union(*(
            {i['patient'], i['study']} | i['series'] for i in new))

    saves = len(store.saves)
    client = connect(mutable)
    result = Synchronizer(client, store).run(store.cursor)
    assert not result.full
    assert (result.patients, result.studies, result.series) == (n, n, 2 * n)
    assert (result.gone, result.errors) == (0, [])
    # one page of changes, then per study: the study, its series and its
    # patient; nothing depends on the size of the database
    assert result.requests == client.request_count == 1 + 3 * n
    assert result.cursor == store.cursor == last_change(mutable)
    assert len(store.saves) == saves + 1
    assert store.touched(saves) == new_ids
    assert store.ids() == orthanc_ids(mutable)
    store.check_integrity()
    for kind, old, current in zip(['patients', 'studies', 'series'],
            before, store.content()):
        assert {k: v for k, v in current.items() if k in old} == old, kind
    for study in new:
        record = store.studies[study['study']]
        assert record['modalities'] == 'CT, MR'
        assert record['number_of_series'] == 2
        assert record['number_of_instances'] == 2

    client = connect(mutable)
    result = Synchronizer(client, store).run(store.cursor)
    assert result.requests == client.request_count == 1


def test_stable_changes(settling, connect):
    """Orthanc logs Stable* changes once nothing arrived for StableAge:
    they read again the new resources (and the patient given a new study),
    nothing else."""
    store, _ = full_import(connect, settling)
    patient, = [p for p in store.patients.values()
        if p['patient_id'] == 'P-002']
    old = upload_study(settling, 'P-002', patient_name='ROE^Jane',
        birth_date='19750302')
    new = upload_study(settling)
    # at once: the New* changes (and maybe some Stable* ones)
    result = Synchronizer(connect(settling), store).run(store.cursor)
    assert (result.studies, result.series) == (2, 2)
    assert result.patients in (1, 2)
    assert store.ids() == orthanc_ids(settling)

    wait_stable(settling)
    saves = len(store.saves)
    client = connect(settling)
    result = Synchronizer(client, store).run(store.cursor)
    assert store.touched(saves) <= {
        patient['orthanc_id'], old['study'], new['patient'], new['study']
        } | old['series'] | new['series']
    assert result.requests <= 1 + 3 + 3
    assert store.ids() == orthanc_ids(settling)
    store.check_integrity()

    client = connect(settling)
    result = Synchronizer(client, store).run(store.cursor)
    assert result.requests == client.request_count == 1


def test_study_added_to_existing_patient(mutable, connect):
    store, _ = full_import(connect, mutable)
    patient, = [p for p in store.patients.values()
        if p['patient_id'] == 'P-002']
    n_patients = len(store.patients)
    new = upload_study(mutable, 'P-002', patient_name='ROE^Jane',
        birth_date='19750302', n_series=2)
    assert new['patient'] == patient['orthanc_id']

    client = connect(mutable)
    result = Synchronizer(client, store).run(store.cursor)
    assert (result.patients, result.studies, result.series) == (0, 1, 2)
    # the change page, the study and its series: the store has the patient
    assert result.requests == 3
    assert store.lookups[-1] == ({patient['orthanc_id']}, set())
    assert store.studies[new['study']]['orthanc_patient_id'] == (
        patient['orthanc_id'])
    assert len(store.patients) == n_patients
    assert new['series'] <= set(store.series)
    store.check_integrity()
    assert store.ids() == orthanc_ids(mutable)


# NewInstance, NewSeries, NewStudy, NewPatient cut in pages: how many
# times the study and the patient are read, and whether the first page
# reading the study has the patient's change
@pytest.mark.parametrize('changes_page_size, study_reads, patient_reads, '
    'split', [
        # the NewSeries page reads its study, not read again for the
        # NewStudy of the next page (listed before that read)
        (1, 1, 2, True),
        (2, 1, 2, True),
        (3, 1, 2, True),  # the study with its series, then NewPatient
        (5, 1, 1, False),
        (1000, 1, 1, False),
        ])
def test_new_patient_over_change_pages(mutable, connect, changes_page_size,
        study_reads, patient_reads, split):
    """Orthanc logs NewSeries and NewStudy before NewPatient: a page may
    hold the series or the study without its patient, who must then be
    saved with it."""
    store, _ = full_import(connect, mutable)
    new = upload_study(mutable)
    saves = len(store.saves)
    result = Synchronizer(connect(mutable), store,
        changes_page_size=changes_page_size).run(store.cursor)
    calls = store.saves[saves:]
    assert len(calls) == math.ceil(4 / changes_page_size)
    assert (result.studies, result.patients) == (study_reads, patient_reads)
    assert result.series == study_reads
    first = [c for c in calls if c['studies']][0]
    assert [p['orthanc_id'] for p in first['patients']] == [new['patient']]
    # one question per page; the study's page asks for its patient
    asked = store.lookups[-len(calls):][calls.index(first)]
    if split:
        assert asked == ({new['patient']}, {new['patient']})
    else:
        assert asked == (set(), set())
    assert store.touched(saves) == {new['patient'], new['study']} | (
        new['series'])
    cursors = [c['cursor'] for c in calls]
    assert None not in cursors and cursors == sorted(set(cursors))
    assert store.cursor == result.cursor == last_change(mutable)
    store.check_integrity()


def test_study_uploaded_during_first_import(mutable, connect):
    "What arrives while listing comes with the changes since the start"
    client = connect(mutable)
    list_patients = client.list_patients
    added = []

    def list_and_upload(*args, **kwargs):
        items = list_patients(*args, **kwargs)
        if not added:
            added.append(upload_study(mutable))
        return items
    client.list_patients = list_and_upload
    store = MemoryStore()
    result = Synchronizer(client, store, page_size=2).run(None)
    assert result.full
    new, = added
    assert new['study'] in store.studies
    assert new['series'] <= set(store.series)
    assert store.ids() == orthanc_ids(mutable)
    assert store.cursor == result.cursor == last_change(mutable)
    store.check_integrity()


def test_deletion_during_first_import(mutable, connect):
    """The first import lists by offset: a deletion while listing shifts
    the next pages and skips a resource that the changes feed never brings
    back; the lists of IDs that end the import bring it"""
    client = connect(mutable)
    list_patients = client.list_patients

    def list_and_delete(*args, **kwargs):
        items = list_patients(*args, **kwargs)
        if kwargs.get('since') == 0:
            # the patient just read is deleted (with its studies)
            mutable.request('DELETE', '/patients/%s' % items[0]['ID'])
        return items
    client.list_patients = list_and_delete
    store = MemoryStore()
    try:
        Synchronizer(client, store, page_size=1).run(None)
        present = orthanc_ids(mutable)
    finally:
        upload_base(mutable)  # put back what was deleted
    # Deletions are not synchronized, but everything still in Orthanc must
    # be in the store, the patient after the deleted one included
    for ids, kept in zip(present, store.ids()):
        assert ids <= kept
    store.check_integrity()


def test_reconcile_imports_what_is_missing(base, connect):
    "The lists of IDs bring back what the store lacks, nothing else"
    reference, _ = full_import(connect, base)
    store = reference.copy()
    by_patient_id = {p['patient_id']: p['orthanc_id']
        for p in store.patients.values()}
    # P-001 (two studies) is lost whole, a series of P-002's study alone
    lost = by_patient_id['P-001']
    del store.patients[lost]
    lost_studies = {k for k, v in store.studies.items()
        if v['orthanc_patient_id'] == lost}
    for study_id in lost_studies:
        del store.studies[study_id]
    for series_id, series in list(store.series.items()):
        if series['orthanc_study_id'] in lost_studies:
            del store.series[series_id]
    other, = [k for k, v in store.studies.items()
        if v['orthanc_patient_id'] == by_patient_id['P-002']]
    lone = sorted(k for k, v in store.series.items()
        if v['orthanc_study_id'] == other)[0]
    del store.series[lone]
    assert len(lost_studies) == 2

    client = connect(base)
    result = Synchronizer(client, store).reconcile()
    assert not result.full
    assert (result.patients, result.studies, result.series) == (1, 3, 6)
    assert (result.errors, result.gone) == ([], 0)
    # three lists of IDs, the patient, the two studies with their series,
    # the lone series (for its study) and its study with its series
    assert result.requests == client.request_count == 3 + 1 + 2 * 2 + 3
    # the patients and studies listed, to flag what is missing
    assert {k: set(v) for k, v in result.present.items()} == dict(
        zip(PHASES[:2], store.ids()))
    # a study read by ID has its summary: the listing's has not
    for records in [store.studies, reference.studies]:
        for record in records.values():
            for key in ['modalities', 'number_of_series',
                    'number_of_instances']:
                record.pop(key, None)
    assert store.content() == reference.content()
    assert store.cursor == reference.cursor
    assert all(c['cursor'] is None and c['progress'] is None
        for c in store.saves)
    store.check_integrity()

    # nothing missing: the lists only, nothing written
    saves = len(store.saves)
    client = connect(base)
    result = Synchronizer(client, store).reconcile()
    assert result.requests == client.request_count == 3
    assert len(store.saves) == saves


# -- a replaced Orthanc database ---------------------------------------------
def test_cursor_beyond_last_change(base, connect):
    reference, _ = full_import(connect, base)
    store = MemoryStore()
    client = connect(base)
    result = Synchronizer(client, store).run(reference.cursor + 1000)
    assert result.full
    assert store.content() == reference.content()
    assert result.cursor == store.cursor == reference.cursor
    # the page of changes that revealed it, then a whole first import
    assert result.requests == client.request_count == 1 + (
        1 + 3 + 1 + RECONCILE_REQUESTS)


def test_replaced_orthanc(base, replacement, connect):
    "A store following base sees its Orthanc replaced by another one"
    store, _ = full_import(connect, base)
    other = orthanc_ids(replacement)
    last = last_change(replacement)
    assert last < store.cursor  # a new database starts again at 1

    result = Synchronizer(connect(replacement), store).run(store.cursor)
    assert result.full
    assert (result.patients, result.studies, result.series) == (1, 1, 2)
    assert result.cursor == store.cursor == last
    for ids, kept in zip(other, store.ids()):
        assert ids <= kept
    client = connect(replacement)
    result = Synchronizer(client, store).run(store.cursor)
    assert not result.full and result.requests == 1

    # deleting everything keeps the sequence numbers: no full import
    replacement.clear()
    assert last_change(replacement) == last
    again = upload_study(replacement)
    result = Synchronizer(connect(replacement), store).run(store.cursor)
    assert not result.full
    assert (result.patients, result.studies, result.series) == (1, 1, 1)
    assert again['study'] in store.studies
    # deletions are not synchronized
    assert other[1] <= set(store.studies)


# -- resources deleted before they are read ----------------------------------
@pytest.mark.parametrize('method, deleted, gone', [
    # between the change and the study: the study, then its series (read
    # for its NewSeries change, the study being gone)
    ('get_changes', 'study', 2),
    # between the study and its series
    ('get_study', 'study', 2),
    # the patient, with both studies and their three series
    ('get_changes', 'patient', 6),
    ])
def test_deleted_before_fetch(mutable, connect, monkeypatch, method,
        deleted, gone):
    store, _ = full_import(connect, mutable)
    patient_id = 'GONE-%03d' % next(_unique)
    one = upload_study(mutable, patient_id)
    two = upload_study(mutable, patient_id, n_series=2)
    assert one['patient'] == two['patient']
    client = connect(mutable)
    original = getattr(client, method)

    def read_then_delete(*args, **kwargs):
        answer = original(*args, **kwargs)
        if method == 'get_changes' or args[0] == one['study']:
            mutable.request('DELETE', '/%s/%s' % (
                    'studies' if deleted == 'study' else 'patients',
                    one[deleted]))
        return answer
    monkeypatch.setattr(client, method, read_then_delete)

    result = Synchronizer(client, store).run(store.cursor)
    assert result.errors == []
    assert result.gone == gone
    assert one['study'] not in store.studies
    assert not (one['series'] & set(store.series))
    if deleted == 'study':
        assert (result.patients, result.studies, result.series) == (1, 1, 2)
        assert two['study'] in store.studies
        assert two['series'] <= set(store.series)
        assert one['patient'] in store.patients
    else:
        assert (result.patients, result.studies, result.series) == (0, 0, 0)
        assert two['study'] not in store.studies
        assert one['patient'] not in store.patients
    store.check_integrity()
    assert store.ids() == orthanc_ids(mutable)
    # the changes are done with: the cursor moved on
    assert store.cursor == result.cursor
    assert result.cursor >= store.saves[-1]['cursor'] > 0


def test_series_arriving_after_its_study(mutable, connect):
    """A series added to a stored study reads the study again at once,
    without waiting for Orthanc's StableStudy change (which never comes if
    Orthanc restarts within StableAge; the mutable server is never
    stable)"""
    number = next(_unique)
    first, second = make_study(2, 1, patient_id='PART-%03d' % number,
        accession='PART-%03d' % number, seed=11)
    study_id = mutable.upload(first)['ParentStudy']
    store, _ = full_import(connect, mutable)
    assert store.studies[study_id]['number_of_series'] == 1
    series_id = mutable.upload(second)['ParentSeries']
    client = connect(mutable)
    result = Synchronizer(client, store).run(store.cursor)
    assert series_id in store.series
    assert store.studies[study_id]['number_of_series'] == 2
    assert (result.patients, result.studies, result.series) == (0, 1, 2)
    # the changes (NewInstance, NewSeries), the series for its study,
    # the study and its series
    assert result.requests == client.request_count == 4
    store.check_integrity()
    assert store.ids() == orthanc_ids(mutable)

    # Its NewSeries is done with: the next sync reads nothing
    client = connect(mutable)
    assert Synchronizer(client, store).run(store.cursor).requests == 1


def test_anonymized_copies_are_skipped(mutable, connect):
    """A copy made by /anonymize (a research copy on its way) never becomes
    a record: not from the change feed, a first import nor a
    reconciliation"""
    store, _ = full_import(connect, mutable)
    source = upload_study(mutable, n_series=2)
    copy = mutable.request('POST', '/studies/%s/anonymize' % source['study'],
        json={}).json()
    try:
        copy_ids = {copy['ID'], copy['PatientID']} | {s['ID'] for s in
            mutable.request('GET', '/studies/%s/series' % copy['ID']).json()}
        assert len(copy_ids) == 4
        Synchronizer(connect(mutable), store).run(store.cursor)
        assert source['study'] in store.studies
        assert not copy_ids & set().union(*store.ids())
        fresh, _ = full_import(connect, mutable)
        assert source['study'] in fresh.studies
        assert not copy_ids & set().union(*fresh.ids())
        Synchronizer(connect(mutable), store).reconcile()
        assert not copy_ids & set().union(*store.ids())
        store.check_integrity()
    finally:
        mutable.request('DELETE', '/studies/%s' % copy['ID'])


# -- fault injection ---------------------------------------------------------
def change(seq, resource_type, orthanc_id, change_type=None):
    return {
        'Seq': seq,
        'ChangeType': change_type or 'New' + resource_type,
        'ResourceType': resource_type,
        'ID': orthanc_id,
        'Date': '20240101T120000',
        }


def fake_uid(root, orthanc_id):
    return '%s.%d' % (root, sum(ord(c) << i for i, c in enumerate(orthanc_id)))


def patient_json(orthanc_id, patient_id):
    return {
        'ID': orthanc_id, 'Type': 'Patient', 'IsStable': True,
        'LastUpdate': '20240101T120000',
        'MainDicomTags': {'PatientID': patient_id,
            'PatientName': 'DOE^John', 'PatientBirthDate': '19800115',
            'PatientSex': 'M'},
        'Studies': [],
        }


def study_json(orthanc_id, patient, series=()):
    return {
        'ID': orthanc_id, 'Type': 'Study', 'IsStable': True,
        'LastUpdate': '20240101T120000', 'ParentPatient': patient,
        'MainDicomTags': {'StudyInstanceUID': fake_uid('1.2.3', orthanc_id),
            'StudyDate': '20240101', 'AccessionNumber': orthanc_id},
        'PatientMainDicomTags': {'PatientID': 'PID-' + patient},
        'Series': list(series),
        }


def series_json(orthanc_id, study):
    return {
        'ID': orthanc_id, 'Type': 'Series', 'IsStable': True,
        'LastUpdate': '20240101T120000', 'ParentStudy': study,
        'MainDicomTags': {'SeriesInstanceUID': fake_uid('1.2.4', orthanc_id),
            'Modality': 'CT', 'SeriesNumber': '1'},
        'Instances': ['i1', 'i2'],
        }


@pytest.fixture
def fake():
    """A fake Orthanc whose feed after cursor 5 holds two studies of one
    patient: study-a and study-b (one series each), up to cursor 9"""
    with FakeOrthanc() as server:
        server.set_json('/changes', {
                'Changes': [
                    change(6, 'Study', 'study-a'),
                    change(7, 'Patient', 'patient'),
                    change(8, 'Series', 'series-b'),
                    change(9, 'Study', 'study-b'),
                    ],
                'Done': True, 'Last': 9})
        server.set_json('/patients/patient',
            patient_json('patient', 'PID-1'))
        for name in ['a', 'b']:
            server.set_json('/studies/study-' + name, study_json(
                    'study-' + name, 'patient', ['series-' + name]))
            server.set_json('/studies/study-%s/series' % name,
                [series_json('series-' + name, 'study-' + name)])
        yield server


def fake_client(fake, **kwargs):
    kwargs.setdefault('retries', 0)
    kwargs.setdefault('backoff', 0)
    kwargs.setdefault('timeout', (2, 0.5))
    return OrthancClient(fake.url, 'orthanc', PASSWORD, **kwargs)


def test_fake_feed(fake):
    "The fake feed, without faults"
    store = MemoryStore()
    client = fake_client(fake)
    result = Synchronizer(client, store).run(5)
    assert (result.patients, result.studies, result.series) == (1, 2, 2)
    assert (result.gone, result.errors, result.cursor) == (0, [], 9)
    assert result.requests == client.request_count == 1 + 2 * 2 + 1
    assert set(store.studies) == {'study-a', 'study-b'}
    assert store.cursor == 9
    store.check_integrity()


def test_series_changes(fake):
    """A series change reads its study unless the page has it: the store
    tells the study of a known series, Orthanc the one of a new series;
    the NewSeries of a known series is done with"""
    store = MemoryStore()
    Synchronizer(fake_client(fake), store).run(5)
    assert set(store.series) == {'series-a', 'series-b'}
    fake.set_json('/changes', {
            'Changes': [
                change(10, 'Series', 'series-a', 'NewSeries'),
                change(11, 'Series', 'series-b', 'StableSeries'),
                change(12, 'Series', 'series-c', 'NewSeries'),
                change(13, 'Instance', 'i3'),
                ],
            'Done': True, 'Last': 13})
    fake.set_json('/series/series-c', series_json('series-c', 'study-a'))
    fake.set_json('/studies/study-a/series', [
            series_json('series-a', 'study-a'),
            series_json('series-c', 'study-a')])
    fake.requests.clear()
    client = fake_client(fake)
    result = Synchronizer(client, store).run(9)
    assert (result.patients, result.studies, result.series) == (0, 2, 3)
    assert (result.gone, result.errors, result.cursor) == (0, [], 13)
    # the changes, series-c for its study, study-b and study-a with
    # their series
    assert result.requests == client.request_count == 1 + 1 + 2 * 2
    assert fake.count('/series/series-a') == 0
    assert fake.count('/series/series-b') == 0
    assert store.series_lookups[-1] == {'series-a', 'series-b', 'series-c'}
    assert set(store.series) == {'series-a', 'series-b', 'series-c'}
    assert store.saves[-1]['replace_series_of'] == ['study-b', 'study-a']
    store.check_integrity()


def test_study_over_two_change_pages(fake):
    """A study whose changes straddle two pages is read once: the next
    page is listed before the study is read, so that read covers it; a
    change on a page listed after the read reads the study again"""
    fake.set('/changes',
        Reply(200, {'Changes': [change(6, 'Series', 'series-a')],
                'Done': False, 'Last': 6}),
        Reply(200, {'Changes': [change(7, 'Study', 'study-a')],
                'Done': False, 'Last': 7}),
        Reply(200, {'Changes': [
                    change(8, 'Study', 'study-a', 'StableStudy')],
                'Done': True, 'Last': 8}))
    fake.set_json('/series/series-a', series_json('series-a', 'study-a'))
    store = MemoryStore()
    client = fake_client(fake)
    result = Synchronizer(client, store, changes_page_size=1).run(5)
    paths = [r.path for r in fake.requests]
    # the second page is listed before the study is read
    assert paths.index('/changes', 1) < paths.index('/studies/study-a')
    # read for the NewSeries, not for the NewStudy, again for the
    # StableStudy (listed after the first read)
    assert fake.count('/studies/study-a') == 2
    assert (result.studies, result.series, result.patients) == (2, 2, 1)
    # three pages of changes, series-a for its study, the study and its
    # series twice, the patient
    assert result.requests == client.request_count == 3 + 1 + 2 * 2 + 1
    assert [c['cursor'] for c in store.saves] == [6, 7, 8]
    assert store.cursor == result.cursor == 8
    store.check_integrity()


@pytest.mark.parametrize('status', [500, 503])
def test_next_change_page_failing(fake, status):
    """The next page is listed before a page is applied: when that fails,
    the page is still saved, then the sync stops"""
    fake.set('/changes',
        Reply(200, {'Changes': [change(6, 'Study', 'study-a')],
                'Done': False, 'Last': 6}),
        Reply(status, {}))
    store = MemoryStore()
    with pytest.raises(OrthancError):
        Synchronizer(fake_client(fake), store,
            changes_page_size=1).run(5)
    assert set(store.studies) == {'study-a'}
    assert store.cursor == 6


BAD_STUDY = {
    'truncated JSON': Reply(200, '{"ID": "study-a", "MainDicomTa'),
    'not JSON': Reply(200, '<html>proxy error</html>',
        content_type='text/html'),
    'JSON list': Reply(200, []),
    'JSON null': Reply(200, 'null'),
    'empty object': Reply(200, {}),
    'no ID': Reply(200, {'MainDicomTags': {'StudyInstanceUID': '1.2'}}),
    'no StudyInstanceUID': Reply(200, {'ID': 'study-a',
            'MainDicomTags': {}}),
    'tags not an object': Reply(200, {'ID': 'study-a',
            'MainDicomTags': 'garbage'}),
    }


@pytest.mark.parametrize('reply', list(BAD_STUDY.values()),
    ids=list(BAD_STUDY))
def test_bad_study_is_reported(fake, reply):
    fake.set('/studies/study-a', reply)
    store = MemoryStore()
    result = Synchronizer(fake_client(fake), store).run(5)
    key, reason = result.errors[0]
    assert len(result.errors) == 1
    assert key == 'study-a'
    assert reason
    assert PASSWORD not in reason
    # the rest is imported and the feed goes on
    assert (result.patients, result.studies, result.series) == (1, 1, 1)
    assert set(store.studies) == {'study-b'}
    assert set(store.series) == {'series-b'}
    assert result.cursor == store.cursor == 9
    assert result.gone == 0


@pytest.mark.parametrize('path', [
        '/studies/study-a', '/studies/study-a/series', '/patients/patient'])
def test_server_error_stops_before_the_page(fake, path):
    "A 5xx may pass: the page is not saved so nothing is skipped for good"
    fake.set(path, Reply(500, orthanc_error(500, 'Internal error')))
    store = MemoryStore()
    with pytest.raises(OrthancBadAnswer):
        Synchronizer(fake_client(fake), store).run(5)
    assert store.cursor is None
    assert store.studies == {}


@pytest.mark.parametrize('reply', [
    Reply(200, '[{"ID": "series-a", "Par'),
    Reply(200, {'ID': 'series-a'}),
    Reply(200, [[1]]),
    ], ids=['truncated', 'object', 'list of lists'])
def test_bad_study_series_is_reported(fake, reply):
    fake.set('/studies/study-a/series', reply)
    store = MemoryStore()
    result = Synchronizer(fake_client(fake), store).run(5)
    assert [key for key, _ in result.errors] == ['study-a']
    assert set(store.studies) == {'study-b'}
    assert store.cursor == 9


def test_bad_series_item_is_reported(fake):
    "A series without ID is skipped, its study and the others are kept"
    fake.set_json('/studies/study-a/series', [
            series_json('series-a', 'study-a'), {'Type': 'Series'}])
    store = MemoryStore()
    result = Synchronizer(fake_client(fake), store).run(5)
    # reported with the study it belongs to
    assert [key for key, _ in result.errors] == ['study-a']
    assert set(store.studies) == {'study-a', 'study-b'}
    assert set(store.series) == {'series-a', 'series-b'}


@pytest.mark.parametrize('reply', [
    Reply(200, '{"ID'), Reply(200, {}), Reply(200, []),
    ], ids=['truncated', 'empty object', 'list'])
def test_bad_patient_is_reported(fake, reply):
    fake.set('/patients/patient', reply)
    store = MemoryStore()
    result = Synchronizer(fake_client(fake), store).run(5)
    assert [key for key, _ in result.errors] == ['patient']
    assert set(store.studies) == {'study-a', 'study-b'}
    assert store.patients == {}
    assert store.cursor == 9


def test_bad_item_in_first_import(fake):
    fake.set_json('/changes', {'Changes': [], 'Done': True, 'Last': 4})
    # the listing, then the list of IDs that ends the import
    fake.set('/patients', Reply(200, [patient_json('patient', 'PID-1')]),
        Reply(200, ['patient']))
    fake.set('/studies', Reply(200, [
                study_json('study-a', 'patient'),
                {'ID': 'study-bad', 'MainDicomTags': {}},
                study_json('study-b', 'patient')]),
        Reply(200, ['study-a', 'study-bad', 'study-b']))
    fake.set('/series', Reply(200, [series_json('series-a', 'study-a'),
                series_json('series-b', 'study-b')]),
        Reply(200, ['series-a', 'series-b']))
    store = MemoryStore()
    result = Synchronizer(fake_client(fake), store).run(None)
    assert result.full
    # reported once: the IDs reported are not read again by ID
    assert [key for key, _ in result.errors] == ['study-bad']
    assert fake.count('/studies/study-bad') == 0
    assert (result.patients, result.studies, result.series) == (1, 2, 2)
    assert set(store.studies) == {'study-a', 'study-b'}
    assert store.cursor == result.cursor == 4


@pytest.mark.parametrize('path, cursor', [
    ('/changes', 5),
    ('/changes', None),
    ('/studies/study-b', 5),
    ('/studies/study-a/series', 5),
    ('/patients/patient', 5),
    ])
@pytest.mark.parametrize('status', [401, 403])
def test_unauthorized_stops_the_sync(fake, path, cursor, status):
    fake.set(path, status=status)
    store = MemoryStore()
    client = fake_client(fake, retries=3)
    with pytest.raises(OrthancUnauthorized) as info:
        Synchronizer(client, store).run(cursor)
    assert info.value.status == status
    assert PASSWORD not in str(info.value)
    # nothing of the page is written, the cursor stays
    assert store.saves == [] and store.cursor is None
    assert fake.count(path) == 1  # not retried


@pytest.mark.parametrize('path, cursor', [
    ('/changes', 5),
    ('/changes', None),
    ('/studies/study-a', 5),
    ('/patients/patient', 5),
    ])
def test_echoed_credentials_stop_nowhere(fake, caplog, path, cursor):
    """A server that echoes the request headers in its errors: the error
    that stops the sync and the log hold no form of the credentials"""
    caplog.set_level(logging.DEBUG)
    fake.set(path, status=500, echo=True)
    with pytest.raises(OrthancBadAnswer) as info:
        Synchronizer(fake_client(fake), MemoryStore()).run(cursor)
    basic = base64.b64encode(('orthanc:' + PASSWORD).encode()).decode()
    for text in [str(info.value), caplog.text]:
        assert PASSWORD not in text
        assert basic[:6] not in text
    assert 'Basic ***' in str(info.value)


def test_wrong_credentials():
    with FakeOrthanc(credentials=('orthanc', 'right')) as server:
        store = MemoryStore()
        with pytest.raises(OrthancUnauthorized):
            Synchronizer(fake_client(server), store).run(5)
        assert store.saves == []


@pytest.mark.parametrize('path, cursor', [
    ('/changes', 5),
    ('/changes', None),
    ('/studies/study-b', 5),
    ('/studies/study-b/series', 5),
    ('/patients/patient', 5),
    ])
def test_timeout_stops_the_sync(fake, path, cursor):
    fake.set(path, delay=1.5)
    store = MemoryStore()
    client = fake_client(fake, retries=3)
    with pytest.raises(OrthancTimeout):
        Synchronizer(client, store).run(cursor)
    assert store.saves == [] and store.cursor is None
    assert fake.count(path) == 1  # a read timeout is not retried


def test_retried_then_imported(fake):
    "A 503 on one study is retried and the sync goes through"
    fake.set('/studies/study-a', Reply(503), Reply(503),
        Reply(200, study_json('study-a', 'patient', ['series-a'])))
    store = MemoryStore()
    client = fake_client(fake, retries=3)
    result = Synchronizer(client, store).run(5)
    assert result.errors == []
    assert set(store.studies) == {'study-a', 'study-b'}
    assert result.requests == client.request_count == 1 + 2 * 2 + 1 + 2


def test_not_found_is_gone(fake):
    fake.set('/studies/study-a', status=404)
    fake.set('/patients/patient', status=404)
    store = MemoryStore()
    result = Synchronizer(fake_client(fake), store).run(5)
    assert result.gone == 2
    assert result.errors == []
    assert set(store.studies) == {'study-b'}
    assert store.cursor == 9


def test_changes_paging(fake):
    "Pages of the feed are followed while Done is false"
    page = {'Changes': [change(6, 'Study', 'study-a')], 'Done': False,
        'Last': 6}
    fake.set('/changes',
        Reply(200, page),
        Reply(200, {'Changes': [change(7, 'Instance', 'i1')],
                'Done': False, 'Last': 7}),
        Reply(200, {'Changes': [change(8, 'Study', 'study-b')],
                'Done': True, 'Last': 8}))
    store = MemoryStore()
    result = Synchronizer(fake_client(fake), store,
        changes_page_size=1).run(5)
    assert [c['cursor'] for c in store.saves] == [6, 7, 8]
    assert result.cursor == store.cursor == 8
    assert [r.query['since'] for r in fake.requests
        if r.path == '/changes'] == [['5'], ['6'], ['7']]
    assert set(store.studies) == {'study-a', 'study-b'}
    # study-b's patient is not in the store: fetched with it
    assert set(store.patients) == {'patient'}


# -- answers that do not advance (a caching proxy) ---------------------------
STUCK_PAGE = {'Changes': [{
            'Seq': 6, 'ChangeType': 'NewStudy', 'ResourceType': 'Study',
            'ID': 'study-a', 'Date': '20240101T120000'}],
    'Done': False, 'Last': 6}


def test_feed_that_never_advances(fake):
    """A proxy answering the same page whatever 'since' says: the page is
    applied once, the next one is refused, the sync stops (it asked 227
    times in 10 s and counting before)"""
    fake.set_json('/changes', STUCK_PAGE)
    store = MemoryStore()
    client = fake_client(fake)
    with pytest.raises(OrthancStalled) as info:
        Synchronizer(client, store, changes_page_size=1).run(5)
    assert fake.count('/changes') == 2
    assert 'did not advance' in str(info.value)
    assert 'after 6' in str(info.value)
    # what the first page brought is kept, with its cursor
    assert set(store.studies) == {'study-a'}
    assert store.cursor == 6
    # the next sync asks once
    fake.requests.clear()
    with pytest.raises(OrthancStalled):
        Synchronizer(fake_client(fake), store, changes_page_size=1).run(6)
    assert fake.count('/changes') == 1
    assert store.cursor == 6


@pytest.mark.parametrize('second', [
    # Last goes backwards
    {'Changes': [change(3, 'Study', 'study-b')], 'Done': False, 'Last': 3},
    # a change at or before since
    {'Changes': [change(6, 'Study', 'study-b'), change(7, 'Study', 'x')],
        'Done': True, 'Last': 7},
    # an empty page that is not the last
    {'Changes': [], 'Done': False, 'Last': 6},
    {'Changes': [], 'Done': False, 'Last': 9},
    ], ids=['backwards', 'old change', 'empty not done', 'empty ahead'])
def test_next_change_page_not_after(fake, second):
    fake.set('/changes', Reply(200, STUCK_PAGE), Reply(200, second))
    store = MemoryStore()
    with pytest.raises(OrthancStalled):
        Synchronizer(fake_client(fake), store, changes_page_size=1).run(5)
    assert fake.count('/changes') == 2
    assert store.cursor == 6
    assert 'x' not in store.studies


def test_first_change_page_empty_not_done(fake):
    fake.set_json('/changes', {'Changes': [], 'Done': False, 'Last': 5})
    store = MemoryStore()
    with pytest.raises(OrthancStalled):
        Synchronizer(fake_client(fake), store).run(5)
    assert fake.count('/changes') == 1
    assert store.saves == []


def listing(fake, kind, pages):
    "Set the listing of kind to answer pages, then its list of IDs"
    ids = [item['ID'] for page in pages for item in page]
    fake.set('/' + kind, *[Reply(200, page) for page in pages],
        Reply(200, ids))


@pytest.mark.parametrize('kind', ['patients', 'studies', 'series'])
def test_listing_that_never_advances(fake, kind):
    """A first import whose listing answers the same full page whatever
    the offset stops at the second page (it listed forever before)"""
    fake.set_json('/changes', {'Changes': [], 'Done': True, 'Last': 4})
    items = {
        'patients': [patient_json('p1', 'A'), patient_json('p2', 'B')],
        'studies': [study_json('s1', 'p'), study_json('s2', 'p')],
        'series': [series_json('r1', 's'), series_json('r2', 's')],
        }[kind]
    for other in PHASES:
        fake.set_json('/' + other, [])
    fake.set_json('/' + kind, items)
    store = MemoryStore()
    with pytest.raises(OrthancStalled) as info:
        Synchronizer(fake_client(fake), store, page_size=2).run(None)
    assert 'same page of %s' % kind in str(info.value)
    assert fake.count('/' + kind) == 2
    # the first page is saved with its progress: the next sync resumes
    assert store.progress == ImportProgress(4, kind, 2)
    assert store.cursor is None


def test_listing_that_ignores_limit(fake):
    fake.set_json('/changes', {'Changes': [], 'Done': True, 'Last': 4})
    fake.set_json('/patients', [patient_json('p%d' % i, 'P%d' % i)
            for i in range(3)])
    store = MemoryStore()
    with pytest.raises(OrthancStalled) as info:
        Synchronizer(fake_client(fake), store, page_size=2).run(None)
    assert 'did not page the list of patients' in str(info.value)
    assert fake.count('/patients') == 1
    assert store.saves == []


def test_listing_shifted_by_a_deletion_goes_on(fake):
    """A page that overlaps the previous one (a deletion meanwhile) is no
    stall: only the same full page again is"""
    fake.set_json('/changes', {'Changes': [], 'Done': True, 'Last': 4})
    a, b, c = (patient_json('p%d' % i, 'P%d' % i) for i in range(3))
    listing(fake, 'patients', [[a, b], [b, c], [c]])
    fake.set('/studies', Reply(200, []), Reply(200, []))
    fake.set('/series', Reply(200, []), Reply(200, []))
    store = MemoryStore()
    result = Synchronizer(fake_client(fake), store, page_size=2).run(None)
    assert set(store.patients) == {'p0', 'p1', 'p2'}
    assert result.cursor == store.cursor == 4
