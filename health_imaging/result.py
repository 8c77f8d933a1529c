# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"Imaging test results: interpretation, images and the printed report."
import datetime
import mimetypes

from trytond.model import ModelSQL, ModelView, Unique, fields
from trytond.modules.health.core import get_health_professional
from trytond.pool import Pool
from trytond.pyson import Bool, Eval, PYSONEncoder
from trytond.report import Report
from trytond.wizard import StateAction, Wizard


class ImagingTestResult(ModelSQL, ModelView):
    "Imaging Test Result"
    __name__ = 'gnuhealth.imaging.test.result'
    _rec_name = 'number'

    _from_request = {'readonly': Bool(Eval('request'))}

    patient = fields.Many2One(
        'gnuhealth.patient', "Patient", required=True,
        states=_from_request, ondelete='RESTRICT')
    number = fields.Char("Number", readonly=True)
    date = fields.DateTime(
        "Date", required=True, help="When the study was performed.")
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
        help="The health professional who interprets the study.")
    comment = fields.Text("Interpretation")
    images = fields.One2Many('ir.attachment', 'resource', "Images")
    del _from_request

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('request_uniq', Unique(t, t.request),
                'health_imaging.msg_result_request_unique'),
            ]
        cls._order = [
            ('date', 'DESC'),
            ('number', 'DESC'),
            ('id', 'DESC'),
            ]

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
    def copy(cls, results, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('number')
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
