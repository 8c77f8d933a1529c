# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"Tests of the RDSR parser on documents built after the DICOM templates"
import copy
import datetime as dt
import os
import re
from xml.etree import ElementTree

import pytest
from pydicom.sequence import Sequence

from trytond.modules.health_orthanc import dose
from trytond.modules.health_orthanc.dose import (
    CT, MAMMOGRAPHY, NOT_DOSE, NOT_UNDERSTOOD, OK, PROBLEMS, PROJECTION,
    DoseValue, Problem, Quantity, convert, display_unit, exceeded_levels,
    format_quantity, is_dose_report_candidate, parse_dose_report,
    report_values, summarize)

from . import rdsr_samples as samples

Q = Quantity


def P(code, **params):
    return Problem(code, params)


def item_ct_event(number, concept):
    return P('item_ct_event', number=number, concept=concept)


def summary(report):
    "The values a test compares, in a compact form"
    planes = []
    for plane in report.accumulated:
        values = {k: v for k, v in vars(plane).items()
            if v and k not in {'plane', 'reference_point'}}
        planes.append((plane.plane, values))
    return {
        'status': report.status,
        'kind': report.kind,
        'template': report.template,
        'dlp_total': report.ct_dlp_total,
        'events': [(e.protocol, e.ctdivol, e.dlp, e.phantom_type)
            for e in report.ct_events],
        'planes': planes,
        'warnings': report.warnings,
        }


def expected(status=OK, kind=None, template=None, dlp_total=None,
        events=(), planes=(), warnings=()):
    return {'status': status, 'kind': kind, 'template': template,
        'dlp_total': dlp_total, 'events': list(events),
        'planes': list(planes), 'warnings': list(warnings)}


CASES = {
    'ct_three_events': expected(kind=CT, template='10011',
        dlp_total=Q(604.46, 'mGy.cm'), events=[
            ('Topogram', Q(0.13, 'mGy'), Q(1.45, 'mGy.cm'), 'body'),
            ('Thorax 1.0 Spiral', Q(6.72, 'mGy'), Q(254.31, 'mGy.cm'),
                'body'),
            ('Abdomen 1.0 Spiral', Q(8.11, 'mGy'), Q(348.7, 'mGy.cm'),
                'body'),
            ]),
    'ct_head_legacy': expected(kind=CT, template='10011',
        dlp_total=Q(910.5, 'mGy.cm'), events=[
            ('Head Routine', Q(52.3, 'mGy'), Q(910.5, 'mGy.cm'), 'head')]),
    'projection_radiography': expected(kind=PROJECTION, template='10001',
        planes=[('single', {
                'dose_area_product_total': Q(0.000012, 'Gy.m2'),
                'dose_rp_total': Q(0.00021, 'Gy'),
                'acquisition_dose_area_product_total': Q(0.000012, 'Gy.m2'),
                'acquisition_dose_rp_total': Q(0.00021, 'Gy'),
                'total_acquisition_time': Q(0.04, 's'),
                })]),
    'fluoroscopy_biplane': expected(kind=PROJECTION, template='10001',
        planes=[
            ('a', {
                    'dose_area_product_total': Q(0.00452, 'Gy.m2'),
                    'dose_rp_total': Q(0.385, 'Gy'),
                    'fluoro_dose_area_product_total': Q(0.00301, 'Gy.m2'),
                    'fluoro_dose_rp_total': Q(0.198, 'Gy'),
                    'total_fluoro_time': Q(612.4, 's'),
                    'acquisition_dose_area_product_total': Q(
                        0.00151, 'Gy.m2'),
                    'acquisition_dose_rp_total': Q(0.187, 'Gy'),
                    'total_acquisition_time': Q(12.5, 's'),
                    }),
            ('b', {
                    'dose_area_product_total': Q(0.00211, 'Gy.m2'),
                    'dose_rp_total': Q(0.142, 'Gy'),
                    'fluoro_dose_area_product_total': Q(0.0012, 'Gy.m2'),
                    'fluoro_dose_rp_total': Q(0.081, 'Gy'),
                    'total_fluoro_time': Q(301.0, 's'),
                    'acquisition_dose_area_product_total': Q(
                        0.00091, 'Gy.m2'),
                    'acquisition_dose_rp_total': Q(0.061, 'Gy'),
                    'total_acquisition_time': Q(12.5, 's'),
                    }),
            ]),
    'mammography_both': expected(kind=MAMMOGRAPHY, template='10001',
        planes=[('single', {'average_glandular_dose': {
                        'right': Q(2.41, 'mGy'), 'left': Q(2.63, 'mGy')}})]),
    'mammography_legacy': expected(kind=MAMMOGRAPHY, template='10001',
        planes=[('single', {'average_glandular_dose': {
                        'both': Q(0.052, 'dGy')}})]),
    'private_template': expected(NOT_UNDERSTOOD),
    'unknown_dcmr_template': expected(NOT_UNDERSTOOD),
    'odd_units': expected(kind=CT, template='10011',
        dlp_total=Q(0.631, 'Gy.cm'), events=[
            ('Abdomen', Q(9100, 'uGy'), Q(0.412, 'Gy.cm'), 'body'),
            ('Pelvis', Q(7.3, 'mGy'), Q(21.9, 'cGy.cm'), 'body'),
            ]),
    'missing_values': expected(kind=CT, template='10011', events=[
            ('Chest', None, Q(120.0, 'mGy.cm'), 'body'),
            (None, Q(4.2, 'mGy'), None, None),
            ], warnings=[
            P('no_dlp_total'),
            P('no_value', item=item_ct_event(1, 'Mean CTDIvol')),
            P('no_value', item=item_ct_event(2, 'DLP')),
            ]),
    'not_a_dose_report': expected(NOT_DOSE),
    }


