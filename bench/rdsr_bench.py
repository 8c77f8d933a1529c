# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Benchmark of the RDSR reading: parse in memory, and fetch + parse from
a real Orthanc.

Prints figures, never asserts on them.  Usage (from the repository
root)::

    python -m bench.rdsr_bench [--count 1000] [--repeat 3] [--sync] [--json]

1. *parse*: ``dose.parse_dose_report`` on ``--count`` RDSR files in memory
   (bytes), per kind of sample and for the mix used below.
2. *Orthanc*: ``--count`` studies, each with one CT image and one RDSR (the
   mix), are uploaded to a throw-away Orthanc (not timed).  Then, as the
   sync would for each study: list its series (``/studies/{id}/series``),
   ask the SOP class of each instance of an SR series
   (``/instances/{id}/metadata/SopClassUid``), download the candidates
   (``/instances/{id}/file``) and parse them.  The series listing is shown
   apart: the sync already fetches it.
3. *sync* (``--sync``): the synchronization itself (``sync_now``, the
   Tryton store) of a database with health_orthanc, chosen as for the
   tests (``TRYTOND_DATABASE_URI``, ``DB_NAME``, ``DB_CACHE``): the first
   import of ``--count`` dose studies, then the incremental sync of
   ``--count`` more, each timed whole and in its dose steps (the dose
   reports read from Orthanc and parsed, ``Synchronizer._dose_reports``;
   stored, ``gnuhealth.orthanc.dose.store_reports``).
