# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"The catalogue of orderable imaging tests and their types (modalities)."
from sql import Null
from trytond.model import DeactivableMixin, ModelSQL, ModelView, Unique, fields
from trytond.pool import Pool
from trytond.transaction import Transaction

from . import upgrade
from .access import DomainAccessMixin
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

    @classmethod
    def __register__(cls, module_name):
        super().__register__(module_name)
        # Not again for a module that extends the model: the XML ids it
        # would take are not in its files, and trytond would delete the
        # records they point to
        if module_name == 'health_imaging':
            cls._take_over_shipped(module_name)

    @classmethod
    def _take_over_shipped(cls, module_name):
        """Give the XML ids of our catalogue to the records that already
        have their code (a database of GNU Health's own health_imaging);
        return the takeovers"""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        shipped = {fs_id: values.get('code') for fs_id, values
            in upgrade.shipped_records(cls.__name__).items()}
        cursor.execute(*table.select(table.code, table.id,
                where=table.code.in_(list(shipped.values())),
                order_by=[table.id.desc]))
        by_code = dict(cursor)
        known = upgrade.model_data(module_name, cls.__name__)
        legacy = {db_id: fs_id for fs_id, db_id in known.items()
            if fs_id not in shipped}
        takeovers = upgrade.plan_takeover(shipped, by_code, known, legacy)
        for takeover in takeovers:
            upgrade.point_xml_id(module_name, cls.__name__, *takeover)
        return takeovers


class ImagingTestType(
        DomainAccessMixin, NameCodeMixin, ModelSQL, ModelView):
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

    @classmethod
    def _take_over_shipped(cls, module_name):
        upgrade.rename_legacy_xml_ids(module_name, 'product.category')
        takeovers = super()._take_over_shipped(module_name)
        upgrade.detach_legacy_records(module_name, upgrade.LEGACY_CATALOGUE)
        upgrade.detach_legacy_records(module_name, upgrade.LEGACY_USERS)
        return takeovers

    @fields.depends('code')
    def on_change_code(self):
        if self.code:
            self.code = self.code.strip().upper()


class ImagingTest(
        DomainAccessMixin, NameCodeMixin, DeactivableMixin, ModelSQL,
        ModelView):
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

    @classmethod
    def _take_over_shipped(cls, module_name):
        takeovers = super()._take_over_shipped(module_name)
        cls._take_over_products(module_name, takeovers)
        return takeovers

    @classmethod
    def _take_over_products(cls, module_name, takeovers):
        "Our products of the tests taken over are the ones they bill"
        pool = Pool()
        Product = pool.get('product.product')
        test, product = cls.__table__(), Product.__table__()
        cursor = Transaction().connection.cursor()
        tests = upgrade.shipped_records(cls.__name__)
        products = upgrade.shipped_records('product.product')
        known = upgrade.model_data(module_name, 'product.product')
        templates = upgrade.model_data(module_name, 'product.template')
        db_ids = {t.fs_id: t.db_id for t in takeovers}
        for product_fs_id, test_fs_id in upgrade.product_takeovers(
                tests, products, db_ids).items():
            template_fs_id = products[product_fs_id]['template'][1]
            if product_fs_id in known or template_fs_id in templates:
                continue
            cursor.execute(*test.join(product,
                    condition=test.product == product.id).select(
                    product.id, product.template,
                    where=(test.id == db_ids[test_fs_id])
                    & (product.template != Null)))
            row = cursor.fetchone()
            if row:
                upgrade.point_xml_id(
                    module_name, 'product.product', product_fs_id, row[0])
                upgrade.point_xml_id(
                    module_name, 'product.template', template_fs_id, row[1])
