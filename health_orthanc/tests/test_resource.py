# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The batched upsert of Orthanc resources: what a page read again writes.

No Orthanc here: the pages are mapped records, as ``mapping`` returns them.
"""
import datetime
import unittest
from unittest import mock

from trytond import backend
from trytond.model.exceptions import SQLConstraintError
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

from trytond.modules.health_imaging.tests.tools import (
    create_patient, create_request)


def patient(orthanc_id, name='DOE, John', **values):
    return dict({
            'orthanc_id': orthanc_id,
            'patient_id': 'PID-' + orthanc_id,
            'name': name,
            'birth_date': datetime.date(1980, 1, 15),
            'sex': 'm',
            'last_update': datetime.datetime(2024, 1, 1, 12, 0, 0),
            }, **values)


def study(orthanc_id, patient_id, **values):
    return dict({
            'orthanc_id': orthanc_id,
            'orthanc_patient_id': patient_id,
            'patient_id': 'PID-' + patient_id,
            'study_instance_uid': '1.2.3.' + orthanc_id,
            'study_datetime': datetime.datetime(2024, 1, 1, 9, 30),
            'study_date': datetime.date(2024, 1, 1),
            'description': 'CT head',
            'accession_number': 'ACC-' + orthanc_id,
            'referring_physician': None,
            'institution': 'Hospital',
            'study_id': '1',
            'last_update': datetime.datetime(2024, 1, 1, 12, 0, 0),
            }, **values)


def series(orthanc_id, study_id, **values):
    return dict({
            'orthanc_id': orthanc_id,
            'orthanc_study_id': study_id,
            'series_instance_uid': '1.2.4.' + orthanc_id,
            'modality': 'CT',
            'series_number': 1,
            'description': None,
            'body_part': 'HEAD',
            'number_of_instances': 2,
            'last_update': datetime.datetime(2024, 1, 1, 12, 0, 0),
            }, **values)


class OrthancUpsertTestCase(unittest.TestCase):
    "Upsert of Orthanc pages"

    @classmethod
    def setUpClass(cls):
        activate_module('health_orthanc')

    def server(self, label='Upsert'):
        Server = Pool().get('gnuhealth.orthanc.config')
        server, = Server.create([{
                    'label': label,
                    'domain': 'http://127.0.0.1:1',
                    'validated': True,
                    }])
        return server

    def written(self, Model):
        "Patch Model.write to record its calls (it still writes)"
        patcher = mock.patch.object(Model, 'write', wraps=Model.write)
        self.addCleanup(patcher.stop)
        return patcher.start()

    def stored_twice(self):
        "Return Patient and a patient 'b' beside 'a' stored on two servers"
        Patient = Pool().get('gnuhealth.orthanc.patient')
        server, other = self.server(), self.server('Other')
        Patient.create([{'server': s.id, 'orthanc_id': 'a'}
                for s in [server, other]])
        patient, = Patient.create([{'server': server.id, 'orthanc_id': 'b'}])
        return Patient, patient

    @with_transaction()
    def test_orthanc_id_unique_on_create(self):
        "An Orthanc ID is created once per server, on every backend"
        Patient, patient = self.stored_twice()
        with self.assertRaises(SQLConstraintError) as context:
            Patient.create([{'server': patient.server.id, 'orthanc_id': 'c'},
                    {'server': patient.server.id, 'orthanc_id': 'a'}])
        self.assertIn('already recorded', str(context.exception))

    @with_transaction()
    def test_orthanc_id_unique_on_write(self):
        "An Orthanc ID cannot be given to a second record of the server"
        Patient, patient = self.stored_twice()
        with self.assertRaises(SQLConstraintError) as context:
            Patient.write([patient], {'orthanc_id': 'a'})
        self.assertIn('already recorded', str(context.exception))

    @with_transaction()
    def test_orthanc_id_checked_only_when_changed(self):
        """The uniqueness is checked in Python (SQLite) only by the create
        and the writes of the server or the Orthanc ID, not by the sync's
        writes of the other fields"""
        Patient = Pool().get('gnuhealth.orthanc.patient')
        server = self.server()
        check = mock.patch.object(Patient, '_check_orthanc_id_unique',
            wraps=Patient._check_orthanc_id_unique).start()
        self.addCleanup(mock.patch.stopall)
        on_sqlite = backend.name == 'sqlite'

        created, _ = Patient.upsert(server, [patient('a'), patient('b')])
        self.assertEqual(check.call_count, 1 if on_sqlite else 0)
        check.reset_mock()
        Patient.upsert(server, [patient('a', name='DOE, Jane')])
        Patient.mark_missing(server, ['b'])
        check.assert_not_called()
        Patient.write([Patient(created[0])], {'orthanc_id': 'c'})
        self.assertEqual(check.call_count, 1 if on_sqlite else 0)

    @with_transaction()
    def test_study_gets_the_patient_of_its_server(self):
        """A study gets the Orthanc patient of its own server from the
        lookup by server: no search of the Orthanc patients validates it"""
        pool = Pool()
        Patient = pool.get('gnuhealth.orthanc.patient')
        Study = pool.get('gnuhealth.orthanc.study')
        servers = [self.server(), self.server('Other')]
        for server in servers:
            Patient.upsert(server, [patient('p')])
        search = mock.patch.object(
            Patient, 'search', wraps=Patient.search).start()
        self.addCleanup(mock.patch.stopall)
        for server in servers:
            (study_id,), _ = Study.upsert(server, [study('s', 'p')])
            orthanc_patient = Study(study_id).orthanc_patient
            self.assertEqual(
                (orthanc_patient.server, orthanc_patient.orthanc_id),
                (server, 'p'))
        search.assert_not_called()

    @with_transaction()
    def test_patients_linked_as_created(self):
        """New Orthanc patients are linked by the rule in their create: the
        pass that retries the links after a sync writes nothing"""
        Patient = Pool().get('gnuhealth.orthanc.patient')
        ana = create_patient(puid='PID-a', dob=datetime.date(1980, 1, 15))
        create_patient('Bo', 'Berg', mrn='PID-b',
            dob=datetime.date(1970, 2, 2))
        server = self.server()
        write = self.written(Patient)
        created, _ = Patient.upsert(server, [patient('a'), patient('b'),
                patient('c'), patient('d', patient_id=None)])
        self.assertEqual(
            [(p.patient, p.link_state) for p in Patient.browse(created)],
            [(ana, 'linked'), (None, 'birth_date_mismatch'),
                (None, 'no_match'), (None, 'no_patient_id')])

        Patient.link_server_patients(server)
        write.assert_not_called()
        self.assertEqual(
            [p.write_date for p in Patient.browse(created)], [None] * 4)

    @with_transaction()
    def test_summaries_written_without_study_write(self):
        """The summaries of a page of series are written without
        Study.write, which would read back and validate each study; the
        write date and user say that the study changed, and the studies
        read before show the new summary"""
        pool = Pool()
        Patient = pool.get('gnuhealth.orthanc.patient')
        Study = pool.get('gnuhealth.orthanc.study')
        Series = pool.get('gnuhealth.orthanc.series')
        server = self.server()
        Patient.upsert(server, [patient('p')])
        created, _ = Study.upsert(server, [study('s', 'p'), study('t', 'p')])
        s, t = Study.browse(created)
        self.assertEqual((s.modalities, s.write_date), (None, None))
        write = self.written(Study)
        validate = mock.patch.object(
            Study, '_validate', wraps=Study._validate).start()
        self.addCleanup(mock.patch.stopall)

        Series.upsert(server, [series('x', 's'), series('y', 't'),
                series('z', 't', modality='MR')], ['s', 't'])
        write.assert_not_called()
        validate.assert_not_called()
        self.assertEqual(
            [(r.modalities, r.number_of_series, r.number_of_instances)
                for r in [s, t]],
            [('CT', 1, 2), ('CT, MR', 2, 4)])
        self.assertTrue(s.write_date)
        self.assertEqual(s.write_uid.id, Transaction().user)

    @with_transaction()
    def test_new_studies_matched_only_when_claimed(self):
        """The new studies of a page are matched to the requests only when
        an open request carries their StudyInstanceUID or accession
        number: a page that none claims costs one search of the requests"""
        pool = Pool()
        Patient = pool.get('gnuhealth.orthanc.patient')
        Study = pool.get('gnuhealth.orthanc.study')
        Request = pool.get('gnuhealth.imaging.test.request')
        request = create_request(create_patient(puid='PUID-ANA'))
        Request.requested([request])
        server = self.server()
        Patient.upsert(server, [patient('p')])
        link = mock.patch.object(
            Study, 'link_to_requests', wraps=Study.link_to_requests).start()
        search = mock.patch.object(
            Request, 'search', wraps=Request.search).start()
        self.addCleanup(mock.patch.stopall)

        Study.upsert(server, [study('a', 'p'), study('b', 'p')])
        self.assertEqual(search.call_count, 1)
        (studies,), _ = link.call_args
        self.assertEqual(list(studies), [])

        created, _ = Study.upsert(server, [study('c', 'p'), study('d', 'p',
                    accession_number=' %s ' % request.accession_number)])
        (studies,), _ = link.call_args
        self.assertEqual([s.orthanc_id for s in studies], ['d'])
        c, d = Study.browse(created)
        self.assertEqual(
            (c.request_link, c.request_candidate), (None, None))
        self.assertEqual(
            (d.request_link, d.request_candidate),
            ('patient_unknown', request))

    @with_transaction()
    def test_unchanged_records_are_not_written(self):
        "A page read again writes nothing and keeps the write dates"
        Patient = Pool().get('gnuhealth.orthanc.patient')
        server = self.server()
        page = [patient('a'), patient('b', birth_date=None, sex=None),
            patient('c', last_update=datetime.datetime(
                    2024, 1, 1, 12, 0, 0, 123456))]
        created, changed = Patient.upsert(server, page)
        self.assertEqual(len(created), 3)
        self.assertEqual(changed, [])

        write = self.written(Patient)
        self.assertEqual(Patient.upsert(server, page), ([], []))
        # Dates, datetimes (stored without microseconds), None: the same
        self.assertEqual(write.call_count, 0)
        patients = Patient.search([('server', '=', server.id)])
        self.assertEqual([p.write_date for p in patients], [None] * 3)

    @with_transaction()
    def test_changed_records_only(self):
        "Only the changed records are written, grouped by the values"
        Patient = Pool().get('gnuhealth.orthanc.patient')
        server = self.server()
        created, _ = Patient.upsert(server,
            [patient(i) for i in 'abcd'])
        a, b, c, d = [Patient(i) for i in created]

        write = self.written(Patient)
        created, changed = Patient.upsert(server, [
                patient('a', name='DOE, Jane'),
                patient('b', name='DOE, Jane'),
                patient('c', birth_date=datetime.date(1980, 1, 16)),
                patient('d'),
                patient('e'),
                ])
        self.assertEqual(len(created), 1)
        self.assertEqual(sorted(changed), sorted([a.id, b.id, c.id]))
        # One call: a and b together, c apart; only the changed columns
        write.assert_called_once()
        args = write.call_args[0]
        groups = {tuple(sorted(r.id for r in records)): values
            for records, values in zip(args[::2], args[1::2])}
        self.assertEqual(groups, {
                tuple(sorted([a.id, b.id])): {'name': 'DOE, Jane'},
                (c.id,): {'birth_date': datetime.date(1980, 1, 16)},
                })
        self.assertEqual(a.name, 'DOE, Jane')
        self.assertIsNone(d.write_date)
        self.assertTrue(a.write_date)

    @with_transaction()
    def test_missing_record_sent_again(self):
        "A record flagged missing and sent again is unflagged"
        Patient = Pool().get('gnuhealth.orthanc.patient')
        server = self.server()
        created, _ = Patient.upsert(server, [patient('a'), patient('b')])
        self.assertEqual(Patient.mark_missing(server, ['a']), 1)
        b = Patient(created[1])
        self.assertTrue(b.missing)

        created, changed = Patient.upsert(server, [patient('a'),
                patient('b')])
        self.assertEqual((created, changed), ([], [b.id]))
        b = Patient(b.id)
        self.assertFalse(b.missing)
        self.assertIsNone(b.missing_since)

    @with_transaction()
    def test_mark_missing_by_pages(self):
        """The stored records are compared a page at a time: every page
        counts, and the records of another server are left alone"""
        Patient = Pool().get('gnuhealth.orthanc.patient')
        server, other = self.server(), self.server('Other')
        Patient.upsert(other, [patient('a')])
        Patient.upsert(server, [patient(i) for i in 'abcde'])
        for page_size in [1, 2, 5, 1000]:
            with self.subTest(page_size=page_size):
                Patient.upsert(server, [patient(i) for i in 'abcde'])
                self.assertEqual(Patient.mark_missing(
                        server, {'a', 'c', 'e'}, page_size=page_size), 2)
                self.assertEqual({p.orthanc_id for p in Patient.search([
                                ('missing', '=', True)])}, {'b', 'd'})

    @with_transaction()
    def test_series_read_again(self):
        """Unchanged series of a study read whole are kept, the others
        are deleted, and the summary follows"""
        pool = Pool()
        Patient = pool.get('gnuhealth.orthanc.patient')
        Study = pool.get('gnuhealth.orthanc.study')
        Series = pool.get('gnuhealth.orthanc.series')
        server = self.server()
        Patient.upsert(server, [patient('p')])
        (study_id,), _ = Study.upsert(server, [study('s', 'p')])
        page = [series('x', 's'), series('y', 's', modality='MR')]
        created, _ = Series.upsert(server, page, ['s'])
        x, y = [Series(i) for i in created]
        record = Study(study_id)
        self.assertEqual(record.modalities, 'CT, MR')
        self.assertEqual(record.number_of_series, 2)
        self.assertEqual(record.number_of_instances, 4)

        # Read again whole: nothing written, nothing deleted
        write = self.written(Series)
        self.assertEqual(Series.upsert(server, page, ['s']), ([], []))
        self.assertEqual(write.call_count, 0)
        self.assertEqual(len(Series.search([('study', '=', study_id)])), 2)

        # y is gone from Orthanc, x unchanged: x is kept, y deleted
        self.assertEqual(
            Series.upsert(server, [series('x', 's')], ['s']), ([], []))
        self.assertEqual(Series.search([('study', '=', study_id)]), [x])
        record = Study(study_id)
        self.assertEqual(record.modalities, 'CT')
        self.assertEqual(record.number_of_series, 1)
        self.assertEqual(record.number_of_instances, 2)

        # A series of a study not stored is left out
        self.assertEqual(
            Series.upsert(server, [series('z', 'unknown')], ['unknown']),
            ([], []))
        self.assertEqual(Series.search_count([]), 1)
