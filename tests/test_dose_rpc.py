# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The report in the study and the radiation dose over real JSON-RPC
sessions, as the users concerned (issue #14).

trytond runs outside GNU Health's test mode, the queued tasks run after
each call's commit (no worker), as they would for a user of the web
client.
"""
import datetime

from trytond.pool import Pool

from trytond.modules.health_orthanc.tests import rdsr_samples as samples

from .rpc import RPCError, RPCTestCase

CONFIG = 'gnuhealth.orthanc.config'
STUDY = 'gnuhealth.orthanc.study'
RESULT = 'gnuhealth.imaging.test.result'
PATIENT = 'gnuhealth.patient'
DOSE = 'gnuhealth.orthanc.dose'
DOSE_MODELS = [DOSE, 'gnuhealth.orthanc.dose.event',
    'gnuhealth.orthanc.dose.value', 'gnuhealth.orthanc.study.report']

USERS = {
    'physicist': ['health_orthanc.group_imaging_physicist'],
    'doctor': ['health.group_health_doctor'],
    'imaging': ['health_imaging.group_health_imaging'],
    'healthadmin': ['health.group_health_admin'],
    'nurse': ['health.group_health_nursing'],
    'reporting': ['health_imaging.group_health_imaging_reporting'],
    'nogroup': [],
    }
READERS = ['physicist', 'doctor', 'imaging', 'healthadmin']


class DoseRPCTestCase(RPCTestCase):
    "Who reads and changes doses and reports, over RPC"
    USERS = USERS
    DATABASE = 'dose_rpc'

    @classmethod
    def setUpData(cls):
        "Ana's head CT, above its test's reference levels, on its result"
        from trytond.modules.health_imaging.tests.tools import (
            create_patient, create_request)
        from trytond.modules.health_orthanc.tests.test_audit import (
            create_healthprof)
        with cls.trytond.transaction():
            pool = Pool()
            Server = pool.get(CONFIG)
            Request = pool.get('gnuhealth.imaging.test.request')
            Test = pool.get('gnuhealth.imaging.test')
            User = pool.get('res.user')
            ana = create_patient('Ana', 'Betz', puid='PUID-ANA',
                dob=datetime.date(1980, 1, 15))
            cls.ana = ana.id
            cls.healthprof = create_healthprof(
                User(cls.users['doctor'])).id
            test, = Test.search([('code', '=', 'IMG-CT-HEAD')])
            Test.write([test], {'drl_ctdivol': 60, 'drl_dlp': 800})
            request = create_request(ana, 'IMG-CT-HEAD')
            Request.requested([request])
            Request.write([request], {'accession_number': 'ACC-PUID-ANA'})
            server, = Server.create([{
                        'label': 'Main',
                        'domain': cls.orthanc.url,
                        'user': cls.orthanc.user,
                        'password': cls.orthanc.password,
                        'validated': True,
                        }])
            cls.server = server.id
            cls.request = request.id
        study_uid = samples.make_uid('study', 'PUID-ANA', 'rpc')
        cls.orthanc.upload(samples.make_image(study_uid, 'PUID-ANA',
                patient_name='BETZ^Ana'))
        cls.orthanc.upload(samples.to_bytes(samples.ct_head_legacy(
                    patient_id='PUID-ANA', study_uid=study_uid)))
        # The sync runs after the call: the study performs the request
        cls.trytond.create_user('orthancadmin',
            'health_orthanc.group_orthanc_admin')
        cls.trytond.session('orthancadmin').button(
            CONFIG, 'do_sync', [cls.server])
        cls.result, = cls.sessions['imaging'].search(
            RESULT, [('request', '=', cls.request)])
        cls.dose, = cls.sessions['imaging'].search(DOSE, [])

    def test_readers(self):
        "The clinical groups and the physicist read the dose, on results"
        for login in READERS:
            session = self.sessions[login]
            with self.subTest(user=login):
                result, = session.read(RESULT, [self.result], [
                        'doses', 'dose_above_reference'])
                self.assertEqual(result['doses'], [self.dose])
                self.assertTrue(result['dose_above_reference'])
                dose, = session.read(DOSE, [self.dose], [
                        'dlp', 'ctdivol', 'exceeded', 'events',
                        'patient'])
                self.assertEqual((dose['dlp'], dose['ctdivol'],
                        dose['patient']), (910.5, 52.3, self.ana))
                self.assertEqual(dose['exceeded'],
                    'DLP 910.50 mGy·cm above 800.00 mGy·cm')
                self.assertEqual(session.search(DOSE, [
                            ('above_reference', '=', True)]), [self.dose])
                patient, = session.read(PATIENT, [self.ana], [
                        'radiation_doses', 'dose_dlp_total'])
                self.assertEqual((patient['radiation_doses'],
                        patient['dose_dlp_total']), ([self.dose], 910.5))

    def test_physicist_menu(self):
        "The Radiation Dose menu is the physicist's"
        for login, seen in [('physicist', True), ('imaging', False),
                ('doctor', False)]:
            session = self.sessions[login]
            with self.subTest(user=login):
                menus = session.search('ir.ui.menu',
                    [('name', '=', 'Doses above Reference')])
                self.assertEqual(bool(menus), seen)

    def test_others_read_nothing(self):
        """Without a clinical group, no dose; a nurse reads the patient
        without its dose totals"""
        for login in ['nogroup', 'nurse']:
            session = self.sessions[login]
            for model in DOSE_MODELS:
                with self.subTest(user=login, model=model), \
                        self.assertRaises(RPCError):
                    session.search(model, [])
        nurse = self.sessions['nurse']
        nurse.read(PATIENT, [self.ana], ['rec_name'])
        for field in ['dose_dlp_total', 'dose_dap_year', 'radiation_doses']:
            with self.subTest(field=field), self.assertRaises(RPCError):
                nurse.read(PATIENT, [self.ana], [field])
        # The patient form still opens: the fields are left out of it
        view = nurse.model(PATIENT, 'fields_view_get', None, 'form')
        self.assertNotIn('dose_dlp_total', view['fields'])
        self.assertNotIn('radiation_doses', view['fields'])

    def test_result_doses_for_dose_readers(self):
        """The doses of a result are read by those who read doses: no
        other group learns which results are above the reference, by a
        read, a search or a nested where"""
        for login in READERS:
            record, = self.sessions[login].read(RESULT, [self.result],
                ['doses', 'dose_above_reference'])
            self.assertTrue(record['doses'])
        healthadmin = self.sessions['healthadmin']
        self.assertEqual(healthadmin.search(RESULT,
                [('dose_above_reference', '=', True)]), [self.result])
        # The nurse reads results in GNU Health; the reporting group reads
        # none (its numbers only)
        for login in ['nurse', 'reporting', 'nogroup']:
            session = self.sessions[login]
            for call in [
                    lambda: session.read(RESULT, [self.result], ['doses']),
                    lambda: session.read(RESULT, [self.result],
                        ['dose_above_reference']),
                    lambda: session.search(RESULT,
                        [('dose_above_reference', '=', True)]),
                    lambda: session.search('gnuhealth.imaging.test.request',
                        [('results', 'where', [
                                    ('dose_above_reference', '=', True)])]),
                    ]:
                with self.subTest(user=login), self.assertRaises(RPCError):
                    call()

    def test_nobody_changes_doses(self):
        "Made by the sync and the queue only: nobody writes them"
        with self.trytond.transaction():
            ids = {DOSE: self.dose}
            for model in DOSE_MODELS[1:3]:
                ids[model] = Pool().get(model).search([])[0].id
        for login in READERS:
            session = self.sessions[login]
            for model, record in ids.items():
                for method, args in [
                        ('create', [[{'dose': self.dose}]]),
                        ('write', [[record], {'orthanc_id': 'forged'}]
                            if model == DOSE else [[record], {'unit': 'x'}]),
                        ('delete', [[record]]),
                        ('copy', [[record], {}]),
                        ]:
                    with self.subTest(user=login, model=model,
                            method=method), self.assertRaises(RPCError):
                        session.model(model, method, *args)
        dose, = self.sessions['imaging'].read(DOSE, [self.dose],
            ['orthanc_id', 'dlp'])
        self.assertNotEqual(dose['orthanc_id'], 'forged')

    def test_report_state_not_writable(self):
        "The state of the report in the studies is the server's"
        session = self.sessions['imaging']
        for values in [{'study_report_state': 'stored'},
                {'report_revision': 7}, {'study_report_error': 'x'}]:
            with self.subTest(values=values), \
                    self.assertRaises(RPCError) as context:
                session.write(RESULT, [self.result], values)
            self.assertIn('GNU Health sets these fields itself',
                context.exception.message)

    def test_no_oracle_through_doses(self):
        "A nested where from the doses reaches no server field"
        for login in READERS:
            session = self.sessions[login]
            for domain in [
                    [('study', 'where', [('server', 'where',
                                    [('password', '>=', '')])])],
                    [('study.server.password', '>=', '')],
                    [('events', 'where', [('dose', 'where', [
                                        ('study', 'where', [('server',
                                                    'where', [('user', '=',
                                                            'orthanc')])])
                                        ])])],
                    ]:
                with self.subTest(user=login, domain=domain), \
                        self.assertRaises(RPCError):
                    session.search(DOSE, domain)

    def test_doctor_completes_report_stored(self):
        """The doctor completes over RPC: after the commit the PDF is in
        the study, signed with the doctor's name; complete again after a
        reset replaces it"""
        doctor = self.sessions['doctor']
        doctor.write(RESULT, [self.result],
            {'comment': "No intracranial haemorrhage."})
        doctor.button(RESULT, 'complete', [self.result])
        result, = doctor.read(RESULT, [self.result], [
                'state', 'study_report_state', 'study_reports', 'doctor',
                'number'])
        self.assertEqual((result['state'], result['study_report_state'],
                result['doctor']), ('done', 'stored', self.healthprof))
        report, = doctor.read('gnuhealth.orthanc.study.report',
            result['study_reports'], ['orthanc_id', 'revision'])
        tags = self.orthanc.request('GET', '/instances/%s/simplified-tags'
            % report['orthanc_id']).json()
        self.assertEqual((tags['PerformingPhysicianName'],
                tags['DocumentTitle']), ('House^Gregory',
                'Head CT without contrast %s' % result['number']))
        pdf = self.orthanc.request('GET', '/instances/%s/pdf'
            % report['orthanc_id']).content
        self.assertEqual(pdf[:5], b'%PDF-')

        doctor.button(RESULT, 'draft', [self.result])
        doctor.button(RESULT, 'complete', [self.result])
        result, = doctor.read(RESULT, [self.result], ['study_reports'])
        second, = doctor.read('gnuhealth.orthanc.study.report',
            result['study_reports'], ['orthanc_id', 'revision'])
        self.assertEqual(second['revision'], 2)
        instances = self.orthanc.request('GET', '/instances').json()
        self.assertIn(second['orthanc_id'], instances)
        self.assertNotIn(report['orthanc_id'], instances)
        # The doctor reads who stored and deleted it on the Audit tab
        audit, = doctor.read(RESULT, [self.result], ['audit'])
        actions = [e['action'] for e in doctor.read(
                'gnuhealth.orthanc.audit', audit['audit'], ['action'])]
        self.assertEqual(sorted(a for a in actions if a.startswith(
                        'report')),
            ['report_delete', 'report_store', 'report_store'])
