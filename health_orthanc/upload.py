# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"The Upload DICOM Files wizard: send files to an Orthanc server, sync it."
import io
import logging

from trytond.config import config
from trytond.i18n import gettext
from trytond.model import ModelView, fields
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from . import linking
from . import orthanc_client as oc
from .exceptions import OrthancResourceError
from .mapping import MappingError, map_patient, map_study
from .patient import KEPT_LINKS
from .server import error_message
from .upload_files import (
    ALREADY_STORED, FAILED, MAX_RATIO, MAX_SIZE, REASONS, REJECTED,
    SEND_FAILED, STATUSES, STORED, count_statuses, studies_received,
    upload_files)
from .viewer import format_plugins

logger = logging.getLogger(__name__)

STATUS_SELECTION = [
    (STORED, "Stored"),
    (ALREADY_STORED, "Already Stored"),
    (REJECTED, "Rejected"),
    (FAILED, "Failed"),
    ]


def upload_limits():
    "Return the largest file and the highest zip ratio sent to Orthanc"
    return {
        'max_size': config.getint(
            'health_orthanc', 'upload_member_max_size', default=MAX_SIZE),
        'max_ratio': config.getfloat(
            'health_orthanc', 'upload_max_ratio', default=MAX_RATIO),
        }


def reason_text(result, domain):
    "Return the user message of why the file of result was not stored"
    if not result.reason:
        return ''
    if result.reason == SEND_FAILED and result.error is not None:
        # The words of the server's errors, without its credentials
        return error_message(result.error, domain)
    assert result.reason in REASONS, result.reason
    return gettext('health_orthanc.msg_upload_%s' % result.reason,
        **result.params)


class UploadStart(ModelView):
    "Upload DICOM Files"
    __name__ = 'gnuhealth.orthanc.upload.start'

    server = fields.Many2One(
        'gnuhealth.orthanc.config', "Server", required=True,
        domain=[('validated', '=', True), ('research', '=', False)],
        help="The Orthanc server that receives the files.")
    files = fields.One2Many(
        'gnuhealth.orthanc.upload.file', None, "Files",
        help="DICOM files, or zip files of DICOM files.")


class UploadFile(ModelView):
    "Upload DICOM File"
    __name__ = 'gnuhealth.orthanc.upload.file'

    file_name = fields.Char("File Name")
    data = fields.Binary("File", filename='file_name', required=True)


class UploadResult(ModelView):
    "Upload DICOM Files Result"
    __name__ = 'gnuhealth.orthanc.upload.result'

    message = fields.Text("Message", readonly=True)
    server = fields.Many2One(
        'gnuhealth.orthanc.config', "Server", readonly=True)
    stored = fields.Integer("Stored", readonly=True)
    already_stored = fields.Integer("Already Stored", readonly=True)
    rejected = fields.Integer("Rejected", readonly=True)
    failed = fields.Integer("Failed", readonly=True)
    studies = fields.Many2Many(
        'gnuhealth.orthanc.study', None, None, "Studies", readonly=True)
    lines = fields.One2Many(
        'gnuhealth.orthanc.upload.result.line', None, "Files",
        readonly=True)


class UploadResultLine(ModelView):
    "Upload DICOM Files Result Line"
    __name__ = 'gnuhealth.orthanc.upload.result.line'

    file_name = fields.Char("File", readonly=True)
    status = fields.Selection(STATUS_SELECTION, "Status", readonly=True)
    detail = fields.Char(
        "Detail", readonly=True,
        states={'invisible': ~Eval('detail')})
    orthanc_study = fields.Char("Orthanc Study", readonly=True)


