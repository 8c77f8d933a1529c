# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The Query PACS wizard: find the studies of patients on a DICOM node and
retrieve those ticked.

The answers live in the wizard only: a query is cheap to repeat, and only
the studies retrieved become records (a retrieval).
"""
import datetime
import functools
import re

from trytond.i18n import gettext
from trytond.model import Model, ModelView, fields
from trytond.model.exceptions import AccessError
from trytond.pool import Pool
from trytond.pyson import Eval, PYSONEncoder
from trytond.transaction import Transaction, check_access
from trytond.wizard import (
    Button, StateAction, StateTransition, StateView, Wizard)

from . import orthanc_client as oc
from . import query_plan as qp
from .dicom_network import StudyAnswer
from .exceptions import PacsQueryError
from .mapping import format_person_name
from .patient import LINK_STATES
from .query_sheet import QuerySheetError, read_sheet, template_xlsx
from .retrieval import answer_key, answer_links, identifier_links, studies_here

#: The tick box of each common modality
MODALITY_FIELDS = {m: 'modality_%s' % m.lower()
    for m in qp.COMMON_MODALITIES}
TEMPLATE_NAME = 'pacs-query-template.xlsx'
#: The status of a node older than this is checked when the wizard opens
FRESH = datetime.timedelta(minutes=5)
#: Seconds the wizard waits for a node's echo
ECHO_TIMEOUT = 3
#: What a PatientID typed may not hold: C-FIND wildcards, too long
BAD_PATIENT_ID = re.compile(r'[*?\\]|.{65}')
START_FIELDS = [
    'node', 'source', 'patient', 'patient_ids', 'identifiers', 'sheet',
    'sheet_name', 'other_modalities', 'date_from', 'date_to',
    'include_terms', 'exclude_terms', 'skip_here',
    ] + list(MODALITY_FIELDS.values())


def patient_identifiers(patient):
    """Return the (identifier, kind, type) of a GNU Health patient: the
    PUID, then the alternative identifications.  Read as the user: the patient
    and its identifications the user may not read raise AccessError."""
    if not patient:
        return []
    pool = Pool()
    Patient = pool.get('gnuhealth.patient')
    AlternativeID = pool.get('gnuhealth.person_alternative_identification')
    with check_access():
        values, = Patient.read([patient.id],
            ['party.ref', 'party.alternative_ids'])
        party = values.get('party.') or {}
        alternatives = AlternativeID.read(
            list(party.get('alternative_ids') or []),
            ['code', 'alternative_id_type', 'other_alternative_id_type'])
    kinds = dict(AlternativeID.fields_get(
            ['alternative_id_type'])['alternative_id_type']['selection'])
    identifiers = []
    if party.get('ref'):
        identifiers.append((party['ref'], "PUID", 'puid'))
    for alternative in alternatives:
        kind = (alternative['other_alternative_id_type']
            if alternative['alternative_id_type'] == 'other'
            else kinds.get(alternative['alternative_id_type']))
        identifiers.append((alternative['code'], kind or '',
                alternative['alternative_id_type']))
    return identifiers


def identifiers_text(identifiers):
    "The identifiers of a patient, as a line of text"
    return '; '.join('%s: %s' % (kind, identifier)
        for identifier, kind, _ in identifiers)


def default_identifiers(identifiers):
    "The PatientIDs queried for a patient: those the linking knows"
    return ', '.join(dict.fromkeys(i for i, _, type_ in identifiers
            if i and type_ in {'puid', 'medical_record'}))


def check_may_query():
    "Refuse the users outside the groups of the Query PACS wizard"
    pool = Pool()
    ActionWizard = pool.get('ir.action.wizard')
    User = pool.get('res.user')
    if Transaction().user == 0:
        return
    groups = ActionWizard.get_groups(Query.__name__)
    if not groups & set(User.get_groups()):
        raise AccessError(gettext('health_orthanc.msg_query_not_allowed'))


def split_identifiers(text):
    "The PatientIDs of a text: one per line, or separated by commas"
    if not text:
        return []
    return [i.strip() for i in text.replace(',', '\n').splitlines()
        if i.strip()]


def outcome_notes(node, outcomes):
    "The user messages of the splits and caps of the queries run"
    notes = []
    for outcome in outcomes:
        patient_id = outcome.query.patient_id or '*'
        if outcome.split:
            notes.append(gettext('health_orthanc.msg_query_split',
                    node=node.name, patient_id=patient_id,
                    limit=node.answer_limit or '-', sent=outcome.sent))
        if outcome.capped:
            notes.append(gettext('health_orthanc.msg_query_capped',
                    node=node.name, patient_id=patient_id,
                    days=', '.join(d.isoformat() for d in outcome.capped)))
        if outcome.undated_missed:
            notes.append(gettext('health_orthanc.msg_query_undated',
                    node=node.name, patient_id=patient_id))
    return notes


def audit_queries(node, outcomes):
    """Record who queried the node for which PatientID, and the patient it
    names when known"""
    Audit = Pool().get('gnuhealth.orthanc.audit')
    links = identifier_links(
        {o.query.patient_id for o in outcomes if o.query.patient_id})
    Audit.add([{
                'action': 'pacs_query',
                'record': str(node),
                'record_name': node.rec_name,
                'server': node.server.id,
                'patient': links.get(o.query.patient_id),
                'description': gettext('health_orthanc.msg_audit_pacs_query',
                    node=node.name, server=node.server.rec_name,
                    patient_id=o.query.patient_id or '*',
                    query=query_text(o.query), count=len(o.answers)),
                } for o in outcomes])


#: The errors after which no other query is sent: the node or our
#: Orthanc cannot answer any
NODE_ERRORS = (
    oc.OrthancUnauthorized, oc.OrthancUnreachable, oc.NotOrthanc,
    oc.NodeInvalid, oc.NodeNotDeclared, oc.NodeUnreachable, oc.NodeTimeout,
    oc.NotDicom, oc.AssociationRejected)


def find_on_node(node, queries, today):
    """Send the queries to the node (declared again if needed) and audit
    each query sent; return the answers, the outcome of each query that
    succeeded, the UIDs of the answers already here and the notes of the
    queries that failed.  A query that fails does not stop the others,
    unless the node or Orthanc cannot answer any; raises the client's
    error when the first query cannot reach the node."""
    outcomes, failed, notes = [], [], []
    with node.server.get_client() as client:
        node.ensure_declared(client)
        find = functools.partial(client.find_studies, node.name,
            timeout=node.timeout or None)
        try:
            for index, query in enumerate(queries):
                try:
                    outcomes.append(qp.run_query(
                            query, find, today, node.answer_limit))
                except NODE_ERRORS as error:
                    # Nothing reached the node: the rest would not either
                    if not outcomes and not failed:
                        raise
                    notes.append(failure_note(node, query, error))
                    unsent = len(queries) - index - 1
                    if unsent:
                        notes.append(gettext(
                                'health_orthanc.msg_query_not_sent',
                                node=node.name, count=unsent))
                    break
                except oc.OrthancError as error:
                    # The node refused this query: it was sent all the same
                    failed.append(qp.QueryOutcome(query=query, sent=1))
                    notes.append(failure_note(node, query, error))
        finally:
            audit_queries(node, outcomes + failed)
        answers = qp.merge_answers(*(o.answers for o in outcomes))
        here = studies_here(client, [a.study_uid for a in answers])
    return answers, outcomes, here, notes


def failure_note(node, query, error):
    "The note of a query that failed: its row, or its PatientID"
    if query.row is not None:
        return gettext('health_orthanc.msg_query_row_failed',
            row=query.row, error=node.error_text(error))
    return gettext('health_orthanc.msg_query_patient_failed',
        patient_id=query.patient_id or '*', error=node.error_text(error))


def query_text(query):
    "The filters of a query, as a line of text"
    parts = []
    if query.modalities:
        parts.append('\\'.join(query.modalities))
    dates = qp.date_range(query.date_from, query.date_to)
    if dates:
        parts.append(dates)
    if query.accession:
        parts.append(query.accession)
    if query.include_terms:
        parts.append('+(%s)' % ', '.join(query.include_terms))
    if query.exclude_terms:
        parts.append('-(%s)' % ', '.join(query.exclude_terms))
    return ' '.join(parts) or '*'


class QueryStart(ModelView):
    "Query PACS"
    __name__ = 'gnuhealth.orthanc.query.start'

    nodes = fields.One2Many(
        'gnuhealth.orthanc.dicom_node', None, "Node Status", readonly=True)
    node = fields.Many2One(
        'gnuhealth.orthanc.dicom_node', "DICOM Node", required=True,
        domain=[('may_query', '=', True)])
    source = fields.Selection([
            ('patient', "A Patient"),
            ('sheet', "A Spreadsheet"),
            ], "Look For", required=True)
    patient = fields.Many2One(
        'gnuhealth.patient', "Patient",
        states={'invisible': Eval('source') != 'patient'})
    patient_ids = fields.Char(
        "PatientIDs",
        states={
            'invisible': Eval('source') != 'patient',
            'required': Eval('source') == 'patient',
            },
        help="The identifiers of the patient on the node, comma "
        "separated: the PUID and medical record numbers by default.")
    identifiers = fields.Char(
        "Identifiers of the Patient", readonly=True,
        states={'invisible': Eval('source') != 'patient'},
        help="Any of them may be added to the PatientIDs.")
    sheet = fields.Binary(
        "Spreadsheet", filename='sheet_name',
        states={
            'invisible': Eval('source') != 'sheet',
            'required': Eval('source') == 'sheet',
            },
        help="A CSV, XLSX or ODS file with one query per row: a PatientID "
        "column, and optional Modality, StudyDate, AccessionNumber and "
        "StudyDescription columns.")
    sheet_name = fields.Char("Spreadsheet Name")
    template = fields.Binary(
        "Template", filename='template_name', readonly=True,
        states={'invisible': Eval('source') != 'sheet'},
        help="An empty spreadsheet with the columns, and a sheet that "
        "explains them.")
    template_name = fields.Char("Template Name", readonly=True)
    modality_cr = fields.Boolean("CR")
    modality_ct = fields.Boolean("CT")
    modality_dx = fields.Boolean("DX")
    modality_mg = fields.Boolean("MG")
    modality_mr = fields.Boolean("MR")
    modality_nm = fields.Boolean("NM")
    modality_pt = fields.Boolean("PT")
    modality_rf = fields.Boolean("RF")
    modality_us = fields.Boolean("US")
    modality_xa = fields.Boolean("XA")
    modality_ot = fields.Boolean("OT")
    other_modalities = fields.Char(
        "Other Modalities",
        help="Other modality codes, separated by spaces (e.g. \"SR KO\").")
    date_from = fields.Date(
        "From", domain=['OR',
            ('date_from', '<=', Eval('date_to', None)),
            ('date_from', '=', None),
            ('date_to', '=', None),
            ])
    date_to = fields.Date("To")
    include_terms = fields.Char(
        "Description Includes",
        help="Keep the studies whose description contains one of these "
        "terms (comma separated, any case).")
    exclude_terms = fields.Char(
        "Description Excludes",
        help="Leave out the studies whose description contains one of "
        "these terms (comma separated, any case).")
    skip_here = fields.Boolean(
        "Skip Studies Already Here",
        help="Leave out the studies whose StudyInstanceUID GNU Health or "
        "its Orthanc already has.")

    @fields.depends('patient')
    def on_change_patient(self):
        # Tryton checks no access on the on_change of a ModelView
        check_may_query()
        if self.patient:
            identifiers = patient_identifiers(self.patient)
            self.patient_ids = default_identifiers(identifiers)
            self.identifiers = identifiers_text(identifiers)
        else:
            self.identifiers = None


class QueryAnswer(ModelView):
    "Query PACS Answer"
    __name__ = 'gnuhealth.orthanc.query.answer'

    selected = fields.Boolean("Retrieve")
    study_uid = fields.Char("StudyInstanceUID", readonly=True)
    patient_id = fields.Char("PatientID", readonly=True)
    patient_name = fields.Char("Name", readonly=True)
    birth_date = fields.Date("Birth Date", readonly=True)
    study_date = fields.Date("Study Date", readonly=True)
    modalities = fields.Char("Modalities", readonly=True)
    description = fields.Char("Description", readonly=True)
    accession = fields.Char("Accession Number", readonly=True)
    series_count = fields.Integer("Series", readonly=True)
    instance_count = fields.Integer("Instances", readonly=True)
    patient = fields.Many2One(
        'gnuhealth.patient', "Patient", readonly=True,
        help="The GNU Health patient that the PatientID links to, by the "
        "rule of the synchronization.")
    link = fields.Selection(
        [(None, '')] + LINK_STATES, "Link", readonly=True)
    already_here = fields.Boolean(
        "Already Here", readonly=True,
        help="GNU Health or its Orthanc already has this study.")


class QueryAnswers(ModelView):
    "Query PACS Answers"
    __name__ = 'gnuhealth.orthanc.query.answers'

    node = fields.Many2One(
        'gnuhealth.orthanc.dicom_node', "DICOM Node", readonly=True)
    may_retrieve = fields.Boolean("May Retrieve", readonly=True)
    notes = fields.Text("Notes", readonly=True)
    answers = fields.One2Many(
        'gnuhealth.orthanc.query.answer', None, "Studies",
        help="Tick the studies to bring into Orthanc.")
    retrieval = fields.Many2One(
        'gnuhealth.orthanc.retrieval', "Retrieval", readonly=True)


class Query(Wizard):
    "Query PACS"
    __name__ = 'gnuhealth.orthanc.query'

    start = StateView(
        'gnuhealth.orthanc.query.start',
        'health_orthanc.query_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Query", 'query', 'tryton-search', default=True),
            ])
    query = StateTransition()
    answers = StateView(
        'gnuhealth.orthanc.query.answers',
        'health_orthanc.query_answers_view_form', [
            Button("Back", 'start', 'tryton-back'),
            Button("Retrieve", 'retrieve', 'tryton-ok', default=True,
                states={'readonly': ~Eval('may_retrieve')}),
            ])
    retrieve = StateTransition()
    open_retrieval = StateAction('health_orthanc.act_retrieval_form')

    # -- what to look for ---------------------------------------------------
    def default_start(self, fields):
        Node = Pool().get('gnuhealth.orthanc.dicom_node')
        nodes = Node.search([('may_query', '=', True)])
        self._check_stale(nodes)
        values = self._previous_start() or self._initial_start(nodes)
        values.update({
                'nodes': [n.id for n in nodes],
                'template': template_xlsx(),
                'template_name': TEMPLATE_NAME,
                })
        return values

    @staticmethod
    def _check_stale(nodes):
        "Echo the nodes whose status is not fresh: the page shows it"
        Node = Pool().get('gnuhealth.orthanc.dicom_node')
        now = datetime.datetime.now()
        stale = [n for n in nodes
            if not n.echo_time or now - n.echo_time > FRESH]
        if stale:
            Node.check_nodes(stale, timeout=ECHO_TIMEOUT)

    def _previous_start(self):
        "The values given before pressing Back, if any"
        if not getattr(self.start, 'node', None):
            return None
        values = {}
        for name in START_FIELDS:
            value = getattr(self.start, name, None)
            values[name] = value.id if isinstance(value, Model) else value
        return values

    def _initial_start(self, nodes):
        "The patient of the record the wizard was opened from"
        pool = Pool()
        context = Transaction().context
        values = {'source': 'patient', 'skip_here': True}
        working = [n for n in nodes if n.echo_state == 'ok'] or nodes
        if working:
            values['node'] = working[0].id
        patient = None
        model, active_id = (context.get('active_model'),
            context.get('active_id'))
        if model == 'gnuhealth.patient' and active_id:
            patient = pool.get(model)(active_id)
        elif model == 'gnuhealth.imaging.test.request' and active_id:
            patient = pool.get(model)(active_id).patient
        if patient:
            identifiers = patient_identifiers(patient)
            values.update({
                    'patient': patient.id,
                    'patient_ids': default_identifiers(identifiers),
                    'identifiers': identifiers_text(identifiers),
                    })
        return values

    def _given(self, name):
        "The value of a field of the start page, None when not given"
        return getattr(self.start, name, None)

    def _filter(self):
        "The filters of the start page"
        modalities = [m for m, name in MODALITY_FIELDS.items()
            if self._given(name)]
        modalities += qp.parse_modalities(self._given('other_modalities'))
        unknown = [m for m in modalities if m not in qp.MODALITIES]
        if unknown:
            raise PacsQueryError(gettext(
                    'health_orthanc.msg_query_modality_unknown',
                    modalities=', '.join(unknown)))
        date_from, date_to = self._given('date_from'), self._given('date_to')
        if date_from and date_to and date_from > date_to:
            raise PacsQueryError(gettext('health_orthanc.msg_query_dates'))
        return qp.StudyFilter(
            modalities=tuple(dict.fromkeys(modalities)),
            date_from=date_from, date_to=date_to,
            include_terms=qp.parse_terms(self._given('include_terms')),
            exclude_terms=qp.parse_terms(self._given('exclude_terms')))

    def _plan(self, filters):
        "Return the queries to send and the problems of the spreadsheet"
        if self._given('source') == 'sheet':
            return self._plan_sheet(filters)
        identifiers = split_identifiers(self._given('patient_ids'))
        if not identifiers:
            raise PacsQueryError(gettext(
                    'health_orthanc.msg_query_no_patient_id'))
        for identifier in identifiers:
            if BAD_PATIENT_ID.search(identifier):
                raise PacsQueryError(gettext(
                        'health_orthanc.msg_query_bad_patient_id',
                        patient_id=identifier))
        return qp.plan_patients(identifiers, filters), []

    def _plan_sheet(self, filters):
        if not self._given('sheet'):
            raise PacsQueryError(gettext('health_orthanc.msg_query_no_sheet'))
        try:
            sheet = read_sheet(self.start.sheet, day_first=day_first())
        except QuerySheetError as error:
            raise PacsQueryError(gettext(
                    'health_orthanc.msg_query_sheet_%s' % error.code,
                    name=self._given('sheet_name') or '',
                    **error.params)) from error
        problems = [gettext('health_orthanc.msg_query_sheet_%s' % p.code,
                row=p.row, **p.params) for p in sheet.problems]
        return qp.plan_rows(sheet.rows, filters), problems

    # -- the answers --------------------------------------------------------
    @staticmethod
    def _allowed_node(node, flag, message):
        """The node given, read again: active, the flag set and readable
        by the user; a client may send any node"""
        Node = Pool().get('gnuhealth.orthanc.dicom_node')
        if not node:
            raise PacsQueryError(gettext('health_orthanc.msg_query_no_node'))
        with check_access():
            nodes = Node.search([('id', '=', node.id), (flag, '=', True)])
        if not nodes:
            with check_access(), Transaction().set_context(
                    active_test=False):
                known = Node.search([('id', '=', node.id)])
            raise PacsQueryError(gettext(message,
                    node=known[0].name if known else node.id))
        return nodes[0]

    def transition_query(self):
        Date = Pool().get('ir.date')
        node = self._allowed_node(self._given('node'), 'may_query',
            'health_orthanc.msg_query_node_not_allowed')
        queries, problems = self._plan(self._filter())
        answers, outcomes, here, failures = [], [], set(), []
        if queries:
            try:
                answers, outcomes, here, failures = find_on_node(
                    node, queries, Date.today())
            except oc.OrthancError as error:
                raise PacsQueryError(gettext(
                        'health_orthanc.msg_query_failed', node=node.name,
                        error=node.error_text(error))) from error
        skip = self._given('skip_here')
        shown = [a for a in answers if not (skip and a.study_uid in here)]
        # Each patient's studies, the newest first
        shown.sort(key=lambda a: a.study_date or datetime.date.min,
            reverse=True)
        shown.sort(key=lambda a: a.patient_id)
        notes = [gettext('health_orthanc.msg_query_found', node=node.name,
                found=len(answers), shown=len(shown),
                skipped=len(answers) - len(shown))]
        notes += failures + outcome_notes(node, outcomes) + problems
        links = answer_links(shown)
        self.answers.node = node
        self.answers.may_retrieve = bool(node.may_retrieve)
        self.answers.notes = '\n'.join(notes)
        self.answers.answers = [
            answer_values(a, links[answer_key(a)], a.study_uid in here)
            for a in shown]
        return 'answers'

    def default_answers(self, fields):
        return {
            'node': self.answers.node.id,
            'may_retrieve': self.answers.may_retrieve,
            'notes': self.answers.notes,
            'answers': [{
                    name: getattr(answer, name)
                    for name in ANSWER_FIELDS
                    } | {'patient': (
                        answer.patient.id if answer.patient else None)}
                for answer in self.answers.answers],
            }

    # -- retrieving ---------------------------------------------------------
    def transition_retrieve(self):
        Retrieval = Pool().get('gnuhealth.orthanc.retrieval')
        node = self._allowed_node(getattr(self.answers, 'node', None),
            'may_retrieve', 'health_orthanc.msg_query_retrieve_not_allowed')
        answers = getattr(self.answers, 'answers', None) or []
        uids = [a.study_uid for a in answers if a.selected and a.study_uid]
        if not uids:
            raise PacsQueryError(gettext(
                    'health_orthanc.msg_query_nothing_ticked'))
        # The client sends the whole page: only the UIDs are taken, what
        # the node answers for them is recorded when the task asks it
        self.answers.retrieval = Retrieval.request_studies(node,
            [StudyAnswer(study_uid=u) for u in dict.fromkeys(uids)])
        return 'open_retrieval'

    def do_open_retrieval(self, action):
        action['pyson_domain'] = PYSONEncoder().encode([
                ('id', '=', self.answers.retrieval.id)])
        action['views'].reverse()
        return action, {'res_id': [self.answers.retrieval.id]}


ANSWER_FIELDS = [
    'selected', 'study_uid', 'patient_id', 'patient_name', 'birth_date',
    'study_date', 'modalities', 'description', 'accession', 'series_count',
    'instance_count', 'link', 'already_here']


def answer_values(answer, link, here):
    "The values of a row of the answers"
    patient, state = link
    return {
        'selected': not here,
        'study_uid': answer.study_uid,
        'patient_id': answer.patient_id,
        'patient_name': format_person_name(answer.patient_name),
        'birth_date': answer.birth_date,
        'study_date': answer.study_date,
        'modalities': ', '.join(answer.modalities),
        'description': answer.description,
        'accession': answer.accession,
        'series_count': answer.series_count,
        'instance_count': answer.instance_count,
        'patient': patient,
        'link': state,
        'already_here': here,
        }


def day_first():
    "Whether the user's language writes the day before the month"
    Lang = Pool().get('ir.lang')
    return not Lang.get().date.lstrip('%').startswith('m')
