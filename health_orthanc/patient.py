# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"Orthanc patients and their link to GNU Health patients."
from collections import defaultdict

from trytond import backend
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.model.exceptions import AccessError
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access

from trytond.modules.health_imaging.tools import search_in

from . import legacy, linking
from .audit import AuditMixin
from .resource import OrthancResourceMixin

LINK_STATES = [
    (linking.LINKED, "Linked by PUID or MRN"),
    ('manual', "Set by hand"),
    (linking.NO_MATCH, "No patient with this PUID or MRN"),
    (linking.AMBIGUOUS, "Several patients match"),
    (linking.BIRTH_DATE_MISMATCH, "Birth dates differ"),
    (linking.NO_PATIENT_ID, "No PatientID"),
    ('order', "Linked by an imaging order"),
    ]
#: Links that a sync never changes: chosen by hand, or given by the
#: imaging order whose study came back
KEPT_LINKS = {'manual', 'order'}
SEXES = [
    (None, ''),
    ('m', "Male"),
    ('f', "Female"),
    ('o', "Other"),
    ]


class OrthancPatient(AuditMixin, OrthancResourceMixin, ModelSQL, ModelView):
    "Orthanc Patient"
    __name__ = 'gnuhealth.orthanc.patient'
    _rec_name = 'name'

    patient = fields.Many2One(
        'gnuhealth.patient', "Patient", ondelete='SET NULL',
        help="The GNU Health patient of these images. Set automatically "
        "when exactly one patient has this PatientID as PUID or medical "
        "record number; a choice made here is never changed by a sync.")
    patient_id = fields.Char("PatientID", readonly=True)
    name = fields.Char("Name", readonly=True)
    birth_date = fields.Date("Birth Date", readonly=True)
    sex = fields.Selection(SEXES, "Sex", readonly=True)
    link_state = fields.Selection(
        LINK_STATES, "Link", readonly=True, required=True)
    studies = fields.One2Many(
        'gnuhealth.orthanc.study', 'orthanc_patient', "Studies",
        readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('name', 'ASC'), ('id', 'ASC')]
        t = cls.__table__()
        # Searched by the linking pass of each sync
        cls._sql_indexes.add(Index(t, (t.patient_id, Index.Equality())))
        cls._buttons.update({
                'relink': {
                    'invisible': Eval('link_state') != 'manual',
                    'depends': ['link_state'],
                    'icon': 'tryton-refresh',
                    },
                })

    @classmethod
    def __register__(cls, module_name):
        v4 = backend.TableHandler.table_exist(cls._table) and (
            legacy.rename_v4_columns(
                cls.__name__, cls.__table_handler__(module_name)))
        super().__register__(module_name)
        if v4:
            legacy.migrate_v4_links(cls.__table__())

    @staticmethod
    def default_link_state():
        return linking.NO_MATCH

    def get_rec_name(self, name):
        return '%s [%s]' % (self.name or '?', self.patient_id or '')

    @classmethod
    def search_rec_name(cls, name, clause):
        return search_in(clause, ['name', 'patient_id'])

    @classmethod
    def _orthanc_values(cls, server, record, context):
        return {
            'patient_id': record['patient_id'],
            'name': record['name'],
            'birth_date': record['birth_date'],
            'sex': record['sex'],
            'last_update': record['last_update'],
            }

    @classmethod
    def _orthanc_new_values(cls, vlist):
        "Link the new patients by the rule in their create"
        super()._orthanc_new_values(vlist)
        decisions = cls._decide_links(
            [(v['patient_id'], v['birth_date']) for v in vlist])
        for values, (local_id, state) in zip(vlist, decisions):
            values.update(patient=local_id, link_state=state)

    @classmethod
    def write(cls, *args):
        actions = iter(args)
        args, decided = [], []
        for patients, values in zip(actions, actions):
            if (Transaction().check_access
                    and set(values) - {'patient'}):
                # What Orthanc holds is changed in Orthanc, not here
                raise AccessError(gettext(
                        'health_orthanc.msg_orthanc_patient_readonly',
                        fields=', '.join(sorted(set(values) - {'patient'}))))
            if 'patient' in values and 'link_state' not in values:
                # A person decided: the sync must never override it
                values = dict(values, link_state='manual')
                decided.extend(patients)
            args.extend((patients, values))
        Audit = Pool().get('gnuhealth.orthanc.audit')
        before = Audit.links_of(decided)
        super().write(*args)
        if decided:
            Audit.patients_linked(decided, before)
            cls.check_request_studies(decided)

    @classmethod
    def check_request_studies(cls, patients):
        """Decide again the studies of the patients whose GNU Health
        patient changed: a study leaves a request of another patient, a
        study for review joins the request of its new patient (one search),
        and every study of theirs leaves the draft results of another
        patient, attached by hand or not (one search more)"""
        Study = Pool().get('gnuhealth.orthanc.study')
        studies = Study.request_studies_of(patients)
        if studies:
            Study.link_to_requests(studies)
        Study.detach_other_patients(Study.studies_of(patients))

    @classmethod
    @ModelView.button
    def relink(cls, patients):
        "Forget the choice made by hand and link by PUID or MRN again"
        Audit = Pool().get('gnuhealth.orthanc.audit')
        before = Audit.links_of(patients)
        with without_check_access():
            cls.write(patients, {
                    'patient': None,
                    'link_state': linking.NO_MATCH,
                    })
        cls.link(patients)
        Audit.patients_linked(patients, before, relink=True)
        cls.check_request_studies(patients)

    @classmethod
    def local_candidates(cls, patient_ids):
        """Return {PatientID: [(patient id, birth date)]} of local patients
        whose PUID or medical record number is one of patient_ids"""
        pool = Pool()
        Patient = pool.get('gnuhealth.patient')
        AlternativeID = pool.get('gnuhealth.person_alternative_identification')
        candidates = defaultdict(list)
        for sub_ids in grouped_slice(list(patient_ids)):
            sub_ids = list(sub_ids)
            for patient in Patient.search([('party.ref', 'in', sub_ids)]):
                candidates[patient.party.ref].append(
                    (patient.id, patient.party.dob))
            alternatives = AlternativeID.search([
                    ('code', 'in', sub_ids),
                    ('alternative_id_type', '=', 'medical_record'),
                    ])
            parties = {a.party.id: a.code for a in alternatives if a.party}
            if parties:
                for patient in Patient.search(
                        [('party', 'in', list(parties))]):
                    candidates[parties[patient.party.id]].append(
                        (patient.id, patient.party.dob))
        return candidates

    @classmethod
    def _decide_links(cls, patients):
        """Return the (local patient id, link state) by the rule of each
        (PatientID, birth date) of patients (one look-up)"""
        identifiers = [linking.normalize_identifier(i) for i, _ in patients]
        candidates = cls.local_candidates({i for i in identifiers if i})
        return [linking.choose_patient(
                candidates.get(identifier, []), birth_date, identifier)
            for identifier, (_, birth_date) in zip(identifiers, patients)]

    @classmethod
    def link(cls, patients):
        """Link the patients not set by hand, in one batch; return those
        whose link changed (their studies are not decided again here)"""
        patients = [p for p in patients if p.link_state not in KEPT_LINKS]
        decisions = cls._decide_links(
            [(p.patient_id, p.birth_date) for p in patients])
        changed = defaultdict(list)
        for patient, decision in zip(patients, decisions):
            current = patient.patient.id if patient.patient else None
            if (current, patient.link_state) != decision:
                changed[decision].append(patient)
        to_write = []
        for (local_id, state), records in changed.items():
            to_write.extend((records, {
                        'patient': local_id,
                        'link_state': state,
                        }))
        if to_write:
            with without_check_access():
                cls.write(*to_write)
        return [p for ps in changed.values() for p in ps]

    @classmethod
    def link_server_patients(cls, server, since=None):
        """Retry the link of the server's patients that have none.

        With since, only those that could link now are retried: changed
        in Orthanc since then, or whose PatientID became a PUID or MRN of
        a local patient since then.
        """
        domain = [
            ('server', '=', server.id),
            ('link_state', 'not in', list(KEPT_LINKS)),
            ]
        if since:
            changed = ['OR', [
                    ('patient', '=', None),
                    ['OR',
                        ('create_date', '>=', since),
                        ('write_date', '>=', since),
                        ],
                    ]]
            # Linked or not: a PUID or MRN given to another patient may
            # make a link wrong (ambiguous) or possible
            for sub_ids in grouped_slice(
                    list(cls.identifiers_changed_since(since))):
                changed.append(('patient_id', 'in', list(sub_ids)))
            domain.append(changed)
        else:
            domain.append(('patient', '=', None))
        for sub_patients in grouped_slice(cls.search(domain)):
            cls.check_request_studies(cls.link(list(sub_patients)))

    @classmethod
    def identifiers_changed_since(cls, since):
        "Return the PUIDs and MRNs created or changed since"
        pool = Pool()
        Party = pool.get('party.party')
        AlternativeID = pool.get('gnuhealth.person_alternative_identification')
        recent = ['OR',
            ('create_date', '>=', since),
            ('write_date', '>=', since),
            ]
        Patient = pool.get('gnuhealth.patient')
        identifiers = {p.ref for p in Party.search([
                    ('ref', '!=', None), ('is_patient', '=', True), recent])}
        # A patient record created for an existing party
        for patient in Patient.search([
                    ('create_date', '>=', since),
                    ('party.ref', '!=', None)]):
            identifiers.add(patient.party.ref)
            identifiers.update(
                a.code for a in patient.party.alternative_ids
                if a.alternative_id_type == 'medical_record')
        identifiers.update(a.code for a in AlternativeID.search([
                    ('alternative_id_type', '=', 'medical_record'),
                    recent]))
        return {linking.normalize_identifier(i) for i in identifiers} - {None}


class Patient(metaclass=PoolMeta):
    __name__ = 'gnuhealth.patient'

    orthanc_studies = fields.Function(
        fields.One2Many('gnuhealth.orthanc.study', None, "Orthanc Studies"),
        'get_orthanc_studies')

    @classmethod
    def get_orthanc_studies(cls, patients, name):
        Study = Pool().get('gnuhealth.orthanc.study')
        result = {p.id: [] for p in patients}
        for sub_ids in grouped_slice([p.id for p in patients]):
            for study in Study.search(
                    [('patient', 'in', list(sub_ids))],
                    order=[('study_datetime', 'DESC')]):
                result[study.patient.id].append(study.id)
        return result
