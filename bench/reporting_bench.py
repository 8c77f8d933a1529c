# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Benchmark of the imaging reporting queries.

Prints figures, never asserts on them.  Usage (from the repository root)::

    python -m bench.reporting_bench --requests 100000 [--days 365]
        [--repeat 3] [--explain] [--json]

The database is chosen as for the Tryton tests: ``TRYTOND_DATABASE_URI``
(``sqlite://`` by default) and ``DB_NAME`` (``:memory:`` on SQLite), with
``DB_CACHE`` optional.  See bench/README.md.
"""
import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import time
import warnings

from sql import Table
from trytond import backend
from trytond.pool import Pool
from trytond.pyson import PYSONDecoder
from trytond.tests.test_tryton import (
    DB_NAME, activate_module, db_exist, drop_db)
from trytond.transaction import Transaction

from trytond.modules.health_imaging.tests.tools import create_patient

warnings.filterwarnings('ignore', category=UserWarning,
    module=r'trytond\.backend\.sqlite\.table')

MODELS = [
    'gnuhealth.imaging.reporting.activity',
    'gnuhealth.imaging.reporting.activity.modality',
    'gnuhealth.imaging.reporting.activity.modality.time_series',
    'gnuhealth.imaging.reporting.activity.test',
    'gnuhealth.imaging.reporting.activity.test.time_series',
    'gnuhealth.imaging.reporting.turnaround',
    'gnuhealth.imaging.reporting.turnaround.time_series',
    'gnuhealth.imaging.reporting.backlog',
    'gnuhealth.imaging.reporting.reader',
    'gnuhealth.imaging.reporting.reader.time_series',
    ]
# Each measure ignores the dates and the grain it does not use
DATED = {m for m in MODELS if not m.endswith('.backlog')}
CHUNK = 1000
#: The most records a list of the client shows (its default limit)
LIMIT = 1000
log = None


def hours(value):
    return dt.timedelta(hours=value)


# -- data ---------------------------------------------------------------------
def simulate(rng, count, days, now, tests, patients, doctors):
    """Return the requests and the results of count tests ordered over the
    days before now, with the times a department might see"""
    requests, results = [], []
    start = now - dt.timedelta(days=days)
    for index in range(count):
        ordered = (start + dt.timedelta(days=rng.random() * days)).replace(
            microsecond=0)
        test = rng.choice(tests)
        urgent = rng.random() < 0.15
        request = {
            'index': index, 'date': ordered, 'requested_test': test,
            'patient': rng.choice(patients), 'urgent': urgent,
            'doctor': rng.choice(doctors), 'state': 'draft',
            'requested_date': None, 'performed_date': None,
            }
        requests.append(request)
        draw = rng.random()
        if draw < 0.01:
            continue  # never requested
        requested = ordered + hours(rng.expovariate(2))
        if requested > now:
            continue
        request.update(state='requested', requested_date=requested)
        if draw < 0.03:
            request['state'] = 'cancelled'
            continue
        performed = requested + hours(
            rng.lognormvariate(0, 0.8) if urgent
            else rng.lognormvariate(3, 0.9))
        if performed > now:
            continue
        request['state'] = 'done'
        if rng.random() < 0.8:
            request['performed_date'] = performed
        completed = performed + hours(
            rng.lognormvariate(1, 0.7) if urgent
            else rng.lognormvariate(2.7, 0.8))
        done = completed <= now
        results.append({
                'request': index, 'date': performed.replace(microsecond=0),
                'requested_test': test, 'patient': request['patient'],
                'doctor': rng.choice(doctors),
                'state': 'done' if done else 'draft',
                'completed_date': (
                    completed.replace(microsecond=0) if done else None),
                'request_date': ordered, 'order': None,
                })
    # Results entered without a request, 1 %
    for index in range(count // 100):
        performed = (start + dt.timedelta(days=rng.random() * days)).replace(
            microsecond=0)
        results.append({
                'request': None, 'date': performed,
                'requested_test': rng.choice(tests),
                'patient': rng.choice(patients),
                'doctor': rng.choice(doctors), 'state': 'done',
                'completed_date': performed + hours(2), 'request_date': None,
                'order': None,
                })
    return requests, results


def next_id(cursor, table):
    cursor.execute(*table.select(table.id, order_by=[table.id.desc], limit=1))
    row = cursor.fetchone()
    return (row[0] if row else 0) + 1


def insert(cursor, table, columns, rows):
    "Insert the rows (lists of values) in chunks, multi-row INSERTs"
    columns = [getattr(table, c) for c in columns]
    for start in range(0, len(rows), CHUNK):
        cursor.execute(*table.insert(columns, rows[start:start + CHUNK]))


def set_sequence(cursor, table):
    if backend.name == 'postgresql':
        cursor.execute("SELECT setval('%s_id_seq', (SELECT MAX(id) FROM "
            '"%s"))' % (table._name, table._name))


def generate(count, days, seed):
    """Create patients, health professionals, then bulk insert the requests
    and results; return figures"""
    pool = Pool()
    Test = pool.get('gnuhealth.imaging.test')
    Request = pool.get('gnuhealth.imaging.test.request')
    Result = pool.get('gnuhealth.imaging.test.result')
    Party = pool.get('party.party')
    Professional = pool.get('gnuhealth.healthprofessional')
    cursor = Transaction().connection.cursor()
    rng = random.Random(seed)
    figures = {}

    start = time.perf_counter()
    patients = [create_patient('P%03d' % i, 'Bench').id for i in range(50)]
    doctors = []
    for i in range(8):
        party, = Party.create([{
                    'name': 'R%d' % i, 'lastname': 'Reader',
                    'is_person': True, 'is_healthprof': True,
                    'fed_country': 'XX', 'gender': 'f'}])
        doctors.append(Professional.create([{'party': party.id}])[0].id)
    tests = [t.id for t in Test.search([])]
    figures['orm_setup_s'] = time.perf_counter() - start

    start = time.perf_counter()
    now = dt.datetime.now().replace(microsecond=0)
    requests, results = simulate(
        rng, count, days, now, tests, patients, doctors)
    figures['simulate_s'] = time.perf_counter() - start

    start = time.perf_counter()
    table = Table(Request._table)
    first = next_id(cursor, table)
    columns = ['id', 'create_uid', 'create_date', 'patient', 'date',
        'requested_test', 'doctor', 'state', 'request', 'request_line',
        'urgent', 'requested_date', 'performed_date']
    rows = []
    for r in requests:
        number = 'BENCH%07d' % r['index']
        rows.append([first + r['index'], 0, now, r['patient'], r['date'],
                r['requested_test'], r['doctor'], r['state'], number,
                number + '-01-01', r['urgent'], r['requested_date'],
                r['performed_date']])
    insert(cursor, table, columns, rows)
    set_sequence(cursor, table)

    table = Table(Result._table)
    columns = ['id', 'create_uid', 'create_date', 'patient', 'number',
        'date', 'request_date', 'requested_test', 'request', 'order',
        'doctor', 'state', 'completed_date', 'comment']
    first_result = next_id(cursor, table)
    rows = []
    for i, r in enumerate(results):
        request = first + r['request'] if r['request'] is not None else None
        rows.append([first_result + i, 0, now, r['patient'],
                'BENCHRES%07d' % i, r['date'], r['request_date'],
                r['requested_test'], request,
                'BENCH%07d' % r['request'] if request else None,
                r['doctor'], r['state'], r['completed_date'], "Normal."])
    insert(cursor, table, columns, rows)
    set_sequence(cursor, table)
    figures['insert_s'] = time.perf_counter() - start

    states = {}
    for r in requests:
        states[r['state']] = states.get(r['state'], 0) + 1
    figures.update(requests=len(requests), results=len(results),
        request_states=states,
        draft_results=sum(r['state'] == 'draft' for r in results))
    return figures


def analyze():
    "Give the planner the statistics of the new rows"
    Transaction().connection.cursor().execute('ANALYZE')


# -- measures -----------------------------------------------------------------
def contexts(today):
    return [
        ('3 months, week', {
                'from_date': today - dt.timedelta(days=91),
                'to_date': today, 'period': 'week'}),
        ('1 year, day', {
                'from_date': today - dt.timedelta(days=365),
                'to_date': today, 'period': 'day'}),
        ('1 year, month', {
                'from_date': today - dt.timedelta(days=365),
                'to_date': today, 'period': 'month'}),
        ]


def timed(function, repeat):
    "Return the result of the last call and the times of the calls"
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return result, times


def client_fields(Model):
    """Return the names the client reads for the list of Model: the fields
    of its list view, the names of the records they link to, the labels of
    their selections and the client's own columns"""
    view = Model.fields_view_get(view_type='tree')
    names = list(view['fields'])
    for name in list(names):
        type_ = view['fields'][name]['type']
        if type_ == 'many2one':
            names.append(name + '.rec_name')
        elif type_ == 'selection':
            names.append(name + ':string')
    return names + ['rec_name', '_timestamp', '_write', '_delete']


def action_order(name):
    "Return the order of the window of the model, or None (the model's)"
    ActWindow = Pool().get('ir.action.act_window')
    actions = ActWindow.search([('res_model', '=', name)], limit=1)
    if actions and actions[0].order:
        return [tuple(o) for o in PYSONDecoder().decode(actions[0].order)]


def measure(name, context, repeat, domain=None, explain=False, orm=True):
    """Time the table_query alone (all its rows fetched) and, with orm, what
    the client does to open the list: a search (at most LIMIT ids, in the
    order of the window) then a read of the fields of the list for the
    first page of records (LIMIT / min(names, 10), as the web client) and,
    for a chart, the read of every record, page by page"""
    Model = Pool().get(name)
    cursor = Transaction().connection.cursor()
    names = client_fields(Model)
    page = LIMIT // min(len(names), 10)
    order = action_order(name)
    with Transaction().set_context(**context):
        def raw():
            cursor.execute(*Model.table_query())
            return cursor.fetchall()

        def search():
            # Each call of the client is a transaction of its own
            Transaction().cache.clear()
            return [r.id for r in Model.search(
                        domain or [], limit=LIMIT, order=order)]

        def read(ids):
            Transaction().cache.clear()
            return Model.read(ids, names)

        def chart(ids):
            for start in range(0, len(ids), page):
                read(ids[start:start + page])
        rows, raw_times = timed(raw, repeat)
        ids, search_times, read_times, chart_times = [], [], [], []
        if orm:
            ids, search_times = timed(search, repeat)
            _, read_times = timed(lambda: read(ids[:page]), repeat)
            _, chart_times = timed(lambda: chart(ids), repeat)
        plan = None
        if explain and backend.name == 'postgresql':
            query, params = tuple(Model.table_query())
            cursor.execute('EXPLAIN (ANALYZE, BUFFERS) ' + query, params)
            plan = '\n'.join(r[0] for r in cursor.fetchall())

    def median(times):
        return statistics.median(times) if orm else None
    return {
        'model': name, 'domain': domain, 'rows': len(rows),
        'records': len(ids), 'page': page,
        'raw_s': statistics.median(raw_times), 'raw_first_s': raw_times[0],
        'search_s': median(search_times), 'read_s': median(read_times),
        'open_s': median([s + r for s, r in zip(search_times, read_times)]),
        'chart_s': median([s + c for s, c in zip(search_times, chart_times)]),
        'plan': plan,
        }


def counts():
    "The figures of the data of a reused database"
    pool = Pool()
    Request = pool.get('gnuhealth.imaging.test.request')
    Result = pool.get('gnuhealth.imaging.test.result')
    states = {}
    for state, _ in Request.state.selection:
        states[state] = Request.search_count([('state', '=', state)])
    return {
        'requests': sum(states.values()), 'request_states': states,
        'results': Result.search_count([]),
        'draft_results': Result.search_count([('state', '=', 'draft')]),
        'orm_setup_s': 0, 'simulate_s': 0, 'insert_s': 0, 'analyze_s': 0,
        }


def drill_downs():
    """Return the time series opened from a row of the lists, with the
    domain and the context of their window: (model, label, domain,
    context)"""
    pool = Pool()
    TestType = pool.get('gnuhealth.imaging.test.type')
    Test = pool.get('gnuhealth.imaging.test')
    Professional = pool.get('gnuhealth.healthprofessional')
    dx, = TestType.search([('code', '=', 'DX')])
    chest, = Test.search([('code', '=', 'IMG-DX-CHEST')])
    reader = Professional.search([], order=[('id', 'DESC')], limit=1)[0]
    prefix = 'gnuhealth.imaging.reporting.'
    return [
        (prefix + 'activity.modality.time_series', 'DX',
            [('test_type', '=', dx.id)], {'test_type': dx.id}),
        (prefix + 'activity.test.time_series', 'chest',
            [('test', '=', chest.id)], {'test': chest.id}),
        (prefix + 'turnaround.time_series', 'DX',
            [('test_type', '=', dx.id)], {'test_type': dx.id}),
        (prefix + 'reader.time_series', 'a reader',
            [('reader', '=', reader.id)], {}),
        ]


def measure_all(repeat, explain, only=None):
    pool = Pool()
    Date = pool.get('ir.date')
    Backlog = pool.get('gnuhealth.imaging.reporting.backlog')
    results = []
    for label, context in contexts(Date.today()):
        for name in MODELS:
            if name not in DATED and label != '3 months, week':
                continue
            if only and only not in name:
                continue
            log('measuring %s (%s)' % (name, label))
            # The client opens a time series from a row, with its domain
            results.append(dict(measure(
                        name, context, repeat, explain=explain,
                        orm=not name.endswith('.time_series')),
                    context=label))
        for name, row, domain, filter_ in drill_downs():
            if only and only not in name:
                continue
            log('measuring %s (%s, %s)' % (name, label, row))
            results.append(dict(measure(
                        name, dict(context, **filter_), repeat,
                        domain=domain),
                    context='%s, %s' % (label, row)))
    rows = Backlog.search([], order=[('number', 'DESC')], limit=1)
    (ids, times) = timed(lambda: Backlog.records(rows), repeat)
    results.append({
            'model': 'backlog drill-down (records of the largest row)',
            'context': rows[0].rec_name if rows else '', 'rows': len(ids),
            'records': len(ids), 'page': None,
            'raw_s': statistics.median(times), 'raw_first_s': times[0],
            'search_s': None, 'read_s': None, 'open_s': None,
            'chart_s': None, 'plan': None, 'domain': None})
    return results


# -- report -------------------------------------------------------------------
def seconds(value):
    return '%8.3f' % value if value is not None else '%8s' % ''


def print_table(report):
    print('%-34s %-24s %5s %5s %8s %8s %8s %8s %8s' % (
            'measure', 'context', 'rows', 'ids', 'SQL', 'search', 'read',
            'open', 'chart'))
    for r in report['measures']:
        name = r['model'].replace('gnuhealth.imaging.reporting.', '')
        ids = '%5d' % r['records'] if r['search_s'] is not None else ' ' * 5
        print('%-34s %-24s %5d %s %s %s %s %s %s' % (
                name[:34], r['context'][:24], r['rows'], ids,
                *map(seconds, [r['raw_s'], r['search_s'], r['read_s'],
                        r['open_s'], r['chart_s']])))
        if r.get('plan'):
            print(r['plan'])
    print()
    measures = report['measures']
    print('slowest (s, median of %d): SQL %.3f, open (search + read of '
        'the first page) %.3f, chart (search + read of every row) %.3f' % (
            report['repeat'], max(r['raw_s'] for r in measures),
            max(r['open_s'] or 0 for r in measures),
            max(r['chart_s'] or 0 for r in measures)))
    load = report['load']
    print('load averages (1, 5, 15 min): %s at the start, %s at the end '
        '(%d CPUs)' % (
            ' '.join('%.2f' % v for v in load['start']),
            ' '.join('%.2f' % v for v in load['end']), os.cpu_count()))


def git_commit():
    "The commit of the measured code, '+' when the tree has changes"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
            cwd=root, capture_output=True, text=True,
            check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--',
                'health_imaging', 'bench'], cwd=root, capture_output=True,
            text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ('+' if dirty else '')


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--requests', type=int, default=100000)
    parser.add_argument('--days', type=int, default=365,
        help="the requests are ordered over these days before today")
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--explain', action='store_true',
        help="print the plans of PostgreSQL (EXPLAIN ANALYZE)")
    parser.add_argument('--keep-db', action='store_true')
    parser.add_argument('--reuse-db', action='store_true',
        help="measure the database DB_NAME kept by --keep-db as it is")
    parser.add_argument('--only', metavar='TEXT',
        help="only the measures whose model contains TEXT")
    parser.add_argument('--json', action='store_true')
    return parser.parse_args(argv)


