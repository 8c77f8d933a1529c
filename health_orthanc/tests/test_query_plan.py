# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"Table tests of query_plan: filters to C-FIND, answers, date range splits"
from datetime import date, timedelta

import pytest

from trytond.modules.health_orthanc.dicom_network import StudyAnswer
from trytond.modules.health_orthanc.orthanc_client import AnswerLimitReached
from trytond.modules.health_orthanc.query_plan import (
    COMMON_MODALITIES, EARLIEST, MAX_FINDS, MODALITIES, DateSpan, StudyFilter,
    StudyQuery, date_range, dicom_query, keep_answer, merge_answers,
    parse_modalities, parse_terms, plan_open, plan_patients, plan_rows,
    relative_window, run_plan, run_query, split_range)
from trytond.modules.health_orthanc.query_sheet import SheetRow

D = date
TODAY = D(2024, 6, 1)


@pytest.mark.parametrize('text, expected', [
    (None, ()),
    ('', ()),
    (' , ,', ()),
    ('chest', ('chest',)),
    ('Chest, HEAD ,  abdomen', ('chest', 'head', 'abdomen')),
    ('chest,CHEST', ('chest',)),
    ('with   contrast', ('with contrast',)),
    (['Knee', ' '], ('knee',)),
    ('STRASSE', ('strasse',)),
    ('Straße', ('strasse',)),
    ])
def test_parse_terms(text, expected):
    assert parse_terms(text) == expected


@pytest.mark.parametrize('text, expected', [
    (None, ()),
    ('', ()),
    ('CT', ('CT',)),
    ('CT\\MR', ('CT', 'MR')),
    ('ct, mr', ('CT', 'MR')),
    ('CT/MR;US', ('CT', 'MR', 'US')),
    ('CT MR CT', ('CT', 'MR')),
    (['ct', 'Mr', ''], ('CT', 'MR')),
    ])
def test_parse_modalities(text, expected):
    assert parse_modalities(text) == expected


def test_common_modalities_are_known():
    assert set(COMMON_MODALITIES) <= MODALITIES


@pytest.mark.parametrize('start, end, expected', [
    (None, None, ''),
    (D(2023, 1, 1), D(2023, 1, 31), '20230101-20230131'),
    (D(2023, 1, 1), D(2023, 1, 1), '20230101'),
    (D(2023, 1, 1), None, '20230101-'),
    (None, D(2023, 1, 31), '-20230131'),
    ])
def test_date_range(start, end, expected):
    assert date_range(start, end) == expected


@pytest.mark.parametrize('days, expected', [
    (1, (TODAY, TODAY)),
    (2, (D(2024, 5, 31), TODAY)),
    (7, (D(2024, 5, 26), TODAY)),
    (0, (TODAY, TODAY)),
    ])
def test_relative_window(days, expected):
    assert relative_window(days, TODAY) == expected


FILTERS = StudyFilter(modalities=('CT', 'MR'), date_from=D(2023, 1, 1),
    date_to=D(2023, 12, 31), include_terms=('chest',),
    exclude_terms=('contrast',))


def test_plan_patients():
    queries = plan_patients(['P1', ' P2 ', '', 'P1', None], FILTERS)
    assert queries == [
        StudyQuery('P1', ('CT', 'MR'), D(2023, 1, 1), D(2023, 12, 31),
            include_terms=('chest',), exclude_terms=('contrast',)),
        StudyQuery('P2', ('CT', 'MR'), D(2023, 1, 1), D(2023, 12, 31),
            include_terms=('chest',), exclude_terms=('contrast',)),
        ]


def test_plan_open():
    assert plan_open(StudyFilter(modalities=('CT',))) == [
        StudyQuery(modalities=('CT',))]


@pytest.mark.parametrize('row, expected', [
    (SheetRow(2, 'P1'), StudyQuery('P1', ('CT', 'MR'), D(2023, 1, 1),
            D(2023, 12, 31), '', ('chest',), ('contrast',), 2)),
    (SheetRow(3, 'P1', ('US',), D(2020, 1, 1), None, 'A1', 'Knee, hip'),
        StudyQuery('P1', ('US',), D(2020, 1, 1), None, 'A1',
            ('knee', 'hip'), ('contrast',), 3)),
    (SheetRow(4, 'P1', (), None, D(2020, 1, 1)),
        StudyQuery('P1', ('CT', 'MR'), None, D(2020, 1, 1), '', ('chest',),
            ('contrast',), 4)),
    ])
def test_plan_rows(row, expected):
    assert plan_rows([row], FILTERS) == [expected]


def test_plan_rows_sends_identical_queries_once():
    rows = [SheetRow(2, 'P1'), SheetRow(3, 'P2'), SheetRow(4, 'P1'),
        SheetRow(5, 'P1', ('US',))]
    assert [(q.patient_id, q.row) for q in plan_rows(rows, StudyFilter())
        ] == [('P1', 2), ('P2', 3), ('P1', 5)]


