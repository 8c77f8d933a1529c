# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The radiation dose of studies, read from their Radiation Dose Structured
Reports at sync (``dose`` reads them), the diagnostic reference levels of
the imaging tests, the Dose tab of results and the dose history of
patients."""
import datetime
from collections import defaultdict

from sql import Literal, Null
from sql.conditionals import Coalesce
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval, If
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access

from trytond.modules.health_imaging.access import (
    DomainAccessMixin, ReadonlyFieldsMixin, check_field_search)

from . import dose
from .worklist_publish import company_zone, to_utc

STATUSES = [
    (dose.OK, "Read"),
    (dose.NOT_UNDERSTOOD, "Not Understood"),
    (dose.NOT_DOSE, "Not a Dose Report"),
    ]
#: The reports people see: the SR instances that are no dose report are
#: kept only so that a sync does not read them again
SHOWN = [dose.OK, dose.NOT_UNDERSTOOD]
KINDS = [
    (None, ''),
    (dose.CT, "CT"),
    (dose.PROJECTION, "Projection X-Ray and Fluoroscopy"),
    (dose.MAMMOGRAPHY, "Mammography"),
    ]
PHANTOMS = [
    (None, ''),
    ('head', "Head (16 cm)"),
    ('body', "Body (32 cm)"),
    ('other', "Other"),
    ]
PLANES = [
    (None, ''),
    ('single', "Single Plane"),
    ('a', "Plane A"),
    ('b', "Plane B"),
    ('other', "Other"),
    ]
LATERALITIES = [
    (None, ''),
    ('right', "Right Breast"),
    ('left', "Left Breast"),
    ('both', "Both Breasts"),
    ('unknown', "Not Recorded"),
    ('other', "Other"),
    ]
CONCEPTS = [
    ('ct_dlp_total', "CT Dose Length Product Total"),
    ('ct_effective_dose_total', "CT Effective Dose Total"),
    ('dose_area_product_total', "Dose Area Product Total"),
    ('dose_rp_total', "Dose (RP) Total"),
    ('fluoro_dose_area_product_total', "Fluoro Dose Area Product Total"),
    ('fluoro_dose_rp_total', "Fluoro Dose (RP) Total"),
    ('acquisition_dose_area_product_total',
        "Acquisition Dose Area Product Total"),
    ('acquisition_dose_rp_total', "Acquisition Dose (RP) Total"),
    ('total_fluoro_time', "Total Fluoro Time"),
    ('total_acquisition_time', "Total Acquisition Time"),
    ('average_glandular_dose', "Accumulated Average Glandular Dose"),
    ]
#: The diagnostic reference level field of the test for each value
DRL_FIELDS = {name: 'drl_' + name for name in dose.DRL_QUANTITIES}


def _choice(value, choices):
    "Return (value, None) if value is one of choices, else ('other', value)"
    if value is None or value in dict(choices):
        return value, None
    return 'other', value


def _quantity(value, unit):
    return dose.Quantity(value, unit) if value is not None else None


def _storable(text):
    """Return text without NUL, which PostgreSQL refuses (a reason may
    quote a file's or Orthanc's bytes), None when empty"""
    return text.replace('\x00', '') or None if text else None


def problem_text(problem):
    """Return the text of a dose.Problem in the language of the context
    (the user's, or the company's for the scheduler), as it is stored"""
    if not isinstance(problem, dose.Problem):
        return problem
    params = {k: problem_text(v) for k, v in problem.params.items()}
    return gettext('health_orthanc.msg_dose_problem_%s' % problem.code,
        **params)


def _summary_values(summary):
    return {name: summary[name] for name in dose.SUMMARY_UNITS}


class RadiationDose(
        DomainAccessMixin, ReadonlyFieldsMixin, ModelSQL, ModelView):
    "Radiation Dose Report"
    __name__ = 'gnuhealth.orthanc.dose'

    study = fields.Many2One(
        'gnuhealth.orthanc.study', "Study", required=True, readonly=True,
        ondelete='CASCADE')
    orthanc_id = fields.Char(
        "Orthanc Instance", required=True, readonly=True,
        help="Orthanc's identifier of the dose report instance.")
    patient = fields.Function(fields.Many2One(
            'gnuhealth.patient', "Patient"),
        'get_study_values', searcher='search_study_field')
    study_date = fields.Function(fields.Date("Study Date"),
        'get_study_values', searcher='search_study_field')
    status = fields.Selection(STATUSES, "Status", required=True,
        readonly=True)
    reason = fields.Char(
        "Reason", readonly=True, states={'invisible': ~Eval('reason')},
        help="Why the report could not be read.")
    warnings = fields.Text(
        "Warnings", readonly=True, states={'invisible': ~Eval('warnings')},
        help="Values the report should hold and does not.")
    kind = fields.Selection(KINDS, "Kind", readonly=True)
    kind_string = kind.translated('kind')
    template = fields.Char("Template", readonly=True)
    procedure = fields.Char("Procedure", readonly=True)
    sop_instance_uid = fields.Char("SOPInstanceUID", readonly=True)
    manufacturer = fields.Char("Manufacturer", readonly=True)
    model = fields.Char("Model", readonly=True)
    station = fields.Char("Station", readonly=True)
    started = fields.DateTime("Irradiation Start", readonly=True)
    ended = fields.DateTime("Irradiation End", readonly=True)
    event_count = fields.Integer("Irradiation Events", readonly=True)
    ctdivol = fields.Float(
        "CTDIvol (mGy)", digits=(16, 2), readonly=True,
        help="The highest mean CTDIvol of the CT acquisitions.")
    dlp = fields.Float(
        "DLP (mGy·cm)", digits=(16, 2), readonly=True,
        help="The CT dose length product total.")
    dap = fields.Float(
        "DAP (Gy·cm²)", digits=(16, 3), readonly=True,
        help="The dose area product total of the planes.")
    dose_rp = fields.Float(
        "Dose at RP (mGy)", digits=(16, 2), readonly=True,
        help="The dose at the reference point, total of the planes.")
    fluoro_time = fields.Float(
        "Fluoro Time (s)", digits=(16, 1), readonly=True,
        help="The total fluoroscopy time of the planes.")
    agd = fields.Float(
        "AGD (mGy)", digits=(16, 2), readonly=True,
        help="The highest accumulated average glandular dose of a breast.")
    events = fields.One2Many(
        'gnuhealth.orthanc.dose.event', 'dose', "CT Acquisitions",
        readonly=True)
    values = fields.One2Many(
        'gnuhealth.orthanc.dose.value', 'dose', "Values as Recorded",
        readonly=True)
    test = fields.Function(fields.Many2One(
            'gnuhealth.imaging.test', "Test",
            help="The imaging test of the study's request or result, "
            "whose reference levels apply."),
        'get_test')
    above_reference = fields.Function(fields.Boolean(
            "Above Reference Level",
            help="A value is above the diagnostic reference level of the "
            "test."),
        'get_above_reference', searcher='search_above_reference')
    exceeded = fields.Function(fields.Char("Above Reference"),
        'get_above_reference')
    cumulative_dlp = fields.Function(fields.Float(
            "Cumulative DLP (mGy·cm)", digits=(16, 2),
            help="The patient's DLP added up from the start of the period "
            "to this study."),
        'get_cumulative')
    cumulative_dap = fields.Function(fields.Float(
            "Cumulative DAP (Gy·cm²)", digits=(16, 3),
            help="The patient's DAP added up from the start of the period "
            "to this study."),
        'get_cumulative')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('study_date', 'DESC NULLS LAST'), ('id', 'DESC')]
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t, (t.orthanc_id, Index.Equality())),
                Index(t, (t.study, Index.Range())),
                })

    def get_rec_name(self, name):
        return '%s %s' % (self.study.rec_name, self.kind_string or '')

    @classmethod
    def get_study_values(cls, doses, names):
        result = {n: {} for n in names}
        for record in doses:
            study = record.study
            if 'patient' in names:
                result['patient'][record.id] = (
                    study.patient.id if study.patient else None)
            if 'study_date' in names:
                result['study_date'][record.id] = study.study_date
        return result

    @classmethod
    def search_study_field(cls, name, clause):
        return [('study.' + clause[0],) + tuple(clause[1:])]

    @classmethod
    def order_study_date(cls, tables):
        Study = Pool().get('gnuhealth.orthanc.study')
        table, _ = tables[None]
        if 'study' not in tables:
            study = Study.__table__()
            tables['study'] = {None: (study, table.study == study.id)}
        return Study.study_date.convert_order(
            'study_date', tables['study'], Study)

    @classmethod
    def get_test(cls, doses, name):
        "The test of the study's request, else of a result reading it"
        ResultStudy = Pool().get(
            'gnuhealth.imaging.test.result-gnuhealth.orthanc.study')
        tests = {}
        others = []
        for record in doses:
            request = record.study.request
            if request:
                tests[record.id] = request.requested_test.id
            else:
                others.append(record)
        by_study = {}
        with without_check_access():
            for sub_doses in grouped_slice(others):
                for link in ResultStudy.search([
                            ('study', 'in',
                                [d.study.id for d in sub_doses]),
                            ], order=[('id', 'ASC')]):
                    by_study.setdefault(
                        link.study.id, link.result.requested_test.id)
        for record in others:
            tests[record.id] = by_study.get(record.study.id)
        return tests

    def summary(self):
        return {name: getattr(self, name) for name in dose.SUMMARY_UNITS}

    def exceeded_levels(self, test):
        "Return the names of the values above the levels of test"
        if test is None or self.status != dose.OK:
            return []
        return dose.exceeded_levels(self.summary(), test.dose_levels())

    @classmethod
    def get_above_reference(cls, doses, names):
        tests = cls.get_test(doses, 'test')
        Test = Pool().get('gnuhealth.imaging.test')
        result = {n: {} for n in names}
        for record in doses:
            test = Test(tests[record.id]) if tests[record.id] else None
            exceeded = record.exceeded_levels(test)
            if 'above_reference' in names:
                result['above_reference'][record.id] = bool(exceeded)
            if 'exceeded' in names:
                result['exceeded'][record.id] = record.exceeded_text(
                    exceeded, test) or None
        return result

    def exceeded_text(self, names, test):
        levels = test.dose_levels() if test else {}
        return '; '.join(gettext('health_orthanc.msg_dose_exceeded',
                quantity=gettext('health_orthanc.msg_dose_%s' % name),
                value='%.2f' % getattr(self, name),
                level='%.2f' % levels[name],
                unit=dose.display_unit(dose.SUMMARY_UNITS[name]))
            for name in names)

    @classmethod
    def search_above_reference(cls, name, clause):
        _, operator, value = clause[:3]
        above = (operator == '=') == bool(value)
        return [('id', 'in' if above else 'not in',
                cls._above_reference_query())]

    @classmethod
    def _above_reference_query(cls):
        """The ids of the doses above a level of the test of their study's
        request, or when the study has no request, of a result reading it"""
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Request = pool.get('gnuhealth.imaging.test.request')
        Result = pool.get('gnuhealth.imaging.test.result')
        ResultStudy = pool.get(
            'gnuhealth.imaging.test.result-gnuhealth.orthanc.study')
        Test = pool.get('gnuhealth.imaging.test')
        dose_t, study, request, link, result, test = (
            cls.__table__(), Study.__table__(), Request.__table__(),
            ResultStudy.__table__(), Result.__table__(), Test.__table__())
        from_result = link.join(result,
            condition=link.result == result.id
            ).select(link.study, result.requested_test)
        query = (dose_t
            .join(study, condition=dose_t.study == study.id)
            .join(request, 'LEFT', condition=study.request == request.id)
            .join(from_result, 'LEFT',
                condition=(study.request == Null)
                & (from_result.study == study.id))
            .join(test, condition=test.id == Coalesce(
                    request.requested_test, from_result.requested_test)))
        exceeded = Literal(False)
        for name, field in DRL_FIELDS.items():
            level = getattr(test, field)
            exceeded |= ((level != Null)
                & (getattr(dose_t, name) > level))
        return query.select(dose_t.id,
            where=(dose_t.status == dose.OK) & exceeded)

    @classmethod
    def get_cumulative(cls, doses, names):
        """The DLP and DAP of the patient's studies added up, in the order
        of their dates, from the period's start (context from_date)"""
        start = Transaction().context.get('from_date')
        patients = {d.patient.id for d in doses if d.patient}
        totals = {}
        for sub_ids in grouped_slice(list(patients)):
            domain = [('patient', 'in', list(sub_ids)),
                ('status', '=', dose.OK)]
            if start:
                domain.append(('study_date', '>=', start))
            history = cls.search(domain, order=[('id', 'ASC')])
            history.sort(key=lambda d: (d.study_date or datetime.date.min,
                    d.id))
            running = defaultdict(lambda: [0.0, 0.0])
            for record in history:
                sums = running[record.patient.id]
                sums[0] += record.dlp or 0.0
                sums[1] += record.dap or 0.0
                totals[record.id] = tuple(sums)
        result = {n: {} for n in names}
        for record in doses:
            dlp, dap = totals.get(record.id, (None, None))
            if 'cumulative_dlp' in names:
                result['cumulative_dlp'][record.id] = dlp
            if 'cumulative_dap' in names:
                result['cumulative_dap'][record.id] = dap
        return result

    @classmethod
    def instances_read(cls, server, orthanc_ids):
        "Return the Orthanc IDs of the instances of server read already"
        Study = Pool().get('gnuhealth.orthanc.study')
        dose = cls.__table__()
        return Study.held_on_server(dose, dose.orthanc_id, server, orthanc_ids)

    @classmethod
    def store_reports(cls, server, reports):
        """Create the dose reports that a sync page read: [(study Orthanc
        ID, instance Orthanc ID, dose.DoseReport)]; one create per model.

        Return [(instance Orthanc ID, reason)] of the reports whose values
        could not be kept: each is stored Not Understood with its reason,
        so that one bad report never stops the rest of the page.  Reasons
        and warnings are stored translated in the language of the context.
        """
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Event = pool.get('gnuhealth.orthanc.dose.event')
        Value = pool.get('gnuhealth.orthanc.dose.value')
        studies = Study.orthanc_ids(server, {s for s, _, _ in reports})
        zone = company_zone()
        vlist, kept, errors = [], [], []
        for study_id, instance_id, report in reports:
            if study_id not in studies:
                continue
            try:
                values = cls._report_values(
                    report, studies[study_id], instance_id, zone)
            except Exception as exception:
                report = dose.DoseReport(dose.NOT_UNDERSTOOD,
                    dose.Problem('values_not_kept', {
                            'error': str(exception)[:200]
                            or exception.__class__.__name__}),
                    sop_instance_uid=report.sop_instance_uid)
                values = cls._report_values(
                    report, studies[study_id], instance_id, zone)
                errors.append((instance_id, values['reason']))
            vlist.append(values)
            kept.append(report)
        with without_check_access():
            records = cls.create(vlist)
            Event.create([Event.event_values(record, number, event)
                    for record, report in zip(records, kept)
                    for number, event in enumerate(report.ct_events, 1)])
            Value.create([Value.dose_values(record, value)
                    for record, report in zip(records, kept)
                    for value in dose.report_values(report)])
        return errors

    @classmethod
    def _report_values(cls, report, study, instance_id, zone):
        summary, problems = dose.summarize(report)
        procedure = report.procedure
        started = cls._utc(report.started, zone, 'start', problems)
        ended = cls._utc(report.ended, zone, 'end', problems)
        return dict(_summary_values(summary),
            study=study,
            orthanc_id=instance_id,
            status=report.status,
            reason=_storable(problem_text(report.reason)),
            warnings=_storable('\n'.join(
                    problem_text(p) for p in report.warnings + problems)),
            kind=report.kind,
            template=report.template,
            procedure=(procedure.meaning or procedure.value)
            if procedure else None,
            sop_instance_uid=report.sop_instance_uid,
            manufacturer=report.manufacturer,
            model=report.model,
            station=report.station,
            started=started,
            ended=ended,
            event_count=(report.ct_event_count if report.kind == dose.CT
                else report.event_count))

    @staticmethod
    def _utc(value, zone, name, problems):
        """Return value in UTC, None with a problem when out of range;
        name is 'start' or 'end'"""
        try:
            return to_utc(value, zone)
        except (OverflowError, ValueError):
            # As year 1 or 9999 in a zone ahead of or behind UTC
            problems.append(dose.Problem('%s_out_of_range' % name,
                    {'value': str(value)}))
            return None


