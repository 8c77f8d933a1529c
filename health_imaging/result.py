# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"Imaging test results: interpretation, images and the printed report."
import datetime
import logging
import mimetypes

from sql import Null
from trytond import backend
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Unique, Workflow, fields
from trytond.modules.health.core import get_health_professional
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Bool, Eval, PYSONEncoder
from trytond.report import Report
from trytond.transaction import Transaction
from trytond.wizard import StateAction, Wizard

from .access import DomainAccessMixin, ReadonlyFieldsMixin
from .exceptions import ImagingResultError

logger = logging.getLogger(__name__)

# What the radiologist writes: frozen once the result is done
#: What a completed result signs: changed only once reset to draft
REPORT_FIELDS = {
    'comment', 'doctor', 'date', 'patient', 'requested_test', 'images'}


class ImagingTestResult(
        DomainAccessMixin, ReadonlyFieldsMixin, Workflow, ModelSQL,
        ModelView):
    "Imaging Test Result"
    __name__ = 'gnuhealth.imaging.test.result'
    _rec_name = 'number'

    _from_request = {'readonly': Bool(Eval('request'))}
    _draft = {'readonly': Eval('state') != 'draft'}

    patient = fields.Many2One(
        'gnuhealth.patient', "Patient", required=True,
        states=_from_request, ondelete='RESTRICT')
    number = fields.Char("Number", readonly=True)
    date = fields.DateTime(
        "Date", required=True, states=_draft,
        help="When the study was performed.")
    request_date = fields.DateTime("Request Date", readonly=True)
    requested_test = fields.Many2One(
        'gnuhealth.imaging.test', "Test", required=True,
        states=_from_request, ondelete='RESTRICT',
        context={'active_test': False})
    request = fields.Many2One(
        'gnuhealth.imaging.test.request', "Request", readonly=True,
        ondelete='RESTRICT')
    order = fields.Char("Order", readonly=True)
    doctor = fields.Many2One(
        'gnuhealth.healthprofessional', "Health Professional",
        states=_draft,
        help="The health professional who interprets the study.")
    comment = fields.Text("Interpretation", states=_draft)
    images = fields.One2Many('ir.attachment', 'resource', "Images")
    state = fields.Selection([
            ('draft', "Draft"),
            ('done', "Done"),
            ], "State", readonly=True, required=True,
        help="Draft while the interpretation is written; done once the "
        "health professional completed it.")
    state_string = state.translated('state')
    completed_date = fields.DateTime(
        "Completed", readonly=True,
        help="When the result was last completed (the Complete button).")
    del _from_request, _draft

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('request_uniq', Unique(t, t.request),
                'health_imaging.msg_result_request_unique'),
            ]
        cls._sql_indexes.add(
            Index(t, (t.completed_date, Index.Range())))
        cls._order = [
            ('date', 'DESC'),
            ('number', 'DESC'),
            ('id', 'DESC'),
            ]
        cls._transitions |= {
            ('draft', 'done'),
            ('done', 'draft'),
            }
        cls._buttons.update({
                'complete': {
                    'invisible': Eval('state') != 'draft',
                    'icon': 'tryton-ok',
                    'depends': ['state'],
                    },
                'draft': {
                    'invisible': Eval('state') != 'done',
                    'icon': 'tryton-undo',
                    'depends': ['state'],
                    },
                })

    @classmethod
    def __register__(cls, module_name):
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        # GNU Health's own results have no state
        legacy = backend.TableHandler.table_exist(cls._table) and not (
            cls.__table_handler__(module_name).column_exist('state'))
        super().__register__(module_name)
        if legacy:
            # A written interpretation was the report
            cursor.execute(*table.update([table.state], ['done'],
                    where=(table.comment != Null) & (table.comment != '')))

    @staticmethod
    def default_state():
        return 'draft'

    @staticmethod
    def default_date():
        return datetime.datetime.now()

    @staticmethod
    def default_doctor():
        return get_health_professional(required=False)

    @classmethod
    def values_from_request(cls, request):
        "Return the values of a new result for the request"
        return {
            'patient': request.patient.id,
            'request': request.id,
            'request_date': request.date,
            'requested_test': request.requested_test.id,
            'order': request.request,
            }

    @classmethod
    def create(cls, vlist):
        pool = Pool()
        Sequences = pool.get('gnuhealth.sequences')
        vlist = [v.copy() for v in vlist]
        for values in vlist:
            if not values.get('number'):
                values['number'] = Sequences.get_imaging_number(
                    'imaging_sequence')
        return super().create(vlist)

    @classmethod
    def write(cls, *args):
        actions = iter(args)
        for results, values in zip(actions, actions):
            if REPORT_FIELDS.intersection(values):
                for result in results:
                    if result.state != 'draft':
                        raise ImagingResultError(gettext(
                                'health_imaging.msg_result_modify_done',
                                result=result.rec_name))
        super().write(*args)

    @classmethod
    def validate(cls, results):
        super().validate(results)
        for result in results:
            result.check_request_patient()

    def check_request_patient(self):
        "A result reads the images of its request's patient and test only"
        if not self.request:
            return
        if self.patient != self.request.patient:
            raise ImagingResultError(gettext(
                    'health_imaging.msg_result_patient_request',
                    result=self.rec_name, request=self.request.rec_name,
                    patient=self.request.patient.rec_name))
        if self.requested_test != self.request.requested_test:
            raise ImagingResultError(gettext(
                    'health_imaging.msg_result_test_request',
                    result=self.rec_name, request=self.request.rec_name,
                    test=self.request.requested_test.rec_name))

    @classmethod
    @ModelView.button
    @Workflow.transition('draft')
    def draft(cls, results):
        cls.write(results, {'completed_date': None})

    @classmethod
    @ModelView.button
    @Workflow.transition('done')
    def complete(cls, results):
        for result in results:
            if not (result.comment or '').strip():
                raise ImagingResultError(gettext(
                        'health_imaging.msg_result_complete_empty',
                        result=result.rec_name))
        cls.write(results, {'completed_date': datetime.datetime.now()})
        doctor = get_health_professional(required=False)
        if doctor:
            without = [r for r in results if not r.doctor]
            if without:
                cls.write(without, {'doctor': doctor})

    @classmethod
    def copy(cls, results, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('state', 'draft')
        default.setdefault('number')
        default.setdefault('completed_date')
        default.setdefault('request')
        default.setdefault('images')
        return super().copy(results, default=default)

    def get_images(self):
        "Return (data, mimetype) of each attached image, for the report"
        images = []
        for attachment in self.images:
            mimetype, _ = mimetypes.guess_type(attachment.name or '')
            if attachment.type == 'data' and attachment.data and (
                    mimetype or '').startswith('image/'):
                images.append((attachment.data, mimetype))
        return images


class GenerateResults(Wizard):
    "Generate Imaging Results"
    __name__ = 'gnuhealth.imaging.test.request.generate_results'

    start_state = 'open_'
    open_ = StateAction('health_imaging.act_imaging_test_result_form')

    def do_open_(self, action):
        Request = Pool().get('gnuhealth.imaging.test.request')
        results = Request.create_results(self.records)
        action['pyson_domain'] = PYSONEncoder().encode(
            [('id', 'in', [r.id for r in results])])
        return action, {}

    def transition_open_(self):
        return 'end'


class ImagingResultReport(Report):
    __name__ = 'gnuhealth.imaging.test.result.report'

    @classmethod
    def convert(cls, report, data, **kwargs):
        """Convert to the report's output format through LibreOffice, or
        keep the OpenDocument text where LibreOffice is not installed
        (trytond would fail the printing)"""
        try:
            return super().convert(report, data, **kwargs)
        except FileNotFoundError:
            logger.warning("LibreOffice (soffice) is not installed: %s "
                "printed as %s, not %s", cls.__name__,
                report.template_extension, report.extension)
            return report.template_extension, data


class Attachment(metaclass=PoolMeta):
    __name__ = 'ir.attachment'

    @classmethod
    def create(cls, vlist):
        cls._check_result_draft([v.get('resource') for v in vlist])
        return super().create(vlist)

    @classmethod
    def write(cls, *args):
        actions = iter(args)
        resources = []
        for attachments, values in zip(actions, actions):
            resources.extend(a.resource for a in attachments)
            resources.append(values.get('resource'))
        cls._check_result_draft(resources)
        super().write(*args)

    @classmethod
    def delete(cls, attachments):
        cls._check_result_draft([a.resource for a in attachments])
        super().delete(attachments)

    @classmethod
    def _check_result_draft(cls, resources):
        "The images of a completed result are signed with it"
        Result = Pool().get('gnuhealth.imaging.test.result')
        ids = set()
        for resource in resources:
            if isinstance(resource, str):
                model, _, id_ = resource.partition(',')
                if model == Result.__name__ and id_.lstrip('-').isdigit():
                    ids.add(int(id_))
            elif isinstance(resource, Result):
                ids.add(resource.id)
        for result in Result.browse([i for i in ids if i >= 0]):
            if result.state != 'draft':
                raise ImagingResultError(gettext(
                        'health_imaging.msg_result_modify_done',
                        result=result.rec_name))
