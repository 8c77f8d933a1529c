# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
from trytond.pool import Pool

from . import (
    audit, ir, patient, radiation_dose, request, result, series, server, study,
    study_report, upload, worklist_publish)

__all__ = ['register']


def register():
    Pool.register(
        server.OrthancServer,
        server.AddServerStart,
        server.AddServerResult,
        patient.OrthancPatient,
        patient.Patient,
        study.OrthancStudy,
        study.DeleteStudiesStart,
        study.DeleteStudiesResult,
        series.OrthancSeries,
        result.ImagingTestResultStudy,
        result.ImagingTestResult,
        request.ImagingTestRequest,
        worklist_publish.ImagingTestRequest,
        ir.Cron,
        upload.UploadStart,
        upload.UploadFile,
        upload.UploadResult,
        upload.UploadResultLine,
        audit.OrthancAudit,
        study_report.StudyReport,
        study_report.ImagingTestResult,
        radiation_dose.RadiationDose,
        radiation_dose.RadiationDoseEvent,
        radiation_dose.RadiationDoseValue,
        radiation_dose.RadiationDoseContext,
        radiation_dose.ImagingTest,
        radiation_dose.ImagingTestResult,
        radiation_dose.Patient,
        module='health_orthanc', type_='model')
    Pool.register(
        server.AddServer,
        upload.Upload,
        study.DeleteStudies,
        module='health_orthanc', type_='wizard')