def test_every_sample_has_a_case():
    assert set(CASES) == set(samples.SAMPLES)


@pytest.mark.parametrize('name, values', CASES.items())
def test_parse_samples(name, values):
    data = samples.to_bytes(samples.SAMPLES[name]())
    assert summary(parse_dose_report(data)) == values


@pytest.mark.parametrize('name, reason', [
    ('private_template', P('other_root_concept',
            concept='(DR-01, 99ACME, "ACME Dose Summary")')),
    ('unknown_dcmr_template', P('unknown_template', template='10021')),
    ('not_a_dose_report', P('other_root_concept',
            concept='(18748-4, LN, "Diagnostic Imaging Report")')),
    ])
def test_reason(name, reason):
    report = parse_dose_report(samples.SAMPLES[name]())
    assert report.reason == reason
    assert not report.understood


def test_problem_text():
    "The English text, for logs: the model shows the ir.message"
    assert str(P('other_root_concept', concept='(DR-01, 99ACME, "X")')) == (
        'the root concept is (DR-01, 99ACME, "X"), not (113701, DCM, '
        '"X-Ray Radiation Dose Report")')
    assert str(P('no_value', item=item_ct_event(2, 'DLP'))) == (
        'CT Acquisition 2 DLP: no value')
    code, params = P('not_a_count', item='X', value=1e20)
    assert (code, params) == ('not_a_count', {'item': 'X', 'value': 1e20})


def test_problem_codes_have_messages():
    """Every code has an ir.message msg_dose_problem_<code> with the same
    text, and every such message a code"""
    path = os.path.join(os.path.dirname(dose.__file__), 'message.xml')
    messages = {
        record.get('id')[len('msg_dose_problem_'):]: record.find(
            'field').text
        for record in ElementTree.parse(path).iter('record')
        if record.get('id').startswith('msg_dose_problem_')}
    assert {'not_a_count', 'start_out_of_range', 'values_not_kept',
        'not_dose_class'} <= set(PROBLEMS)
    assert messages == PROBLEMS


@pytest.mark.parametrize('code', PROBLEMS)
def test_problem_params(code):
    "The parser and the model give the parameters each text uses"
    assert set(re.findall(r'%\((\w+)\)s', PROBLEMS[code])) <= {
        'error', 'sop_class', 'concept', 'template', 'resource', 'number',
        'plane', 'item', 'value', 'side', 'quantity', 'unit', 'target'}
    assert '%' not in re.sub(r'%\(\w+\)s', '', PROBLEMS[code])


