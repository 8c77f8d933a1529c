# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The completed report of a result stored into its studies, against a real
Orthanc: the PDF instance under the study, its replacement, its failures."""
import shutil
import subprocess
import tempfile
import unittest
from unittest import mock

import requests
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction, without_check_access

from trytond.modules.health_imaging.tests.tools import (
    create_patient, create_request)
from trytond.modules.health_orthanc import orthanc_client as oc
from trytond.modules.health_orthanc.report_dicom import (
    ENCAPSULATED_PDF_STORAGE, prepare_pdf)

from . import rdsr_samples as samples
from .orthanc_case import run_queue
from .orthanc_server import OrthancServer, free_port
from .test_audit import create_healthprof
from .test_dose_orthanc import AET, find

NO_COMMIT = {'_orthanc_page_commit': False}
RESULT = 'gnuhealth.imaging.test.result'


class StudyReportTestCase(unittest.TestCase):
    "health_orthanc and a real Orthanc answering C-FIND"

    @classmethod
    def setUpClass(cls):
        activate_module('health_orthanc')
        cls.workdir = tempfile.mkdtemp(prefix='orthanc-report-test-')
        cls.orthanc = OrthancServer(cls.workdir, dicom=True, extra_config={
                'DicomModalities': {
                    'reporttest': [AET, '127.0.0.1', free_port()]},
                }).start()

    @classmethod
    def tearDownClass(cls):
        cls.orthanc.stop()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        self.orthanc.clear()
        self.rendered = []

    def create_server(self):
        Server = Pool().get('gnuhealth.orthanc.config')
        server, = Server.create([{
                    'label': 'Main', 'domain': self.orthanc.url,
                    'user': self.orthanc.user,
                    'password': self.orthanc.password, 'validated': True,
                    }])
        return server

    def sync(self, server):
        Server = Pool().get('gnuhealth.orthanc.config')
        with Transaction().set_context(NO_COMMIT):
            Server.sync_now([server])

    def study_uid(self, patient_id):
        return samples.make_uid('study', patient_id, 'report')

    def upload(self, patient_id, number=1):
        "Upload a CT image of the patient's study"
        return self.orthanc.upload(samples.make_image(
                self.study_uid(patient_id), patient_id,
                patient_name='BETZ^Ana', number=number))

    def draft_result(self, patients=('PUID-ANA',)):
        """A draft result of a head CT of Ana by Dr House, reading the
        studies of the PatientIDs given; return it and the server"""
        pool = Pool()
        Request = pool.get('gnuhealth.imaging.test.request')
        Result = pool.get(RESULT)
        Study = pool.get('gnuhealth.orthanc.study')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        User = pool.get('res.user')
        server = self.create_server()
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        for patient_id in patients:
            self.upload(patient_id)
        self.sync(server)
        # Another PatientID of Ana's, linked by hand
        OrthancPatient.write(OrthancPatient.search(
                [('patient', '=', None)]), {'patient': ana.id})
        request = create_request(ana, 'IMG-CT-HEAD')
        Request.requested([request])
        result, = Request.create_results([request])
        Result.write([result], {
                'comment': "No intracranial haemorrhage.",
                'doctor': create_healthprof(User(Transaction().user)).id,
                'studies': [('add', [s.id for s in Study.search([])])],
                })
        return result, server

    def complete(self, result):
        "Complete the result and run the queued store, keeping the PDF"
        Result = Pool().get(RESULT)
        render = Result._report_pdf

        def capture(record):
            pdf, error = render(record)
            self.rendered.append(pdf)
            return pdf, error
        Result.complete([result])
        with mock.patch.object(Result, '_report_pdf', capture):
            run_queue()
        return Result(result.id)

    def get(self, path):
        return self.orthanc.request('GET', path)

    def assertGone(self, instance_id):
        with self.assertRaises(requests.HTTPError) as context:
            self.get('/instances/%s' % instance_id)
        self.assertEqual(context.exception.response.status_code, 404)

    def audit(self, action):
        Audit = Pool().get('gnuhealth.orthanc.audit')
        return Audit.search([('action', '=', action)], order=[('id', 'ASC')])

    @with_transaction()
    def test_completed_report_in_study(self):
        "Complete puts the PDF into the study, a DOC series C-FIND finds"
        result, _ = self.draft_result()
        study, = result.studies
        result = self.complete(result)

        self.assertEqual(
            (result.state, result.study_report_state, result.report_revision,
                result.study_report_error),
            ('done', 'stored', 1, None))
        report, = result.study_reports
        self.assertEqual((report.study, report.revision), (study, 1))
        pdf, = self.rendered
        self.assertEqual(pdf[:5], b'%PDF-')
        self.assertEqual(
            self.get('/instances/%s/pdf' % report.orthanc_id).content,
            prepare_pdf(pdf))
        self.assertEqual(self.get('/instances/%s/study' % report.orthanc_id
                ).json()['ID'], study.orthanc_id)
        tags = self.get('/instances/%s/simplified-tags'
            % report.orthanc_id).json()
        completed = result.completed_date
        self.assertEqual({k: tags.get(k) for k in [
                    'SOPClassUID', 'Modality', 'SeriesDescription',
                    'DocumentTitle', 'PerformingPhysicianName', 'PatientID',
                    'StudyInstanceUID', 'ContentDate', 'ContentTime']}, {
                'SOPClassUID': ENCAPSULATED_PDF_STORAGE,
                'Modality': 'DOC',
                'SeriesDescription': 'GNU Health report',
                'DocumentTitle': 'Head CT without contrast %s' % (
                    result.number),
                'PerformingPhysicianName': 'House^Gregory',
                'PatientID': 'PUID-ANA',
                'StudyInstanceUID': study.study_instance_uid,
                'ContentDate': completed.strftime('%Y%m%d'),
                'ContentTime': completed.strftime('%H%M%S'),
                })

        answers = find(self.orthanc, 'SERIES',
            StudyInstanceUID=study.study_instance_uid, SeriesInstanceUID='',
            Modality='DOC', SeriesDescription='')
        self.assertEqual([a.SeriesDescription for a in answers],
            ['GNU Health report'])
        instance, = find(self.orthanc, 'IMAGE',
            StudyInstanceUID=study.study_instance_uid,
            SeriesInstanceUID=answers[0].SeriesInstanceUID,
            SOPInstanceUID='', SOPClassUID='')
        self.assertEqual(instance.SOPClassUID, ENCAPSULATED_PDF_STORAGE)

        entry, = self.audit('report_store')
        self.assertEqual((entry.result, entry.patient, entry.orthanc_id),
            (result, result.patient, study.orthanc_id))
        self.assertIn(report.orthanc_id, entry.description)

    @with_transaction()
    def test_reset_and_complete_replaces(self):
        "Completed again, the new report replaces the old in Orthanc"
        Result = Pool().get(RESULT)
        result, _ = self.draft_result()
        result = self.complete(result)
        first, = [r.orthanc_id for r in result.study_reports]
        Result.draft([result])
        # Reset to draft, the signed report stays until the next one
        self.assertEqual(run_queue(), 0)
        Result.write([result], {'comment': "Small subdural haematoma."})
        result = self.complete(result)

        second, = result.study_reports
        self.assertEqual((result.report_revision, second.revision), (2, 2))
        self.assertNotEqual(second.orthanc_id, first)
        self.assertEqual(self.get('/instances/%s/pdf' % second.orthanc_id
                ).content, prepare_pdf(self.rendered[-1]))
        self.assertGone(first)
        series = self.get('/series/%s/instances'
            % second.series_orthanc_id).json()
        self.assertEqual([i['ID'] for i in series], [second.orthanc_id])
        self.assertEqual([e.description.count(first)
                for e in self.audit('report_delete')], [1])
        self.assertEqual(len(self.audit('report_store')), 2)

    @with_transaction()
    def test_retry_deletes_replaced_report(self):
        "The old report's delete failed: the retry deletes it"
        Result = Pool().get(RESULT)
        result, _ = self.draft_result()
        result = self.complete(result)
        first, = [r.orthanc_id for r in result.study_reports]
        Result.draft([result])
        Result.write([result], {'comment': "Small subdural haematoma."})

        def fail(client, instance_id):
            raise oc.OrthancError('HTTP 500 from Orthanc')
        with mock.patch.object(oc.OrthancClient, 'delete_instance', fail):
            result = self.complete(result)
        self.assertEqual(result.study_report_state, 'failed')
        self.assertEqual(sorted(r.revision for r in result.study_reports),
            [1, 2])

        # The new revision is in the study already: only the delete is left
        Result.store_study_reports([result])
        run_queue()
        result = Result(result.id)
        self.assertEqual(result.study_report_state, 'stored')
        self.assertEqual([r.revision for r in result.study_reports], [2])
        self.assertGone(first)
        self.assertEqual(len(self.audit('report_store')), 2)

    @with_transaction()
    def test_failure_kept_and_retried(self):
        "Orthanc unreachable: the result stays done, the button retries"
        Result = Pool().get(RESULT)
        Server = Pool().get('gnuhealth.orthanc.config')
        result, server = self.draft_result()
        with without_check_access():
            Server.write([server], {'domain': 'http://127.0.0.1:1'})
        result = self.complete(result)
        self.assertEqual((result.state, result.study_report_state),
            ('done', 'failed'))
        self.assertIn('could not be stored', result.study_report_error)
        self.assertEqual(result.study_reports, ())

        with without_check_access():
            # Moved back: its password is given again
            Server.write([server], {
                    'domain': self.orthanc.url,
                    'password': self.orthanc.password})
        Result.store_study_reports([result])
        run_queue()
        result = Result(result.id)
        self.assertEqual((result.study_report_state, result.report_revision),
            ('stored', 1))
        report, = result.study_reports
        self.assertEqual(self.get('/instances/%s' % report.orthanc_id
                ).status_code, 200)

    @with_transaction()
    def test_unexpected_error_fails_that_result_only(self):
        "LibreOffice times out on one result: it fails, the other is stored"
        Result = Pool().get(RESULT)
        result, _ = self.draft_result()
        other, = Result.copy([result])
        Result.write([other], {'studies': [('add', list(result.studies))]})
        self.assertEqual(len(other.studies), 1)
        render = Result._report_pdf

        def timeout(record):
            if record.id == result.id:
                raise subprocess.TimeoutExpired('soffice', 60)
            return render(record)
        Result.complete([result, other])
        with mock.patch.object(Result, '_report_pdf', timeout):
            self.assertEqual(run_queue(), 1)
        result, other = Result.browse([result.id, other.id])
        self.assertEqual((result.state, result.study_report_state),
            ('done', 'failed'))
        self.assertIn('unexpected error', result.study_report_error)
        self.assertIn('Store Report in Studies', result.study_report_error)
        self.assertEqual(result.study_reports, ())
        self.assertEqual(other.study_report_state, 'stored')
        self.assertEqual(len(other.study_reports), 1)

        # Once the cause is corrected, the button stores it
        Result.store_study_reports([result])
        run_queue()
        self.assertEqual(Result(result.id).study_report_state, 'stored')

    @with_transaction()
    def test_unexpected_error_in_a_study(self):
        "An error building one study's instance fails that study only"
        Result = Pool().get(RESULT)
        result, _ = self.draft_result(['PUID-ANA', 'PUID-ANA-2'])
        body = Result._report_body

        def broken(record, client, study, pdf):
            if study.patient_id == 'PUID-ANA-2':
                raise KeyError('0008-0005')
            return body(record, client, study, pdf)
        with mock.patch.object(Result, '_report_body', broken):
            result = self.complete(result)
        self.assertEqual(result.study_report_state, 'failed')
        self.assertIn('unexpected error', result.study_report_error)
        report, = result.study_reports
        self.assertEqual(report.study.patient_id, 'PUID-ANA')

    @with_transaction()
    def test_unexpected_error_keeps_what_was_stored(self):
        "An error after the store: the new report is known, Retry ends it"
        Result = Pool().get(RESULT)
        result, _ = self.draft_result()
        result = self.complete(result)
        first, = [r.orthanc_id for r in result.study_reports]
        Result.draft([result])
        Result.write([result], {'comment': "Small subdural haematoma."})
        with mock.patch.object(Result, '_delete_reports',
                side_effect=RuntimeError('bug')):
            result = self.complete(result)
        self.assertEqual(result.study_report_state, 'failed')
        self.assertIn('unexpected error', result.study_report_error)
        # The instance stored before the error is not forgotten
        second, = [r for r in result.study_reports if r.revision == 2]
        self.assertEqual(self.get('/instances/%s' % second.orthanc_id
                ).status_code, 200)

        Result.store_study_reports([result])
        run_queue()
        result = Result(result.id)
        self.assertEqual(result.study_report_state, 'stored')
        self.assertEqual(result.study_reports, (second,))
        self.assertGone(first)

    @with_transaction()
    def test_without_libreoffice(self):
        "No LibreOffice on the Tryton server: nothing stored, and why"
        result, _ = self.draft_result()
        with mock.patch('trytond.modules.health_orthanc.study_report.SOFFICE',
                'no-such-soffice'):
            result = self.complete(result)
        self.assertEqual((result.state, result.study_report_state),
            ('done', 'failed'))
        self.assertIn('LibreOffice', result.study_report_error)
        self.assertIn('libreoffice-writer-nogui', result.study_report_error)
        self.assertEqual(self.rendered, [None])
        self.assertEqual(len(self.get('/instances').json()), 1)

    @with_transaction()
    def test_study_removed_from_draft_result(self):
        "A study taken off the result loses the report stored in it"
        pool = Pool()
        Result = pool.get(RESULT)
        Study = pool.get('gnuhealth.orthanc.study')
        result, _ = self.draft_result(['PUID-ANA', 'PUID-ANA-2'])
        self.assertEqual(len(result.studies), 2)
        result = self.complete(result)
        self.assertEqual(len(result.study_reports), 2)
        Result.draft([result])
        removed, = Study.search([('patient_id', '=', 'PUID-ANA-2')])
        gone, = [r.orthanc_id for r in result.study_reports
            if r.study == removed]
        Result.write([result], {'studies': [('remove', [removed.id])]})
        self.assertEqual(run_queue(), 1)

        result = Result(result.id)
        kept, = result.study_reports
        self.assertNotEqual(kept.study, removed)
        self.assertEqual(result.study_report_state, 'stored')
        self.assertEqual(self.get('/instances/%s' % kept.orthanc_id
                ).status_code, 200)
        self.assertGone(gone)
        entry, = self.audit('report_delete')
        self.assertEqual(entry.orthanc_id, removed.orthanc_id)

    @with_transaction()
    def test_complete_without_study(self):
        "A result without study stores nothing and queues nothing"
        Result = Pool().get(RESULT)
        result, _ = self.draft_result(patients=())
        self.assertEqual(result.studies, ())
        Result.complete([result])
        self.assertEqual(run_queue(), 0)
        self.assertEqual(Result(result.id).study_report_state, None)

    @with_transaction()
    def test_sync_leaves_report_series_out(self):
        "The report series is no series of the study for GNU Health"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        result, server = self.draft_result()
        study, = result.studies
        series_before = [(s.orthanc_id, s.modality) for s in study.series]
        result = self.complete(result)
        self.sync(server)
        with mock.patch.object(oc.OrthancClient, 'get_series',
                autospec=True, side_effect=oc.OrthancClient.get_series
                ) as get_series, Transaction().set_context(NO_COMMIT):
            Server.reconcile_now([server])
        # The reconciliation finds nothing missing: the report series is
        # known as GNU Health's own
        self.assertEqual(get_series.call_count, 0)
        study = pool.get('gnuhealth.orthanc.study')(study.id)
        self.assertEqual(
            [(s.orthanc_id, s.modality) for s in study.series],
            series_before)
        self.assertEqual((study.modalities, study.number_of_series),
            ('CT', 1))
        # Nothing was queued by the syncs: no new report, no loop
        self.assertEqual(run_queue(), 0)