class RadiationDoseEvent(
        DomainAccessMixin, ReadonlyFieldsMixin, ModelSQL, ModelView):
    "CT Acquisition"
    __name__ = 'gnuhealth.orthanc.dose.event'

    dose = fields.Many2One(
        'gnuhealth.orthanc.dose', "Dose Report", required=True,
        readonly=True, ondelete='CASCADE')
    number = fields.Integer("Number", readonly=True)
    protocol = fields.Char("Protocol", readonly=True)
    target_region = fields.Char("Target Region", readonly=True)
    acquisition_type = fields.Char("Acquisition Type", readonly=True)
    irradiation_event_uid = fields.Char("Irradiation Event UID",
        readonly=True)
    ctdivol_value = fields.Float("CTDIvol as Recorded", readonly=True)
    ctdivol_unit = fields.Char("CTDIvol Unit", readonly=True)
    dlp_value = fields.Float("DLP as Recorded", readonly=True)
    dlp_unit = fields.Char("DLP Unit", readonly=True)
    phantom = fields.Selection(PHANTOMS, "Phantom", readonly=True)
    phantom_name = fields.Char("Phantom Name", readonly=True)
    ctdivol = fields.Function(fields.Char("CTDIvol"), 'get_display')
    dlp = fields.Function(fields.Char("DLP"), 'get_display')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('dose', 'ASC'), ('number', 'ASC'), ('id', 'ASC')]
        t = cls.__table__()
        cls._sql_indexes.add(Index(t, (t.dose, Index.Range())))

    def get_display(self, name):
        return dose.format_quantity(
            _quantity(getattr(self, name + '_value'),
                getattr(self, name + '_unit')),
            dose.DISPLAY_UNITS[name]) or None

    @staticmethod
    def event_values(record, number, event):
        def text(code):
            return (code.meaning or code.value) if code else None
        return {
            'dose': record.id,
            'number': number,
            'protocol': event.protocol,
            'target_region': text(event.target_region),
            'acquisition_type': text(event.acquisition_type),
            'irradiation_event_uid': event.irradiation_event_uid,
            'ctdivol_value': event.ctdivol.value if event.ctdivol else None,
            'ctdivol_unit': event.ctdivol.unit if event.ctdivol else None,
            'dlp_value': event.dlp.value if event.dlp else None,
            'dlp_unit': event.dlp.unit if event.dlp else None,
            'phantom': event.phantom_type,
            'phantom_name': text(event.phantom),
            }


