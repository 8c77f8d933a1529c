# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The studies of imaging requests: a linked study performs its request,
attached to the request's result."""
import datetime

from trytond.model import fields
from trytond.pool import Pool, PoolMeta
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access

from .audit import MATCHING
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
        requests performed and done.

        studies_of is {request: [studies]}; results ({request id: result})
        and attached ({(result id, study id)}) when known save their
        searches.  Only draft results take studies.
        """
        zone = company_zone()
        performed = {r: cls._performed_date(studies, zone)
            for r, studies in studies_of.items()}
        results = cls._get_results(performed, results)
        with without_check_access():
            cls._attach_studies(studies_of, results, attached)
            to_write = []
            for request, date in performed.items():
                if not request.performed_date:
                    to_write.extend(([request], {'performed_date': date}))
            if to_write:
                cls.write(*to_write)
            cls.done([r for r in performed if r.state == 'requested'])

    @staticmethod
    def _performed_date(studies, zone):
        """Return the date and time of the first study (in the company's
        time zone) in UTC, or now"""
        dates = [s.study_datetime for s in studies if s.study_datetime]
        if not dates:
            return datetime.datetime.now()
        return to_utc(min(dates), zone)

    @classmethod
    def _get_results(cls, performed, results=None):
        """Return {request id: result} of the requests, the missing results
        created (one create) at the date the request was performed"""
        Result = Pool().get('gnuhealth.imaging.test.result')
        requests = list(performed)
        if results is None:
            results = {}
            for sub_requests in grouped_slice(requests):
                for result in Result.search([
                            ('request', 'in', [r.id for r in sub_requests])]):
                    results[result.request.id] = result
        results = dict(results)
        to_create = [dict(Result.values_from_request(r), date=performed[r])
            for r in requests if r.id not in results]
        if to_create:
            with without_check_access():
                for result in Result.create(to_create):
                    results[result.request.id] = result
        return results

    @classmethod
    def _attach_studies(cls, studies_of, results, attached=None):
        """Add the studies to the draft results of their requests (one
        create), unless attached ({(result id, study id)}) has them"""
        ResultStudy = Pool().get(
            'gnuhealth.imaging.test.result-gnuhealth.orthanc.study')
        pairs = {(results[r.id].id, s.id)
            for r, studies in studies_of.items() for s in studies
            if results[r.id].state == 'draft'}
        if attached is None:
            attached = set()
            for sub_results in grouped_slice(list({r for r, _ in pairs})):
                attached.update((l.result.id, l.study.id)
                    for l in ResultStudy.search([
                            ('result', 'in', list(sub_results)),
                            ]))
        new_pairs = sorted(pairs - attached)
        if new_pairs:
            with Transaction().set_context({MATCHING: True}):
                ResultStudy.create([{'result': r, 'study': s}
                        for r, s in new_pairs])
