# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
from trytond.pool import Pool

from . import catalogue, reporting, request, result, sequences

__all__ = ['register']


def register():
    Pool.register(
        catalogue.ImagingTestType,
        catalogue.ImagingTest,
        request.ImagingTestRequest,
        request.RequestImagingTest,
        request.RequestPatientImagingTestStart,
        result.ImagingTestResult,
        result.Attachment,
        sequences.GnuHealthSequences,
        sequences.ImagingRequestSequence,
        sequences.ImagingSequence,
        reporting.ReportingContext,
        reporting.Activity,
        reporting.ActivityModality,
        reporting.ActivityModalityTimeseries,
        reporting.ActivityTest,
        reporting.ActivityTestTimeseries,
        reporting.Turnaround,
        reporting.TurnaroundTimeseries,
        reporting.Backlog,
        reporting.Reader,
        reporting.ReaderTimeseries,
        module='health_imaging', type_='model')
    Pool.register(
        request.RequestPatientImagingTest,
        result.GenerateResults,
        reporting.OpenTurnaround,
        reporting.OpenBacklog,
        module='health_imaging', type_='wizard')
    Pool.register(
        result.ImagingResultReport,
        module='health_imaging', type_='report')
