# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"The catalogue of orderable imaging tests and their types (modalities)."
from trytond.model import DeactivableMixin, ModelSQL, ModelView, Unique, fields

from .tools import search_in


class NameCodeMixin:
    "Records with a unique code, found by their name or their code"
    __slots__ = ()
    _code_unique_message = None

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('code_uniq', Unique(t, t.code), cls._code_unique_message),
            ]

    @classmethod
    def search_rec_name(cls, name, clause):
        return search_in(clause, ['name', 'code'])


class ImagingTestType(NameCodeMixin, ModelSQL, ModelView):
    "Imaging Test Type"
    __name__ = 'gnuhealth.imaging.test.type'
    _code_unique_message = 'health_imaging.msg_test_type_code_unique'

    name = fields.Char("Name", required=True, translate=True)
    code = fields.Char(
        "Code", required=True,
        help="The DICOM modality of this type of test, "
        "such as CT, MR, US, DX, CR, XA, PT or MG.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order.insert(0, ('code', 'ASC'))

    def get_rec_name(self, name):
        return '%s (%s)' % (self.name, self.code)

    @fields.depends('code')
    def on_change_code(self):
        if self.code:
            self.code = self.code.strip().upper()


class ImagingTest(NameCodeMixin, DeactivableMixin, ModelSQL, ModelView):
    "Imaging Test"
    __name__ = 'gnuhealth.imaging.test'
    _code_unique_message = 'health_imaging.msg_test_code_unique'

    name = fields.Char("Name", required=True, translate=True)
    code = fields.Char("Code", required=True)
    test_type = fields.Many2One(
        'gnuhealth.imaging.test.type', "Type", required=True,
        ondelete='RESTRICT')
    product = fields.Many2One(
        'product.product', "Service", required=True, ondelete='RESTRICT',
        domain=[('type', '=', 'service')],
        help="The service product used to bill this test.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order.insert(0, ('name', 'ASC'))

    def get_rec_name(self, name):
        return '[%s] %s' % (self.code, self.name)
