# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""GNU Health's billing of imaging orders on top of our health_imaging.

``gnuhealth-services-imaging`` (the ``health_services_imaging`` module) is
installed without its dependency on GNU Health's own imaging package (see
``bin/lib.sh``): it extends our request, our order wizard and their views.
A missing module is an error of the test class, never a skip.

The module's own test package does not import (it imports a ``suite`` that
its test file does not define), so its generic checks run here.
"""
import datetime

from trytond.exceptions import UserError
from trytond.pool import Pool
from trytond.tests.test_tryton import ModuleTestCase, with_transaction

from trytond.modules.health_imaging.tests.tools import create_patient

DATE = datetime.datetime(2026, 1, 2, 10, 0)


def create_service(patient):
    "Create the health service document (the bill) of a patient"
    Service = Pool().get('gnuhealth.health_service')
    service, = Service.create([{
                'patient': patient.id,
                'desc': "Outpatient visit",
                }])
    return service


def order(patient, codes, service=None, ungroup=False, comment=None):
    "Order the tests through the Dx Imaging - New wizard; return requests"
    pool = Pool()
    Test = pool.get('gnuhealth.imaging.test')
    Request = pool.get('gnuhealth.imaging.test.request')
    Wizard = pool.get(
        'gnuhealth.patient.imaging.test.request', type='wizard')
    tests = Test.search([('code', 'in', codes)], order=[('code', 'ASC')])
    session_id, _, _ = Wizard.create()
    wizard = Wizard(session_id)
    wizard.start.patient = patient
    wizard.start.tests = tests
    wizard.start.urgent = False
    wizard.start.doctor = None
    wizard.start.context = None
    wizard.start.comment = comment
    wizard.start.date = DATE
    wizard.start.service = service
    wizard.start.ungroup_tests = ungroup
    if wizard.transition_request() != 'end':
        raise AssertionError("the order wizard did not end")
    return Request.search(
        [('patient', '=', patient.id)], order=[('request_line', 'ASC')])


def products(service):
    return sorted(
        (line.product.id, line.desc, line.qty)
        for line in service.service_line)


class HealthServicesImagingTestCase(ModuleTestCase):
    "Test health_services_imaging activated on our health_imaging"
    module = 'health_services_imaging'

    @with_transaction()
    def test_views_extended(self):
        "The service fields and the button are on our request and wizard"
        pool = Pool()
        ModelData = pool.get('ir.model.data')
        Request = pool.get('gnuhealth.imaging.test.request')
        Start = pool.get('gnuhealth.patient.imaging.test.request.start')
        for Model, xml_id, fields, button in [
                (Request, 'view_imaging_test_request_form',
                    {'service', 'service_updated', 'comment'},
                    'update_service'),
                (Start, 'patient_imaging_test_request_start_view_form',
                    {'service', 'ungroup_tests', 'tests'}, None),
                ]:
            with self.subTest(model=Model.__name__):
                view = Model.fields_view_get(
                    ModelData.get_id('health_imaging', xml_id))
                self.assertLessEqual(fields, set(view['fields']))
                if button:
                    self.assertIn('name="%s"' % button, view['arch'])

    @with_transaction()
    def test_order_with_service(self):
        "Ordering with a service bills each test on it at once"
        pool = Pool()
        Test = pool.get('gnuhealth.imaging.test')
        patient = create_patient()
        service = create_service(patient)
        requests = order(
            patient, ['IMG-CT-HEAD', 'IMG-DX-CHEST'], service=service,
            comment="Rule out fracture")
        tests = Test.search(
            [('code', 'in', ['IMG-CT-HEAD', 'IMG-DX-CHEST'])])

        self.assertEqual(len(requests), 2)
        number = requests[0].request
        self.assertTrue(number)
        self.assertEqual(
            [r.request_line for r in requests],
            ['%s-02-01' % number, '%s-02-02' % number])
        self.assertEqual({r.request for r in requests}, {number})
        self.assertEqual({r.state for r in requests}, {'draft'})
        # Its request step replaces ours and drops the order's comment
        # (doc/imaging/administration.rst says so)
        self.assertEqual({r.comment for r in requests}, {None})
        self.assertEqual({r.service for r in requests}, {service})
        self.assertEqual({r.service_updated for r in requests}, {'yes'})
        self.assertEqual(products(service), sorted(
                (t.product.id, t.product.rec_name, 1) for t in tests))

    @with_transaction()
    def test_update_services_button(self):
        "Update Services bills an ungrouped request once, with its product"
        pool = Pool()
        Request = pool.get('gnuhealth.imaging.test.request')
        patient = create_patient()
        service = create_service(patient)
        requests = order(
            patient, ['IMG-CT-HEAD', 'IMG-DX-CHEST'], service=service,
            ungroup=True)
        self.assertEqual({r.service for r in requests}, {service})
        self.assertEqual(
            {r.service_updated for r in requests}, {'unknown'})
        self.assertEqual(service.service_line, ())

        first, second = requests
        Request.update_service([first])
        service = type(service)(service.id)
        self.assertEqual(products(service), [(
                    first.requested_test.product.id,
                    first.requested_test.product.rec_name, 1)])
        first = Request(first.id)
        self.assertEqual(first.service_updated, 'yes')
        self.assertEqual(Request(second.id).service_updated, 'unknown')

        # Twice is refused: the test is billed once
        with self.assertRaises(UserError) as cm:
            Request.update_service([first])
        self.assertIn('SM-SERVICES_IMAGING-0002', cm.exception.message)

        # Our workflow goes on: the request is requested and done
        Request.requested([first])
        first = Request(first.id)
        self.assertTrue(first.accession_number)
        self.assertTrue(first.study_instance_uid)
        Request.create_results([first])
        self.assertEqual(Request(first.id).state, 'done')
        self.assertEqual(len(type(service)(service.id).service_line), 1)

    @with_transaction()
    def test_update_services_without_service(self):
        "Update Services on a request without service says what is missing"
        pool = Pool()
        Request = pool.get('gnuhealth.imaging.test.request')
        patient = create_patient()
        request, = order(patient, ['IMG-DX-CHEST'])
        self.assertIsNone(request.service)
        with self.assertRaises(UserError) as cm:
            Request.update_service([request])
        self.assertIn('SM-SERVICES_IMAGING-0001', cm.exception.message)

        # A service set later on the request is billed too
        service = create_service(patient)
        Request.write([request], {'service': service.id})
        Request.update_service([request])
        self.assertEqual(
            [line.product
                for line in type(service)(service.id).service_line],
            [request.requested_test.product])


del ModuleTestCase