class Upload(Wizard):
    "Upload DICOM Files"
    __name__ = 'gnuhealth.orthanc.upload'

    start = StateView(
        'gnuhealth.orthanc.upload.start',
        'health_orthanc.upload_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Upload", 'upload', 'tryton-ok', default=True),
            ])
    upload = StateTransition()
    result = StateView(
        'gnuhealth.orthanc.upload.result',
        'health_orthanc.upload_result_view_form', [
            Button("Close", 'end', 'tryton-close', default=True),
            ])

    def default_start(self, fields):
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        context = Transaction().context
        if context.get('active_model') == Server.__name__ \
                and context.get('active_id'):
            return {'server': context['active_id']}
        servers = Server.search(
            [('validated', '=', True), ('research', '=', False)], limit=2)
        if len(servers) == 1:
            return {'server': servers[0].id}
        return {}

    def transition_upload(self):
        Server = Pool().get('gnuhealth.orthanc.config')
        server = self.start.server
        if server.research:
            raise OrthancResourceError(gettext(
                    'health_orthanc.msg_upload_research',
                    server=server.rec_name))
        files = [(f.file_name, io.BytesIO(f.data))
            for f in (self.start.files or []) if f.data is not None]
        # Not kept in the wizard session once sent
        self.start.files = []
        with server.get_client() as client:
            results = upload_files(client, files, **upload_limits())
            try:
                plugins = format_plugins(client.plugins())
            except oc.OrthancError:
                plugins = None
            self._record_uploads(client, server, results)
        counts = count_statuses(results)
        logger.info("Upload to Orthanc server %s: %s", server.label, counts)
        messages = [gettext('health_orthanc.msg_upload_done',
                label=server.label, **counts)]
        if counts[STORED] or counts[ALREADY_STORED]:
            if plugins is not None:
                with without_check_access():
                    Server.write([server], {'plugins': plugins})
            # The new studies come with a sync queued after the commit
            Server.sync([server])
            messages.append(gettext(
                    'health_orthanc.msg_upload_sync_queued',
                    label=server.label))
        elif counts[FAILED]:
            failed = next(r for r in results if r.status == FAILED)
            messages.append(reason_text(failed, server.domain))
        self.result.message = '\n'.join(messages)
        self.result.server = server
        for status in STATUSES:
            setattr(self.result, status, counts[status])
        self.result.lines = [{
                'file_name': r.name,
                'status': r.status,
                'detail': reason_text(r, server.domain),
                'orthanc_study': r.study,
                } for r in results]
        return 'result'

    @classmethod
    def _record_uploads(cls, client, server, results):
        "Record who uploaded each study received, and under whom it is filed"
        Audit = Pool().get('gnuhealth.orthanc.audit')
        received = studies_received(results)
        if received:
            with without_check_access():
                Audit.uploads(server, cls._received(client, server, received))

    @classmethod
    def _received(cls, client, server, received):
        """Return the audit values of each study received ({Orthanc ID:
        counts}): as GNU Health has it, else as Orthanc describes it, with
        the patient the sync files it under"""
        Study = Pool().get('gnuhealth.orthanc.study')
        known = {s.orthanc_id: s for s in Study.browse(
                Study.orthanc_ids(server, list(received)).values())}
        items = []
        for orthanc_id, counts in received.items():
            item = {
                'orthanc_id': orthanc_id,
                'stored': counts[STORED],
                'already_stored': counts[ALREADY_STORED],
                }
            study = known.get(orthanc_id)
            if study:
                item.update(study=study, name=study.rec_name,
                    patient_id=study.patient_id,
                    patient=study.patient.id if study.patient else None,
                    link=getattr(study.orthanc_patient, 'link_state', None))
            else:
                item.update(cls._describe(client, orthanc_id))
            items.append(item)
        cls._file_new([i for i in items if 'orthanc_patient' in i], server)
        return items

    @staticmethod
    def _describe(client, orthanc_id):
        "Return what Orthanc tells of a study new to GNU Health"
        Study = Pool().get('gnuhealth.orthanc.study')
        try:
            data = client.get_study(orthanc_id)
            study = map_study(data)
            patient = map_patient({
                    'ID': study['orthanc_patient_id'],
                    'MainDicomTags': data.get('PatientMainDicomTags'),
                    })
        except (oc.OrthancError, MappingError) as exception:
            return {'name': orthanc_id, 'error': str(exception)}
        name = Study(study_date=study['study_date'],
            description=study['description'], modalities=None,
            patient_id=study['patient_id']).get_rec_name(None)
        return {
            'name': name,
            'patient_id': study['patient_id'],
            'orthanc_patient': study['orthanc_patient_id'],
            'birth_date': patient['birth_date'],
            }

    @staticmethod
    def _file_new(items, server):
        """Set the patient and link under which the sync files the new
        studies, by the rule it applies (linking.upload_link)"""
        OrthancPatient = Pool().get('gnuhealth.orthanc.patient')
        if not items:
            return
        parents = OrthancPatient.browse(OrthancPatient.orthanc_ids(
                server, {i['orthanc_patient'] for i in items}).values())
        parents = {p.orthanc_id: p for p in parents}
        identifiers = {i['orthanc_id']: linking.normalize_identifier(
                i['patient_id']) for i in items}
        candidates = OrthancPatient.local_candidates(
            set(identifiers.values()) - {None})
        for item in items:
            parent = parents.get(item['orthanc_patient'])
            current = (getattr(parent.patient, 'id', None),
                parent.link_state) if parent else None
            identifier = identifiers[item['orthanc_id']]
            item['patient'], item['link'] = linking.upload_link(
                current, bool(parent) and parent.link_state in KEPT_LINKS,
                candidates.get(identifier, []), item['birth_date'],
                identifier)

    def default_result(self, fields):
        Study = Pool().get('gnuhealth.orthanc.study')
        # Those already in GNU Health: the sync brings the others
        studies = Study.orthanc_ids(self.result.server,
            {l.orthanc_study for l in self.result.lines if l.orthanc_study})
        values = {
            'message': self.result.message,
            'server': self.result.server.id,
            'studies': sorted(studies.values()),
            'lines': [{
                    'file_name': line.file_name,
                    'status': line.status,
                    'detail': line.detail,
                    'orthanc_study': line.orthanc_study,
                    } for line in self.result.lines],
            }
        for status in STATUSES:
            values[status] = getattr(self.result, status)
        return values
