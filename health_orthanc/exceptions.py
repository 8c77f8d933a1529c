# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
from trytond.exceptions import UserError
from trytond.model.exceptions import ValidationError


class OrthancDomainError(ValidationError):
    pass


class OrthancResourceError(UserError):
    pass


class OrthancWorklistError(UserError):
    pass


class ResearchError(UserError):
    pass


class ResearchValidationError(ValidationError):
    pass


class DicomNodeError(UserError):
    pass


class DicomNodeValidationError(ValidationError):
    pass


class PacsQueryError(UserError):
    pass