@pytest.mark.parametrize('query, expected', [
    (StudyQuery(), {}),
    (StudyQuery('P1'), {'PatientID': 'P1'}),
    (StudyQuery(modalities=('CT', 'MR')), {'ModalitiesInStudy': 'CT\\MR'}),
    (StudyQuery(date_from=D(2023, 1, 1), date_to=D(2023, 2, 1)),
        {'StudyDate': '20230101-20230201'}),
    (StudyQuery(accession='A1'), {'AccessionNumber': 'A1'}),
    (StudyQuery(include_terms=('chest',), exclude_terms=('head',)), {}),
    ])
def test_dicom_query(query, expected):
    identifier = dicom_query(query)
    assert {k: v for k, v in identifier.items() if v} == expected
    assert identifier['StudyDescription'] == ''
    assert identifier['StudyInstanceUID'] == ''
    assert 'StudyDate' in identifier


def answer(uid, description='', modalities=(), **kwargs):
    return StudyAnswer(uid, description=description, modalities=modalities,
        **kwargs)


@pytest.mark.parametrize('description, modalities, query, kept', [
    ('CT Chest', (), StudyQuery(), True),
    ('CT Chest', (), StudyQuery(include_terms=('chest',)), True),
    ('CT CHEST', (), StudyQuery(include_terms=('chest',)), True),
    ('CT Chest', (), StudyQuery(include_terms=('head', 'chest')), True),
    ('CT Head', (), StudyQuery(include_terms=('chest',)), False),
    ('', (), StudyQuery(include_terms=('chest',)), False),
    ('CT Chest with contrast', (), StudyQuery(
            exclude_terms=('contrast',)), False),
    ('CT Chest WITH  CONTRAST', (), StudyQuery(
            exclude_terms=('with contrast',)), False),
    ('CT Chest', (), StudyQuery(include_terms=('chest',),
            exclude_terms=('chest',)), False),
    ('Thorax', (), StudyQuery(exclude_terms=('contrast',)), True),
    ('Straße', (), StudyQuery(include_terms=parse_terms('STRASSE')), True),
    ('x', ('CT',), StudyQuery(modalities=('CT', 'MR')), True),
    ('x', ('CT', 'PT'), StudyQuery(modalities=('PT',)), True),
    ('x', ('US',), StudyQuery(modalities=('CT', 'MR')), False),
    ('x', (), StudyQuery(modalities=('CT',)), True),
    ])
def test_keep_answer(description, modalities, query, kept):
    assert keep_answer(answer('1', description, modalities), query) is kept


def test_merge_answers():
    first = answer('1', 'CT', ('CT',))
    fuller = answer('1', 'CT other', ('CT', 'PT'), series_count=3,
        patient_id='P1')
    merged = merge_answers([first, answer('2')], [fuller, answer('3')], [])
    assert [a.study_uid for a in merged] == ['1', '2', '3']
    assert merged[0] == answer('1', 'CT', ('CT',), series_count=3,
        patient_id='P1')
    assert merge_answers() == []


@pytest.mark.parametrize('start, end, halves', [
    (D(2023, 1, 1), D(2023, 1, 1), None),
    (D(2023, 1, 2), D(2023, 1, 1), None),
    (D(2023, 1, 1), D(2023, 1, 2), ((D(2023, 1, 1), D(2023, 1, 1)),
            (D(2023, 1, 2), D(2023, 1, 2)))),
    (D(2023, 1, 1), D(2023, 1, 3), ((D(2023, 1, 1), D(2023, 1, 2)),
            (D(2023, 1, 3), D(2023, 1, 3)))),
    (D(2023, 1, 1), D(2023, 1, 4), ((D(2023, 1, 1), D(2023, 1, 2)),
            (D(2023, 1, 3), D(2023, 1, 4)))),
    (D(2023, 1, 1), D(2023, 12, 31), ((D(2023, 1, 1), D(2023, 7, 2)),
            (D(2023, 7, 3), D(2023, 12, 31)))),
    ])
def test_split_range(start, end, halves):
    assert split_range(start, end) == halves


