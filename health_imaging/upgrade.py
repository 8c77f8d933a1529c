# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The update of a database that ran GNU Health's own health_imaging.

GNU Health's package has the same module name: its XML ids stay in the
database under health_imaging. The catalogue records that we ship take over
the existing records with the same code (their ids are renamed, or added),
so that loading our XML finds them instead of creating duplicates; as our
catalogue is not updated (noupdate), the records keep their local edits.
The catalogue records of GNU Health that we do not ship lose their XML id,
so that the update keeps them as ordinary records.
"""
import datetime
import os
from collections import namedtuple

from lxml import etree
from trytond.pool import Pool
from trytond.transaction import Transaction

CATALOGUE_XML = os.path.join(os.path.dirname(__file__), 'catalogue.xml')

#: The XML ids of GNU Health 5.0's imaging catalogue (data/imaging_data.xml)
LEGACY_CATALOGUE = {
    'gnuhealth.imaging.test.type': {
        'gnuhealth_test_type_xray', 'gnuhealth_test_type_ultrasound',
        'gnuhealth_test_type_mri', 'gnuhealth_test_type_xa',
        'gnuhealth_test_type_dx', 'gnuhealth_test_type_cr',
        'gnuhealth_test_type_ctscan', 'gnuhealth_test_type_petscan'},
    'product.category': {'product_category_imagingservices'},
    'product.template': {
        'product_template_%scharges' % n for n in [
            'ultrasound', 'mri', 'xray', 'ctscan', 'petscan']},
    'product.product': {
        'product_product_%scharges' % n for n in [
            'ultrasound', 'mri', 'xray', 'ctscan', 'petscan']},
    'product.template-product.category': {
        'product_template_%scharges_category' % n for n in [
            'ultrasound', 'mri', 'xray', 'ctscan', 'petscan']},
    }
#: GNU Health's users kept as they are (users are never deleted)
LEGACY_USERS = {'res.user': {'user_demo_imaging'}}
#: GNU Health's XML ids of the records that ours replace
LEGACY_RENAMES = {
    'product.category': {
        'product_category_imagingservices': 'product_category_imaging',
        },
    'ir.model.button': {
        'image_request_button': 'imaging_test_request_requested_button',
        'image_generateresults_button':
        'imaging_test_request_generate_results_button',
        },
    }

Takeover = namedtuple('Takeover', ['fs_id', 'db_id', 'legacy_fs_id'])


def shipped_records(model, path=CATALOGUE_XML):
    """Return {fs_id: {field: value}} of the records of model in path;
    a reference to another record is given as ('ref', fs_id)"""
    records = {}
    for record in etree.parse(path).iter('record'):
        if record.get('model') != model:
            continue
        values = records[record.get('id')] = {}
        for field in record.iter('field'):
            if field.get('ref'):
                values[field.get('name')] = ('ref', field.get('ref'))
            else:
                values[field.get('name')] = field.text
    return records


def plan_takeover(shipped, by_code, known, legacy):
    """Return the Takeover of each shipped record to point at an existing
    record with the same code.

    shipped: {fs_id: code} of our XML; by_code: {code: db_id} of the
    records in the database; known: the fs_ids already in the database
    (ours: nothing to take over); legacy: {db_id: fs_id} of GNU Health's
    XML ids of the records, renamed rather than added.
    """
    takeovers = []
    for fs_id, code in sorted(shipped.items()):
        db_id = by_code.get(code)
        if fs_id in known or db_id is None:
            continue
        takeovers.append(Takeover(fs_id, db_id, legacy.get(db_id)))
    return takeovers


def product_takeovers(tests, products, taken):
    """Return {product fs_id: test fs_id} of our products whose test was
    taken over: they become the product the existing test already bills.

    tests: the shipped tests ({fs_id: values}); products: the shipped
    products; taken: the fs_ids of the tests taken over.
    """
    result = {}
    for fs_id in taken:
        product = tests.get(fs_id, {}).get('product')
        if product and product[0] == 'ref' and product[1] in products:
            result[product[1]] = fs_id
    return result


def model_data(module_name, model):
    "Return {fs_id: db_id} of the XML ids of module_name's model records"
    ModelData = Pool().get('ir.model.data')
    table = ModelData.__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*table.select(table.fs_id, table.db_id,
            where=(table.module == module_name) & (table.model == model)))
    return dict(cursor)


def point_xml_id(module_name, model, fs_id, db_id, legacy_fs_id=None):
    """Make fs_id the XML id of the record db_id: rename its legacy XML id,
    or add one; not updated by the XML files, like our catalogue"""
    ModelData = Pool().get('ir.model.data')
    table = ModelData.__table__()
    cursor = Transaction().connection.cursor()
    if legacy_fs_id:
        cursor.execute(*table.update(
                [table.fs_id, table.noupdate], [fs_id, True],
                where=(table.module == module_name)
                & (table.model == model) & (table.fs_id == legacy_fs_id)))
    else:
        cursor.execute(*table.insert([
                    table.create_uid, table.create_date, table.fs_id,
                    table.model, table.module, table.db_id, table.noupdate],
                [[0, datetime.datetime.now(), fs_id, model, module_name,
                    db_id, True]]))


def detach_legacy_records(module_name, legacy):
    """Remove the legacy XML ids ({model: fs_ids}) of records that we do not
    ship: the update would delete them, and orders may use them"""
    ModelData = Pool().get('ir.model.data')
    table = ModelData.__table__()
    cursor = Transaction().connection.cursor()
    for model, fs_ids in legacy.items():
        cursor.execute(*table.delete(where=(table.module == module_name)
                & (table.model == model) & table.fs_id.in_(list(fs_ids))))


def rename_legacy_xml_ids(module_name, model):
    "Give our XML ids to the records of GNU Health's that ours replace"
    ModelData = Pool().get('ir.model.data')
    table = ModelData.__table__()
    cursor = Transaction().connection.cursor()
    known = model_data(module_name, model)
    for legacy_fs_id, fs_id in LEGACY_RENAMES.get(model, {}).items():
        if legacy_fs_id in known and fs_id not in known:
            cursor.execute(*table.update([table.fs_id], [fs_id],
                    where=(table.module == module_name)
                    & (table.model == model)
                    & (table.fs_id == legacy_fs_id)))
