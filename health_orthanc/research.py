# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Research projects, the registry, their subjects (the pseudonym register,
read by the Imaging Research Managers only), the researchers' view of the
pseudonyms, and the Withdraw Consent wizard."""
import datetime

from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, Unique, fields
from trytond.model.exceptions import AccessError
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.wizard import Button, StateTransition, StateView, Wizard

from trytond.modules.health_imaging.access import (
    DomainAccessMixin, ReadonlyFieldsMixin, server_queue)

from .audit import AuditMixin
from .exceptions import ResearchError, ResearchValidationError
from .pseudonym import (
    PseudonymError, new_date_shift, new_pseudonym, normalize_prefix)
from .research_rules import Enrolment

SOURCES = [
    ('clinical', "Clinical Orthanc"),
    ('registry', "Research Registry"),
    ]
SUBJECT_STATES = [
    ('enrolled', "Enrolled"),
    ('withdrawn', "Withdrawn"),
    ]


class ResearchProject(AuditMixin, DomainAccessMixin, ModelSQL, ModelView):
    "Research Project"
    __name__ = 'gnuhealth.imaging.research.project'

    code = fields.Char("Code", required=True)
    name = fields.Char("Name", required=True)
    principal_investigator = fields.Many2One(
        'gnuhealth.healthprofessional', "Principal Investigator",
        ondelete='RESTRICT')
    research_server = fields.Many2One(
        'gnuhealth.orthanc.config', "Research Orthanc", required=True,
        ondelete='RESTRICT', domain=[('research', '=', True)],
        help="The Orthanc server that receives the de-identified copies.")
    profile = fields.Many2One(
        'gnuhealth.imaging.deid.profile', "De-identification Profile",
        required=True, ondelete='RESTRICT')
    start_date = fields.Date("Start Date")
    end_date = fields.Date(
        "End Date",
        domain=['OR', ('end_date', '=', None),
            ('end_date', '>=', Eval('start_date', None))],
        help="No copy is made before the start or after the end.")
    pseudonym_prefix = fields.Char(
        "Pseudonym Prefix", required=True, size=12,
        help="The start of the pseudonyms of the subjects: 1 to 12 letters "
        "or digits.")
    date_shift_min = fields.Integer(
        "Date Shift From", required=True,
        help="The shift of each subject's dates is drawn at random, once, "
        "in days between these bounds (never 0).")
    date_shift_max = fields.Integer("Date Shift To", required=True)
    registry = fields.Boolean(
        "Research Registry",
        help="The registry of the site: the first, project-agnostic copy "
        "that other projects may copy from. One project at most.")
    source = fields.Selection(
        SOURCES, "Copy From", required=True,
        help="Where the copies of this project come from: the clinical "
        "Orthanc, or the registry's copies (the study must be copied to "
        "the registry first).")
    subjects = fields.One2Many(
        'gnuhealth.imaging.research.subject', 'project', "Subjects",
        readonly=True)
    pseudonyms = fields.One2Many(
        'gnuhealth.imaging.research.pseudonym', 'project', "Pseudonyms",
        readonly=True)
    copies = fields.One2Many(
        'gnuhealth.imaging.research.copy', 'project', "Copy Log",
        readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('code_uniq', Unique(t, t.code),
                'health_orthanc.msg_research_project_code_unique'),
            ]
        cls._order = [('code', 'ASC'), ('id', 'ASC')]

    @staticmethod
    def default_source():
        return 'clinical'

    @staticmethod
    def default_date_shift_min():
        return -365

    @staticmethod
    def default_date_shift_max():
        return -1

    @staticmethod
    def default_registry():
        return False

    @fields.depends('code', 'pseudonym_prefix')
    def on_change_code(self):
        if self.code and not self.pseudonym_prefix:
            self.pseudonym_prefix = ''.join(
                c for c in self.code.upper() if c.isalnum())[:12] or None

    def get_rec_name(self, name):
        return '[%s] %s' % (self.code, self.name)

    @classmethod
    def search_rec_name(cls, name, clause):
        _, operator, value = clause[:3]
        bool_op = 'AND' if operator.startswith('!') or operator.startswith(
            'not ') else 'OR'
        return [bool_op, ('code', operator, value), ('name', operator, value)]

    @classmethod
    def validate(cls, projects):
        super().validate(projects)
        for project in projects:
            project._check_settings()
        registries = cls.search([('registry', '=', True)], limit=2)
        if len(registries) > 1:
            raise ResearchValidationError(gettext(
                    'health_orthanc.msg_research_registry_unique',
                    projects=', '.join(p.rec_name for p in registries)))

    def _check_settings(self):
        try:
            normalize_prefix(self.pseudonym_prefix)
            new_date_shift(self.date_shift_min, self.date_shift_max)
        except PseudonymError as exception:
            raise ResearchValidationError(gettext(
                    'health_orthanc.msg_research_project_invalid',
                    project=self.rec_name, problem=str(exception))
                ) from exception
        if self.registry and self.source != 'clinical':
            raise ResearchValidationError(gettext(
                    'health_orthanc.msg_research_registry_source',
                    project=self.rec_name))
        if self.source == 'registry' and not self.search(
                [('registry', '=', True)], limit=1):
            raise ResearchValidationError(gettext(
                    'health_orthanc.msg_research_no_registry',
                    project=self.rec_name))

    @classmethod
    def registry_project(cls):
        "Return the registry project of the site, or None"
        projects = cls.search([('registry', '=', True)], limit=1)
        return projects[0] if projects else None

    def is_active(self, date):
        return ((not self.start_date or self.start_date <= date)
            and (not self.end_date or date <= self.end_date))


class ResearchSubject(AuditMixin, DomainAccessMixin, ReadonlyFieldsMixin,
        ModelSQL, ModelView):
    """Research Subject

    The register: who is who.  Read by the Imaging Research Managers
    only; researchers read the pseudonyms (ResearchPseudonym)."""
    __name__ = 'gnuhealth.imaging.research.subject'
    _rec_name = 'pseudonym'

    project = fields.Many2One(
        'gnuhealth.imaging.research.project', "Project", required=True,
        ondelete='RESTRICT',
        states={'readonly': Eval('id', -1) >= 0})
    patient = fields.Many2One(
        'gnuhealth.patient', "Patient", required=True, ondelete='RESTRICT',
        states={'readonly': Eval('id', -1) >= 0})
    pseudonym = fields.Char(
        "Pseudonym", readonly=True,
        help="Generated at the enrolment, at random: only this register "
        "links it to the patient.")
    date_shift = fields.Integer(
        "Date Shift (days)", readonly=True,
        help="Drawn at the enrolment within the project's range: every "
        "date of every copy of the subject moves by it.")
    consent_date = fields.Date("Consent Date", required=True)
    consent_reference = fields.Char(
        "Consent Reference",
        help="The reference of the signed consent; attach the document "
        "to the subject.")
    state = fields.Selection(SUBJECT_STATES, "State", readonly=True)
    withdrawal_date = fields.Date(
        "Withdrawal Date", readonly=True,
        help="Set by Withdraw Consent: no copy is made after it.")
    copies = fields.One2Many(
        'gnuhealth.imaging.research.copy', 'subject', "Copies",
        readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('project_patient_uniq', Unique(t, t.project, t.patient),
                'health_orthanc.msg_research_subject_unique'),
            ('pseudonym_uniq', Unique(t, t.pseudonym),
                'health_orthanc.msg_research_pseudonym_unique'),
            ]
        cls._order = [('pseudonym', 'ASC'), ('id', 'ASC')]
        cls._buttons.update({
                'copy_studies': {
                    'invisible': Eval('state') != 'enrolled',
                    'icon': 'tryton-forward',
                    'depends': ['state'],
                    },
                'withdraw': {
                    'invisible': Eval('state') != 'enrolled',
                    'icon': 'tryton-cancel',
                    'depends': ['state'],
                    },
                })

    @staticmethod
    def default_state():
        return 'enrolled'

    @staticmethod
    def default_consent_date():
        return datetime.date.today()

    @classmethod
    def create(cls, vlist):
        vlist = cls._enrol_values([v.copy() for v in vlist])
        subjects = super().create(vlist)
        cls._audit(subjects, 'research_enrol', 'msg_audit_research_enrol')
        return subjects

    @classmethod
    def _enrol_values(cls, vlist):
        "Draw each new subject's pseudonym and date shift, once"
        Project = Pool().get('gnuhealth.imaging.research.project')
        projects = {p.id: p for p in Project.browse(
                list({v.get('project') for v in vlist} - {None}))}
        prefixes = {normalize_prefix(p.pseudonym_prefix)
            for p in projects.values()}
        taken = {s.pseudonym for s in cls.search(['OR'] + [
                    ('pseudonym', 'like', p + '-%') for p in prefixes])
            } if prefixes else set()
        for values in vlist:
            project = projects.get(values.get('project'))
            if not project:
                continue  # refused as required
            pseudonym = new_pseudonym(project.pseudonym_prefix, taken)
            taken.add(pseudonym)
            values.update(pseudonym=pseudonym, state='enrolled',
                withdrawal_date=None, date_shift=new_date_shift(
                    project.date_shift_min, project.date_shift_max))
        return vlist

    @classmethod
    def write(cls, *args):
        actions = iter(args)
        for subjects, values in zip(actions, actions):
            for name in ['project', 'patient']:
                if name in values and any(
                        getattr(s, name).id != values[name]
                        for s in subjects):
                    raise AccessError(gettext(
                            'health_orthanc.msg_research_subject_identity',
                            subject=subjects[0].rec_name))
        super().write(*args)

    @classmethod
    def delete(cls, subjects):
        for subject in subjects:
            if subject.copies:
                raise ResearchError(gettext(
                        'health_orthanc.msg_research_subject_delete',
                        subject=subject.rec_name))
        cls._audit(subjects, 'research_enrol_delete',
            'msg_audit_research_enrol_delete')
        super().delete(subjects)

    @classmethod
    def copy(cls, subjects, default=None):
        raise ResearchError(
            gettext('health_orthanc.msg_research_subject_copy'))

    @classmethod
    @ModelView.button_action('health_orthanc.wizard_research_copy_studies')
    def copy_studies(cls, subjects):
        "Open Copy to Project on the subject's studies"
        pass

    @classmethod
    @ModelView.button_action('health_orthanc.wizard_research_withdraw')
    def withdraw(cls, subjects):
        "Open Withdraw Consent"
        pass

    @classmethod
    def withdraw_consent(cls, subjects, date, delete_copies=True):
        """Record the withdrawal of the subjects' consent on date: no copy
        is made any more; with delete_copies, their copies are deleted
        from the research Orthanc (queued)"""
        Copy = Pool().get('gnuhealth.imaging.research.copy')
        for subject in subjects:
            if subject.state != 'enrolled':
                raise ResearchError(gettext(
                        'health_orthanc.msg_research_already_withdrawn',
                        subject=subject.rec_name))
        cls.write(subjects, {'state': 'withdrawn', 'withdrawal_date': date})
        to_delete = [c for s in subjects for c in s.copies
            if c.state == 'done'] if delete_copies else []
        cls._audit(subjects, 'research_withdraw',
            'msg_audit_research_withdraw', deleting=len(to_delete))
        if to_delete:
            with server_queue():
                Copy.__queue__.delete_from_research(to_delete)
        return to_delete

    @classmethod
    def _audit(cls, subjects, action, message, **values):
        Audit = Pool().get('gnuhealth.orthanc.audit')
        Audit.add([{
                    'action': action,
                    'record': str(s),
                    'record_name': s.rec_name,
                    'patient': s.patient.id,
                    'project': s.project.id,
                    'description': gettext('health_orthanc.' + message,
                        patient=Audit._patient_text(s.patient),
                        pseudonym=s.pseudonym, project=s.project.rec_name,
                        consent=s.consent_date or '',
                        reference=s.consent_reference or '',
                        withdrawal=s.withdrawal_date or '', **values),
                    } for s in subjects])

    def enrolment(self):
        "What research_rules.decide_copy needs of the subject"
        return Enrolment(self.consent_date, self.withdrawal_date)


class ResearchPseudonym(DomainAccessMixin, ModelSQL, ModelView):
    """Research Pseudonym

    The researchers' view of the subjects: the pseudonym and whether
    consent stands, never the patient nor the date shift."""
    __name__ = 'gnuhealth.imaging.research.pseudonym'
    _rec_name = 'pseudonym'

    project = fields.Many2One(
        'gnuhealth.imaging.research.project', "Project", readonly=True)
    pseudonym = fields.Char("Pseudonym", readonly=True)
    state = fields.Selection(SUBJECT_STATES, "State", readonly=True)
    withdrawal_date = fields.Date("Withdrawal Date", readonly=True)
    copies = fields.One2Many(
        'gnuhealth.imaging.research.copy', 'pseudonym', "Copies",
        readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('pseudonym', 'ASC'), ('id', 'ASC')]

    @classmethod
    def table_query(cls):
        subject = Pool().get(
            'gnuhealth.imaging.research.subject').__table__()
        return subject.select(
            subject.id, subject.create_uid, subject.create_date,
            subject.write_uid, subject.write_date, subject.project,
            subject.pseudonym, subject.state, subject.withdrawal_date)


class WithdrawStart(ModelView):
    "Withdraw Consent"
    __name__ = 'gnuhealth.imaging.research.withdraw.start'

    subject = fields.Many2One(
        'gnuhealth.imaging.research.subject', "Subject", readonly=True)
    date = fields.Date("Withdrawal Date", required=True)
    delete_copies = fields.Boolean(
        "Delete the Copies",
        help="Delete the subject's copies from the research Orthanc; "
        "what is deleted is recorded in the audit.")
    copies = fields.Many2Many(
        'gnuhealth.imaging.research.copy', None, None,
        "Copies in the Research Orthanc", readonly=True)


class Withdraw(Wizard):
    "Withdraw Consent"
    __name__ = 'gnuhealth.imaging.research.withdraw'

    start = StateView(
        'gnuhealth.imaging.research.withdraw.start',
        'health_orthanc.research_withdraw_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Withdraw", 'withdraw', 'tryton-ok', default=True),
            ])
    withdraw = StateTransition()

    def default_start(self, fields):
        subject = self.record
        return {
            'subject': subject.id,
            'date': datetime.date.today(),
            'delete_copies': True,
            'copies': [c.id for c in subject.copies if c.state == 'done'],
            }

    def transition_withdraw(self):
        Subject = Pool().get('gnuhealth.imaging.research.subject')
        Subject.withdraw_consent(
            [self.record], self.start.date, bool(self.start.delete_copies))
        return 'end'

    def end(self):
        return 'reload'
