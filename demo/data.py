# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Sample data of the demo: DICOM studies in Orthanc and GNU Health records.

Some Orthanc PatientIDs match GNU Health patients by PUID, one by medical
record number and one matches nobody, so every linking case shows.  The
CT and mammography studies come with the dose report of their scanner.
"""
import datetime

from trytond.modules.health_orthanc.tests import rdsr_samples
from trytond.modules.health_orthanc.tests.dicom_samples import (
    make_study, make_uid)

# (PatientID, DICOM name, birth date, sex, studies: (modalities, date,
# description, body part))
PEOPLE = [
    ('PUID-1001', 'BETZ^Ana', '19800115', 'F', [
            (('DX',), '20260302', 'Chest X-ray PA and lateral', 'CHEST'),
            (('CT',), '20260410', 'Head CT without contrast', 'HEAD'),
            (('MR',), '20260915', 'Brain MRI', 'BRAIN'),
            ]),
    ('PUID-1002', 'SMITH^John^A', '19671203', 'M', [
            (('US',), '20260520', 'Abdominal ultrasound', 'ABDOMEN'),
            (('CT', 'PT'), '20261011', 'Whole body PET-CT', 'WHOLEBODY'),
            ]),
    ('MRN-5501', 'CRUZ^Bob', '19910708', 'M', [
            (('CR',), '20261101', 'Hand X-ray', 'HAND'),
            ]),
    ('EXT-777', 'NOVAK^Eva', '19550321', 'F', [
            (('MG',), '20261020', 'Screening mammography', 'BREAST'),
            ]),
    ]

# The prior studies of the demo patients on the hospital PACS, a second
# Orthanc: found and retrieved with Query PACS
PRIORS = [
    ('PUID-1001', 'BETZ^Ana', '19800115', 'F', [
            (('CT',), '20240612', 'Chest CT prior', 'CHEST'),
            (('MR',), '20250203', 'Brain MRI prior', 'BRAIN'),
            (('US',), '20230918', 'Abdominal ultrasound prior', 'ABDOMEN'),
            ]),
    ('PUID-1002', 'SMITH^John^A', '19671203', 'M', [
            (('CT',), '20250730', 'Abdomen CT prior', 'ABDOMEN'),
            ]),
    ('MRN-5501', 'CRUZ^Bob', '19910708', 'M', [
            (('CR',), '20250411', 'Hand X-ray prior', 'HAND'),
            ]),
    ]
PACS_NODE = 'HOSPITAL-PACS'
PACS_AET = 'PACS'
# The Radiation Dose Structured Report of a study, by its description: a
# sample of health_orthanc's generator (Ana's head CT is above the local
# reference levels that populate() sets; her chest X-ray gives her dose
# history a second study)
DOSE_REPORTS = {
    'Chest X-ray PA and lateral': 'projection_radiography',
    'Head CT without contrast': 'ct_head_legacy',
    'Whole body PET-CT': 'ct_three_events',
    'Screening mammography': 'mammography_both',
    }
# The local diagnostic reference levels of the head CT
HEAD_CT_LEVELS = {'drl_ctdivol': 60, 'drl_dlp': 850}

# GNU Health patients: (name, lastname, gender, dob, PUID, MRN)
PATIENTS = [
    ('Ana', 'Betz', 'f', datetime.date(1980, 1, 15), 'PUID-1001', None),
    ('John', 'Smith', 'm', datetime.date(1967, 12, 3), 'PUID-1002', None),
    ('Bob', 'Cruz', 'm', datetime.date(1991, 7, 8), 'PUID-1003', 'MRN-5501'),
    ('Maria', 'Lopez', 'f', datetime.date(1975, 4, 2), 'PUID-1004', None),
    ]


def sample_instances(people=PEOPLE, first_seed=1, prefix='DEMO'):
    "Yield the DICOM files of the sample studies"
    seed = first_seed - 1
    for patient_id, name, birth_date, sex, studies in people:
        for modalities, date, description, body_part in studies:
            seed += 1
            accession = '%s%04d' % (prefix, seed)
            yield from make_study(
                n_series=len(modalities), n_instances=2,
                modalities=modalities, seed=seed, patient_id=patient_id,
                patient_name=name, birth_date=birth_date, sex=sex,
                study_date=date, study_time='093000',
                accession=accession, description=description,
                body_part=body_part,
                referring_physician='HOUSE^Gregory^^Dr.',
                institution='GNU Health Demo Hospital')
            if description in DOSE_REPORTS:
                report = rdsr_samples.SAMPLES[DOSE_REPORTS[description]]
                yield rdsr_samples.to_bytes(report(
                        patient_id=patient_id, patient_name=name,
                        study_date=date, seed=seed,
                        study_uid=make_uid('study', patient_id, accession,
                            seed=seed)))


def upload_samples(orthanc, instances=None):
    "Load the sample studies into an empty Orthanc; return the count"
    count = 0
    for instance in instances or sample_instances():
        orthanc.upload(instance)
        count += 1
    return count


def upload_priors(pacs):
    "Load the prior studies into the PACS; return the count"
    return upload_samples(pacs, sample_instances(PRIORS, 101, 'PACS'))


def pacs_node(port):
    """Declare the hospital PACS as a DICOM node of the demo's server, or
    point the node at the PACS's DICOM port (proteus already connected)"""
    from proteus import Model
    Node = Model.get('gnuhealth.orthanc.dicom_node')
    Server = Model.get('gnuhealth.orthanc.config')
    nodes = Node.find([('name', '=', PACS_NODE)])
    if nodes:
        node, = nodes
        if node.port == port:
            return node
    else:
        server, = Server.find([('research', '=', False)], limit=1)
        node = Node(name=PACS_NODE, server=server, aet=PACS_AET,
            host='127.0.0.1', answer_limit=500)
    node.port = port
    node.save()
    node.click('echo')
    return node


