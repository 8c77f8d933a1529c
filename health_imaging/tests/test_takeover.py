# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Tests of the takeover of GNU Health's own imaging catalogue."""
import pytest

from trytond.modules.health_imaging.upgrade import (
    Takeover, plan_takeover, product_takeovers, shipped_records)


@pytest.mark.parametrize('shipped, by_code, known, legacy, expected', [
    # A fresh database: the XML files create everything
    ({'test_type_ct': 'CT'}, {}, set(), {}, []),
    # Ours already: nothing to do
    ({'test_type_ct': 'CT'}, {'CT': 7}, {'test_type_ct'}, {}, []),
    # GNU Health's XML id is renamed
    ({'test_type_ct': 'CT'}, {'CT': 7}, {'gnuhealth_test_type_ctscan'},
        {7: 'gnuhealth_test_type_ctscan'},
        [Takeover('test_type_ct', 7, 'gnuhealth_test_type_ctscan')]),
    # A record created by hand gets our XML id
    ({'test_type_mg': 'MG', 'test_type_nm': 'NM'}, {'MG': 9}, set(), {},
        [Takeover('test_type_mg', 9, None)]),
    ])
def test_plan_takeover(shipped, by_code, known, legacy, expected):
    assert plan_takeover(shipped, by_code, known, legacy) == expected


def test_shipped_records():
    tests = shipped_records('gnuhealth.imaging.test')
    assert tests['test_img_mr_brain']['code'] == 'IMG-MR-BRAIN'
    assert tests['test_img_mr_brain']['product'] == (
        'ref', 'product_img_mr_brain')
    types = shipped_records('gnuhealth.imaging.test.type')
    assert types['test_type_ct'] == {
        'code': 'CT', 'name': 'Computed Tomography'}


def test_product_takeovers():
    tests = {
        'test_a': {'product': ('ref', 'product_a')},
        'test_b': {'product': ('ref', 'product_b')},
        }
    products = {'product_a': {}, 'product_b': {}}
    assert product_takeovers(tests, products, ['test_b']) == {
        'product_b': 'test_b'}
