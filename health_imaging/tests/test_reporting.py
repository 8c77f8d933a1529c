# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The reporting measures on constructed datasets with known answers, on
the database of the test environment (SQLite or PostgreSQL)."""
import datetime
import math
import random
import statistics
import unittest

from trytond import backend
from trytond.exceptions import UserError
from trytond.model.exceptions import AccessError
from trytond.modules.company.tests import create_company, set_company
from trytond.pool import Pool
from trytond.pyson import PYSONDecoder
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

from ..reporting import period_start, periods
from .tools import create_patient, create_request, create_user

MONDAY = datetime.datetime(2026, 1, 5)  # Monday 5 January 2026
HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
JANUARY = {
    'from_date': datetime.date(2026, 1, 5),
    'to_date': datetime.date(2026, 1, 18),
    }


def percentile(values, fraction):
    """The percentile of our definition, PostgreSQL's percentile_cont:
    linear interpolation between the values at the closest ranks of
    (n - 1) * fraction, ranks counted from 0 on the sorted values."""
    values = sorted(values)
    position = (len(values) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def reference(values):
    "Return the median and the 90th percentile from Python's statistics"
    if len(values) == 1:
        return values[0], values[0]
    return (statistics.median(values),
        statistics.quantiles(values, n=10, method='inclusive')[8])


def create_professional(name):
    pool = Pool()
    Party = pool.get('party.party')
    Professional = pool.get('gnuhealth.healthprofessional')
    party, = Party.create([{
                'name': name, 'lastname': 'Reader', 'is_person': True,
                'is_healthprof': True, 'fed_country': 'XX', 'gender': 'f',
                }])
    professional, = Professional.create([{'party': party.id}])
    return professional


def create_test(
        patient, code, ordered, requested=None, performed_date=None,
        performed=None, completed=(), reader=None, urgent=False,
        cancel=False, draft=False, legacy=False):
    """Create a request ordered at ordered and take it as far as the dates
    given: requested (None leaves it a draft; legacy=True forgets the date,
    as before this version), performed_date (from the images), performed
    (the result's date), completed (the completions, the result reset to
    draft between them; draft=True resets it at the end)"""
    pool = Pool()
    Request = pool.get('gnuhealth.imaging.test.request')
    Result = pool.get('gnuhealth.imaging.test.result')
    request = create_request(
        patient, test_code=code, date=ordered, urgent=urgent)
    if requested is not None:
        Request.requested([request])
        Request.write([request], {
                'requested_date': None if legacy else requested})
    if cancel:
        Request.cancel([request])
    if performed_date:
        Request.write([request], {'performed_date': performed_date})
    result = None
    if performed:
        result, = Request.create_results([request])
        Result.write([result], {
                'date': performed, 'comment': "Normal.", 'doctor': reader})
        for index, date in enumerate(completed):
            if index:
                Result.draft([result])
            Result.complete([result])
            Result.write([result], {'completed_date': date})
        if draft:
            Result.draft([result])
    return request, result


def create_result(patient, code, performed, completed, reader):
    "Create a completed result without a request"
    pool = Pool()
    Result = pool.get('gnuhealth.imaging.test.result')
    Test = pool.get('gnuhealth.imaging.test')
    test, = Test.search([('code', '=', code)])
    result, = Result.create([{
                'patient': patient.id, 'requested_test': test.id,
                'date': performed, 'comment': "Normal.", 'doctor': reader,
                }])
    Result.complete([result])
    Result.write([result], {'completed_date': completed})
    return result


def create_dataset():
    """The dataset of January 2026 whose answers are in the tests.

    A  DX routine: ordered 5th 8:00, requested 9:00, performed (result's
       date) 10:00, completed 12:00 by Ruth
    B  DX urgent: ordered 5th 8:00, requested 8:30, performed (from the
       images) 9:00, completed the 6th 9:00 by Sara
    C  CT routine: ordered 6th 10:00, requested 11:00, performed the 7th
       10:00, result in draft
    D  CT routine: ordered 7th 10:00, requested 12:00, not performed
    E  DX routine, cancelled; F  MR routine, still a draft order
    G  DX routine: ordered 12th 8:00, requested 9:00, performed 10:00,
       completed 11:00 by Ruth, reset to draft, completed the 14th 15:00
    H  CT result without request: performed 8th 10:00, completed 14:00 by
       Sara
    I  DX routine: ordered 8th 8:00, requested 9:00, performed 10:00,
       completed then reset to draft
    """
    patient = create_patient()
    ruth = create_professional('Ruth')
    sara = create_professional('Sara')
    d = MONDAY
    create_test(
        patient, 'IMG-DX-CHEST', d + 8 * HOUR, requested=d + 9 * HOUR,
        performed=d + 10 * HOUR, completed=[d + 12 * HOUR], reader=ruth)
    create_test(
        patient, 'IMG-DX-CHEST', d + 8 * HOUR, requested=d + 8.5 * HOUR,
        performed_date=d + 9 * HOUR, performed=d + 11 * HOUR,
        completed=[d + DAY + 9 * HOUR], reader=sara, urgent=True)
    create_test(
        patient, 'IMG-CT-HEAD', d + DAY + 10 * HOUR,
        requested=d + DAY + 11 * HOUR, performed=d + 2 * DAY + 10 * HOUR)
    create_test(
        patient, 'IMG-CT-HEAD', d + 2 * DAY + 10 * HOUR,
        requested=d + 2 * DAY + 12 * HOUR)
    create_test(
        patient, 'IMG-DX-CHEST', d + 2 * DAY, requested=d + 2 * DAY,
        cancel=True)
    create_test(patient, 'IMG-MR-BRAIN', d)
    create_test(
        patient, 'IMG-DX-CHEST', d + 7 * DAY + 8 * HOUR,
        requested=d + 7 * DAY + 9 * HOUR, performed=d + 7 * DAY + 10 * HOUR,
        completed=[d + 7 * DAY + 11 * HOUR, d + 9 * DAY + 15 * HOUR],
        reader=ruth)
    create_result(
        patient, 'IMG-CT-HEAD', d + 3 * DAY + 10 * HOUR,
        d + 3 * DAY + 14 * HOUR, sara)
    create_test(
        patient, 'IMG-DX-CHEST', d + 3 * DAY + 8 * HOUR,
        requested=d + 3 * DAY + 9 * HOUR, performed=d + 3 * DAY + 10 * HOUR,
        completed=[d + 3 * DAY + 11 * HOUR], draft=True, reader=ruth)
    return ruth, sara


def counts(records):
    return [(r.requests, r.performed, r.completed) for r in records]


class PeriodTestCase(unittest.TestCase):
    "The periods of the time grains"

    def test_period_start(self):
        for grain, value, expected in [
                ('day', datetime.datetime(2026, 1, 7, 23, 59), (2026, 1, 7)),
                ('week', datetime.date(2026, 1, 5), (2026, 1, 5)),
                ('week', datetime.date(2026, 1, 11), (2026, 1, 5)),
                ('week', datetime.date(2026, 1, 1), (2025, 12, 29)),
                ('month', datetime.datetime(2026, 2, 28, 12), (2026, 2, 1)),
                ]:
            with self.subTest(grain=grain, value=value):
                self.assertEqual(
                    period_start(grain, value), datetime.date(*expected))

    def test_periods(self):
        start, end = datetime.date(2026, 1, 7), datetime.date(2026, 3, 2)
        self.assertEqual(len(periods('day', start, end)), 55)
        self.assertEqual(
            periods('week', start, end)[:2],
            [datetime.date(2026, 1, 5), datetime.date(2026, 1, 12)])
        self.assertEqual(periods('month', start, end), [
                datetime.date(2026, 1, 1), datetime.date(2026, 2, 1),
                datetime.date(2026, 3, 1)])
        self.assertEqual(periods('day', end, start), [])

    def test_percentile_definition(self):
        "Our percentile is statistics' inclusive quantiles"
        rng = random.Random(3)
        for values in [[1, 2], [3, 3], [1, 2, 3, 4], [5, 1, 1, 2, 9],
                [rng.uniform(0, 100) for _ in range(11)]]:
            median, p90 = reference(values)
            self.assertAlmostEqual(percentile(values, 0.5), median)
            self.assertAlmostEqual(percentile(values, 0.9), p90)
        self.assertEqual(percentile([7], 0.9), 7)


class ReportingTestCase(unittest.TestCase):
    "Imaging reporting"

    @classmethod
    def setUpClass(cls):
        activate_module('health_imaging')

    def assertHours(self, record, expected):
        "Check the turnaround fields of record against expected, in hours"
        for name, value in expected.items():
            with self.subTest(record=record.rec_name, field=name):
                actual = getattr(record, name)
                if value is None:
                    self.assertIsNone(actual)
                else:
                    self.assertAlmostEqual(actual, value, places=4)

    @with_transaction()
    def test_transition_dates(self):
        "Request sets the requested date, Complete the completed date"
        pool = Pool()
        Request = pool.get('gnuhealth.imaging.test.request')
        Result = pool.get('gnuhealth.imaging.test.result')
        request = create_request(create_patient())
        self.assertIsNone(request.requested_date)
        before = datetime.datetime.now().replace(microsecond=0)
        Request.requested([request])
        self.assertGreaterEqual(request.requested_date, before)
        self.assertIsNone(Request.copy([request])[0].requested_date)
        result, = Request.create_results([request])
        self.assertIsNone(result.completed_date)
        Result.write([result], {'comment': "Normal."})
        Result.complete([result])
        first = result.completed_date
        self.assertGreaterEqual(first, before)
        self.assertIsNone(
            Result.copy([result], {'request': None})[0].completed_date)
        Result.draft([result])
        self.assertIsNone(result.completed_date)
        Result.complete([result])
        self.assertGreaterEqual(result.completed_date, first)

        other = create_request(create_patient('Bob'))
        Request.requested([other])
        Request.cancel([other])
        Request.draft([other])
        self.assertIsNone(other.requested_date)

    @with_transaction()
    def test_activity_per_period(self):
        "Requests, performed studies and completed results per period"
        Activity = Pool().get('gnuhealth.imaging.reporting.activity')
        create_dataset()
        with Transaction().set_context(period='day', **JANUARY):
            days = Activity.search([])
        self.assertEqual(
            [d.date for d in days],
            [datetime.date(2026, 1, n) for n in range(5, 19)])
        self.assertEqual(len({d.id for d in days}), 14)
        expected = [(0, 0, 0)] * 14
        expected[0] = (2, 2, 1)   # A, B
        expected[1] = (1, 0, 1)   # C requested, B completed
        expected[2] = (1, 1, 0)   # D requested, C performed
        expected[3] = (1, 2, 1)   # I requested, H and I performed
        expected[7] = (1, 1, 0)   # G
        expected[9] = (0, 0, 1)   # G completed again
        self.assertEqual(counts(days), expected)

        with Transaction().set_context(period='week', **JANUARY):
            weeks = Activity.search([])
        self.assertEqual(
            [(w.date, w.requests, w.performed, w.completed) for w in weeks],
            [(datetime.date(2026, 1, 5), 5, 5, 3),
                (datetime.date(2026, 1, 12), 1, 1, 1)])
        with Transaction().set_context(period='month', **JANUARY):
            month, = Activity.search([])
        self.assertEqual(month.date, datetime.date(2026, 1, 1))
        self.assertEqual(counts([month]), [(6, 6, 4)])

        # An empty period is listed with zeros
        with Transaction().set_context(
                period='week', from_date=datetime.date(2026, 2, 2),
                to_date=datetime.date(2026, 2, 8)):
            week, = Activity.search([])
        self.assertEqual(counts([week]), [(0, 0, 0)])
        # No period at all
        with Transaction().set_context(
                period='day', from_date=datetime.date(2026, 1, 8),
                to_date=datetime.date(2026, 1, 7)):
            self.assertEqual(Activity.search([]), [])

    @with_transaction()
    def test_activity_filters(self):
        "The modality, the test and the urgency of the context"
        pool = Pool()
        Activity = pool.get('gnuhealth.imaging.reporting.activity')
        TestType = pool.get('gnuhealth.imaging.test.type')
        Test = pool.get('gnuhealth.imaging.test')
        create_dataset()
        ct, = TestType.search([('code', '=', 'CT')])
        chest, = Test.search([('code', '=', 'IMG-DX-CHEST')])
        for context, expected in [
                ({'urgency': 'urgent'}, (1, 1, 1)),
                ({'urgency': 'routine'}, (5, 5, 3)),
                ({'test_type': ct.id}, (2, 2, 1)),
                ({'test': chest.id}, (4, 4, 3)),
                ({'test': chest.id, 'urgency': 'routine'}, (3, 3, 2)),
                ]:
            with self.subTest(**context):
                with Transaction().set_context(
                        period='month', **JANUARY, **context):
                    month, = Activity.search([])
                self.assertEqual(counts([month]), [expected])

    @with_transaction()
    def test_activity_per_modality_and_test(self):
        "Activity per modality and per test, and their time series"
        pool = Pool()
        Modality = pool.get('gnuhealth.imaging.reporting.activity.modality')
        ModalitySeries = pool.get(
            'gnuhealth.imaging.reporting.activity.modality.time_series')
        PerTest = pool.get('gnuhealth.imaging.reporting.activity.test')
        TestSeries = pool.get(
            'gnuhealth.imaging.reporting.activity.test.time_series')
        create_dataset()
        with Transaction().set_context(period='week', **JANUARY):
            modalities = {
                m.test_type.code: (m.requests, m.performed, m.completed)
                for m in Modality.search([])}
            dx, = Modality.search([('test_type.code', '=', 'DX')])
            series = ModalitySeries.search([('test_type', '=', dx.id)])
            tests = {
                t.test.code: (t.test_type.code, t.requests, t.performed,
                    t.completed)
                for t in PerTest.search([])}
            ct_head, = PerTest.search([('test.code', '=', 'IMG-CT-HEAD')])
            ct_series = TestSeries.search([('test', '=', ct_head.id)])
        # The draft MR order is not listed
        self.assertEqual(modalities, {'DX': (4, 4, 3), 'CT': (2, 2, 1)})
        self.assertEqual(dx.rec_name, dx.test_type.rec_name)
        self.assertEqual(
            [(s.date.day, s.requests, s.performed, s.completed)
                for s in series],
            [(5, 3, 3, 2), (12, 1, 1, 1)])
        self.assertEqual(tests, {
                'IMG-DX-CHEST': ('DX', 4, 4, 3),
                'IMG-CT-HEAD': ('CT', 2, 2, 1),
                })
        self.assertEqual(
            [(s.date.day, s.requests, s.performed, s.completed)
                for s in ct_series], [(5, 2, 2, 1)])

    @with_transaction()
    def test_turnaround(self):
        "Medians and 90th percentiles per modality, urgent and routine"
        pool = Pool()
        Turnaround = pool.get('gnuhealth.imaging.reporting.turnaround')
        Series = pool.get(
            'gnuhealth.imaging.reporting.turnaround.time_series')
        create_dataset()
        with Transaction().set_context(period='week', **JANUARY):
            rows = {
                (r.test_type.code, r.urgency): r
                for r in Turnaround.search([])}
            series = Series.search([('test_type.code', '=', 'DX')])
        self.assertEqual(set(rows), {
                ('DX', 'routine'), ('DX', 'urgent'), ('CT', 'routine')})
        self.assertEqual(rows['DX', 'routine'].completed, 2)
        self.assertHours(rows['DX', 'routine'], {
                'order_requested_median': 1, 'order_requested_p90': 1,
                'requested_performed_median': 1,
                'requested_performed_p90': 1,
                'performed_completed_median': 27.5,
                'performed_completed_p90': 47.9,
                'order_completed_median': 29.5,
                'order_completed_p90': 49.9,
                })
        # The images' date wins over the result's
        self.assertHours(rows['DX', 'urgent'], {
                'order_requested_median': 0.5, 'order_requested_p90': 0.5,
                'requested_performed_median': 0.5,
                'requested_performed_p90': 0.5,
                'performed_completed_median': 24,
                'performed_completed_p90': 24,
                'order_completed_median': 25, 'order_completed_p90': 25,
                })
        # H has no order: nothing from the order is measured
        self.assertEqual(rows['CT', 'routine'].completed, 1)
        self.assertHours(rows['CT', 'routine'], {
                'order_requested_median': 1.5, 'order_requested_p90': 1.9,
                'requested_performed_median': 23,
                'requested_performed_p90': 23,
                'performed_completed_median': 4,
                'performed_completed_p90': 4,
                'order_completed_median': None, 'order_completed_p90': None,
                })
        self.assertEqual(
            [(s.date.day, s.urgency) for s in series],
            [(5, 'routine'), (5, 'urgent'), (12, 'routine')])
        self.assertHours(series[0], {
                'order_requested_median': 1,
                'performed_completed_median': 2,
                'order_completed_p90': 4,
                })
        self.assertHours(series[2], {
                'order_requested_median': 1,
                'requested_performed_median': 1,
                'performed_completed_median': 53,
                'order_completed_median': 55,
                })

    @with_transaction()
    def test_turnaround_percentiles(self):
        """The percentiles of groups of 0 to 12 values, with ties, against
        Python's statistics (and PostgreSQL's percentile_cont)"""
        Series = Pool().get(
            'gnuhealth.imaging.reporting.turnaround.time_series')
        rng = random.Random(42)
        groups = [
            [5],
            [3, 3],
            [1, 2, 3, 4],
            [2, 10, 3, 2, 1],
            [0.5, 7, 7, 7, 100, 2, 3],
            [rng.choice([1, 2, 4]) for _ in range(10)],
            # Whole seconds, as the database keeps them
            [rng.randrange(72 * 3600) / 3600 for _ in range(11)],
            [rng.randrange(72 * 3600) / 3600 for _ in range(12)],
            [],
            ]
        patient = create_patient()
        # A week per group: the intervals end in the week they start
        for week, values in enumerate(groups):
            ordered = MONDAY + week * 7 * DAY
            if not values:
                # A day with a request but nothing completed
                create_test(
                    patient, 'IMG-DX-CHEST', ordered,
                    requested=ordered + HOUR)
            for hours in values:
                create_test(
                    patient, 'IMG-DX-CHEST', ordered,
                    requested=ordered + HOUR, performed=ordered + 2 * HOUR,
                    completed=[ordered + hours * HOUR])
        with Transaction().set_context(
                period='week', from_date=MONDAY.date(),
                to_date=MONDAY.date() + len(groups) * 7 * DAY):
            series = Series.search([])
        self.assertEqual(len(series), len(groups))
        for values, row in zip(groups, series):
            with self.subTest(values=values):
                self.assertEqual(row.completed, len(values))
                if not values:
                    self.assertHours(row, {
                            'order_requested_median': 1,
                            'order_completed_median': None,
                            'order_completed_p90': None,
                            'performed_completed_p90': None,
                            })
                    continue
                median, p90 = reference(values)
                self.assertHours(row, {
                        'order_completed_median': median,
                        'order_completed_p90': p90,
                        'performed_completed_median': median - 2,
                        'performed_completed_p90': p90 - 2,
                        })
                if backend.name == 'postgresql':
                    cursor = Transaction().connection.cursor()
                    cursor.execute(
                        'SELECT percentile_cont(0.5) WITHIN GROUP '
                        '(ORDER BY v), percentile_cont(0.9) WITHIN GROUP '
                        '(ORDER BY v) FROM unnest(%s::float8[]) AS v',
                        (values,))
                    pg_median, pg_p90 = cursor.fetchone()
                    self.assertAlmostEqual(
                        row.order_completed_median, pg_median, places=4)
                    self.assertAlmostEqual(
                        row.order_completed_p90, pg_p90, places=4)

    @with_transaction()
    def test_turnaround_percentiles_without_periods(self):
        """The turnaround without periods computes the percentiles of the
        intervals of the reporting dates as its time series does"""
        Turnaround = Pool().get('gnuhealth.imaging.reporting.turnaround')
        patient = create_patient()
        groups = [[5], [3, 3], [1, 2, 3, 4], [0.5, 7, 7, 7, 100, 2, 3], []]
        for week, values in enumerate(groups):
            ordered = MONDAY + week * 7 * DAY
            create_test(
                patient, 'IMG-DX-CHEST', ordered, requested=ordered + HOUR)
            for hours in values:
                create_test(
                    patient, 'IMG-DX-CHEST', ordered,
                    requested=ordered + HOUR, performed=ordered + 2 * HOUR,
                    completed=[ordered + hours * HOUR])
        for week, values in enumerate(groups):
            monday = MONDAY.date() + week * 7 * DAY
            with self.subTest(values=values), Transaction().set_context(
                    from_date=monday, to_date=monday + 6 * DAY):
                row, = Turnaround.search([])
                self.assertEqual(row.completed, len(values))
                median, p90 = reference(values) if values else (None, None)
                self.assertHours(row, {
                        'order_requested_median': 1,
                        'order_completed_median': median,
                        'order_completed_p90': p90,
                        })

    @with_transaction()
    def test_part_of_the_tests(self):
        """Reporting dates that hold only some events of the tests: each
        event and interval counts in the dates of its end"""
        pool = Pool()
        Turnaround = pool.get('gnuhealth.imaging.reporting.turnaround')
        Modality = pool.get('gnuhealth.imaging.reporting.activity.modality')
        create_dataset()
        with Transaction().set_context(
                from_date=datetime.date(2026, 1, 6),
                to_date=datetime.date(2026, 1, 7)):
            rows = {
                (r.test_type.code, r.urgency): r
                for r in Turnaround.search([])}
            modalities = {
                m.test_type.code: (m.requests, m.performed, m.completed)
                for m in Modality.search([])}
        # B completed the 6th; C and D requested, C performed
        self.assertEqual(modalities, {'DX': (0, 0, 1), 'CT': (2, 1, 0)})
        self.assertEqual(set(rows), {('DX', 'urgent'), ('CT', 'routine')})
        self.assertEqual(rows['DX', 'urgent'].completed, 1)
        self.assertHours(rows['DX', 'urgent'], {
                'order_requested_median': None,
                'requested_performed_median': None,
                'performed_completed_median': 24,
                'order_completed_median': 25,
                })
        self.assertEqual(rows['CT', 'routine'].completed, 0)
        self.assertHours(rows['CT', 'routine'], {
                'order_requested_median': 1.5, 'order_requested_p90': 1.9,
                'requested_performed_median': 23,
                'performed_completed_median': None,
                'order_completed_median': None,
                })

    @with_transaction()
    def test_without_and_with_periods(self):
        """The lists without periods are their time series over one
        period, whatever the reporting dates"""
        pool = Pool()
        create_dataset()
        pairs = [
            ('turnaround', 'turnaround.time_series',
                lambda r: (r.test_type.code, r.urgency)),
            ('activity.modality', 'activity.modality.time_series',
                lambda r: r.test_type.code),
            ('activity.test', 'activity.test.time_series',
                lambda r: r.test.code),
            ]
        for first, last in [(5, 5), (5, 6), (6, 7), (7, 12), (8, 14),
                (9, 13), (12, 31), (1, 31)]:
            context = {
                'period': 'month',
                'from_date': datetime.date(2026, 1, first),
                'to_date': datetime.date(2026, 1, last),
                }
            for name, series_name, key in pairs:
                Model = pool.get('gnuhealth.imaging.reporting.' + name)
                Series = pool.get('gnuhealth.imaging.reporting.' + series_name)
                names = [n for n, f in Model._fields.items()
                    if f._type in {'integer', 'float'} and n != 'id']
                with self.subTest(name=name, first=first, last=last), \
                        Transaction().set_context(**context):
                    rows = {key(r): [getattr(r, n) for n in names]
                        for r in Model.search([])}
                    series = {key(r): [getattr(r, n) for n in names]
                        for r in Series.search([])}
                    self.assertEqual(rows.keys(), series.keys())
                    for row_key, values in rows.items():
                        for value, expected in zip(values, series[row_key]):
                            if expected is None:
                                self.assertIsNone(value)
                            else:
                                self.assertAlmostEqual(value, expected)

    @with_transaction()
    def test_search_and_read(self):
        """The client's search and read: the search orders by any column,
        a read returns the fields asked, a page of a time series its rows"""
        pool = Pool()
        Turnaround = pool.get('gnuhealth.imaging.reporting.turnaround')
        Series = pool.get(
            'gnuhealth.imaging.reporting.turnaround.time_series')
        create_dataset()
        with Transaction().set_context(period='day', **JANUARY):
            row, = Turnaround.search(
                [], order=[('completed', 'DESC')], limit=1)
            self.assertEqual(
                (row.test_type.code, row.urgency), ('DX', 'routine'))
            values, = Turnaround.read([row.id], ['completed', 'rec_name'])
            self.assertEqual(values, {
                    'id': row.id, 'completed': 2, 'rec_name': row.rec_name})

            rows = Series.search([])
            ids = [r.id for r in rows]
            self.assertEqual(len(set(ids)), len(rows))
            self.assertTrue(all(i > 0 for i in ids))
            names = ['date', 'test_type', 'urgency', 'completed',
                'order_completed_median', 'rec_name']
            everything = {r['id']: r for r in Series.read(ids, names)}
            pages = Series.read(ids[3:5], names) + Series.read(ids[:1], names)
        self.assertEqual(
            sorted(pages, key=lambda r: ids.index(r['id'])),
            [everything[i] for i in ids[:1] + ids[3:5]])
        self.assertEqual(
            [(everything[i]['date'].day, everything[i]['urgency'])
                for i in ids[:3]],
            [(5, 'routine'), (5, 'urgent'), (6, 'routine')])

    @with_transaction()
    def test_backlog(self):
        "Tests waiting per stage, modality and age, and the records behind"
        pool = Pool()
        Backlog = pool.get('gnuhealth.imaging.reporting.backlog')
        Open = pool.get(
            'gnuhealth.imaging.reporting.backlog.open', type='wizard')
        patient = create_patient()
        now = datetime.datetime.now()
        dx, ct = 'IMG-DX-CHEST', 'IMG-CT-HEAD'
        p1, _ = create_test(patient, dx, now - 3 * HOUR, now - 2 * HOUR)
        p2, _ = create_test(patient, dx, now - 3 * DAY, now - 2 * DAY)
        p3, _ = create_test(
            patient, dx, now - 6 * DAY, now - 5 * DAY, urgent=True)
        # Requested before requested dates were kept: its order's date
        p4, _ = create_test(
            patient, ct, now - 30 * HOUR, now - 29 * HOUR, legacy=True)
        _, r1 = create_test(
            patient, ct, now - 6 * HOUR, now - 6 * HOUR,
            performed=now - 5 * HOUR)
        # The images' date wins over the result's
        _, r2 = create_test(
            patient, ct, now - 5 * DAY, now - 5 * DAY,
            performed_date=now - 4 * DAY, performed=now - HOUR)
        create_test(
            patient, dx, now - 5 * DAY, now - 5 * DAY,
            performed=now - 4 * DAY, completed=[now - 3 * DAY])
        create_test(patient, dx, now - 5 * DAY, now - 5 * DAY, cancel=True)
        create_test(patient, dx, now - 5 * DAY)
        create_result(patient, ct, now - 2 * DAY, now - DAY, None)

        rows = Backlog.search([])
        self.assertEqual(
            [(r.stage, r.test_type.code, r.age, r.number, r.urgent)
                for r in rows], [
                ('perform', 'CT', 'days', 1, 0),
                ('perform', 'DX', 'day', 1, 0),
                ('perform', 'DX', 'days', 1, 0),
                ('perform', 'DX', 'older', 1, 1),
                ('report', 'CT', 'day', 1, 0),
                ('report', 'CT', 'older', 1, 0),
                ])
        self.assertEqual(len({r.id for r in rows}), len(rows))
        self.assertEqual(Backlog.records(rows[1:3]), sorted([p1.id, p2.id]))
        self.assertEqual(Backlog.records(rows[4:]), sorted([r1.id, r2.id]))

        for row, model, ids in [
                (rows[0], 'gnuhealth.imaging.test.request', [p4.id]),
                (rows[3], 'gnuhealth.imaging.test.request', [p3.id]),
                (rows[5], 'gnuhealth.imaging.test.result', [r2.id]),
                ]:
            with self.subTest(row=row.rec_name):
                session_id, start, _ = Open.create()
                with Transaction().set_context(
                        active_model=Backlog.__name__, active_id=row.id,
                        active_ids=[row.id]):
                    answer = Open.execute(session_id, {}, start)
                (action, _), = answer['actions']
                self.assertEqual(action['res_model'], model)
                self.assertIn(row.test_type.rec_name, action['name'])
                self.assertEqual(
                    PYSONDecoder().decode(action['pyson_domain']),
                    [['id', 'in', ids]])

    @with_transaction()
    def test_turnaround_open(self):
        "A row of the turnaround opens the periods of its modality"
        pool = Pool()
        Turnaround = pool.get('gnuhealth.imaging.reporting.turnaround')
        Open = pool.get(
            'gnuhealth.imaging.reporting.turnaround.open', type='wizard')
        create_dataset()
        with Transaction().set_context(period='week', **JANUARY):
            row, = Turnaround.search([
                    ('test_type.code', '=', 'DX'),
                    ('urgency', '=', 'urgent'),
                    ])
            session_id, start, _ = Open.create()
            with Transaction().set_context(
                    active_model=Turnaround.__name__, active_id=row.id,
                    active_ids=[row.id]):
                answer = Open.execute(session_id, {}, start)
        (action, _), = answer['actions']
        self.assertEqual(
            action['res_model'],
            'gnuhealth.imaging.reporting.turnaround.time_series')
        self.assertEqual(
            PYSONDecoder().decode(action['pyson_domain']),
            [['test_type', '=', row.test_type.id]])
        self.assertEqual(
            PYSONDecoder().decode(action['pyson_context']),
            {'test_type': row.test_type.id})

    @with_transaction()
    def test_readers(self):
        "Results completed per health professional"
        pool = Pool()
        Reader = pool.get('gnuhealth.imaging.reporting.reader')
        Series = pool.get('gnuhealth.imaging.reporting.reader.time_series')
        ruth, sara = create_dataset()
        with Transaction().set_context(period='week', **JANUARY):
            readers = {r.reader: (r.completed, r.urgent)
                for r in Reader.search([])}
            series = [(s.reader, s.date.day, s.completed)
                for s in Series.search([])]
            row, = Reader.search([('rec_name', 'ilike', '%Ruth%')])
        # I was completed by Ruth, then reset to draft: not counted
        self.assertEqual(readers, {ruth: (2, 0), sara: (2, 1)})
        self.assertEqual(sorted(series, key=lambda s: (s[0].id, s[1])), [
                (ruth, 5, 1), (ruth, 12, 1), (sara, 5, 2)])
        self.assertEqual(row.reader, ruth)

        # G's first completion (12th) is not counted any more
        with Transaction().set_context(
                period='day', from_date=datetime.date(2026, 1, 12),
                to_date=datetime.date(2026, 1, 13)):
            self.assertEqual(Reader.search([]), [])

    @with_transaction()
    def test_company_time_zone(self):
        "Periods and dates are those of the company's time zone"
        pool = Pool()
        Activity = pool.get('gnuhealth.imaging.reporting.activity')
        Company = pool.get('company.company')
        company = create_company()
        Company.write([company], {'timezone': 'America/Argentina/Cordoba'})
        patient = create_patient()
        # 5th 22:00 in Córdoba (UTC-3)
        late = datetime.datetime(2026, 1, 6, 1, 0)
        create_test(patient, 'IMG-DX-CHEST', late, requested=late)
        context = {
            'period': 'day',
            'from_date': datetime.date(2026, 1, 5),
            'to_date': datetime.date(2026, 1, 6),
            }
        with Transaction().set_context(**context):
            self.assertEqual(
                [a.requests for a in Activity.search([])], [0, 1])
        with set_company(company), Transaction().set_context(**context):
            self.assertEqual(
                [a.requests for a in Activity.search([])], [1, 0])
            with Transaction().set_context(
                    from_date=datetime.date(2026, 1, 6)):
                self.assertEqual(
                    [a.requests for a in Activity.search([])], [0])

        # Sunday 11th 22:00 in Córdoba, Monday 12th in UTC
        sunday = datetime.datetime(2026, 1, 12, 1, 0)
        create_test(patient, 'IMG-DX-CHEST', sunday, requested=sunday)
        for grain in ['week', 'month']:
            context = {
                'period': grain,
                'from_date': datetime.date(2026, 1, 1),
                'to_date': datetime.date(2026, 1, 31),
                }
            with Transaction().set_context(**context):
                utc = [(a.date, a.requests) for a in Activity.search([])]
            with set_company(company), Transaction().set_context(**context):
                local = [(a.date, a.requests) for a in Activity.search([])]
            with self.subTest(grain=grain):
                if grain == 'week':
                    self.assertEqual(utc[1:3], [
                            (datetime.date(2026, 1, 5), 1),
                            (datetime.date(2026, 1, 12), 1)])
                    self.assertEqual(local[1:3], [
                            (datetime.date(2026, 1, 5), 2),
                            (datetime.date(2026, 1, 12), 0)])
                else:
                    self.assertEqual(utc, [(datetime.date(2026, 1, 1), 2)])
                    self.assertEqual(local, utc)

    @with_transaction()
    def test_too_many_periods(self):
        "The days of more than ten years are refused"
        Activity = Pool().get('gnuhealth.imaging.reporting.activity')
        with Transaction().set_context(
                period='day', from_date=datetime.date(2010, 1, 1),
                to_date=datetime.date(2026, 1, 1)):
            with self.assertRaises(UserError):
                Activity.search([])
        with Transaction().set_context(
                period='month', from_date=datetime.date(2010, 1, 1),
                to_date=datetime.date(2026, 1, 1)):
            self.assertEqual(len(Activity.search([])), 193)

    @with_transaction()
    def test_context_values_checked(self):
        """What a client sets in the context that is not a date, an id or
        a choice is ignored, never a server error"""
        pool = Pool()
        create_test(
            create_patient(), 'IMG-DX-CHEST', MONDAY, requested=MONDAY)
        models = [pool.get('gnuhealth.imaging.reporting.%s' % name)
            for name in ['activity', 'activity.modality', 'turnaround',
                'turnaround.time_series', 'backlog', 'reader']]
        for context in [
                {'test_type': [1, 2]}, {'test': {'a': 1}}, {'test': True},
                {'test_type': '1) OR (1=1'},
                {'from_date': 'x'}, {'to_date': MONDAY},
                {'period': ['week']}, {'period': 'year'},
                {'urgency': ['urgent']}, {'urgency': 'soon'},
                ]:
            for Model in models:
                with self.subTest(context=context, model=Model.__name__), \
                        Transaction().set_context(**context):
                    Model.read([r.id for r in Model.search([])], ['id'])
            if set(context) <= {'test', 'test_type'}:
                # Not an id: nothing, as an unknown id
                with Transaction().set_context(**context, **JANUARY):
                    self.assertEqual(
                        sum(r.requests for r in models[0].search([])), 0)
        with Transaction().set_context(**JANUARY):
            self.assertEqual(
                sum(r.requests for r in models[0].search([])), 1)

    @with_transaction()
    def test_access(self):
        """Imaging administrators and the reporting group read the
        reporting, clinicians do not; the records behind the backlog are
        for those who read patients' records"""
        pool = Pool()
        Activity = pool.get('gnuhealth.imaging.reporting.activity')
        Backlog = pool.get('gnuhealth.imaging.reporting.backlog')
        Request = pool.get('gnuhealth.imaging.test.request')
        OpenBacklog = pool.get(
            'gnuhealth.imaging.reporting.backlog.open', type='wizard')
        Menu = pool.get('ir.ui.menu')
        ModelData = pool.get('ir.model.data')
        menu = ModelData.get_id('health_imaging', 'menu_reporting_backlog')
        create_test(
            create_patient(), 'IMG-DX-CHEST', MONDAY, requested=MONDAY)
        users = [
            (create_user('reporting',
                    'health_imaging.group_health_imaging_reporting'), True),
            (create_user('imaging_admin',
                    'health_imaging.group_health_imaging_admin'), True),
            (create_user('health_admin', 'health.group_health_admin'), True),
            (create_user('doctor', 'health.group_health_doctor'), False),
            (create_user('imaging', 'health_imaging.group_health_imaging'),
                False),
            ]
        for user, allowed in users:
            with self.subTest(user=user.login), \
                    Transaction().set_user(user.id), \
                    Transaction().set_context(_check_access=True, **JANUARY):
                self.assertEqual(
                    bool(Menu.search([('id', '=', menu)])), allowed)
                if allowed:
                    Activity.read(
                        [a.id for a in Activity.search([])], ['requests'])
                    backlog, = Backlog.search([])
                    self.assertEqual(backlog.number, 1)
                    records = Backlog.records([backlog])
                    if user.login == 'reporting':
                        with self.assertRaises(AccessError):
                            Request.read(records, ['patient'])
                        session_id, _, _ = OpenBacklog.create()
                        with Transaction().set_context(
                                active_model=Backlog.__name__,
                                active_id=backlog.id,
                                active_ids=[backlog.id]), \
                                self.assertRaises(UserError):
                            OpenBacklog.execute(session_id, {}, 'start')
                    else:
                        Request.read(records, ['patient'])
                else:
                    with self.assertRaises(AccessError):
                        Activity.search([])
