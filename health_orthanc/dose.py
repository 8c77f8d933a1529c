# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Read Radiation Dose Structured Reports (RDSR) by concept codes.

Plain Python (no Tryton).  Understood: the CT Radiation Dose template
(TID 10011) and the Projection X-Ray Radiation Dose template (TID 10001,
fluoroscopy and mammography included), in an X-Ray Radiation Dose SR or in
an Enhanced or Comprehensive SR.  Every value is found by its concept code
(DICOM PS3.16), never by its position in the content tree, and keeps the
unit recorded by the modality (UCUM code value such as ``mGy.cm``);
:func:`convert` and :func:`format_quantity` convert only for display.

:func:`parse_dose_report` never raises: a report it cannot read says why in
:attr:`DoseReport.reason`.  Reasons and warnings are :class:`Problem`, a code
of :data:`PROBLEMS` with its parameters, that the model translates.
"""
import dataclasses
import datetime as dt
import io
import math
import re
import unicodedata
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import DT

__all__ = [
    'OK', 'NOT_UNDERSTOOD', 'NOT_DOSE', 'CT', 'PROJECTION', 'MAMMOGRAPHY',
    'Problem', 'PROBLEMS', 'Code', 'Quantity', 'CTEvent',
    'AccumulatedXRayDose', 'DoseReport', 'parse_dose_report',
    'not_dose_class', 'is_dose_report_candidate', 'convert',
    'format_quantity', 'display_unit', 'DISPLAY_UNITS',
    'DoseValue', 'report_values', 'VALUE_KINDS', 'SUMMARY_UNITS',
    'summarize', 'DRL_QUANTITIES', 'exceeded_levels',
    ]

# DoseReport.status
OK = 'ok'
NOT_UNDERSTOOD = 'not_understood'
NOT_DOSE = 'not_dose'  # an SR that is no dose report at all

# DoseReport.kind
CT = 'ct'
PROJECTION = 'projection'
MAMMOGRAPHY = 'mammography'

XRAY_RADIATION_DOSE_SR = '1.2.840.10008.5.1.4.1.1.88.67'
ENHANCED_XRAY_RADIATION_DOSE_SR = '1.2.840.10008.5.1.4.1.1.88.76'
ENHANCED_SR = '1.2.840.10008.5.1.4.1.1.88.22'
COMPREHENSIVE_SR = '1.2.840.10008.5.1.4.1.1.88.33'
COMPREHENSIVE_3D_SR = '1.2.840.10008.5.1.4.1.1.88.34'
DOSE_SR_CLASSES = {XRAY_RADIATION_DOSE_SR, ENHANCED_XRAY_RADIATION_DOSE_SR}
# Some CT scanners send their TID 10011 in one of these
GENERAL_SR_CLASSES = {ENHANCED_SR, COMPREHENSIVE_SR, COMPREHENSIVE_3D_SR}
XRAY_MODALITIES = {
    'CT', 'CR', 'DX', 'MG', 'XA', 'RF', 'PX', 'IO', 'RG', 'DF', 'DS'}
UNDERSTOOD_TEMPLATES = {'10001', '10011'}
#: The largest count an integer column holds (PostgreSQL's integer)
MAX_COUNT = 2 ** 31 - 1


def _dcm(value):
    return frozenset({(value, 'DCM')})


def _snomed(sct, srt):
    "A SNOMED concept under its SCT code and its retired SNOMED-RT code"
    return frozenset({(sct, 'SCT'), (srt, 'SRT')})


# PS3.16 concepts (TID 10001-10005, 10007, 10011-10013; CID 4052, 6022,
# 10002, 10005)
XRAY_RADIATION_DOSE_REPORT = _dcm('113701')
PROCEDURE_REPORTED = _dcm('121058')
START_OF_IRRADIATION = _dcm('113809')
END_OF_IRRADIATION = _dcm('113810')
CT_ACCUMULATED_DOSE_DATA = _dcm('113811')
TOTAL_NUMBER_OF_IRRADIATION_EVENTS = _dcm('113812')
CT_DOSE_LENGTH_PRODUCT_TOTAL = _dcm('113813')
CT_EFFECTIVE_DOSE_TOTAL = _dcm('113814')
CT_ACQUISITION = _dcm('113819')
ACQUISITION_PROTOCOL = _dcm('125203')
TARGET_REGION = _dcm('123014')
CT_ACQUISITION_TYPE = _dcm('113820')
IRRADIATION_EVENT_UID = _dcm('113769')
MEAN_CTDIVOL = _dcm('113830')
DLP = _dcm('113838')
CTDIW_PHANTOM_TYPE = _dcm('113835')
ACCUMULATED_XRAY_DOSE_DATA = _dcm('113702')
ACQUISITION_PLANE = _dcm('113764')
IRRADIATION_EVENT_XRAY_DATA = _dcm('113706')
DATETIME_STARTED = _dcm('111526')
REFERENCE_POINT_DEFINITION = _dcm('113780')
ACCUMULATED_AVERAGE_GLANDULAR_DOSE = _dcm('111637')
LATERALITY = _snomed('272741003', 'G-C171')
MAMMOGRAPHY_PROCEDURE = _snomed('71651007', 'P5-40010')

# field of AccumulatedXRayDose: concept of its NUM
PROJECTION_TOTALS = {
    'dose_area_product_total': _dcm('113722'),
    'dose_rp_total': _dcm('113725'),
    'fluoro_dose_area_product_total': _dcm('113726'),
    'fluoro_dose_rp_total': _dcm('113728'),
    'acquisition_dose_area_product_total': _dcm('113727'),
    'acquisition_dose_rp_total': _dcm('113729'),
    'total_fluoro_time': _dcm('113730'),
    'total_acquisition_time': _dcm('113855'),
    }
PLANES = {('113622', 'DCM'): 'single', ('113620', 'DCM'): 'a',
    ('113621', 'DCM'): 'b'}
PHANTOMS = {('113690', 'DCM'): 'head', ('113691', 'DCM'): 'body'}
# CID 6022 (breast) and, as some devices send, CID 244 (generic side)
SIDES = {code: side for side, codes in {
        'right': [('73056007', 'SCT'), ('T-04020', 'SRT'),
            ('24028007', 'SCT'), ('G-A100', 'SRT')],
        'left': [('80248007', 'SCT'), ('T-04030', 'SRT'),
            ('7771000', 'SCT'), ('G-A101', 'SRT')],
        'both': [('63762007', 'SCT'), ('T-04080', 'SRT'),
            ('51440002', 'SCT'), ('G-A102', 'SRT')],
        }.items() for code in codes}

#: Suggested display unit per kind of value (UCUM)
DISPLAY_UNITS = {
    'ctdivol': 'mGy',
    'dlp': 'mGy.cm',
    'effective_dose': 'mSv',
    'dose_area_product': 'Gy.cm2',
    'dose_rp': 'mGy',
    'time': 's',
    'average_glandular_dose': 'mGy',
    }


#: The English text of each problem code; the model shows the ir.message
#: msg_dose_problem_<code> (the same text) in the user's language.  An
#: ``item`` parameter is a Problem (the item_* codes) or a concept name.
PROBLEMS = {
    # why a report is not understood (DoseReport.reason)
    'unreadable': 'the file cannot be read: %(error)s',
    'not_dose_class': 'SOP class %(sop_class)s carries no dose report',
    'no_root_concept': ('the root concept is missing, not (113701, DCM, '
        '"X-Ray Radiation Dose Report")'),
    'other_root_concept': ('the root concept is %(concept)s, not (113701, '
        'DCM, "X-Ray Radiation Dose Report")'),
    'private_template': 'private template %(template)s of %(resource)s',
    'unknown_template': ('template TID %(template)s is not a dose template '
        'this parser knows'),
    'no_template_content': ('neither CT Accumulated Dose Data (113811) nor '
        'Accumulated X-Ray Dose Data (113702) for template %(template)s'),
    'no_dose_content': ('neither CT Accumulated Dose Data (113811) nor '
        'Accumulated X-Ray Dose Data (113702)'),
    'mixed_content': ('both CT Accumulated Dose Data (113811) and '
        'Accumulated X-Ray Dose Data (113702), and no template that says '
        'which to read'),
    # values expected but missing or unreadable (DoseReport.warnings)
    'no_ct_accumulated': 'no CT Accumulated Dose Data (113811)',
    'no_dlp_total': 'no CT Dose Length Product Total (113813)',
    'ct_event_no_ctdivol': ('CT Acquisition %(number)s: no Mean CTDIvol '
        '(113830)'),
    'ct_event_no_dlp': 'CT Acquisition %(number)s: no DLP (113838)',
    'plane_no_dap_total': ('plane %(plane)s: no Dose Area Product Total '
        '(113722)'),
    'no_value': '%(item)s: no value',
    'not_a_dose_value': '%(item)s: "%(value)s" is not a dose value',
    'no_unit': '%(item)s: no unit',
    'not_a_count': '%(item)s: %(value)s is not a count',
    # the items of the warnings above
    'item_ct_event': 'CT Acquisition %(number)s %(concept)s',
    'item_plane': 'plane %(plane)s %(concept)s',
    'item_agd': 'Accumulated Average Glandular Dose (%(side)s)',
    'item_agd_no_laterality': ('Accumulated Average Glandular Dose (no '
        'laterality)'),
    # values that summarize() cannot add up
    'not_convertible': '%(quantity)s: %(unit)s cannot be converted to '
        '%(target)s',
    # values the database refuses (added by the model)
    'values_not_kept': 'the values cannot be kept: %(error)s',
    'start_out_of_range': 'Irradiation Start: %(value)s is out of range',
    'end_out_of_range': 'Irradiation End: %(value)s is out of range',
    }


@dataclasses.dataclass(frozen=True)
class Problem:
    """Why a report is not understood, or what it lacks: ``code`` is a key
    of :data:`PROBLEMS`, ``params`` its values (str, numbers or Problem)"""
    code: str
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        assert self.code in PROBLEMS, self.code

    def __iter__(self):
        "Unpack as (code, params)"
        return iter((self.code, self.params))

    def __str__(self):
        "The English text (logs and tests); people see the ir.message"
        return PROBLEMS[self.code] % {
            k: str(v) for k, v in self.params.items()}


def _problem(code: str, **params) -> Problem:
    return Problem(code, params)


class Code(NamedTuple):
    value: str
    scheme: str
    meaning: str | None = None


@dataclasses.dataclass(frozen=True)
class Quantity:
    "A measured value with its unit as recorded (UCUM code value)"
    value: float
    unit: str | None


@dataclasses.dataclass
class CTEvent:
    "One CT Acquisition (TID 10013)"
    protocol: str | None = None
    target_region: Code | None = None
    acquisition_type: Code | None = None
    irradiation_event_uid: str | None = None
    ctdivol: Quantity | None = None
    dlp: Quantity | None = None
    phantom: Code | None = None
    #: 'head', 'body', 'other' (see phantom) or None
    phantom_type: str | None = None


@dataclasses.dataclass
class AccumulatedXRayDose:
    "The totals of one acquisition plane (TID 10002 and what it includes)"
    #: 'single', 'a', 'b' or None
    plane: str | None = None
    dose_area_product_total: Quantity | None = None
    dose_rp_total: Quantity | None = None
    fluoro_dose_area_product_total: Quantity | None = None
    fluoro_dose_rp_total: Quantity | None = None
    acquisition_dose_area_product_total: Quantity | None = None
    acquisition_dose_rp_total: Quantity | None = None
    total_fluoro_time: Quantity | None = None
    total_acquisition_time: Quantity | None = None
    reference_point: str | None = None
    #: mammography: 'right', 'left', 'both' (or a code meaning) -> dose
    average_glandular_dose: dict[str, Quantity] = dataclasses.field(
        default_factory=dict)


@dataclasses.dataclass
class DoseReport:
    status: str
    reason: Problem | None = None
    #: CT, PROJECTION or MAMMOGRAPHY when understood
    kind: str | None = None
    #: TID as found in the Content Template Sequence, else as recognised
    template: str | None = None
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    station: str | None = None
    procedure: Code | None = None
    #: first and last irradiation, as recorded (naive)
    started: dt.datetime | None = None
    ended: dt.datetime | None = None
    # CT (TID 10011)
    ct_dlp_total: Quantity | None = None
    ct_effective_dose_total: Quantity | None = None
    ct_event_count: int | None = None
    ct_events: list[CTEvent] = dataclasses.field(default_factory=list)
    # projection X-ray, fluoroscopy and mammography (TID 10001)
    accumulated: list[AccumulatedXRayDose] = dataclasses.field(
        default_factory=list)
    event_count: int | None = None
    #: values that were expected but missing or unreadable
    warnings: list[Problem] = dataclasses.field(default_factory=list)

    @property
    def understood(self) -> bool:
        return self.status == OK

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- content tree ------------------------------------------------------------
class _Node(NamedTuple):
    "A content item with its concept (value, scheme), read once"
    item: Dataset
    concept: tuple[str, str] | None
    children: list['_Node']


def _tree(item: Dataset) -> _Node:
    name = _first(item, 'ConceptNameCodeSequence')
    concept = None
    if name is not None:
        value = name.get('CodeValue') or name.get('LongCodeValue')
        scheme = name.get('CodingSchemeDesignator')
        if value:
            concept = (str(value).strip(), str(scheme or '').strip().upper())
    return _Node(item, concept,
        [_tree(child) for child in item.get('ContentSequence') or []])


def _code(item: Dataset | None) -> Code | None:
    if item is None:
        return None
    value = (item.get('CodeValue') or item.get('LongCodeValue')
        or item.get('URNCodeValue'))
    # Control characters (NUL) would stop the database from storing it
    value = _text(value)
    if not value:
        return None
    return Code(value,
        (_text(item.get('CodingSchemeDesignator')) or '').upper(),
        _text(item.get('CodeMeaning')))


def _first(item: Dataset, keyword: str) -> Dataset | None:
    sequence = item.get(keyword)
    return sequence[0] if sequence else None


def _concept(node: _Node) -> Code | None:
    return _code(_first(node.item, 'ConceptNameCodeSequence'))


def _find_all(node: _Node, concepts: frozenset) -> Iterator[_Node]:
    "Descendants of node with one of concepts (not those below a match)"
    for child in node.children:
        if child.concept in concepts:
            yield child
        else:
            yield from _find_all(child, concepts)


def _find(node: _Node, concepts: frozenset) -> _Node | None:
    return next(_find_all(node, concepts), None)


def _child(node: _Node, concepts: frozenset) -> _Node | None:
    return next((c for c in node.children if c.concept in concepts), None)


def _text(value) -> str | None:
    if value is None:
        return None
    value = ''.join(c for c in str(value)
        if unicodedata.category(c)[0] != 'C').strip()
    return value or None


def _number(value) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _quantity(node: _Node | None, item: Problem | str,
        warnings: list[Problem]) -> Quantity | None:
    "item names the value in the warnings (a concept name or an item_*)"
    if node is None:
        return None
    measured = _first(node.item, 'MeasuredValueSequence')
    if measured is None:
        warnings.append(_problem('no_value', item=item))
        return None
    value = _number(measured.get('FloatingPointValue'))
    if value is None:
        numeric = measured.get('NumericValue')
        if isinstance(numeric, MultiValue):
            numeric = numeric[0] if numeric else None
        value = _number(numeric)
    if value is None or value < 0:
        warnings.append(_problem('not_a_dose_value', item=item,
                value=_text(measured.get('NumericValue')) or ''))
        return None
    unit = _code(_first(measured, 'MeasurementUnitsCodeSequence'))
    if unit is None:
        warnings.append(_problem('no_unit', item=item))
    return Quantity(value, unit.value if unit else None)


def _count(quantity: Quantity | None, item: str, warnings: list[Problem]
        ) -> int | None:
    "Return quantity as a count that an integer column holds, else None"
    if quantity is None:
        return None
    if not 0 <= quantity.value <= MAX_COUNT:
        warnings.append(_problem('not_a_count', item=item,
                value=quantity.value))
        return None
    return int(quantity.value)


def _code_value(node: _Node | None) -> Code | None:
    if node is None:
        return None
    return _code(_first(node.item, 'ConceptCodeSequence'))


def _text_value(node: _Node | None) -> str | None:
    if node is None:
        return None
    if node.item.get('ValueType') == 'CODE':
        code = _code_value(node)
        return code.meaning or code.value if code else None
    return _text(node.item.get('TextValue'))


def _item_value(node: _Node | None, keyword: str) -> str | None:
    return _text(node.item.get(keyword)) if node is not None else None


def _datetime_value(node: _Node | None) -> dt.datetime | None:
    return _datetime(_item_value(node, 'DateTime'))


def _datetime(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = DT(value)
    except (TypeError, ValueError):
        return None
    return dt.datetime(*parsed.timetuple()[:6], parsed.microsecond)


# -- templates ---------------------------------------------------------------
def _read_ct(root: _Node, report: DoseReport):
    warnings = report.warnings
    accumulated = _find(root, CT_ACCUMULATED_DOSE_DATA)
    if accumulated is None:
        warnings.append(_problem('no_ct_accumulated'))
    else:
        total = _child(accumulated, CT_DOSE_LENGTH_PRODUCT_TOTAL)
        if total is None:
            warnings.append(_problem('no_dlp_total'))
        report.ct_dlp_total = _quantity(
            total, 'CT Dose Length Product Total', warnings)
        report.ct_effective_dose_total = _quantity(
            _child(accumulated, CT_EFFECTIVE_DOSE_TOTAL),
            'CT Effective Dose Total', warnings)
        count = _quantity(
            _child(accumulated, TOTAL_NUMBER_OF_IRRADIATION_EVENTS),
            'Total Number of Irradiation Events', warnings)
        report.ct_event_count = _count(
            count, 'Total Number of Irradiation Events', warnings)
    for number, event in enumerate(_find_all(root, CT_ACQUISITION), 1):
        report.ct_events.append(_read_ct_event(event, number, warnings))
    report.started = _datetime_value(_child(root, START_OF_IRRADIATION))
    report.ended = _datetime_value(_child(root, END_OF_IRRADIATION))


def _read_ct_event(event: _Node, number: int, warnings: list[Problem]
        ) -> CTEvent:
    items = {field: _find(event, concept) for field, concept in [
            ('ctdivol', MEAN_CTDIVOL), ('dlp', DLP)]}
    for field in items:
        if items[field] is None:
            warnings.append(_problem('ct_event_no_' + field, number=number))

    def item(concept):
        return _problem('item_ct_event', number=number, concept=concept)
    phantom = _code_value(_find(event, CTDIW_PHANTOM_TYPE))
    return CTEvent(
        protocol=_text_value(_find(event, ACQUISITION_PROTOCOL)),
        target_region=_code_value(_find(event, TARGET_REGION)),
        acquisition_type=_code_value(_find(event, CT_ACQUISITION_TYPE)),
        irradiation_event_uid=_item_value(
            _find(event, IRRADIATION_EVENT_UID), 'UID'),
        ctdivol=_quantity(items['ctdivol'], item('Mean CTDIvol'), warnings),
        dlp=_quantity(items['dlp'], item('DLP'), warnings),
        phantom=phantom,
        phantom_type=(PHANTOMS.get(phantom[:2], 'other')
            if phantom else None))


def _read_projection(root: _Node, report: DoseReport):
    for container in _find_all(root, ACCUMULATED_XRAY_DOSE_DATA):
        report.accumulated.append(
            _read_accumulated(container, report.warnings))
    mammography = (report.procedure is not None
        and report.procedure[:2] in MAMMOGRAPHY_PROCEDURE)
    if mammography or any(a.average_glandular_dose
            for a in report.accumulated):
        report.kind = MAMMOGRAPHY
    else:
        report.kind = PROJECTION
        for accumulated in report.accumulated:
            if accumulated.dose_area_product_total is None:
                report.warnings.append(_problem('plane_no_dap_total',
                        plane=accumulated.plane or '?'))
    events = list(_find_all(root, IRRADIATION_EVENT_XRAY_DATA))
    report.event_count = len(events)
    starts = [d for d in (_datetime_value(_find(e, DATETIME_STARTED))
            for e in events) if d]
    if starts:
        report.started, report.ended = min(starts), max(starts)


def _read_accumulated(container: _Node, warnings: list[Problem]
        ) -> AccumulatedXRayDose:
    plane = _code_value(_child(container, ACQUISITION_PLANE))
    result = AccumulatedXRayDose(
        plane=PLANES.get(plane[:2], plane.meaning) if plane else None,
        reference_point=_text_value(
            _find(container, REFERENCE_POINT_DEFINITION)))
    for field, concept in PROJECTION_TOTALS.items():
        item = _find(container, concept)
        if item is not None:
            label = _problem('item_plane', plane=result.plane or '?',
                concept=_concept(item).meaning or field)
            setattr(result, field, _quantity(item, label, warnings))
    for item in _find_all(container, ACCUMULATED_AVERAGE_GLANDULAR_DOSE):
        side = _code_value(_child(item, LATERALITY))
        side = SIDES.get(side[:2], side.meaning) if side else None
        label = (_problem('item_agd', side=side) if side
            else _problem('item_agd_no_laterality'))
        dose = _quantity(item, label, warnings)
        if dose is not None:
            result.average_glandular_dose[side or 'unknown'] = dose
    return result


# -- entry point -------------------------------------------------------------
def parse_dose_report(data: bytes | Dataset) -> DoseReport:
    """Read the dose values of an RDSR (DICOM file bytes or a dataset).

    Never raises: a file that is not a dose report the parser knows gives
    a report with ``status`` NOT_UNDERSTOOD (or NOT_DOSE for a general SR
    whose root is not an X-Ray Radiation Dose Report) and a ``reason``.
    Values that are missing or unreadable are None and listed in
    ``warnings``.
    """
    try:
        if isinstance(data, Dataset):
            ds = data
        else:
            ds = pydicom.dcmread(io.BytesIO(data))
        return _parse_dataset(ds)
    except Exception as exception:
        return DoseReport(NOT_UNDERSTOOD, _problem('unreadable',
                error=(str(exception)[:200]
                    or exception.__class__.__name__)))


def _parse_dataset(ds: Dataset) -> DoseReport:
    report = DoseReport(NOT_UNDERSTOOD,
        sop_class_uid=_text(ds.get('SOPClassUID')),
        sop_instance_uid=_text(ds.get('SOPInstanceUID')),
        study_instance_uid=_text(ds.get('StudyInstanceUID')),
        series_instance_uid=_text(ds.get('SeriesInstanceUID')),
        manufacturer=_text(ds.get('Manufacturer')),
        model=_text(ds.get('ManufacturerModelName')),
        station=_text(ds.get('StationName')))
    dose_class = report.sop_class_uid in DOSE_SR_CLASSES
    if not dose_class and report.sop_class_uid not in GENERAL_SR_CLASSES:
        report.status = NOT_DOSE
        report.reason = not_dose_class(report.sop_class_uid)
        return report
    root = _code(_first(ds, 'ConceptNameCodeSequence'))
    if root is None or root[:2] not in XRAY_RADIATION_DOSE_REPORT:
        report.status = NOT_UNDERSTOOD if dose_class else NOT_DOSE
        report.reason = (_problem('other_root_concept',
                concept=_format_code(root)) if root
            else _problem('no_root_concept'))
        return report
    report.reason = _check_template(ds, report)
    if not report.reason:
        _read_content(_tree(ds), report)
    return report


def _read_content(root: _Node, report: DoseReport):
    report.procedure = _code_value(_child(root, PROCEDURE_REPORTED))
    is_ct = (_find(root, CT_ACCUMULATED_DOSE_DATA) is not None
        or _find(root, CT_ACQUISITION) is not None)
    is_projection = _find(root, ACCUMULATED_XRAY_DOSE_DATA) is not None
    template = report.template or ('10011' if is_ct and not is_projection
        else '10001' if is_projection and not is_ct else None)
    if template == '10011' and is_ct:
        report.kind = CT
        _read_ct(root, report)
    elif template == '10001' and is_projection:
        _read_projection(root, report)
    elif template:
        report.reason = _problem('no_template_content', template=template)
        return
    else:
        report.reason = _problem(
            'mixed_content' if is_ct else 'no_dose_content')
        return
    report.template = template
    report.status = OK


def _check_template(ds: Dataset, report: DoseReport) -> Problem | None:
    "Return why the declared template is not understood, or None"
    template = _first(ds, 'ContentTemplateSequence')
    if template is None:
        return None
    resource = _text(template.get('MappingResource'))
    identifier = _text(template.get('TemplateIdentifier'))
    if resource != 'DCMR':
        return _problem('private_template', template=identifier or '',
            resource=resource or '')
    if identifier not in UNDERSTOOD_TEMPLATES:
        return _problem('unknown_template', template=identifier or '')
    report.template = identifier
    return None


def not_dose_class(sop_class: str | None) -> Problem:
    "The reason of a report whose SOP class holds no dose report"
    return _problem('not_dose_class', sop_class=sop_class or '')


def _format_code(code: Code) -> str:
    return '(%s, %s, "%s")' % (code.value, code.scheme, code.meaning or '')


# -- which Orthanc instances to download -------------------------------------
def is_dose_report_candidate(tags: Mapping[str, Any],
        study_modalities: set[str] | None = None) -> bool:
    """Tell from an Orthanc instance whether to download it as an RDSR.

    ``tags`` holds its SOP class (``SOPClassUID``, or Orthanc's instance
    metadata ``SopClassUid``) and its series' ``Modality``.  X-Ray Radiation
    Dose SR are always candidates; Enhanced and Comprehensive SR only in a
    study with an X-ray modality (when ``study_modalities`` is given), as
    they carry CT dose only on older scanners; an instance without known
    SOP class only when its modality is SR.
    """
    sop_class = _text(tags.get('SOPClassUID') or tags.get('SopClassUid'))
    modality = (_text(tags.get('Modality')) or '').upper()
    if sop_class in DOSE_SR_CLASSES:
        return True
    if sop_class in GENERAL_SR_CLASSES:
        return (study_modalities is None or bool(XRAY_MODALITIES
                & {(m or '').upper() for m in study_modalities}))
    return not sop_class and modality == 'SR'


# -- units -------------------------------------------------------------------
_PREFIXES = {'': 1.0, 'n': 1e-9, 'u': 1e-6, 'm': 1e-3, 'c': 1e-2,
    'd': 1e-1, 'k': 1e3}
_ATOMS = {'Gy': ('Gy', 1.0), 'Sv': ('Sv', 1.0), 'm': ('m', 1.0),
    's': ('s', 1.0), 'min': ('s', 60.0), 'h': ('s', 3600.0)}
_FACTOR = re.compile(r'^(n|u|m|c|d|k)?(Gy|Sv|min|h|s|m)(\d)?$')


def _parse_unit(unit: str | None) -> tuple[float, tuple] | None:
    "Return (scale, dimension) of a UCUM product such as 'dGy.cm2'"
    if unit is None:
        return None
    scale, dimension = 1.0, {}
    for factor in unit.strip().split('.'):
        if factor == '1' or re.fullmatch(r'\{[^}]*\}', factor):
            continue
        match = _FACTOR.match(factor)
        if not match:
            return None
        prefix, atom, exponent = match.groups()
        base, atom_scale = _ATOMS[atom]
        exponent = int(exponent or 1)
        scale *= (_PREFIXES[prefix or ''] * atom_scale) ** exponent
        dimension[base] = dimension.get(base, 0) + exponent
    return scale, tuple(sorted(dimension.items()))


def convert(quantity: Quantity | None, unit: str) -> Quantity | None:
    """Return quantity in unit (UCUM), or None if it cannot be converted.

    >>> convert(Quantity(0.0012, 'Gy.m2'), 'Gy.cm2')
    Quantity(value=12.0, unit='Gy.cm2')
    """
    if quantity is None:
        return None
    source, target = _parse_unit(quantity.unit), _parse_unit(unit)
    if source is None or target is None or source[1] != target[1]:
        return None
    return Quantity(round(quantity.value * source[0] / target[0], 12), unit)


_SUPERSCRIPTS = str.maketrans('0123456789', '⁰¹²³⁴⁵⁶⁷⁸⁹')


def display_unit(unit: str | None) -> str:
    "Return a UCUM unit for people: 'uGy.m2' -> 'µGy·m²'"
    if not unit:
        return ''
    parts = []
    for factor in unit.split('.'):
        match = _FACTOR.match(factor)
        if match:
            prefix, atom, exponent = match.groups()
            factor = ((prefix or '').replace('u', 'µ') + atom
                + (exponent or '').translate(_SUPERSCRIPTS))
        parts.append(factor.strip('{}'))
    return '·'.join(parts)


def format_quantity(quantity: Quantity | None, unit: str | None = None,
        digits: int = 2) -> str:
    """Format quantity for display, converted to unit when given.

    A quantity that cannot be converted keeps its recorded unit.
    """
    if quantity is None:
        return ''
    if unit:
        quantity = convert(quantity, unit) or quantity
    return '%.*f %s' % (digits, quantity.value,
        display_unit(quantity.unit))


# -- what a database keeps of a report ----------------------------------------
#: The kind of value (a key of DISPLAY_UNITS) of each total kept
VALUE_KINDS = {
    'ct_dlp_total': 'dlp',
    'ct_effective_dose_total': 'effective_dose',
    'dose_area_product_total': 'dose_area_product',
    'dose_rp_total': 'dose_rp',
    'fluoro_dose_area_product_total': 'dose_area_product',
    'fluoro_dose_rp_total': 'dose_rp',
    'acquisition_dose_area_product_total': 'dose_area_product',
    'acquisition_dose_rp_total': 'dose_rp',
    'total_fluoro_time': 'time',
    'total_acquisition_time': 'time',
    'average_glandular_dose': 'average_glandular_dose',
    }


class DoseValue(NamedTuple):
    "A total of a report as recorded, with its plane and breast"
    concept: str
    quantity: Quantity
    plane: str | None = None
    laterality: str | None = None


def report_values(report: DoseReport) -> list[DoseValue]:
    """Return the totals of report as recorded: CT totals, then each
    plane's totals and average glandular dose per breast"""
    values = [DoseValue(name, getattr(report, name))
        for name in ['ct_dlp_total', 'ct_effective_dose_total']
        if getattr(report, name) is not None]
    for plane in report.accumulated:
        values.extend(DoseValue(name, getattr(plane, name), plane.plane)
            for name in PROJECTION_TOTALS
            if getattr(plane, name) is not None)
        values.extend(DoseValue('average_glandular_dose', dose, plane.plane,
                side) for side, dose in plane.average_glandular_dose.items())
    return values