def update_server(domain, public_url, research=None,
        research_public_url=None):
    """Point the demo's Orthanc server records at the Orthancs' new URLs
    and check the connections again (proteus already connected)"""
    from proteus import Model
    Server = Model.get('gnuhealth.orthanc.config')
    for server in Server.find([]):
        if server.research:
            if not research:
                continue
            server.domain = research.url
            server.public_url = research_public_url
        else:
            server.domain = domain
            server.public_url = public_url
        server.save()
        server.click('check_servers')


def populate(orthanc, worklist_folder=None, station_aet=None,
        public_url=None, research=None, research_public_url=None,
        pacs_port=None):
    """Create the GNU Health side with proteus (already connected).

    Returns a summary of what was created.
    """
    from proteus import Model, Wizard
    from trytond.modules.company.tests.tools import create_company

    summary = {}
    # The demo is configured: skip the configuration wizard at first login
    ConfigItem = Model.get('ir.module.config_wizard.item')
    for item in ConfigItem.find([('state', '!=', 'done')]):
        item.state = 'done'
        item.save()

    Company = Model.get('company.company')
    if not Company.find([]):
        Party = Model.get('party.party')
        hospital = Party(name="GNU Health Demo Hospital")
        hospital.save()
        create_company(party=hospital)

    Country = Model.get('country.country')
    if not Country.find([('code', '=', 'XX')]):
        Country(name="Demoland", code='XX').save()

    # The admin user is a health professional, so orders default to them
    Party = Model.get('party.party')
    User = Model.get('res.user')
    HealthProf = Model.get('gnuhealth.healthprofessional')
    admin, = User.find([('login', '=', 'admin')])
    if not HealthProf.find([]):
        doctor = Party(name="Gregory", lastname="House", is_person=True,
            is_healthprof=True, gender='m', fed_country='XX',
            internal_user=admin)
        # A person party becomes a patient too unless told otherwise
        doctor.create_target = False
        doctor.is_patient = False
        doctor.save()
        HealthProf(party=doctor).save()

    Patient = Model.get('gnuhealth.patient')
    patients = {}
    for name, lastname, gender, dob, puid, mrn in PATIENTS:
        found = Patient.find([('party.ref', '=', puid)])
        if not found:
            party = Party(name=name, lastname=lastname, is_person=True,
                is_patient=True, gender=gender, dob=dob, ref=puid,
                fed_country='XX')
            if mrn:
                party.alternative_ids.new(
                    code=mrn, alternative_id_type='medical_record')
            party.save()
            found = Patient.find([('party', '=', party.id)])
            if not found:
                patient = Patient(party=party)
                patient.save()
                found = [patient]
        patients[puid] = found[0]
    summary['patients'] = len(patients)

    Server = Model.get('gnuhealth.orthanc.config')
    if not Server.find([]):
        add = Wizard('gnuhealth.orthanc.add_server')
        add.form.label = "Local Orthanc"
        add.form.domain = orthanc.url
        add.form.user = orthanc.user
        add.form.password = orthanc.password
        add.execute('connect')
        if add.form_state != 'succeeded':
            raise RuntimeError(add.form.message)
        summary['server'] = add.form.message
        add.execute('end')
        server, = Server.find([])
        # The viewer links for the browsers of other machines (--host)
        server.public_url = public_url
        if worklist_folder:
            # The requested tests become worklist entries for the scanner
            server.publish_worklists = True
            server.worklist_folder = worklist_folder
            server.worklist_station_aet = station_aet
        server.save()

    if research:
        summary['research'] = populate_research(research, research_public_url)
    if pacs_port:
        # The hospital PACS, where the patients' priors are
        summary['node'] = pacs_node(pacs_port).name

    Request = Model.get('gnuhealth.imaging.test.request')
    if not Request.find([]):
        ImagingTest = Model.get('gnuhealth.imaging.test')
        test = {t.code: t for t in ImagingTest.find([])}
        head_ct = test['IMG-CT-HEAD']
        for name, level in HEAD_CT_LEVELS.items():
            setattr(head_ct, name, level)
        head_ct.save()
        ana = patients['PUID-1001']

        def order(patient, codes, urgent=False, comment=None):
            wizard = Wizard('gnuhealth.patient.imaging.test.request')
            wizard.form.patient = patient
            wizard.form.urgent = urgent
            wizard.form.comment = comment
            for code in codes:
                wizard.form.tests.append(ImagingTest(test[code].id))
            wizard.execute('request')
            return Request.find(
                [('patient', '=', patient.id)], order=[('id', 'DESC')])

        done = order(ana, ['IMG-DX-CHEST'], comment="Persistent cough")[0]
        done.click('requested')
        Wizard('gnuhealth.imaging.test.request.generate_results', [done])
        Result = Model.get('gnuhealth.imaging.test.result')
        Study = Model.get('gnuhealth.orthanc.study')
        result, = Result.find([('request', '=', done.id)])
        result.comment = (
            "Lungs are clear. No pleural effusion. Heart size normal.")
        # By its description: its modalities are DX and SR (the dose report)
        result.studies.extend(Study.find([
                    ('patient', '=', ana.id),
                    ('description', '=', 'Chest X-ray PA and lateral')]))
        result.save()
        # Ana's head CT and its dose, on a draft result
        head = order(ana, ['IMG-CT-HEAD'], comment="Headache after a fall")[0]
        head.click('requested')
        Wizard('gnuhealth.imaging.test.request.generate_results', [head])
        result, = Result.find([('request', '=', head.id)])
        result.studies.extend(Study.find([
                    ('patient', '=', ana.id),
                    ('description', '=', 'Head CT without contrast')]))
        result.save()
        placed = order(patients['PUID-1002'], ['IMG-US-ABD'], urgent=True,
            comment="Right upper quadrant pain")[0]
        placed.click('requested')
        order(patients['PUID-1003'], ['IMG-CR-HAND', 'IMG-MR-KNEE'],
            comment="Sports injury")
        summary['requests'] = len(Request.find([]))
    return summary


def populate_research(research, public_url=None):
    """The research Orthanc and a project copying to it, with dates
    shifted; nobody enrolled yet"""
    from proteus import Model
    Server = Model.get('gnuhealth.orthanc.config')
    if not Server.find([('research', '=', True)]):
        Server(label="Research Orthanc", domain=research.url,
            user=research.user, password=research.password,
            public_url=public_url, research=True).save()
    server, = Server.find([('research', '=', True)])
    Project = Model.get('gnuhealth.imaging.research.project')
    if not Project.find([]):
        Profile = Model.get('gnuhealth.imaging.deid.profile')
        HealthProf = Model.get('gnuhealth.healthprofessional')
        profile, = Profile.find([('code', '=', 'basic_dates_shifted')])
        project = Project(code='LUNG', name="Lung nodules follow-up",
            research_server=server, profile=profile,
            date_shift_min=-400, date_shift_max=-100)
        project.principal_investigator, = HealthProf.find([], limit=1)
        project.save()
    return len(Project.find([]))