# -- a PACS in memory --------------------------------------------------------
class FakePacs:
    """Answers C-FIND identifiers from a list of studies.

    ``cap``: more answers than this fail the whole query as Orthanc's
    LimitFindResults does, or are cut to ``cap`` when ``truncate``.
    """

    def __init__(self, studies, cap=None, truncate=False):
        self.studies = studies
        self.cap = cap
        self.truncate = truncate
        self.sent = []

    def __call__(self, identifier):
        self.sent.append(identifier['StudyDate'])
        found = [s for s in self.studies if self.match(s, identifier)]
        if self.cap and len(found) > self.cap:
            if not self.truncate:
                raise AnswerLimitReached('PACS', dimse_status=0xFE00)
            found = found[:self.cap]
        return found

    @staticmethod
    def match(study, identifier):
        if identifier['PatientID'] and (
                study.patient_id != identifier['PatientID']):
            return False
        if identifier['StudyDate']:
            text = identifier['StudyDate']
            start, _, end = text.partition('-') if '-' in text else (
                text, '', text)
            day = study.study_date.strftime('%Y%m%d') if (
                study.study_date) else ''
            if not day or not (start or day) <= day <= (end or day):
                return False
        return True


def studies(count, first=D(2023, 1, 1), days=1, patient='P1', undated=0):
    result = [answer('%s.%d' % (patient, i), patient_id=patient,
            study_date=first + timedelta(days=i % days))
        for i in range(count)]
    result += [answer('%s.u%d' % (patient, i), patient_id=patient)
        for i in range(undated)]
    return result


def uids(answers):
    return sorted(a.study_uid for a in answers)


def test_run_query_under_cap():
    pacs = FakePacs(studies(3), cap=5)
    outcome = run_query(StudyQuery('P1'), pacs, TODAY)
    assert uids(outcome.answers) == ['P1.0', 'P1.1', 'P1.2']
    assert (outcome.sent, outcome.split, outcome.complete) == (1, False, True)


def test_run_query_splits_range():
    pacs = FakePacs(studies(20, days=20), cap=5)
    query = StudyQuery('P1', date_from=D(2023, 1, 1), date_to=D(2023, 1, 20))
    outcome = run_query(query, pacs, TODAY)
    assert uids(outcome.answers) == uids(pacs.studies)
    assert outcome.split and outcome.complete
    assert pacs.sent == ['20230101-20230120', '20230101-20230110',
        '20230101-20230105', '20230106-20230110', '20230111-20230120',
        '20230111-20230115', '20230116-20230120']


def test_run_query_single_day_at_cap_is_reported():
    pacs = FakePacs(studies(6, first=D(2023, 1, 3)) + studies(
            2, first=D(2023, 1, 1), patient='P1x'), cap=5)
    outcome = run_query(StudyQuery(date_from=D(2023, 1, 1),
            date_to=D(2023, 1, 4)), pacs, TODAY)
    assert uids(outcome.answers) == ['P1x.0', 'P1x.1']
    assert outcome.capped == [D(2023, 1, 3)]
    assert not outcome.complete and not outcome.undated_missed


def test_run_query_open_range_is_bounded_and_said():
    pacs = FakePacs(studies(8, first=D(2024, 5, 1), days=8, undated=1),
        cap=5)
    outcome = run_query(StudyQuery('P1'), pacs, TODAY)
    assert uids(outcome.answers) == ['P1.%d' % i for i in range(8)]
    assert pacs.sent[1] == '19000101-19620318'
    assert pacs.sent[-1].endswith('-20240601')
    assert outcome.undated_missed and not outcome.complete
    assert outcome.sent < 40


def test_run_query_open_end():
    pacs = FakePacs(studies(8, first=D(2024, 5, 1), days=8), cap=5)
    outcome = run_query(StudyQuery('P1', date_from=D(2024, 5, 1)), pacs,
        TODAY)
    assert len(outcome.answers) == 8
    assert outcome.undated_missed


def test_run_query_known_cap_of_truncating_node():
    "A PACS that cuts at its cap silently: as many answers as the cap"
    pacs = FakePacs(studies(10, days=10), cap=5, truncate=True)
    query = StudyQuery('P1', date_from=D(2023, 1, 1), date_to=D(2023, 1, 10))
    assert len(run_query(query, pacs, TODAY).answers) == 5  # cap unknown
    outcome = run_query(query, pacs, TODAY, limit=5)
    assert uids(outcome.answers) == uids(pacs.studies)
    assert outcome.complete


def test_run_query_truncated_single_day_keeps_answers():
    pacs = FakePacs(studies(7), cap=5, truncate=True)
    outcome = run_query(StudyQuery('P1', date_from=D(2023, 1, 1),
            date_to=D(2023, 1, 1)), pacs, TODAY, limit=5)
    assert len(outcome.answers) == 5
    assert outcome.capped == [D(2023, 1, 1)]


def test_run_query_filters_answers():
    pacs = FakePacs([answer('1', 'CT Chest'), answer('2', 'CT Head'),
            answer('3', 'chest with contrast')])
    outcome = run_query(StudyQuery(include_terms=('chest',),
            exclude_terms=('contrast',)), pacs, TODAY)
    assert uids(outcome.answers) == ['1']