def test_ct_details():
    report = parse_dose_report(samples.ct_three_events())
    assert report.sop_class_uid == samples.XRAY_RADIATION_DOSE_SR
    assert report.study_instance_uid == samples.make_uid(
        'study', 'DOSE-0001')
    assert report.procedure.value == '77477000'
    assert report.started == dt.datetime(2024, 3, 5, 10, 10)
    assert report.ended == dt.datetime(2024, 3, 5, 10, 14, 30)
    assert report.ct_event_count == 3
    assert (report.manufacturer, report.model, report.station) == (
        'GNU Health Test Imaging', 'Scanner 1', 'ROOM1')
    first = report.ct_events[0]
    assert first.irradiation_event_uid == samples.make_uid('ct event', 1)
    assert first.target_region.meaning == 'Chest'
    assert first.acquisition_type.value == '116152004'
    assert first.phantom == ('113691', 'DCM', 'IEC Body Dosimetry Phantom')


def test_projection_details():
    report = parse_dose_report(samples.fluoroscopy_biplane())
    assert report.event_count == 6
    assert report.started == dt.datetime(2024, 3, 5, 10, 1)
    assert report.ended == dt.datetime(2024, 3, 5, 10, 6)
    assert [a.reference_point for a in report.accumulated] == [
        '15cm from Isocenter toward Source'] * 2


def _shuffle(item):
    "Reverse every content sequence and put a vendor item first"
    for child in item.get('ContentSequence') or []:
        _shuffle(child)
    if 'ContentSequence' in item:
        children = list(item.ContentSequence)[::-1]
        children.insert(0, samples.text(
                ('X-1', '99ACME', 'Vendor note'), 'ignored'))
        item.ContentSequence = Sequence(children)


@pytest.mark.parametrize('name', ['ct_three_events', 'fluoroscopy_biplane',
        'mammography_both'])
def test_by_concept_not_by_position(name):
    ds = samples.SAMPLES[name]()
    shuffled = copy.deepcopy(ds)
    _shuffle(shuffled)
    original, reordered = parse_dose_report(ds), parse_dose_report(shuffled)
    original.ct_events.reverse()
    original.accumulated.reverse()
    assert reordered.status == OK
    assert summary(reordered) == summary(original)


def test_private_template_under_standard_root():
    report = parse_dose_report(samples.ct_three_events(
            template=('99ACME', '4711')))
    assert report.status == NOT_UNDERSTOOD
    assert report.reason == P('private_template', template='4711',
        resource='99ACME')


def test_missing_root_concept():
    ds = samples.ct_three_events()
    del ds.ConceptNameCodeSequence
    report = parse_dose_report(ds)
    assert report.status == NOT_UNDERSTOOD
    assert report.reason == P('no_root_concept')


def test_template_without_its_content():
    ds = samples.projection_radiography(template=('DCMR', '10011'))
    report = parse_dose_report(ds)
    assert report.status == NOT_UNDERSTOOD
    assert report.reason == P('no_template_content', template='10011')


def test_no_template_is_recognised_from_content():
    report = parse_dose_report(samples.fluoroscopy_biplane(template=None))
    assert (report.status, report.template) == (OK, '10001')


@pytest.mark.parametrize('numeric, value, warning', [
    ('12.5', 12.5, None),
    ('1.2E-5', 0.000012, None),
    ('-3', None, P('not_a_dose_value', item='CT Dose Length Product Total',
            value='-3')),
    ])
def test_numeric_values(numeric, value, warning):
    report = parse_dose_report(samples.ct_report([], dlp_total=numeric))
    assert report.ct_dlp_total == (Q(value, 'mGy.cm') if value else None)
    assert ([w for w in report.warnings if w.code == 'not_a_dose_value']
        == ([warning] if warning else []))


def test_floating_point_value_wins():
    ds = samples.ct_report([], dlp_total='12.3')
    total = ds.ContentSequence[-2].ContentSequence[1]
    total.MeasuredValueSequence[0].FloatingPointValue = 12.345678901
    report = parse_dose_report(ds)
    assert report.ct_dlp_total == Q(12.345678901, 'mGy.cm')


def content_items(item):
    "The content items below item, depth first"
    for child in item.get('ContentSequence') or []:
        yield child
        yield from content_items(child)


def concept_items(ds, code):
    return [c for c in content_items(ds)
        if c.ConceptNameCodeSequence[0].CodeValue == code]


