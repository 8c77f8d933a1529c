# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Tests of the shift of DICOM dates, date-times and times by days."""
import pytest

from trytond.modules.health_orthanc.dicom_dates import (
    DateValueError, birth_year_only, shift_value, try_shift)


@pytest.mark.parametrize('vr, value, days, expected', [
    ('DA', '20230315', 10, '20230325'),
    ('DA', '20230315', -20, '20230223'),
    ('DA', '20231225', 10, '20240104'),          # across a year
    ('DA', '20240228', 1, '20240229'),           # leap day
    ('DA', '20230228', 1, '20230301'),
    ('DA', '20240301', -366, '20230301'),
    ('DA', '20230315', 0, '20230315'),
    ('DA', ' 20230315 ', 1, '20230316'),         # padding
    ('DA', '2023.03.15', 1, '20230316'),         # ACR-NEMA form
    ('DA', '202303', -10, '202303'),             # partial: nearest month
    ('DA', '202303', -20, '202302'),
    ('DA', '2023', -100, '2023'),                # partial: nearest year
    ('DA', '2023', -200, '2022'),
    ('DA', '20230101-20230131', 5, '20230106-20230205'),     # range
    ('DA', '-20230131', 5, '-20230205'),
    ('DA', '20230101-', 5, '20230106-'),
    ('DA', '20230101\\20230201', 1, '20230102\\20230202'),   # multi-valued
    ('DA', '20230101\\', 1, '20230102\\'),
    ('DA', '', 5, ''),
    ('DA', '   ', 5, ''),
    ('DA', None, 5, ''),
    ('DT', '20230315101600', 1, '20230316101600'),
    ('DT', '20230315101600.123456', 1, '20230316101600.123456'),
    ('DT', '20230315101600.5+0100', -1, '20230314101600.5+0100'),
    ('DT', '20230315101600-0500', 1, '20230316101600-0500'),
    ('DT', '2023031510', 1, '2023031610'),       # partial time
    ('DT', '20230315', 1, '20230316'),
    ('DT', '202303', 30, '202304'),
    ('DT', '2023', 1, '2023'),
    ('DT', '20231231235959', 1, '20240101235959'),  # the time is kept
    ('DT', '20230101000000-20230102000000', 1,
        '20230102000000-20230103000000'),        # range
    ('DT', '20230101000000-0500-20230102000000-0500', 1,
        '20230102000000-0500-20230103000000-0500'),
    ('DT', '-20230102', 1, '-20230103'),
    ('TM', '101600', 400, '101600'),              # a time does not move
    ('TM', '101600.123', 1, '101600.123'),
    ('TM', '10', 1, '10'),
    ('TM', '10:16:00', 1, '10:16:00'),            # ACR-NEMA form
    ('TM', '235960', 1, '235960'),                # leap second
    ('TM', '080000-120000', 1, '080000-120000'),
    ])
def test_shift_value(vr, value, days, expected):
    assert shift_value(vr, value, days) == expected


@pytest.mark.parametrize('vr, value, reason', [
    ('DA', '20230230', 'not a calendar date'),
    ('DA', '20231301', 'not a calendar date'),
    ('DA', '2023-03-15', 'not a DICOM date'),   # ISO is not DICOM
    ('DA', 'yesterday', 'not a DICOM date'),
    ('DA', '230315', 'not a calendar date'),    # read as YYYYMM
    ('DA', '00000000', 'not a calendar date'),
    ('DA', '20230101\\x', 'not a DICOM date'),
    ('DT', '20230315256000', 'not a time of day'),
    ('DT', '20230315101600+2500', 'not a UTC offset'),
    ('DT', '2023031510160', 'not a DICOM'),
    ('TM', '2500', 'not a time of day'),
    ('TM', '10h30', 'not a DICOM time'),
    ('XX', '20230315', 'not a date or time VR'),
    ])
def test_invalid_values_are_reported(vr, value, reason):
    ok, message = try_shift(vr, value, 3)
    assert not ok
    assert reason in message
    with pytest.raises(DateValueError):
        shift_value(vr, value, 3)


@pytest.mark.parametrize('value, days', [
    ('99991231', 1), ('00010101', -1), ('99991231', 10 ** 6)])
def test_out_of_range(value, days):
    ok, message = try_shift('DA', value, days)
    assert not ok
    assert 'out of range' in message


@pytest.mark.parametrize('value', [12, b'20230101', ['20230101']])
def test_not_text(value):
    assert try_shift('DA', value, 1) == (False, 'not a text value')


@pytest.mark.parametrize('value, days, expected', [
    ('19800115', 0, '19800101'),
    ('19800115', -20, '19791226'[:4] + '0101'),
    ('19801231', 1, '19810101'),
    ('1980', 10, '19800101'),
    ('', 10, ''),
    ])
def test_birth_year_only(value, days, expected):
    assert birth_year_only(value, days) == expected


def test_birth_year_only_invalid():
    with pytest.raises(DateValueError):
        birth_year_only('born 1980', 1)