def test_run_query_merges_duplicates():
    "A node may send the same study twice (one answer per series...)"
    pacs = FakePacs([answer('1'), answer('1', 'x'), answer('2')])
    assert uids(run_query(StudyQuery(), pacs, TODAY).answers) == ['1', '2']


def test_run_query_deep_split_terminates():
    "50 years at a cap of one study a day: splits down to single days"
    pacs = FakePacs(studies(2, first=D(2000, 1, 1)) + studies(
            1, first=D(1990, 6, 1), patient='P2'), cap=1)
    outcome = run_query(StudyQuery(date_from=D(1974, 1, 1),
            date_to=D(2023, 12, 31)), pacs, TODAY)
    assert uids(outcome.answers) == ['P2.0']
    assert outcome.capped == [D(2000, 1, 1)]
    assert outcome.sent < 100


def test_run_plan():
    pacs = FakePacs(studies(2) + studies(1, patient='P2'))
    answers, outcomes = run_plan(plan_patients(['P1', 'P2', 'P1b'],
            StudyFilter()), pacs, TODAY)
    assert uids(answers) == ['P1.0', 'P1.1', 'P2.0']
    assert [len(o.answers) for o in outcomes] == [2, 1, 0]


# -- a node that always has too many answers ---------------------------------
def always_capped(identifier):
    raise AnswerLimitReached('PACS', dimse_status=0xFE00)


def covered(capped):
    "Return the (from, to) of the capped days and ranges, in order"
    return sorted((c, c) if isinstance(c, date) else (c.date_from, c.date_to)
        for c in capped)


@pytest.mark.parametrize('date_from, date_to, start, end', [
    (D(2000, 1, 1), None, D(2000, 1, 1), TODAY),
    (None, None, EARLIEST, TODAY),
    (D(1974, 1, 1), D(2023, 12, 31), D(1974, 1, 1), D(2023, 12, 31)),
    (D(2023, 1, 1), D(2023, 12, 31), D(2023, 1, 1), D(2023, 12, 31)),
    (D(2023, 1, 1), D(2023, 1, 31), D(2023, 1, 1), D(2023, 1, 31)),
    ])
def test_run_query_split_is_bounded(date_from, date_to, start, end):
    "The C-FINDs are capped; every day not queried is reported, none lost"
    outcome = run_query(StudyQuery('P1', date_from=date_from,
            date_to=date_to), always_capped, TODAY)
    assert outcome.sent <= MAX_FINDS
    assert not outcome.complete
    spans = covered(outcome.capped)
    assert spans[0][0] == start and spans[-1][1] == end
    for (_, before), (after, _) in zip(spans, spans[1:]):
        assert after == before + timedelta(days=1)
    assert all(a <= b for a, b in spans)


@pytest.mark.parametrize('date_from, date_to, capped', [
    (None, D(1899, 1, 1), [D(1899, 1, 1)]),
    (None, D(1899, 12, 31), [D(1899, 12, 31)]),
    (D(2023, 1, 1), D(2023, 1, 1), [D(2023, 1, 1)]),
    (D(2023, 2, 1), D(2023, 1, 1), [D(2023, 2, 1)]),
    ])
def test_run_query_capped_unsplittable(date_from, date_to, capped):
    "A range that cannot be split is reported by a day, never None"
    outcome = run_query(StudyQuery('P1', date_from=date_from,
            date_to=date_to), always_capped, TODAY)
    assert (outcome.sent, outcome.capped) == (1, capped)
    assert ', '.join(d.isoformat() for d in outcome.capped)


@pytest.mark.parametrize('span, text', [
    (DateSpan(D(2000, 1, 1), D(2000, 6, 30)), '2000-01-01/2000-06-30'),
    (DateSpan(D(1900, 1, 1), D(2024, 6, 1)), '1900-01-01/2024-06-01'),
    ])
def test_date_span_isoformat(span, text):
    "Shown as an ISO 8601 interval in the note of the capped days"
    assert span.isoformat() == text


def test_run_query_busy_days_within_cap():
    "24 years at a cap of 5: three busy days found by day, the rest whole"
    busy = [D(2001, 3, 4), D(2012, 7, 8), D(2023, 11, 30)]
    found = [answer('S%d' % i, patient_id='P1', study_date=D(
                2000 + 2 * i, 5, 5)) for i in range(12)]
    pacs = FakePacs(found + [answer('B%d.%d' % (i, n), patient_id='P1',
                study_date=day) for i, day in enumerate(busy)
            for n in range(6)], cap=5)
    outcome = run_query(StudyQuery('P1', date_from=D(2000, 1, 1),
            date_to=D(2023, 12, 31)), pacs, TODAY)
    assert outcome.capped == busy
    assert uids(outcome.answers) == uids(found)
    assert outcome.sent <= MAX_FINDS
