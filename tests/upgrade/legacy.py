# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Drive the upgrade from GNU Health's own imaging modules to ours.

Each step is a subprocess: the legacy database is built by the Python of
the legacy virtualenv (GNU Health's imaging and Orthanc packages), the
update and the checks run with ours. By hand, to measure:

    .venv/bin/python -m tests.upgrade.legacy --database upgrade_try

builds a legacy database (TRYTOND_DATABASE_URI, SQLite by default, in a
temporary folder), updates it with our modules and prints the timings.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

from trytond.modules.health_orthanc.tests.orthanc_case import upload_study

from . import legacy_data

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class LegacyMissing(RuntimeError):
    "The virtualenv with GNU Health's own imaging modules is missing"


def legacy_python():
    """Return the Python of the legacy virtualenv: LEGACY_PYTHON, the one
    of bin/test (bin/lib.sh ensure_legacy_venv) or .venv-legacy"""
    with open(os.path.join(HERE, 'requirements-legacy.txt'), 'rb') as file:
        key = hashlib.sha1(file.read()).hexdigest()[:12]
    candidates = [os.environ.get('LEGACY_PYTHON'),
        os.path.join(ROOT, '.cache', 'venv-legacy-' + key, 'bin', 'python'),
        os.path.join(ROOT, '.venv-legacy', 'bin', 'python')]
    for python in filter(None, candidates):
        if os.access(python, os.X_OK):
            return python
    raise LegacyMissing(
        "No virtualenv with GNU Health's own imaging modules: bin/test "
        "creates it; by hand: python3 -m venv .venv-legacy && "
        ".venv-legacy/bin/pip install -r "
        "tests/upgrade/requirements-legacy.txt")


def write_config(workdir, uri):
    "Write a trytond configuration for uri (SQLite files go in workdir)"
    path = os.path.join(workdir, 'trytond.conf')
    with open(path, 'w') as file:
        file.write('[database]\nuri = %s\npath = %s\n' % (uri, workdir))
    return path


def upload_studies(orthanc):
    "Upload the studies that the legacy users worked on"
    for seed, (patient_id, name, n_series, _) in (
            legacy_data.STUDIES.items()):
        upload_study(orthanc, patient_id, name, seed=seed,
            n_series=n_series)


def run(args, **kwargs):
    """Run args; raise with their output when they fail or log an error;
    return the seconds and the output"""
    start = time.monotonic()
    process = subprocess.run(args, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        **kwargs)
    if process.returncode or ' ERROR ' in process.stdout:
        raise RuntimeError("%s failed (%s):\n%s" % (
                ' '.join(args[:3]), process.returncode,
                process.stdout[-6000:]))
    return time.monotonic() - start, process.stdout


def build(config, database, orthanc, facts_path):
    "Build the legacy database; return its facts"
    run([legacy_python(), os.path.join(HERE, 'build_legacy.py'),
        '-c', config, '-d', database,
        '--orthanc', orthanc.url, orthanc.user, orthanc.password,
        '--facts', facts_path])
    with open(facts_path) as file:
        return json.load(file)


def upgrade(config, database):
    """Update the modules as the administrator does after replacing the
    packages; return the seconds it took and its output"""
    admin = os.path.join(os.path.dirname(sys.executable), 'trytond-admin')
    return run([admin, '-c', config, '-d', database,
            '-u', 'health_imaging', 'health_orthanc', '-v'])


def inspect(config, database, facts_path):
    "Sync, order and read the upgraded database; return its facts"
    run([sys.executable, os.path.join(HERE, 'inspect_upgraded.py'),
        '-c', config, '-d', database, '--facts', facts_path])
    with open(facts_path) as file:
        return json.load(file)


def main(argv=None):
    from trytond.modules.health_orthanc.tests.orthanc_server import (
        OrthancServer)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--database', default='upgrade_try')
    args = parser.parse_args(argv)
    uri = os.environ.get('TRYTOND_DATABASE_URI', 'sqlite://')
    with tempfile.TemporaryDirectory(prefix='upgrade-') as workdir:
        config = write_config(workdir, uri)
        with OrthancServer(os.path.join(workdir, 'orthanc')) as orthanc:
            upload_studies(orthanc)
            facts = build(config, args.database, orthanc,
                os.path.join(workdir, 'legacy.json'))
            seconds, output = upgrade(config, args.database)
        for line in output.splitlines():
            if ' WARNING ' in line:
                print(line)
        print(json.dumps(dict(facts['timings'], upgrade=seconds)))


if __name__ == '__main__':
    main()
