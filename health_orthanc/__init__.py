# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
from trytond.pool import Pool

from . import (
    audit, deid_profile, dicom_node, ir, patient, query, radiation_dose,
    request, research, research_copy, result, retrieval, scheduled_query,
    series, server, study, study_report, upload, worklist_publish)

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
        ir.Attachment,
        ir.Note,
        upload.UploadStart,
        upload.UploadFile,
        upload.UploadResult,
        upload.UploadResultLine,
        deid_profile.DeidProfile,
        deid_profile.DeidProfileRule,
        research.ResearchProject,
        research.ResearchSubject,
        research.ResearchPseudonym,
        research.WithdrawStart,
        research_copy.ResearchCopy,
        research_copy.CopyStudiesStart,
        research_copy.CopyStudiesResult,
        audit.OrthancAudit,
        dicom_node.DicomNode,
        retrieval.Retrieval,
        retrieval.RetrievalStudy,
        scheduled_query.ScheduledQuery,
        query.QueryStart,
        query.QueryAnswer,
        query.QueryAnswers,
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
        research.Withdraw,
        research_copy.CopyStudies,
        query.Query,
        module='health_orthanc', type_='wizard')
