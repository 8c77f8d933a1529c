# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Benchmark of research copies: Copy to Project of many studies, through
the models, between two real Orthancs.

Prints figures, never asserts on them.  Usage (from the repository root)::

    python -m bench.research_bench [--studies 100] [--patients 10]
        [--series 2] [--instances 5] [--profile basic_dates_shifted]

The database is chosen as for the Tryton tests (``TRYTOND_DATABASE_URI``,
``DB_NAME``, ``DB_CACHE``; see bench/README.md).  A clinical and a research
Orthanc (``health_orthanc/tests/orthanc_server.py``) are started; the
studies (``health_orthanc/tests/phi_samples.py``: identifying values in
many places, dates that differ per series and instance) are uploaded to
the clinical one and synced, their patients enrolled; then
``request_copies`` queues the copy of every study and ``run_copies`` (the
queued task, committing each copy) makes them.  The time of each step of
a copy is summed by wrapping the functions of ``deid_copy``.
"""
import argparse
import collections
import datetime
import functools
import shutil
import statistics
import tempfile
import time
import warnings

from trytond.pool import Pool
from trytond.tests.test_tryton import DB_NAME, activate_module, drop_db
from trytond.transaction import Transaction

from trytond.modules.health_orthanc import deid_copy
from trytond.modules.health_orthanc.orthanc_client import OrthancClient
from trytond.modules.health_orthanc.tests.orthanc_server import OrthancServer
from trytond.modules.health_orthanc.tests.phi_samples import (
    Patient, make_phi_study)

warnings.filterwarnings('ignore', category=UserWarning,
    module=r'trytond\.backend\.sqlite\.table')

CLEAN = {'StudyDescription': 'CT thorax follow-up'}
STEPS = {
    'study_tags': 'read tags (original, copy)',
    'run_job': 'jobs (anonymize, store)',
    '_apply_corrections': 'corrections',
    'check_copy': 'check',
    'declare_peer': 'declare peer',
    'discard_copy': 'delete intermediate',
    }


def timed(totals, counts, name, func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - start
            counts[name] += 1
    return wrapper


def instrument():
    "Wrap the steps of deid_copy and count the HTTP requests"
    totals, counts = collections.Counter(), collections.Counter()
    for name in STEPS:
        setattr(deid_copy, name, timed(
                totals, counts, name, getattr(deid_copy, name)))
    checked = []
    check = deid_copy.check_copy

    def counting_check(*args, **kwargs):
        problems, values = check(*args, **kwargs)
        checked.append(values)
        return problems, values
    deid_copy.check_copy = counting_check
    requests = collections.Counter()
    request = OrthancClient.request

    def counting_request(self, method, path, *args, **kwargs):
        requests[method] += 1
        return request(self, method, path, *args, **kwargs)
    OrthancClient.request = counting_request
    return totals, counts, checked, requests


def upload(clinical, args):
    "Upload the studies: args.patients patients, studies spread evenly"
    patients = [Patient(puid='PUID-%04d-KX' % n, name='MÜLLER^Jörg%d' % n)
        for n in range(args.patients)]
    for n in range(args.studies):
        patient = patients[n % args.patients]
        date = datetime.date(2023, 1, 1) + datetime.timedelta(days=n)
        clinical.upload_many(make_phi_study(patient,
                accession='ACC%06d' % n, study_date=date.strftime('%Y%m%d'),
                n_series=args.series, n_instances=args.instances,
                extra=CLEAN))
    return patients


def setup(clinical, research, patients, args):
    "Servers, patients, the project and its subjects; return the ids"
    from trytond.modules.health_imaging.tests.tools import create_patient
    pool = Pool()
    Server = pool.get('gnuhealth.orthanc.config')
    ModelData = pool.get('ir.model.data')
    Project = pool.get('gnuhealth.imaging.research.project')
    Subject = pool.get('gnuhealth.imaging.research.subject')
    records = [create_patient('Jörg%d' % n, 'Müller', puid=p.puid,
            dob=datetime.date(1975, 3, 21))
        for n, p in enumerate(patients)]
    clinical_server, research_server = Server.create([{
                'label': 'Clinical', 'domain': clinical.url,
                'user': clinical.user, 'password': clinical.password,
                'validated': True,
                }, {
                'label': 'Research', 'domain': research.url,
                'user': research.user, 'password': research.password,
                'validated': True, 'research': True,
                }])
    project, = Project.create([{
                'code': 'BENCH', 'name': 'Bench',
                'pseudonym_prefix': 'BENCH',
                'research_server': research_server.id,
                'profile': ModelData.get_id(
                    'health_orthanc', 'deid_profile_%s' % args.profile),
                }])
    Subject.create([{'project': project.id, 'patient': p.id,
                'consent_date': datetime.date.today()} for p in records])
    return clinical_server.id, project.id


def run(args):
    workdir = tempfile.mkdtemp(prefix='research-bench-')
    clinical = OrthancServer(workdir + '/clinical').start()
    research = OrthancServer(workdir + '/research').start()
    try:
        start = time.perf_counter()
        patients = upload(clinical, args)
        print('uploaded %d studies of %d x %d instances (%d patients) in '
            '%.1f s' % (args.studies, args.series, args.instances,
                args.patients, time.perf_counter() - start))
        activate_module('health_orthanc')
        with Transaction().start(DB_NAME, 1) as transaction:
            server_id, project_id = setup(clinical, research, patients, args)
            transaction.commit()
            pool = Pool()
            Server = pool.get('gnuhealth.orthanc.config')
            Study = pool.get('gnuhealth.orthanc.study')
            Project = pool.get('gnuhealth.imaging.research.project')
            Copy = pool.get('gnuhealth.imaging.research.copy')
            Server.sync_now([Server(server_id)])
            studies = Study.search([])
            totals, counts, checked, requests = instrument()
            start = time.perf_counter()
            copies, refusals = Copy.request_copies(
                Project(project_id), studies)
            transaction.commit()
            requested = time.perf_counter() - start
            transaction.tasks.clear()
            start = time.perf_counter()
            Copy.run_copies(copies)
            elapsed = time.perf_counter() - start
            states = collections.Counter(c.state for c in Copy.browse(
                    [c.id for c in copies]))
            reasons = {c.reason for c in Copy.browse([c.id for c in copies])
                if c.state == 'failed'}
        received = len(research.request('GET', '/studies').json())
        report(args, len(studies), refusals, requested, elapsed, states,
            reasons, received, totals, counts, checked, requests)
    finally:
        clinical.stop()
        research.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        if DB_NAME != ':memory:':
            drop_db()


def report(args, n_studies, refusals, requested, elapsed, states, reasons,
        received, totals, counts, checked, requests):
    n = max(len(checked), 1)
    print('profile %s: %d studies, %d refused' % (
            args.profile, n_studies, len(refusals)))
    print('  request_copies (decide, create, queue): %.2f s' % requested)
    print('  run_copies: %.1f s, %.2f s per study, states %s, research '
        'Orthanc holds %d studies' % (elapsed, elapsed / n, dict(states),
            received))
    for reason in sorted(reasons)[:3]:
        print('  failed: %s' % reason)
    print('  values checked: %d in all, %d per study (median)' % (
            sum(checked), statistics.median(checked) if checked else 0))
    print('  HTTP requests: %s, %.1f per study' % (
            dict(requests), sum(requests.values()) / n))
    accounted = 0
    for name, label in STEPS.items():
        accounted += totals[name]
        print('    %-28s %6.2f s  %5d calls  %.3f s per study' % (
                label, totals[name], counts[name], totals[name] / n))
    print('    %-28s %6.2f s' % ('the rest (Tryton, plan)',
            elapsed - accounted))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--studies', type=int, default=100)
    parser.add_argument('--patients', type=int, default=10)
    parser.add_argument('--series', type=int, default=2)
    parser.add_argument('--instances', type=int, default=5)
    parser.add_argument('--profile', default='basic_dates_shifted',
        choices=['basic', 'basic_dates_shifted'])
    run(parser.parse_args())


if __name__ == '__main__':
    main()
