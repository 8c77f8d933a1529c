# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The audit: who linked, attached, uploaded, deleted and changed a server,
recorded with the action, one create per action."""
import contextlib
import datetime
from unittest import mock

from trytond.model.exceptions import AccessError
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction
from trytond.transaction import Transaction, without_check_access

from trytond.modules.health_imaging.tests.tools import (
    create_patient, create_request, create_user)
from trytond.modules.health_orthanc.audit import SERVER_ACTIONS

from .dicom_samples import make_study
from .orthanc_case import RealOrthancCase, run_queue, upload_study

NO_COMMIT = {'_orthanc_page_commit': False}
AUDIT = 'gnuhealth.orthanc.audit'


def as_user(user):
    "Act as user through RPC would: access checked"
    return _stack(Transaction().set_user(user.id),
        Transaction().set_context(_check_access=True))


@contextlib.contextmanager
def _stack(*managers):
    with contextlib.ExitStack() as stack:
        for manager in managers:
            stack.enter_context(manager)
        yield


def create_healthprof(user, name='Gregory', lastname='House'):
    "Make user's party a health professional; return the professional"
    pool = Pool()
    Party = pool.get('party.party')
    Professional = pool.get('gnuhealth.healthprofessional')
    party, = Party.create([{
                'name': name, 'lastname': lastname, 'is_person': True,
                'is_healthprof': True, 'gender': 'm', 'fed_country': 'XX',
                'internal_user': user.id,
                }])
    professional, = Professional.create([{'party': party.id}])
    return professional


@contextlib.contextmanager
def counting_creates():
    "Count the create calls of the audit and the entries they make"
    Audit = Pool().get(AUDIT)
    with mock.patch.object(Audit, 'create', wraps=Audit.create) as create:
        yield create


def entries(servers=False, **domain):
    """The entries matching the field values, oldest first; of servers only
    if servers"""
    Audit = Pool().get(AUDIT)
    return Audit.search([(k, '=', v) for k, v in domain.items()]
        + ([] if servers else [('action', 'not in', SERVER_ACTIONS)]),
        order=[('id', 'ASC')])


class AuditTestCase(RealOrthancCase):
    "What is recorded, by whom, in one create per action"

    def orthanc_patient(self, server, orthanc_id='p1', patient_id='NOBODY',
            name='DOE, Jane', **values):
        OrthancPatient = Pool().get('gnuhealth.orthanc.patient')
        patient, = OrthancPatient.create([dict({
                        'server': server.id, 'orthanc_id': orthanc_id,
                        'patient_id': patient_id, 'name': name,
                        }, **values)])
        return patient

    def study(self, patient, orthanc_id='s1', **values):
        Study = Pool().get('gnuhealth.orthanc.study')
        study, = Study.create([dict({
                        'server': patient.server.id, 'orthanc_id': orthanc_id,
                        'orthanc_patient': patient.id,
                        'patient_id': patient.patient_id,
                        'study_instance_uid': '1.2.3.%s' % orthanc_id,
                        'description': 'Study %s' % orthanc_id,
                        'study_date': datetime.date(2024, 5, 1),
                        }, **values)])
        return study

    def offline_server(self, label='Offline'):
        Server = Pool().get('gnuhealth.orthanc.config')
        server, = Server.create([{
                    'label': label, 'domain': 'http://127.0.0.1:1',
                    'validated': True,
                    }])
        return server

    @with_transaction()
    def test_manual_link_and_unlink(self):
        "A doctor's link and unlink by hand: one entry each, with the values"
        pool = Pool()
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        server = self.offline_server()
        patient = self.orthanc_patient(server)
        doctor = create_user('doctor', 'health.group_health_doctor')
        # The sync's rule records nothing
        OrthancPatient.link([patient])
        self.assertEqual(entries(), [])

        with as_user(doctor):
            OrthancPatient.write([OrthancPatient(patient.id)],
                {'patient': ana.id})
        entry, = entries()
        self.assertEqual(
            (entry.action, entry.user, entry.healthprof, entry.patient,
                entry.record, entry.server, entry.orthanc_id,
                entry.record_name),
            ('patient_link', doctor, None, ana, patient, server, 'p1',
                'DOE, Jane [NOBODY]'))
        self.assertEqual(entry.description,
            'Patient: (none) → Betz, Ana (PUID-ANA)\n'
            'Link: No patient with this PUID or MRN → Set by hand')
        self.assertIsInstance(entry.date, datetime.datetime)

        # The same choice again changes nothing: no entry
        with as_user(doctor):
            OrthancPatient.write([OrthancPatient(patient.id)],
                {'patient': ana.id})
            OrthancPatient.write([OrthancPatient(patient.id)],
                {'patient': None})
        _, unlink = entries()
        # The patient whose images these were
        self.assertEqual((unlink.action, unlink.patient, unlink.description),
            ('patient_unlink', ana,
                'Patient: Betz, Ana (PUID-ANA) → (none)'))

    @with_transaction()
    def test_links_in_one_create(self):
        "Three patients linked in one write: one create of three entries"
        pool = Pool()
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        bob = create_patient('Bob', 'Cruz', puid='PUID-BOB')
        server = self.offline_server()
        patients = [self.orthanc_patient(server, 'p%s' % i, 'X%s' % i)
            for i in range(3)]
        imaging = create_user(
            'imaging', 'health_imaging.group_health_imaging')
        with counting_creates() as create, as_user(imaging):
            OrthancPatient.write(patients[:2], {'patient': ana.id},
                patients[2:], {'patient': bob.id})
        self.assertEqual(create.call_count, 1)
        self.assertEqual(len(create.call_args.args[0]), 3)
        self.assertEqual([(e.record, e.patient) for e in entries()],
            [(patients[0], ana), (patients[1], ana), (patients[2], bob)])

    @with_transaction()
    def test_relink(self):
        "Link Automatically records the link it gives back to the rule"
        pool = Pool()
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        bob = create_patient('Bob', 'Cruz', puid='PUID-BOB')
        server = self.offline_server()
        patient = self.orthanc_patient(server, patient_id='PUID-ANA')
        admin = create_user('healthadmin', 'health.group_health_admin')
        with as_user(admin):
            OrthancPatient.write([OrthancPatient(patient.id)],
                {'patient': bob.id})
            OrthancPatient.relink([OrthancPatient(patient.id)])
        link, relink = entries()
        self.assertEqual((link.action, link.patient), ('patient_link', bob))
        self.assertEqual(
            (relink.action, relink.user, relink.patient), (
                'patient_relink', admin, ana))
        self.assertEqual(relink.description,
            'Patient: Cruz, Bob (PUID-BOB) → Betz, Ana (PUID-ANA)\n'
            'Link: Set by hand → Linked by PUID or MRN')

    @with_transaction()
    def test_health_professional(self):
        """The user's health professional is recorded; a user who is none
        is recorded too, also outside GNU Health's test mode (where
        get_health_professional raises when required)"""
        pool = Pool()
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        server = self.offline_server()
        first, second = [self.orthanc_patient(server, 'p%s' % i)
            for i in range(2)]
        doctor = create_user('house', 'health.group_health_doctor')
        professional = create_healthprof(doctor)
        clerk = create_user('clerk', 'health_imaging.group_health_imaging')
        with mock.patch.object(type(pool), 'test', False):
            with as_user(doctor):
                OrthancPatient.write([first], {'patient': ana.id})
            with as_user(clerk):
                OrthancPatient.write([second], {'patient': ana.id})
        by_doctor, by_clerk = entries()
        self.assertEqual((by_doctor.user, by_doctor.healthprof),
            (doctor, professional))
        self.assertEqual((by_clerk.user, by_clerk.healthprof), (clerk, None))

    def performed_result(self, patient, server, orthanc_patient):
        "A requested request whose study came: return request, result, study"
        Request = Pool().get('gnuhealth.imaging.test.request')
        request = create_request(patient)
        Request.requested([request])
        study = self.study(orthanc_patient,
            study_instance_uid=request.study_instance_uid)
        return request, study

    @with_transaction()
    def test_result_studies_by_hand_and_by_matching(self):
        """Attached and removed by a person, or by the order matching:
        each entry says which, the matching with the user who caused it"""
        pool = Pool()
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        Study = pool.get('gnuhealth.orthanc.study')
        Result = pool.get('gnuhealth.imaging.test.result')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        bob = create_patient('Bob', 'Cruz', puid='PUID-BOB')
        server = self.offline_server()
        orthanc_ana = self.orthanc_patient(
            server, 'pa', 'PUID-ANA', 'BETZ, Ana')
        OrthancPatient.link([orthanc_ana])
        request, study = self.performed_result(ana, server, orthanc_ana)
        # The sync matches the study to its order
        Study.link_to_requests([study])
        result, = request.results
        attached, = entries()
        self.assertEqual(
            (attached.action, attached.user.id, attached.record,
                attached.result, attached.patient),
            ('result_attach_matching', Transaction().user, study, result,
                ana))
        self.assertEqual(attached.description,
            'Study %s attached to result %s of Betz, Ana (PUID-ANA).' % (
                study.rec_name, result.rec_name))

        # By hand: a doctor removes it and adds two others in one write
        doctor = create_user('doctor', 'health.group_health_doctor')
        others = [self.study(orthanc_ana, 's%s' % i) for i in range(2, 4)]
        with counting_creates() as create, as_user(doctor):
            Result.write([Result(result.id)], {'studies': [
                        ('remove', [study.id]),
                        ('add', [s.id for s in others]),
                        ]})
        self.assertEqual(create.call_count, 2)  # removal, then addition
        detached, *added = entries()[1:]
        self.assertEqual((detached.action, detached.user, detached.record),
            ('result_detach', doctor, study))
        self.assertEqual([(e.action, e.record, e.result) for e in added],
            [('result_attach', s, result) for s in others])

        # The doctor gives Ana's images to Bob: the matching takes the
        # studies off Ana's draft result, in the doctor's name
        with as_user(doctor):
            Result.write([Result(result.id)], {'studies': [
                        ('add', [study.id])]})
            OrthancPatient.write([OrthancPatient(orthanc_ana.id)],
                {'patient': bob.id})
        reattached, link, *removed = entries()[4:]
        self.assertEqual(reattached.action, 'result_attach')
        self.assertEqual((link.action, link.patient), ('patient_link', bob))
        # All of the Orthanc patient's studies, attached by hand or not
        self.assertEqual(
            sorted((e.action, e.user, e.record.id) for e in removed),
            sorted(('result_detach_matching', doctor, s.id)
                for s in [study] + others))
        self.assertEqual(list(Result(result.id).studies), [])

    @with_transaction()
    def test_deleted_result_keeps_its_entries(self):
        "A draft result deleted: its studies' removal names it"
        pool = Pool()
        Result = pool.get('gnuhealth.imaging.test.result')
        Test = pool.get('gnuhealth.imaging.test')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        server = self.offline_server()
        study = self.study(self.orthanc_patient(server, patient=ana.id))
        test, = Test.search([], limit=1)
        result, = Result.create([{
                    'patient': ana.id, 'requested_test': test.id,
                    'studies': [('add', [study.id])],
                    }])
        name = result.rec_name
        Result.delete([result])
        attach, detach = entries()
        self.assertEqual((detach.action, detach.result, detach.patient),
            ('result_detach', None, ana))
        self.assertIn(name, detach.description)
        self.assertEqual(attach.result, None)

    @with_transaction()
    def test_link_request_button(self):
        "Link to Request records the link it changed, and only then"
        pool = Pool()
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        Study = pool.get('gnuhealth.orthanc.study')
        Request = pool.get('gnuhealth.imaging.test.request')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        server = self.offline_server()
        orthanc_patient = self.orthanc_patient(server)
        request = create_request(ana)
        Request.requested([request])
        # Found by its accession number, the patient not known: for review
        study = self.study(orthanc_patient,
            accession_number=request.accession_number)
        Study.link_to_requests([study])
        self.assertEqual(study.request_link, 'patient_unknown')
        # Linked by the rule (not recorded), then the button
        with without_check_access():
            OrthancPatient.write([orthanc_patient], {
                    'patient': ana.id, 'link_state': 'linked'})
        imaging = create_user(
            'imaging', 'health_imaging.group_health_imaging')
        with as_user(imaging):
            Study.link_request([Study(study.id)])
            Study.link_request([Study(study.id)])
        linked, = entries(action='request_link')
        self.assertEqual((linked.user, linked.record, linked.patient),
            (imaging, study, ana))
        self.assertEqual(linked.description,
            'Imaging Request: (none) → %(request)s\n'
            'Request Link: Patient not linked → Linked\n'
            'Matching Request: %(request)s → (none)' % {
                'request': request.rec_name})
        self.assertEqual(
            [e.action for e in entries(action='result_attach_matching')],
            ['result_attach_matching'])

    @with_transaction(context=NO_COMMIT)
    def test_upload(self):
        """One entry per study received, with the uploader and the patient
        the sync files it under"""
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.orthanc.study')
        Upload = pool.get('gnuhealth.orthanc.upload', type='wizard')
        UploadFile = pool.get('gnuhealth.orthanc.upload.file')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA',
            dob=datetime.date(1980, 1, 15))
        upload_study(self.orthanc, 'OLD', 'OLD^Patient', seed=30)
        server = self.create_server()
        Server.sync_now([server])
        known, = Study.search([])
        imaging = create_user(
            'imaging', 'health_imaging.group_health_imaging')
        # PatientID a PUID, no birth date: filed under Ana automatically
        ana_files = make_study(n_series=2, n_instances=1, seed=31,
            patient_id='PUID-ANA', patient_name='BETZ^Ana', birth_date=None)
        nobody = make_study(n_series=1, n_instances=1, seed=32,
            patient_id='NOBODY', patient_name='DOE^Jane')
        # One of the study already known, sent again
        again = make_study(n_series=2, n_instances=1, seed=30,
            patient_id='OLD', patient_name='OLD^Patient',
            accession='ACC-OLD-30')
        files = ana_files + nobody + again[:1] + ana_files[:1]
        with counting_creates() as create, as_user(imaging):
            session_id, _, _ = Upload.create()
            wizard = Upload(session_id)
            wizard.start.server = server
            wizard.start.files = [UploadFile(file_name='%s.dcm' % i, data=d)
                for i, d in enumerate(files)]
            wizard.transition_upload()
        self.assertEqual(create.call_count, 1)
        to_ana, to_nobody, to_known = entries(action='upload')
        for entry in [to_ana, to_nobody, to_known]:
            self.assertEqual((entry.user, entry.server), (imaging, server))
        self.assertEqual((to_ana.patient, to_ana.record), (ana, None))
        self.assertIn('2 instance(s) stored, 1 already stored',
            to_ana.description)
        self.assertIn('Filed under: Betz, Ana (PUID-ANA).',
            to_ana.description)
        self.assertEqual(to_nobody.patient, None)
        self.assertIn('Filed under: no patient (No patient with this PUID '
            'or MRN).', to_nobody.description)
        self.assertEqual((to_known.record, to_known.orthanc_id),
            (known, known.orthanc_id))
        self.assertIn('0 instance(s) stored, 1 already stored',
            to_known.description)

        # The sync files the study where the entry said, and its Audit tab
        # shows the upload that came before it
        run_queue()
        study, = Study.search([('orthanc_id', '=', to_ana.orthanc_id)])
        self.assertEqual(study.patient, ana)
        self.assertEqual(list(study.audit), [to_ana])

    @with_transaction(context=NO_COMMIT)
    def test_upload_study_orthanc_does_not_describe(self):
        "A study gone from Orthanc before it was described is still recorded"
        pool = Pool()
        Upload = pool.get('gnuhealth.orthanc.upload', type='wizard')
        server = self.create_server()
        with server.get_client() as client:
            item, = Upload._received(client, server,
                {'gone': {'stored': 1, 'already_stored': 0}})
        self.assertEqual(item['name'], 'gone')
        entry, = pool.get(AUDIT).uploads(server, [item])
        self.assertEqual((entry.patient, entry.record, entry.orthanc_id),
            (None, None, 'gone'))
        self.assertIn('Filed under: not known', entry.description)

    @with_transaction(context=NO_COMMIT)
    def test_delete_from_orthanc(self):
        "Each study deleted and each refused, with the reason"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.orthanc.study')
        Result = pool.get('gnuhealth.imaging.test.result')
        Test = pool.get('gnuhealth.imaging.test')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        upload_study(self.orthanc, 'PUID-ANA', 'BETZ^Ana', seed=41)
        upload_study(self.orthanc, 'PUID-ANA', 'BETZ^Ana', seed=42)
        server = self.create_server()
        Server.sync_now([server])
        kept, gone = Study.search([('patient', '=', ana.id)])
        test, = Test.search([], limit=1)
        Result.create([{'patient': ana.id, 'requested_test': test.id,
                    'studies': [('add', [kept.id])]}])
        gone_name, gone_id = gone.rec_name, gone.orthanc_id
        admin = create_user('orthanc', 'health_orthanc.group_orthanc_admin')
        with counting_creates() as create, as_user(admin):
            Study.remove_from_orthanc(Study.browse([kept.id, gone.id]))
        self.assertEqual(create.call_count, 1)
        deleted, = entries(action='orthanc_delete')
        refused, = entries(action='orthanc_not_deleted')
        # The record is gone, its name and Orthanc ID stay
        self.assertEqual(
            (deleted.user, deleted.record, deleted.record_name,
                deleted.orthanc_id, deleted.patient, deleted.server),
            (admin, None, gone_name, gone_id, ana, server))
        self.assertIn('deleted from Orthanc server Main',
            deleted.description)
        self.assertEqual((refused.record, refused.patient), (kept, ana))
        self.assertIn('Remove it from the Studies', refused.description)

    @with_transaction()
    def test_server_changes(self):
        """Creation, each change of the connection (old and new address and
        user, never the password) and deletion of a server"""
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        admin = create_user('orthanc', 'health_orthanc.group_orthanc_admin')
        with as_user(admin):
            server, = Server.create([{
                        'label': 'PACS', 'domain': 'http://127.0.0.1:1',
                        'user': 'alice', 'password': 'First-Secret-1',
                        }])
            created, = entries(servers=True)
            self.assertEqual((created.action, created.user, created.record),
                ('server_create', admin, server))
            self.assertEqual(created.description,
                'Label: PACS\n'
                'Domain: http://127.0.0.1:1\n'
                'Username: alice\n'
                'Verify TLS Certificate: yes\n'
                'CA Bundle: (none)\n'
                'Public URL: (none)')

            # Not a connection field, or the same values: nothing
            Server.write([server], {
                    'domain': 'http://127.0.0.1:1/',
                    'publish_worklists': True})
            self.assertEqual(len(entries(servers=True)), 1)
            # A new label is recorded: the passwords of the configuration
            # are found by it
            Server.write([server], {'label': 'PACS 2'})

            Server.write([server], {
                    'domain': 'http://127.0.0.1:2',
                    'password': 'Second-Secret-2',
                    'verify_tls': False,
                    })
            Server.write([server], {'user': 'bob'})
        Server.delete([server])
        renamed, changed, user_changed, deleted = entries(servers=True)[1:]
        self.assertEqual(renamed.description,
            'Changed: Label\n'
            'Label: PACS → PACS 2\n'
            'Domain: http://127.0.0.1:1 → http://127.0.0.1:1\n'
            'Username: alice → alice')
        self.assertEqual(changed.description,
            'Changed: Domain, Password, Verify TLS Certificate\n'
            'Domain: http://127.0.0.1:1 → http://127.0.0.1:2\n'
            'Username: alice → alice\n'
            'Password changed\n'
            'Verify TLS Certificate: yes → no')
        self.assertEqual(user_changed.description,
            'Changed: Username\n'
            'Domain: http://127.0.0.1:2 → http://127.0.0.1:2\n'
            'Username: alice → bob')
        self.assertEqual((deleted.action, deleted.record_name,
                deleted.server), ('server_delete', 'PACS 2', None))
        self.assertIn('Domain: http://127.0.0.1:2', deleted.description)
        for entry in entries(servers=True):
            for text in ['Secret', 'password:']:
                self.assertNotIn(text, entry.description)

    @with_transaction()
    def test_audit_tabs(self):
        "Each record's Audit tab lists its entries, the newest first"
        pool = Pool()
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        Result = pool.get('gnuhealth.imaging.test.result')
        Test = pool.get('gnuhealth.imaging.test')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        server = self.offline_server()
        patient = self.orthanc_patient(server)
        study = self.study(patient)
        OrthancPatient.write([patient], {'patient': ana.id})
        test, = Test.search([], limit=1)
        result, = Result.create([{'patient': ana.id,
                    'requested_test': test.id,
                    'studies': [('add', [study.id])]}])
        link, = entries(action='patient_link')
        attach, = entries(action='result_attach')
        created, = entries(servers=True, action='server_create')
        self.assertEqual(list(OrthancPatient(patient.id).audit), [link])
        self.assertEqual(list(Result(result.id).audit), [attach])
        self.assertEqual(list(study.audit), [attach])
        self.assertEqual(list(server.audit), [created])

    @with_transaction()
    def test_entries_are_the_server_s(self):
        """Nobody creates, changes or deletes an entry; clinicians read
        the entries of images, not of servers; no nested where"""
        pool = Pool()
        Audit = pool.get(AUDIT)
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        server = self.offline_server()
        patient = self.orthanc_patient(server)
        OrthancPatient.write([patient], {'patient': ana.id})
        link, = entries(action='patient_link')
        users = {
            'doctor': create_user('doctor', 'health.group_health_doctor'),
            'orthanc': create_user(
                'orthanc', 'health_orthanc.group_orthanc_admin'),
            'healthadmin': create_user(
                'healthadmin', 'health.group_health_admin'),
            }
        nogroup = create_user('nogroup')
        ModelAccess = pool.get('ir.model.access')
        for login, user in users.items():
            with self.subTest(user=login), as_user(user):
                for i, call in enumerate([
                        lambda: Audit.create([{'action': 'upload'}]),
                        lambda: Audit.write([Audit(link.id)],
                            {'description': 'forged'}),
                        lambda: Audit.search([('server', 'where',
                                    [('password', '>=', '')])]),
                        ]):
                    with self.assertRaises(AccessError, msg=i):
                        call()
                # A refused delete marks the record deleted for the rest of
                # the transaction: the RPC test deletes, this one asks
                self.assertFalse(ModelAccess.check(
                        AUDIT, 'delete', raise_exception=False))
                visible = Audit.search([])
                self.assertIn(link.id, [e.id for e in visible])
                servers = Audit.search([('action', '=', 'server_create')])
                self.assertEqual(bool(servers), login == 'orthanc')
        with as_user(nogroup), self.assertRaises(AccessError):
            Audit.search([])