@pytest.mark.parametrize('numeric, count', [
    ('3', 3),
    ('2147483647', 2 ** 31 - 1),
    # An integer column holds neither (SQLite overflows at 2**63)
    ('2147483648', None),
    ('1E20', None),
    ])
def test_event_count_fits_an_integer_column(numeric, count):
    ds = samples.ct_three_events()
    item, = concept_items(ds, '113812')
    item.MeasuredValueSequence[0].NumericValue = numeric
    report = parse_dose_report(ds)
    assert report.status == OK
    assert report.ct_event_count == count
    assert [w for w in report.warnings if w.code == 'not_a_count'] == (
        [] if count is not None else [P('not_a_count',
                item='Total Number of Irradiation Events',
                value=float(numeric))])


def test_control_characters_left_out_of_codes():
    "A NUL would stop PostgreSQL from storing the report"
    ds = samples.ct_three_events()
    item, = concept_items(ds, '113813')
    unit = item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]
    unit.CodeValue = 'mGy\x00.cm'
    item, = concept_items(ds, '121058')
    procedure = item.ConceptCodeSequence[0]
    procedure.CodeValue = 'P\x00X'
    procedure.CodingSchemeDesignator = 'D\x00CM'
    del procedure.CodeMeaning
    report = parse_dose_report(ds)
    assert report.ct_dlp_total.unit == 'mGy.cm'
    assert report.procedure[:2] == ('PX', 'DCM')


@pytest.mark.parametrize('data, reason', [
    (b'', 'unreadable'),
    (b'not a DICOM file', 'unreadable'),
    (None, 'unreadable'),
    # cut before the content tree (pydicom reads a truncated file silently:
    # the HTTP client must check the length, as urllib3 does)
    (samples.to_bytes(samples.ct_three_events())[:700], 'no_root_concept'),
    ])
def test_unreadable_never_raises(data, reason):
    report = parse_dose_report(data)
    assert report.status == NOT_UNDERSTOOD
    assert report.reason.code == reason
    if reason == 'unreadable':
        assert report.reason.params['error']


def test_image_is_not_dose():
    report = parse_dose_report(samples.make_image('1.2.3'))
    assert report.status == NOT_DOSE
    assert report.reason == P('not_dose_class',
        sop_class='1.2.840.10008.5.1.4.1.1.2')


@pytest.mark.parametrize('tags, modalities, candidate', [
    ({'SopClassUid': samples.XRAY_RADIATION_DOSE_SR, 'Modality': 'SR'},
        None, True),
    ({'SOPClassUID': samples.XRAY_RADIATION_DOSE_SR, 'Modality': 'CT'},
        {'MR'}, True),
    ({'SopClassUid': '1.2.840.10008.5.1.4.1.1.88.76'}, None, True),
    ({'SopClassUid': samples.ENHANCED_SR, 'Modality': 'SR'}, None, True),
    ({'SopClassUid': samples.ENHANCED_SR, 'Modality': 'SR'},
        {'CT', 'SR'}, True),
    ({'SopClassUid': samples.COMPREHENSIVE_SR, 'Modality': 'SR'},
        {'mg', 'sr'}, True),
    ({'SopClassUid': samples.ENHANCED_SR, 'Modality': 'SR'},
        {None, 'SR'}, False),
    ({'SopClassUid': samples.ENHANCED_SR, 'Modality': 'SR'},
        {'MR', 'SR'}, False),
    ({'SopClassUid': '1.2.840.10008.5.1.4.1.1.88.68', 'Modality': 'SR'},
        None, False),  # radiopharmaceutical dose
    ({'SopClassUid': '1.2.840.10008.5.1.4.1.1.88.59', 'Modality': 'KO'},
        None, False),
    ({'SopClassUid': samples.CT_IMAGE, 'Modality': 'CT'}, None, False),
    ({'SopClassUid': '1.2.840.10008.5.1.4.1.1.104.1', 'Modality': 'DOC'},
        None, False),
    ({'Modality': 'SR'}, None, True),
    ({'Modality': 'CT'}, None, False),
    ({}, None, False),
    ])
def test_is_dose_report_candidate(tags, modalities, candidate):
    assert is_dose_report_candidate(tags, modalities) is candidate


