# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Build a GNU Health 5.0 database with GNU Health's own imaging modules.

Run with the Python of a virtualenv that holds gnuhealth-imaging and
gnuhealth-orthanc 5.0.x (tests/upgrade/requirements-legacy.txt), never
ours: it creates the database, activates health_orthanc, then does what a
hospital does with these modules through their wizards: orders, results
with images, local edits of the catalogue, an Orthanc server synchronized
with GNU Health's "Get new studies", a study linked by hand, a study
attached to a result, notes. The studies of legacy_data.STUDIES must be in
the Orthanc server already.

    python build_legacy.py -c trytond.conf -d NAME \
        --orthanc URL USER --facts facts.json

with the Orthanc password in the environment variable ORTHANC_PASSWORD
(never on the command line: a password may start with a dash).

facts.json receives what the database holds (the test compares the upgraded
database with it) and how long each step took.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

import legacy_data as data


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('-c', '--config', required=True)
    parser.add_argument('-d', '--database', required=True)
    parser.add_argument('--orthanc', nargs=2, required=True,
        metavar=('URL', 'USER'))
    parser.add_argument('--facts', required=True)
    return parser.parse_args(argv)


def create_database(config_file, name):
    "Create the empty database (trytond-admin only initializes it)"
    from trytond import backend
    from trytond.config import config
    config.update_etc(config_file)
    if backend.name == 'sqlite':
        path = os.path.join(config.get('database', 'path'), name + '.sqlite')
        if os.path.exists(path):
            os.remove(path)
        open(path, 'w').close()
        return
    database = backend.Database().connect()
    connection = database.get_connection(autocommit=True)
    try:
        cursor = connection.cursor()
        cursor.execute('DROP DATABASE IF EXISTS "%s"' % name)
        database.create(connection, name)
    finally:
        database.put_connection(connection, True)


def trytond_admin(config_file, name, *args):
    admin = os.path.join(os.path.dirname(sys.executable), 'trytond-admin')
    with tempfile.NamedTemporaryFile('w', suffix='.pass') as passfile:
        passfile.write('admin\n')
        passfile.flush()
        subprocess.run([admin, '-c', config_file, '-d', name, *args],
            check=True, stdin=subprocess.DEVNULL,
            env=dict(os.environ, TRYTONPASSFILE=passfile.name))


def build_database(args):
    "Create the database with health_orthanc active; return the timings"
    timings = {}
    start = time.monotonic()
    create_database(args.config, args.database)
    trytond_admin(args.config, args.database, '--all',
        '--email', 'admin@example.org')
    timings['initialize'] = time.monotonic() - start
    start = time.monotonic()
    trytond_admin(args.config, args.database, '-u', 'health_orthanc',
        '--activate-dependencies')
    timings['activate'] = time.monotonic() - start
    return timings


def create_party(**values):
    "GNU Health 5.0 wants parties created one by one"
    from proteus import Model
    Party = Model.get('party.party')
    party = Party(is_person=True, fed_country='XXX', **values)
    party.save()
    return party


def create_people():
    from proteus import Model
    User = Model.get('res.user')
    HealthProfessional = Model.get('gnuhealth.healthprofessional')
    Patient = Model.get('gnuhealth.patient')
    admin, = User.find([('login', '=', 'admin')])
    # The legacy wizards default to the user's health professional
    doctor = HealthProfessional(party=create_party(
            name="Gregory", lastname="House", is_healthprof=True,
            gender='m', internal_user=admin))
    doctor.save()
    radiologist = HealthProfessional(party=create_party(
            name="Rita", lastname="Ray", is_healthprof=True, gender='f'))
    radiologist.save()
    patients = {}
    for puid, name, lastname, gender in [
            (data.PUID_ANA, "Ana", "Betz", 'f'),
            (data.PUID_BEN, "Ben", "Adler", 'm'),
            (data.PUID_CARL, "Carl", "Klein", 'm')]:
        party = create_party(name=name, lastname=lastname, gender=gender,
            is_patient=True, ref=puid, dob=data.BIRTH_DATE)
        patients[puid], = Patient.find([('party', '=', party.id)])
    return doctor, radiologist, patients


