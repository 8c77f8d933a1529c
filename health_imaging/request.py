# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"Imaging test requests (orders) and the wizard that creates them."
import datetime
import uuid
from collections import defaultdict

from sql import Null
from trytond import backend
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Unique, Workflow, fields
from trytond.modules.health.core import get_health_professional
from trytond.pool import Pool
from trytond.pyson import Eval, If
from trytond.transaction import Transaction
from trytond.wizard import Button, StateTransition, StateView, Wizard

from . import upgrade
from .access import DomainAccessMixin, ReadonlyFieldsMixin
from .exceptions import ImagingRequestError
from .tools import search_in

STATES = [
    ('draft', "Draft"),
    ('requested', "Requested"),
    ('done', "Done"),
    ('cancelled', "Cancelled"),
    ]


def current_health_professional():
    """Return the id of the user's health professional or None.

    Ordering must work for users who are not health professionals (an
    administrator, a clerk entering paper orders): they pick one by hand.
    """
    return get_health_professional(required=False)


#: DICOM SH, the value representation of the AccessionNumber
ACCESSION_SIZE = 16


def accession_number(order, position):
    """Return the accession number of the test at position (from 1) of
    an order.

    The first test of an order takes the order number, the next ones the
    order number followed by "-2", "-3"...; the beginning of the order
    number (its constant prefix) is cut to fit DICOM's 16 characters.
    """
    suffix = '-%d' % position if position > 1 else ''
    return (order or '')[-(ACCESSION_SIZE - len(suffix)):] + suffix


def new_study_instance_uid():
    "Return a new StudyInstanceUID (a UUID-derived 2.25 UID)"
    return '2.25.%d' % uuid.uuid4().int


# What a clinician ordered: frozen once the request left draft
DRAFT_FIELDS = {
    'patient', 'date', 'requested_test', 'doctor', 'context', 'urgent'}


