# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Scheduled PACS queries: what a node holds of the last days, brought in
by the scheduled action, the studies already here or asked for skipped."""
import datetime
import logging

from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, fields
from trytond.pool import Pool
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access

from trytond.modules.health_imaging.access import (
    DomainAccessMixin, ReadonlyFieldsMixin, server_queue)

from . import orthanc_client as oc
from . import query_plan as qp
from .dicom_network import valid_uid
from .exceptions import DicomNodeValidationError
from .query import find_on_node, outcome_notes, split_identifiers

logger = logging.getLogger(__name__)
#: The most days a scheduled query looks back (a century)
MAX_DAYS = 36600


class ScheduledQuery(
        DomainAccessMixin, ReadonlyFieldsMixin, ModelSQL, ModelView):
    "Scheduled PACS Query"
    __name__ = 'gnuhealth.orthanc.scheduled_query'

    name = fields.Char("Name", required=True)
    node = fields.Many2One(
        'gnuhealth.orthanc.dicom_node', "DICOM Node", required=True,
        ondelete='RESTRICT',
        domain=[('may_query', '=', True), ('may_retrieve', '=', True)],
        help="The node queried, whose new studies are retrieved.")
    active = fields.Boolean("Active")
    days = fields.Integer(
        "Last Days", required=True,
        domain=[('days', '>', 0), ('days', '<=', MAX_DAYS)],
        help="Query the studies of the last days, today included: 1 for "
        "today, 2 for yesterday and today.")
    modalities = fields.Char(
        "Modalities",
        help="The modality codes to look for, separated by spaces (e.g. "
        "\"CT MR\"); empty for every modality.")
    include_terms = fields.Char(
        "Description Includes",
        help="Keep the studies whose description contains one of these "
        "terms (comma separated, any case).")
    exclude_terms = fields.Char(
        "Description Excludes",
        help="Leave out the studies whose description contains one of "
        "these terms (comma separated, any case).")
    patient_ids = fields.Text(
        "PatientIDs",
        help="The PatientIDs to query, one per line; empty for every "
        "patient.")
    last_run = fields.DateTime("Last Run", readonly=True)
    last_report = fields.Text("Last Report", readonly=True)
    retrievals = fields.One2Many(
        'gnuhealth.orthanc.retrieval', 'scheduled_query', "Retrievals",
        readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'run_now': {
                    'icon': 'tryton-launch',
                    },
                })

    @staticmethod
    def default_active():
        return True

    @staticmethod
    def default_days():
        return 1

    @classmethod
    def validate(cls, queries):
        super().validate(queries)
        for query in queries:
            unknown = [m for m in qp.parse_modalities(query.modalities)
                if m not in qp.MODALITIES]
            if unknown:
                raise DicomNodeValidationError(gettext(
                        'health_orthanc.msg_scheduled_query_modality',
                        query=query.rec_name, modalities=', '.join(unknown)))

    @classmethod
    def copy(cls, queries, default=None):
        default = default.copy() if default is not None else {}
        for name in ['last_run', 'last_report', 'retrievals']:
            default.setdefault(name)
        return super().copy(queries, default=default)

    @classmethod
    @ModelView.button
    def run_now(cls, queries):
        "Queue a run of the queries"
        with server_queue():
            cls.__queue__.run_queries(queries)

    @classmethod
    def run_scheduled(cls):
        "Run every active query: the method of the scheduled action"
        cls.run_queries(cls.search([]))

    @classmethod
    def run_queries(cls, queries):
        "Run each query; one that fails never stops the others"
        cursor = Transaction().connection.cursor()
        for query in queries:
            # What a query that fails did is undone, not the others
            cursor.execute('SAVEPOINT scheduled_query')
            try:
                query._run()
            except Exception:
                logger.exception("Scheduled PACS query %s failed", query.id)
                cursor.execute('ROLLBACK TO SAVEPOINT scheduled_query')
                cls(query.id)._report([gettext(
                            'health_orthanc.msg_scheduled_query_unexpected')])
            cursor.execute('RELEASE SAVEPOINT scheduled_query')

    def _filter(self, today):
        date_from, date_to = qp.relative_window(self.days, today)
        return qp.StudyFilter(
            modalities=qp.parse_modalities(self.modalities),
            date_from=date_from, date_to=date_to,
            include_terms=qp.parse_terms(self.include_terms),
            exclude_terms=qp.parse_terms(self.exclude_terms))

    def _run(self):
        """Query the node, retrieve what is neither here nor asked for
        already; write the report"""
        pool = Pool()
        Date = pool.get('ir.date')
        Node = pool.get('gnuhealth.orthanc.dicom_node')
        Retrieval = pool.get('gnuhealth.orthanc.retrieval')
        today = Date.today()
        filters = self._filter(today)
        identifiers = split_identifiers(self.patient_ids)
        queries = (qp.plan_patients(identifiers, filters) if identifiers
            else qp.plan_open(filters))
        node = self.node
        with Transaction().set_context(active_test=True):
            allowed = Node.search([
                    ('id', '=', node.id),
                    ('may_query', '=', True),
                    ('may_retrieve', '=', True),
                    ])
        if not allowed:
            self._report([gettext(
                        'health_orthanc.msg_scheduled_query_node_not_allowed',
                        node=node.name)])
            return
        try:
            answers, outcomes, here, failures = find_on_node(
                node, queries, today)
        except oc.OrthancError as error:
            self._report([gettext('health_orthanc.msg_scheduled_query_failed',
                        node=node.name, error=node.error_text(error))])
            return
        asked = self._asked([a.study_uid for a in answers])
        new = [a for a in answers
            if a.study_uid not in here and a.study_uid not in asked]
        bad = [a for a in new if not valid_uid(a.study_uid)]
        if bad:
            # Retrieving them would move what a list or wildcard matches
            logger.warning("Scheduled PACS query %s: node %s answered "
                "invalid StudyInstanceUIDs %s", self.id, node.name,
                [a.study_uid for a in bad])
            new = [a for a in new if a not in bad]
        lines = [gettext('health_orthanc.msg_scheduled_query_found',
                node=node.name, found=len(answers), here=len(here),
                asked=len(asked - here), new=len(new))]
        if bad:
            lines.append(gettext(
                    'health_orthanc.msg_scheduled_query_bad_uids',
                    node=node.name, count=len(bad),
                    uids=', '.join(a.study_uid[:80] for a in bad[:5])))
        lines.extend(failures + outcome_notes(node, outcomes))
        if new:
            retrieval = Retrieval.request_studies(node, new, self)
            lines.append(gettext(
                    'health_orthanc.msg_scheduled_query_retrieval',
                    retrieval=retrieval.rec_name))
        self._report(lines)

    @staticmethod
    def _asked(uids):
        "The UIDs that a retrieval is retrieving or has retrieved"
        Study = Pool().get('gnuhealth.orthanc.retrieval.study')
        asked = set()
        for sub_uids in grouped_slice(list(set(uids))):
            asked.update(s.study_uid for s in Study.search([
                        ('study_uid', 'in', list(sub_uids)),
                        ('state', 'in', ['pending', 'retrieved']),
                        ]))
        return asked

    def _report(self, lines):
        now = datetime.datetime.now()
        with without_check_access():
            self.write([self], {
                    'last_run': now,
                    'last_report': '\n'.join(
                        ['%s' % now.strftime('%Y-%m-%d %H:%M')] + lines),
                    })

    def retrieval_ended(self, retrieval):
        "Add the outcome of its retrieval to the report of the last run"
        line = gettext('health_orthanc.msg_scheduled_query_retrieved',
            retrieval=retrieval.rec_name,
            retrieved=retrieval.retrieved_count,
            failed=retrieval.failed_count,
            error=retrieval.error or '')
        with without_check_access():
            self.write([self], {'last_report': '\n'.join(
                        filter(None, [self.last_report, line]))})
