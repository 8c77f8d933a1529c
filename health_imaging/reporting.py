# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Imaging reporting: activity, turnaround, backlog and readers.

Every measure is a ``table_query`` over the same "facts": one row per test
of a request that left draft and was not cancelled (with its result, if
any), plus one row per result entered without a request.
"""
import datetime
import operator
from functools import reduce

from dateutil.relativedelta import relativedelta
from sql import Cast, Column, Literal, Null, Union, Values, Window
from sql.aggregate import Aggregate, Count, Sum
from sql.conditionals import Case, Coalesce
from sql.functions import (
    AtTimeZone, CurrentTimestamp, DatePart, DateTrunc, Function, RowNumber)
from trytond import backend
from trytond.i18n import gettext, lazy_gettext
from trytond.model import ModelSQL, ModelView, fields
from trytond.pool import Pool
from trytond.pyson import Eval, If, PYSONEncoder
from trytond.tools import timezone as tz
from trytond.transaction import Transaction
from trytond.wizard import StateAction, StateTransition, Wizard

from .exceptions import ImagingReportingError

GRAINS = [
    ('day', "Day"),
    ('week', "Week"),
    ('month', "Month"),
    ]
STEPS = {
    'day': relativedelta(days=1),
    'week': relativedelta(weeks=1),
    'month': relativedelta(months=1),
    }
#: The Julian day of 1970-01-01, SQLite's JULIANDAY at its midnight
UNIX_JULIAN_DAY = 2440587.5
#: The days from 1970 that the ids of the time series count apart
SERIES_DAYS = 100000
#: At most this many periods are listed, empty ones included
MAX_PERIODS = 3700
#: The events counted by the activity
EVENTS = ['requests', 'performed', 'completed']
URGENCIES = [
    ('urgent', "Urgent"),
    ('routine', "Routine"),
    ]
#: The intervals of the turnaround: (name, start fact, end fact)
INTERVALS = [
    ('order_requested', 'ordered', 'requested'),
    ('requested_performed', 'requested', 'performed'),
    ('performed_completed', 'performed', 'completed'),
    ('order_completed', 'ordered', 'completed'),
    ]
#: The ends of the intervals, in the order of the facts
ENDS = ['requested', 'performed', 'completed']
#: The percentiles of the turnaround as fractions (numerator, denominator)
PERCENTILES = [
    ('median', 1, 2),
    ('p90', 9, 10),
    ]
STAGES = [
    ('perform', "To Perform"),
    ('report', "To Report"),
    ]
AGES = [
    ('day', "Under 1 Day"),
    ('days', "1 to 3 Days"),
    ('older', "Over 3 Days"),
    ]


def period_start(grain, value):
    """Return the first day of the day, week (from Monday) or month of
    value, a date or a datetime"""
    if isinstance(value, datetime.datetime):
        value = value.date()
    if grain == 'week':
        return value - datetime.timedelta(days=value.weekday())
    if grain == 'month':
        return value.replace(day=1)
    return value


def periods(grain, start, end):
    "Return the first days of the periods from the one of start to end"
    result = []
    day = period_start(grain, start)
    while day <= end:
        result.append(day)
        day += STEPS[grain]
    return result


def _sqlite_period(grain, value, zone):
    "The period of a UTC datetime of SQLite in the time zone, as text"
    if value is None:
        return None
    value = datetime.datetime.fromisoformat(value)
    if zone:
        value = value.replace(tzinfo=tz.UTC).astimezone(tz.get_tzinfo(zone))
    return period_start(grain, value).isoformat()


class SQLitePeriod(Function):
    __slots__ = ()
    _function = 'GNUHEALTH_IMAGING_PERIOD'


class SQLiteDate(Function):
    __slots__ = ()
    _function = 'DATE'


class JulianDay(Function):
    __slots__ = ()
    _function = 'JULIANDAY'


def _zone():
    "Return the name of the time zone of the company of the context or None"
    Company = Pool().get('company.company')
    company = Transaction().context.get('company')
    if company and company > 0:
        return Company(company).timezone or None


def _utc(day, zone):
    "Return the UTC datetime of the midnight that starts day in the zone"
    value = datetime.datetime.combine(day, datetime.time())
    if zone:
        value = (value.replace(tzinfo=tz.get_tzinfo(zone))
            .astimezone(tz.UTC).replace(tzinfo=None))
    return value


def _seconds(end, start):
    "The SQL expression of the seconds from start to end (datetimes)"
    if backend.name == 'sqlite':
        return Cast((JulianDay(end) - JulianDay(start)) * 86400, 'FLOAT')
    # DATE_PART computes in floating point, EXTRACT in NUMERIC (slower)
    return DatePart('epoch', end - start)


class PercentileCont(Aggregate):
    __slots__ = ()
    _sql = 'PERCENTILE_CONT'


def _ranked(intervals, group, names):
    """Return the intervals with, for each column of names, the rank from 0
    of its value in the group (name_rank) and the number of values in the
    group (name_size); the NULL values are ranked apart"""
    partition = [g.expression for g in group]
    columns = []
    for name in names:
        value = Column(intervals, name)
        window = partition + [value == Null]
        columns.extend([
                value,
                (RowNumber(window=Window(window, order_by=[value.asc]))
                    - 1).as_(name + '_rank'),
                Count(value, window=Window(window)).as_(name + '_size'),
                ])
    return intervals.select(*group, *columns)


def _interpolated(ranked, name, numerator, denominator):
    """The SQL aggregate of the continuous percentile numerator/denominator
    of the values of the column name from the ranked intervals, as
    PERCENTILE_CONT computes it (which SQLite has not): the interpolation
    between the values at the ranks around (size - 1) * fraction, computed
    with integers to be exact; NULL when the group has no value"""
    value = Column(ranked, name)
    rank = Column(ranked, name + '_rank')
    position = (Column(ranked, name + '_size') - 1) * numerator
    low = position / denominator
    fraction = Cast(position % denominator, 'FLOAT') / denominator
    return Sum(Case(
            ((value != Null) & (rank == low),
                value * (Literal(1) - fraction)),
            ((value != Null) & (rank == low + 1), value * fraction)))


def _context_date(value):
    "The date a client gave in the context, None for anything else"
    if isinstance(value, datetime.date) and not isinstance(
            value, datetime.datetime):
        return value


def _context_id(value):
    "Whether a value of the context is a record id"
    return isinstance(value, int) and not isinstance(value, bool)


class ReportingContext(ModelView):
    "Imaging Reporting Context"
    __name__ = 'gnuhealth.imaging.reporting.context'

    from_date = fields.Date(
        "From Date", required=True,
        domain=[
            If(Eval('to_date') & Eval('from_date'),
                ('from_date', '<=', Eval('to_date')),
                ()),
            ])
    to_date = fields.Date(
        "To Date", required=True,
        domain=[
            If(Eval('from_date') & Eval('to_date'),
                ('to_date', '>=', Eval('from_date')),
                ()),
            ])
    period = fields.Selection(
        GRAINS, "Period", required=True,
        help="The time grain of the lists and charts over time.")
    test_type = fields.Many2One(
        'gnuhealth.imaging.test.type', "Modality",
        help="Only the tests of this type.")
    test = fields.Many2One(
        'gnuhealth.imaging.test', "Test",
        context={'active_test': False},
        domain=[
            If(Eval('test_type'),
                ('test_type', '=', Eval('test_type', -1)),
                ()),
            ],
        help="Only this test.")
    urgency = fields.Selection(
        [(None, "")] + URGENCIES, "Urgency",
        help="Only the urgent or only the routine tests.")

    @classmethod
    def default_from_date(cls):
        Date = Pool().get('ir.date')
        context = Transaction().context
        return (_context_date(context.get('from_date'))
            or Date.today() - relativedelta(months=3))

    @classmethod
    def default_to_date(cls):
        Date = Pool().get('ir.date')
        return (_context_date(Transaction().context.get('to_date'))
            or Date.today())

    @classmethod
    def default_period(cls):
        return Transaction().context.get('period', 'week')

    @classmethod
    def default_test_type(cls):
        return Transaction().context.get('test_type')

    @classmethod
    def default_test(cls):
        return Transaction().context.get('test')

    @classmethod
    def default_urgency(cls):
        return Transaction().context.get('urgency')


class Reporting(ModelSQL):
    "The facts of the tests and the context of the reporting"

    @classmethod
    def table_query(cls):
        if backend.name == 'sqlite':
            Transaction().connection.create_function(
                'gnuhealth_imaging_period', 3, _sqlite_period,
                deterministic=True)
        return cls._query()

    @classmethod
    def _query(cls):
        raise NotImplementedError

    @classmethod
    def search(cls, domain, offset=0, limit=None, order=None, count=False,
            query=False):
        if count or query:
            return super().search(
                domain, offset=offset, limit=limit, order=order, count=count,
                query=query)
        # Only the ids: Tryton selects every column to fill its cache,
        # which makes the database compute the measures (percentiles) that
        # the client's read computes again
        select = super().search(
            domain, offset=offset, limit=limit, order=order, query=True)
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        cursor.execute(*select)
        ids = [id_ for id_, in cursor]
        # The cache of the transaction ignores the reporting context: forget
        # the rows read in another one (which Tryton's search overwrites)
        for cache in transaction.cache.values():
            if cls.__name__ in cache:
                cache_cls = cache[cls.__name__]
                for id_ in ids:
                    cache_cls.pop(id_, None)
        return cls.browse(ids)

    @classmethod
    def read(cls, ids, fields_names):
        # The getters (rec_name) use columns that the client may not read:
        # read them all from the one query, so that the getters find them
        # in the cache instead of running the query again
        asked = {n.split('.', 1)[0].split(':', 1)[0] for n in fields_names}
        asked.add('id')
        extra = [n for n, f in cls._fields.items()
            if n not in asked and not hasattr(f, 'get')]
        rows = super().read(ids, list(fields_names) + extra)
        for row in rows:
            for name in extra:
                del row[name]
        return rows

    @classmethod
    def _log_columns(cls):
        return [
            Literal(0).as_('create_uid'),
            CurrentTimestamp().as_('create_date'),
            cls.write_uid.sql_cast(Literal(Null)).as_('write_uid'),
            cls.write_date.sql_cast(Literal(Null)).as_('write_date'),
            ]

    @classmethod
    def _grain(cls):
        grain = Transaction().context.get('period')
        return grain if isinstance(grain, str) and grain in STEPS else 'week'

    @classmethod
    def _dates(cls):
        """Return the first and the last day of the reporting period (the
        defaults for what a client gives that is not a date)"""
        Context = Pool().get('gnuhealth.imaging.reporting.context')
        context = Transaction().context
        return (
            _context_date(context.get('from_date'))
            or Context.default_from_date(),
            _context_date(context.get('to_date'))
            or Context.default_to_date())

    @classmethod
    def _in_dates(cls, column):
        "The condition that a UTC datetime column is in the reporting dates"
        zone = _zone()
        from_date, to_date = cls._dates()
        return ((column >= _utc(from_date, zone))
            & (column < _utc(to_date + datetime.timedelta(days=1), zone)))

    @classmethod
    def _period(cls, column):
        "The first day of the period (in the company's time zone) of column"
        grain, zone = cls._grain(), _zone()
        if backend.name == 'sqlite' and zone:
            date = SQLitePeriod(grain, column, zone)
        elif backend.name == 'sqlite':
            # SQLite's own functions are much faster than ours
            date = SQLiteDate(column, *{
                    'day': [],
                    'week': ['-6 days', 'weekday 1'],
                    'month': ['start of month'],
                    }[grain])
        else:
            if zone:
                column = AtTimeZone(AtTimeZone(column, 'UTC'), zone)
            date = DateTrunc(grain, column)
        return cls.date.sql_cast(date)

    @classmethod
    def _test_where(cls, test):
        context = Transaction().context
        where = Literal(True)
        for name, column in [('test_type', test.test_type), ('test', test.id)]:
            value = context.get(name)
            if value is None:
                continue
            if not _context_id(value):
                # Not an id: it selects nothing, as an unknown id does
                return Literal(False)
            where &= column == value
        return where

    @classmethod
    def _facts(cls):
        """Return the tests: one row per request that left draft and was
        not cancelled, and one per result without a request"""
        pool = Pool()
        Request = pool.get('gnuhealth.imaging.test.request')
        Result = pool.get('gnuhealth.imaging.test.result')
        Test = pool.get('gnuhealth.imaging.test')
        urgency = Transaction().context.get('urgency')
        if not isinstance(urgency, str) or urgency not in dict(URGENCIES):
            urgency = None

        request = Request.__table__()
        result = Result.__table__()
        test = Test.__table__()
        urgent = Coalesce(request.urgent, Literal(False))
        where = (request.state.in_(['requested', 'done'])
            & cls._test_where(test))
        if urgency:
            where &= urgent == (urgency == 'urgent')
        of_requests = (request
            .join(test, condition=request.requested_test == test.id)
            .join(result, 'LEFT', condition=result.request == request.id)
            .select(
                (request.id * 2).as_('id'),
                request.id.as_('request'),
                result.id.as_('result'),
                test.id.as_('test'),
                test.test_type.as_('test_type'),
                urgent.as_('urgent'),
                request.state.as_('state'),
                request.date.as_('ordered'),
                request.requested_date.as_('requested'),
                Coalesce(request.performed_date, result.date).as_(
                    'performed'),
                result.completed_date.as_('completed'),
                result.doctor.as_('reader'),
                where=where))

        result = Result.__table__()
        test = Test.__table__()
        where = (result.request == Null) & cls._test_where(test)
        if urgency == 'urgent':
            where &= Literal(False)
        of_results = (result
            .join(test, condition=result.requested_test == test.id)
            .select(
                (result.id * 2 + 1).as_('id'),
                Literal(Null).as_('request'),
                result.id.as_('result'),
                test.id.as_('test'),
                test.test_type.as_('test_type'),
                Literal(False).as_('urgent'),
                Literal(Null).as_('state'),
                Literal(Null).as_('ordered'),
                Literal(Null).as_('requested'),
                result.date.as_('performed'),
                result.completed_date.as_('completed'),
                result.doctor.as_('reader'),
                where=where))
        return Union(of_requests, of_results, all_=True)


class TestTypeMixin:
    __slots__ = ()
    test_type = fields.Many2One(
        'gnuhealth.imaging.test.type',
        lazy_gettext('health_imaging.msg_reporting_test_type'))

    def get_rec_name(self, name):
        return self.test_type.rec_name if self.test_type else ''

    @classmethod
    def search_rec_name(cls, name, clause):
        return [('test_type.rec_name', *clause[1:])]


class TimeseriesMixin:
    __slots__ = ()
    date = fields.Date(
        lazy_gettext('health_imaging.msg_reporting_date'),
        help=lazy_gettext('health_imaging.msg_reporting_date_help'))

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order.insert(0, ('date', 'ASC'))

    @classmethod
    def _series_id(cls, key, date):
        """The id of the row of key (a positive integer of its group) and
        date (its period): computed from the group, so that the database
        can compute only the rows that the client reads (by page)"""
        if backend.name == 'sqlite':
            days = Cast(JulianDay(date) - Literal(UNIX_JULIAN_DAY), 'INTEGER')
        else:
            days = date - cls.date.sql_cast(Literal('1970-01-01'))
        return Cast(key, 'BIGINT') * SERIES_DAYS + days


# -- Activity -----------------------------------------------------------------
class ActivityMixin(Reporting):
    requests = fields.Integer(
        lazy_gettext('health_imaging.msg_reporting_requests'),
        help=lazy_gettext('health_imaging.msg_reporting_requests_help'))
    performed = fields.Integer(
        lazy_gettext('health_imaging.msg_reporting_performed'),
        help=lazy_gettext('health_imaging.msg_reporting_performed_help'))
    completed = fields.Integer(
        lazy_gettext('health_imaging.msg_reporting_completed'),
        help=lazy_gettext('health_imaging.msg_reporting_completed_help'))

    @classmethod
    def _event_dates(cls, facts):
        "Return the dates of the events of the facts, in the order of EVENTS"
        return [Coalesce(facts.requested, facts.ordered), facts.performed,
            facts.completed]

    @classmethod
    def _events(cls):
        """Return the requests, the performed studies and the completed
        results of the period, one row per event with a 1 in its column"""
        facts = cls._facts()
        kinds = Values([[i] for i in range(len(EVENTS))])
        kind = Column(kinds, 'column1')
        date = Case(*((kind == i, d)
                for i, d in enumerate(cls._event_dates(facts))))
        # One pass over the tests, each repeated once per kind of event
        return facts.join(kinds, 'CROSS').select(
            (facts.id * len(EVENTS) + kind).as_('id'),
            facts.test, facts.test_type, date.as_('date'),
            *(Case((kind == i, 1), else_=0).as_(n)
                for i, n in enumerate(EVENTS)),
            where=cls._in_dates(date))

    @classmethod
    def _tests(cls):
        """Return the tests with an event in the period, one row per test
        with a 1 in the column of each of its events in it: without the
        periods, the tests need not be repeated per event"""
        facts = cls._facts()
        in_dates = [cls._in_dates(d) for d in cls._event_dates(facts)]
        return facts.select(
            facts.test, facts.test_type,
            *(Case((c, 1), else_=0).as_(n) for n, c in zip(EVENTS, in_dates)),
            where=reduce(operator.or_, in_dates))

    @classmethod
    def _counts(cls, events):
        return [
            Sum(events.requests).as_('requests'),
            Sum(events.performed).as_('performed'),
            Sum(events.completed).as_('completed'),
            ]


class Activity(TimeseriesMixin, ActivityMixin, ModelView):
    "Imaging Activity"
    __name__ = 'gnuhealth.imaging.reporting.activity'

    @classmethod
    def _query(cls):
        events = cls._events()
        date = cls._period(events.date)
        counts = events.select(
            date.as_('date'), *cls._counts(events), group_by=[date])
        calendar = cls._calendar()
        day = cls.date.sql_cast(Column(calendar, 'column2'))
        return (calendar
            .join(counts, 'LEFT', condition=counts.date == day)
            .select(
                Column(calendar, 'column1').as_('id'),
                *cls._log_columns(),
                day.as_('date'),
                *(Coalesce(Column(counts, n), 0).as_(n)
                    for n in ['requests', 'performed', 'completed'])))

    @classmethod
    def _calendar(cls):
        "Return the VALUES of the periods, with an id, empty ones included"
        grain = cls._grain()
        from_date, to_date = cls._dates()
        days = periods(grain, from_date, to_date)
        if len(days) > MAX_PERIODS:
            raise ImagingReportingError(gettext(
                    'health_imaging.msg_reporting_too_many_periods',
                    count=len(days), maximum=MAX_PERIODS))
        if not days:
            return Values([[0, from_date]]).select(where=Literal(False))
        return Values([[d.toordinal(), d] for d in days])

    def get_rec_name(self, name):
        return str(self.date)


class ActivityModality(TestTypeMixin, ActivityMixin, ModelView):
    "Imaging Activity per Modality"
    __name__ = 'gnuhealth.imaging.reporting.activity.modality'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order.insert(0, ('test_type', 'ASC'))

    @classmethod
    def _query(cls):
        events = cls._tests()
        return events.select(
            events.test_type.as_('id'), *cls._log_columns(),
            events.test_type, *cls._counts(events),
            group_by=[events.test_type])


class ActivityModalityTimeseries(
        TestTypeMixin, TimeseriesMixin, ActivityMixin, ModelView):
    "Imaging Activity per Modality"
    __name__ = 'gnuhealth.imaging.reporting.activity.modality.time_series'

    @classmethod
    def _query(cls):
        events = cls._events()
        date = cls._period(events.date)
        return events.select(
            cls._series_id(events.test_type, date).as_('id'),
            *cls._log_columns(),
            events.test_type, date.as_('date'), *cls._counts(events),
            group_by=[events.test_type, date])


class TestMixin:
    __slots__ = ()
    test = fields.Many2One(
        'gnuhealth.imaging.test',
        lazy_gettext('health_imaging.msg_reporting_test'),
        context={'active_test': False})

    def get_rec_name(self, name):
        return self.test.rec_name if self.test else ''

    @classmethod
    def search_rec_name(cls, name, clause):
        return [('test.rec_name', *clause[1:])]


class ActivityTest(TestMixin, TestTypeMixin, ActivityMixin, ModelView):
    "Imaging Activity per Test"
    __name__ = 'gnuhealth.imaging.reporting.activity.test'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order.insert(0, ('test', 'ASC'))

    @classmethod
    def _query(cls):
        events = cls._tests()
        return events.select(
            events.test.as_('id'), *cls._log_columns(),
            events.test, events.test_type, *cls._counts(events),
            group_by=[events.test, events.test_type])


class ActivityTestTimeseries(
        TestMixin, TestTypeMixin, TimeseriesMixin, ActivityMixin, ModelView):
    "Imaging Activity per Test"
    __name__ = 'gnuhealth.imaging.reporting.activity.test.time_series'

    @classmethod
    def _query(cls):
        events = cls._events()
        date = cls._period(events.date)
        return events.select(
            cls._series_id(events.test, date).as_('id'),
            *cls._log_columns(),
            events.test, events.test_type, date.as_('date'),
            *cls._counts(events),
            group_by=[events.test, events.test_type, date])


# -- Turnaround ---------------------------------------------------------------
def _interval_field(interval, percentile):
    name = 'msg_reporting_%s_%s' % (interval, percentile)
    return fields.Float(
        lazy_gettext('health_imaging.' + name), digits=(16, 1),
        help=lazy_gettext('health_imaging.%s_help' % name))


class TurnaroundMixin(TestTypeMixin, Reporting):
    urgency = fields.Selection(
        URGENCIES, lazy_gettext('health_imaging.msg_reporting_urgency'))
    urgency_string = urgency.translated('urgency')
    completed = fields.Integer(
        lazy_gettext('health_imaging.msg_reporting_completed'),
        help=lazy_gettext('health_imaging.msg_reporting_completed_help'))
    order_requested_median = _interval_field('order_requested', 'median')
    order_requested_p90 = _interval_field('order_requested', 'p90')
    requested_performed_median = _interval_field(
        'requested_performed', 'median')
    requested_performed_p90 = _interval_field('requested_performed', 'p90')
    performed_completed_median = _interval_field(
        'performed_completed', 'median')
    performed_completed_p90 = _interval_field('performed_completed', 'p90')
    order_completed_median = _interval_field('order_completed', 'median')
    order_completed_p90 = _interval_field('order_completed', 'p90')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [
            ('test_type', 'ASC'),
            ('urgency', 'ASC'),
            ] + cls._order

    @classmethod
    def _intervals(cls, per_period=False):
        """Return the intervals in seconds of the tests, a column per
        interval, NULL unless the interval ends in the period: one row per
        test or, per_period, one row per test and end (with the date of the
        end), so that each interval is in the period of its end"""
        facts = cls._facts()
        columns = [facts.test_type, facts.urgent]
        starts = [Column(facts, start) for _, start, _ in INTERVALS]
        ends = [Column(facts, end) for _, _, end in INTERVALS]
        if per_period:
            values = Values([[i] for i in range(len(ENDS))])
            end_index = Column(values, 'column1')
            date = Case(*((end_index == i, Column(facts, end))
                    for i, end in enumerate(ENDS)))
            measured = [(start != Null) & (end_index == ENDS.index(end))
                for start, (_, _, end) in zip(starts, INTERVALS)]
            where = cls._in_dates(date)
            # One pass over the tests, each repeated once per end
            query = facts.join(values, 'CROSS')
            columns.append(date.as_('date'))
        else:
            measured = [(start != Null) & cls._in_dates(end)
                for start, end in zip(starts, ends)]
            where = Literal(True)
            query = facts
        columns += [Case((m, _seconds(end, start))).as_(name)
            for m, start, end, (name, _, _) in zip(
                measured, starts, ends, INTERVALS)]
        return query.select(
            *columns, where=where & reduce(operator.or_, measured))

    @classmethod
    def _turnaround(cls, per_period=False):
        """Return the intervals grouped by modality, urgency and maybe
        period, the columns of the group and the measures aggregated"""
        intervals = cls._intervals(per_period)
        group = [intervals.test_type, intervals.urgent]
        if per_period:
            group.append(cls._period(intervals.date))
        group = [g.as_('group_%d' % i) for i, g in enumerate(group)]
        names = [name for name, _, _ in INTERVALS]
        if backend.name == 'sqlite':
            source = _ranked(intervals, group, names)

            def percentile(name, numerator, denominator):
                return _interpolated(source, name, numerator, denominator)
        else:
            source = intervals.select(
                *group, *(Column(intervals, n) for n in names))

            def percentile(name, numerator, denominator):
                # The NULL values (outside the period) are ignored
                return PercentileCont(
                    Literal(numerator / denominator),
                    within=[Column(source, name)])
        group = [Column(source, g.output_name) for g in group]
        columns = [
            group[0].as_('test_type'),
            Case((group[1], 'urgent'), else_='routine').as_('urgency'),
            cls.completed.sql_cast(
                Count(source.performed_completed)).as_('completed'),
            ]
        for name in names:
            for suffix, numerator, denominator in PERCENTILES:
                field = '%s_%s' % (name, suffix)
                hours = percentile(name, numerator, denominator) / 3600
                columns.append(getattr(cls, field).sql_cast(hours).as_(field))
        return source, group, columns

    @classmethod
    def view_attributes(cls):
        # Urgent and routine side by side in the charts
        return super().view_attributes() + [
            ('/graph/y/field[contains(@key, "%s")]' % urgency, 'domain',
                Eval('urgency') == urgency)
            for urgency, _ in URGENCIES]

    def get_rec_name(self, name):
        return '%s - %s' % (
            self.test_type.rec_name if self.test_type else '',
            self.urgency_string)

    @classmethod
    def search_rec_name(cls, name, clause):
        return [('test_type.rec_name', *clause[1:])]


class Turnaround(TurnaroundMixin, ModelView):
    "Imaging Turnaround"
    __name__ = 'gnuhealth.imaging.reporting.turnaround'

    @classmethod
    def _query(cls):
        intervals, group, columns = cls._turnaround()
        test_type, urgent = group
        return intervals.select(
            (test_type * 2 + Case((urgent, 1), else_=0)).as_('id'),
            *cls._log_columns(), *columns,
            group_by=group)


class TurnaroundTimeseries(TimeseriesMixin, TurnaroundMixin, ModelView):
    "Imaging Turnaround"
    __name__ = 'gnuhealth.imaging.reporting.turnaround.time_series'

    @classmethod
    def _query(cls):
        intervals, group, columns = cls._turnaround(per_period=True)
        test_type, urgent, date = group
        key = test_type * 2 + Case((urgent, 1), else_=0)
        return intervals.select(
            cls._series_id(key, date).as_('id'),
            *cls._log_columns(), *columns,
            group[2].as_('date'),
            group_by=group)


class OpenTurnaround(Wizard):
    "Open Imaging Turnaround"
    __name__ = 'gnuhealth.imaging.reporting.turnaround.open'

    start = StateAction(
        'health_imaging.act_reporting_turnaround_time_series')

    def do_start(self, action):
        # One modality: its urgent and routine rows side by side; its
        # filter in the context, so that only its tests are read
        test_type = self.record.test_type
        encoder = PYSONEncoder()
        action['pyson_domain'] = encoder.encode(
            [('test_type', '=', test_type.id)])
        action['pyson_context'] = encoder.encode(
            {'test_type': test_type.id})
        action['name'] += ' (%s)' % test_type.rec_name
        return action, {}


# -- Backlog ------------------------------------------------------------------
class Backlog(TestTypeMixin, Reporting, ModelView):
    "Imaging Backlog"
    __name__ = 'gnuhealth.imaging.reporting.backlog'

    stage = fields.Selection(STAGES, "Stage", sort=False)
    stage_string = stage.translated('stage')
    age = fields.Selection(
        AGES, "Age", sort=False,
        help="The time since the test was requested (to perform) or "
        "performed (to report).")
    age_string = age.translated('age')
    number = fields.Integer(
        "Tests", help="The number of tests waiting at this stage.")
    urgent = fields.Integer(
        "Urgent", help="The number of urgent tests among them.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [
            ('stage', 'ASC'),
            ('test_type', 'ASC'),
            ('age', 'ASC'),
            ]

    @classmethod
    def view_attributes(cls):
        # A chart per stage, with a bar per age
        return super().view_attributes() + [
            ('/graph/y/field[@key="%s_%s"]' % (stage, age), 'domain',
                (Eval('stage') == stage) & (Eval('age') == age))
            for stage, _ in STAGES for age, _ in AGES]

    @classmethod
    def _items(cls):
        """Return the tests waiting to be performed or reported, with the
        request or the result waiting (record), their stage and age"""
        facts = cls._facts()
        to_perform = facts.select(
            facts.request.as_('record'), facts.test_type, facts.urgent,
            Literal('perform').as_('stage'), Literal(0).as_('stage_index'),
            Coalesce(facts.requested, facts.ordered).as_('since'),
            where=(facts.state == 'requested') & (facts.performed == Null))
        facts = cls._facts()
        to_report = facts.select(
            facts.result.as_('record'), facts.test_type, facts.urgent,
            Literal('report').as_('stage'), Literal(1).as_('stage_index'),
            facts.performed.as_('since'),
            where=(facts.result != Null) & (facts.completed == Null))
        items = Union(to_perform, to_report, all_=True)

        now = datetime.datetime.now()
        one_day_ago = now - datetime.timedelta(days=1)
        three_days_ago = now - datetime.timedelta(days=3)

        def age(day, days, older):
            return Case(
                (items.since > one_day_ago, day),
                (items.since >= three_days_ago, days),
                else_=older)
        return items.select(
            items.record, items.test_type, items.urgent, items.stage,
            items.stage_index,
            age('day', 'days', 'older').as_('age'),
            age(0, 1, 2).as_('age_index'))

    @classmethod
    def _query(cls):
        items = cls._items()
        return items.select(
            (items.test_type * 6 + items.stage_index * 3
                + items.age_index).as_('id'),
            *cls._log_columns(),
            items.test_type, items.stage, items.age,
            Count(Literal(1)).as_('number'),
            Sum(Case((items.urgent, 1), else_=0)).as_('urgent'),
            group_by=[
                items.test_type, items.stage, items.stage_index, items.age,
                items.age_index])

    @classmethod
    def records(cls, rows):
        "Return the ids of the requests or results behind the rows"
        cursor = Transaction().connection.cursor()
        items = cls._items()
        keys = {(r.stage, r.test_type.id, r.age) for r in rows}
        cursor.execute(*items.select(
                items.record, items.stage, items.test_type, items.age))
        return sorted({
                r for r, *key in cursor if tuple(key) in keys})

    def get_rec_name(self, name):
        return ' - '.join([
                self.test_type.rec_name if self.test_type else '',
                self.stage_string, self.age_string])


class OpenBacklog(Wizard):
    "Open Imaging Backlog"
    __name__ = 'gnuhealth.imaging.reporting.backlog.open'

    start = StateTransition()
    requests = StateAction('health_imaging.act_reporting_backlog_requests')
    results = StateAction('health_imaging.act_reporting_backlog_results')

    def transition_start(self):
        pool = Pool()
        ModelAccess = pool.get('ir.model.access')
        state = 'requests' if self.record.stage == 'perform' else 'results'
        model = {
            'requests': 'gnuhealth.imaging.test.request',
            'results': 'gnuhealth.imaging.test.result',
            }[state]
        # The numbers are for the reporting group, the patients' records
        # behind them for those who read them
        if not ModelAccess.check(model, 'read', raise_exception=False):
            raise ImagingReportingError(gettext(
                    'health_imaging.msg_reporting_backlog_records'))
        return state

    def _open(self, action):
        rows = [r for r in self.records if r.stage == self.record.stage]
        action['pyson_domain'] = PYSONEncoder().encode(
            [('id', 'in', self.model.records(rows))])
        action['name'] += ' (%s)' % ', '.join(r.rec_name for r in rows[:3])
        if len(rows) > 3:
            action['name'] += ',...'
        return action, {}
    do_requests = _open
    do_results = _open


# -- Readers ------------------------------------------------------------------
class ReaderMixin(Reporting):
    reader = fields.Many2One(
        'gnuhealth.healthprofessional',
        lazy_gettext('health_imaging.msg_reporting_reader'))
    completed = fields.Integer(
        lazy_gettext('health_imaging.msg_reporting_completed'),
        help=lazy_gettext('health_imaging.msg_reporting_completed_help'))
    urgent = fields.Integer(
        lazy_gettext('health_imaging.msg_reporting_urgent'),
        help=lazy_gettext('health_imaging.msg_reporting_urgent_help'))

    @classmethod
    def _completed(cls):
        "Return the results completed in the period by a health professional"
        facts = cls._facts()
        return facts.select(
            facts.id, facts.reader, facts.urgent, facts.completed,
            where=(facts.reader != Null) & cls._in_dates(facts.completed))

    @classmethod
    def _counts(cls, completed):
        return [
            Count(Literal(1)).as_('completed'),
            Sum(Case((completed.urgent, 1), else_=0)).as_('urgent'),
            ]

    def get_rec_name(self, name):
        return self.reader.rec_name if self.reader else ''

    @classmethod
    def search_rec_name(cls, name, clause):
        return [('reader.rec_name', *clause[1:])]


class Reader(ReaderMixin, ModelView):
    "Imaging Readers"
    __name__ = 'gnuhealth.imaging.reporting.reader'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order.insert(0, ('completed', 'DESC'))

    @classmethod
    def _query(cls):
        completed = cls._completed()
        return completed.select(
            completed.reader.as_('id'), *cls._log_columns(),
            completed.reader, *cls._counts(completed),
            group_by=[completed.reader])


class ReaderTimeseries(TimeseriesMixin, ReaderMixin, ModelView):
    "Imaging Readers"
    __name__ = 'gnuhealth.imaging.reporting.reader.time_series'

    @classmethod
    def _query(cls):
        completed = cls._completed()
        date = cls._period(completed.completed)
        return completed.select(
            cls._series_id(completed.reader, date).as_('id'),
            *cls._log_columns(),
            completed.reader, date.as_('date'), *cls._counts(completed),
            group_by=[completed.reader, date])
