# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"Table tests of query_sheet: CSV, XLSX and ODS spreadsheets of queries"
import codecs
import io
import os
import zipfile
from datetime import date, datetime
from xml.sax.saxutils import escape

import openpyxl
import pytest

from trytond.modules.health_orthanc import query_sheet
from trytond.modules.health_orthanc.query_sheet import (
    COLUMNS, PROBLEMS, QuerySheetError, SheetProblem, SheetRow, parse_row,
    parse_study_date, read_sheet, template_csv, template_xlsx)

D = date


def xlsx(rows, number_formats=None) -> bytes:
    "Return an XLSX file of ``rows`` (cells keep their Python types)"
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    for cell, number_format in (number_formats or {}).items():
        sheet[cell].number_format = number_format
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def ods(rows) -> bytes:
    "Return a minimal ODS file of ``rows`` (str, float and date cells)"
    def cell(value):
        if value is None:
            return '<table:table-cell/>'
        if isinstance(value, date):
            return ('<table:table-cell office:value-type="date" '
                'office:date-value="%s"><text:p>%s</text:p>'
                '</table:table-cell>' % (value.isoformat(), value))
        if isinstance(value, (int, float)):
            return ('<table:table-cell office:value-type="float" '
                'office:value="%s"><text:p>%s</text:p></table:table-cell>'
                % (value, value))
        return ('<table:table-cell office:value-type="string"><text:p>%s'
            '</text:p></table:table-cell>' % escape(value))
    body = ''.join('<table:table-row>%s</table:table-row>'
        % ''.join(cell(c) for c in row) for row in rows)
    content = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<office:document-content '
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
        'office:version="1.2"><office:body><office:spreadsheet>'
        '<table:table table:name="Queries">%s</table:table>'
        '</office:spreadsheet></office:body></office:document-content>'
        % body)
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<manifest:manifest xmlns:manifest="urn:oasis:names:tc:'
        'opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
        '<manifest:file-entry manifest:full-path="/" manifest:media-type='
        '"application/vnd.oasis.opendocument.spreadsheet"/>'
        '<manifest:file-entry manifest:full-path="content.xml" '
        'manifest:media-type="text/xml"/></manifest:manifest>')
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as archive:
        archive.writestr('mimetype',
            'application/vnd.oasis.opendocument.spreadsheet',
            compress_type=zipfile.ZIP_STORED)
        archive.writestr('content.xml', content)
        archive.writestr('META-INF/manifest.xml', manifest)
    return buffer.getvalue()


def good(result):
    return [(r.row, r.patient_id) for r in result.rows]


def bad(result):
    return [(p.row, p.code, p.params.get('value', '')) for p in
        result.problems]


# -- StudyDate ---------------------------------------------------------------
@pytest.mark.parametrize('value, expected', [
    (D(2023, 1, 31), (D(2023, 1, 31), D(2023, 1, 31))),
    (datetime(2023, 1, 31, 14, 5), (D(2023, 1, 31), D(2023, 1, 31))),
    ('20230131', (D(2023, 1, 31), D(2023, 1, 31))),
    (20230131, (D(2023, 1, 31), D(2023, 1, 31))),
    (20230131.0, (D(2023, 1, 31), D(2023, 1, 31))),
    ('2023-01-31', (D(2023, 1, 31), D(2023, 1, 31))),
    ('2023-1-5', (D(2023, 1, 5), D(2023, 1, 5))),
    ('2023/01/31', (D(2023, 1, 31), D(2023, 1, 31))),
    ('2023-01-31 00:00:00', (D(2023, 1, 31), D(2023, 1, 31))),
    ('2023-01-31T10:20', (D(2023, 1, 31), D(2023, 1, 31))),
    ('31/01/2023', (D(2023, 1, 31), D(2023, 1, 31))),
    ('31.01.2023', (D(2023, 1, 31), D(2023, 1, 31))),
    ('05/01/2023', (D(2023, 1, 5), D(2023, 1, 5))),
    (' 2023-01-31 ', (D(2023, 1, 31), D(2023, 1, 31))),
    # Excel serial numbers (days since 1899-12-30, with Excel's 1900 bug)
    (44957, (D(2023, 1, 31), D(2023, 1, 31))),
    (44957.75, (D(2023, 1, 31), D(2023, 1, 31))),
    (61, (D(1900, 3, 1), D(1900, 3, 1))),
    (59, (D(1900, 2, 28), D(1900, 2, 28))),
    (1, (D(1900, 1, 1), D(1900, 1, 1))),
    # ranges
    ('20230101-20230131', (D(2023, 1, 1), D(2023, 1, 31))),
    ('2023-01-01 - 2023-01-31', (D(2023, 1, 1), D(2023, 1, 31))),
    ('2023-01-01-2023-01-31', (D(2023, 1, 1), D(2023, 1, 31))),
    ('2023-01-01..2023-01-31', (D(2023, 1, 1), D(2023, 1, 31))),
    ('2023-01-01 to 2023-01-31', (D(2023, 1, 1), D(2023, 1, 31))),
    ('2023-01-01 \u2013 2023-01-31', (D(2023, 1, 1), D(2023, 1, 31))),
    ('01/01/2023 - 31/01/2023', (D(2023, 1, 1), D(2023, 1, 31))),
    ('20230101-', (D(2023, 1, 1), None)),
    ('2023-01-01 -', (D(2023, 1, 1), None)),
    ('-20230131', (None, D(2023, 1, 31))),
    ('20230101-20230101', (D(2023, 1, 1), D(2023, 1, 1))),
    ])
