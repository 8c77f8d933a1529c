# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The radiation dose of studies from their RDSRs, end to end: generated
after the DICOM templates, stored in a real Orthanc, synced, shown on the
result and added up per patient, compared with the tests' reference
levels."""
import datetime
from unittest import mock

from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction
from trytond.transaction import Transaction, without_check_access

from trytond.modules.health_imaging.tests.tools import (
    create_patient, create_request)
from trytond.modules.health_orthanc import dose as dose_module
from trytond.modules.health_orthanc import orthanc_client as oc

from . import rdsr_samples as samples
from .orthanc_case import RealOrthancCase

NO_COMMIT = {'_orthanc_page_commit': False}
DOSE = 'gnuhealth.orthanc.dose'


def rounded(values, digits=6):
    return [round(v, digits) if isinstance(v, float) else v for v in values]


class RadiationDoseTestCase(RealOrthancCase):
    "RDSRs read at sync, on results and patients, against reference levels"

    def upload(self, patient_id, names, key=1, name='BETZ^Ana'):
        "Upload a CT image and the named RDSR samples as one study"
        study_uid = samples.make_uid('study', patient_id, key)
        self.orthanc.upload(samples.make_image(study_uid, patient_id,
                patient_name=name))
        for seed, sample in enumerate(names, 1):
            self.orthanc.upload(samples.to_bytes(samples.SAMPLES[sample](
                        patient_id=patient_id, study_uid=study_uid,
                        patient_name=name, seed=seed)))
        return study_uid

    def sync(self, server):
        Server = Pool().get('gnuhealth.orthanc.config')
        with Transaction().set_context(NO_COMMIT):
            result, = Server.sync_now([server]).values()
        self.assertIsNotNone(result, server.last_error)
        return result

    def dose_of(self, patient_id):
        Dose = Pool().get(DOSE)
        dose, = Dose.search([('study.patient_id', '=', patient_id)])
        return dose

    @with_transaction()
    def test_every_value_end_to_end(self):
        "Each sample's values, as recorded and as added up"
        studies = {
            'DOSE-CT': 'ct_three_events',
            'DOSE-HEAD': 'ct_head_legacy',
            'DOSE-ODD': 'odd_units',
            'DOSE-DX': 'projection_radiography',
            'DOSE-RF': 'fluoroscopy_biplane',
            'DOSE-MG': 'mammography_both',
            'DOSE-MG-OLD': 'mammography_legacy',
            'DOSE-PRIVATE': 'private_template',
            'DOSE-NONE': 'not_a_dose_report',
            }
        for patient_id, sample in studies.items():
            self.upload(patient_id, [sample])
        self.sync(self.create_server())
        summary = ['status', 'kind', 'ctdivol', 'dlp', 'dap', 'dose_rp',
            'fluoro_time', 'agd', 'event_count']
        expected = {
            'DOSE-CT': ['ok', 'ct', 8.11, 604.46, None, None, None, None, 3],
            'DOSE-HEAD': ['ok', 'ct', 52.3, 910.5, None, None, None, None,
                1],
            'DOSE-ODD': ['ok', 'ct', 9.1, 631.0, None, None, None, None, 2],
            'DOSE-DX': ['ok', 'projection', None, None, 0.12, 0.21, None,
                None, 2],
            'DOSE-RF': ['ok', 'projection', None, None, 66.3, 527.0, 913.4,
                None, 6],
            'DOSE-MG': ['ok', 'mammography', None, None, None, None, None,
                2.63, 4],
            'DOSE-MG-OLD': ['ok', 'mammography', None, None, None, None,
                None, 5.2, 0],
            'DOSE-PRIVATE': ['not_understood', None, None, None, None, None,
                None, None, None],
            'DOSE-NONE': ['not_dose', None, None, None, None, None, None,
                None, None],
            }
        for patient_id, values in expected.items():
            with self.subTest(sample=studies[patient_id]):
                dose = self.dose_of(patient_id)
                self.assertEqual(
                    rounded([getattr(dose, n) for n in summary]), values)

        ct = self.dose_of('DOSE-CT')
        self.assertEqual([(e.number, e.protocol, e.ctdivol, e.dlp,
                    e.phantom, e.target_region)
                for e in ct.events], [
                (1, 'Topogram', '0.13 mGy', '1.45 mGy·cm', 'body', 'Chest'),
                (2, 'Thorax 1.0 Spiral', '6.72 mGy', '254.31 mGy·cm', 'body',
                    'Chest'),
                (3, 'Abdomen 1.0 Spiral', '8.11 mGy', '348.70 mGy·cm', 'body',
                    'Abdomen'),
                ])
        self.assertEqual([(v.concept, v.value, v.unit, v.display)
                for v in ct.values], [
                ('ct_dlp_total', 604.46, 'mGy.cm', '604.46 mGy·cm')])
        self.assertEqual((ct.procedure, ct.manufacturer, ct.template,
                ct.started, ct.ended), (
                'Computed Tomography X-Ray', 'GNU Health Test Imaging',
                '10011', datetime.datetime(2024, 3, 5, 10, 10),
                datetime.datetime(2024, 3, 5, 10, 14, 30)))
        # As recorded: a CTDIvol in uGy, a DLP in Gy.cm
        odd = self.dose_of('DOSE-ODD')
        self.assertEqual([(e.ctdivol_value, e.ctdivol_unit, e.ctdivol,
                    e.dlp_value, e.dlp_unit, e.dlp) for e in odd.events], [
                (9100.0, 'uGy', '9.10 mGy', 0.412, 'Gy.cm', '412.00 mGy·cm'),
                (7.3, 'mGy', '7.30 mGy', 21.9, 'cGy.cm', '219.00 mGy·cm'),
                ])
        rf = self.dose_of('DOSE-RF')
        self.assertEqual(len(rf.values), 16)
        self.assertEqual([(v.plane, v.concept, v.value, v.unit, v.display)
                for v in rf.values if v.concept in {
                    'dose_area_product_total', 'total_fluoro_time'}], [
                ('a', 'dose_area_product_total', 0.00452, 'Gy.m2',
                    '45.20 Gy·cm²'),
                ('a', 'total_fluoro_time', 612.4, 's', '612.40 s'),
                ('b', 'dose_area_product_total', 0.00211, 'Gy.m2',
                    '21.10 Gy·cm²'),
                ('b', 'total_fluoro_time', 301.0, 's', '301.00 s'),
                ])
        mg = self.dose_of('DOSE-MG')
        self.assertEqual([(v.laterality, v.value, v.unit, v.display)
                for v in mg.values], [
                ('right', 2.41, 'mGy', '2.41 mGy'),
                ('left', 2.63, 'mGy', '2.63 mGy')])
        old = self.dose_of('DOSE-MG-OLD')
        self.assertEqual([(v.laterality, v.value, v.unit, v.display)
                for v in old.values], [('both', 0.052, 'dGy', '5.20 mGy')])
        private = self.dose_of('DOSE-PRIVATE')
        self.assertEqual(private.reason, 'the root concept is (DR-01, '
            '99ACME, "ACME Dose Summary"), not (113701, DCM, "X-Ray '
            'Radiation Dose Report")')
        self.assertEqual((private.events, private.values), ((), ()))

    @with_transaction()
    def test_read_once(self):
        "A study read again does not download its dose report again"
        pool = Pool()
        Dose = pool.get(DOSE)
        server = self.create_server()
        study_uid = self.upload('DOSE-ONCE', ['ct_three_events'])
        self.sync(server)
        self.assertEqual(len(Dose.search([])), 1)
        # A new series: the study is read again
        self.orthanc.upload(samples.make_image(study_uid, 'DOSE-ONCE',
                seed=2))
        with mock.patch.object(oc.OrthancClient, 'instance_file',
                autospec=True, side_effect=oc.OrthancClient.instance_file
                ) as download:
            result = self.sync(server)
        self.assertEqual(result.studies, 1)
        self.assertEqual(download.call_count, 0)
        self.assertEqual(len(Dose.search([])), 1)

    def upload_tampered(self, patient_id, tamper, key=1):
        "Upload a CT image and a CT RDSR changed by tamper(dataset)"
        study_uid = samples.make_uid('study', patient_id, key)
        self.orthanc.upload(samples.make_image(study_uid, patient_id))
        ds = samples.ct_three_events(patient_id=patient_id,
            study_uid=study_uid, seed=key)
        tamper(ds)
        self.orthanc.upload(samples.to_bytes(ds))
        return study_uid

    @staticmethod
    def set_item(ds, code, **values):
        "Set the DICOM attributes of the content items of concept code"
        def items(item):
            for child in item.get('ContentSequence') or []:
                yield child
                yield from items(child)
        for item in items(ds):
            if item.ConceptNameCodeSequence[0].CodeValue == code:
                for keyword, value in values.items():
                    if keyword == 'NumericValue':
                        item = item.MeasuredValueSequence[0]
                    setattr(item, keyword, value)

    @with_transaction()
    def test_bad_values_skipped(self):
        "Values the database cannot hold are left out, the rest is read"
        pool = Pool()
        Company = pool.get('company.company')
        company = create_company()
        # Year 1 in a zone ahead of UTC is before datetime.min in UTC
        Company.write([company], {'timezone': 'Europe/Paris'})
        server = self.create_server()
        self.upload('DOSE-GOOD', ['ct_three_events'])
        self.upload_tampered('DOSE-COUNT', lambda ds: self.set_item(
                ds, '113812', NumericValue='1E20'))
        self.upload_tampered('DOSE-YEAR1', lambda ds: self.set_item(
                ds, '113809', DateTime='00010101000000'))
        with set_company(company):
            result = self.sync(server)
        self.assertEqual(result.errors, [])
        good = self.dose_of('DOSE-GOOD')
        self.assertEqual((good.status, good.event_count), ('ok', 3))
        count = self.dose_of('DOSE-COUNT')
        self.assertEqual((count.status, count.event_count), ('ok', None))
        self.assertIn('Total Number of Irradiation Events', count.warnings)
        self.assertEqual(count.dlp, good.dlp)
        year1 = self.dose_of('DOSE-YEAR1')
        self.assertEqual((year1.status, year1.started), ('ok', None))
        self.assertIn('Irradiation Start', year1.warnings)

    def translate(self, language, texts):
        "Give the dose problem messages these texts in language"
        pool = Pool()
        Lang = pool.get('ir.lang')
        Message = pool.get('ir.message')
        ModelData = pool.get('ir.model.data')
        lang, = Lang.search([('code', '=', language)])
        Lang.write([lang], {'translatable': True})
        # As root: the messages are XML records
        with Transaction().set_user(0), \
                Transaction().set_context(language=language):
            for code, text in texts.items():
                message = Message(ModelData.get_id(
                        'health_orthanc', 'msg_dose_problem_' + code))
                Message.write([message], {'text': text})

    @with_transaction()
    def test_problems_stored_in_the_language(self):
        """Reasons and warnings are stored in the language of the sync's
        context, their items too"""
        self.translate('fr', {
                'not_a_count': "%(item)s : %(value)s n'est pas un nombre",
                'no_value': '%(item)s : aucune valeur',
                'item_ct_event': 'Acquisition CT %(number)s, %(concept)s',
                'other_root_concept': (
                    "le concept racine est %(concept)s, pas (113701, DCM, "
                    "\"X-Ray Radiation Dose Report\")"),
                })
        server = self.create_server()
        self.upload('DOSE-PRIVATE', ['private_template'])
        self.upload('DOSE-MISSING', ['missing_values'])
        self.upload_tampered('DOSE-COUNT', lambda ds: self.set_item(
                ds, '113812', NumericValue='1E20'))
        with Transaction().set_context(language='fr'):
            result = self.sync(server)
        self.assertEqual(result.errors, [])
        self.assertEqual(self.dose_of('DOSE-PRIVATE').reason,
            'le concept racine est (DR-01, 99ACME, "ACME Dose Summary"), '
            'pas (113701, DCM, "X-Ray Radiation Dose Report")')
        self.assertEqual(self.dose_of('DOSE-MISSING').warnings.split('\n'), [
                # not translated: the English text
                'no CT Dose Length Product Total (113813)',
                'Acquisition CT 1, Mean CTDIvol : aucune valeur',
                'Acquisition CT 2, DLP : aucune valeur',
                ])
        self.assertEqual(self.dose_of('DOSE-COUNT').warnings,
            "Total Number of Irradiation Events : 1e+20 n'est pas un nombre")

    @with_transaction()
    def test_report_that_cannot_be_kept(self):
        "A report whose values fail is kept Not Understood and reported"
        server = self.create_server()
        self.upload('DOSE-GOOD', ['ct_three_events'])
        bad_uid = self.upload('DOSE-BAD', ['ct_three_events'], key=2)
        summarize = dose_module.summarize

        def failing(report):
            if report.study_instance_uid == bad_uid:
                # The reason quotes it, NUL included
                raise ValueError('A string literal cannot contain NUL\x00')
            return summarize(report)
        with mock.patch.object(dose_module, 'summarize', failing):
            result = self.sync(server)
        bad = self.dose_of('DOSE-BAD')
        self.assertEqual(result.errors, [(bad.orthanc_id,
                    'the values cannot be kept: '
                    'A string literal cannot contain NUL')])
        self.assertEqual(bad.status, 'not_understood')
        self.assertIn('cannot contain NUL', bad.reason)
        self.assertEqual((bad.dlp, bad.events, bad.values), (None, (), ()))
        self.assertEqual(self.dose_of('DOSE-GOOD').status, 'ok')
        self.assertIn(bad.orthanc_id, server.last_error)

    def ct_head_request(self, patient, study_patient_id):
        """A requested head CT of patient whose accession number the
        study of study_patient_id carries (its generator's)"""
        Request = Pool().get('gnuhealth.imaging.test.request')
        request = create_request(patient, 'IMG-CT-HEAD')
        Request.requested([request])
        with without_check_access():
            Request.write([request], {
                    'accession_number': 'ACC-%s' % study_patient_id})
        return request

    def set_levels(self, **levels):
        Test = Pool().get('gnuhealth.imaging.test')
        test, = Test.search([('code', '=', 'IMG-CT-HEAD')])
        Test.write([test], {'drl_' + k: v for k, v in levels.items()})

    @with_transaction()
    def test_result_dose_and_reference_levels(self):
        "The head CT's dose on its result, flagged above the test's DRL"
        pool = Pool()
        Dose = pool.get(DOSE)
        Result = pool.get('gnuhealth.imaging.test.result')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        request = self.ct_head_request(ana, 'PUID-ANA')
        self.set_levels(ctdivol=60, dlp=800)
        self.upload('PUID-ANA', ['ct_head_legacy', 'not_a_dose_report'])
        self.sync(self.create_server())

        result, = Result.search([('request', '=', request.id)])
        dose, = result.doses
        self.assertEqual((dose.dlp, dose.ctdivol, dose.patient, dose.test),
            (910.5, 52.3, ana, request.requested_test))
        self.assertTrue(result.dose_above_reference)
        self.assertTrue(dose.above_reference)
        self.assertEqual(dose.exceeded, 'DLP 910.50 mGy·cm above 800.00 '
            'mGy·cm')
        self.assertEqual(Dose.search([('above_reference', '=', True)]),
            [dose])
        self.assertEqual(
            Result.search([('dose_above_reference', '=', True)]), [result])

        self.set_levels(ctdivol=50, dlp=1000)
        dose = Dose(dose.id)
        self.assertEqual(dose.exceeded, 'CTDIvol 52.30 mGy above 50.00 mGy')
        self.set_levels(ctdivol=None, dlp=1000)
        dose, result = Dose(dose.id), Result(result.id)
        self.assertFalse(result.dose_above_reference)
        self.assertEqual((dose.above_reference, dose.exceeded), (False, None))
        self.assertEqual(Dose.search([('above_reference', '=', True)]), [])
        self.assertEqual(Dose.search([('above_reference', '=', False),
                    ('status', '=', 'ok')]), [dose])
        self.assertEqual(
            Result.search([('dose_above_reference', '=', False)]), [result])

    @with_transaction()
    def test_level_of_a_result_without_request(self):
        "A study attached by hand takes the levels of its result's test"
        pool = Pool()
        Dose = pool.get(DOSE)
        Request = pool.get('gnuhealth.imaging.test.request')
        Study = pool.get('gnuhealth.orthanc.study')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        self.set_levels(dlp=500)
        self.upload('PUID-ANA', ['ct_three_events'])
        self.sync(self.create_server())
        request = create_request(ana, 'IMG-CT-HEAD')
        Request.requested([request])
        result, = Request.create_results([request])
        study, = Study.search([])
        self.assertEqual(study.request, None)
        self.assertEqual(Dose.search([('above_reference', '=', True)]), [])
        result.studies = [study]
        result.save()
        dose, = result.doses
        self.assertEqual((dose.test, dose.above_reference),
            (request.requested_test, True))
        self.assertEqual(Dose.search([('above_reference', '=', True)]),
            [dose])
        self.assertTrue(result.dose_above_reference)

    @with_transaction()
    def test_patient_dose_history(self):
        "The patient's studies and their DLP and DAP added up"
        pool = Pool()
        Dose = pool.get(DOSE)
        Study = pool.get('gnuhealth.orthanc.study')
        Patient = pool.get('gnuhealth.patient')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        for key, sample in enumerate(['ct_three_events', 'ct_head_legacy',
                    'fluoroscopy_biplane', 'private_template'], 1):
            self.upload('PUID-ANA', [sample], key=key)
        self.upload('OTHER', ['ct_three_events'], name='DOE^John')
        self.sync(self.create_server())
        # The head CT was ten days ago
        recent = datetime.date.today() - datetime.timedelta(days=10)
        head, = Dose.search([('patient', '=', ana.id), ('dlp', '=', 910.5)])
        with without_check_access():
            Study.write([head.study], {'study_date': recent})

        ana = Patient(ana.id)
        self.assertEqual(len(ana.radiation_doses), 4)
        self.assertEqual(ana.radiation_doses[0], head)
        self.assertEqual(rounded([ana.dose_dlp_total, ana.dose_dap_total,
                    ana.dose_dlp_year, ana.dose_dap_year]),
            [1514.96, 66.3, 910.5, 0.0])
        with Transaction().set_context(
                from_date=datetime.date(2024, 1, 1)):
            history = Dose.search([('patient', '=', ana.id),
                    ('status', '=', 'ok')], order=[('study_date', 'ASC'),
                    ('id', 'ASC')])
            self.assertEqual(
                [rounded([d.cumulative_dlp, d.cumulative_dap])
                    for d in history],
                [[604.46, 0.0], [604.46, 66.3], [1514.96, 66.3]])
        with Transaction().set_context(from_date=recent):
            self.assertEqual(
                rounded([Dose(head.id).cumulative_dlp]), [910.5])
        self.assertEqual(Dose.search([
                    ('patient', '=', ana.id),
                    ('study_date', '>=', recent)]), [head])
