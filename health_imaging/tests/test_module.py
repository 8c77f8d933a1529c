# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
import datetime
import io
import os
import tempfile
import zipfile
from unittest import mock

from trytond.exceptions import UserError
from trytond.modules.company.tests import CompanyTestMixin
from trytond.pool import Pool
from trytond.tests.test_tryton import ModuleTestCase, with_transaction
from trytond.transaction import Transaction

from .tools import create_patient, create_request
from .translations import TranslationTestMixin


def print_as_pdf():
    "Set the result report's output format to PDF, as an administrator"
    ActionReport = Pool().get('ir.action.report')
    ActionReport.write(ActionReport.search([
                ('report_name', '=', 'gnuhealth.imaging.test.result.report'),
                ]), {'extension': 'pdf'})


# A 1x1 transparent PNG
PNG = bytes.fromhex(
    '89504e470d0a1a0a0000000d4948445200000001000000010806000000'
    '1f15c4890000000d4944415478da63f8ffff3f0005fe02fea7d6a59f0000'
    '000049454e44ae426082')


class HealthImagingTestCase(
        CompanyTestMixin, TranslationTestMixin, ModuleTestCase):
    "Test health_imaging module"
    module = 'health_imaging'

    @with_transaction()
    def test_catalogue_shipped(self):
        "A fresh database can order the common modalities"
        pool = Pool()
        TestType = pool.get('gnuhealth.imaging.test.type')
        Test = pool.get('gnuhealth.imaging.test')
        codes = {t.code for t in TestType.search([])}
        self.assertTrue(
            {'CT', 'MR', 'US', 'DX', 'CR', 'XA', 'PT', 'MG'} <= codes)
        tests = Test.search([])
        self.assertGreaterEqual(len(tests), 10)
        for test in tests:
            self.assertEqual(test.product.type, 'service')

    @with_transaction()
    def test_type_code_unique(self):
        "Two test types cannot share a modality code"
        TestType = Pool().get('gnuhealth.imaging.test.type')
        with self.assertRaises(UserError):
            TestType.create([{'code': 'CT', 'name': "Other CT"}])

    @with_transaction()
    def test_rec_name_search(self):
        "Tests are found by code or by name"
        Test = Pool().get('gnuhealth.imaging.test')
        for text, code in [
                ('IMG-MR-BRAIN', 'IMG-MR-BRAIN'),
                ('Brain MRI', 'IMG-MR-BRAIN'),
                ('mammography', 'IMG-MG-SCREEN'),
                ]:
            with self.subTest(text=text):
                test, = Test.search([('rec_name', 'ilike', '%%%s%%' % text)])
                self.assertEqual(test.code, code)

    @with_transaction()
    def test_wizard_one_request_per_test_one_order(self):
        "The order wizard creates a draft request per test with one number"
        pool = Pool()
        Test = pool.get('gnuhealth.imaging.test')
        Request = pool.get('gnuhealth.imaging.test.request')
        Start = pool.get('gnuhealth.patient.imaging.test.request.start')
        Wizard = pool.get('gnuhealth.patient.imaging.test.request',
            type='wizard')
        patient = create_patient()
        tests = Test.search([('code', 'in', ['IMG-DX-CHEST', 'IMG-CT-HEAD'])])
        with Transaction().set_context(
                active_model='gnuhealth.patient', active_id=patient.id):
            self.assertEqual(Start.default_patient(), patient.id)
        self.assertIsNone(Start.default_patient())
        session_id, _, _ = Wizard.create()
        wizard = Wizard(session_id)
        wizard.start.patient = patient
        wizard.start.tests = tests
        wizard.start.urgent = True
        wizard.start.doctor = None
        wizard.start.context = None
        wizard.start.comment = "Rule out fracture"
        wizard.start.date = datetime.datetime(2026, 1, 2, 10, 0)
        self.assertEqual(wizard.transition_request(), 'end')
        requests = Request.search([('patient', '=', patient.id)])
        self.assertEqual(len(requests), 2)
        self.assertEqual(len({r.request for r in requests}), 1)
        self.assertTrue(requests[0].request)
        number = requests[0].request
        self.assertEqual(
            sorted(r.request_line for r in requests),
            ['%s-02-01' % number, '%s-02-02' % number])
        self.assertEqual({r.state for r in requests}, {'draft'})
        self.assertTrue(all(r.urgent for r in requests))
        self.assertEqual(
            {r.requested_test for r in requests}, set(tests))

    @with_transaction()
    def test_orders_get_distinct_numbers(self):
        "Separate orders get separate numbers"
        patient = create_patient()
        first = create_request(patient)
        second = create_request(patient)
        self.assertNotEqual(first.request, second.request)

    @with_transaction()
    def test_batch_create_distinct_numbers(self):
        "Requests created together outside the wizard are separate orders"
        pool = Pool()
        Test = pool.get('gnuhealth.imaging.test')
        Request = pool.get('gnuhealth.imaging.test.request')
        patient = create_patient()
        test, = Test.search([('code', '=', 'IMG-DX-CHEST')])
        requests = Request.create([
                {'patient': patient.id, 'requested_test': test.id}
                for _ in range(3)])
        self.assertEqual(len({r.request for r in requests}), 3)

    @with_transaction()
    def test_workflow(self):
        "draft -> requested -> done through Generate Results"
        Request = Pool().get('gnuhealth.imaging.test.request')
        request = create_request(create_patient())
        self.assertEqual(request.state, 'draft')
        Request.requested([request])
        self.assertEqual(request.state, 'requested')
        results = Request.create_results([request])
        self.assertEqual(len(results), 1)
        result, = results
        self.assertEqual(request.state, 'done')
        self.assertEqual(result.request, request)
        self.assertEqual(result.patient, request.patient)
        self.assertEqual(result.requested_test, request.requested_test)
        self.assertEqual(result.order, request.request)
        self.assertTrue(result.number)

    @with_transaction()
    def test_generate_twice_one_result(self):
        "Generating results twice never creates a second result"
        pool = Pool()
        Request = pool.get('gnuhealth.imaging.test.request')
        Result = pool.get('gnuhealth.imaging.test.result')
        request = create_request(create_patient())
        Request.requested([request])
        first, = Request.create_results([request])
        second, = Request.create_results([request])
        self.assertEqual(first, second)
        self.assertEqual(Result.search_count([]), 1)
        with self.assertRaises(UserError):
            Result.create([Result.values_from_request(request)])

    @with_transaction()
    def test_result_complete(self):
        "A result starts in draft and is frozen once completed"
        pool = Pool()
        Request = pool.get('gnuhealth.imaging.test.request')
        Result = pool.get('gnuhealth.imaging.test.result')
        request = create_request(create_patient())
        Request.requested([request])
        result, = Request.create_results([request])
        self.assertEqual(result.state, 'draft')
        # Nothing to sign yet
        with self.assertRaises(UserError):
            Result.complete([result])
        self.assertEqual(result.state, 'draft')
        Result.write([result], {'comment': "Normal chest."})
        Result.complete([result])
        self.assertEqual(result.state, 'done')
        for name, value in [
                ('comment', "Changed"),
                ('doctor', None),
                ('date', datetime.datetime(2020, 1, 1)),
                ]:
            with self.subTest(field=name):
                with self.assertRaises(UserError):
                    Result.write([result], {name: value})
        # Amended after a reset to draft
        Result.draft([result])
        Result.write([result], {'comment': "Normal chest. Addendum."})
        self.assertEqual(result.comment, "Normal chest. Addendum.")
        copy, = Result.copy([result], {'request': None})
        self.assertEqual(copy.state, 'draft')

    @with_transaction()
    def test_result_complete_sets_doctor(self):
        "Completing signs the result with the user's health professional"
        pool = Pool()
        Request = pool.get('gnuhealth.imaging.test.request')
        Result = pool.get('gnuhealth.imaging.test.result')
        HealthProfessional = pool.get('gnuhealth.healthprofessional')
        request = create_request(create_patient())
        Request.requested([request])
        result, = Request.create_results([request])
        Result.write([result], {'doctor': None, 'comment': "Normal."})
        Party = pool.get('party.party')
        party, = Party.create([{
                    'name': 'Greg', 'lastname': 'House', 'is_person': True,
                    'is_healthprof': True, 'fed_country': 'XX', 'gender': 'm',
                    'internal_user': Transaction().user,
                    }])
        professional, = HealthProfessional.create([{'party': party.id}])
        Result.complete([result])
        self.assertEqual(result.doctor, professional)

    @with_transaction()
    def test_no_results_unless_requested(self):
        "Draft and cancelled requests cannot produce results"
        Request = Pool().get('gnuhealth.imaging.test.request')
        patient = create_patient()
        draft = create_request(patient)
        cancelled = create_request(patient)
        Request.cancel([cancelled])
        for request in [draft, cancelled]:
            with self.subTest(state=request.state):
                with self.assertRaises(UserError):
                    Request.create_results([request])

    @with_transaction()
    def test_readonly_after_draft(self):
        "Fields of a request are read-only once it left draft"
        Request = Pool().get('gnuhealth.imaging.test.request')
        request = create_request(create_patient())
        Request.requested([request])
        for name, value in [
                ('urgent', True),
                ('date', datetime.datetime(2020, 1, 1)),
                ('patient', create_patient('Other').id),
                ('doctor', None),
                ]:
            with self.subTest(field=name):
                self.assertIn('readonly', Request._fields[name].states)
                with self.assertRaises(UserError):
                    Request.write([request], {name: value})
        Request.write([request], {'comment': "Patient is claustrophobic"})

    @with_transaction()
    def test_copy_request(self):
        "A copy is a new draft order"
        Request = Pool().get('gnuhealth.imaging.test.request')
        request = create_request(create_patient(), request_line='X-01-01')
        Request.requested([request])
        Request.create_results([request])
        copy, = Request.copy([request])
        self.assertEqual(copy.state, 'draft')
        self.assertNotEqual(copy.request, request.request)
        self.assertIsNone(copy.request_line)
        self.assertEqual(copy.results, ())

    @with_transaction()
    def test_delete_only_draft_or_cancelled(self):
        Request = Pool().get('gnuhealth.imaging.test.request')
        patient = create_patient()
        requested = create_request(patient)
        Request.requested([requested])
        with self.assertRaises(UserError):
            Request.delete([requested])
        draft = create_request(patient)
        Request.delete([draft])

    @with_transaction()
    def test_cancel_with_result_refused(self):
        Request = Pool().get('gnuhealth.imaging.test.request')
        request = create_request(create_patient())
        Request.requested([request])
        Request.create_results([request])
        Request.write([request], {'state': 'requested'})
        with self.assertRaises(UserError):
            Request.cancel([request])

    @with_transaction()
    def test_doctor_default_real_mode(self):
        "Outside test mode a user without health professional can order"
        pool = Pool()
        Request = pool.get('gnuhealth.imaging.test.request')
        Start = pool.get('gnuhealth.patient.imaging.test.request.start')
        test = pool.test
        try:
            pool.test = False
            self.assertIsNone(Request.default_doctor())
            self.assertIsNone(Start.default_doctor())
        finally:
            pool.test = test

    @with_transaction()
    def test_doctor_default_health_professional(self):
        "The requesting doctor defaults to the user's health professional"
        pool = Pool()
        Party = pool.get('party.party')
        HealthProf = pool.get('gnuhealth.healthprofessional')
        Request = pool.get('gnuhealth.imaging.test.request')
        party, = Party.create([{
                    'name': 'Greg', 'lastname': 'House', 'is_person': True,
                    'is_healthprof': True, 'fed_country': 'XX', 'gender': 'm',
                    'internal_user': Transaction().user,
                    }])
        professional, = HealthProf.create([{'party': party.id}])
        self.assertEqual(Request.default_doctor(), professional.id)

    @with_transaction()
    def test_report_with_image(self):
        "The result report renders the interpretation and the images"
        pool = Pool()
        Request = pool.get('gnuhealth.imaging.test.request')
        Attachment = pool.get('ir.attachment')
        Report = pool.get('gnuhealth.imaging.test.result.report',
            type='report')
        request = create_request(create_patient())
        Request.requested([request])
        result, = Request.create_results([request])
        result.comment = "No acute findings.\nHeart size normal."
        result.save()
        Attachment.create([{
                    'name': 'chest.png', 'resource': str(result),
                    'type': 'data', 'data': PNG,
                    }])
        ext, content, _, name = Report.execute([result.id], {})
        self.assertEqual(ext, 'odt')
        with zipfile.ZipFile(io.BytesIO(content)) as odt:
            text = odt.read('content.xml').decode('utf-8')
        self.assertIn("No acute findings.", text)
        self.assertIn("Heart size normal.", text)
        self.assertIn(result.number, text)
        self.assertIn(result.patient.rec_name, text)
        self.assertEqual(text.count('xlink:href="Pictures/'), 1)

    @with_transaction()
    def test_report_as_pdf(self):
        "Set to PDF, the result report is converted by LibreOffice"
        Report = Pool().get('gnuhealth.imaging.test.result.report',
            type='report')
        result = self.completed_result()
        print_as_pdf()
        ext, content, _, name = Report.execute([result.id], {})
        self.assertEqual((ext, content[:5]), ('pdf', b'%PDF-'))

    @with_transaction()
    def test_report_without_libreoffice(self):
        "Set to PDF without LibreOffice, the report stays OpenDocument text"
        Report = Pool().get('gnuhealth.imaging.test.result.report',
            type='report')
        result = self.completed_result()
        print_as_pdf()
        with tempfile.TemporaryDirectory() as empty, \
                mock.patch.dict(os.environ, {'PATH': empty}):
            ext, content, _, name = Report.execute([result.id], {})
        self.assertEqual(ext, 'odt')
        with zipfile.ZipFile(io.BytesIO(content)) as odt:
            self.assertIn(result.number,
                odt.read('content.xml').decode('utf-8'))

    def completed_result(self):
        Request = Pool().get('gnuhealth.imaging.test.request')
        request = create_request(create_patient())
        Request.requested([request])
        result, = Request.create_results([request])
        result.comment = "No acute findings."
        result.save()
        return result

    @with_transaction()
    def test_dicom_identifiers_on_request(self):
        "Requesting gives each test its accession number and study UID"
        pool = Pool()
        Request = pool.get('gnuhealth.imaging.test.request')
        patient = create_patient()
        first = create_request(patient, request='IMGREQ2026/00042')
        second = create_request(patient, request='IMGREQ2026/00042')
        other = create_request(patient)
        self.assertIsNone(first.accession_number)
        self.assertIsNone(first.study_instance_uid)
        # The second test is requested first: positions follow the order
        Request.requested([second])
        Request.requested([first, other])
        self.assertEqual(first.accession_number, 'IMGREQ2026/00042')
        self.assertEqual(second.accession_number, 'GREQ2026/00042-2')
        self.assertEqual(other.accession_number, other.request[-16:])
        for request in [first, second, other]:
            self.assertLessEqual(len(request.accession_number), 16)
            self.assertTrue(request.study_instance_uid.startswith('2.25.'))
            self.assertLessEqual(len(request.study_instance_uid), 64)
        self.assertEqual(len({
                    r.study_instance_uid for r in [first, second, other]}), 3)

        # Cancelled then back to draft, the patient or the test may
        # change: the identifiers are given again when it is requested,
        # a new StudyInstanceUID (the accession number is the order's)
        uid = first.study_instance_uid
        Request.cancel([first])
        Request.draft([first])
        self.assertIsNone(first.accession_number)
        self.assertIsNone(first.study_instance_uid)
        Request.requested([first])
        self.assertEqual(first.accession_number, 'IMGREQ2026/00042')
        self.assertTrue(first.study_instance_uid.startswith('2.25.'))
        self.assertNotEqual(first.study_instance_uid, uid)

        copy, = Request.copy([first])
        self.assertIsNone(copy.accession_number)
        self.assertIsNone(copy.study_instance_uid)

    @with_transaction()
    def test_accession_number_unique(self):
        "An accession number already taken is never given twice"
        Request = Pool().get('gnuhealth.imaging.test.request')
        patient = create_patient()
        # Two orders whose numbers end alike (a custom sequence)
        first = create_request(patient, request='A-LONG-PREFIX/0001')
        second = create_request(patient, request='B-LONG-PREFIX/0001')
        Request.requested([first])
        Request.requested([second])
        self.assertEqual(first.accession_number, 'LONG-PREFIX/0001')
        self.assertNotEqual(second.accession_number, first.accession_number)
        with self.assertRaises(UserError):
            Request.write([second], {
                    'accession_number': first.accession_number})

    def test_accession_number_table(self):
        "The accession number of the n-th test fits DICOM's 16 characters"
        from ..request import accession_number
        for order, position, expected in [
                ('IMG0001', 1, 'IMG0001'),
                ('IMG0001', 2, 'IMG0001-2'),
                ('IMGREQ2026/00001', 1, 'IMGREQ2026/00001'),
                ('IMGREQ2026/00001', 2, 'GREQ2026/00001-2'),
                ('IMGREQ2026/00001', 12, 'REQ2026/00001-12'),
                ('IMGREQ2026/000001', 1, 'MGREQ2026/000001'),
                ('', 1, ''),
                ]:
            with self.subTest(order=order, position=position):
                self.assertEqual(accession_number(order, position), expected)
                self.assertLessEqual(len(expected), 16)


del ModuleTestCase