def test_parse_study_date(value, expected):
    assert parse_study_date(value) == expected


@pytest.mark.parametrize('value, day_first, expected', [
    ('05/01/2023', True, D(2023, 1, 5)),
    ('05/01/2023', False, D(2023, 5, 1)),
    ('05.01.2023', False, D(2023, 1, 5)),  # dots are always day first
    ('13/01/2023', False, None),
    ])
def test_parse_study_date_day_first(value, day_first, expected):
    if expected is None:
        with pytest.raises(ValueError):
            parse_study_date(value, day_first)
    else:
        assert parse_study_date(value, day_first) == (expected, expected)


@pytest.mark.parametrize('value, code', [
    ('yesterday', 'bad_date'),
    ('2023-02-30', 'bad_date'),
    ('20231301', 'bad_date'),
    ('2023', 'bad_date'),
    ('23-01-31', 'bad_date'),
    ('-', 'bad_date'),
    ('2023-01-01 - 2023-13-01', 'bad_date'),
    ('20230101-2023', 'bad_date'),
    ('20230131-20230101', 'bad_date_range'),
    (0, 'bad_date'),
    (-5, 'bad_date'),
    (3000000, 'bad_date'),
    (20231340, 'bad_date'),
    ('0005-01-01', 'early_date'),
    ('18991231', 'early_date'),
    ('31/12/1899', 'early_date'),
    (10000101, 'early_date'),
    ('1899-12-31 - 2000-01-01', 'early_date'),
    ('-18991231', 'early_date'),
    ('0001-01-01-', 'early_date'),
    ])
def test_parse_study_date_bad(value, code):
    with pytest.raises(ValueError) as info:
        parse_study_date(value)
    assert str(info.value) == code