class RadiationDoseValue(
        DomainAccessMixin, ReadonlyFieldsMixin, ModelSQL, ModelView):
    "Recorded Dose Value"
    __name__ = 'gnuhealth.orthanc.dose.value'

    dose = fields.Many2One(
        'gnuhealth.orthanc.dose', "Dose Report", required=True,
        readonly=True, ondelete='CASCADE')
    concept = fields.Selection(CONCEPTS, "Quantity", readonly=True)
    plane = fields.Selection(PLANES, "Plane", readonly=True)
    plane_name = fields.Char("Plane Name", readonly=True)
    laterality = fields.Selection(LATERALITIES, "Laterality",
        readonly=True)
    laterality_name = fields.Char("Laterality Name", readonly=True)
    value = fields.Float("Value as Recorded", readonly=True)
    unit = fields.Char("Unit as Recorded", readonly=True)
    display = fields.Function(fields.Char("Value"), 'get_display')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [('dose', 'ASC'), ('id', 'ASC')]
        t = cls.__table__()
        cls._sql_indexes.add(Index(t, (t.dose, Index.Range())))

    def get_display(self, name):
        unit = dose.DISPLAY_UNITS.get(dose.VALUE_KINDS.get(self.concept))
        return dose.format_quantity(
            _quantity(self.value, self.unit), unit) or None

    @staticmethod
    def dose_values(record, value):
        plane, plane_name = _choice(value.plane, PLANES)
        laterality, laterality_name = _choice(value.laterality, LATERALITIES)
        return {
            'dose': record.id,
            'concept': value.concept,
            'plane': plane,
            'plane_name': plane_name,
            'laterality': laterality,
            'laterality_name': laterality_name,
            'value': value.quantity.value,
            'unit': value.quantity.unit,
            }


