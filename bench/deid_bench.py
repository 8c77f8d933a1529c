# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Benchmark of de-identified copies: the PHI scanner and a real Orthanc.

Prints figures, never asserts on them.  Usage (from the repository root)::

    python -m bench.deid_bench [--scan-studies 100] [--scan-instances 100]
        [--studies 10] [--instances 20] [--series 2]

1. The scanner alone: ``--scan-studies`` x ``--scan-instances`` tag dumps
   (Orthanc's ``?short`` form of the sample study of
   ``health_orthanc/tests/phi_samples.py``, padded with 120 ordinary
   attributes per instance as a real CT has about 150), each instance with
   its own UIDs.  Scanned once as the original (findings everywhere) and
   once as a clean copy (every value goes through every test).
2. A real Orthanc (``tests/orthanc_server.py``): ``--studies`` studies of
   ``--series`` x ``--instances`` instances, copied with each shipped
   profile as the Tryton half will: read every instance's tags, plan,
   ``POST /studies/{id}/anonymize``, rewrite the instances whose own dates
   differ, read the copy's tags and scan them.  The time of each step per
   study is printed.
"""
import argparse
import shutil
import statistics
import tempfile
import time

from trytond.modules.health_orthanc.deidentify import (
    PROFILES, Subject, correction_body, plan_anonymization)
from trytond.modules.health_orthanc.phi_scan import Identity, PhiScanner
from trytond.modules.health_orthanc.tests.orthanc_server import OrthancServer
from trytond.modules.health_orthanc.tests.phi_samples import (
    PATIENT, Patient, make_phi_study)

SUBJECT = Subject('TRIAL-K3M9Q2XZ-7', -123)
IDENTITY = Identity(
    names=[PATIENT.name], identifiers=[PATIENT.puid, PATIENT.mrn,
        *PATIENT.other_ids], birth_date=PATIENT.birth_date,
    accession_numbers=['ACC552211'], institutions=[PATIENT.institution],
    physicians=[PATIENT.referring, PATIENT.performing])


def get_json(orthanc, path):
    return orthanc.request('GET', path).json()


def study_tags(orthanc, study_id):
    return {i['ID']: get_json(orthanc, '/instances/%s/tags?short' % i['ID'])
        for i in get_json(orthanc, '/studies/%s/instances' % study_id)}


def padded(tags, study, instance):
    "A dump of one instance with its own UIDs and 120 ordinary values"
    result = dict(tags)
    for key in ('0020,000d', '0020,000e', '0008,0018'):
        result[key] = '%s.%d.%d' % (tags[key], study, instance)
    for n in range(120):
        result['0018,%04x' % (0x1000 + n)] = str(
            (n * 7919 + instance) % 1000 / 10)
    result['0020,0032'] = '-125.0\\-125.0\\%d.5' % instance
    return result


def bench_scanner(orthanc, studies, instances):
    orthanc.clear()
    study_id = orthanc.upload_many(make_phi_study(
            n_series=1, n_instances=1))[0]['ParentStudy']
    plan = plan_anonymization(PROFILES['basic'], SUBJECT,
        study_tags(orthanc, study_id))
    copy_id = orthanc.request('POST', '/studies/%s/anonymize' % study_id,
        json=plan.body).json()['ID']
    original, = study_tags(orthanc, study_id).values()
    copy, = study_tags(orthanc, copy_id).values()
    for label, tags in (('original', original), ('clean copy', copy)):
        dumps = [('%d-%d' % (s, i), padded(tags, s, i))
            for s in range(studies) for i in range(instances)]
        values = sum(len(d) for _, d in dumps)
        start = time.perf_counter()
        findings = []
        for s in range(studies):
            scanner = PhiScanner(IDENTITY)   # one per study, as in use
            findings.extend(scanner.scan_many(
                    dumps[s * instances:(s + 1) * instances]))
        seconds = time.perf_counter() - start
        print('scan %-10s %d studies x %d instances (%d values): %.2f s, '
            '%.0f instances/s, %d findings' % (label, studies, instances,
                values, seconds, len(dumps) / seconds, len(findings)))


def copy_study(orthanc, study_id, profile):
    "Copy one study; return the seconds of each step"
    steps = {}
    start = time.perf_counter()
    tags = study_tags(orthanc, study_id)
    steps['read tags'] = time.perf_counter() - start

    start = time.perf_counter()
    plan = plan_anonymization(profile, SUBJECT, tags)
    steps['plan'] = time.perf_counter() - start

    start = time.perf_counter()
    copy_id = orthanc.request('POST', '/studies/%s/anonymize' % study_id,
        json=plan.body).json()['ID']
    steps['anonymize'] = time.perf_counter() - start

    start = time.perf_counter()
    if plan.corrections:
        copies = {orthanc.request('GET', '/instances/%s/metadata/'
                    'AnonymizedFrom' % i['ID']).text: i['ID']
            for i in get_json(orthanc, '/studies/%s/instances' % copy_id)}
        for original, changes in plan.corrections.items():
            data = orthanc.request('POST', '/instances/%s/modify'
                % copies[original], json=correction_body(changes)).content
            orthanc.request('DELETE', '/instances/%s' % copies[original])
            orthanc.upload(data)
    steps['corrections (%d)' % len(plan.corrections)] = (
        time.perf_counter() - start)

    start = time.perf_counter()
    copy_tags = study_tags(orthanc, copy_id)
    steps['read copy tags'] = time.perf_counter() - start
    start = time.perf_counter()
    PhiScanner(IDENTITY).scan_many(copy_tags.items())
    steps['scan'] = time.perf_counter() - start
    orthanc.request('DELETE', '/studies/%s' % copy_id)
    return steps


def bench_orthanc(orthanc, studies, series, instances):
    orthanc.clear()
    study_ids = []
    for n in range(studies):
        patient = Patient(puid='PUID-%04d-KX' % n)
        study_ids.append(orthanc.upload_many(make_phi_study(
                    patient, accession='ACC%06d' % n, n_series=series,
                    n_instances=instances))[0]['ParentStudy'])
    for profile in PROFILES.values():
        per_step = {}
        totals = []
        for study_id in study_ids:
            steps = copy_study(orthanc, study_id, profile)
            totals.append(sum(steps.values()))
            for name, seconds in steps.items():
                per_step.setdefault(name, []).append(seconds)
        print('%s: %d studies of %d x %d instances, per study: total '
            '%.3f s (median %.3f)' % (profile.name, studies, series,
                instances, statistics.mean(totals),
                statistics.median(totals)))
        for name, values in per_step.items():
            print('    %-22s %.3f s' % (name, statistics.mean(values)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scan-studies', type=int, default=100)
    parser.add_argument('--scan-instances', type=int, default=100)
    parser.add_argument('--studies', type=int, default=10)
    parser.add_argument('--series', type=int, default=2)
    parser.add_argument('--instances', type=int, default=20)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix='deid-bench-')
    try:
        with OrthancServer(workdir) as orthanc:
            bench_scanner(orthanc, args.scan_studies, args.scan_instances)
            bench_orthanc(orthanc, args.studies, args.series,
                args.instances)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
