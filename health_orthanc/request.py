# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The studies of imaging requests: a linked study performs its request,
attached to the request's result."""
import datetime

from trytond.model import fields
from trytond.pool import Pool, PoolMeta
from trytond.tools import grouped_slice
from trytond.transaction import without_check_access

from .worklist_publish import company_zone, to_utc


class ImagingTestRequest(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging.test.request'

    studies = fields.One2Many(
        'gnuhealth.orthanc.study', 'request', "Orthanc Studies",
        readonly=True,
        help="The studies received for this request, found by their "
        "StudyInstanceUID or accession number.")

    @classmethod
    def copy(cls, requests, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('studies')
        return super().copy(requests, default=default)

    @classmethod
    def requested(cls, requests):
        super().requested(requests)
        # Studies that arrived before (e.g. while the request was
        # cancelled) are linked now
        Study = Pool().get('gnuhealth.orthanc.study')
        Study.link_studies_of(requests)

    @classmethod
    def perform(cls, studies_of, results=None, attached=None):
        """Attach the studies to the results of their requests and mark the
        requests performed.

        studies_of is {request: [studies]}; results ({request id: result})
        and attached ({(result id, study id)}) when known save their
        searches.  The missing results are created (one create), their
        date being the study's (converted from the company's time zone).
        Only draft results take studies.
        """
        pool = Pool()
        Result = pool.get('gnuhealth.imaging.test.result')
        ResultStudy = pool.get(
            'gnuhealth.imaging.test.result-gnuhealth.orthanc.study')
        requests = list(studies_of)
        zone = company_zone()

        def performed(request):
            dates = [s.study_datetime for s in studies_of[request]
                if s.study_datetime]
            if not dates:
                return datetime.datetime.now()
            return to_utc(min(dates), zone)

        if results is None:
            results = {}
            for sub_requests in grouped_slice(requests):
                for result in Result.search([
                            ('request', 'in', [r.id for r in sub_requests])]):
                    results[result.request.id] = result
        results = dict(results)
        to_create = [dict(Result.values_from_request(r), date=performed(r))
            for r in requests if r.id not in results]
        with without_check_access():
            if to_create:
                for result in Result.create(to_create):
                    results[result.request.id] = result
            pairs = {(results[r.id].id, s.id)
                for r, studies in studies_of.items() for s in studies
                if results[r.id].state == 'draft'}
            if attached is not None:
                existing = attached
            else:
                existing = set()
                for sub_results in grouped_slice(
                        list({r for r, _ in pairs})):
                    existing.update((l.result.id, l.study.id)
                        for l in ResultStudy.search([
                                ('result', 'in', list(sub_results)),
                                ]))
            new_pairs = sorted(pairs - existing)
            if new_pairs:
                ResultStudy.create([{'result': r, 'study': s}
                        for r, s in new_pairs])
            to_write = []
            for request in requests:
                if not request.performed_date:
                    to_write.extend(([request], {
                                'performed_date': performed(request),
                                }))
            if to_write:
                cls.write(*to_write)
            cls.done([r for r in requests if r.state == 'requested'])
