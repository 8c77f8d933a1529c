# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Benchmark of PACS query/retrieve through Orthanc's REST API vs dcmtk.

Two real Orthancs on loopback (``tests/pacs_pair.py``): a PACS loaded with
``--studies`` small studies of one patient, and GNU Health's Orthanc.  In
the same run it times:

* query: a study-level C-FIND that returns every study, through
  ``OrthancClient.find_studies`` (``POST /modalities/PACS/query`` and
  ``GET /queries/{id}/answers?expand&simplify``) and through dcmtk's
  ``findscu``;
* retrieve: moving ``--retrieve`` of those studies into our Orthanc, through
  ``OrthancClient.retrieve_studies`` (a C-FIND of the UIDs, then an
  asynchronous ``/queries/{id}/retrieve`` job, polled until done), through
  the synchronous ``/modalities/PACS/move`` (one C-MOVE per study, and one
  C-MOVE of the list of UIDs), and through ``movescu`` (one C-MOVE of the
  list of UIDs, our Orthanc as destination).

Each configuration is run with ``TCP_NODELAY=1`` in the environment of the
Orthancs and of findscu/movescu (dcmtk leaves Nagle's algorithm on without
it); ``--nagle`` also runs it without.  Prints figures (median of
``--repeat`` runs, in seconds), never asserts on them.  Usage::

    python -m bench.pacs_bench [--studies 500] [--retrieve 100]
        [--repeat 3] [--nagle] [--json]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date

from tests.pacs_pair import OUR_AET, PACS_AET, start_pair
from trytond.modules.health_orthanc import dicom_network
from trytond.modules.health_orthanc.orthanc_client import OrthancClient
from trytond.modules.health_orthanc.tests.pacs_samples import (
    bulk_studies, load)

PATIENT = 'BENCH'
POLL = 0.01


def dcmtk_env(nodelay: bool) -> dict:
    env = dict(os.environ)
    env.pop('TCP_NODELAY', None)
    if nodelay:
        env['TCP_NODELAY'] = '1'
    return env


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def rest_query(client):
    return len(client.find_studies(PACS_AET,
            {'PatientID': PATIENT}))


def findscu(pacs, env):
    keys = ['QueryRetrieveLevel=STUDY', 'PatientID=%s' % PATIENT]
    keys += ['%s' % k for k in dicom_network.STUDY_RETURN_KEYS
        if k != 'PatientID']
    command = ['findscu', '-S', '-aet', OUR_AET, '-aec', PACS_AET]
    for key in keys:
        command += ['-k', key]
    command += ['127.0.0.1', str(pacs.dicom_port_used)]
    # answers are logged at info level on stderr: count them
    output = subprocess.run(command, env=env, check=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).stderr
    return output.count('Find Response:')


def rest_retrieve(client, uids):
    job_id, missing = client.retrieve_studies(PACS_AET, uids)
    assert not missing, missing
    while True:
        job = client.job_status(job_id, PACS_AET)
        if job.finished:
            assert job.succeeded, job.error
            return job.moved_count
        time.sleep(POLL)


def rest_move(client, uids, one_move=False):
    client.move_studies(PACS_AET, uids, one_move=one_move)
    return len(uids)


def movescu(pacs, uids, env):
    command = ['movescu', '-S', '-aet', OUR_AET, '-aec', PACS_AET,
        '-aem', OUR_AET, '-k', 'QueryRetrieveLevel=STUDY',
        '-k', 'StudyInstanceUID=%s' % '\\'.join(uids),
        '127.0.0.1', str(pacs.dicom_port_used)]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    return len(uids)


def run(workdir, args, nodelay):
    pacs, ours = start_pair(workdir, tcp_nodelay=nodelay,
        our_config={'JobsHistorySize': 10})
    try:
        studies = bulk_studies(PATIENT, args.studies, date(2023, 1, 1),
            days=365)
        load(pacs.upload, studies)
        uids = [s.study_uid for s in studies[:args.retrieve]]
        env = dcmtk_env(nodelay)
        client = OrthancClient(ours.url, ours.user, ours.password,
            timeout=(5, 600))
        figures = {}

        def measure(name, function, *call, expected, clear=False):
            times = []
            for _ in range(args.repeat):
                if clear:
                    ours.clear()
                seconds, count = timed(function, *call)
                if clear:
                    count = len(client.find_local_studies(uids))
                if count != expected:
                    raise AssertionError('%s: %s instead of %s'
                        % (name, count, expected))
                times.append(seconds)
            figures[name] = statistics.median(times)

        measure('query REST', rest_query, client, expected=args.studies)
        measure('query findscu', findscu, pacs, env, expected=args.studies)
        measure('retrieve REST job', rest_retrieve, client, uids,
            expected=args.retrieve, clear=True)
        measure('retrieve REST move', rest_move, client, uids,
            expected=args.retrieve, clear=True)
        measure('retrieve REST 1 move', rest_move, client, uids, True,
            expected=args.retrieve, clear=True)
        measure('retrieve movescu', movescu, pacs, uids, env,
            expected=args.retrieve, clear=True)
        client.close()
        return figures
    finally:
        ours.stop()
        pacs.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--studies', type=int, default=500)
    parser.add_argument('--retrieve', type=int, default=100)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--nagle', action='store_true',
        help='also run without TCP_NODELAY')
    parser.add_argument('--json', action='store_true')
    args = parser.parse_args(argv)
    if args.retrieve > args.studies:
        parser.error('--retrieve must not exceed --studies')
    for tool in ('findscu', 'movescu'):
        if not shutil.which(tool):
            parser.error('%s not found: apt-get install dcmtk' % tool)
    results = {}
    for nodelay in (True, False) if args.nagle else (True,):
        label = 'TCP_NODELAY=1' if nodelay else 'Nagle on'
        workdir = tempfile.mkdtemp(prefix='pacs-bench-')
        try:
            results[label] = run(workdir, args, nodelay)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        json.dump({'studies': args.studies, 'retrieve': args.retrieve,
                'repeat': args.repeat, 'results': results}, sys.stdout,
            indent=2)
        print()
        return
    print('%d studies on the PACS, %d retrieved; median of %d runs, seconds'
        % (args.studies, args.retrieve, args.repeat))
    for label, figures in results.items():
        print('\n%s' % label)
        for name, seconds in figures.items():
            print('  %-20s %8.3f' % (name, seconds))


if __name__ == '__main__':
    main()