def edit_catalogue():
    "Add types and tests of the hospital's own"
    from proteus import Model
    TestType = Model.get('gnuhealth.imaging.test.type')
    ImagingTest = Model.get('gnuhealth.imaging.test')
    Product = Model.get('product.product')
    # The shipped types are protected: only the hospital's own are edited
    mammography = TestType(code='MG', name=data.MG_LOCAL_NAME)
    mammography.save()
    product, = Product.find([('name', '=', "CT Scan charges")])
    tests = {}
    for code, name, type_code in data.LOCAL_TESTS:
        test_type, = TestType.find([('code', '=', type_code)])
        test = ImagingTest(code=code, name=name, test_type=test_type,
            product=product)
        test.save()
        tests[code] = test
    return tests


def order(patient, tests, urgent=False):
    "Order tests with the legacy wizard; return the requests"
    from proteus import Model, Wizard
    Request = Model.get('gnuhealth.imaging.test.request')
    ImagingTest = Model.get('gnuhealth.imaging.test')
    before = {r.id for r in Request.find([])}
    wizard = Wizard('gnuhealth.patient.imaging.test.request')
    wizard.form.patient = patient
    wizard.form.urgent = urgent
    wizard.form.tests.extend([ImagingTest(t.id) for t in tests])
    wizard.execute('request')
    return sorted((r for r in Request.find([]) if r.id not in before),
        key=lambda r: r.id)


def create_orders(patients, tests, radiologist):
    "Requests in every legacy state, results with and without a report"
    from proteus import Model, Wizard
    Attachment = Model.get('ir.attachment')
    Result = Model.get('gnuhealth.imaging.test.result')
    head, abdomen = order(patients[data.PUID_ANA],
        [tests['CT-HEAD'], tests['US-ABD']], urgent=True)
    head.comment = data.REQUEST_COMMENT
    head.save()
    brain, = order(patients[data.PUID_BEN], [tests['IMG-MR-BRAIN']])
    order(patients[data.PUID_CARL], [tests['MAMMO']])  # stays draft
    for request in [head, abdomen, brain]:
        request.click('requested')
    Wizard('wizard.generate.result', [head, abdomen])
    result, = Result.find([('request', '=', head.id)])
    result.comment = data.INTERPRETATION
    result.doctor = radiologist
    result.save()
    image = Attachment(name=data.IMAGE_NAME, resource=result,
        data=data.IMAGE_DATA, description="Key image")
    image.save()
    return result


def connect_orthanc(url, user, password):
    "Add the server with the legacy wizard and run Get new studies"
    from proteus import Wizard
    wizard = Wizard('gnuhealth.imaging_orthanc.wizard.orthanc_new_connect')
    wizard.form.label = "Main PACS"
    wizard.form.domain = url
    wizard.form.proxy_domain = 'https://pacs.example.org/orthanc/'
    wizard.form.user = user
    wizard.form.password = password
    wizard.execute('connect')
    wizard = Wizard('gnuhealth.imaging_orthanc.get_new_studies')
    wizard.execute('update')


def decide_by_hand(patients, result):
    "What the users did on the legacy study records"
    from proteus import Model
    Study = Model.get('gnuhealth.imaging_orthanc.study')
    Series = Model.get('gnuhealth.imaging_orthanc.study_series')
    for patient_id, _, _, decision in data.STUDIES.values():
        study, = Study.find([('patient_id', '=', patient_id)])
        if decision == 'result':
            study.imaging_test = result
            study.notes = data.STUDY_NOTES
            study.merge_comment = data.MERGE_COMMENT
            study.save()
            series = Series.find([('study', '=', study.id)])
            series[0].notes = data.SERIES_NOTES
            series[0].save()
        elif decision == 'manual':
            study.patient = patients[data.PUID_BEN]
            study.save()


def orthanc_id(*identifiers):
    "The Orthanc ID of DICOM identifiers, as Orthanc computes it"
    digest = hashlib.sha1('|'.join(identifiers).encode('utf-8')).hexdigest()
    return '-'.join(digest[i:i + 8] for i in range(0, 40, 8))