# -- rows --------------------------------------------------------------------
@pytest.mark.parametrize('values, row, problems', [
    ({'patient_id': 'P1'}, SheetRow(7, 'P1'), []),
    ({'patient_id': ' P1 ', 'modalities': 'ct\\mr', 'study_date': '20230101',
        'accession': 'A1', 'description': ' CT  Chest '},
        SheetRow(7, 'P1', ('CT', 'MR'), D(2023, 1, 1), D(2023, 1, 1), 'A1',
            'CT Chest'), []),
    ({'patient_id': 12345.0}, SheetRow(7, '12345'), []),
    ({'patient_id': 12345, 'accession': 778.0},
        SheetRow(7, '12345', accession='778'), []),
    ({'patient_id': 'P1', 'modalities': '', 'study_date': '  ',
        'accession': None}, SheetRow(7, 'P1'), []),
    ({'patient_id': None}, None, [('no_patient_id', '')]),
    ({'patient_id': '  '}, None, [('no_patient_id', '')]),
    ({}, None, [('no_patient_id', '')]),
    ({'patient_id': 'P*'}, None, [('bad_patient_id', 'P*')]),
    ({'patient_id': 'P?'}, None, [('bad_patient_id', 'P?')]),
    ({'patient_id': 'A\\B'}, None, [('bad_patient_id', 'A\\B')]),
    ({'patient_id': 'X' * 65}, None, [('bad_patient_id', 'X' * 65)]),
    ({'patient_id': 'P1', 'modalities': 'CT, XX'}, None,
        [('unknown_modality', 'XX')]),
    ({'patient_id': 'P1', 'study_date': 'soon'}, None,
        [('bad_date', 'soon')]),
    ({'patient_id': 'P1', 'study_date': '20230201-20230101'}, None,
        [('bad_date_range', '20230201-20230101')]),
    ({'patient_id': 'P1', 'accession': 'A' * 17}, None,
        [('bad_accession', 'A' * 17)]),
    ({'patient_id': 'P1', 'accession': 'A*'}, None,
        [('bad_accession', 'A*')]),
    ({'patient_id': 'P1', 'study_date': '0005-01-01'}, None,
        [('early_date', '0005-01-01')]),
    ({'patient_id': 'P1', 'study_date': '19000101'},
        SheetRow(7, 'P1', (), D(1900, 1, 1), D(1900, 1, 1)), []),
    ({'patient_id': 'P1\x00'}, None, [('control_character', 'PatientID')]),
    ({'patient_id': '\x1b[31mP1'}, None,
        [('control_character', 'PatientID')]),
    ({'patient_id': 'P1\x7f'}, None, [('control_character', 'PatientID')]),
    ({'patient_id': 'P1', 'accession': 'A\x001'}, None,
        [('control_character', 'AccessionNumber')]),
    ({'patient_id': 'P1', 'description': 'chest\x08'}, None,
        [('control_character', 'StudyDescription')]),
    ({'patient_id': 'P1', 'modalities': 'CT\x00'}, None,
        [('control_character', 'Modality')]),
    ({'patient_id': 'P1', 'study_date': '2023\x00'}, None,
        [('control_character', 'StudyDate')]),
    # a tab or a line break in a cell is white space, not a problem
    ({'patient_id': 'P1\t', 'description': 'CT\r\nchest'},
        SheetRow(7, 'P1', description='CT chest'), []),
    ({'patient_id': '', 'modalities': 'QQ', 'study_date': 'x'}, None,
        [('no_patient_id', ''), ('unknown_modality', 'QQ'),
            ('bad_date', 'x')]),
    ])
def test_parse_row(values, row, problems):
    result, found = parse_row(7, values)
    assert result == row
    assert [(p.code, p.params.get('column', p.params.get('value')))
        for p in found] == problems
    assert all(p.row == 7 for p in found)


def test_problem_text():
    problem = SheetProblem(12, 'unknown_modality', {'value': 'XX'})
    assert str(problem) == 'Row 12: Unknown modality "XX".'


# -- CSV ---------------------------------------------------------------------
CSV = ('PatientID,Modality,StudyDate,AccessionNumber,StudyDescription\n'
    'P1,CT,2023-01-01,A1,Thorax\n'
    ',MR,,,\n'
    'PÉ2,,,,Éclair\n')


@pytest.mark.parametrize('data, encoding', [
    (CSV.encode('utf-8'), 'utf-8'),
    (codecs.BOM_UTF8 + CSV.encode('utf-8'), 'utf-8-sig'),
    (CSV.encode('cp1252'), 'cp1252'),
    (CSV.encode('utf-16'), 'utf-16'),
    (CSV.replace('\n', '\r\n').encode('utf-8'), 'utf-8'),
    ])
def test_csv_encodings(data, encoding):
    result = read_sheet(data)
    assert result.encoding == encoding
    assert result.format == 'csv'
    assert good(result) == [(2, 'P1'), (4, 'PÉ2')]
    assert result.rows[1].description == 'Éclair'
    assert bad(result) == [(3, 'no_patient_id', '')]


def test_csv_latin1_beyond_cp1252():
    "0x81 is undefined in Windows-1252: Latin-1 reads it"
    result = read_sheet(b'PatientID\nP\x81\nP\xe9\n')
    assert result.encoding == 'latin-1'
    assert good(result) == [(2, 'P\x81'), (3, 'Pé')]


@pytest.mark.parametrize('delimiter', [',', ';', '\t', '|'])
def test_csv_delimiters(delimiter):
    data = delimiter.join(['Patient ID', 'Study Date']) + '\nP1%s20230101\n'
    result = read_sheet((data % delimiter).encode())
    assert result.rows == [SheetRow(2, 'P1', (), D(2023, 1, 1),
            D(2023, 1, 1))]


def test_csv_single_column():
    assert good(read_sheet(b'PatientID\nP1\nP2\n')) == [(2, 'P1'), (3, 'P2')]


