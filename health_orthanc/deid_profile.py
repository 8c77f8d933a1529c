# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""De-identification profiles: what a research copy keeps, removes or
replaces (the rules are applied by the plain module ``deidentify``)."""
from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, Unique, fields, sequence_ordered
from trytond.pool import Pool
from trytond.pyson import Eval

from trytond.modules.health_imaging.access import DomainAccessMixin

from . import deidentify
from .exceptions import ResearchValidationError

DATES = [
    ('remove', "Remove"),
    ('shift', "Shift by the Subject's Offset"),
    ]
BIRTH_DATES = [
    ('remove', "Remove"),
    ('year', "Year Only, Shifted"),
    ]
RULE_ACTIONS = [
    ('keep', "Keep"),
    ('remove', "Remove"),
    ('replace', "Replace"),
    ]
#: The options of a profile, as deidentify.Profile names them
OPTIONS = ['code', 'name', 'dates', 'birth_date', 'keep_descriptions',
    'keep_patient_characteristics', 'keep_private_tags', 'dicom_version']


class DeidProfile(DomainAccessMixin, ModelSQL, ModelView):
    "De-identification Profile"
    __name__ = 'gnuhealth.imaging.deid.profile'

    code = fields.Char("Code", required=True)
    name = fields.Char("Name", required=True, translate=True)
    dates = fields.Selection(
        DATES, "Dates", required=True,
        help="Shift every date by the subject's offset (the intervals "
        "between studies stay true), or remove them.")
    birth_date = fields.Selection(
        BIRTH_DATES, "Birth Date", required=True,
        help="Remove the birth date, or keep its year (shifted by the "
        "subject's offset, then cut to the first of January).")
    keep_descriptions = fields.Boolean(
        "Keep Descriptions",
        help="Keep the study and series descriptions: often needed for "
        "research, but they may hold names (the check of each copy "
        "refuses a copy where they do).")
    keep_patient_characteristics = fields.Boolean(
        "Keep Patient Sex and Age",
        help="Keep the patient's sex, age, size and weight.")
    keep_private_tags = fields.Boolean(
        "Keep Private Tags",
        help="Keep the manufacturers' private attributes: they may hold "
        "anything, identifiers included.")
    dicom_version = fields.Selection(
        [(v, v) for v in deidentify.DICOM_VERSIONS], "PS3.15 Version",
        required=True,
        help="The edition of DICOM PS3.15 whose Basic Application Level "
        "Confidentiality Profile Orthanc applies first.")
    rules = fields.One2Many(
        'gnuhealth.imaging.deid.profile.rule', 'profile', "Tag Rules",
        help="Attributes to keep, remove or replace with a fixed value, "
        "after the profile above.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('code_uniq', Unique(t, t.code),
                'health_orthanc.msg_deid_profile_code_unique'),
            ]

    @staticmethod
    def default_dates():
        return 'remove'

    @staticmethod
    def default_birth_date():
        return 'remove'

    @staticmethod
    def default_dicom_version():
        return '2021b'

    @classmethod
    def validate(cls, profiles):
        super().validate(profiles)
        for profile in profiles:
            profile.to_profile()

    def to_profile(self):
        "Return the deidentify.Profile of this profile"
        try:
            return deidentify.profile_from_rows(
                {n: getattr(self, n) for n in OPTIONS},
                [{'action': r.action, 'tag': r.tag, 'value': r.value}
                    for r in self.rules])
        except deidentify.ProfileError as exception:
            raise ResearchValidationError(gettext(
                    'health_orthanc.msg_deid_profile_invalid',
                    profile=self.rec_name, problems=str(exception))
                ) from exception


class DeidProfileRule(sequence_ordered(), DomainAccessMixin, ModelSQL,
        ModelView):
    "De-identification Profile Rule"
    __name__ = 'gnuhealth.imaging.deid.profile.rule'

    profile = fields.Many2One(
        'gnuhealth.imaging.deid.profile', "Profile", required=True,
        ondelete='CASCADE')
    action = fields.Selection(RULE_ACTIONS, "Action", required=True)
    tag = fields.Char(
        "Attribute", required=True,
        help="A DICOM keyword (InstitutionName) or a tag written gggg,eeee "
        "(0008,0080; 0009,1010 for a private tag).")
    value = fields.Char(
        "Value",
        states={'invisible': Eval('action') != 'replace'},
        help="The value written in every instance.")

    @staticmethod
    def default_action():
        return 'keep'

    @classmethod
    def validate(cls, rules):
        super().validate(rules)
        Pool().get('gnuhealth.imaging.deid.profile').validate(
            list({r.profile for r in rules}))