class ImagingTestRequest(
        DomainAccessMixin, ReadonlyFieldsMixin, Workflow, ModelSQL,
        ModelView):
    "Imaging Test Request"
    __name__ = 'gnuhealth.imaging.test.request'
    _rec_name = 'request'

    _draft = {'readonly': Eval('state') != 'draft'}

    patient = fields.Many2One(
        'gnuhealth.patient', "Patient", required=True, states=_draft,
        ondelete='RESTRICT')
    date = fields.DateTime("Date", required=True, states=_draft)
    requested_test = fields.Many2One(
        'gnuhealth.imaging.test', "Test", required=True, states=_draft,
        ondelete='RESTRICT',
        context={'active_test': False},
        domain=[If(Eval('state') == 'draft', ('active', '=', True), ())])
    doctor = fields.Many2One(
        'gnuhealth.healthprofessional', "Doctor", states=_draft,
        help="The health professional who requested the test.")
    context = fields.Many2One(
        'gnuhealth.pathology', "Context", states=_draft,
        help="The health condition that motivates the request.")
    state = fields.Selection(STATES, "State", readonly=True, required=True)
    state_string = state.translated('state')
    request = fields.Char(
        "Order", readonly=True,
        help="The order number, shared by all the tests ordered together.")
    request_line = fields.Char(
        "Order Line", readonly=True,
        help="The order number, the number of tests in the order and the "
        "position of this test in it.")
    urgent = fields.Boolean("Urgent", states=_draft)
    comment = fields.Text("Comment", states={
            'readonly': Eval('state').in_(['done', 'cancelled']),
            })
    results = fields.One2Many(
        'gnuhealth.imaging.test.result', 'request', "Results", readonly=True)
    accession_number = fields.Char(
        "Accession Number", readonly=True, size=ACCESSION_SIZE,
        help="The number of this test for the imaging devices, given when "
        "it is requested: the order number, followed by the position of "
        "the test when the order has several.")
    study_instance_uid = fields.Char(
        "StudyInstanceUID", readonly=True,
        help="The DICOM identifier given to the study of this test when "
        "it is requested.")
    requested_date = fields.DateTime(
        "Requested", readonly=True,
        help="When the request was sent to the imaging department "
        "(the Request button).")
    performed_date = fields.DateTime(
        "Performed", readonly=True,
        help="When the study was performed, from the images received.")
    del _draft

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('accession_number_uniq', Unique(t, t.accession_number),
                'health_imaging.msg_request_accession_unique'),
            ('study_instance_uid_uniq', Unique(t, t.study_instance_uid),
                'health_imaging.msg_request_study_uid_unique'),
            ]
        cls._sql_indexes.add(Index(
                t, (t.state, Index.Equality()),
                where=t.state.in_(['draft', 'requested'])))
        cls._order = [
            ('date', 'DESC'),
            ('request', 'DESC'),
            ('id', 'DESC'),
            ]
        cls._transitions |= {
            ('draft', 'requested'),
            ('requested', 'done'),
            ('draft', 'cancelled'),
            ('requested', 'cancelled'),
            ('cancelled', 'draft'),
            }
        cls._buttons.update({
                'cancel': {
                    'invisible': ~Eval('state').in_(['draft', 'requested']),
                    'depends': ['state'],
                    },
                'draft': {
                    'invisible': Eval('state') != 'cancelled',
                    'icon': 'tryton-undo',
                    'depends': ['state'],
                    },
                'requested': {
                    'invisible': Eval('state') != 'draft',
                    'icon': 'tryton-forward',
                    'depends': ['state'],
                    },
                'generate_results': {
                    'invisible': Eval('state') != 'requested',
                    'icon': 'tryton-launch',
                    'depends': ['state'],
                    },
                })

    @classmethod
    def __register__(cls, module_name):
        # GNU Health's own requests have no DICOM identifiers
        legacy = backend.TableHandler.table_exist(cls._table) and not (
            cls.__table_handler__(module_name).column_exist(
                'accession_number'))
        super().__register__(module_name)
        upgrade.rename_legacy_xml_ids(module_name, 'ir.model.button')
        if legacy:
            cls._migrate_dicom_identifiers()

    @classmethod
    def _migrate_dicom_identifiers(cls):
        "Give the requested tests the identifiers that requesting gives"
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(table.id, table.request, table.state,
                where=table.request != Null, order_by=[table.id.asc]))
        orders = defaultdict(list)
        for id_, order, state in cursor.fetchall():
            orders[order].append((id_, state))
        used = set()
        for order, requests in orders.items():
            for position, (id_, state) in enumerate(requests, 1):
                number = accession_number(order, position)
                # Two orders cut to the same 16 characters keep none
                if state != 'requested' or number in used:
                    continue
                used.add(number)
                cursor.execute(*table.update(
                        [table.accession_number, table.study_instance_uid],
                        [number, new_study_instance_uid()],
                        where=table.id == id_))

    @staticmethod
    def default_state():
        return 'draft'

    @staticmethod
    def default_date():
        return datetime.datetime.now()

    @staticmethod
    def default_urgent():
        return False

    @staticmethod
    def default_doctor():
        return current_health_professional()

    def get_rec_name(self, name):
        return '%s - %s' % (self.request or '', self.requested_test.rec_name)

    @classmethod
    def search_rec_name(cls, name, clause):
        return search_in(clause, ['request', 'requested_test', 'patient'])

    @classmethod
    def create(cls, vlist):
        pool = Pool()
        Sequences = pool.get('gnuhealth.sequences')
        vlist = [v.copy() for v in vlist]
        for values in vlist:
            # Tests ordered together share the number the wizard gives
            if not values.get('request'):
                values['request'] = Sequences.get_imaging_number(
                    'imaging_req_seq')
        return super().create(vlist)

    @classmethod
    def write(cls, *args):
        actions = iter(args)
        for requests, values in zip(actions, actions):
            if DRAFT_FIELDS.intersection(values):
                for request in requests:
                    if request.state != 'draft':
                        raise ImagingRequestError(gettext(
                                'health_imaging.msg_request_modify_not_draft',
                                request=request.rec_name))
            if 'comment' in values:
                for request in requests:
                    if request.state in {'done', 'cancelled'}:
                        raise ImagingRequestError(gettext(
                                'health_imaging.msg_request_comment_closed',
                                request=request.rec_name,
                                state=request.state_string))
        super().write(*args)

    @classmethod
    def copy(cls, requests, default=None):
        default = default.copy() if default is not None else {}
        default.setdefault('request')
        default.setdefault('request_line')
        default.setdefault('results')
        default.setdefault('state', 'draft')
        default.setdefault('accession_number')
        default.setdefault('study_instance_uid')
        default.setdefault('requested_date')
        default.setdefault('performed_date')
        return super().copy(requests, default=default)

    @classmethod
    def delete(cls, requests):
        for request in requests:
            if request.state not in {'draft', 'cancelled'}:
                raise ImagingRequestError(gettext(
                        'health_imaging.msg_request_delete_draft',
                        request=request.rec_name))
        super().delete(requests)

    @classmethod
    @ModelView.button
    @Workflow.transition('draft')
    def draft(cls, requests):
        # Back from cancelled, the patient and the test can change: the
        # identifiers given to the modalities are given again when it is
        # requested, never reused for another patient or exam
        cls.write(requests, {
                'accession_number': None,
                'study_instance_uid': None,
                'performed_date': None,
                'requested_date': None,
                })

    @classmethod
    @ModelView.button
    @Workflow.transition('requested')
    def requested(cls, requests):
        cls.write(requests, {'requested_date': datetime.datetime.now()})
        cls.set_dicom_identifiers(requests)

    @classmethod
    def set_dicom_identifiers(cls, requests):
        """Give an accession number and a StudyInstanceUID to the requests
        that have none, in one batch.

        The position of a test in its order is its rank, by creation, among
        the requests of the same order number.
        """
        requests = [r for r in requests if not r.accession_number]
        if not requests:
            return
        orders = defaultdict(list)
        for sibling in cls.search(
                [('request', 'in', list({r.request for r in requests}))],
                order=[('id', 'ASC')]):
            orders[sibling.request].append(sibling.id)
        candidates = {}
        for request in requests:
            siblings = orders[request.request]
            position = siblings.index(request.id) + 1
            candidates[request] = [
                accession_number(request.request, position + n * len(siblings))
                for n in range(10)]
        used = {r.accession_number for r in cls.search([
                    ('accession_number', 'in',
                        [c for cs in candidates.values() for c in cs]),
                    ])}
        to_write = []
        for request, numbers in candidates.items():
            # A number made from another order's (custom sequences can make
            # two orders end alike) is skipped; the SQL constraint guards
            number = next((n for n in numbers if n not in used), numbers[0])
            used.add(number)
            to_write.extend(([request], {
                        'accession_number': number,
                        'study_instance_uid': new_study_instance_uid(),
                        }))
        cls.write(*to_write)

    @classmethod
    @ModelView.button
    @Workflow.transition('cancelled')
    def cancel(cls, requests):
        for request in requests:
            if request.results:
                raise ImagingRequestError(gettext(
                        'health_imaging.msg_request_cancel_with_result',
                        request=request.rec_name))

    @classmethod
    @Workflow.transition('done')
    def done(cls, requests):
        pass

    @classmethod
    @ModelView.button_action('health_imaging.wizard_generate_results')
    def generate_results(cls, requests):
        pass

    @classmethod
    def create_results(cls, requests):
        """Create the results of requested tests and mark them done.

        Returns every result of the requests, including the ones that
        already existed: generating twice never creates a second result.
        """
        pool = Pool()
        Result = pool.get('gnuhealth.imaging.test.result')
        for request in requests:
            if request.state not in {'requested', 'done'}:
                raise ImagingRequestError(gettext(
                        'health_imaging.msg_request_not_requested',
                        request=request.rec_name,
                        state=request.state_string))
        existing = Result.search([('request', 'in', [r.id for r in requests])])
        with_result = {r.request.id for r in existing}
        to_create = [
            Result.values_from_request(r) for r in requests
            if r.id not in with_result]
        results = Result.create(to_create) if to_create else []
        cls.done([r for r in requests if r.state == 'requested'])
        return existing + results