#: The unit of each value of summarize(), and of the reference levels
SUMMARY_UNITS = {
    'ctdivol': 'mGy',
    'dlp': 'mGy.cm',
    'dap': 'Gy.cm2',
    'dose_rp': 'mGy',
    'fluoro_time': 's',
    'agd': 'mGy',
    }
#: The values that a diagnostic reference level may bound
DRL_QUANTITIES = ('ctdivol', 'dlp', 'dap', 'agd')


def summarize(report: DoseReport) -> tuple[dict[str, float | None],
        list[Problem]]:
    """Return the values of a study's report in SUMMARY_UNITS, to add up
    and compare, and what could not be converted.

    ``ctdivol`` is the highest CTDIvol of the CT events; ``dlp`` the CT
    DLP total (the sum of the events' DLP when the total is missing);
    ``dap``, ``dose_rp`` and ``fluoro_time`` the sums over the planes;
    ``agd`` the highest accumulated average glandular dose of a breast.
    None when the report records no such value (or is not understood).
    """
    summary = dict.fromkeys(SUMMARY_UNITS)
    problems = []
    if report.status != OK:
        return summary, problems

    def converted(name, quantities, how):
        values = []
        for quantity in filter(None, quantities):
            value = convert(quantity, SUMMARY_UNITS[name])
            if value is None:
                problems.append(_problem('not_convertible', quantity=name,
                        unit=quantity.unit or '', target=SUMMARY_UNITS[name]))
            else:
                values.append(value.value)
        summary[name] = round(how(values), 9) if values else None

    events = report.ct_events
    planes = report.accumulated
    converted('ctdivol', [e.ctdivol for e in events], max)
    converted('dlp', [report.ct_dlp_total] if report.ct_dlp_total
        else [e.dlp for e in events], sum)
    converted('dap', [p.dose_area_product_total for p in planes], sum)
    converted('dose_rp', [p.dose_rp_total for p in planes], sum)
    converted('fluoro_time', [p.total_fluoro_time for p in planes], sum)
    converted('agd', [d for p in planes
            for d in p.average_glandular_dose.values()], max)
    return summary, problems


def exceeded_levels(summary: Mapping[str, float | None],
        levels: Mapping[str, float | None]) -> list[str]:
    """Return the names of the values of summary above their diagnostic
    reference level (both in SUMMARY_UNITS); a missing level or value is
    not compared"""
    return [name for name in DRL_QUANTITIES
        if levels.get(name) is not None and summary.get(name) is not None
        and summary[name] > levels[name]]
