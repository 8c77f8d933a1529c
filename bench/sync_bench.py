# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Benchmark of the Orthanc sync against a real Orthanc.

Prints figures, never asserts on them.  Usage (from the repository root)::

    python -m bench.sync_bench --studies 1000 [--new 10 | --new-percent 1]
        [--page-size 500] [--json]

The database is chosen as for the Tryton tests: ``TRYTOND_DATABASE_URI``
(``sqlite://`` by default) and ``DB_NAME`` (``:memory:`` on SQLite), with
``DB_CACHE`` optional.  See bench/README.md.
"""
import argparse
import collections
import cProfile
import datetime as dt
import functools
import itertools
import json
import os
import pstats
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import requests
from sql import Column, Literal, Table
from sql.aggregate import Count, Sum
from trytond import backend
from trytond.pool import Pool
from trytond.tests.test_tryton import (
    DB_NAME, activate_module, db_exist, drop_db)
from trytond.transaction import Transaction

from trytond.modules.health_orthanc import mapping
from trytond.modules.health_orthanc import server as server_module
from trytond.modules.health_orthanc import sync as sync_module
from trytond.modules.health_orthanc.orthanc_client import OrthancClient
from trytond.modules.health_orthanc.tests.dicom_samples import (
    make_instance, random_patients)
from trytond.modules.health_orthanc.tests.orthanc_server import OrthancServer

# SQLite cannot alter constraints: harmless warnings of the activation
warnings.filterwarnings('ignore', category=UserWarning,
    module=r'trytond\.backend\.sqlite\.table')

MODALITIES = ['CT', 'MR', 'CR', 'DX', 'US', 'MG', 'NM', 'PT']
BODY_PARTS = ['HEAD', 'CHEST', 'ABDOMEN', 'KNEE', 'HAND', None]
QUIET_SECONDS = 3  # Orthanc's StableAge (1 s) plus margin
STABLE_TIMEOUT = 300


# -- instrumentation ---------------------------------------------------------
class Counters:
    "SQL statements and HTTP requests (with their time) of this process"
    sql = 0
    #: SQL statements by their first word (SELECT, INSERT, UPDATE, ...)
    sql_kinds = collections.Counter()
    http = 0
    http_time = 0.0

    @classmethod
    def snapshot(cls):
        return cls.sql, cls.http, cls.http_time

    @classmethod
    def count_sql(cls, query):
        cls.sql += 1
        if isinstance(query, str):
            cls.sql_kinds[query.lstrip().split(None, 1)[0].upper()] += 1


def instrument():
    """Count the SQL statements of the Tryton cursors and the time spent in
    OrthancClient.request (in-process wrappers, negligible overhead)."""
    if backend.name == 'sqlite':
        from trytond.backend.sqlite.database import SQLiteCursor as cursor
    else:
        from trytond.backend.postgresql.database import LoggingCursor as cursor
    execute, executemany = cursor.execute, cursor.executemany

    def counted_execute(self, query, *args, **kwargs):
        Counters.count_sql(query)
        return execute(self, query, *args, **kwargs)

    def counted_executemany(self, query, *args, **kwargs):
        Counters.count_sql(query)
        return executemany(self, query, *args, **kwargs)
    cursor.execute = counted_execute
    cursor.executemany = counted_executemany

    request = OrthancClient.request

    def timed_request(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return request(self, *args, **kwargs)
        finally:
            Counters.http += 1
            Counters.http_time += time.perf_counter() - start
    OrthancClient.request = timed_request


def rss_kb():
    "Return (current RSS, peak RSS) of the process in KiB from /proc"
    values = {}
    with open('/proc/self/status') as fp:
        for line in fp:
            if line.startswith(('VmRSS:', 'VmHWM:')):
                key, value = line.split(':')
                values[key] = int(value.split()[0])
    return values.get('VmRSS', 0), values.get('VmHWM', 0)


def reset_peak_rss():
    "Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible"
    try:
        with open('/proc/self/clear_refs', 'w') as fp:
            fp.write('5')
    except OSError:
        return False
    return True


def maxrss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- data --------------------------------------------------------------------
def n_patients_for(n_studies, per_100):
    return max(1, round(n_studies * per_100 / 100))


def make_dataset(first, count, patients, seed):
    """Return the DICOM bytes of studies first..first+count-1: one 8x8
    instance each, for the given patients (each gets at least one study
    when there are enough studies)."""
    return list(iter_dataset(first, count, patients, seed))


def iter_dataset(first, count, patients, seed):
    "Yield the DICOM bytes of make_dataset one by one"
    rng = random.Random('%s-%s' % (seed, first))
    for i in range(first, first + count):
        if i - first < len(patients):
            patient = patients[i - first]
        else:
            patient = rng.choice(patients)
        modality = rng.choice(MODALITIES)
        date = dt.date(2000, 1, 1) + dt.timedelta(days=rng.randrange(9000))
        yield make_instance(
            modality=modality,
            study_date=date.strftime('%Y%m%d'),
            study_time='%02d%02d%02d' % (
                rng.randrange(7, 20), rng.randrange(60),
                rng.randrange(60)),
            accession='ACC-%07d' % i,
            description='%s study %d' % (modality, i),
            study_id=str(i),
            body_part=rng.choice(BODY_PARTS),
            seed=seed, **patient)


def upload(orthanc, instances, threads, chunk=1000):
    """Upload in parallel, one requests.Session per thread, chunk instances
    at a time (instances may be a generator: memory stays bounded)"""
    local = threading.local()

    def post(data):
        session = getattr(local, 'session', None)
        if session is None:
            session = local.session = requests.Session()
            session.auth = orthanc.auth
        response = session.post(orthanc.url + '/instances', data=data,
            headers={'Content-Type': 'application/dicom'}, timeout=120)
        response.raise_for_status()
    instances = iter(instances)
    count = 0
    with ThreadPoolExecutor(max_workers=threads) as executor:
        while True:
            batch = list(itertools.islice(instances, chunk))
            if not batch:
                return count
            list(executor.map(post, batch))
            count += len(batch)


def wait_stable(orthanc):
    """Wait until Orthanc's change log is quiet for QUIET_SECONDS: every
    Stable* change is then logged and later syncs see a still feed."""
    deadline = time.monotonic() + STABLE_TIMEOUT
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        current = orthanc.request(
            'GET', '/changes', params={'last': ''}).json()['Last']
        if current != last:
            last, since = current, time.monotonic()
        elif time.monotonic() - since >= QUIET_SECONDS:
            return last
        time.sleep(0.25)
    raise RuntimeError('Orthanc change log still growing after %s s'
        % STABLE_TIMEOUT)


# -- GNU Health side ---------------------------------------------------------
def create_local_patients(patients, linked_every):
    """Create GNU Health patients whose PUID is the PatientID of one
    Orthanc patient out of linked_every (same birth date): parties one per
    create call, as GNU Health requires.  Return how many."""
    pool = Pool()
    Party = pool.get('party.party')
    Patient = pool.get('gnuhealth.patient')
    Country = pool.get('country.country')
    if not Country.search([('code', '=', 'XX')]):
        Country.create([{'name': 'Testland', 'code': 'XX'}])
    count = 0
    for index, patient in enumerate(patients):
        if index % linked_every == linked_every - 1:
            continue
        family, _, given = patient['patient_name'].partition('^')
        party, = Party.create([{
                    'name': given or family,
                    'lastname': family,
                    'is_person': True,
                    'is_patient': True,
                    'gender': {'M': 'm', 'F': 'f'}.get(patient['sex'], 'f'),
                    'fed_country': 'XX',
                    'dob': dt.datetime.strptime(
                        patient['birth_date'], '%Y%m%d').date(),
                    'ref': patient['patient_id'],
                    }])
        if not Patient.search([('party', '=', party.id)]):
            Patient.create([{'party': party.id}])
        count += 1
    return count


def db_counts(server_id):
    pool = Pool()
    counts = {}
    for name, model in [
            ('patients', 'gnuhealth.orthanc.patient'),
            ('studies', 'gnuhealth.orthanc.study'),
            ('series', 'gnuhealth.orthanc.series')]:
        counts[name] = pool.get(model).search_count(
            [('server', '=', server_id)])
    counts['linked'] = pool.get('gnuhealth.orthanc.patient').search_count([
            ('server', '=', server_id), ('patient', '!=', None)])
    return counts


#: Columns left out of the dump: they differ from run to run (ids of the
#: server and of the records, dates of the run, the upload time of the
#: studies uploaded by the run)
DUMP_SKIPPED = {'id', 'server', 'create_uid', 'create_date', 'write_uid',
    'write_date', 'last_update', 'missing_since'}


def dump_records(server_id):
    """Return the records imported from the server as plain data, to compare
    the outcome of two runs: {model: {Orthanc ID: {column: value}}}, the
    references as the Orthanc ID or the PUID they point to"""
    pool = Pool()
    cursor = Transaction().connection.cursor()
    party = pool.get('party.party').__table__()
    local = pool.get('gnuhealth.patient').__table__()
    cursor.execute(*local.join(party, condition=local.party == party.id
            ).select(local.id, party.ref))
    references = {'patient': dict(cursor)}
    result = {}
    for name, reference in [
            ('gnuhealth.orthanc.patient', 'orthanc_patient'),
            ('gnuhealth.orthanc.study', 'study'),
            ('gnuhealth.orthanc.series', None)]:
        table = pool.get(name).__table__()
        cursor.execute(*table.select(where=table.server == server_id))
        columns = [d[0] for d in cursor.description]
        records = {}
        for row in cursor.fetchall():
            values = dict(zip(columns, row))
            for column, orthanc_ids in references.items():
                if values.get(column) is not None:
                    values[column] = orthanc_ids[values[column]]
            records[values['orthanc_id']] = {
                k: (v if isinstance(v, (int, float, type(None))) else str(v))
                for k, v in sorted(values.items())
                if k not in DUMP_SKIPPED}
        if reference:
            cursor.execute(*table.select(table.id, table.orthanc_id,
                    where=table.server == server_id))
            references[reference] = dict(cursor)
        result[name] = dict(sorted(records.items()))
    return result


def profile_shares(profile, wall):
    """Return {function: share of wall} of the cumulative time of the
    functions that the issue's profile names"""
    stats = pstats.Stats(profile).stats
    wanted = {
        ('modelsql.py', 'create'): 'ModelSQL.create',
        ('modelsql.py', 'write'): 'ModelSQL.write',
        ('modelstorage.py', '_validate'): 'ModelStorage._validate',
        ('orthanc_client.py', 'request'): 'OrthancClient.request',
        ('patient.py', 'link_server_patients'):
        'OrthancPatient.link_server_patients',
        ('study.py', 'link_to_requests'): 'OrthancStudy.link_to_requests',
        ('series.py', 'update_studies'): 'OrthancSeries.update_studies',
        }
    shares = collections.Counter()
    for (filename, _, function), (_, _, _, cumulative, _) in stats.items():
        label = wanted.get((os.path.basename(filename), function))
        if label:
            shares[label] += cumulative / wall
    return dict(shares)


def measure_sync(server_id, profile=None):
    """Run Server.sync_now in its own committed transaction (pages are
    committed as they come: _orthanc_page_commit keeps its default), with
    the peak RSS of the process during it (under profile, a cProfile.Profile,
    when given)"""
    sql, http, http_time = Counters.snapshot()
    sql_kinds = Counters.sql_kinds.copy()
    rss_before, _ = rss_kb()
    peak_reset = reset_peak_rss()
    start, cpu_start = time.perf_counter(), time.process_time()
    if profile is not None:
        profile.enable()
    with Transaction().start(DB_NAME, 1) as transaction:
        Server = Pool().get('gnuhealth.orthanc.config')
        result = Server.sync_now([Server(server_id)])[server_id]
        transaction.commit()
    if profile is not None:
        profile.disable()
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    rss_after, peak = rss_kb()
    if result is None:
        with Transaction().start(DB_NAME, 1, readonly=True):
            error = Pool().get('gnuhealth.orthanc.config')(
                server_id).last_error
        raise RuntimeError('sync failed: %s' % error)
    with Transaction().start(DB_NAME, 1, readonly=True):
        counts = db_counts(server_id)
    return {
        'wall_s': wall,
        'cpu_s': cpu,
        'http_requests': result.requests,
        'http_s': Counters.http_time - http_time,
        'sql_queries': Counters.sql - sql,
        'sql_kinds': dict(Counters.sql_kinds - sql_kinds),
        'full': result.full,
        'patients': result.patients,
        'studies': result.studies,
        'series': result.series,
        'errors': len(result.errors),
        'cursor': result.cursor,
        'db': counts,
        'rss_before_kb': rss_before,
        'rss_after_kb': rss_after,
        'peak_rss_kb': peak if peak_reset else None,
        }


# -- floor -------------------------------------------------------------------
def floor_download(orthanc, page_size):
    """Download what a first import reads with a plain requests client:
    the last change, then /patients, /studies, /series?expand by pages"""
    session = requests.Session()
    session.auth = orthanc.auth
    pages = {}
    count = 0
    start = time.perf_counter()
    response = session.get(orthanc.url + '/changes', params={'last': ''})
    response.raise_for_status()
    response.json()
    count += 1
    for kind in ['patients', 'studies', 'series']:
        pages[kind] = []
        since = 0
        while True:
            response = session.get(orthanc.url + '/' + kind, params={
                    'expand': '', 'since': since, 'limit': page_size})
            response.raise_for_status()
            items = response.json()
            count += 1
            if items:
                pages[kind].append(items)
            if len(items) < page_size:
                break
            since += len(items)
    wall = time.perf_counter() - start
    session.close()
    return pages, {'wall_s': wall, 'http_requests': count, 'http_s': wall}


def floor_map(pages):
    "Map the downloaded pages with the module's mapping functions"
    start = time.perf_counter()
    mapped = {}
    for kind, mapper in [
            ('patients', mapping.map_patient),
            ('studies', mapping.map_study),
            ('series', mapping.map_series)]:
        mapped[kind] = [mapping.map_many(mapper, items)[0]
            for items in pages[kind]]
    return mapped, {'wall_s': time.perf_counter() - start}


FLOOR_COLUMNS = {
    'patients': ['patient_id', 'name', 'birth_date', 'sex', 'last_update'],
    'studies': ['orthanc_patient', 'patient_id', 'study_instance_uid',
        'study_datetime', 'study_date', 'description', 'accession_number',
        'referring_physician', 'institution', 'study_id', 'last_update',
        'modalities', 'number_of_series', 'number_of_instances'],
    'series': ['study', 'series_instance_uid', 'modality', 'series_number',
        'description', 'body_part', 'number_of_instances', 'last_update'],
    }
FLOOR_TYPES = {
    'birth_date': 'DATE', 'study_date': 'DATE',
    'last_update': 'TIMESTAMP', 'study_datetime': 'TIMESTAMP',
    'orthanc_patient': 'INTEGER', 'study': 'INTEGER',
    'series_number': 'INTEGER', 'number_of_instances': 'INTEGER',
    'number_of_series': 'INTEGER',
    }


def floor_tables():
    return {kind: 'bench_floor_%s' % kind for kind in FLOOR_COLUMNS}


def create_floor_tables():
    "Scratch tables shaped like ours: id, server, orthanc_id, create_*"
    transaction = Transaction()
    cursor = transaction.connection.cursor()
    if backend.name == 'sqlite':
        id_type = 'INTEGER PRIMARY KEY AUTOINCREMENT'
    else:
        id_type = 'SERIAL PRIMARY KEY'
    for kind, name in floor_tables().items():
        cursor.execute('DROP TABLE IF EXISTS "%s"' % name)
        columns = ['id %s' % id_type, 'server INTEGER NOT NULL',
            'orthanc_id VARCHAR NOT NULL', 'create_uid INTEGER',
            'create_date TIMESTAMP']
        columns += ['"%s" %s' % (c, FLOOR_TYPES.get(c, 'VARCHAR'))
            for c in FLOOR_COLUMNS[kind]]
        columns.append('UNIQUE (server, orthanc_id)')
        cursor.execute('CREATE TABLE "%s" (%s)' % (name, ', '.join(columns)))
    cursor.execute(
        'CREATE INDEX bench_floor_series_study ON bench_floor_series (study)')


def drop_floor_tables():
    cursor = Transaction().connection.cursor()
    for name in floor_tables().values():
        cursor.execute('DROP TABLE IF EXISTS "%s"' % name)


def floor_insert(mapped, server_id):
    """Insert the mapped pages into the scratch tables with python-sql on
    the Tryton cursor: per page one SELECT of the parents' ids, one
    multi-row INSERT (split at the backend's parameter limit) and a commit;
    per series page one UPDATE of the studies' series and instance counts.
    """
    tables = {kind: Table(name) for kind, name in floor_tables().items()}
    sql = Counters.sql
    start = time.perf_counter()
    with Transaction().start(DB_NAME, 1) as transaction:
        database = transaction.database
        in_max = database.IN_MAX
        cursor = transaction.connection.cursor()
        now = dt.datetime.now()
        parents = {'studies': ('patients', 'orthanc_patient_id'),
            'series': ('studies', 'orthanc_study_id')}
        for kind in ['patients', 'studies', 'series']:
            table = tables[kind]
            names = FLOOR_COLUMNS[kind]
            columns = [table.server, table.orthanc_id, table.create_uid,
                table.create_date] + [Column(table, c) for c in names]
            for records in mapped[kind]:
                parent_ids = {}
                if kind in parents:
                    parent_kind, key = parents[kind]
                    parent = tables[parent_kind]
                    wanted = list({r[key] for r in records if r[key]})
                    for i in range(0, len(wanted), in_max):
                        cursor.execute(*parent.select(
                                parent.orthanc_id, parent.id,
                                where=(parent.server == server_id)
                                & parent.orthanc_id.in_(
                                    wanted[i:i + in_max])))
                        parent_ids.update(cursor)
                rows = []
                for record in records:
                    values = dict(record)
                    if kind == 'studies':
                        values['orthanc_patient'] = parent_ids.get(
                            record['orthanc_patient_id'])
                    elif kind == 'series':
                        values['study'] = parent_ids.get(
                            record['orthanc_study_id'])
                    rows.append([server_id, record['orthanc_id'], 1, now]
                        + [values.get(c) for c in names])
                per_statement = max(1, in_max // len(columns))
                for i in range(0, len(rows), per_statement):
                    cursor.execute(*table.insert(
                            columns, rows[i:i + per_statement]))
                if kind == 'series' and parent_ids:
                    study, series = tables['studies'], tables['series']
                    ids = list(parent_ids.values())
                    for i in range(0, len(ids), in_max):
                        cursor.execute(*study.update(
                                [study.number_of_series,
                                    study.number_of_instances],
                                [series.select(Count(Literal('*')),
                                        where=series.study == study.id),
                                    series.select(
                                        Sum(series.number_of_instances),
                                        where=series.study == study.id)],
                                where=study.id.in_(ids[i:i + in_max])))
                transaction.commit()
    return {'wall_s': time.perf_counter() - start,
        'sql_queries': Counters.sql - sql}


def floor_orm_create(mapped, server_id):
    """Create the same rows with Model.create on our models (all mapped
    values, one create per page, a commit per page) under a scratch server:
    what any ORM-based import costs at least, without look-ups, updates or
    linking"""
    sql = Counters.sql
    start = time.perf_counter()
    with Transaction().start(DB_NAME, 1) as transaction:
        pool = Pool()
        models = {
            'patients': pool.get('gnuhealth.orthanc.patient'),
            'studies': pool.get('gnuhealth.orthanc.study'),
            'series': pool.get('gnuhealth.orthanc.series'),
            }
        ids = {'patients': {}, 'studies': {}}
        for kind in ['patients', 'studies', 'series']:
            Model = models[kind]
            for records in mapped[kind]:
                vlist = []
                for record in records:
                    values = {c: record.get(c) for c in FLOOR_COLUMNS[kind]
                        if c in record}
                    values.update(server=server_id,
                        orthanc_id=record['orthanc_id'])
                    if kind == 'studies':
                        values['orthanc_patient'] = ids['patients'].get(
                            record['orthanc_patient_id'])
                    elif kind == 'series':
                        values['study'] = ids['studies'].get(
                            record['orthanc_study_id'])
                    vlist.append(values)
                created = Model.create(vlist)
                if kind in ids:
                    ids[kind].update(
                        (r['orthanc_id'], c.id)
                        for r, c in zip(records, created))
                transaction.commit()
    return {'wall_s': time.perf_counter() - start,
        'sql_queries': Counters.sql - sql}


# -- report ------------------------------------------------------------------
def fmt(value, digits=3):
    if value is None or value == '':
        return '-'
    if isinstance(value, float):
        return '%.*f' % (digits, value)
    return str(value)


def print_table(report):
    rows = [('phase', 'wall s', 'HTTP req', 'HTTP s', 'SQL q', 'patients',
            'studies', 'series', 'note')]
    up = report['upload']
    if up.get('cached'):
        rows.append(('copy Orthanc storage', up['copy_s'], '', '', '', '',
                up['studies'], '', 'from %s' % up['cached']))
    else:
        rows.append(('generate + upload', up['generate_upload_s'],
                up['studies'], '', '', '', up['studies'], '',
                '%d threads, %.0f/s' % (up['threads'],
                    up['studies'] / up['generate_upload_s'])))
    rows.append(('activate module', report['setup']['activate_s'], '', '',
            '', '', '', '', report['database']['backend']))
    rows.append(('local patients', report['setup']['local_patients_s'], '',
            '', '', report['setup']['local_patients'], '', '',
            'one Party.create each'))
    new = report['upload_new']
    for key, label in [
            ('first_import', 'first import'),
            ('no_change', 'no-change sync'),
            ('upload_new', 'upload new'),
            ('incremental', 'incremental sync')]:
        if key == 'upload_new':
            rows.append(('upload new', new['upload_s'], new['studies'], '',
                    '', '', new['studies'], '', 'not a sync'))
            continue
        m = report['syncs'][key]
        note = 'db %(patients)s/%(studies)s/%(series)s, linked %(linked)s' \
            % m['db']
        rows.append((label, m['wall_s'], m['http_requests'], m['http_s'],
                m['sql_queries'], m['patients'], m['studies'], m['series'],
                note))
    fl = report['floor']
    rows.append(('floor: download', fl['download']['wall_s'],
            fl['download']['http_requests'], fl['download']['http_s'], '',
            fl['rows']['patients'], fl['rows']['studies'],
            fl['rows']['series'], 'plain requests, same pages'))
    rows.append(('floor: map', fl['map']['wall_s'], '', '', '', '', '', '',
            'mapping.map_*'))
    rows.append(('floor: raw insert', fl['raw_insert']['wall_s'], '', '',
            fl['raw_insert']['sql_queries'], '', '', '',
            'INSERT..VALUES per page'))
    rows.append(('floor: ORM create', fl['orm_create']['wall_s'], '', '',
            fl['orm_create']['sql_queries'], '', '', '',
            'Model.create per page'))
    widths = [max(len(fmt(r[i])) for r in rows) for i in range(len(rows[0]))]
    for index, row in enumerate(rows):
        cells = [fmt(v).ljust(w) if i in (0, 8) else fmt(v).rjust(w)
            for i, (v, w) in enumerate(zip(row, widths))]
        print('  '.join(cells).rstrip())
        if index == 0:
            print('  '.join('-' * w for w in widths))
    ratios = report['ratios']
    print()
    rounds = report['rounds']
    if len(rounds['first_import']) > 1:
        print('median of %d rounds; first import runs: %s s; floor download '
            'runs: %s s; ORM create runs: %s s' % (
                len(rounds['first_import']),
                ', '.join('%.3f' % r['wall_s']
                    for r in rounds['first_import']),
                ', '.join('%.3f' % r['download']['wall_s']
                    for r in rounds['floor']),
                ', '.join('%.3f' % r['orm_create']['wall_s']
                    for r in rounds['floor'])))
    print('first import / floor (download + map + raw insert): %.1fx '
        '(floor %.3f s)' % (ratios['raw'], ratios['raw_floor_s']))
    print('first import / floor (download + map + ORM create): %.1fx '
        '(floor %.3f s)' % (ratios['orm'], ratios['orm_floor_s']))
    first = report['syncs']['first_import']
    print('first import: %.0f studies/s, %.1f SQL queries per study, '
        '%.0f%% of the time in HTTP' % (
            first['studies'] / first['wall_s'],
            first['sql_queries'] / max(1, first['studies']),
            100 * first['http_s'] / first['wall_s']))
    print('first import: CPU time of this process %.3f s (median run; '
        'all runs: %s s; less sensitive to the load than the wall time; '
        'the work of PostgreSQL and Orthanc is in their own processes)' % (
            first['cpu_s'], ', '.join(
                '%.3f' % r['cpu_s'] for r in rounds['first_import'])))
    print('first import SQL statements: %s' % ', '.join(
            '%s %s' % (n, kind) for kind, n in sorted(
                first['sql_kinds'].items(), key=lambda i: -i[1])))
    if report.get('profile'):
        print('profile of the first import (round 1, cumulative share of '
            'its time under cProfile): %s' % ', '.join(
                '%s %.0f%%' % (name, 100 * share) for name, share in sorted(
                    report['profile'].items(), key=lambda i: -i[1])))
    mem = report['memory']
    print('memory: ru_maxrss %.0f MiB at the end; first import: RSS %.0f -> '
        '%.0f MiB (delta %+.1f MiB), peak during it %s' % (
            mem['ru_maxrss_end_kb'] / 1024, mem['rss_before_kb'] / 1024,
            mem['rss_after_kb'] / 1024,
            (mem['rss_after_kb'] - mem['rss_before_kb']) / 1024,
            '%.0f MiB (%+.1f MiB over before)' % (
                mem['peak_during_kb'] / 1024,
                (mem['peak_during_kb'] - mem['rss_before_kb']) / 1024)
            if mem['peak_during_kb'] else 'n/a'))
    print('peak RSS of the process during each sync: %s' % ', '.join(
            '%s %s' % (label, '%.0f MiB (%+.1f MiB over before)' % (
                    m['peak_rss_kb'] / 1024,
                    (m['peak_rss_kb'] - m['rss_before_kb']) / 1024)
                if m['peak_rss_kb'] else 'n/a')
            for label, m in [
                ('first import (round 1)',
                    report['rounds']['first_import'][0]),
                ('no-change', report['syncs']['no_change']),
                ('incremental', report['syncs']['incremental'])]))
    load = report['load']
    print('load averages (1, 5, 15 min): %s at the start, %s at the end '
        '(%d CPUs, shared)' % (
            ' '.join('%.2f' % v for v in load['start']),
            ' '.join('%.2f' % v for v in load['end']), os.cpu_count()))


# -- main --------------------------------------------------------------------
def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='python -m bench.sync_bench', description=__doc__.split('\n')[0])
    parser.add_argument('--studies', type=int, default=1000,
        help="studies in Orthanc before the first import (default 1000)")
    parser.add_argument('--new', type=int, default=10,
        help="studies uploaded before the incremental sync (default 10)")
    parser.add_argument('--new-percent', type=float,
        help="new studies as a percentage of --studies (overrides --new)")
    parser.add_argument('--page-size', type=int,
        default=sync_module.PAGE_SIZE,
        help="listing page size of the first import (default %(default)s)")
    parser.add_argument('--patients-per-100', type=float, default=3,
        help="Orthanc patients per 100 studies (default %(default)s)")
    parser.add_argument('--linked-every', type=int, default=3,
        help="one Orthanc patient out of N has no local patient "
        "(default 3)")
    parser.add_argument('--repeat', type=int, default=1,
        help="run the floor and the first import this many times "
        "(alternated, each import into a new server record) and show the "
        "median (default 1)")
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--upload-threads', type=int, default=8)
    parser.add_argument('--orthanc-cache', metavar='DIR',
        help="keep the generated Orthanc storage in a subdirectory of DIR "
        "named after --studies, --seed and --patients-per-100, and reuse "
        "it (on a copy) in later runs: SQLite and PostgreSQL runs then "
        "measure the same data")
    parser.add_argument('--prepare-only', action='store_true',
        help="only fill the --orthanc-cache directory, measure nothing")
    parser.add_argument('--keep-db', action='store_true',
        help="keep the PostgreSQL database at the end")
    parser.add_argument('--json', action='store_true',
        help="also print the figures as JSON")
    parser.add_argument('--dump', metavar='FILE',
        help="write the records of the first import (first round) and "
        "after the incremental sync to FILE as JSON, without ids and "
        "dates, to compare the outcome of two versions")
    parser.add_argument('--profile', metavar='FILE',
        help="profile the first import of the first round with cProfile "
        "into FILE and show the share of a few functions (profiling slows "
        "it down: take the times from runs without it)")
    args = parser.parse_args(argv)
    if args.prepare_only and not args.orthanc_cache:
        parser.error('--prepare-only needs --orthanc-cache')
    if args.new_percent is not None:
        args.new = max(1, round(args.studies * args.new_percent / 100))
    return args


def run(args, workdir, report):
    report.update({'args': vars(args).copy(), 'database': {
            'backend': backend.name, 'name': DB_NAME}})
    patients = random_patients(
        n_patients_for(args.studies, args.patients_per_100), seed=args.seed)

    # 1. Orthanc and its studies
    orthanc = OrthancServer(os.path.join(workdir, 'orthanc'))
    try:
        prepare_orthanc(args, report, orthanc, patients)
        if not args.prepare_only:
            _run(args, report, orthanc, patients)
    finally:
        orthanc.stop()


def dataset_key(args):
    "What identifies a generated Orthanc dataset"
    return {'studies': args.studies, 'seed': args.seed,
        'patients_per_100': args.patients_per_100}


def prepare_orthanc(args, report, orthanc, patients):
    """Start orthanc with the --studies studies: copied from the
    --orthanc-cache directory of this dataset when it holds one, else
    generated and uploaded (and saved into the cache when one is given).
    The cached storage is never modified: each run works on a copy."""
    log = functools.partial(print, file=sys.stderr, flush=True)
    storage = os.path.join(orthanc.workdir, 'storage')
    cache = None
    if args.orthanc_cache:
        key = dataset_key(args)
        cache = os.path.join(os.path.abspath(args.orthanc_cache),
            'studies-%(studies)d-seed-%(seed)s-patients-%(patients_per_100)s'
            % key)
        marker = os.path.join(cache, 'dataset.json')
        if os.path.exists(marker):
            with open(marker) as fp:
                saved = json.load(fp)
            if saved['key'] != key:
                raise SystemExit('%s holds another dataset: %s' % (
                        cache, saved['key']))
            log('copying the Orthanc storage of %s' % cache)
            start = time.perf_counter()
            shutil.copytree(os.path.join(cache, 'storage'), storage)
            report['upload'] = dict(saved['upload'], cached=cache,
                copy_s=time.perf_counter() - start)
            orthanc.start()
            wait_stable(orthanc)
            return
    orthanc.start()
    log('generating and uploading %d studies for %d patients to %s' % (
            args.studies, len(patients), orthanc.url))
    start = time.perf_counter()
    count = upload(orthanc,
        iter_dataset(0, args.studies, patients, args.seed),
        args.upload_threads)
    report['upload'] = {'studies': count,
        'generate_upload_s': time.perf_counter() - start,
        'threads': args.upload_threads}
    wait_stable(orthanc)
    if cache:
        log('saving the Orthanc storage into %s' % cache)
        orthanc.stop()
        os.makedirs(cache, exist_ok=True)
        shutil.rmtree(os.path.join(cache, 'storage'), ignore_errors=True)
        shutil.copytree(storage, os.path.join(cache, 'storage'))
        with open(os.path.join(cache, 'dataset.json'), 'w') as fp:
            json.dump({'key': dataset_key(args), 'upload': report['upload']},
                fp, indent=2)
        orthanc.start()
        wait_stable(orthanc)


def create_server(orthanc):
    "Create a validated server record for orthanc; return its id"
    with Transaction().start(DB_NAME, 1) as transaction:
        Server = Pool().get('gnuhealth.orthanc.config')
        server, = Server.create([{
                    'label': 'Bench %s' % time.time(),
                    'domain': orthanc.url,
                    'user': orthanc.user,
                    'password': orthanc.password,
                    'validated': True,
                    }])
        transaction.commit()
        return server.id


def delete_server(server_id):
    "Delete a server and, by cascade, what was imported from it"
    with Transaction().start(DB_NAME, 1) as transaction:
        Server = Pool().get('gnuhealth.orthanc.config')
        Server.delete([Server(server_id)])
        transaction.commit()


def measure_floor(orthanc, page_size):
    """Download, map, raw insert and ORM create (under a scratch server,
    deleted afterwards with the scratch tables)"""
    with Transaction().start(DB_NAME, 1) as transaction:
        Server = Pool().get('gnuhealth.orthanc.config')
        floor_server, = Server.create([{
                    'label': 'Bench floor %s' % time.time(),
                    'domain': orthanc.url,
                    'validated': False,
                    }])
        floor_server_id = floor_server.id
        create_floor_tables()
        transaction.commit()
    pages, download = floor_download(orthanc, page_size)
    mapped, map_ = floor_map(pages)
    del pages
    raw = floor_insert(mapped, floor_server_id)
    orm = floor_orm_create(mapped, floor_server_id)
    delete_server(floor_server_id)
    with Transaction().start(DB_NAME, 1) as transaction:
        drop_floor_tables()
        transaction.commit()
    return {'download': download, 'map': map_, 'raw_insert': raw,
        'orm_create': orm, 'rows': {kind: sum(len(p) for p in pages_)
            for kind, pages_ in mapped.items()}}


def median_run(runs):
    "The run of median wall time (the lower one for an even count)"
    return sorted(runs, key=lambda r: r['wall_s'])[(len(runs) - 1) // 2]


def _run(args, report, orthanc, patients):
    log = functools.partial(print, file=sys.stderr, flush=True)
    stats = orthanc.request('GET', '/statistics').json()
    report['orthanc_version'] = orthanc.request(
        'GET', '/system').json().get('Version')
    log('Orthanc: %(CountPatients)s patients, %(CountStudies)s studies, '
        '%(CountSeries)s series, %(CountInstances)s instances' % stats)

    # 2. Database, local patients, server
    if backend.name != 'sqlite':
        if db_exist(DB_NAME):
            raise SystemExit('database %s exists: drop it or choose another '
                'DB_NAME' % DB_NAME)
        report['database']['created'] = True
    log('activating health_orthanc in %s (%s)' % (DB_NAME, backend.name))
    start = time.perf_counter()
    activate_module('health_orthanc')
    report['setup'] = {'activate_s': time.perf_counter() - start}
    instrument()
    server_module.Synchronizer = functools.partial(
        sync_module.Synchronizer, page_size=args.page_size)

    start = time.perf_counter()
    with Transaction().start(DB_NAME, 1) as transaction:
        local = create_local_patients(patients, args.linked_every)
        transaction.commit()
    report['setup'].update(local_patients=local,
        local_patients_s=time.perf_counter() - start)

    # 3a and 4. First import and floor, alternated --repeat times on the
    # same Orthanc state, each first import into a new server record.  The
    # first import comes first so that its memory is that of a process
    # which has only synced (the floor holds every page at once).
    rounds = {'floor': [], 'first_import': []}
    dumps = {}
    server_id = None
    maxrss_before = maxrss_kb()
    for round_ in range(args.repeat):
        if server_id is not None:
            delete_server(server_id)
        server_id = create_server(orthanc)
        log('round %d: first import' % (round_ + 1))
        profile = cProfile.Profile() if args.profile and not round_ else None
        rounds['first_import'].append(measure_sync(server_id, profile))
        if profile is not None:
            profile.dump_stats(args.profile)
            report['profile'] = profile_shares(
                profile, rounds['first_import'][-1]['wall_s'])
        if args.dump and not round_:
            with Transaction().start(DB_NAME, 1, readonly=True):
                dumps['first_import'] = dump_records(server_id)
        if not round_:
            first_run = rounds['first_import'][0]
            report['memory'] = {
                'rss_before_kb': first_run['rss_before_kb'],
                'rss_after_kb': first_run['rss_after_kb'],
                'peak_during_kb': first_run['peak_rss_kb'],
                'ru_maxrss_before_kb': maxrss_before,
                'ru_maxrss_after_import_kb': maxrss_kb(),
                }
        log('round %d: floor (download, map, insert)' % (round_ + 1))
        rounds['floor'].append(measure_floor(orthanc, args.page_size))
    report['rounds'] = rounds
    first = median_run(rounds['first_import'])
    floor = {part: median_run([r[part] for r in rounds['floor']])
        for part in ['download', 'map', 'raw_insert', 'orm_create']}
    floor['rows'] = rounds['floor'][0]['rows']
    report['floor'] = floor
    download, map_ = floor['download'], floor['map']
    raw, orm = floor['raw_insert'], floor['orm_create']

    # 3b. Nothing changed
    log('no-change sync')
    no_change = measure_sync(server_id)
    # 3c. New studies, then an incremental sync
    log('uploading %d new studies' % args.new)
    n_new_patients = round(args.new * args.patients_per_100 / 100)
    new_patients = random_patients(
        len(patients) + n_new_patients, seed=args.seed)[len(patients):]
    instances = make_dataset(args.studies, args.new,
        new_patients + patients, args.seed)
    start = time.perf_counter()
    upload(orthanc, instances, args.upload_threads)
    report['upload_new'] = {'studies': len(instances),
        'new_patients': len(new_patients),
        'upload_s': time.perf_counter() - start}
    wait_stable(orthanc)
    log('incremental sync')
    incremental = measure_sync(server_id)
    if args.dump:
        with Transaction().start(DB_NAME, 1, readonly=True):
            dumps['end'] = dump_records(server_id)
        with open(args.dump, 'w') as fp:
            json.dump(dumps, fp, indent=1, sort_keys=True)
    report['syncs'] = {'first_import': first, 'no_change': no_change,
        'incremental': incremental}
    report['memory']['ru_maxrss_end_kb'] = maxrss_kb()

    raw_floor = download['wall_s'] + map_['wall_s'] + raw['wall_s']
    orm_floor = download['wall_s'] + map_['wall_s'] + orm['wall_s']
    report['ratios'] = {
        'raw_floor_s': raw_floor, 'raw': first['wall_s'] / raw_floor,
        'orm_floor_s': orm_floor, 'orm': first['wall_s'] / orm_floor,
        }


def git_commit():
    """The commit of the measured module, '+' when its tree has changes
    (the checkout of health_orthanc, which may not be the benchmark's)"""
    root = os.path.dirname(os.path.dirname(os.path.abspath(
                mapping.__file__)))
    try:
        commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
            cwd=root, capture_output=True, text=True,
            check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--',
                'health_orthanc', 'bench'], cwd=root, capture_output=True,
            text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ('+' if dirty else '')


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    workdir = tempfile.mkdtemp(prefix='orthanc-bench-')
    report = {'commit': git_commit(), 'load': {'start': os.getloadavg()}}
    try:
        run(args, workdir, report)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if report.get('database', {}).get('created') and not args.keep_db:
            try:
                drop_db(DB_NAME)
            except Exception as exception:
                print('could not drop %s: %s' % (DB_NAME, exception),
                    file=sys.stderr)
    report['load']['end'] = os.getloadavg()
    if args.prepare_only:
        print('Orthanc storage ready: %s' % report['upload'])
        return
    print('health_orthanc sync benchmark: %d studies, %d new, page size %d, '
        '%s database %s, Orthanc %s, %d CPUs, commit %s' % (
            args.studies, args.new, args.page_size, backend.name, DB_NAME,
            report.get('orthanc_version'), os.cpu_count(),
            report['commit']))
    print()
    print_table(report)
    if args.json:
        print(json.dumps(report, indent=2, default=str))


if __name__ == '__main__':
    main()
