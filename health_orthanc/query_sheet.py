# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Read a spreadsheet of PACS queries: one row per query.

Columns (header names matched case-insensitively, spaces, ``_`` and ``-``
ignored): ``PatientID`` (required), ``Modality``, ``StudyDate`` (a date or
a ``from-to`` range, either end may be left open), ``AccessionNumber``,
``StudyDescription``.  Other columns are ignored.

CSV (UTF-8 with or without BOM, UTF-16 with BOM, else Windows-1252 /
Latin-1; comma, semicolon, tab or ``|`` separated) and XLSX (openpyxl) are
read; ODS and XLS when python-calamine is installed.  A bad row is
reported with its row number (as the spreadsheet shows it, header = 1), a
reason code and its parameters, and skipped: the other rows go through.
Only a file that cannot be read at all raises :class:`QuerySheetError`.
"""
import codecs
import csv
import io
import math
import re
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import openpyxl
from openpyxl.styles import Font

from .query_plan import EARLIEST, MODALITIES, parse_modalities

try:
    import python_calamine
except ImportError:  # pragma: no cover
    python_calamine = None

__all__ = ['COLUMNS', 'SheetRow', 'SheetProblem', 'SheetResult',
    'QuerySheetError', 'read_sheet', 'parse_row', 'parse_study_date',
    'decode_text', 'template_csv', 'template_xlsx', 'PROBLEMS']

#: The columns of the template, in order.
COLUMNS = ('PatientID', 'Modality', 'StudyDate', 'AccessionNumber',
    'StudyDescription')
_FIELDS = {
    'patientid': 'patient_id',
    'modality': 'modalities',
    'modalities': 'modalities',
    'modalitiesinstudy': 'modalities',
    'studydate': 'study_date',
    'accessionnumber': 'accession',
    'accession': 'accession',
    'studydescription': 'description',
    }
MAX_ROWS = 50000
HEADER_SEARCH = 10  # title lines tolerated above the header
PATIENT_ID_LENGTH = 64  # LO
ACCESSION_LENGTH = 16  # SH
_DELIMITERS = ',;\t|'
_MATCHING = re.compile(r'[*?\\]')
# after _text, which turns tabs and line breaks into spaces
_CONTROL = re.compile(r'[\x00-\x1f\x7f]')
_HEADERS = dict(zip(
        ('patient_id', 'modalities', 'study_date', 'accession',
            'description'), COLUMNS))
_EXCEL_EPOCH = date(1899, 12, 30)
_EXCEL_MAX = 2958465  # 9999-12-31
_ISO = r'\d{4}[-/.]\d{1,2}[-/.]\d{1,2}'
_DMY = r'\d{1,2}[-/.]\d{1,2}[-/.]\d{4}'
_DATE = r'(?:\d{8}|%s|%s)' % (_ISO, _DMY)
_RANGE = re.compile(r'(%s)?\s*(?:-|\u2013|\u2014|\.\.|to)\s*(%s)?'
    % (_DATE, _DATE), re.I)
_TIME = re.compile(r'[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?$')

#: Problem codes, in English (the Tryton side has translatable messages).
PROBLEMS = {
    'no_patient_id': 'The row has no PatientID.',
    'bad_patient_id': ('The PatientID "%(value)s" is longer than 64 '
        'characters or contains "*", "?" or "\\".'),
    'unknown_modality': 'Unknown modality "%(value)s".',
    'bad_date': ('Unreadable StudyDate "%(value)s": use a date or a range '
        'such as 2023-01-01 - 2023-12-31.'),
    'bad_date_range': ('The StudyDate range "%(value)s" ends before it '
        'starts.'),
    'bad_accession': ('The AccessionNumber "%(value)s" is longer than 16 '
        'characters or contains "*", "?" or "\\".'),
    'empty': 'The spreadsheet is empty.',
    'no_patient_id_column': ('The spreadsheet has no PatientID column '
        '(found: %(columns)s).'),
    'unreadable': 'The file cannot be read as a %(format)s spreadsheet.',
    'unsupported': ('The %(format)s format cannot be read here: save the '
        'spreadsheet as XLSX or CSV.'),
    'too_many_rows': 'The spreadsheet has more than %(max)d rows.',
    'unreadable_row': ('The row cannot be read: a cell is too long or a '
        'quote is not closed.'),
    'early_date': 'The StudyDate "%(value)s" is before 1900.',
    'control_character': ('The %(column)s cell contains a control '
        'character.'),
    }
#: Stands for a CSV row that the csv module cannot read.
_UNREADABLE = object()


@dataclass(frozen=True)
class SheetRow:
    "A good row: one query"
    row: int
    patient_id: str
    modalities: tuple[str, ...] = ()
    date_from: date | None = None
    date_to: date | None = None
    accession: str = ''
    description: str = ''


@dataclass(frozen=True)
class SheetProblem:
    "Why the row ``row`` is skipped; ``code`` is a key of :data:`PROBLEMS`"
    row: int
    code: str
    params: dict = field(default_factory=dict, compare=False)

    def __str__(self):
        return 'Row %d: %s' % (self.row, PROBLEMS[self.code] % self.params)


@dataclass
class SheetResult:
    """The good rows and the problems of a spreadsheet.

    ``format`` is ``csv``, ``xlsx``, ``ods`` or ``xls``; ``encoding`` the
    encoding of a CSV file; ``ignored_columns`` the headers not used.
    """
    rows: list[SheetRow]
    problems: list[SheetProblem]
    format: str
    encoding: str = ''
    ignored_columns: list[str] = field(default_factory=list)


class QuerySheetError(ValueError):
    "The file cannot be read at all; ``code`` is a key of :data:`PROBLEMS`"

    def __init__(self, code: str, **params):
        self.code = code
        self.params = params
        super().__init__(PROBLEMS[code] % params)


# -- reading -----------------------------------------------------------------
def read_sheet(data: bytes, day_first: bool = True,
        max_rows: int = MAX_ROWS) -> SheetResult:
    """Return the rows and the problems of the spreadsheet ``data``.

    Parameters
    ----------
    data : bytes
        The file: CSV, XLSX, ODS or XLS (told apart by content).
    day_first : bool
        Read ``01/02/2023`` as 1 February (else as January 2).
    max_rows : int
        Refuse a larger file (:class:`QuerySheetError` ``too_many_rows``).
    """
    kind = _kind(data)
    encoding = ''
    if kind == 'csv':
        text, encoding = decode_text(data)
        rows = _csv_rows(text)
    elif kind == 'xlsx':
        rows = _xlsx_rows(data)
    else:
        rows = _calamine_rows(data, kind)
    result = _parse_rows(rows, kind, day_first, max_rows)
    result.encoding = encoding
    return result


def _kind(data: bytes) -> str:
    if data[:4] == b'PK\x03\x04':
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = set(archive.namelist())
                mimetype = (archive.read('mimetype')
                    if 'mimetype' in names else b'')
        except (zipfile.BadZipFile, KeyError, OSError):
            raise QuerySheetError('unreadable', format='XLSX') from None
        if 'xl/workbook.xml' in names:
            return 'xlsx'
        if mimetype.startswith(b'application/vnd.oasis.opendocument.'
                b'spreadsheet'):
            return 'ods'
        raise QuerySheetError('unreadable', format='XLSX or ODS')
    if data[:8] == b'\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1':
        return 'xls'
    return 'csv'


def decode_text(data: bytes) -> tuple[str, str]:
    """Return the text of a CSV file and the encoding it was read with.

    A BOM wins; then UTF-8 if it decodes; then Windows-1252 (what Excel
    writes as "CSV" on Western Windows), Latin-1 for its few undefined
    bytes.
    """
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[3:].decode('utf-8'), 'utf-8-sig'
        except UnicodeDecodeError:
            data = data[3:]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode('utf-16'), 'utf-16'
        except UnicodeDecodeError:
            pass
    for encoding in ('utf-8', 'cp1252', 'latin-1'):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError('latin-1 decodes anything')  # pragma: no cover


def _csv_rows(text: str):
    lines = text.splitlines()
    header = next((line for line in lines if line.strip()), '')
    delimiter = max(_DELIMITERS, key=header.count)
    if not header.count(delimiter):
        delimiter = ','
    reader = csv.reader(io.StringIO(text, newline=''), delimiter=delimiter)
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error:
            # a cell over csv.field_size_limit(): the reader goes on after it
            yield _UNREADABLE


def _xlsx_rows(data: bytes):
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True,
            data_only=True)
    except Exception:
        # openpyxl raises many kinds of errors on a damaged file
        raise QuerySheetError('unreadable', format='XLSX') from None
    try:
        sheet = workbook.worksheets[0]
        # some writers store a wrong sheet size, which read-only mode trusts
        sheet.reset_dimensions()
        yield from sheet.iter_rows(min_row=1, values_only=True)
    except (ValueError, OverflowError):
        # a number cell that is no number: openpyxl cannot go on after it
        raise QuerySheetError('unreadable', format='XLSX') from None
    finally:
        workbook.close()


def _calamine_rows(data: bytes, kind: str):
    if python_calamine is None:
        raise QuerySheetError('unsupported', format=kind.upper())
    try:
        workbook = python_calamine.CalamineWorkbook.from_filelike(
            io.BytesIO(data))
        rows = workbook.get_sheet_by_index(0).to_python(
            skip_empty_area=False)
    except Exception:
        raise QuerySheetError('unreadable', format=kind.upper()) from None
    return rows


def _header_key(value) -> str:
    text = '' if value is None else str(value)
    return re.sub(r'[\s_\-\ufeff]+', '', text).casefold()


def _columns(header) -> tuple[dict[str, int], list[str]]:
    "Return the index of each known field, and the ignored headers"
    columns, ignored = {}, []
    for index, value in enumerate(header):
        name = _FIELDS.get(_header_key(value))
        if name and name not in columns:
            columns[name] = index
        elif value not in (None, ''):
            ignored.append(str(value).strip())
    return columns, ignored


def _parse_rows(rows, kind, day_first, max_rows) -> SheetResult:
    result = SheetResult([], [], kind)
    columns = None
    first = None
    count = 0
    for number, cells in enumerate(rows, 1):
        if cells is _UNREADABLE:
            if columns is not None:
                result.problems.append(
                    SheetProblem(number, 'unreadable_row', {'value': ''}))
            continue
        cells = list(cells or ())
        if all(_blank(c) for c in cells):
            continue
        if columns is None:
            first = first or cells
            columns, result.ignored_columns = _columns(cells)
            if 'patient_id' in columns:
                continue
            columns = None
            if number >= HEADER_SEARCH:
                break
            continue
        count += 1
        if count > max_rows:
            raise QuerySheetError('too_many_rows', max=max_rows)
        values = {name: cells[index] if index < len(cells) else None
            for name, index in columns.items()}
        row, problems = parse_row(number, values, day_first)
        if row:
            result.rows.append(row)
        result.problems.extend(problems)
    if first is None:
        raise QuerySheetError('empty')
    if columns is None:
        raise QuerySheetError('no_patient_id_column', columns=', '.join(
                str(c).strip() for c in first if not _blank(c)))
    return result


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# -- cells -------------------------------------------------------------------
def parse_row(number: int, values: dict, day_first: bool = True) -> tuple[
        SheetRow | None, list[SheetProblem]]:
    """Return the row (None when it is bad) and its problems.

    ``values`` maps the field names (``patient_id``, ``modalities``,
    ``study_date``, ``accession``, ``description``) to the cell values.
    """
    problems = []

    def problem(code, value='', **params):
        problems.append(SheetProblem(number, code, params or {
                    'value': value}))

    # e.g. a NUL, that no DICOM value and no database text may hold
    for name, column in _HEADERS.items():
        if _CONTROL.search(_text(values.get(name))):
            problem('control_character', column=column)
    if problems:
        return None, problems
    patient_id = _text(values.get('patient_id'))
    if not patient_id:
        problem('no_patient_id')
    elif len(patient_id) > PATIENT_ID_LENGTH or _MATCHING.search(patient_id):
        problem('bad_patient_id', patient_id)
    modalities = parse_modalities(_text(values.get('modalities')))
    for modality in modalities:
        if modality not in MODALITIES:
            problem('unknown_modality', modality)
    date_from = date_to = None
    cell = values.get('study_date')
    if not _blank(cell):
        try:
            date_from, date_to = parse_study_date(cell, day_first)
        except ValueError as error:
            code = str(error)
            problem(code if code in PROBLEMS else 'bad_date', _text(cell))
    accession = _text(values.get('accession'))
    if len(accession) > ACCESSION_LENGTH or _MATCHING.search(accession):
        problem('bad_accession', accession)
    if problems:
        return None, problems
    return SheetRow(number, patient_id, modalities, date_from, date_to,
        accession, _text(values.get('description'))), []


def _text(value) -> str:
    "Return a cell as text; a whole number keeps no decimals"
    if value is None:
        return ''
    if (isinstance(value, float) and value.is_integer()
            and abs(value) < 1e15):
        value = int(value)
    return ' '.join(str(value).split())


def parse_study_date(value, day_first: bool = True) -> tuple[
        date | None, date | None]:
    """Return the range ``(from, to)`` of a StudyDate cell.

    A single date gives ``(d, d)``; an open end is None.  Accepts date and
    datetime cells, Excel serial numbers, ``YYYYMMDD`` (as text or number),
    ``YYYY-MM-DD``, ``DD/MM/YYYY`` (``MM/DD/YYYY`` unless ``day_first``),
    ``DD.MM.YYYY``, and ranges of these joined by ``-``, ``..``, ``to`` or
    a dash (``2023-01-01 - 2023-03-31``, ``20230101-``).

    Raises
    ------
    ValueError
        With the problem code ``bad_date``, ``bad_date_range`` or
        ``early_date`` (before 1900: no DICOM date).
    """
    dates = _study_range(value, day_first)
    if any(d and d < EARLIEST for d in dates):
        raise ValueError('early_date')
    return dates


def _study_range(value, day_first):
    if isinstance(value, datetime):
        return value.date(), value.date()
    if isinstance(value, date):
        return value, value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        day = _number_date(value)
        return day, day
    text = _text(value)
    match = _RANGE.fullmatch(text)
    if match and (match.group(1) or match.group(2)):
        start = _text_date(match.group(1), day_first)
        end = _text_date(match.group(2), day_first)
        if start and end and end < start:
            raise ValueError('bad_date_range')
        return start, end
    day = _text_date(_TIME.sub('', text), day_first)
    if day is None:
        raise ValueError('bad_date')
    return day, day


def _number_date(value) -> date:
    if not math.isfinite(value):
        raise ValueError('bad_date')
    if value == int(value) and 10000101 <= value <= 99991231:
        return _text_date(str(int(value)), True)  # YYYYMMDD typed as number
    if not 1 <= value <= _EXCEL_MAX:
        raise ValueError('bad_date')
    days = int(value)
    # Excel counts a 29 February 1900 that never was
    epoch = _EXCEL_EPOCH if days > 60 else _EXCEL_EPOCH + timedelta(days=1)
    return epoch + timedelta(days=days)


def _text_date(text: str | None, day_first: bool) -> date | None:
    if not text:
        return None
    if re.fullmatch(r'\d{8}', text):
        year, month, day = text[:4], text[4:6], text[6:]
    elif re.fullmatch(_ISO, text):
        year, month, day = re.split(r'[-/.]', text)
    elif re.fullmatch(_DMY, text):
        first, second, year = re.split(r'[-/.]', text)
        day, month = (first, second) if day_first or '.' in text else (
            second, first)
    else:
        raise ValueError('bad_date')
    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        raise ValueError('bad_date') from None


# -- template ----------------------------------------------------------------
_HELP = [
    ('Column', 'Required', 'What to enter', 'Examples'),
    ('PatientID', 'yes', 'The patient identifier on the PACS (PUID or '
        'MRN).', 'GNU777ABC'),
    ('Modality', 'no', 'One or more modality codes.', 'CT\\MR, US'),
    ('StudyDate', 'no', 'A date, or a range from-to (either end may be left '
        'empty).', '2023-01-31, 2023-01-01 - 2023-12-31, 20230101-'),
    ('AccessionNumber', 'no', 'The accession number of one study.',
        'ACC0001'),
    ('StudyDescription', 'no', 'Keep the studies whose description '
        'contains this text (any case).', 'chest'),
    ]


def template_csv() -> bytes:
    "Return an empty query spreadsheet as CSV (UTF-8 with BOM, for Excel)"
    return codecs.BOM_UTF8 + (','.join(COLUMNS) + '\r\n').encode('utf-8')


def template_xlsx() -> bytes:
    """Return an empty query spreadsheet as XLSX, with a help sheet.

    The PatientID and AccessionNumber columns are text, so that Excel
    keeps their leading zeros.
    """
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = 'Queries'
    sheet.append(COLUMNS)
    bold = Font(bold=True)
    for cell in sheet[1]:
        cell.font = bold
    for letter, name in zip('ABCDE', COLUMNS):
        sheet.column_dimensions[letter].width = max(14, len(name) + 4)
        if name in ('PatientID', 'AccessionNumber'):
            sheet.column_dimensions[letter].number_format = '@'
    sheet.freeze_panes = 'A2'
    help_sheet = workbook.create_sheet('Help')
    for line in _HELP:
        help_sheet.append(line)
    for cell in help_sheet[1]:
        cell.font = bold
    for letter, width in zip('ABCD', (18, 10, 60, 45)):
        help_sheet.column_dimensions[letter].width = width
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()