def run(args, report):
    if args.reuse_db:
        Pool(DB_NAME).init()
        with Transaction().start(DB_NAME, 0):
            report['data'] = counts()
            report['measures'] = measure_all(
                args.repeat, args.explain, args.only)
        return
    if backend.name != 'sqlite':
        if db_exist(DB_NAME):
            raise SystemExit('database %s exists: drop it or choose another '
                'DB_NAME' % DB_NAME)
        report['database'] = {'created': True}
    log('activating health_imaging in %s (%s)' % (DB_NAME, backend.name))
    activate_module('health_imaging')
    with Transaction().start(DB_NAME, 0) as transaction:
        log('generating %d requests over %d days' % (
                args.requests, args.days))
        report['data'] = generate(args.requests, args.days, args.seed)
        transaction.commit()
        start = time.perf_counter()
        analyze()
        report['data']['analyze_s'] = time.perf_counter() - start
    with Transaction().start(DB_NAME, 0, readonly=True):
        report['measures'] = measure_all(
            args.repeat, args.explain, args.only)


def main(argv=None):
    global log
    args = parse_args(sys.argv[1:] if argv is None else argv)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    report = {'commit': git_commit(), 'load': {'start': os.getloadavg()},
        'repeat': args.repeat}
    try:
        run(args, report)
    finally:
        if report.get('database', {}).get('created') and not args.keep_db:
            try:
                drop_db(DB_NAME)
            except Exception as exception:
                print('could not drop %s: %s' % (DB_NAME, exception),
                    file=sys.stderr)
    report['load']['end'] = os.getloadavg()
    data = report['data']
    print('health_imaging reporting benchmark: %d requests (%s), %d results '
        '(%d draft) over %d days, %s database %s, %d CPUs, commit %s' % (
            data['requests'], ', '.join('%s %d' % i
                for i in sorted(data['request_states'].items())),
            data['results'], data['draft_results'], args.days, backend.name,
            DB_NAME, os.cpu_count(), report['commit']))
    print('generated in %.1f s (ORM setup %.1f s, bulk insert %.1f s, '
        'analyze %.1f s)' % (
            data['orm_setup_s'] + data['simulate_s'] + data['insert_s'],
            data['orm_setup_s'], data['insert_s'], data['analyze_s']))
    print()
    print_table(report)
    if args.json:
        print(json.dumps(report, indent=2, default=str))


if __name__ == '__main__':
    main()
