# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
from trytond.exceptions import UserError
from trytond.model.exceptions import ValidationError


class ImagingRequestError(UserError):
    pass


class ImagingResultError(UserError):
    pass


class ImagingSequenceError(UserError):
    pass


class ImagingTestValidationError(ValidationError):
    pass


class ImagingReportingError(UserError):
    pass
