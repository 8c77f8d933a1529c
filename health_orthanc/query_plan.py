# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Turn the Query PACS filters into C-FIND queries and sort the answers.

Pure functions: the DICOM exchange is a ``find`` callable given by the
caller (e.g. ``functools.partial(client.find_studies, node)``), so that the
planning, the filtering and the splitting of a date range are table-tested
without a server.

Orthanc peers match StudyDescription case-sensitively and a PACS may not
match ModalitiesInStudy at all, so the description terms and the
modalities are also applied to the answers here.
"""
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

from .dicom_network import STUDY_RETURN_KEYS, StudyAnswer
from .orthanc_client import AnswerLimitReached

__all__ = ['MODALITIES', 'COMMON_MODALITIES', 'EARLIEST', 'MAX_FINDS',
    'StudyFilter', 'StudyQuery', 'DateSpan', 'QueryOutcome',
    'parse_terms', 'parse_modalities', 'date_range', 'relative_window',
    'plan_patients', 'plan_rows', 'plan_open', 'dicom_query', 'keep_answer',
    'select_answers', 'merge_answers', 'split_range', 'run_query',
    'run_plan']

#: Modality defined terms (PS3.3 C.7.3.1.1.1), with retired ones still met.
MODALITIES = frozenset('''
    AR ASMT AU BDUS BI BMD CR CT CTPROTOCOL DG DOC DX ECG EPS ES FID GM HC
    HD IO IOL IVOCT IVUS KER KO LEN LS MG MR M3D NM OAM OCT OP OPM OPT
    OPTBSV OPTENF OPV OSS OT PLAN POS PR PT PX REG RESP RF RG RTDOSE
    RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD RTSEGANN RTSTRUCT RWV SEG SM SMR
    SR SRF STAIN TEXTUREMAP TG US VA XA XAPROTOCOL XC
    CD CF CP CS DD DF DM DS EC FA FS LP LS MA MS OPR ST VF
    '''.split())
#: The tick boxes of the wizard.
COMMON_MODALITIES = ('CR', 'CT', 'DX', 'MG', 'MR', 'NM', 'PT', 'RF', 'US',
    'XA', 'OT')
#: Lower bound of an open date range that has to be split.
EARLIEST = date(1900, 1, 1)
#: The most C-FINDs one query may send while it splits its date range: a
#: node that always has too many answers must not get thousands of them in
#: one request.  Halving 24 years down to a day takes about 26 C-FINDs, so
#: a few busy days are still found by day; past the cap, the ranges not
#: queried are reported as capped.
MAX_FINDS = 100


@dataclass(frozen=True)
class StudyFilter:
    """The filters of the Query PACS wizard, applied to every query.

    ``include_terms``: keep a study whose description contains any of
    them; ``exclude_terms``: drop a study whose description contains any
    of them (case-insensitive; see :func:`parse_terms`).
    """
    modalities: tuple[str, ...] = ()
    date_from: date | None = None
    date_to: date | None = None
    include_terms: tuple[str, ...] = ()
    exclude_terms: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudyQuery:
    """One C-FIND to send, and the terms to apply to its answers.

    ``row`` is the spreadsheet row it comes from, if any.
    """
    patient_id: str = ''
    modalities: tuple[str, ...] = ()
    date_from: date | None = None
    date_to: date | None = None
    accession: str = ''
    include_terms: tuple[str, ...] = ()
    exclude_terms: tuple[str, ...] = ()
    row: int | None = None


@dataclass(frozen=True)
class DateSpan:
    "Dates from ``date_from`` to ``date_to``, both included"
    date_from: date
    date_to: date

    def isoformat(self) -> str:
        "Return the ISO 8601 interval, as a date gives its day"
        return '%s/%s' % (self.date_from.isoformat(),
            self.date_to.isoformat())


@dataclass
class QueryOutcome:
    """What running one :class:`StudyQuery` gave.

    ``sent`` is the number of C-FIND sent; ``split`` whether the date range
    had to be split because the node capped its answers; ``capped`` the
    single days that still hit the cap, and the ranges (:class:`DateSpan`)
    left when :data:`MAX_FINDS` were sent (their answers may be incomplete
    or missing: never silently cut); ``undated_missed`` whether the split
    added a date range to a query that had none, so that studies without a
    StudyDate on the node could not be found.
    """
    query: StudyQuery
    answers: list[StudyAnswer] = field(default_factory=list)
    sent: int = 0
    split: bool = False
    capped: list[date | DateSpan] = field(default_factory=list)
    undated_missed: bool = False

    @property
    def complete(self) -> bool:
        return not self.capped and not self.undated_missed


# -- parsing the filters -----------------------------------------------------
def parse_terms(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """Return the description terms of ``text`` (comma separated).

    Terms are stripped and case-folded, empty ones and repeats dropped.
    """
    if not text:
        return ()
    if isinstance(text, str):
        text = text.split(',')
    terms = (' '.join(t.split()).casefold() for t in text)
    return tuple(dict.fromkeys(t for t in terms if t))


def parse_modalities(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """Return the upper-case modality codes of ``text``.

    Accepts ``CT\\MR``, ``CT, MR``, ``ct/mr``, ``CT MR`` or a sequence;
    unknown codes are kept (check them against :data:`MODALITIES`).
    """
    if not text:
        return ()
    if isinstance(text, str):
        for separator in '\\,;/':
            text = text.replace(separator, ' ')
        text = text.split()
    return tuple(dict.fromkeys(m.strip().upper() for m in text if m.strip()))


def date_range(date_from: date | None, date_to: date | None) -> str:
    """Return the DICOM range matching value: ``YYYYMMDD-YYYYMMDD``.

    Both ends are included; an open end is left empty; a single day is a
    single date; no dates is an empty string (match all).
    """
    def da(value):
        return value.strftime('%Y%m%d') if value else ''
    if date_from and date_to and date_from == date_to:
        return da(date_from)
    if not date_from and not date_to:
        return ''
    return '%s-%s' % (da(date_from), da(date_to))


def relative_window(days: int, today: date) -> tuple[date, date]:
    """Return the dates of "the last ``days`` days", today included.

    ``days=1`` is today only, ``days=2`` yesterday and today.
    """
    days = max(1, int(days))
    return today - timedelta(days=days - 1), today


# -- planning ----------------------------------------------------------------
def _from_filter(filters: StudyFilter, **values) -> StudyQuery:
    values = dict({
            'modalities': filters.modalities,
            'date_from': filters.date_from,
            'date_to': filters.date_to,
            'include_terms': filters.include_terms,
            'exclude_terms': filters.exclude_terms,
            }, **values)
    return StudyQuery(**values)


def plan_patients(patient_ids: Iterable[str],
        filters: StudyFilter) -> list[StudyQuery]:
    """Return one query per patient identifier (PUID, MRN...)."""
    ids = dict.fromkeys(p.strip() for p in patient_ids if p and p.strip())
    return [_from_filter(filters, patient_id=p) for p in ids]


def plan_rows(rows: Iterable, filters: StudyFilter) -> list[StudyQuery]:
    """Return one query per spreadsheet row (see ``query_sheet.SheetRow``).

    A row's own modalities, dates and description replace the wizard's;
    the wizard's exclude terms always apply.  Identical queries are sent
    once.
    """
    queries = {}
    for row in rows:
        values = {'patient_id': row.patient_id, 'row': row.row}
        if row.modalities:
            values['modalities'] = row.modalities
        if row.date_from or row.date_to:
            values['date_from'] = row.date_from
            values['date_to'] = row.date_to
        if row.accession:
            values['accession'] = row.accession
        if row.description:
            values['include_terms'] = parse_terms(row.description)
        query = _from_filter(filters, **values)
        queries.setdefault(replace(query, row=None), query)
    return list(queries.values())


def plan_open(filters: StudyFilter) -> list[StudyQuery]:
    "Return the query of every patient (e.g. a scheduled query)."
    return [_from_filter(filters)]


def dicom_query(query: StudyQuery) -> dict:
    """Return the C-FIND identifier of ``query``, with the return keys.

    The description terms are not sent (Orthanc peers match them
    case-sensitively): :func:`select_answers` applies them.
    """
    identifier = {key: '' for key in STUDY_RETURN_KEYS}
    if query.patient_id:
        identifier['PatientID'] = query.patient_id
    if query.modalities:
        identifier['ModalitiesInStudy'] = '\\'.join(query.modalities)
    identifier['StudyDate'] = date_range(query.date_from, query.date_to)
    if query.accession:
        identifier['AccessionNumber'] = query.accession
    return identifier


# -- answers -----------------------------------------------------------------
def keep_answer(answer: StudyAnswer, query: StudyQuery) -> bool:
    """Return whether ``answer`` passes the terms and modalities of query.

    A study without a description passes the include terms only if there
    are none; a study whose node gives no modalities passes.
    """
    description = ' '.join(answer.description.split()).casefold()
    if query.include_terms and not any(
            term in description for term in query.include_terms):
        return False
    if any(term in description for term in query.exclude_terms):
        return False
    if (query.modalities and answer.modalities
            and not set(query.modalities) & set(answer.modalities)):
        return False
    return True


def select_answers(answers: Iterable[StudyAnswer],
        query: StudyQuery) -> list[StudyAnswer]:
    "Return the answers that pass :func:`keep_answer`."
    return [a for a in answers if keep_answer(a, query)]


def merge_answers(*groups: Iterable[StudyAnswer]) -> list[StudyAnswer]:
    """Return the answers once per StudyInstanceUID, in order of first sight.

    A later answer for the same study fills what the first one lacked
    (e.g. its counts).
    """
    merged = {}
    for answer in (a for group in groups for a in group):
        first = merged.get(answer.study_uid)
        if first is None:
            merged[answer.study_uid] = answer
            continue
        missing = {name: getattr(answer, name)
            for name in first.__dataclass_fields__
            if getattr(first, name) in (None, '', ())
            and getattr(answer, name) not in (None, '', ())}
        if missing:
            merged[answer.study_uid] = replace(first, **missing)
    return list(merged.values())


# -- splitting ---------------------------------------------------------------
def split_range(date_from: date, date_to: date) -> tuple[
        tuple[date, date], tuple[date, date]] | None:
    """Return the two halves of a date range, None for a single day.

    The first half gets the middle day: 1-4 → (1-2, 3-4); 1-3 → (1-2, 3-3).
    """
    days = (date_to - date_from).days
    if days < 1:
        return None
    middle = date_from + timedelta(days=days // 2)
    return (date_from, middle), (middle + timedelta(days=1), date_to)


def run_query(query: StudyQuery,
        find: Callable[[dict], Sequence[StudyAnswer]], today: date,
        limit: int | None = None) -> QueryOutcome:
    """Run ``query``, splitting its date range while the node caps answers.

    Parameters
    ----------
    find : callable
        Sends one C-FIND identifier and returns the answers; raises
        :class:`AnswerLimitReached` when the node refuses to send them all
        (an Orthanc peer with ``LimitFindResults``).
    today : date
        Upper bound of an open date range that must be split.
    limit : int, optional
        The node's answer cap when it is known: as many answers as the
        cap count as capped (a PACS that silently cuts at 500).

    Returns
    -------
    QueryOutcome
        Answers merged and filtered with :func:`select_answers`.  At most
        :data:`MAX_FINDS` C-FINDs are sent.
    """
    outcome = QueryOutcome(query)
    pending = [query]
    found = []
    while pending:
        current = pending.pop(0)
        start = current.date_from or EARLIEST
        end = current.date_to or max(today, current.date_from or today)
        if outcome.sent >= MAX_FINDS:
            outcome.capped.append(_capped(start, end))
            continue
        answers, capped = _find_once(current, find, limit)
        outcome.sent += 1
        found.append(answers)
        if not capped:
            continue
        if current is query and not (query.date_from and query.date_to):
            outcome.undated_missed = True
        halves = split_range(start, end)
        if halves is None:
            # a single day, or a range that ends before EARLIEST
            outcome.capped.append(
                current.date_from or current.date_to or EARLIEST)
            continue
        if outcome.sent >= MAX_FINDS:
            outcome.capped.append(_capped(start, end))
            continue
        outcome.split = True
        found.pop()  # the halves find them again, completely
        pending[:0] = [replace(current, date_from=a, date_to=b)
            for a, b in halves]
    outcome.answers = select_answers(merge_answers(*found), query)
    return outcome


def _capped(start: date, end: date) -> date | DateSpan:
    return start if start == end else DateSpan(start, end)


def _find_once(query, find, limit) -> tuple[list[StudyAnswer], bool]:
    try:
        answers = list(find(dicom_query(query)))
    except AnswerLimitReached:
        return [], True
    return answers, bool(limit) and len(answers) >= limit


def run_plan(queries: Iterable[StudyQuery],
        find: Callable[[dict], Sequence[StudyAnswer]], today: date,
        limit: int | None = None) -> tuple[list[StudyAnswer],
            list[QueryOutcome]]:
    """Run every query; return the merged answers and each outcome."""
    outcomes = [run_query(q, find, today, limit) for q in queries]
    return merge_answers(*(o.answers for o in outcomes)), outcomes