class RequestImagingTest(ModelView):
    "Request - Imaging Test"
    __name__ = 'gnuhealth.request-imaging-test'

    request = fields.Many2One(
        'gnuhealth.patient.imaging.test.request.start', "Request",
        required=True)
    test = fields.Many2One('gnuhealth.imaging.test', "Test", required=True)


class RequestPatientImagingTestStart(ModelView):
    "Request Patient Imaging Test Start"
    __name__ = 'gnuhealth.patient.imaging.test.request.start'

    date = fields.DateTime("Date", required=True)
    patient = fields.Many2One('gnuhealth.patient', "Patient", required=True)
    doctor = fields.Many2One(
        'gnuhealth.healthprofessional', "Doctor",
        help="The health professional who requests the tests.")
    context = fields.Many2One(
        'gnuhealth.pathology', "Context",
        help="The health condition that motivates the request.")
    tests = fields.Many2Many(
        'gnuhealth.request-imaging-test', 'request', 'test', "Tests",
        required=True, domain=[('active', '=', True)])
    urgent = fields.Boolean("Urgent")
    comment = fields.Text("Comment")

    @staticmethod
    def default_date():
        return datetime.datetime.now()

    @staticmethod
    def default_patient():
        context = Transaction().context
        if context.get('active_model') == 'gnuhealth.patient':
            return context.get('active_id')

    @staticmethod
    def default_doctor():
        return current_health_professional()

    @staticmethod
    def default_urgent():
        return False


class RequestPatientImagingTest(Wizard):
    "Request Patient Imaging Test"
    __name__ = 'gnuhealth.patient.imaging.test.request'

    start = StateView(
        'gnuhealth.patient.imaging.test.request.start',
        'health_imaging.patient_imaging_test_request_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Request", 'request', 'tryton-ok', default=True),
            ])
    request = StateTransition()

    def generate_code(self, **pattern):
        Sequences = Pool().get('gnuhealth.sequences')
        return Sequences.get_imaging_number('imaging_req_seq')

    def _request_values(self, test, number):
        "Return the values of the request of one test of the order"
        return {
            'request': number,
            'requested_test': test.id,
            'patient': self.start.patient.id,
            'doctor': self.start.doctor.id if self.start.doctor else None,
            'context': self.start.context.id if self.start.context else None,
            'date': self.start.date,
            'urgent': self.start.urgent,
            'comment': self.start.comment,
            }

    def transition_request(self):
        Request = Pool().get('gnuhealth.imaging.test.request')
        number = self.generate_code()
        tests = self.start.tests
        vlist = []
        for position, test in enumerate(tests, 1):
            values = self._request_values(test, number)
            values['request_line'] = '%s-%02d-%02d' % (
                number, len(tests), position)
            vlist.append(values)
        Request.create(vlist)
        return 'end'
