# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The audit over real JSON-RPC sessions, as the users concerned.

trytond runs outside GNU Health's test mode here, so a user who is a
health professional is recorded as one, and one who is not is recorded
without raising (``get_health_professional`` raises when required).
"""
import datetime

from trytond.pool import Pool

from trytond.modules.health_orthanc.tests.dicom_samples import make_study

from .rpc import RPCError, RPCTestCase

AUDIT = 'gnuhealth.orthanc.audit'
CONFIG = 'gnuhealth.orthanc.config'
PATIENT = 'gnuhealth.orthanc.patient'
STUDY = 'gnuhealth.orthanc.study'

USERS = {
    'doctor': ['health.group_health_doctor'],
    'imaging': ['health_imaging.group_health_imaging'],
    'healthadmin': ['health.group_health_admin'],
    'orthancadmin': ['health_orthanc.group_orthanc_admin'],
    'alladmin': ['health.group_health_admin',
        'health_orthanc.group_orthanc_admin',
        'health_imaging.group_health_imaging_admin'],
    'nogroup': [],
    }


class AuditRPCTestCase(RPCTestCase):
    "Who did what, recorded whoever calls and however"
    USERS = USERS
    DATABASE = 'audit_rpc'

    @classmethod
    def setUpData(cls):
        from trytond.modules.health_imaging.tests.tools import create_patient
        from trytond.modules.health_orthanc.tests.test_audit import (
            create_healthprof)
        with cls.trytond.transaction():
            pool = Pool()
            Server = pool.get(CONFIG)
            User = pool.get('res.user')
            ana = create_patient('Ana', 'Betz', puid='PUID-ANA',
                dob=datetime.date(1980, 1, 15))
            cls.ana = ana.id
            cls.healthprof = create_healthprof(
                User(cls.users['doctor'])).id
            server, = Server.create([{
                        'label': 'Main',
                        'domain': cls.orthanc.url,
                        'user': cls.orthanc.user,
                        'password': cls.orthanc.password,
                        'validated': True,
                        }])
            cls.server = server.id
        # Images whose PatientID names nobody: linked by hand below
        for instance in make_study(n_series=1, n_instances=1, seed=51,
                patient_id='WARD-7', patient_name='BETZ^Ana'):
            cls.orthanc.upload(instance)
        cls.sessions['orthancadmin'].button(CONFIG, 'do_sync', [cls.server])
        cls.orthanc_patient, = cls.sessions['orthancadmin'].search(
            PATIENT, [('patient_id', '=', 'WARD-7')])

    def root(self):
        return self.trytond.transaction()

    def entries(self, **values):
        "The (id, action, user id, healthprof id, patient id) of entries"
        with self.root():
            Audit = Pool().get(AUDIT)
            return [(e.id, e.action, e.user.id if e.user else None,
                    e.healthprof.id if e.healthprof else None,
                    e.patient.id if e.patient else None)
                for e in Audit.search(
                    [(k, '=', v) for k, v in values.items()],
                    order=[('id', 'ASC')])]

    def test_doctor_links_by_hand(self):
        "A doctor links images by hand: the entry names the doctor"
        doctor = self.sessions['doctor']
        doctor.write(PATIENT, [self.orthanc_patient], {'patient': self.ana})
        entry, = self.entries(
            record='%s,%s' % (PATIENT, self.orthanc_patient))
        self.assertEqual(entry[1:], ('patient_link', self.users['doctor'],
                self.healthprof, self.ana))
        # The doctor reads it on the Orthanc patient's Audit tab
        values, = doctor.read(PATIENT, [self.orthanc_patient], ['audit'])
        self.assertEqual(values['audit'], [entry[0]])
        shown, = doctor.read(AUDIT, values['audit'],
            ['action', 'user.rec_name', 'description'])
        self.assertEqual(shown['user.']['rec_name'], 'doctor')
        self.assertIn('→ Betz, Ana (PUID-ANA)', shown['description'])

    def test_imaging_user_uploads(self):
        """An imaging user uploads a study whose PatientID is a PUID: the
        entry names them and the patient it is filed under"""
        files = make_study(n_series=2, n_instances=1, seed=52,
            patient_id='PUID-ANA', patient_name='ANYONE^Else',
            birth_date=None)
        answer = self.sessions['imaging'].wizard('gnuhealth.orthanc.upload', [
                ('upload', {'start': {
                            'server': self.server,
                            'files': [{
                                    'file_name': 'i%s.dcm' % i,
                                    'data': data,
                                    } for i, data in enumerate(files)],
                            }}),
                ])
        self.assertEqual(answer['view']['defaults']['stored'], 2)
        entry, = self.entries(action='upload')
        self.assertEqual(entry[1:], ('upload', self.users['imaging'], None,
                self.ana))
        # The sync ran after the wizard: the study is where the entry says
        with self.root():
            Audit = Pool().get(AUDIT)
            Study = Pool().get(STUDY)
            study, = Study.search([
                    ('orthanc_id', '=', Audit(entry[0]).orthanc_id)])
            self.assertEqual(study.patient.id, self.ana)

    def test_nobody_changes_entries(self):
        "Nobody, administrators included, creates, changes or deletes"
        self.sessions['doctor'].write(
            PATIENT, [self.orthanc_patient], {'patient': None})
        entry = self.entries()[-1]
        before = self.entries()
        for login in USERS:
            session = self.sessions[login]
            for method, args in [
                    ('create', [[{'action': 'upload', 'description': 'x'}]]),
                    ('write', [[entry[0]], {'description': 'forged'}]),
                    ('write', [[entry[0]], {'user': self.users[login]}]),
                    ('delete', [[entry[0]]]),
                    ('copy', [[entry[0]], {}]),
                    ]:
                with self.subTest(user=login, method=method), \
                        self.assertRaises(RPCError):
                    session.model(AUDIT, method, *args)
        self.assertEqual(self.entries(), before)

    def test_no_health_group_reads_nothing(self):
        session = self.sessions['nogroup']
        for call in [
                lambda: session.search(AUDIT, []),
                lambda: session.read(AUDIT, [e[0] for e in self.entries()],
                    ['description']),
                lambda: session.search(AUDIT, [('patient', '=', self.ana)]),
                ]:
            with self.assertRaises(RPCError):
                call()

    def test_server_entries_and_password(self):
        """The entries of servers (they name its user) only for Orthanc
        administrators; none reveals the password, nor a where through
        the audit"""
        session = self.sessions['orthancadmin']
        session.write(CONFIG, [self.server], {
                'password': self.orthanc.password + '-new'})
        session.write(CONFIG, [self.server], {
                'password': self.orthanc.password})
        for login in USERS:
            if login == 'nogroup':
                continue
            session = self.sessions[login]
            with self.subTest(user=login):
                found = session.search(
                    AUDIT, [('action', '=', 'server_change')])
                self.assertEqual(len(found),
                    2 if login in {'orthancadmin', 'alladmin'} else 0)
                for entry in session.read(AUDIT, found, ['description']):
                    self.assertIn('Password changed', entry['description'])
                    self.assertNotIn(
                        self.orthanc.password, entry['description'])
                with self.assertRaises(RPCError):
                    session.search(AUDIT, [('server', 'where',
                                [('password', '>=', '')])])