def test_csv_quoted_fields():
    data = ('PatientID;StudyDescription\n"P;1";"CT ""chest"", head"\n'
        .encode())
    assert read_sheet(data).rows == [SheetRow(2, 'P;1',
            description='CT "chest", head')]


@pytest.mark.parametrize('header', [
    'PatientID', 'patientid', 'PATIENT ID', 'Patient_ID', 'patient-id',
    ' Patient  Id ', '\ufeffPatientID',
    ])
def test_header_names(header):
    data = ('%s,study date,MODALITY,Accession Number,study_description\n'
        'P1,20230101,CT,A1,x\n' % header).encode()
    assert read_sheet(data).rows == [SheetRow(2, 'P1', ('CT',),
            D(2023, 1, 1), D(2023, 1, 1), 'A1', 'x')]


def test_ignored_columns_and_order():
    data = b'Name,StudyDate,Comment,PatientID\nDoe,20230101,x,P1\n'
    result = read_sheet(data)
    assert result.rows == [SheetRow(2, 'P1', (), D(2023, 1, 1),
            D(2023, 1, 1))]
    assert result.ignored_columns == ['Name', 'Comment']


def test_title_lines_above_header():
    data = b'Priors to fetch,,\n,,\nPatientID,Modality\nP1,CT\n'
    assert good(read_sheet(data)) == [(4, 'P1')]


def test_blank_rows_and_short_rows():
    data = b'PatientID,Modality,StudyDate\n\n,,\nP1\n  ,  ,  \nP2,US\n'
    result = read_sheet(data)
    assert good(result) == [(4, 'P1'), (6, 'P2')]
    assert result.problems == []


@pytest.mark.parametrize('data, code', [
    (b'', 'empty'),
    (b'\n\n  \n', 'empty'),
    (b'Name,Modality\nDoe,CT\n', 'no_patient_id_column'),
    (b'P1\nP2\n', 'no_patient_id_column'),
    (b'PK\x03\x04garbage', 'unreadable'),
    ])
def test_unreadable_sheet(data, code):
    with pytest.raises(QuerySheetError) as info:
        read_sheet(data)
    assert info.value.code == code


def test_no_patient_id_column_lists_columns():
    with pytest.raises(QuerySheetError) as info:
        read_sheet(b'Name,Patient\nDoe,1\n')
    assert info.value.params == {'columns': 'Name, Patient'}
    assert 'Name, Patient' in str(info.value)


def test_max_rows():
    data = b'PatientID\n' + b'P\n' * 11
    assert len(read_sheet(data, max_rows=11).rows) == 11
    with pytest.raises(QuerySheetError) as info:
        read_sheet(data, max_rows=10)
    assert info.value.code == 'too_many_rows'


def test_csv_10000_rows():
    lines = ['PatientID;Modality;StudyDate']
    for i in range(10000):
        if i % 1000 == 7:
            lines.append(';CT;')
        elif i % 1000 == 8:
            lines.append('P%d;CT;31/02/2023' % i)
        else:
            lines.append('P%d;CT\\MR;2023-01-01 - 2023-12-31' % i)
    result = read_sheet('\n'.join(lines).encode())
    assert len(result.rows) == 9980
    assert len(result.problems) == 20
    assert bad(result)[:2] == [(9, 'no_patient_id', ''),
        (10, 'bad_date', '31/02/2023')]
    assert result.rows[-1] == SheetRow(10001, 'P9999', ('CT', 'MR'),
        D(2023, 1, 1), D(2023, 12, 31))


# -- XLSX --------------------------------------------------------------------
def test_xlsx_cell_types():
    data = xlsx([
            ['PatientID', 'Modality', 'StudyDate', 'AccessionNumber'],
            ['P1', 'CT', datetime(2023, 1, 31, 10, 0), 'A1'],
            [12345, 'MR', D(2023, 2, 1), 778],
            ['P3', None, 44957, None],
            ['P4', 'US', '2023-01-01 - 2023-03-31', None],
            [None, None, None, None],
            ['P6', 'XX', 'never', None],
            [None, 'CT', D(2023, 1, 1), None],
            ['P8', None, 20230131, None],
            ])
    result = read_sheet(data)
    assert result.format == 'xlsx'
    assert result.rows == [
        SheetRow(2, 'P1', ('CT',), D(2023, 1, 31), D(2023, 1, 31), 'A1'),
        SheetRow(3, '12345', ('MR',), D(2023, 2, 1), D(2023, 2, 1), '778'),
        SheetRow(4, 'P3', (), D(2023, 1, 31), D(2023, 1, 31)),
        SheetRow(5, 'P4', ('US',), D(2023, 1, 1), D(2023, 3, 31)),
        SheetRow(9, 'P8', (), D(2023, 1, 31), D(2023, 1, 31)),
        ]
    assert bad(result) == [(7, 'unknown_modality', 'XX'),
        (7, 'bad_date', 'never'), (8, 'no_patient_id', '')]


