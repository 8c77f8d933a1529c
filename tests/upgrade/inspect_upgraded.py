# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Use and read a database updated from GNU Health's own imaging modules.

Run with our virtualenv's Python after trytond-admin -u: it synchronizes the
Orthanc servers twice (the first sync after the update imports everything
again, the second must find nothing new), orders a test and writes its
result, then writes what the database holds to the facts file.

    python inspect_upgraded.py -c trytond.conf -d NAME --facts facts.json
"""
import argparse
import datetime
import json

from trytond.config import config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('-c', '--config', required=True)
    parser.add_argument('-d', '--database', required=True)
    parser.add_argument('--facts', required=True)
    return parser.parse_args(argv)


def counts(pool):
    "The number of Orthanc records and of distinct Orthanc IDs"
    result = {}
    for model in ['gnuhealth.orthanc.patient', 'gnuhealth.orthanc.study',
            'gnuhealth.orthanc.series']:
        records = pool.get(model).search([])
        result[model] = [
            len(records), len({(r.server.id, r.orthanc_id) for r in records})]
    return result


def sync(pool):
    "Synchronize every server now; return the counts after"
    Server = pool.get('gnuhealth.orthanc.config')
    servers = Server.search([])
    results = Server.sync_now(servers)
    for server in servers:
        if results[server.id] is None:
            raise RuntimeError("sync of %s failed: %s" % (
                    server.label, Server(server.id).last_error))
    return counts(pool)


def new_order(pool):
    "Order, request and report a test as our users do"
    Patient = pool.get('gnuhealth.patient')
    Request = pool.get('gnuhealth.imaging.test.request')
    ImagingTest = pool.get('gnuhealth.imaging.test')
    patient = Patient.search([], order=[('id', 'ASC')], limit=1)[0]
    test, = ImagingTest.search([('code', '=', 'IMG-DX-CHEST')])
    request, = Request.create([{
                'patient': patient.id, 'requested_test': test.id,
                'date': datetime.datetime.now(),
                }])
    Request.requested([request])
    result, = Request.create_results([request])
    return {'request': request.request, 'result': result.number,
        'accession_number': request.accession_number}


def ref(record):
    return record.id if record else None


def read_imaging(pool):
    Request = pool.get('gnuhealth.imaging.test.request')
    Result = pool.get('gnuhealth.imaging.test.result')
    TestType = pool.get('gnuhealth.imaging.test.type')
    ImagingTest = pool.get('gnuhealth.imaging.test')
    ModelData = pool.get('ir.model.data')
    return {
        'requests': [{
                'id': r.id, 'request': r.request,
                'request_line': r.request_line, 'state': r.state,
                'patient': ref(r.patient), 'test': ref(r.requested_test),
                'doctor': ref(r.doctor), 'date': r.date.isoformat(),
                'urgent': r.urgent, 'comment': r.comment,
                'accession_number': r.accession_number,
                'study_instance_uid': r.study_instance_uid,
                } for r in Request.search([])],
        'results': [{
                'id': r.id, 'number': r.number, 'comment': r.comment,
                'doctor': ref(r.doctor), 'patient': ref(r.patient),
                'request': ref(r.request), 'order': r.order,
                'date': r.date.isoformat(), 'state': r.state,
                'images': sorted(a.name for a in r.images),
                'studies': sorted(s.orthanc_id for s in r.studies),
                } for r in Result.search([])],
        'test_types': [{'id': t.id, 'code': t.code, 'name': t.name}
            for t in TestType.search([])],
        'tests': [{'id': t.id, 'code': t.code, 'name': t.name,
                'type': ref(t.test_type), 'product': ref(t.product)}
            for t in ImagingTest.search([('active', 'in', [True, False])])],
        'xml_ids': {d.fs_id: d.db_id for d in ModelData.search([
                    ('module', '=', 'health_imaging'),
                    ('model', 'in', ['gnuhealth.imaging.test.type',
                            'gnuhealth.imaging.test']),
                    ])},
        }


def read_orthanc(pool):
    Server = pool.get('gnuhealth.orthanc.config')
    OrthancPatient = pool.get('gnuhealth.orthanc.patient')
    Study = pool.get('gnuhealth.orthanc.study')
    Note = pool.get('ir.note')
    return {
        'servers': [{
                'id': s.id, 'label': s.label, 'domain': s.domain,
                'user': s.user, 'password': s.secret(),
                'public_url': s.public_url, 'last': s.last,
                'import_cursor': s.import_cursor,
                'import_phase': s.import_phase, 'validated': s.validated,
                'last_error': s.last_error,
                } for s in Server.search([])],
        'orthanc_patients': [{
                'orthanc_id': p.orthanc_id, 'patient_id': p.patient_id,
                'patient': ref(p.patient), 'link_state': p.link_state,
                } for p in OrthancPatient.search([])],
        'studies': [{
                'orthanc_id': s.orthanc_id,
                'study_instance_uid': s.study_instance_uid,
                'patient_id': s.patient_id, 'patient': ref(s.patient),
                'series': len(s.series), 'missing': s.missing,
                'notes': [n.message for n in Note.search([
                            ('resource', '=', str(s))])],
                } for s in Study.search([])],
        }


def main(argv=None):
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    args = parse_args(argv)
    config.update_etc(args.config)
    pool = Pool(args.database)
    pool.init()
    with Transaction().start(args.database, 0):
        User = pool.get('res.user')
        admin, = User.search([('login', '=', 'admin')])
    facts = {}
    with Transaction().start(args.database, admin.id,
            context={'company': None}) as transaction:
        facts['before_sync'] = counts(pool)
        facts['first_sync'] = sync(pool)
        facts['second_sync'] = sync(pool)
        facts['new_order'] = new_order(pool)
        transaction.commit()
        facts.update(read_imaging(pool))
        facts.update(read_orthanc(pool))
    with open(args.facts, 'w') as file:
        json.dump(facts, file, indent=1, sort_keys=True)


if __name__ == '__main__':
    main()
