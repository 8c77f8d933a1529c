# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Run a benchmark of this folder on the modules of another checkout.

Usage (from the repository root, with the project's virtualenv)::

    git clone --shared . /tmp/before && git -C /tmp/before checkout main
    python -m bench.at_checkout /tmp/before sync_bench --studies 2000

The same benchmark then measures both versions: the modules are installed
editable, and their import is pointed at the checkout's folders.
"""
import os
import runpy
import sys

MODULES = ['health_orthanc', 'health_imaging']


def point_at(root):
    "Make trytond.modules.health_* import from the checkout at root"
    if any('trytond.modules.' + m in sys.modules for m in MODULES):
        raise SystemExit('the modules are already imported')
    finders = [module for name, module in list(sys.modules.items())
        if name.startswith('__editable__')
        and 'trytond.modules.health_orthanc' in getattr(
            module, 'MAPPING', {})]
    if not finders:
        raise SystemExit('the modules are not installed editable '
            '(pip install -e .)')
    for finder in finders:
        for name in MODULES:
            finder.MAPPING['trytond.modules.' + name] = os.path.join(
                root, name)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        raise SystemExit(__doc__)
    root, bench, args = os.path.abspath(argv[0]), argv[1], argv[2:]
    point_at(root)
    sys.argv = ['bench.' + bench] + args
    runpy.run_module('bench.' + bench, run_name='__main__', alter_sys=True)


if __name__ == '__main__':
    main()