def test_xlsx_date_formatted_serial():
    "A serial number shown as a date by Excel is read as a date"
    data = xlsx([['PatientID', 'StudyDate'], ['P1', 44957]],
        {'B2': 'yyyy-mm-dd'})
    assert read_sheet(data).rows[0].date_from == D(2023, 1, 31)


def test_xlsx_starts_lower():
    data = xlsx([[], [], ['Study list'], ['PatientID'], ['P1']])
    assert good(read_sheet(data)) == [(5, 'P1')]


def test_xlsx_wrong_dimension():
    "Some writers store a sheet size of A1: read-only mode must not trust it"
    data = xlsx([['PatientID'], ['P1'], ['P2']])
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(
            buffer, 'w') as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == 'xl/worksheets/sheet1.xml':
                content = content.replace(b'<dimension ref="A1:A3"/>',
                    b'<dimension ref="A1"/>')
                assert b'<dimension ref="A1"/>' in content
            target.writestr(item, content)
    assert good(read_sheet(buffer.getvalue())) == [(2, 'P1'), (3, 'P2')]


def test_xlsx_10000_rows():
    rows = [['PatientID', 'StudyDate']]
    rows += [['P%d' % i, D(2023, 1, 1 + i % 28)] for i in range(10000)]
    rows[5000][0] = None
    result = read_sheet(xlsx(rows))
    assert len(result.rows) == 9999
    assert bad(result) == [(5001, 'no_patient_id', '')]


