# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Imaging requests on a real Orthanc: worklist entries seen by a modality
(dcmtk's findscu), studies coming back to their request (storescu and REST
uploads), conflicts left for review; the worklists REST API of Orthanc
1.12.10+, that no installed Orthanc offers, against the fake.

Like the other database tests, a missing Orthanc or dcmtk is an error, not
a skip.
"""
import datetime
import glob
import os
import shutil
import subprocess
import tempfile
import unittest
from unittest import mock

import pydicom
from trytond.model.exceptions import AccessError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

from trytond.modules.health_imaging.tests import tools
from trytond.modules.health_imaging.tests.tools import (
    create_patient, create_user)

from .dicom_samples import make_study
from .fake_orthanc import FakeOrthanc
from .orthanc_case import RealOrthancCase, run_queue
from .orthanc_server import OrthancServer, free_port, plugin_path

NO_COMMIT = {'_orthanc_page_commit': False}
MODALITY_AET = 'CT1'


def create_request(patient, test_code='IMG-CT-HEAD', **values):
    "A CT request at a fixed date (the worklist's scheduled date)"
    values.setdefault('date', datetime.datetime(2026, 11, 24, 9, 30))
    return tools.create_request(patient, test_code, **values)


class WorklistOrthancCase(RealOrthancCase):
    """A real Orthanc 1.10 with the ModalityWorklists plugin serving a
    folder, and a modality (AE title CT1) declared"""

    @classmethod
    def setUpClass(cls):
        activate_module('health_orthanc')
        cls.workdir = tempfile.mkdtemp(prefix='orthanc-worklist-')
        cls.folder = os.path.join(cls.workdir, 'worklists')
        os.makedirs(cls.folder)
        cls.orthanc = OrthancServer(
            cls.workdir, plugins=[plugin_path('ModalityWorklists')],
            dicom=True, extra_config={
                'Worklists': {'Enable': True, 'Database': cls.folder},
                'DicomModalities': {
                    'ct1': [MODALITY_AET, '127.0.0.1', free_port()]},
                }).start()

    def setUp(self):
        super().setUp()
        for name in os.listdir(self.folder):
            os.unlink(os.path.join(self.folder, name))

    def create_server(self, label='Main', orthanc=None, **values):
        values.setdefault('publish_worklists', True)
        values.setdefault('worklist_folder', self.folder)
        values.setdefault('worklist_station_aet', MODALITY_AET)
        return super().create_server(label, orthanc, **values)

    def find_worklist(self, **keys):
        """Query the worklist as the modality does; return the answers.

        keys are matching keys (PatientID='X'); the usual return keys are
        always asked.
        """
        query = dict.fromkeys([
                'AccessionNumber', 'PatientName', 'PatientID',
                'PatientBirthDate', 'PatientSex', 'StudyInstanceUID',
                'RequestedProcedureDescription', 'RequestingPhysician',
                'ScheduledProcedureStepSequence[0].Modality',
                'ScheduledProcedureStepSequence[0].ScheduledStationAETitle',
                'ScheduledProcedureStepSequence[0]'
                '.ScheduledProcedureStepStartDate',
                ], '')
        query.update(keys)
        output = tempfile.mkdtemp(dir=self.workdir)
        arguments = ['findscu', '-W', '-X', '-od', output,
            '-aet', MODALITY_AET, '-aec', self.orthanc.aet]
        for key, value in query.items():
            arguments += ['-k', '%s=%s' % (key, value) if value else key]
        arguments += ['127.0.0.1', str(self.orthanc.dicom_port)]
        process = subprocess.run(
            arguments, capture_output=True, text=True, errors='replace')
        self.assertEqual(process.returncode, 0, process.stderr)
        self.assertNotIn('Find Failed', process.stderr)
        answers = [pydicom.dcmread(f)
            for f in sorted(glob.glob(os.path.join(output, 'rsp*.dcm')))]
        shutil.rmtree(output)
        return answers

    def store(self, **kwargs):
        "Send a study to Orthanc with storescu, as the modality does"
        directory = tempfile.mkdtemp(dir=self.workdir)
        paths = []
        for i, data in enumerate(make_study(n_series=1, n_instances=1,
                    modalities=['CT'], **kwargs)):
            path = os.path.join(directory, '%s.dcm' % i)
            with open(path, 'wb') as fp:
                fp.write(data)
            paths.append(path)
        process = subprocess.run(['storescu', '-aet', MODALITY_AET,
                '-aec', self.orthanc.aet, '127.0.0.1',
                str(self.orthanc.dicom_port)] + paths,
            capture_output=True, text=True, errors='replace')
        shutil.rmtree(directory)
        self.assertEqual(process.returncode, 0, process.stderr)

    def upload(self, **kwargs):
        "Upload a study through the REST API"
        for data in make_study(n_series=1, n_instances=1, modalities=['CT'],
                **kwargs):
            self.orthanc.upload(data)

    def sync(self, server):
        "Sync the server, then run the worklist tasks it queued"
        Server = Pool().get('gnuhealth.orthanc.config')
        result = Server.sync_now([server])[server.id]
        self.assertIsNotNone(result, Server(server.id).last_error)
        run_queue()
        return result


class WorklistTestCase(WorklistOrthancCase):
    "Requests become worklist entries that the modality sees"

    @with_transaction(context=NO_COMMIT)
    def test_request_publishes_cancel_removes(self):
        "Request publishes the entry, Cancel removes it"
        Request = Pool().get('gnuhealth.imaging.test.request')
        server = self.create_server()
        ana = create_patient('Ana', 'Müller', puid='PUID-ANA',
            dob=datetime.date(1980, 1, 15))
        request = create_request(ana, urgent=True)
        self.assertEqual(self.find_worklist(PatientID='PUID-ANA'), [])

        Request.requested([request])
        # Nothing is written before the commit: the queued task does it
        self.assertEqual(request.worklist_state, 'pending')
        self.assertEqual(os.listdir(self.folder), [])
        self.assertEqual(run_queue(), 1)
        self.assertEqual(request.worklist_state, 'published')
        self.assertEqual(request.worklist_server, server)
        self.assertFalse(request.worklist_error)
        self.assertEqual(os.path.dirname(request.worklist_entry), self.folder)
        self.assertEqual(os.listdir(self.folder),
            [os.path.basename(request.worklist_entry)])
        answer, = self.find_worklist(PatientID='PUID-ANA')
        self.assertEqual(answer.AccessionNumber, request.accession_number)
        self.assertEqual(answer.StudyInstanceUID, request.study_instance_uid)
        self.assertEqual(str(answer.PatientName), 'Müller^Ana')
        self.assertEqual(answer.PatientBirthDate, '19800115')
        self.assertEqual(answer.PatientSex, 'F')
        self.assertEqual(answer.RequestedProcedureDescription,
            request.requested_test.name)
        step, = answer.ScheduledProcedureStepSequence
        self.assertEqual(step.Modality, 'CT')
        self.assertEqual(step.ScheduledStationAETitle, MODALITY_AET)
        self.assertEqual(step.ScheduledProcedureStepStartDate, '20261124')
        # The modality filters on its modality and its AE title
        self.assertEqual(len(self.find_worklist(**{
                        'ScheduledProcedureStepSequence[0].Modality': 'CT',
                        })), 1)
        self.assertEqual(self.find_worklist(**{
                    'ScheduledProcedureStepSequence[0].Modality': 'MR',
                    }), [])

        Request.cancel([request])
        self.assertEqual(request.state, 'cancelled')
        self.assertEqual(request.worklist_state, 'removing')
        self.assertEqual(len(os.listdir(self.folder)), 1)
        run_queue()
        self.assertEqual(request.worklist_state, 'removed')
        self.assertEqual(os.listdir(self.folder), [])
        self.assertEqual(self.find_worklist(PatientID='PUID-ANA'), [])

        # Back to draft the patient or the test may change: the DICOM
        # identifiers are given again
        uid = request.study_instance_uid
        Request.draft([request])
        self.assertIsNone(request.accession_number)
        self.assertIsNone(request.study_instance_uid)
        self.assertIsNone(request.worklist_state)
        self.assertIsNone(request.worklist_entry)
        Request.requested([request])
        run_queue()
        self.assertNotEqual(request.study_instance_uid, uid)
        answer, = self.find_worklist(PatientID='PUID-ANA')
        self.assertEqual(answer.AccessionNumber, request.accession_number)
        self.assertEqual(answer.StudyInstanceUID, request.study_instance_uid)

    @with_transaction(context=NO_COMMIT)
    def test_rollback_and_retry_leave_one_entry(self):
        "A rolled back request writes nothing; a task run twice, one entry"
        Request = Pool().get('gnuhealth.imaging.test.request')
        self.create_server()
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        request = create_request(ana)
        Request.requested([request])
        # Rolled back (or retried by trytond): its task never runs
        self.assertEqual(os.listdir(self.folder), [])
        Request.publish_worklists([request])
        Request.publish_worklists([request])
        self.assertEqual(len(os.listdir(self.folder)), 1)
        run_queue()
        self.assertEqual(len(self.find_worklist(PatientID='PUID-ANA')), 1)

        # Done while its publication is still queued: never published
        other = create_request(ana, 'IMG-CT-ABD')
        Request.requested([other])
        Request.create_results([other])
        self.assertEqual(other.state, 'done')
        run_queue()
        self.assertIn(other.worklist_state, {'removed', None})
        self.assertEqual(len(os.listdir(self.folder)), 1)

    @with_transaction(context=NO_COMMIT)
    def test_changed_folder_and_collisions(self):
        """An entry is removed from where it was written; accession
        numbers alike never share a file"""
        pool = Pool()
        Request = pool.get('gnuhealth.imaging.test.request')
        Server = pool.get('gnuhealth.orthanc.config')
        server = self.create_server()
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        slash = create_request(ana, request='IMG/1')
        underscore = create_request(ana, request='IMG_1')
        Request.requested([slash, underscore])
        run_queue()
        self.assertEqual(
            {slash.worklist_state, underscore.worklist_state},
            {'published'})
        self.assertEqual(len(os.listdir(self.folder)), 2)

        other_folder = tempfile.mkdtemp(dir=self.workdir)
        Server.write([server], {'worklist_folder': other_folder})
        Request.cancel([slash])
        run_queue()
        self.assertEqual(slash.worklist_state, 'removed')
        self.assertEqual(os.listdir(self.folder),
            [os.path.basename(underscore.worklist_entry)])
        answer, = self.find_worklist(PatientID='PUID-ANA')
        self.assertEqual(answer.AccessionNumber, 'IMG_1')

    @with_transaction(context=NO_COMMIT)
    def test_entries_block_deletions(self):
        "A request or a server holding an entry cannot be deleted"
        pool = Pool()
        Request = pool.get('gnuhealth.imaging.test.request')
        Server = pool.get('gnuhealth.orthanc.config')
        server = self.create_server()
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        request = create_request(ana)
        Request.requested([request])
        run_queue()
        with self.assertRaisesRegex(Exception, 'cannot be deleted'):
            Server.delete([server])
        Request.cancel([request])
        with self.assertRaisesRegex(Exception, 'cannot be deleted'):
            Request.delete([request])
        run_queue()
        self.assertEqual(request.worklist_state, 'removed')
        Request.delete([request])
        Server.delete([server])
        self.assertEqual(Server.search([]), [])

    @with_transaction(context=NO_COMMIT)
    def test_folder_only_for_orthanc_admins(self):
        """The worklist folder, a path on the Tryton server, is hidden from
        the clinicians, whose requests are published all the same"""
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Request = pool.get('gnuhealth.imaging.test.request')
        server = self.create_server()
        user = create_user('clinician', 'health.group_health_doctor')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        request = create_request(ana)
        with Transaction().set_user(user.id), \
                Transaction().set_context(_check_access=True):
            with self.assertRaises(AccessError):
                Server.read([server.id], ['worklist_folder'])
            Request.requested([Request(request.id)])
            run_queue()
        self.assertEqual(request.worklist_state, 'published')
        with Transaction().set_context(_check_access=True):
            values, = Server.read([server.id], ['worklist_folder'])
            self.assertEqual(values['worklist_folder'], self.folder)

    @with_transaction(context=NO_COMMIT)
    def test_scheduled_in_company_time_zone(self):
        "The database keeps UTC; the modality gets the hospital's time"
        pool = Pool()
        Request = pool.get('gnuhealth.imaging.test.request')
        Company = pool.get('company.company')
        server = self.create_server()
        company = create_company()
        Company.write([company], {'timezone': 'America/Argentina/Cordoba'})
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        request = create_request(ana)
        with set_company(company):
            entry = Request(request.id).get_worklist_entry(server)
        self.assertEqual(
            entry['scheduled'], datetime.datetime(2026, 11, 24, 6, 30))
        # The scheduler runs without a company: the only one is taken
        entry = request.get_worklist_entry(server)
        self.assertEqual(
            entry['scheduled'], datetime.datetime(2026, 11, 24, 6, 30))

    @with_transaction(context=NO_COMMIT)
    def test_order_of_two_tests(self):
        "Two tests ordered together are two entries with their own numbers"
        Request = Pool().get('gnuhealth.imaging.test.request')
        self.create_server()
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        head = create_request(ana, request='IMGREQ2026/00007')
        chest = create_request(
            ana, 'IMG-CT-ABD', request='IMGREQ2026/00007')
        Request.requested([head, chest])
        run_queue()
        answers = self.find_worklist(PatientID='PUID-ANA')
        self.assertEqual(
            sorted(a.AccessionNumber for a in answers),
            ['GREQ2026/00007-2', 'IMGREQ2026/00007'])
        self.assertEqual(len({a.StudyInstanceUID for a in answers}), 2)

    @with_transaction(context=NO_COMMIT)
    def test_publication_failures_keep_the_request(self):
        "A worklist that cannot be published never stops the request"
        pool = Pool()
        Request = pool.get('gnuhealth.imaging.test.request')
        Server = pool.get('gnuhealth.orthanc.config')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')

        # No server publishes worklists: nothing is recorded
        request = create_request(ana)
        Request.requested([request])
        self.assertEqual(request.state, 'requested')
        self.assertIsNone(request.worklist_state)

        missing = os.path.join(self.folder, 'missing')
        server = self.create_server(worklist_folder=missing)
        request = create_request(ana)
        Request.requested([request])
        run_queue()
        self.assertEqual(request.state, 'requested')
        self.assertEqual(request.worklist_state, 'failed')
        # The path is for the Orthanc administrators (in the log), not
        # for the imaging staff who read the request
        self.assertNotIn(missing, request.worklist_error)
        self.assertIn('Worklist Folder of the server does not exist',
            request.worklist_error)
        self.assertIn('Update Worklist', request.worklist_error)
        self.assertEqual(Request.search([
                    ('worklist_state', 'in', ['failed', 'stale'])]),
            [request])

        # The administrator fixes the folder; Update Worklist publishes
        Server.write([server], {'worklist_folder': self.folder})
        Request.update_worklist([request])
        run_queue()
        self.assertEqual(request.worklist_state, 'published')
        self.assertFalse(request.worklist_error)
        self.assertEqual(len(self.find_worklist(PatientID='PUID-ANA')), 1)

        # A modality no server takes
        Server.write([server], {'worklist_modalities': 'MR US'})
        request = create_request(ana)
        Request.requested([request])
        run_queue()
        self.assertEqual(request.worklist_state, 'failed')
        self.assertIn('"CT"', request.worklist_error)

        # A patient without PUID cannot be on a worklist
        Server.write([server], {'worklist_modalities': None})
        nobody = create_patient('No', 'Puid')
        Pool().get('party.party').write([nobody.party], {'ref': None})
        request = create_request(nobody)
        Request.requested([request])
        run_queue()
        self.assertEqual(request.worklist_state, 'failed')
        self.assertIn('PUID', request.worklist_error)
        self.assertIn('no PUID', request.worklist_error)

        # Cancelled: nothing was published, no problem is left to solve
        Request.cancel([request])
        self.assertIsNone(request.worklist_state)
        self.assertNotIn(request, Request.search([
                    ('worklist_state', 'in', ['failed', 'stale'])]))

    @with_transaction(context=NO_COMMIT)
    def test_server_by_modality(self):
        "The server listing the modality wins over the one taking all"
        Request = Pool().get('gnuhealth.imaging.test.request')
        other_folder = tempfile.mkdtemp(dir=self.workdir)
        self.create_server('All', worklist_folder=other_folder)
        ct = self.create_server(
            'CT', worklist_modalities='CT', orthanc=self.orthanc)
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        ct_request = create_request(ana)
        dx_request = create_request(ana, 'IMG-DX-CHEST')
        Request.requested([ct_request, dx_request])
        run_queue()
        self.assertEqual(ct_request.worklist_server, ct)
        self.assertEqual(dx_request.worklist_server.label, 'All')
        self.assertEqual(os.listdir(other_folder),
            [os.path.basename(dx_request.worklist_entry)])

    @with_transaction(context=NO_COMMIT)
    def test_orthanc_1_10_has_no_rest_api(self):
        "Without a folder, Orthanc 1.10's plugin cannot take the entry"
        Request = Pool().get('gnuhealth.imaging.test.request')
        self.create_server(worklist_folder=None)
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        request = create_request(ana)
        Request.requested([request])
        run_queue()
        self.assertEqual(request.worklist_state, 'failed')
        self.assertIn('1.12.10', request.worklist_error)
        self.assertNotIn(self.orthanc.password, request.worklist_error)


class StudyLinkTestCase(WorklistOrthancCase):
    "Studies come back to their request"

    def setUp(self):
        super().setUp()
        self.ana = None

    def requested(self, **values):
        Request = Pool().get('gnuhealth.imaging.test.request')
        self.server = self.create_server()
        self.ana = create_patient('Ana', 'Betz', puid='PUID-ANA',
            dob=datetime.date(1980, 1, 15))
        request = create_request(self.ana, **values)
        Request.requested([request])
        run_queue()
        self.assertEqual(request.worklist_state, 'published')
        return request

    @with_transaction(context=NO_COMMIT)
    def test_study_from_modality_performs_request(self):
        "The modality's study (storescu) is linked; the result is created"
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        request = self.requested()
        self.store(patient_id='PUID-ANA', patient_name='BETZ^Ana',
            study_uid=request.study_instance_uid,
            accession=request.accession_number,
            study_date='20261124', study_time='094500')
        self.sync(self.server)

        study, = Study.search([])
        self.assertEqual(study.request, request)
        self.assertEqual(study.request_link, 'linked')
        self.assertEqual(request.state, 'done')
        self.assertEqual(request.performed_date,
            datetime.datetime(2026, 11, 24, 9, 45))
        result, = request.results
        self.assertEqual(list(result.studies), [study])
        self.assertEqual(result.date, datetime.datetime(2026, 11, 24, 9, 45))
        self.assertEqual(list(request.studies), [study])
        # Performed: the modality no longer lists it
        self.assertEqual(request.worklist_state, 'removed')
        self.assertEqual(self.find_worklist(PatientID='PUID-ANA'), [])

        # Synced again (no change, then a second study of the same UID
        # by REST): nothing is duplicated
        self.upload(patient_id='PUID-ANA', patient_name='BETZ^Ana',
            study_uid=request.study_instance_uid, seed=3,
            accession=request.accession_number)
        self.sync(self.server)
        self.assertEqual(len(request.results), 1)
        self.assertEqual(len(result.studies), 1)

    @with_transaction(context=NO_COMMIT)
    def test_study_by_accession_number(self):
        "A study with another UID but the accession number is linked too"
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Result = pool.get('gnuhealth.imaging.test.result')
        Request = pool.get('gnuhealth.imaging.test.request')
        request = self.requested()
        # Results generated by hand before the images came
        existing, = Request.create_results([request])
        # Imported already: the study comes with the change log
        self.sync(self.server)
        self.assertIsNotNone(self.server.last)
        self.upload(patient_id='PUID-ANA', patient_name='BETZ^Ana',
            accession=request.accession_number)
        self.sync(self.server)
        study, = Study.search([])
        self.assertNotEqual(study.study_instance_uid,
            request.study_instance_uid)
        self.assertEqual(study.request, request)
        self.assertEqual(Result.search([]), [existing])
        self.assertEqual(list(existing.studies), [study])

    @with_transaction(context=NO_COMMIT)
    def test_uid_wins_over_accession(self):
        "The StudyInstanceUID decides when the two identifiers disagree"
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        first = self.requested()
        second = create_request(self.ana)
        Pool().get('gnuhealth.imaging.test.request').requested([second])
        self.upload(patient_id='PUID-ANA', patient_name='BETZ^Ana',
            study_uid=second.study_instance_uid,
            accession=first.accession_number)
        self.sync(self.server)
        study, = Study.search([])
        self.assertEqual(study.request, second)
        self.assertEqual(first.state, 'requested')

    @with_transaction(context=NO_COMMIT)
    def test_conflicts_listed_for_review(self):
        "Another patient's study is never linked; it is listed for review"
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        request = self.requested()
        create_patient('Bob', 'Cruz', puid='PUID-BOB')
        # The modality picked Bob, but typed Ana's accession number
        self.upload(patient_id='PUID-BOB', patient_name='CRUZ^Bob', seed=1,
            accession=request.accession_number)
        # An unknown PatientID with Ana's StudyInstanceUID, but another
        # birth date: whose images are they?
        self.upload(patient_id='TYPO-ANA', patient_name='BETZ^Ana', seed=2,
            study_uid=request.study_instance_uid, accession=None,
            birth_date='19991231')
        self.sync(self.server)

        review = Study.search([
                ('request_link', 'in', ['patient_differs', 'patient_unknown']),
                ], order=[('patient_id', 'ASC')])
        self.assertEqual(
            [(s.patient_id, s.request_link, s.request_candidate)
                for s in review],
            [('PUID-BOB', 'patient_differs', request),
                ('TYPO-ANA', 'patient_unknown', request)])
        self.assertTrue(all(s.request is None for s in review))
        self.assertEqual(request.state, 'requested')
        self.assertEqual(list(request.results), [])
        self.assertEqual(request.worklist_state, 'published')

        # A clinician checks the images and links the Orthanc patient by
        # hand; Link to Request links the study
        typo, = OrthancPatient.search([('patient_id', '=', 'TYPO-ANA')])
        OrthancPatient.write([typo], {'patient': self.ana.id})
        study = review[1]
        Study.link_request([study])
        self.assertEqual(study.request, request)
        self.assertEqual(study.request_link, 'linked')
        self.assertIsNone(study.request_candidate)
        self.assertEqual(request.state, 'done')
        self.assertEqual(
            Study.search([('request_link', '=', 'patient_differs')]),
            [review[0]])

        # Still Bob's: pressing the button changes nothing
        Study.link_request([review[0]])
        self.assertIsNone(review[0].request)

    @with_transaction(context=NO_COMMIT)
    def test_unknown_patient_linked_by_order(self):
        "A PatientID that names nobody takes the patient of the order"
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        request = self.requested()
        # Typed at the modality instead of picked from the worklist; the
        # birth date agrees with Ana's
        self.upload(patient_id='TYPO-ANA', patient_name='BETZ^Ana', seed=3,
            study_uid=request.study_instance_uid, accession=None)
        self.sync(self.server)

        study, = Study.search([])
        self.assertEqual(study.request, request)
        self.assertEqual(study.request_link, 'linked')
        typo, = OrthancPatient.search([])
        self.assertEqual(typo.patient, self.ana)
        self.assertEqual(typo.link_state, 'order')
        self.assertEqual(request.state, 'done')

        # A later sync keeps the link the order gave
        self.upload(patient_id='TYPO-ANA', patient_name='BETZ^Ana', seed=4)
        self.sync(self.server)
        typo, = OrthancPatient.search([])
        self.assertEqual((typo.patient, typo.link_state), (self.ana, 'order'))
        self.assertEqual(
            len(Study.search([('patient', '=', self.ana.id)])), 2)

    @with_transaction(context=NO_COMMIT)
    def test_order_link_needs_one_patient(self):
        "An unknown PatientID matching orders of two patients is reviewed"
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Request = pool.get('gnuhealth.imaging.test.request')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        request = self.requested()
        eve = create_patient('Eve', 'Dunn', puid='PUID-EVE',
            dob=datetime.date(1980, 1, 15))
        other = create_request(eve)
        Request.requested([other])
        run_queue()
        for seed, target in enumerate([request, other], 5):
            self.upload(patient_id='SHARED', patient_name='X^Y', seed=seed,
                study_uid=target.study_instance_uid, accession=None)
        self.sync(self.server)

        shared, = OrthancPatient.search([])
        self.assertIsNone(shared.patient)
        self.assertEqual(
            sorted(s.request_link for s in Study.search([])),
            ['patient_unknown', 'patient_unknown'])

    @with_transaction(context=NO_COMMIT)
    def test_order_link_evidence(self):
        "Only an order's StudyInstanceUID, never contradicted, links"
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Request = pool.get('gnuhealth.imaging.test.request')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        request = self.requested()
        # An accession number alone may come from elsewhere
        self.upload(patient_id='TYPO-ANA', patient_name='BETZ^Ana', seed=7,
            accession=request.accession_number)
        # No PatientID: Orthanc files all such studies under one patient
        self.upload(patient_id='', patient_name='BETZ^Ana', seed=8,
            study_uid=request.study_instance_uid, accession=None)
        self.sync(self.server)
        self.assertEqual(
            {(p.patient, p.link_state) for p in OrthancPatient.search([])},
            {(None, 'no_patient_id'), (None, 'no_match')})
        self.assertEqual(Study.search([('request', '!=', None)]), [])

        # A study of another order of the same Orthanc patient, even in an
        # earlier sync, is a contradiction
        eve = create_patient('Eve', 'Dunn', puid='PUID-EVE',
            dob=datetime.date(1999, 12, 31))
        other = create_request(eve)
        Request.requested([other])
        run_queue()
        self.upload(patient_id='SHARED', patient_name='X^Y', seed=9,
            study_uid=other.study_instance_uid, accession=None)
        self.sync(self.server)
        self.upload(patient_id='SHARED', patient_name='X^Y', seed=10,
            study_uid=request.study_instance_uid, accession=None)
        self.sync(self.server)
        shared, = OrthancPatient.search([('patient_id', '=', 'SHARED')])
        self.assertEqual((shared.patient, shared.link_state),
            (None, 'no_match'))
        self.assertEqual(
            {s.request_link for s in shared.studies}, {'patient_unknown'})

    @with_transaction(context=NO_COMMIT)
    def test_cancelled_request_not_linked(self):
        "A cancelled request takes no study"
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Request = pool.get('gnuhealth.imaging.test.request')
        request = self.requested()
        Request.cancel([request])
        self.upload(patient_id='PUID-ANA', patient_name='BETZ^Ana',
            study_uid=request.study_instance_uid)
        self.sync(self.server)
        study, = Study.search([])
        self.assertIsNone(study.request)
        self.assertIsNone(study.request_link)

    @with_transaction(context=NO_COMMIT)
    def test_performed_in_company_time_zone(self):
        "The study's local date and time is stored in UTC"
        pool = Pool()
        Company = pool.get('company.company')
        company = create_company()
        Company.write([company], {'timezone': 'America/Argentina/Cordoba'})
        with set_company(company):
            request = self.requested()
            self.upload(patient_id='PUID-ANA', patient_name='BETZ^Ana',
                study_uid=request.study_instance_uid,
                study_date='20261124', study_time='094500')
            self.sync(self.server)
            result, = request.results
        # 09:45 in Córdoba (UTC-3) is 12:45 UTC
        self.assertEqual(request.performed_date,
            datetime.datetime(2026, 11, 24, 12, 45))
        self.assertEqual(result.date, datetime.datetime(2026, 11, 24, 12, 45))

    @with_transaction(context=NO_COMMIT)
    def test_patient_corrected_after_link(self):
        """A study leaves the request and the draft result when its Orthanc
        patient turns out to be another person, and comes back"""
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        request = self.requested()
        bob = create_patient('Bob', 'Cruz', puid='PUID-BOB')
        self.upload(patient_id='PUID-ANA', patient_name='BETZ^Ana',
            study_uid=request.study_instance_uid)
        self.sync(self.server)
        study, = Study.search([])
        result, = request.results
        self.assertEqual(list(result.studies), [study])

        # The images were Bob's: the clinician corrects the link
        orthanc_patient, = OrthancPatient.search([])
        OrthancPatient.write([orthanc_patient], {'patient': bob.id})
        self.assertIsNone(study.request)
        self.assertEqual(study.request_link, 'patient_differs')
        self.assertEqual(study.request_candidate, request)
        self.assertEqual(list(result.studies), [])

        # Wrong again: back to Ana, the study comes back
        OrthancPatient.write([orthanc_patient], {'patient': self.ana.id})
        self.assertEqual(study.request, request)
        self.assertEqual(study.request_link, 'linked')
        self.assertEqual(list(result.studies), [study])

        # Relink (by PUID) gives the same; nothing changes
        OrthancPatient.relink([orthanc_patient])
        self.assertEqual(orthanc_patient.patient, self.ana)
        self.assertEqual(study.request, request)

    @with_transaction(context=NO_COMMIT)
    def test_study_attached_by_hand_leaves_another_patient_result(self):
        """A study attached by hand to a draft result, without request,
        leaves it when its Orthanc patient turns out to be another person"""
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Result = pool.get('gnuhealth.imaging.test.result')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        request = self.requested()
        bob = create_patient('Bob', 'Cruz', puid='PUID-BOB')
        self.upload(patient_id='PUID-ANA', patient_name='BETZ^Ana', seed=3)
        self.sync(self.server)
        study, = Study.search([])
        self.assertIsNone(study.request)
        result, = Result.create([Result.values_from_request(request)])
        Result.write([result], {'studies': [('add', [study.id])]})
        self.assertEqual(list(result.studies), [study])

        orthanc_patient, = OrthancPatient.search([])
        OrthancPatient.write([orthanc_patient], {'patient': bob.id})
        self.assertEqual(list(Result(result.id).studies), [])

    @with_transaction(context=NO_COMMIT)
    def test_completed_result_takes_no_study(self):
        """A completed result is never changed: a new study, or a study of
        another patient, is listed for review"""
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Result = pool.get('gnuhealth.imaging.test.result')
        Request = pool.get('gnuhealth.imaging.test.request')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        self.server = self.create_server()
        self.ana = create_patient('Ana', 'Betz', puid='PUID-ANA',
            mrn='MRN-ANA')
        bob = create_patient('Bob', 'Cruz', puid='PUID-BOB')
        request = create_request(self.ana)
        Request.requested([request])
        run_queue()
        # The first study comes with Ana's medical record number
        self.upload(patient_id='MRN-ANA', patient_name='BETZ^Ana',
            study_uid=request.study_instance_uid, seed=1)
        self.sync(self.server)
        first, = Study.search([])
        self.assertEqual(first.request, request)
        result, = request.results
        Result.write([result], {'comment': "Normal."})
        Result.complete([result])
        self.assertEqual(result.state, 'done')

        # A late study with the accession number
        self.upload(patient_id='PUID-ANA', patient_name='BETZ^Ana',
            accession=request.accession_number, seed=2)
        self.sync(self.server)
        late, = Study.search([('id', '!=', first.id)])
        self.assertIsNone(late.request)
        self.assertEqual(late.request_link, 'result_done')
        self.assertEqual(late.request_candidate, request)
        self.assertEqual(list(result.studies), [first])
        self.assertIn(late, Study.search([
                    ('request_link', 'in', ['patient_differs',
                            'patient_unknown', 'result_done'])]))

        # The first study was Bob's: listed for review, the signed result
        # unchanged until it is reset to draft
        mrn, = OrthancPatient.search([('patient_id', '=', 'MRN-ANA')])
        OrthancPatient.write([mrn], {'patient': bob.id})
        self.assertIsNone(first.request)
        self.assertEqual(first.request_link, 'patient_differs')
        self.assertEqual(list(result.studies), [first])
        Result.draft([result])
        Study.link_request([first, late])
        self.assertEqual(list(result.studies), [late])
        self.assertEqual(late.request, request)
        self.assertEqual(late.request_link, 'linked')
        self.assertEqual(first.request_link, 'patient_differs')

    @with_transaction(context=NO_COMMIT)
    def test_study_stored_before_request(self):
        "A study already stored is linked when the request is requested"
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Request = pool.get('gnuhealth.imaging.test.request')
        self.server = self.create_server()
        self.ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        request = create_request(self.ana)
        # The technician typed the order number by hand
        self.upload(patient_id='PUID-ANA', patient_name='BETZ^Ana',
            accession=request.request)
        self.sync(self.server)
        study, = Study.search([])
        self.assertIsNone(study.request)
        Request.requested([request])
        self.assertEqual(request.accession_number, request.request)
        self.assertEqual(study.request, request)
        self.assertEqual(request.state, 'done')
        run_queue()
        # Done before its entry was written: never on the worklist
        self.assertEqual(self.find_worklist(PatientID='PUID-ANA'), [])

    @with_transaction(context=NO_COMMIT)
    def test_link_studies_in_batch(self):
        "A page of studies is linked with a fixed number of searches"
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Request = pool.get('gnuhealth.imaging.test.request')
        Result = pool.get('gnuhealth.imaging.test.result')
        ResultStudy = pool.get(
            'gnuhealth.imaging.test.result-gnuhealth.orthanc.study')
        self.server = self.create_server()
        self.ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        requests = [create_request(self.ana) for _ in range(6)]
        Request.requested(requests)
        run_queue()
        for i, request in enumerate(requests):
            self.upload(patient_id='PUID-ANA', patient_name='BETZ^Ana',
                study_uid=request.study_instance_uid, seed=10 + i)
        # Stored without linking: the link is measured below
        with mock.patch.object(Study, 'link_to_requests'):
            self.sync(self.server)
        studies = Study.search([])
        self.assertEqual(len(studies), 6)
        self.assertTrue(all(s.request is None for s in studies))
        patches = [mock.patch.object(Model, 'search', side_effect=method,
                autospec=False)
            for Model, method in [
                (Request, Request.search), (Result, Result.search),
                (ResultStudy, ResultStudy.search)]]
        mocks = [p.start() for p in patches]
        try:
            Study.link_to_requests(Study.browse(studies))
        finally:
            for patch in patches:
                patch.stop()
        counted = [m.call_count for m in mocks]
        self.assertEqual({s.request for s in studies}, set(requests))
        self.assertEqual({r.state for r in requests}, {'done'})
        # Requests by UID and by accession number; results; the studies
        # attached (and the studies of the new results, read once)
        self.assertLessEqual(counted[0], 2)
        self.assertLessEqual(counted[1], 1)
        self.assertLessEqual(counted[2], 2)


class WorklistRestTestCase(unittest.TestCase):
    """The worklists REST API of Orthanc 1.12.10+ (POST /worklists/create,
    DELETE /worklists/{id}), against the fake: no installed Orthanc has
    it"""

    @classmethod
    def setUpClass(cls):
        activate_module('health_orthanc')

    def rest_server(self, fake):
        Server = Pool().get('gnuhealth.orthanc.config')
        server, = Server.create([{
                    'label': 'REST', 'domain': fake.url, 'user': 'u',
                    'password': 'secret-pw', 'validated': True,
                    'publish_worklists': True,
                    }])
        return server

    def rest_fake(self, fake):
        fake.set_json('/plugins', ['explorer.js', 'worklists'])
        fake.set_json('/plugins/worklists', {
                'ID': 'worklists', 'Version': '1.12.10'})

    @with_transaction(context=NO_COMMIT)
    def test_rest_publish_and_remove(self):
        Request = Pool().get('gnuhealth.imaging.test.request')
        with FakeOrthanc() as fake:
            self.rest_fake(fake)
            fake.set_json('/worklists/create', {
                    'ID': 'wl-1', 'Path': '/worklists/wl-1'})
            fake.set_json('/worklists/wl-1', {})
            server = self.rest_server(fake)
            ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
            request = create_request(ana)
            Request.requested([request])
            self.assertEqual(fake.count('/worklists/create'), 0)
            run_queue()
            self.assertEqual(request.worklist_state, 'published')
            self.assertEqual(request.worklist_entry, 'wl-1')
            self.assertEqual(request.worklist_server, server)
            post, = [r for r in fake.requests if r.method == 'POST']
            self.assertIn(request.accession_number.encode(), post.body)
            # The worklists are never listed to detect the API
            self.assertEqual(fake.count('/worklists'), 0)
            # A task run again creates nothing more
            Request.publish_worklists([request])
            self.assertEqual(fake.count('/worklists/create'), 1)

            Request.cancel([request])
            run_queue()
            self.assertEqual(request.worklist_state, 'removed')
            self.assertIn(('DELETE', '/worklists/wl-1'),
                [(r.method, r.path) for r in fake.requests])

    @with_transaction(context=NO_COMMIT)
    def test_mixed_entries(self):
        "Each entry is removed the way it was published"
        pool = Pool()
        Request = pool.get('gnuhealth.imaging.test.request')
        Server = pool.get('gnuhealth.orthanc.config')
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        with FakeOrthanc() as fake:
            self.rest_fake(fake)
            fake.set_json('/worklists/create', {'ID': 'wl-1'})
            fake.set_json('/worklists/wl-1', {})
            server = self.rest_server(fake)
            ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
            by_rest = create_request(ana)
            Request.requested([by_rest])
            run_queue()
            # The administrator switches the server to a folder
            Server.write([server], {'worklist_folder': folder})
            by_file = create_request(ana, 'IMG-CT-ABD')
            Request.requested([by_file])
            run_queue()
            self.assertEqual(os.path.dirname(by_file.worklist_entry), folder)

            Request.cancel([by_file, by_rest])
            run_queue()
            self.assertEqual(
                [by_file.worklist_state, by_rest.worklist_state],
                ['removed', 'removed'])
            self.assertEqual(os.listdir(folder), [])
            self.assertIn(('DELETE', '/worklists/wl-1'),
                [(r.method, r.path) for r in fake.requests])

    @with_transaction(context=NO_COMMIT)
    def test_rest_faults(self):
        "Orthanc errors are recorded on the request, password never shown"
        Request = Pool().get('gnuhealth.imaging.test.request')
        with FakeOrthanc() as fake:
            self.rest_fake(fake)
            fake.set('/worklists/create', status=500)
            self.rest_server(fake)
            ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
            request = create_request(ana)
            Request.requested([request])
            run_queue()
            self.assertEqual(request.state, 'requested')
            self.assertEqual(request.worklist_state, 'failed')
            self.assertIn('HTTP 500', request.worklist_error)

            # Published, then the server fails when it must be removed
            fake.set_json('/worklists/create', {'ID': 'wl-2'})
            Request.update_worklist([request])
            run_queue()
            self.assertEqual(request.worklist_state, 'published')
            fake.set('/worklists/wl-2', status=500)
            Request.cancel([request])
            run_queue()
            self.assertEqual(request.state, 'cancelled')
            self.assertEqual(request.worklist_state, 'stale')
            self.assertIn('could not be removed', request.worklist_error)
            # Not back to draft while a modality may still list it
            with self.assertRaisesRegex(Exception, 'Update Worklist'):
                Request.draft([request])
            # Orthanc is back: Update Worklist removes it
            fake.set_json('/worklists/wl-2', {})
            Request.update_worklist([request])
            run_queue()
            self.assertEqual(request.worklist_state, 'removed')
            Request.draft([request])
            self.assertEqual(request.state, 'draft')
            for text in [request.worklist_error or '']:
                self.assertNotIn('secret-pw', text)

        # The server is gone
        request = create_request(ana)
        Request.requested([request])
        run_queue()
        self.assertEqual(request.worklist_state, 'failed')
        self.assertIn('Cannot reach', request.worklist_error)
        self.assertNotIn('secret-pw', request.worklist_error)
