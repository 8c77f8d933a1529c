# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The audit of what was done with patients' images: who linked, attached,
uploaded, deleted, and changed how GNU Health reaches Orthanc."""
import datetime
from collections import defaultdict

from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.model.exceptions import AccessError
from trytond.modules.health.core import get_health_professional
from trytond.pool import Pool
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access

ACTIONS = [
    ('patient_link', "Linked by Hand"),
    ('patient_unlink', "Unlinked by Hand"),
    ('patient_relink', "Linked Automatically Again"),
    ('request_link', "Request Link Changed by Hand"),
    ('result_attach', "Attached to a Result"),
    ('result_detach', "Removed from a Result"),
    ('result_attach_matching', "Attached by Order Matching"),
    ('result_detach_matching', "Removed by Order Matching"),
    ('upload', "Uploaded"),
    ('orthanc_delete', "Deleted from Orthanc"),
    ('orthanc_not_deleted', "Not Deleted from Orthanc"),
    ('server_create', "Server Added"),
    ('server_change', "Server Connection Changed"),
    ('server_delete', "Server Deleted"),
    ('research_enrol', "Enrolled in a Research Project"),
    ('research_enrol_delete', "Enrolment Deleted"),
    ('research_withdraw', "Consent Withdrawn"),
    ('research_copy', "Copied to a Research Project"),
    ('research_copy_failed', "Research Copy Failed"),
    ('research_copy_delete', "Deleted from the Research Orthanc"),
    ('research_copy_not_deleted', "Not Deleted from the Research Orthanc"),
    ('pacs_query', "Queried"),
    ('pacs_retrieve', "Retrieved"),
    ('report_store', "Report Stored in Study"),
    ('report_delete', "Report Deleted from Study"),
    ]
#: Entries read by the Orthanc administrators only: they name the
#: server's user, which only they read
SERVER_ACTIONS = ['server_create', 'server_change', 'server_delete']
#: Entries read by the Imaging Research Managers only: they link a
#: patient to a pseudonym
RESEARCH_ACTIONS = [a for a, _ in ACTIONS if a.startswith('research_')]
RECORD_MODELS = [
    (None, ''),
    ('gnuhealth.orthanc.config', "Orthanc Server"),
    ('gnuhealth.orthanc.patient', "Orthanc Patient"),
    ('gnuhealth.orthanc.study', "Orthanc Study"),
    ('gnuhealth.imaging.research.subject', "Research Subject"),
    ('gnuhealth.imaging.research.copy', "Research Copy"),
    ('gnuhealth.orthanc.dicom_node', "DICOM Node"),
    ('gnuhealth.orthanc.retrieval', "PACS Retrieval"),
    ]
#: The models whose Audit tab lists the entries of a field of the entry
ENTRIES_BY_FIELD = {
    'gnuhealth.imaging.test.result': 'result',
    'gnuhealth.imaging.research.project': 'project',
    }
#: How GNU Health and the browsers reach a server: every change is
#: recorded, the password's value never
SERVER_FIELDS = [
    'label', 'domain', 'user', 'password', 'verify_tls', 'ca_bundle',
    'public_url']
PATIENT_LINK_FIELDS = ['patient', 'link_state']
REQUEST_LINK_FIELDS = ['request', 'request_link', 'request_candidate']
#: The context key of the order matching's changes to results' studies;
#: Tryton removes the keys starting with _ from RPC calls
MATCHING = '_orthanc_matching'


class AuditMixin:
    "The audit entries of a record, for its Audit tab"
    __slots__ = ()

    audit = fields.Function(fields.One2Many(
            'gnuhealth.orthanc.audit', None, "Audit", readonly=True,
            help="Who did what with these images, and when."),
        'get_audit')

    @classmethod
    def get_audit(cls, records, name):
        return Pool().get('gnuhealth.orthanc.audit').entries_of(records)


class OrthancAudit(ModelSQL, ModelView):
    "Orthanc Audit Entry"
    __name__ = 'gnuhealth.orthanc.audit'
    _rec_name = 'record_name'

    date = fields.DateTime("Date", readonly=True)
    user = fields.Many2One(
        'res.user', "User", readonly=True, ondelete='RESTRICT')
    healthprof = fields.Many2One(
        'gnuhealth.healthprofessional', "Health Professional", readonly=True,
        ondelete='RESTRICT',
        help="The health professional of the user, if the user is one.")
    action = fields.Selection(ACTIONS, "Action", readonly=True)
    record = fields.Reference(
        "Record", RECORD_MODELS, readonly=True,
        help="The record acted on (it may have been deleted since).")
    record_name = fields.Char(
        "Record Name", readonly=True,
        help="The name of the record at the time.")
    server = fields.Many2One(
        'gnuhealth.orthanc.config', "Server", readonly=True,
        ondelete='SET NULL')
    orthanc_id = fields.Char(
        "Orthanc ID", readonly=True,
        help="Orthanc's identifier of the patient or study concerned.")
    patient = fields.Many2One(
        'gnuhealth.patient', "Patient", readonly=True, ondelete='SET NULL',
        help="The patient whose images were concerned: for a link, the "
        "new patient, or the former one when unlinked.")
    result = fields.Many2One(
        'gnuhealth.imaging.test.result', "Result", readonly=True,
        ondelete='SET NULL')
    description = fields.Text("Description", readonly=True)
    project = fields.Many2One(
        'gnuhealth.imaging.research.project', "Research Project",
        readonly=True, ondelete='SET NULL')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('date', 'DESC'), ('id', 'DESC')]
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t, (t.patient, Index.Range())),
                Index(t, (t.result, Index.Range())),
                Index(t, (t.project, Index.Range())),
                Index(t, (t.record, Index.Equality())),
                Index(t,
                    (t.server, Index.Range()),
                    (t.orthanc_id, Index.Equality())),
                Index(t, (t.date, Index.Range())),
                })

    @classmethod
    def search(cls, domain, *args, **kwargs):
        transaction = Transaction()
        if transaction.user and transaction.check_access:
            # Tryton checks the field access of dotted names, not inside
            # a nested where: none reaches the server's password this way
            _refuse_where(domain)
        return super().search(domain, *args, **kwargs)

    @classmethod
    def add(cls, vlist):
        """Create the entries of one action in one create, stamped with the
        time and the user (and the user's health professional)"""
        if not vlist:
            return []
        stamp = {
            'date': datetime.datetime.now(),
            'user': Transaction().user,
            'healthprof': get_health_professional(required=False),
            }
        with without_check_access():
            return cls.create([dict(stamp, **v) for v in vlist])

    @classmethod
    def entries_of(cls, records):
        "Return {record id: [entry ids]}, the newest first"
        result = {r.id: [] for r in records}
        if not records:
            return result
        model = records[0].__name__
        if model in ENTRIES_BY_FIELD:
            name = ENTRIES_BY_FIELD[model]
            for sub_ids in grouped_slice(list(result)):
                for entry in cls.search([(name, 'in', list(sub_ids))]):
                    result[getattr(entry, name).id].append(entry.id)
        elif model in {'gnuhealth.orthanc.config',
                'gnuhealth.imaging.research.subject'}:
            for sub_ids in grouped_slice(list(result)):
                for entry in cls.search([('record', 'in', [
                                '%s,%s' % (model, i) for i in sub_ids])]):
                    result[entry.record.id].append(entry.id)
        else:
            # Also the entries of an upload that came before the record,
            # and of the same Orthanc resource deleted and brought back
            by_key = {(r.server.id, r.orthanc_id): r.id for r in records}
            servers = defaultdict(list)
            for server, orthanc_id in by_key:
                servers[server].append(orthanc_id)
            for server, orthanc_ids in servers.items():
                for sub_ids in grouped_slice(orthanc_ids):
                    for entry in cls.search([
                                ('server', '=', server),
                                ('orthanc_id', 'in', list(sub_ids)),
                                ]):
                        result[by_key[server, entry.orthanc_id]].append(
                            entry.id)
        return result

    # -- Orthanc patients ---------------------------------------------------
    @classmethod
    def links_of(cls, orthanc_patients):
        "Return {id: (patient, link state)} to give to patients_linked"
        return {p.id: (p.patient, p.link_state) for p in orthanc_patients}

    @classmethod
    def patients_linked(cls, orthanc_patients, before, relink=False):
        """Record the Orthanc patients whose link changed since before
        (links_of): set or cleared by hand, or by the rule again"""
        OrthancPatient = Pool().get('gnuhealth.orthanc.patient')
        vlist = []
        for patient in OrthancPatient.browse(list(before)):
            old = before[patient.id]
            if old == (patient.patient, patient.link_state):
                continue
            if relink:
                action = 'patient_relink'
            else:
                action = 'patient_link' if patient.patient else (
                    'patient_unlink')
            concerned = patient.patient or old[0]
            vlist.append(dict(cls._resource_values(patient),
                    action=action,
                    patient=concerned.id if concerned else None,
                    description=cls._changes(patient,
                        dict(zip(PATIENT_LINK_FIELDS, old)),
                        PATIENT_LINK_FIELDS)))
        return cls.add(vlist)

    # -- Orthanc studies ----------------------------------------------------
    @classmethod
    def request_links_of(cls, studies):
        "Return {id: {field: value}} to give to requests_linked"
        return {s.id: {f: getattr(s, f) for f in REQUEST_LINK_FIELDS}
            for s in studies}

    @classmethod
    def requests_linked(cls, before):
        """Record the studies whose request link changed by hand since
        before (request_links_of)"""
        Study = Pool().get('gnuhealth.orthanc.study')
        vlist = []
        for study in Study.browse(list(before)):
            if before[study.id] == {
                    f: getattr(study, f) for f in REQUEST_LINK_FIELDS}:
                continue
            vlist.append(dict(cls._resource_values(study),
                    action='request_link',
                    patient=study.patient.id if study.patient else None,
                    description=cls._changes(
                        study, before[study.id], REQUEST_LINK_FIELDS)))
        return cls.add(vlist)

    @classmethod
    def result_studies(cls, links, attached):
        """Record the studies attached to results (or removed from them),
        by a person or by the order matching"""
        matching = Transaction().context.get(MATCHING)
        action = 'result_%s%s' % (
            'attach' if attached else 'detach',
            '_matching' if matching else '')
        message = 'health_orthanc.msg_audit_result_%s' % (
            'attach' if attached else 'detach')
        # A result being deleted takes its studies with it: its entries
        # keep its name only
        deleting = Transaction().delete_records.get(
            'gnuhealth.imaging.test.result', set())
        vlist = []
        for link in links:
            result, study = link.result, link.study
            vlist.append(dict(cls._resource_values(study),
                    action=action,
                    result=result.id if result.id not in deleting else None,
                    patient=result.patient.id if result.patient else None,
                    description=gettext(message, study=study.rec_name,
                        result=result.rec_name,
                        patient=cls._patient_text(result.patient))))
        return cls.add(vlist)

    @classmethod
    def uploads(cls, server, received):
        """Record the studies received by an upload (one entry each).

        received is a list of dicts: orthanc_id, stored, already_stored,
        study (the record, if GNU Health has it), name (of the study),
        patient_id (DICOM PatientID), patient (the patient it is filed
        under), link (the link state) or error (why nothing is known).
        """
        Study = Pool().get('gnuhealth.orthanc.study')
        vlist = []
        for item in received:
            study = item.get('study')
            vlist.append({
                    'action': 'upload',
                    'record': (
                        '%s,%s' % (Study.__name__, study.id) if study
                        else None),
                    'record_name': item['name'],
                    'server': server.id,
                    'orthanc_id': item['orthanc_id'],
                    'patient': item.get('patient'),
                    'description': gettext('health_orthanc.msg_audit_upload',
                        stored=item['stored'],
                        already_stored=item['already_stored'],
                        study=item['name'],
                        patient_id=item.get('patient_id') or '',
                        orthanc_id=item['orthanc_id'],
                        server=server.rec_name,
                        filed=cls._filed_text(item)),
                    })
        return cls.add(vlist)

    @classmethod
    def _filed_text(cls, item):
        if item.get('error'):
            return gettext('health_orthanc.msg_audit_upload_unknown',
                error=item['error'])
        if item.get('patient'):
            Patient = Pool().get('gnuhealth.patient')
            return cls._patient_text(Patient(item['patient']))
        return gettext('health_orthanc.msg_audit_upload_unlinked',
            reason=cls._selection_text(
                'gnuhealth.orthanc.patient', 'link_state', item.get('link')))

    @classmethod
    def orthanc_deletions(cls, deleted, failures):
        """Record the studies deleted from Orthanc and those not deleted,
        with the reason ({study: message})"""
        vlist = []
        for study in deleted:
            vlist.append(dict(cls._resource_values(study),
                    action='orthanc_delete',
                    patient=study.patient.id if study.patient else None,
                    description=gettext(
                        'health_orthanc.msg_audit_orthanc_delete',
                        study=study.rec_name,
                        uid=study.study_instance_uid or '',
                        server=study.server.rec_name)))
        for study, reason in failures.items():
            vlist.append(dict(cls._resource_values(study),
                    action='orthanc_not_deleted',
                    patient=study.patient.id if study.patient else None,
                    description=reason))
        return cls.add(vlist)

    @classmethod
    def study_reports(cls, stored, deleted=()):
        "Record the reports of results stored into studies and deleted"
        vlist = []
        for action, reports in [('report_store', stored),
                ('report_delete', deleted)]:
            for report in reports:
                study, result = report.study, report.result
                vlist.append(dict(cls._resource_values(study),
                        action=action,
                        result=result.id,
                        patient=result.patient.id,
                        description=gettext(
                            'health_orthanc.msg_audit_%s' % action,
                            result=result.rec_name,
                            revision=report.revision,
                            study=study.rec_name,
                            instance=report.orthanc_id)))
        return cls.add(vlist)

    # -- servers ------------------------------------------------------------
    @classmethod
    def servers_created(cls, servers):
        return cls.add([dict(cls._server_values(s),
                    action='server_create',
                    description=cls._values_text(s, SERVER_FIELDS))
                for s in servers])

    @classmethod
    def servers_before(cls, args):
        """Return {id: {field: value}} of the servers whose connection the
        write arguments may change, to give to servers_changed; for the
        password, whether the value given differs from the value read (a
        password never shown reads the same before and after)"""
        actions = iter(args)
        before = {}
        for servers, values in zip(actions, actions):
            if not set(SERVER_FIELDS) & set(values):
                continue
            for server in servers:
                old = before.setdefault(server.id, {
                        f: getattr(server, f) for f in SERVER_FIELDS
                        if f != 'password'})
                if 'password' in values:
                    old['password'] = (values['password'] or None) != (
                        getattr(server, 'password') or None)
        return before

    @classmethod
    def servers_changed(cls, before):
        "Record the servers whose connection changed since before"
        Server = Pool().get('gnuhealth.orthanc.config')
        vlist = []
        for server in Server.browse(list(before)):
            old = before[server.id]
            changed = [f for f in SERVER_FIELDS if (
                    old.get('password') if f == 'password'
                    else (old[f] or None) != (getattr(server, f) or None))]
            if not changed:
                continue
            vlist.append(dict(cls._server_values(server),
                    action='server_change',
                    description=cls._server_changes(server, old, changed)))
        return cls.add(vlist)

    @classmethod
    def servers_deleted(cls, servers):
        return cls.add([dict(cls._server_values(s),
                    action='server_delete',
                    description=cls._values_text(
                        s, ['label'] + SERVER_FIELDS))
                for s in servers])

    @classmethod
    def _server_changes(cls, server, old, changed):
        """The names of the changed fields, then old -> new of the address,
        the user and the other changed fields; of the password only that
        it changed"""
        Field = Pool().get('ir.model.field')
        model = server.__name__
        lines = [gettext('health_orthanc.msg_audit_server_changed',
                fields=', '.join(Field.get_name(model, f) for f in changed))]
        for name in SERVER_FIELDS:
            if name == 'password':
                if name in changed:
                    lines.append(gettext(
                            'health_orthanc.msg_audit_password_changed'))
            elif name in {'domain', 'user'} or name in changed:
                lines.append(cls._change_text(
                        server, name, old[name], getattr(server, name)))
        return '\n'.join(lines)

    @classmethod
    def _server_values(cls, server):
        return {
            'record': '%s,%s' % (server.__name__, server.id),
            'record_name': server.rec_name,
            'server': server.id,
            }

    # -- texts --------------------------------------------------------------
    @classmethod
    def _resource_values(cls, record):
        "The values of an entry about an Orthanc patient or study"
        return {
            'record': '%s,%s' % (record.__name__, record.id),
            'record_name': record.rec_name,
            'server': record.server.id,
            'orthanc_id': record.orthanc_id,
            }

    @classmethod
    def _changes(cls, record, old, names):
        "Lines 'Field: old -> new' of the fields of record changed from old"
        return '\n'.join(
            cls._change_text(record, n, old[n], getattr(record, n))
            for n in names if old[n] != getattr(record, n))

    @classmethod
    def _change_text(cls, record, name, old, new):
        Field = Pool().get('ir.model.field')
        return gettext('health_orthanc.msg_audit_change',
            field=Field.get_name(record.__name__, name),
            old=cls._value_text(record, name, old),
            new=cls._value_text(record, name, new))

    @classmethod
    def _values_text(cls, record, names):
        "Lines 'Field: value' of the fields of record; never the password"
        Field = Pool().get('ir.model.field')
        lines = []
        for name in names:
            if name == 'password':
                continue
            lines.append(gettext('health_orthanc.msg_audit_value',
                    field=Field.get_name(record.__name__, name),
                    value=cls._value_text(
                        record, name, getattr(record, name))))
        return '\n'.join(lines)

    @classmethod
    def _value_text(cls, record, name, value):
        field = record._fields[name]
        if value is None or value == '':
            return gettext('health_orthanc.msg_audit_none')
        if field._type == 'boolean':
            return gettext('health_orthanc.msg_audit_%s' % (
                    'yes' if value else 'no'))
        if field._type == 'selection':
            return cls._selection_text(record.__name__, name, value)
        if name == 'patient':
            return cls._patient_text(value)
        if field._type == 'many2one':
            return value.rec_name
        return str(value)

    @classmethod
    def _selection_text(cls, model, name, value):
        Model = Pool().get(model)
        with without_check_access():
            selection = Model.fields_get([name])[name]['selection']
        return dict(selection).get(value, value or '')

    @classmethod
    def _patient_text(cls, patient):
        "The name and PUID of a GNU Health patient"
        if not patient:
            return gettext('health_orthanc.msg_audit_none')
        puid = patient.party.ref if patient.party else None
        if puid:
            return gettext('health_orthanc.msg_audit_patient',
                patient=patient.rec_name, puid=puid)
        return patient.rec_name


def _refuse_where(domain):
    "Raise AccessError on a nested where in domain"
    if not isinstance(domain, (list, tuple)) or not domain:
        return
    if isinstance(domain[0], str) and len(domain) >= 3 and domain[0] not in {
            'AND', 'OR'}:
        if domain[1] in {'where', 'not where'}:
            raise AccessError(gettext('health_orthanc.msg_audit_where'))
        return
    for clause in domain:
        _refuse_where(clause)
