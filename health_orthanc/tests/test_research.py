# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Research copies end to end: a clinical Orthanc, two research Orthancs
on loopback, GNU Health in between.

The clinical study carries the patient's identifying values in many places
(``phi_samples``); each copy that reaches a research Orthanc is read back
there and every attribute of every instance is checked against the
original."""
import datetime
import shutil
import tempfile
import unittest

from trytond.exceptions import UserError
from trytond.model.exceptions import AccessError, ValidationError
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

from trytond.modules.health_imaging.tests.tools import create_patient
from trytond.modules.health_orthanc.deidentify import PROFILES, check_dates
from trytond.modules.health_orthanc.dicom_dates import birth_year_only
from trytond.modules.health_orthanc.phi_scan import Identity, PhiScanner
from trytond.modules.health_orthanc.research_copy import PEER_NAME

from .orthanc_case import run_queue
from .orthanc_server import OrthancServer
from .phi_samples import PATIENT, Patient, make_phi_study

NO_COMMIT = {'_orthanc_page_commit': False}
CLEAN = {'StudyDescription': 'CT thorax follow-up'}
IDENTITY = Identity(
    names=[PATIENT.name], identifiers=[PATIENT.puid, PATIENT.mrn,
        *PATIENT.other_ids], birth_date=PATIENT.birth_date,
    accession_numbers=['ACC552211', 'ACC552212'],
    institutions=[PATIENT.institution],
    physicians=[PATIENT.referring, PATIENT.performing])
#: UIDs that identify the original study, its series and instances
UID_TAGS = ('0020,000d', '0020,000e', '0008,0018', '0020,0052')
#: What every copy adds: the de-identification's own attributes
ADDED = {'0012,0062', '0012,0063', '0012,0064', '0028,0303'}
#: What a copy changes in every profile: the pseudonym, the UIDs (and the
#: references to them)
CHANGED = {'0010,0010', '0010,0020', '0020,000d', '0020,000e', '0008,0018',
    '0020,0052', '0008,1140'}
#: Emptied by PS3.15's Basic Profile (Orthanc keeps them, empty)
EMPTIED = {'0008,0020', '0008,0023', '0008,0030', '0008,0033', '0008,0050',
    '0008,0090', '0010,0030', '0010,0040', '0020,0010'}
#: Removed by the Basic Profile: identifiers, names, the institution,
#: descriptions, the patient's characteristics, private tags, the
#: request, the other dates and times
REMOVED = {'0008,0080', '0008,1050', '0010,1000', '0010,1002',
    '0010,1010', '0010,1030', '0008,1030', '0008,103e', '0040,0275',
    '0009,0010', '0009,1010', '0009,1011', '0008,0021', '0008,0022',
    '0008,002a', '0008,0012', '0008,0031', '0008,0032'}
#: Kept by the Basic Profile: the character set, the SOP class, the
#: modality, the series and instance numbers, the image
KEPT = {'0008,0005', '0008,0016', '0008,0060', '0020,0011', '0020,0013',
    '0028,0002', '0028,0004', '0028,0010', '0028,0011', '0028,0100',
    '0028,0101', '0028,0102', '0028,0103', '7fe0,0010'}
#: Shifted by the profile that shifts dates (the birth date to its year)
SHIFTED = {'0008,0012', '0008,0020', '0008,0021', '0008,0022', '0008,0023',
    '0008,002a', '0010,0030'}
#: Kept with the dates shifted: the times, and the descriptions
TIMES = {'0008,0030', '0008,0031', '0008,0032', '0008,0033'}
DESCRIPTIONS = {'0008,1030', '0008,103e'}


def positions(tags):
    "(SeriesNumber, InstanceNumber) -> tags: both survive a copy"
    return {(t['0020,0011'], t['0020,0013']): t for t in tags.values()}


def instance_tags(orthanc, study_id):
    return orthanc.request(
        'GET', '/studies/%s/instances-tags?short' % study_id).json()


class ResearchTestCase(unittest.TestCase):
    """Enrol, copy, check the copy in the research Orthanc, withdraw.

    ``research`` receives the copies of the projects, ``registry`` those
    of the research registry."""

    @classmethod
    def setUpClass(cls):
        activate_module('health_orthanc')
        cls.workdir = tempfile.mkdtemp(prefix='orthanc-research-test-')
        cls.clinical = OrthancServer(cls.workdir + '/clinical').start()
        cls.research = OrthancServer(cls.workdir + '/research').start()
        cls.registry = OrthancServer(cls.workdir + '/registry').start()

    @classmethod
    def tearDownClass(cls):
        for orthanc in [cls.clinical, cls.research, cls.registry]:
            orthanc.stop()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        for orthanc in [self.clinical, self.research, self.registry]:
            orthanc.clear()

    # -- helpers ------------------------------------------------------------
    def server(self, label, orthanc, **values):
        Server = Pool().get('gnuhealth.orthanc.config')
        server, = Server.create([dict({
                        'label': label, 'domain': orthanc.url,
                        'user': orthanc.user, 'password': orthanc.password,
                        'validated': True,
                        }, **values)])
        return server

    def setup_site(self):
        "The servers, the patient of the sample studies, their profiles"
        pool = Pool()
        ModelData = pool.get('ir.model.data')
        Profile = pool.get('gnuhealth.imaging.deid.profile')
        self.clinical_server = self.server('Clinical', self.clinical)
        self.research_server = self.server(
            'Research', self.research, research=True)
        self.registry_server = self.server(
            'Registry', self.registry, research=True)
        self.patient = create_patient('Jörg', 'Müller', puid=PATIENT.puid,
            mrn=PATIENT.mrn, dob=datetime.date(1975, 3, 21))
        self.profiles = {code: Profile(ModelData.get_id(
                    'health_orthanc', 'deid_profile_%s' % code))
            for code in PROFILES}

    def upload(self, patient=PATIENT, accession='ACC552211',
            study_date='20230315', n_series=2, n_instances=2, extra=CLEAN):
        "Upload a study to the clinical Orthanc and sync; return its record"
        Study = Pool().get('gnuhealth.orthanc.study')
        answers = self.clinical.upload_many(make_phi_study(
                patient, accession=accession, study_date=study_date,
                n_series=n_series, n_instances=n_instances, extra=extra))
        self.sync()
        study, = Study.search(
            [('orthanc_id', '=', answers[0]['ParentStudy'])])
        return study

    def sync(self):
        Server = Pool().get('gnuhealth.orthanc.config')
        Server.sync_now([self.clinical_server])

    def project(self, code, profile='basic', server=None, **values):
        Project = Pool().get('gnuhealth.imaging.research.project')
        project, = Project.create([dict({
                        'code': code, 'name': 'Project %s' % code,
                        'pseudonym_prefix': code,
                        'research_server': (
                            server or self.research_server).id,
                        'profile': self.profiles[profile].id,
                        }, **values)])
        return project

    def enrol(self, project, patient=None, **values):
        Subject = Pool().get('gnuhealth.imaging.research.subject')
        subject, = Subject.create([dict({
                        'project': project.id,
                        'patient': (patient or self.patient).id,
                        'consent_date': datetime.date.today(),
                        'consent_reference': 'CONSENT-%s' % project.code,
                        }, **values)])
        return subject

    def copy(self, project, studies):
        "Request the copies, run the queue; return the copies, refusals"
        Copy = Pool().get('gnuhealth.imaging.research.copy')
        copies, refusals = Copy.request_copies(project, studies)
        run_queue()
        return Copy.browse([c.id for c in copies]), refusals

    def check_copy(self, copy, study, orthanc=None, profile=None,
            days=None, birth_date=None):
        """Check every attribute of every instance of the copy, read in
        the research Orthanc, against the original; return the attributes
        kept, changed and removed"""
        orthanc = orthanc or self.research
        profile = profile or PROFILES[copy.project.profile.code]
        subject = copy.subject
        days = subject.date_shift if days is None else days
        self.assertEqual(copy.state, 'done', copy.reason)
        originals = positions(instance_tags(self.clinical, study.orthanc_id))
        copies = positions(instance_tags(orthanc, copy.copy_orthanc_id))
        self.assertEqual(copies.keys(), originals.keys())
        self.assertEqual(copy.instances, len(copies))

        # nothing identifying anywhere, private and nested included
        self.assertEqual(PhiScanner(IDENTITY).scan_many(copies.items()), [])
        for position, tags in copies.items():
            original = originals[position]
            self.assertEqual(tags['0010,0020'], subject.pseudonym)
            self.assertEqual(tags['0010,0010'], subject.pseudonym)
            self.assertEqual(tags['0012,0062'], 'YES')
            # every date shifted by exactly the subject's offset, or none
            if birth_date:
                self.assertEqual(tags['0010,0030'], birth_date)
                original = {k: v for k, v in original.items()
                    if k != '0010,0030'}
                tags = {k: v for k, v in tags.items() if k != '0010,0030'}
            self.assertEqual(check_dates(original, tags,
                    days if profile.dates == 'shift' else None,
                    profile.birth_date), [])
        self.check_uids(originals, copies)

        kept, changed, removed = set(), set(), set()
        for position, tags in copies.items():
            original = originals[position]
            self.assertEqual(set(tags) - set(original), ADDED)
            for key, value in original.items():
                if key not in tags:
                    removed.add(key)
                elif tags[key] != value:
                    changed.add(key)
                else:
                    kept.add(key)
        return kept, changed, removed

    def check_uids(self, originals, copies):
        "New UIDs everywhere, one study, one per series, references kept"
        old = {t[k] for t in originals.values() for k in UID_TAGS}
        new = {t[k] for t in copies.values() for k in UID_TAGS}
        self.assertFalse(old & new)
        self.assertEqual(len({t['0020,000d'] for t in copies.values()}), 1)
        self.assertEqual(len({t['0020,0052'] for t in copies.values()}), 1)
        series = {}
        for (number, _), tags in copies.items():
            series.setdefault(number, set()).add(tags['0020,000e'])
        self.assertTrue(all(len(uids) == 1 for uids in series.values()))
        self.assertEqual(len(set.union(*series.values())), len(series))
        sop = {p: t['0008,0018'] for p, t in copies.items()}
        for (number, index), tags in copies.items():
            if index != '1':
                ref, = tags['0008,1140']
                self.assertEqual(ref['0008,1155'], sop[(number, '1')])

    def entries(self, action):
        Audit = Pool().get('gnuhealth.orthanc.audit')
        return Audit.search([('action', '=', action)], order=[('id', 'ASC')])

    # -- the shipped profiles -----------------------------------------------
    @with_transaction()
    def test_shipped_profiles_are_those_of_deidentify(self):
        "The XML records of the profiles are deidentify.PROFILES"
        Profile = Pool().get('gnuhealth.imaging.deid.profile')
        records = Profile.search([])
        self.assertEqual({p.code: p.to_profile() for p in records}, PROFILES)

    @with_transaction()
    def test_profile_rules_are_checked(self):
        Profile = Pool().get('gnuhealth.imaging.deid.profile')
        for rule in [{'action': 'keep', 'tag': 'NoSuchAttribute'},
                {'action': 'keep', 'tag': 'PatientID'}]:
            with self.subTest(rule=rule), self.assertRaises(ValidationError):
                Profile.create([{'code': 'bad', 'name': 'Bad',
                            'rules': [('create', [rule])]}])

    # -- copies -------------------------------------------------------------
    @with_transaction(context=NO_COMMIT)
    def test_copy_with_each_shipped_profile(self):
        """Each shipped profile: every attribute of every instance of the
        copy in the research Orthanc checked against the original"""
        self.setup_site()
        study = self.upload(n_series=2, n_instances=3)
        expected = {
            'basic': (KEPT, CHANGED | EMPTIED, REMOVED),
            'basic_dates_shifted': (
                KEPT | TIMES | DESCRIPTIONS,
                CHANGED | (EMPTIED - TIMES) | SHIFTED,
                REMOVED - DESCRIPTIONS - SHIFTED - TIMES),
            }
        for code in PROFILES:
            with self.subTest(profile=code):
                project = self.project(
                    'P%d' % len(code), profile=code)
                self.enrol(project)
                (copy,), refusals = self.copy(project, [study])
                self.assertEqual(refusals, {})
                # every attribute of the original is kept, changed or
                # removed as expected; nothing identifying is left
                self.assertEqual(
                    self.check_copy(copy, study), expected[code])
                # the research Orthanc holds the copy only; the clinical
                # the original only
                self.assertEqual(self.research.request(
                        'GET', '/studies').json(), [copy.copy_orthanc_id])
                self.assertEqual(self.clinical.request(
                        'GET', '/studies').json(), [study.orthanc_id])
                self.research.clear()

    @with_transaction(context=NO_COMMIT)
    def test_intervals_stay_true(self):
        "Two studies of one subject: the interval between them is kept"
        self.setup_site()
        first = self.upload(accession='ACC552211', study_date='20230315')
        second = self.upload(accession='ACC552212', study_date='20230415')
        project = self.project('TRIAL', profile='basic_dates_shifted')
        subject = self.enrol(project)
        copies, _ = self.copy(project, [first, second])
        dates = []
        for copy, study in zip(copies, [first, second]):
            self.check_copy(copy, study)
            tags = positions(instance_tags(
                    self.research, copy.copy_orthanc_id))[('1', '1')]
            dates.append(datetime.datetime.strptime(
                    tags['0008,0020'], '%Y%m%d').date())
        self.assertEqual(dates[1] - dates[0], datetime.timedelta(days=31))
        self.assertEqual(dates[0], datetime.date(2023, 3, 15)
            + datetime.timedelta(days=subject.date_shift))

    @with_transaction(context=NO_COMMIT)
    def test_copy_twice_does_not_duplicate(self):
        self.setup_site()
        study = self.upload()
        project = self.project('TRIAL')
        self.enrol(project)
        (copy,), _ = self.copy(project, [study])
        self.assertEqual(copy.state, 'done')
        copies, refusals = self.copy(project, [study])
        self.assertEqual(copies, [])
        self.assertIn('not copied again', refusals[study])
        self.assertEqual(len(self.research.request(
                    'GET', '/studies').json()), 1)
        # Deleted from the research Orthanc behind GNU Health's back: the
        # record says done, so it is still refused (no second copy)
        self.assertEqual(len(Pool().get(
                    'gnuhealth.imaging.research.copy').search([])), 1)

    @with_transaction(context=NO_COMMIT)
    def test_registry_then_project(self):
        """Two stages: clinical -> registry copy -> project copy, made
        from the registry's copy in the registry's Orthanc"""
        self.setup_site()
        study = self.upload(n_series=2, n_instances=2)
        registry = self.project('REG', profile='basic_dates_shifted',
            server=self.registry_server, registry=True)
        project = self.project('LUNG', profile='basic_dates_shifted',
            source='registry')
        registry_subject = self.enrol(registry)
        subject = self.enrol(project)

        # not in the registry yet: refused
        copies, refusals = self.copy(project, [study])
        self.assertEqual(copies, [])
        self.assertIn('Copy it to the registry first', refusals[study])

        (registry_copy,), _ = self.copy(registry, [study])
        self.check_copy(registry_copy, study, orthanc=self.registry)
        (copy,), _ = self.copy(project, [study])
        self.assertEqual(copy.source_copy, registry_copy)
        # checked against the clinical original: the project's own
        # pseudonym and offset, never the registry's; the year of birth
        # comes from the registry's (its day and month are gone)
        registry_birth, = {t['0010,0030'] for t in instance_tags(
                self.registry, registry_copy.copy_orthanc_id).values()}
        self.check_copy(copy, study, birth_date=birth_year_only(
                registry_birth,
                subject.date_shift - registry_subject.date_shift))
        tags = instance_tags(self.research, copy.copy_orthanc_id)
        self.assertFalse(PhiScanner(Identity(
                    identifiers=[registry_subject.pseudonym])).scan_many(
                tags.items()))
        self.assertNotEqual(subject.pseudonym, registry_subject.pseudonym)
        # the registry keeps its copy only, the intermediate is gone
        self.assertEqual(self.registry.request('GET', '/studies').json(),
            [registry_copy.copy_orthanc_id])
        self.assertEqual(self.research.request('GET', '/studies').json(),
            [copy.copy_orthanc_id])

    @with_transaction(context=NO_COMMIT)
    def test_refused_patients(self):
        """A patient not enrolled, not linked, or withdrawn is refused with
        a clear message; nothing is copied"""
        Subject = Pool().get('gnuhealth.imaging.research.subject')
        self.setup_site()
        study = self.upload()
        other = self.upload(Patient(puid='PUID-0000-ZZ', name='ROE^Jane'),
            accession='ACC777777')
        project = self.project('TRIAL')
        copies, refusals = self.copy(project, [study, other])
        self.assertEqual(copies, [])
        self.assertEqual(refusals[study], 'Study %s not copied: its patient '
            'is not an enrolled subject of the project [TRIAL] Project TRIAL.'
            ' Enrol the patient with their consent first.' % study.rec_name)
        self.assertIn('not linked to a GNU Health patient', refusals[other])

        subject = self.enrol(project)
        Subject.withdraw_consent([subject], datetime.date.today())
        copies, refusals = self.copy(project, [study])
        self.assertEqual(copies, [])
        self.assertIn('withdrew their consent', refusals[study])
        self.assertEqual(self.research.request('GET', '/studies').json(), [])

    @with_transaction(context=NO_COMMIT)
    def test_withdrawn_while_queued(self):
        "A copy queued before the withdrawal fails when its task runs"
        pool = Pool()
        Copy = pool.get('gnuhealth.imaging.research.copy')
        Subject = pool.get('gnuhealth.imaging.research.subject')
        self.setup_site()
        study = self.upload()
        project = self.project('TRIAL')
        subject = self.enrol(project)
        (copy,), _ = Copy.request_copies(project, [study])
        Subject.withdraw_consent([subject], datetime.date.today())
        run_queue()
        self.assertEqual(copy.state, 'failed')
        self.assertIn('withdrew their consent', copy.reason)
        self.assertEqual(self.research.request('GET', '/studies').json(), [])
        # The researchers read the reason: the study's name has its date
        # and PatientID, the audit (the managers) has it
        self.assertIn(subject.pseudonym, copy.reason)
        for secret in [study.rec_name, study.patient_id,
                study.study_date.isoformat()]:
            self.assertNotIn(secret, copy.reason)
        failed, = self.entries('research_copy_failed')
        self.assertIn('Study %s not copied' % study.rec_name,
            failed.description)

    @with_transaction(context=NO_COMMIT)
    def test_failure_reason_names_no_study(self):
        """The study gone from the clinical Orthanc while its copy was
        queued: Orthanc's error names the study's Orthanc ID, which the
        reason read by researchers does not; the audit does"""
        Copy = Pool().get('gnuhealth.imaging.research.copy')
        self.setup_site()
        study = self.upload()
        project = self.project('TRIAL')
        self.enrol(project)
        (copy,), _ = Copy.request_copies(project, [study])
        self.clinical.request('DELETE', '/studies/%s' % study.orthanc_id)
        run_queue()
        self.assertEqual(copy.state, 'failed')
        self.assertIn('audit', copy.reason)
        self.assertIn(study.server.rec_name, copy.reason)
        for secret in [study.orthanc_id, study.rec_name, study.patient_id,
                study.study_instance_uid, self.clinical.url]:
            self.assertNotIn(secret, copy.reason)
        failed, = self.entries('research_copy_failed')
        self.assertIn(self.clinical.url, failed.description)

    @with_transaction(context=NO_COMMIT)
    def test_withdrawal_deletes_the_copies(self):
        Subject = Pool().get('gnuhealth.imaging.research.subject')
        self.setup_site()
        studies = [self.upload(accession='ACC55221%s' % n,
                study_date='2023031%s' % n) for n in (1, 2)]
        project = self.project('TRIAL')
        subject = self.enrol(project)
        copies, _ = self.copy(project, studies)
        self.assertEqual(len(self.research.request(
                    'GET', '/studies').json()), 2)
        deleting = Subject.withdraw_consent(
            [subject], datetime.date.today(), delete_copies=True)
        self.assertEqual(set(deleting), set(copies))
        run_queue()
        self.assertEqual(self.research.request('GET', '/studies').json(), [])
        self.assertEqual({c.state for c in copies}, {'deleted'})
        self.assertTrue(all(c.deleted_date for c in copies))
        self.assertEqual(subject.state, 'withdrawn')
        deleted = self.entries('research_copy_delete')
        self.assertEqual(len(deleted), 2)
        self.assertEqual({e.patient for e in deleted}, {self.patient})
        withdraw, = self.entries('research_withdraw')
        self.assertIn('2 copies to delete', withdraw.description)
        self.assertEqual(withdraw.user.id, Transaction().user)
        with self.assertRaises(UserError):
            Subject.withdraw_consent([subject], datetime.date.today())

    @with_transaction(context=NO_COMMIT)
    def test_injected_leak_never_leaves(self):
        """A profile keeping InstitutionName while the data puts the
        patient's name there: caught, deleted, nothing sent"""
        Profile = Pool().get('gnuhealth.imaging.deid.profile')
        self.setup_site()
        study = self.upload(extra={
                'InstitutionName': 'Clinic of Dr MÜLLER Jörg', **CLEAN})
        leaky, = Profile.create([{
                    'code': 'leaky', 'name': 'Leaky',
                    'rules': [('create', [{
                                    'action': 'keep',
                                    'tag': 'InstitutionName'}])],
                    }])
        self.profiles['leaky'] = leaky
        project = self.project('TRIAL', profile='leaky')
        self.enrol(project)
        (copy,), _ = self.copy(project, [study])
        self.assertEqual(copy.state, 'failed')
        self.assertIn('0008,0080 InstitutionName (patient name, 4)',
            copy.reason)
        self.assertNotIn('MÜLLER', copy.reason)
        self.assertIsNone(copy.copy_orthanc_id)
        self.assertEqual(self.research.request('GET', '/studies').json(), [])
        self.assertEqual(self.clinical.request('GET', '/studies').json(),
            [study.orthanc_id])
        failed, = self.entries('research_copy_failed')
        self.assertIn('InstitutionName', failed.description)

        # the profile corrected, the failed copy is made again
        Profile.write([leaky], {'rules': [('delete', [
                            r.id for r in leaky.rules])]})
        (again,), _ = self.copy(project, [study])
        self.assertEqual(again, copy)
        self.check_copy(again, study, profile=PROFILES['basic'])

    # -- the research Orthanc and the clinical sync -------------------------
    @with_transaction(context=NO_COMMIT)
    def test_research_patients_never_clinical(self):
        """Neither the research Orthanc's patients nor the intermediate
        copies become Orthanc patients of GNU Health"""
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        OrthancPatient = pool.get('gnuhealth.orthanc.patient')
        self.setup_site()
        study = self.upload()
        project = self.project('TRIAL')
        subject = self.enrol(project)
        self.copy(project, [study])

        # an intermediate copy left in the clinical Orthanc: skipped
        leftover = self.clinical.request(
            'POST', '/studies/%s/anonymize' % study.orthanc_id,
            json={'Replace': {'PatientID': subject.pseudonym},
                'Force': True}).json()
        self.sync()
        Server.sync([self.research_server, self.clinical_server])
        run_queue()
        self.assertEqual(
            Server.sync_now([self.research_server]),
            {self.research_server.id: None})
        Server.reconcile_now([self.research_server])
        self.assertEqual(OrthancPatient.search(
                [('server', '=', self.research_server.id)]), [])
        patients = OrthancPatient.search([])
        self.assertEqual([p.patient_id for p in patients], [PATIENT.puid])
        self.assertNotIn(leftover['ID'], [
                s.orthanc_id for s in patients[0].studies])
        self.assertIsNone(self.research_server.sync_time)

    @with_transaction(context=NO_COMMIT)
    def test_peer_declared_again(self):
        "The research Orthanc is declared again as a peer at each run"
        self.setup_site()
        first = self.upload(accession='ACC552211', study_date='20230311')
        second = self.upload(accession='ACC552212', study_date='20230312')
        project = self.project('TRIAL')
        self.enrol(project)
        (copy,), _ = self.copy(project, [first])
        peer = PEER_NAME % self.research_server.id
        peers = self.clinical.request('GET', '/peers?expand').json()
        self.assertIsNone(peers[peer]['Password'])
        # forgotten (a restart of Orthanc forgets the peers set over REST)
        self.clinical.request('DELETE', '/peers/%s' % peer)
        (copy,), _ = self.copy(project, [second])
        self.assertEqual(copy.state, 'done', copy.reason)

    @with_transaction(context=NO_COMMIT)
    def test_research_server_rules(self):
        Server = Pool().get('gnuhealth.orthanc.config')
        self.setup_site()
        with self.assertRaises(ValidationError):
            Server.write([self.research_server], {'publish_worklists': True})
        self.upload()
        with self.assertRaises(ValidationError):
            Server.write([self.clinical_server], {'research': True})
        self.project('TRIAL')
        with self.assertRaises(ValidationError):
            Server.write([self.research_server], {'research': False})

    # -- the register -------------------------------------------------------
    @with_transaction()
    def test_enrolment(self):
        """A pseudonym and a date shift drawn once; who enrolled recorded;
        the patient and project of a subject never change"""
        pool = Pool()
        Subject = pool.get('gnuhealth.imaging.research.subject')
        self.setup_site()
        project = self.project('TRIAL', date_shift_min=-30,
            date_shift_max=30)
        subject = self.enrol(project)
        self.assertRegex(subject.pseudonym, r'^TRIAL-[0-9A-Z]{8}-[0-9A-Z]$')
        self.assertNotIn(PATIENT.puid[5:9], subject.pseudonym)
        self.assertTrue(-30 <= subject.date_shift <= 30)
        self.assertNotEqual(subject.date_shift, 0)
        drawn = subject.pseudonym, subject.date_shift
        Subject.write([subject], {'consent_reference': 'NEW-REF'})
        subject = Subject(subject.id)
        self.assertEqual((subject.pseudonym, subject.date_shift), drawn)
        enrol, = self.entries('research_enrol')
        self.assertEqual(enrol.patient, self.patient)
        self.assertEqual(enrol.project, project)
        self.assertIn(subject.pseudonym, enrol.description)
        other = create_patient('Ana', 'Betz', puid='PUID-ANA')
        with self.assertRaises(AccessError):
            Subject.write([subject], {'patient': other.id})
        with self.assertRaises(Exception):
            self.enrol(project)     # the same patient twice

    @with_transaction()
    def test_one_registry(self):
        self.setup_site()
        self.project('REG', registry=True)
        with self.assertRaises(ValidationError):
            self.project('REG2', registry=True)
        with self.assertRaises(ValidationError):
            self.project('BAD', date_shift_min=0, date_shift_max=0)
        with self.assertRaises(ValidationError):
            self.project('BAD', pseudonym_prefix='A-B')
