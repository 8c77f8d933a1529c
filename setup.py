"""Imaging for GNU Health: the health_imaging and health_orthanc modules.

Both modules are installed below ``trytond.modules`` (like Tryton's own
modules) and registered through the ``trytond.modules`` entry points, so
``trytond-admin -u health_imaging`` finds them in any virtual environment.
"""
import configparser
import io
import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = ['health_imaging', 'health_orthanc']


def read(fname):
    with io.open(os.path.join(HERE, fname), encoding='utf-8') as fp:
        return fp.read()


def module_version(module):
    config = configparser.ConfigParser()
    with io.open(os.path.join(HERE, module, 'tryton.cfg')) as fp:
        config.read_file(fp)
    return config.get('tryton', 'version')


packages, package_dir, package_data = [], {}, {}
for module in MODULES:
    for root, dirs, files in os.walk(os.path.join(HERE, module)):
        dirs[:] = [d for d in dirs if d != '__pycache__']
        rel = os.path.relpath(root, HERE)
        if '__init__.py' not in files:
            continue
        package = 'trytond.modules.' + rel.replace(os.sep, '.')
        packages.append(package)
        package_dir[package] = rel
    package_data['trytond.modules.' + module] = [
        'tryton.cfg', '*.xml', 'view/*.xml', 'report/*.fodt',
        'locale/*.po', 'tests/*.rst', 'tests/*.json', 'icons/*.svg']

setup(
    name='gnuhealth-imaging-orthanc',
    version=module_version('health_imaging'),
    description='Diagnostic imaging workflow and Orthanc DICOM integration '
    'for GNU Health',
    long_description=read('README.md'),
    long_description_content_type='text/markdown',
    license='GPL-3.0-or-later',
    python_requires='>=3.11',
    packages=packages,
    package_dir=package_dir,
    package_data=package_data,
    install_requires=[
        'trytond >= 7.0, < 7.1',
        'gnuhealth >= 5.0, < 5.1',
        'requests >= 2.28',
        'pydicom >= 2.3',
        'python-dateutil',
        # spreadsheets of PACS queries: XLSX, and ODS through calamine
        'openpyxl >= 3.1',
        'python-calamine >= 0.2',
        ],
    extras_require={
        'test': [
            'proteus >= 7.0, < 7.1', 'pytest', 'flake8', 'isort', 'sphinx',
            # health_services_imaging is installed by bin/lib.sh, without
            # its dependency on GNU Health's imaging package
            'gnuhealth-services >= 5.0, < 5.1'],
        'postgresql': ['psycopg2 >= 2.7'],
        },
    entry_points={
        'trytond.modules': [
            '%s = trytond.modules.%s' % (m, m) for m in MODULES],
        },
    zip_safe=False,
    )