@pytest.mark.parametrize('quantity, unit, result', [
    (Q(0.0012, 'Gy.m2'), 'Gy.cm2', Q(12.0, 'Gy.cm2')),
    (Q(12.0, 'Gy.cm2'), 'uGy.m2', Q(1200.0, 'uGy.m2')),
    (Q(3.5, 'dGy.cm2'), 'Gy.cm2', Q(0.35, 'Gy.cm2')),
    (Q(0.631, 'Gy.cm'), 'mGy.cm', Q(631.0, 'mGy.cm')),
    (Q(21.9, 'cGy.cm'), 'mGy.cm', Q(219.0, 'mGy.cm')),
    (Q(9100, 'uGy'), 'mGy', Q(9.1, 'mGy')),
    (Q(0.052, 'dGy'), 'mGy', Q(5.2, 'mGy')),
    (Q(0.385, 'Gy'), 'mGy', Q(385.0, 'mGy')),
    (Q(612.4, 's'), 'min', Q(10.206666666667, 'min')),
    (Q(2, 'min'), 's', Q(120.0, 's')),
    (Q(10, 'mm'), 'cm', Q(1.0, 'cm')),
    (Q(3, '{events}'), '1', Q(3.0, '1')),
    (Q(1.0, 'mGy'), 'mGy.cm', None),
    (Q(1.0, 'mGy'), 'mSv', None),
    (Q(1.0, 'mGy'), 'Gy.m2', None),
    (Q(1.0, 'R'), 'mGy', None),
    (Q(1.0, None), 'mGy', None),
    (None, 'mGy', None),
    ])
def test_convert(quantity, unit, result):
    assert convert(quantity, unit) == result


@pytest.mark.parametrize('unit, text', [
    ('mGy.cm', 'mGy·cm'),
    ('Gy.m2', 'Gy·m²'),
    ('uGy.m2', 'µGy·m²'),
    ('s', 's'),
    ('{events}', 'events'),
    ('[arb\'U]', '[arb\'U]'),
    (None, ''),
    ])
def test_display_unit(unit, text):
    assert display_unit(unit) == text


@pytest.mark.parametrize('quantity, unit, text', [
    (Q(0.0012, 'Gy.m2'), 'Gy.cm2', '12.00 Gy·cm²'),
    (Q(604.456, 'mGy.cm'), None, '604.46 mGy·cm'),
    (Q(0.385, 'Gy'), 'mGy', '385.00 mGy'),
    (Q(5, 'R'), 'mGy', '5.00 R'),
    (None, 'mGy', ''),
    ])
def test_format_quantity(quantity, unit, text):
    assert format_quantity(quantity, unit) == text


def totals(ctdivol=None, dlp=None, dap=None, dose_rp=None,
        fluoro_time=None, agd=None):
    return {'ctdivol': ctdivol, 'dlp': dlp, 'dap': dap, 'dose_rp': dose_rp,
        'fluoro_time': fluoro_time, 'agd': agd}


SUMMARIES = {
    'ct_three_events': (totals(ctdivol=8.11, dlp=604.46), []),
    'ct_head_legacy': (totals(ctdivol=52.3, dlp=910.5), []),
    'projection_radiography': (totals(dap=0.12, dose_rp=0.21), []),
    'fluoroscopy_biplane': (totals(dap=66.3, dose_rp=527.0,
            fluoro_time=913.4), []),
    'mammography_both': (totals(agd=2.63), []),
    'mammography_legacy': (totals(agd=5.2), []),
    'private_template': (totals(), []),
    'unknown_dcmr_template': (totals(), []),
    # 9100 uGy and 9.1 mGy; 0.631 Gy.cm is 631 mGy.cm
    'odd_units': (totals(ctdivol=9.1, dlp=631.0), []),
    # no total: the events' DLP
    'missing_values': (totals(ctdivol=4.2, dlp=120.0), []),
    'not_a_dose_report': (totals(), []),
    }


def test_every_sample_has_a_summary():
    assert set(SUMMARIES) == set(samples.SAMPLES)


@pytest.mark.parametrize('name, expected', SUMMARIES.items())
def test_summarize(name, expected):
    report = parse_dose_report(samples.SAMPLES[name]())
    assert summarize(report) == expected


