# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
from trytond.pool import Pool

from . import (
    audit, dicom_node, ir, patient, query, request, result, retrieval,
    scheduled_query, series, server, study, upload, worklist_publish)

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
        dicom_node.DicomNode,
        retrieval.Retrieval,
        retrieval.RetrievalStudy,
        scheduled_query.ScheduledQuery,
        query.QueryStart,
        query.QueryAnswer,
        query.QueryAnswers,
        module='health_orthanc', type_='model')
    Pool.register(
        server.AddServer,
        upload.Upload,
        study.DeleteStudies,
        query.Query,
        module='health_orthanc', type_='wizard')