class RadiationDoseContext(ModelView):
    "Radiation Dose Context"
    __name__ = 'gnuhealth.orthanc.dose.context'

    from_date = fields.Date(
        "From Date",
        domain=[If(Eval('to_date') & Eval('from_date'),
                ('from_date', '<=', Eval('to_date')), ())],
        help="The first study date of the period (empty: from the first).")
    to_date = fields.Date(
        "To Date",
        help="The last study date of the period (empty: to the last).")

    @classmethod
    def default_from_date(cls):
        return datetime.date.today() - datetime.timedelta(days=365)


def _level(name, string, help):
    "A diagnostic reference level: empty, or above zero"
    return fields.Float(string, digits=(16, 2), help=help,
        domain=['OR', (name, '=', None), (name, '>', 0)])


class ImagingTest(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging.test'

    drl_ctdivol = _level('drl_ctdivol', "DRL CTDIvol (mGy)",
        "The diagnostic reference level of the mean CTDIvol, compared with "
        "the highest of a study's CT acquisitions.")
    drl_dlp = _level('drl_dlp', "DRL DLP (mGy·cm)",
        "The diagnostic reference level of a study's CT dose length product "
        "total.")
    drl_dap = _level('drl_dap', "DRL DAP (Gy·cm²)",
        "The diagnostic reference level of a study's dose area product "
        "total (all planes).")
    drl_agd = _level('drl_agd', "DRL AGD (mGy)",
        "The diagnostic reference level of a study's accumulated average "
        "glandular dose of one breast.")

    def dose_levels(self):
        "Return {value name: level} in dose.SUMMARY_UNITS"
        return {name: getattr(self, field)
            for name, field in DRL_FIELDS.items()}


class ImagingTestResult(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging.test.result'

    doses = fields.Function(fields.One2Many(
            'gnuhealth.orthanc.dose', None, "Radiation Dose",
            help="The dose reports of the result's studies."),
        'get_doses')
    dose_above_reference = fields.Function(fields.Boolean(
            "Dose above Reference",
            help="A study of the result is above a diagnostic reference "
            "level of the test."),
        'get_doses', searcher='search_dose_above_reference')

    @classmethod
    def get_doses(cls, results, names):
        Dose = Pool().get('gnuhealth.orthanc.dose')
        by_study = defaultdict(list)
        studies = {s.id for r in results for s in r.studies}
        for sub_ids in grouped_slice(list(studies)):
            for record in Dose.search([
                        ('study', 'in', list(sub_ids)),
                        ('status', 'in', SHOWN),
                        ]):
                by_study[record.study.id].append(record)
        result = {n: {} for n in names}
        for record in results:
            doses = [d for s in record.studies for d in by_study[s.id]]
            if 'doses' in names:
                result['doses'][record.id] = [d.id for d in doses]
            if 'dose_above_reference' in names:
                result['dose_above_reference'][record.id] = any(
                    d.exceeded_levels(record.requested_test) for d in doses)
        return result

    @classmethod
    def search_dose_above_reference(cls, name, clause):
        # Field access is not checked in nested domains (see access.py)
        check_field_search(cls, name)
        pool = Pool()
        Dose = pool.get('gnuhealth.orthanc.dose')
        ResultStudy = pool.get(
            'gnuhealth.imaging.test.result-gnuhealth.orthanc.study')
        dose_t, link = Dose.__table__(), ResultStudy.__table__()
        query = link.join(dose_t, condition=dose_t.study == link.study
            ).select(link.result,
            where=dose_t.id.in_(Dose._above_reference_query()))
        _, operator, value = clause[:3]
        above = (operator == '=') == bool(value)
        return [('id', 'in' if above else 'not in', query)]


class Patient(metaclass=PoolMeta):
    __name__ = 'gnuhealth.patient'

    radiation_doses = fields.Function(fields.One2Many(
            'gnuhealth.orthanc.dose', None, "Radiation Dose",
            help="The dose reports of the patient's studies, newest "
            "first."),
        'get_radiation_doses')
    dose_dlp_year = fields.Function(fields.Float(
            "DLP, Last 12 Months (mGy·cm)", digits=(16, 2)),
        'get_radiation_doses')
    dose_dap_year = fields.Function(fields.Float(
            "DAP, Last 12 Months (Gy·cm²)", digits=(16, 3)),
        'get_radiation_doses')
    dose_dlp_total = fields.Function(fields.Float(
            "DLP, All Studies (mGy·cm)", digits=(16, 2)),
        'get_radiation_doses')
    dose_dap_total = fields.Function(fields.Float(
            "DAP, All Studies (Gy·cm²)", digits=(16, 3)),
        'get_radiation_doses')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._buttons.update({
                'open_dose_history': {
                    'icon': 'tryton-graph',
                    },
                })

    @classmethod
    def get_radiation_doses(cls, patients, names):
        Dose = Pool().get('gnuhealth.orthanc.dose')
        year_ago = datetime.date.today() - datetime.timedelta(days=365)
        result = {n: {p.id: [] if n == 'radiation_doses' else 0.0
                for p in patients} for n in names}
        for sub_ids in grouped_slice([p.id for p in patients]):
            for record in Dose.search([
                        ('patient', 'in', list(sub_ids)),
                        ('status', 'in', SHOWN),
                        ]):
                patient = record.patient.id
                if 'radiation_doses' in names:
                    result['radiation_doses'][patient].append(record.id)
                recent = (record.study_date or datetime.date.min) >= (
                    year_ago)
                for name, value in [('dlp', record.dlp),
                        ('dap', record.dap)]:
                    for period, counted in [('total', True),
                            ('year', recent)]:
                        key = 'dose_%s_%s' % (name, period)
                        if key in names and counted and value:
                            result[key][patient] += value
        return result

    @classmethod
    @ModelView.button_action('health_orthanc.act_dose_history')
    def open_dose_history(cls, patients):
        pass