def test_xlsx_damaged():
    data = xlsx([['PatientID'], ['P1']])
    with pytest.raises(QuerySheetError) as info:
        read_sheet(data[:len(data) // 2])
    assert info.value.code == 'unreadable'


# -- ODS ---------------------------------------------------------------------
def test_ods():
    "ODS is read with python-calamine, when it is installed"
    data = ods([
            ['Patient ID', 'Modality', 'Study Date'],
            ['P1', 'CT', D(2023, 1, 31)],
            [1234.0, None, 44957.0],
            [None, 'MR', None],
            ['P4', None, '2023-01-01 - 2023-02-01'],
            ])
    if query_sheet.python_calamine is None:
        with pytest.raises(QuerySheetError) as info:
            read_sheet(data)
        assert info.value.code == 'unsupported'
        return
    result = read_sheet(data)
    assert result.format == 'ods'
    assert result.rows == [
        SheetRow(2, 'P1', ('CT',), D(2023, 1, 31), D(2023, 1, 31)),
        SheetRow(3, '1234', (), D(2023, 1, 31), D(2023, 1, 31)),
        SheetRow(5, 'P4', (), D(2023, 1, 1), D(2023, 2, 1)),
        ]
    assert bad(result) == [(4, 'no_patient_id', '')]


def test_ods_without_calamine(monkeypatch):
    monkeypatch.setattr(query_sheet, 'python_calamine', None)
    with pytest.raises(QuerySheetError) as info:
        read_sheet(ods([['PatientID'], ['P1']]))
    assert (info.value.code, info.value.params) == (
        'unsupported', {'format': 'ODS'})
    assert 'save the spreadsheet as XLSX or CSV' in str(info.value)


def test_zip_that_is_no_spreadsheet():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as archive:
        archive.writestr('readme.txt', 'hello')
    with pytest.raises(QuerySheetError) as info:
        read_sheet(buffer.getvalue())
    assert info.value.code == 'unreadable'


# -- templates ---------------------------------------------------------------
def test_template_csv():
    data = template_csv()
    assert data.startswith(codecs.BOM_UTF8)
    assert data[3:].decode() == ','.join(COLUMNS) + '\r\n'
    result = read_sheet(data)
    assert (result.rows, result.problems, result.ignored_columns) == (
        [], [], [])


def test_template_xlsx():
    data = template_xlsx()
    workbook = openpyxl.load_workbook(io.BytesIO(data))
    sheet = workbook['Queries']
    assert [c.value for c in sheet[1]] == list(COLUMNS)
    assert sheet.column_dimensions['A'].number_format == '@'
    assert sheet.column_dimensions['D'].number_format == '@'
    assert workbook.sheetnames == ['Queries', 'Help']
    result = read_sheet(data)
    assert (result.rows, result.problems, result.ignored_columns) == (
        [], [], [])


def test_template_xlsx_filled():
    workbook = openpyxl.load_workbook(io.BytesIO(template_xlsx()))
    workbook['Queries'].append(['007', 'CT', D(2023, 1, 1), '0042', 'chest'])
    buffer = io.BytesIO()
    workbook.save(buffer)
    assert read_sheet(buffer.getvalue()).rows == [SheetRow(2, '007', ('CT',),
            D(2023, 1, 1), D(2023, 1, 1), '0042', 'chest')]


# -- bad input is reported, never a crash ------------------------------------
def xlsx_raw_value(text: bytes) -> bytes:
    "Return an XLSX file whose StudyDate number cell holds ``text`` as is"
    data = xlsx([['PatientID', 'StudyDate'], ['P1', 1.5], ['P2', 44957]])
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(
            buffer, 'w') as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == 'xl/worksheets/sheet1.xml':
                assert b'<v>1.5</v>' in content
                content = content.replace(b'<v>1.5</v>',
                    b'<v>%s</v>' % text)
            target.writestr(item, content)
    return buffer.getvalue()


@pytest.mark.parametrize('value', [
    float('inf'), float('-inf'), float('nan'), 1e300, -1e300])
def test_parse_study_date_non_finite(value):
    with pytest.raises(ValueError) as info:
        parse_study_date(value)
    assert str(info.value) == 'bad_date'


@pytest.mark.parametrize('data, rows, problems', [
    # a cell over the csv module's field limit: that row only
    (b'PatientID,StudyDate\nP1,' + b'x' * 200000 + b'\nP2,2023-01-01\n',
        [(3, 'P2')], [(2, 'unreadable_row', '')]),
    (b'PatientID;StudyDate\nP1;2023\n"' + b'x' * 140000 + b'";1\nP3;\n',
        [(4, 'P3')], [(2, 'bad_date', '2023'), (3, 'unreadable_row', '')]),
    # numbers as Excel stores them, but out of range
    (xlsx_raw_value(b'1E+999'), [(3, 'P2')], [(2, 'bad_date', 'inf')]),
    (xlsx_raw_value(b'1E+300'), [(3, 'P2')], [(2, 'bad_date', '1e+300')]),
    ])
def test_bad_cells_are_row_problems(data, rows, problems):
    result = read_sheet(data)
    assert good(result) == rows
    assert bad(result) == problems


@pytest.mark.parametrize('text', [b'NaN', b'abc'])
def test_xlsx_number_cell_not_a_number(text):
    "openpyxl fails inside its row iterator: the file cannot be read"
    with pytest.raises(QuerySheetError) as info:
        read_sheet(xlsx_raw_value(text))
    assert (info.value.code, info.value.params) == (
        'unreadable', {'format': 'XLSX'})


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_ods_not_a_number(value):
    if query_sheet.python_calamine is None:
        pytest.skip('python-calamine is not installed')
    result = read_sheet(ods([['PatientID', 'StudyDate'], ['P1', value],
                ['P2', 44957.0]]))
    assert good(result) == [(3, 'P2')]
    assert [p[:2] for p in bad(result)] == [(2, 'bad_date')]


def test_problem_codes_have_messages():
    "Every code has a text here and an ir.message on the Tryton side"
    path = os.path.join(os.path.dirname(query_sheet.__file__), 'message.xml')
    with open(path, encoding='utf-8') as file:
        messages = file.read()
    assert {'unreadable_row', 'early_date', 'control_character'} <= set(
        PROBLEMS)
    for code in PROBLEMS:
        assert 'id="msg_query_sheet_%s"' % code in messages


def test_csv_nul_in_patient_id():
    "PostgreSQL cannot store a NUL: the row is refused, the others go"
    result = read_sheet(b'PatientID,StudyDate\nP1\x00,2023-01-01\nP2,\n')
    assert good(result) == [(3, 'P2')]
    assert [(p.row, p.code, p.params['column']) for p in result.problems] == [
        (2, 'control_character', 'PatientID')]
