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

from . import orthanc_client as oc
from .server import error_message
from .upload_files import (
    ALREADY_STORED, FAILED, MAX_RATIO, MAX_SIZE, REASONS, REJECTED,
    SEND_FAILED, STATUSES, STORED, count_statuses, upload_files)
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
        domain=[('validated', '=', True)],
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
        servers = Server.search([('validated', '=', True)], limit=2)
        if len(servers) == 1:
            return {'server': servers[0].id}
        return {}

    def transition_upload(self):
        Server = Pool().get('gnuhealth.orthanc.config')
        server = self.start.server
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