def test_summarize_unconvertible_unit():
    report = parse_dose_report(samples.ct_report([
                samples.ct_event('Chest', '5', '100', ctdivol_unit='R')],
            dlp_total='100'))
    assert summarize(report) == (totals(dlp=100.0),
        [P('not_convertible', quantity='ctdivol', unit='R', target='mGy')])


@pytest.mark.parametrize('name, values', [
    ('ct_three_events', [DoseValue('ct_dlp_total', Q(604.46, 'mGy.cm'))]),
    ('projection_radiography', [
            DoseValue('dose_area_product_total', Q(0.000012, 'Gy.m2'),
                'single'),
            DoseValue('dose_rp_total', Q(0.00021, 'Gy'), 'single'),
            DoseValue('acquisition_dose_area_product_total',
                Q(0.000012, 'Gy.m2'), 'single'),
            DoseValue('acquisition_dose_rp_total', Q(0.00021, 'Gy'),
                'single'),
            DoseValue('total_acquisition_time', Q(0.04, 's'), 'single'),
            ]),
    ('mammography_both', [
            DoseValue('average_glandular_dose', Q(2.41, 'mGy'), 'single',
                'right'),
            DoseValue('average_glandular_dose', Q(2.63, 'mGy'), 'single',
                'left'),
            ]),
    ('mammography_legacy', [
            DoseValue('average_glandular_dose', Q(0.052, 'dGy'), 'single',
                'both'),
            ]),
    ('private_template', []),
    ])
def test_report_values(name, values):
    report = parse_dose_report(samples.SAMPLES[name]())
    assert report_values(report) == values


def test_report_values_biplane():
    values = report_values(parse_dose_report(
            samples.fluoroscopy_biplane()))
    assert [(v.plane, v.concept) for v in values if v.plane == 'b'][:2] == [
        ('b', 'dose_area_product_total'), ('b', 'dose_rp_total')]
    assert len(values) == 16


@pytest.mark.parametrize('summary, levels, exceeded', [
    (totals(ctdivol=52.3, dlp=910.5), {'ctdivol': 60, 'dlp': 800},
        ['dlp']),
    (totals(ctdivol=52.3, dlp=910.5), {'ctdivol': 50, 'dlp': 1000},
        ['ctdivol']),
    # equal is not above
    (totals(dlp=800.0), {'dlp': 800}, []),
    (totals(dap=66.3), {'dap': 50, 'dlp': 1}, ['dap']),
    (totals(agd=2.63), {'agd': 2.5}, ['agd']),
    # no level, or no value: not compared
    (totals(dlp=910.5), {}, []),
    (totals(), {'ctdivol': 1, 'dlp': 1, 'dap': 1, 'agd': 1}, []),
    (totals(dlp=910.5), {'dlp': None}, []),
    ])
def test_exceeded_levels(summary, levels, exceeded):
    assert exceeded_levels(summary, levels) == exceeded


def recode(ds, code, new_code):
    "Give the content items of concept code another concept"
    for item in concept_items(ds, code):
        item.ConceptNameCodeSequence[0].CodeValue = new_code


@pytest.mark.parametrize('name, code, new_code, reason', [
    # no template and no dose data
    ('fluoroscopy_biplane', '113702', 'X-2', P('no_dose_content')),
    # no template and both: which to read?
    ('ct_three_events', '113819', '113702', P('mixed_content')),
    ])
def test_content_without_template(name, code, new_code, reason):
    ds = samples.SAMPLES[name](template=None)
    recode(ds, code, new_code)
    report = parse_dose_report(ds)
    assert (report.status, report.reason) == (NOT_UNDERSTOOD, reason)


def test_projection_warnings():
    "The items of the warnings name the plane and the breast"
    ds = samples.fluoroscopy_biplane()
    for item in concept_items(ds, '113722'):
        del item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence
    report = parse_dose_report(ds)
    assert report.warnings == [
        P('no_unit', item=P('item_plane', plane=plane,
                concept='Dose Area Product Total'))
        for plane in ['a', 'b']]
    ds = samples.mammography_legacy()
    item, = concept_items(ds, '111637')
    del item.MeasuredValueSequence
    item.ContentSequence = Sequence()
    report = parse_dose_report(ds)
    assert report.warnings == [P('no_value', item=P('item_agd_no_laterality'))]