"""
import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pydicom
import requests

from trytond.modules.health_orthanc.dose import (
    OK, is_dose_report_candidate, parse_dose_report)
from trytond.modules.health_orthanc.tests import rdsr_samples as samples
from trytond.modules.health_orthanc.tests.orthanc_server import OrthancServer

MIX = ['ct_three_events', 'ct_three_events', 'ct_head_legacy',
    'projection_radiography', 'fluoroscopy_biplane', 'mammography_both']


def ct_twenty_events(**kwargs):
    "A long CT examination: 20 acquisitions"
    return samples.ct_report([samples.ct_event('Phase %d' % n, '7.5', '300',
                number=n) for n in range(1, 21)], '6000', **kwargs)


KINDS = dict(samples.SAMPLES, ct_twenty_events=ct_twenty_events)


def rdsr_bytes(name, index):
    patient_id = 'BENCH-%06d' % index
    return samples.to_bytes(KINDS[name](patient_id=patient_id,
            study_uid=samples.make_uid('study', patient_id, 'bench'),
            seed=1))


def time_parse(datas):
    "Return (wall, CPU) seconds to parse datas"
    wall, cpu = time.perf_counter(), time.process_time()
    for data in datas:
        parse_dose_report(data)
    return time.perf_counter() - wall, time.process_time() - cpu


def time_pydicom(datas):
    "The floor: pydicom reading every element of every content tree"
    wall, cpu = time.perf_counter(), time.process_time()
    for data in datas:
        for _ in pydicom.dcmread(io.BytesIO(data)).iterall():
            pass
    return time.perf_counter() - wall, time.process_time() - cpu


def measure_parse(count, repeat):
    """Each kind once; the mix, and pydicom alone on the mix, repeat
    times (median)"""
    rows = []
    for name in ['ct_three_events', 'ct_twenty_events', 'ct_head_legacy',
            'projection_radiography', 'fluoroscopy_biplane',
            'mammography_both', 'private_template', 'mix', 'pydicom']:
        kind = name if name in KINDS else None
        datas = [rdsr_bytes(kind or MIX[i % len(MIX)], i)
            for i in range(count)]
        function = time_pydicom if name == 'pydicom' else time_parse
        runs = [function(datas) for _ in range(1 if kind else repeat)]
        wall, cpu = sorted(runs)[len(runs) // 2]
        rows.append({'kind': name, 'count': count,
                'bytes': sum(map(len, datas)) // count,
                'seconds': wall, 'cpu_seconds': cpu, 'runs': runs})
    return rows


def upload(orthanc, count, threads=4, first=0):
    session = requests.Session()
    session.auth = orthanc.auth

    def post(index):
        name = MIX[index % len(MIX)]
        patient_id = 'BENCH-%06d' % index
        study_uid = samples.make_uid('study', patient_id, 'bench')
        study_ids = set()
        for data in [samples.make_image(study_uid, patient_id),
                rdsr_bytes(name, index)]:
            response = session.post(orthanc.url + '/instances', data=data,
                headers={'Content-Type': 'application/dicom'}, timeout=60)
            response.raise_for_status()
            study_ids.add(response.json()['ParentStudy'])
        return study_ids.pop()

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(post, range(first, first + count)))


def fetch_and_parse(orthanc, study_ids):
    "What the sync would do for these studies; return timings and counts"
    session = requests.Session()
    session.auth = orthanc.auth
    timing = dict.fromkeys(['series', 'metadata', 'download', 'parse'], 0.0)
    counts = dict.fromkeys(['requests', 'downloaded', 'bytes', 'ok'], 0)

    def get(path, phase):
        start = time.perf_counter()
        response = session.get(orthanc.url + path, timeout=60)
        response.raise_for_status()
        timing[phase] += time.perf_counter() - start
        counts['requests'] += 1
        return response

    cpu = time.process_time()
    for study_id in study_ids:
        series = get('/studies/%s/series' % study_id, 'series').json()
        modalities = {s['MainDicomTags'].get('Modality') for s in series}
        for item in series:
            modality = item['MainDicomTags'].get('Modality')
            if modality != 'SR':
                continue
            for instance_id in item['Instances']:
                sop_class = get('/instances/%s/metadata/SopClassUid'
                    % instance_id, 'metadata').text
                if not is_dose_report_candidate({'SopClassUid': sop_class,
                            'Modality': modality}, modalities):
                    continue
                data = get('/instances/%s/file' % instance_id,
                    'download').content
                counts['downloaded'] += 1
                counts['bytes'] += len(data)
                start = time.perf_counter()
                report = parse_dose_report(data)
                timing['parse'] += time.perf_counter() - start
                counts['ok'] += report.status == OK
    timing['cpu'] = time.process_time() - cpu
    return timing, counts


def measure_orthanc(count, repeat, workdir):
    with OrthancServer(workdir) as orthanc:
        start = time.perf_counter()
        study_ids = upload(orthanc, count)
        upload_seconds = time.perf_counter() - start
        runs = [fetch_and_parse(orthanc, study_ids) for _ in range(repeat)]
    totals = [sum(v for k, v in t.items() if k != 'cpu') for t, _ in runs]
    timing, counts = runs[totals.index(statistics.median_low(totals))]
    return {'count': count, 'upload_seconds': upload_seconds,
        'timing': timing, 'counts': counts, 'totals': totals}


class SyncTimers:
    "Time and calls of the dose steps of the sync, by in-process wrappers"

    def __init__(self):
        self.seconds = {'read': 0.0, 'store': 0.0}
        self.requests = {'instance_metadata': 0, 'instance_file': 0}
        self.reports = 0

    def install(self):
        from trytond.pool import Pool

        from trytond.modules.health_orthanc import sync as sync_module
        from trytond.modules.health_orthanc.orthanc_client import OrthancClient
        Dose = Pool().get('gnuhealth.orthanc.dose')
        read = sync_module.Synchronizer._dose_reports
        store = Dose.store_reports.__func__
        timers = self

        def timed_read(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                reports = read(self, *args, **kwargs)
                timers.reports += len(reports)
                return reports
            finally:
                timers.seconds['read'] += time.perf_counter() - start

        def timed_store(cls, *args, **kwargs):
            start = time.perf_counter()
            try:
                return store(cls, *args, **kwargs)
            finally:
                timers.seconds['store'] += time.perf_counter() - start
        sync_module.Synchronizer._dose_reports = timed_read
        Dose.store_reports = classmethod(timed_store)
        for name in self.requests:
            method = getattr(OrthancClient, name)

            def counted(client, *args, _method=method, _name=name):
                timers.requests[_name] += 1
                return _method(client, *args)
            setattr(OrthancClient, name, counted)

    def snapshot(self):
        return (dict(self.seconds), dict(self.requests), self.reports)


def measure_sync(count, workdir):
    """The first import of count dose studies and the incremental sync of
    count more, in a database with health_orthanc"""
    from trytond.pool import Pool
    from trytond.tests.test_tryton import DB_NAME, activate_module
    from trytond.transaction import Transaction
    activate_module('health_orthanc')
    timers = SyncTimers()
    with Transaction().start(DB_NAME, 1):
        timers.install()
    runs = {}
    # No Stable* changes: the incremental sync reads each study once
    with OrthancServer(workdir, stable_age=24 * 3600) as orthanc:
        upload(orthanc, count)
        with Transaction().start(DB_NAME, 1) as transaction:
            Server = Pool().get('gnuhealth.orthanc.config')
            server, = Server.create([{
                        'label': 'RDSR bench %s' % time.time(),
                        'domain': orthanc.url, 'user': orthanc.user,
                        'password': orthanc.password, 'validated': True,
                        }])
            transaction.commit()
            server_id = server.id
        for phase in ['first import', 'incremental']:
            if phase == 'incremental':
                upload(orthanc, count, first=count)
            seconds, requests_, reports = timers.snapshot()
            start = time.perf_counter()
            with Transaction().start(DB_NAME, 1) as transaction:
                Server = Pool().get('gnuhealth.orthanc.config')
                result = Server.sync_now([Server(server_id)])[server_id]
                transaction.commit()
            wall = time.perf_counter() - start
            if result is None:
                raise RuntimeError('the sync failed')
            runs[phase] = {
                'wall': wall,
                'requests': result.requests,
                'studies': result.studies,
                'reports': timers.reports - reports,
                'read': timers.seconds['read'] - seconds['read'],
                'store': timers.seconds['store'] - seconds['store'],
                'dose_requests': {k: v - requests_[k]
                    for k, v in timers.requests.items()},
                }
        with Transaction().start(DB_NAME, 1, readonly=True):
            Dose = Pool().get('gnuhealth.orthanc.dose')
            runs['doses'] = Dose.search_count([])
    return runs


def git_commit():
    try:
        return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
            capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return '?'


def print_report(report):
    per_1000 = 1000 / report['count']
    print('RDSR benchmark: %d RDSRs, median of %d rounds, %d CPUs, '
        'commit %s' % (report['count'], report['repeat'], os.cpu_count(),
            report['commit']))
    print()
    print('%-28s %8s %12s %12s %10s' % ('parse in memory', 'bytes',
            'wall s/1000', 'CPU s/1000', 'RDSR/s'))
    for row in report['parse']:
        label = {'mix': 'mix (as uploaded below)',
            'pydicom': 'floor: pydicom reads the mix'}.get(row['kind'],
            row['kind'])
        print('%-28s %8d %12.3f %12.3f %10.0f' % (label, row['bytes'],
                row['seconds'] * 1000 / row['count'],
                row['cpu_seconds'] * 1000 / row['count'],
                row['count'] / row['seconds']))
    orthanc = report['orthanc']
    timing, counts = orthanc['timing'], orthanc['counts']
    print()
    print('Orthanc: %d studies (CT image + RDSR, the mix), uploaded in '
        '%.1f s (not measured below)' % (orthanc['count'],
            orthanc['upload_seconds']))
    print('%-36s %10s %14s' % ('phase', 'seconds', 's per 1,000'))
    for phase, label in [
            ('series', 'list series (the sync has it)'),
            ('metadata', 'SopClassUid of SR instances'),
            ('download', 'download candidates'),
            ('parse', 'parse')]:
        print('%-36s %10.3f %14.3f' % (label, timing[phase],
                timing[phase] * per_1000))
    extra = timing['metadata'] + timing['download'] + timing['parse']
    print('%-36s %10.3f %14.3f' % ('RDSR cost over the sync', extra,
            extra * per_1000))
    total = sum(v for k, v in timing.items() if k != 'cpu')
    print('%-36s %10.3f %14.3f' % ('all of it', total, total * per_1000))
    print('%-36s %10.3f %14.3f' % ('CPU of this process (all of it)',
            timing['cpu'], timing['cpu'] * per_1000))
    print('%d HTTP requests, %d RDSRs downloaded (%d KiB), %d understood; '
        'rounds: %s s' % (counts['requests'], counts['downloaded'],
            counts['bytes'] // 1024, counts['ok'],
            ', '.join('%.3f' % t for t in orthanc['totals'])))
    if report.get('sync'):
        print_sync(report['count'], report['sync'])
    print('load averages (1, 5, 15 min): %s at the start, %s at the end'
        % tuple(' '.join('%.2f' % v for v in report['load'][k])
            for k in ['start', 'end']))


def print_sync(count, runs):
    from trytond import backend
    per_1000 = 1000 / count
    print()
    print('The sync (sync_now, %s): %d dose studies each, %d dose reports '
        'stored' % (backend.name, count, runs['doses']))
    print('%-34s %12s %12s' % ('', 'first import', 'incremental'))
    phases = [runs['first import'], runs['incremental']]
    for label, value in [
            ('studies imported', lambda r: '%d' % r['studies']),
            ('dose reports read', lambda r: '%d' % r['reports']),
            ('sync: s per 1,000 studies',
                lambda r: '%.2f' % (r['wall'] * per_1000)),
            ('sync: HTTP requests', lambda r: '%d' % r['requests']),
            ('  of which SopClassUid', lambda r: '%d' % r['dose_requests'][
                    'instance_metadata']),
            ('  of which RDSR downloads', lambda r: '%d' % r[
                    'dose_requests']['instance_file']),
            ('RDSR read + parse: s per 1,000',
                lambda r: '%.2f' % (r['read'] * per_1000)),
            ('RDSR store: s per 1,000',
                lambda r: '%.2f' % (r['store'] * per_1000)),
            ('RDSR share of the sync', lambda r: '%.0f %%' % (
                    100 * (r['read'] + r['store']) / r['wall'])),
            ]:
        print('%-34s %12s %12s' % (label, *map(value, phases)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--count', type=int, default=1000)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--sync', action='store_true',
        help='also measure the sync of a Tryton database')
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
    report = {'commit': git_commit(), 'count': args.count,
        'repeat': args.repeat, 'load': {'start': os.getloadavg()}}
    report['parse'] = measure_parse(args.count, args.repeat)
    with tempfile.TemporaryDirectory(prefix='rdsr-bench-') as workdir:
        report['orthanc'] = measure_orthanc(args.count, args.repeat,
            workdir)
    if args.sync:
        with tempfile.TemporaryDirectory(prefix='rdsr-bench-') as workdir:
            report['sync'] = measure_sync(args.count, workdir)
    report['load']['end'] = os.getloadavg()
    print_report(report)
    if args.json:
        print(json.dumps(report, indent=1))


if __name__ == '__main__':
    sys.exit(main())