def add_v4_records(patients):
    """The records of GNU Health 4's module, which 5.0 keeps (its models
    gnuhealth.orthanc.patient and .study, with their old columns)"""
    from proteus import Model
    Server = Model.get('gnuhealth.orthanc.config')
    Study = Model.get('gnuhealth.imaging_orthanc.study')
    Result = Model.get('gnuhealth.imaging.test.result')
    OrthancPatient = Model.get('gnuhealth.orthanc.patient')
    OrthancStudy = Model.get('gnuhealth.orthanc.study')
    server, = Server.find([])
    patient_id, name, _, _ = data.STUDIES[data.V4_STUDY]
    study, = Study.find([('patient_id', '=', patient_id)])
    result, = Result.find([('comment', '=', None)])
    # Their fields are read-only in the client: created as their sync did
    orthanc_patient, = OrthancPatient._proxy.create([{
                'server': server.id, 'name': name, 'ident': patient_id,
                'uuid': orthanc_id(patient_id), 'bd': data.BIRTH_DATE,
                'patient': patients[data.PUID_CARL].id,
                }], {})
    OrthancStudy._proxy.create([{
                'server': server.id, 'patient': orthanc_patient,
                'uuid': study.orthanc_UID,
                'instance_uid': study.study_instance_UID,
                'description': "Old description", 'imaging_test': result.id,
                }], {})


def build_data(args):
    from proteus import config
    config.set_trytond(args.database, config_file=args.config)
    _, radiologist, patients = create_people()
    tests = edit_catalogue()
    result = create_orders(patients, tests, radiologist)
    connect_orthanc(*args.orthanc, os.environ['ORTHANC_PASSWORD'])
    decide_by_hand(patients, result)
    add_v4_records(patients)


def read_facts():
    "What the legacy database holds, for the comparison after the upgrade"
    from proteus import Model

    def ref(record):
        return record.id if record else None
    Request = Model.get('gnuhealth.imaging.test.request')
    Result = Model.get('gnuhealth.imaging.test.result')
    TestType = Model.get('gnuhealth.imaging.test.type')
    ImagingTest = Model.get('gnuhealth.imaging.test')
    Server = Model.get('gnuhealth.orthanc.config')
    Study = Model.get('gnuhealth.imaging_orthanc.study')
    Series = Model.get('gnuhealth.imaging_orthanc.study_series')
    Instance = Model.get('gnuhealth.imaging_orthanc.series_instances')
    Attachment = Model.get('ir.attachment')
    return {
        'requests': [{
                'id': r.id, 'request': r.request,
                'request_line': r.request_line, 'state': r.state,
                'patient': ref(r.patient), 'test': ref(r.requested_test),
                'doctor': ref(r.doctor), 'date': r.date.isoformat(),
                'urgent': r.urgent, 'comment': r.comment,
                } for r in Request.find([])],
        'results': [{
                'id': r.id, 'number': r.number, 'comment': r.comment,
                'doctor': ref(r.doctor), 'patient': ref(r.patient),
                'request': ref(r.request), 'order': r.order,
                'date': r.date.isoformat(),
                'images': sorted(a.name for a in Attachment.find([
                            ('resource', '=', 'gnuhealth.imaging.test.result,'
                                '%s' % r.id)])),
                } for r in Result.find([])],
        'test_types': {t.code: {'id': t.id, 'name': t.name}
            for t in TestType.find([])},
        'tests': {t.code: {'id': t.id, 'name': t.name,
                'type': ref(t.test_type), 'product': ref(t.product)}
            for t in ImagingTest.find([])},
        'servers': [{
                'id': s.id, 'label': s.label, 'domain': s.domain,
                'user': s.user, 'password': s.password,
                'proxy_domain': s.proxy_domain,
                'last_changed_index': s.last_changed_index,
                } for s in Server.find([])],
        'studies': [{
                'id': s.id, 'orthanc_id': s.orthanc_UID,
                'study_instance_uid': s.study_instance_UID,
                'patient_id': s.patient_id, 'patient': ref(s.patient),
                'result': ref(s.imaging_test), 'notes': s.notes,
                'merge_comment': s.merge_comment,
                } for s in Study.find([])],
        'v4_patients': [{
                'orthanc_id': p.uuid, 'patient': ref(p.patient),
                } for p in Model.get('gnuhealth.orthanc.patient').find([])],
        'v4_studies': [{
                'orthanc_id': s.uuid, 'result': ref(s.imaging_test),
                } for s in Model.get('gnuhealth.orthanc.study').find([])],
        'series': len(Series.find([])),
        'instances': len(Instance.find([])),
        }


def main(argv=None):
    args = parse_args(argv)
    timings = build_database(args)
    start = time.monotonic()
    build_data(args)
    facts = read_facts()
    timings['data'] = time.monotonic() - start
    facts['timings'] = timings
    with open(args.facts, 'w') as file:
        json.dump(facts, file, indent=1, sort_keys=True)


if __name__ == '__main__':
    main()
