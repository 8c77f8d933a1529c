# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Tests of the scanner of identifying values left in a DICOM copy."""
import datetime as dt

import pytest

from trytond.modules.health_orthanc.phi_scan import (
    Finding, Identity, PhiScanner, iter_values, normalize_text)

IDENTITY = Identity(
    names=['MÜLLER^Jörg^Anton'],
    identifiers=['PUID-8472-KX', 'MRN00918273', '123456789', '42'],
    birth_date=dt.date(1975, 3, 21),
    accession_numbers=['ACC552211'],
    institutions=['Saint Barnabas General Hospital'],
    physicians=['HOUSE^Gregory^^Dr.', 'LI^Wu'])
SCANNER = PhiScanner(IDENTITY)


@pytest.mark.parametrize('text, expected', [
    ('MÜLLER^Jörg', 'muller jorg'),
    ('  Doe,  JOHN ', 'doe john'),
    ('A=B\\C', 'a b c'),
    ('PUID-8472_KX', 'puid 8472 kx'),
    ('ﬁle', 'file'),                  # compatibility forms
    ])
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize('text, kind', [
    # names: any part of three letters or more, whole words, any case
    ('MÜLLER^Jörg^Anton', 'patient name'),
    ('muller', 'patient name'),
    ('Mueller', None),                     # another spelling: not found
    ('CT thorax of Jorg', 'patient name'),
    ('ANTON', 'patient name'),
    ('Antonia', None),                     # a word, not a substring
    ('Dr. House', 'physician name'),
    ('GREGORY^H', 'physician name'),
    ('LI', None),                          # two letters: not searched
    ('Wu^Li', None),
    # identifiers: letters and digits, anywhere in the value
    ('PUID-8472-KX', 'patient identifier'),
    ('puid8472kx', 'patient identifier'),
    ('ID PUID 8472 KX (old)', 'patient identifier'),
    ('xxMRN00918273yy', 'patient identifier'),
    ('MRN 009 182 73', 'patient identifier'),
    ('123456789', 'patient identifier'),
    ('ref 123456789', 'patient identifier'),
    ('1234567890', None),                  # a number must match whole
    ('0.123456789', None),
    ('42', None),                          # too short to search
    ('8472', None),                        # the short number of an ID
    ('ACC552211', 'accession number'),
    ('acc-552211', 'accession number'),
    # birth date in several forms
    ('19750321', 'birth date'),
    ('1975-03-21', 'birth date'),
    ('21/03/1975', 'birth date'),
    ('03/21/1975', 'birth date'),
    ('21.03.1975', 'birth date'),
    ('19750322', None),
    ('1975', None),
    # institution: the whole phrase
    ('SAINT BARNABAS GENERAL HOSPITAL', 'institution'),
    ('Saint  Barnabas General Hospital, radiology', 'institution'),
    ('General Hospital', None),
    # UIDs are never matched
    ('1.2.840.19750321.123456789', None),
    # nothing
    ('', None),
    ('   ', None),
    ('CT', None),
    ])
def test_match(text, kind):
    assert SCANNER.match(text) == kind


@pytest.mark.parametrize('birth_date', ['19750321', dt.date(1975, 3, 21)])
def test_birth_date_forms(birth_date):
    scanner = PhiScanner(Identity(birth_date=birth_date))
    assert scanner.match('1975-03-21') == 'birth date'


def test_empty_identity_finds_nothing():
    scanner = PhiScanner(Identity(names=['', None], identifiers=[None],
        birth_date='not a date', institutions=['']))
    assert scanner.match('anything at all 19750321') is None


SHORT = {
    '0010,0010': 'PRJ-ABCDEFGH-1',
    '0008,1030': 'CT thorax of Jörg Müller',
    '0009,0010': 'GNUHEALTH TEST',
    '0009,1010': 'PUID-8472-KX',
    '0040,0275': [{'0040,1001': 'PUID-8472-KX', '0040,0009': 'SPS1'},
        {'0008,1110': [{'0008,1150': '1.2.3', '0008,0080':
                'Saint Barnabas General Hospital'}]}],
    '0008,0060': 'CT',
    '7fe0,0010': None,
    '0028,0030': ['0.5', '0.5'],
    }


def test_iter_values_nested():
    assert dict(iter_values(SHORT)) == {
        '0010,0010': 'PRJ-ABCDEFGH-1',
        '0008,1030': 'CT thorax of Jörg Müller',
        '0009,0010': 'GNUHEALTH TEST',
        '0009,1010': 'PUID-8472-KX',
        '0040,0275[0].0040,1001': 'PUID-8472-KX',
        '0040,0275[0].0040,0009': 'SPS1',
        '0040,0275[1].0008,1110[0].0008,1150': '1.2.3',
        '0040,0275[1].0008,1110[0].0008,0080':
            'Saint Barnabas General Hospital',
        '0008,0060': 'CT',
        '0028,0030[0]': '0.5',
        '0028,0030[1]': '0.5',
        }


def test_scan_paths_and_kinds():
    assert SCANNER.scan('inst-1', SHORT) == [
        Finding('inst-1', '0008,1030', 'patient name'),
        Finding('inst-1', '0009,1010', 'patient identifier'),
        Finding('inst-1', '0040,0275[0].0040,1001', 'patient identifier'),
        Finding('inst-1', '0040,0275[1].0008,1110[0].0008,0080',
            'institution'),
        ]


def test_scan_full_form():
    full = {'0008,1030': {'Name': 'StudyDescription', 'Type': 'String',
            'Value': 'for MULLER'},
        '0040,0275': {'Name': 'RequestAttributesSequence',
            'Type': 'Sequence', 'Value': [{'0040,1001': {
                        'Name': 'RequestedProcedureID', 'Type': 'String',
                        'Value': 'ACC552211'}}]},
        '7fe0,0010': {'Name': 'PixelData', 'Type': 'Null', 'Value': None}}
    assert SCANNER.scan_many([('x', full)]) == [
        Finding('x', '0008,1030 StudyDescription', 'patient name'),
        Finding('x', '0040,0275 RequestAttributesSequence[0]'
            '.0040,1001 RequestedProcedureID', 'accession number')]


def test_findings_hold_no_value():
    finding, = SCANNER.scan('i', {'0010,0010': 'MÜLLER^Jörg'})
    assert 'MÜLLER' not in repr(finding) and 'Jörg' not in repr(finding)
