# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Shift DICOM dates (DA), date-times (DT) and check times (TM) by days.

Plain Python (no Tryton).  A value that cannot be shifted raises
:class:`DateValueError` with the reason; :func:`try_shift` returns
``(ok, value_or_reason)`` for callers that report and go on.

Rules (PS3.5 6.2 for the formats):

* ``DA`` is ``YYYYMMDD``; the ACR-NEMA form ``YYYY.MM.DD`` is read too and
  written back as ``YYYYMMDD``.  ``DT`` is
  ``YYYY[MM[DD[HH[MM[SS[.F{1-6}]]]]]][&ZZXX]``: only its date part moves,
  the time, fraction and UTC offset are kept as written.
* A partial date (``YYYY`` or ``YYYYMM``, in DT or in old DA values) keeps
  its precision: the middle of the period is shifted, then cut back, so the
  result is the period nearest to the true shifted one.
* Ranges (``A-B``, ``-B``, ``A-``) shift both ends; multiple values
  (``A\\B``) shift each value; an empty value stays empty.
* A time (TM) does not change when whole days are shifted: it is only
  checked.
"""
import datetime as dt
import re

__all__ = ['DateValueError', 'shift_date', 'shift_datetime', 'check_time',
    'shift_value', 'try_shift', 'birth_year_only', 'DATE_VRS']

DATE_VRS = frozenset({'DA', 'DT'})

_DA = re.compile(r'^(\d{4})(?:\.?(\d{2})(?:\.?(\d{2}))?)?$')
_DT = re.compile(
    r'^(?P<date>\d{4}(?:\d{2}(?:\d{2})?)?)'
    r'(?P<time>(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)'
    r'(?P<offset>[+-]\d{4})?$')
_TM = re.compile(r'^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.\d{1,6})?)?)?$')


class DateValueError(ValueError):
    "A DICOM date, date-time or time that cannot be read."


def _shift_parts(year, month, day, days):
    """Shift a possibly partial date; return the same precision."""
    if day is not None:
        base = dt.date(year, month, day)
    elif month is not None:
        base = dt.date(year, month, 15)
    else:
        base = dt.date(year, 7, 2)
    try:
        moved = base + dt.timedelta(days=days)
    except OverflowError as e:
        raise DateValueError('shifted date out of range') from e
    if day is not None:
        return moved.strftime('%Y%m%d')
    if month is not None:
        return moved.strftime('%Y%m')
    return moved.strftime('%Y')


def _date_parts(text):
    "Return (year, month, day) of 'YYYY[MM[DD]]' (day/month may be None)."
    year = int(text[:4])
    month = int(text[4:6]) if len(text) >= 6 else None
    day = int(text[6:8]) if len(text) >= 8 else None
    try:
        dt.date(year, month or 1, day or 1)
    except ValueError as e:
        raise DateValueError('not a calendar date') from e
    if not 1 <= year <= 9999:
        raise DateValueError('year out of range')
    return year, month, day


def shift_date(value: str, days: int) -> str:
    """Return the DA ``value`` (one date, no range) moved by ``days``."""
    match = _DA.match(value.strip())
    if not match:
        raise DateValueError('not a DICOM date (YYYYMMDD)')
    text = ''.join(g for g in match.groups() if g)
    return _shift_parts(*_date_parts(text), days)


def shift_datetime(value: str, days: int) -> str:
    """Return the DT ``value`` (one date-time, no range) moved by ``days``.

    The time, its fraction and the UTC offset are kept as written.
    """
    match = _DT.match(value.strip())
    if not match:
        raise DateValueError('not a DICOM date-time')
    time = match.group('time')
    if time:
        check_time(time)
    offset = match.group('offset')
    if offset and not (int(offset[1:3]) <= 14 and int(offset[3:]) < 60):
        raise DateValueError('not a UTC offset')
    date = _shift_parts(*_date_parts(match.group('date')), days)
    return date + time + (offset or '')


def check_time(value: str) -> str:
    """Return the TM ``value`` unchanged if it is a valid time."""
    text = value.strip()
    match = _TM.match(text)
    if not match:
        raise DateValueError('not a DICOM time (HHMMSS.FFFFFF)')
    hour, minute, second = (int(g) if g else 0 for g in match.groups())
    # 60 is a leap second, allowed by PS3.5
    if hour > 23 or minute > 59 or second > 60:
        raise DateValueError('not a time of day')
    return text


def _shift_one(vr, value, days):
    if vr == 'DA':
        return shift_date(value, days)
    if vr == 'DT':
        return shift_datetime(value, days)
    if vr == 'TM':
        return check_time(value)
    raise DateValueError('not a date or time VR: %s' % vr)


def _shift_range(vr, value, days):
    "Shift ``value`` as one value, else as a range 'A-B', '-B' or 'A-'."
    try:
        return _shift_one(vr, value, days)
    except DateValueError as error:
        first_error = error
    # A DT may hold '-' in its UTC offset: try every split.
    for index in [i for i, c in enumerate(value) if c == '-']:
        start, end = value[:index], value[index + 1:]
        if not (start or end):
            continue
        try:
            return '%s-%s' % (
                _shift_one(vr, start, days) if start else '',
                _shift_one(vr, end, days) if end else '')
        except DateValueError:
            continue
    raise first_error


def shift_value(vr: str, value: str | None, days: int) -> str:
    """Shift a whole attribute value of VR ``DA``, ``DT`` or ``TM``.

    Multiple values (``\\``) and ranges are shifted each; empty stays
    empty.  Raises :class:`DateValueError` for anything unreadable.
    """
    if value is None:
        return ''
    if not isinstance(value, str):
        raise DateValueError('not a text value')
    if not value.strip():
        return ''
    return '\\'.join(
        _shift_range(vr, part.strip(), days) if part.strip() else ''
        for part in value.split('\\'))


def try_shift(vr: str, value: str | None, days: int) -> tuple[bool, str]:
    """Return ``(True, shifted)`` or ``(False, reason)``; never raises."""
    try:
        return True, shift_value(vr, value, days)
    except DateValueError as e:
        return False, str(e)


def birth_year_only(value: str, days: int) -> str:
    """Return the birth date shifted by ``days`` and cut to its year.

    DA has no year-only form (PS3.5), so the year is written as the first
    of January: ``19790101``.  Empty stays empty.
    """
    if not value or not value.strip():
        return ''
    return shift_date(value, days)[:4] + '0101'
