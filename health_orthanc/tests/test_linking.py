# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Tests of the rules that link an Orthanc patient to a local patient and
a study to its request."""
import datetime as dt

import pytest

from trytond.modules.health_orthanc.linking import (
    AMBIGUOUS, BIRTH_DATE_MISMATCH, LINKED, NO_MATCH, NO_PATIENT_ID,
    PATIENT_DIFFERS, PATIENT_UNKNOWN, REQUEST_LINKED, RESULT_DONE,
    RequestMatch, choose_patient, decide_study_link, leaves_results,
    normalize_identifier, upload_link)

BORN = dt.date(1980, 1, 15)
OTHER = dt.date(1980, 1, 16)


@pytest.mark.parametrize('value, expected', [
    ('PAT-0001', 'PAT-0001'),
    ('  PAT-0001  ', 'PAT-0001'),
    ('\tPAT-0001\r\n', 'PAT-0001'),
    ('\u00a0PAT-0001\u3000', 'PAT-0001'),
    ('pat-0001', 'pat-0001'),  # case is significant
    ('PAT 0001', 'PAT 0001'),  # inner spaces are kept
    ('0001', '0001'),  # leading zeros are kept
    ('X', 'X'),
    ('Müller-1', 'Müller-1'),
    ('', None),
    (' ', None),
    ('\t\n ', None),
    (None, None),
    ])
def test_normalize_identifier(value, expected):
    assert normalize_identifier(value) == expected


# candidates, DICOM birth date, DICOM PatientID, expected (id, status)
CASES = {
    'no candidate': (
        [], BORN, 'P1', (None, NO_MATCH)),
    'no candidate, no birth date': (
        [], None, 'P1', (None, NO_MATCH)),
    'one, same birth date': (
        [(1, BORN)], BORN, 'P1', (1, LINKED)),
    'one, different birth date': (
        [(1, BORN)], OTHER, 'P1', (None, BIRTH_DATE_MISMATCH)),
    'one, different year': (
        [(1, BORN)], dt.date(1981, 1, 15), 'P1',
        (None, BIRTH_DATE_MISMATCH)),
    'one, DICOM birth date unknown': (
        [(1, BORN)], None, 'P1', (1, LINKED)),
    'one, local birth date unknown': (
        [(1, None)], BORN, 'P1', (1, LINKED)),
    'one, both birth dates unknown': (
        [(1, None)], None, 'P1', (1, LINKED)),
    'same patient by PUID and MRN': (
        [(1, BORN), (1, BORN)], BORN, 'P1', (1, LINKED)),
    'same patient twice, no birth dates': (
        [(1, None), (1, None)], None, 'P1', (1, LINKED)),
    'same patient twice, different birth date': (
        [(1, BORN), (1, BORN)], OTHER, 'P1', (None, BIRTH_DATE_MISMATCH)),
    'two patients': (
        [(1, BORN), (2, BORN)], BORN, 'P1', (None, AMBIGUOUS)),
    'two patients, only one with the birth date': (
        # the birth date never chooses between candidates
        [(1, BORN), (2, OTHER)], BORN, 'P1', (None, AMBIGUOUS)),
    'two patients, no birth dates': (
        [(1, None), (2, None)], None, 'P1', (None, AMBIGUOUS)),
    'two patients, one found twice': (
        [(1, BORN), (2, BORN), (1, BORN)], BORN, 'P1', (None, AMBIGUOUS)),
    'three patients': (
        [(1, BORN), (2, BORN), (3, BORN)], BORN, 'P1', (None, AMBIGUOUS)),
    'patient id with spaces': (
        [(1, BORN)], BORN, '  P1  ', (1, LINKED)),
    'empty patient id': (
        [(1, BORN)], BORN, '', (None, NO_PATIENT_ID)),
    'blank patient id': (
        [(1, BORN)], BORN, '   ', (None, NO_PATIENT_ID)),
    'tab patient id': (
        [(1, BORN)], BORN, '\t\n', (None, NO_PATIENT_ID)),
    'no patient id': (
        [(1, BORN)], BORN, None, (None, NO_PATIENT_ID)),
    'no patient id, no candidate': (
        [], None, None, (None, NO_PATIENT_ID)),
    'no patient id, ambiguous': (
        [(1, BORN), (2, BORN)], BORN, '', (None, NO_PATIENT_ID)),
    }


@pytest.mark.parametrize('candidates, birth_date, patient_id, expected',
    list(CASES.values()), ids=list(CASES))
def test_choose_patient(candidates, birth_date, patient_id, expected):
    assert choose_patient(candidates, birth_date, patient_id) == expected
    # any iterable will do, e.g. a generator read once
    assert choose_patient(
        iter(candidates), birth_date, patient_id) == expected
    # the order of the candidates does not matter
    assert choose_patient(
        reversed(candidates), birth_date, patient_id) == expected


def test_choose_patient_keeps_candidates():
    candidates = [(1, BORN), (1, BORN)]
    choose_patient(candidates, BORN, 'P1')
    assert candidates == [(1, BORN), (1, BORN)]


def test_statuses_are_distinct():
    statuses = [LINKED, NO_MATCH, AMBIGUOUS, BIRTH_DATE_MISMATCH,
        NO_PATIENT_ID]
    assert len(set(statuses)) == len(statuses)
    assert all(isinstance(s, str) and s for s in statuses)


# -- studies and requests ---------------------------------------------------
ANA, BOB = 1, 2
REQUEST = 10
NOTHING = (None, None, None)
LINKED_TO_REQUEST = (REQUEST, REQUEST_LINKED, None)


def match(**values):
    "Request 10 of Ana, without result unless said"
    return RequestMatch(**dict({'id': REQUEST, 'patient': ANA}, **values))


# matched request, patient of the study, expected (request, link, candidate)
STUDY_CASES = {
    'no request': (None, ANA, NOTHING),
    'no request, no patient': (None, None, NOTHING),
    'same patient, no result': (match(), ANA, LINKED_TO_REQUEST),
    'same patient, draft result': (
        match(result_state='draft'), ANA, LINKED_TO_REQUEST),
    'same patient, draft result, attached': (
        match(result_state='draft', attached=True), ANA,
        LINKED_TO_REQUEST),
    'same patient, completed result': (
        match(result_state='done'), ANA, (None, RESULT_DONE, REQUEST)),
    'same patient, completed result, already on it': (
        # what a signed result reads stays linked
        match(result_state='done', attached=True), ANA, LINKED_TO_REQUEST),
    'another patient': (
        match(), BOB, (None, PATIENT_DIFFERS, REQUEST)),
    'another patient, already on the result': (
        match(result_state='draft', attached=True), BOB,
        (None, PATIENT_DIFFERS, REQUEST)),
    'another patient, completed result': (
        match(result_state='done', attached=True), BOB,
        (None, PATIENT_DIFFERS, REQUEST)),
    'patient not linked': (
        match(), None, (None, PATIENT_UNKNOWN, REQUEST)),
    'patient not linked, completed result': (
        match(result_state='done'), None, (None, PATIENT_UNKNOWN, REQUEST)),
    }


@pytest.mark.parametrize('matched, patient, expected',
    list(STUDY_CASES.values()), ids=list(STUDY_CASES))
def test_decide_study_link(matched, patient, expected):
    assert decide_study_link(matched, patient) == expected


# current (request, link, candidate), new, expected
LEAVE_CASES = {
    'stays linked': (LINKED_TO_REQUEST, LINKED_TO_REQUEST, False),
    'linked, now another patient': (
        LINKED_TO_REQUEST, (None, PATIENT_DIFFERS, REQUEST), True),
    'linked, request gone': (LINKED_TO_REQUEST, NOTHING, True),
    'reviewed, reason changed': (
        (None, PATIENT_DIFFERS, REQUEST), (None, PATIENT_UNKNOWN, REQUEST),
        True),
    'reviewed, request gone': (
        (None, PATIENT_UNKNOWN, REQUEST), NOTHING, True),
    'reviewed, now linked': (
        (None, PATIENT_UNKNOWN, REQUEST), LINKED_TO_REQUEST, False),
    'never matched': (NOTHING, NOTHING, False),
    'new, for review': (NOTHING, (None, PATIENT_DIFFERS, REQUEST), False),
    }


@pytest.mark.parametrize('current, new, expected',
    list(LEAVE_CASES.values()), ids=list(LEAVE_CASES))
def test_leaves_results(current, new, expected):
    assert leaves_results(current, new) is expected


def test_study_links_are_distinct():
    links = [REQUEST_LINKED, PATIENT_DIFFERS, PATIENT_UNKNOWN, RESULT_DONE]
    assert len(set(links)) == len(links)


# The Orthanc patient's link (or None: new), whether it is kept,
# candidates, DICOM birth date and PatientID, expected (id, status)
UPLOAD_CASES = {
    'new patient, PatientID a PUID, no birth date': (
        None, False, [(1, BORN)], None, 'PUID-1', (1, LINKED)),
    'new patient, unknown PatientID': (
        None, False, [], None, 'X', (None, NO_MATCH)),
    'new patient, birth dates differ': (
        None, False, [(1, BORN)], OTHER, 'PUID-1',
        (None, BIRTH_DATE_MISMATCH)),
    'new patient, two candidates': (
        None, False, [(1, BORN), (2, BORN)], BORN, 'PUID-1',
        (None, AMBIGUOUS)),
    'linked by the rule: keeps its patient': (
        (1, LINKED), False, [(2, BORN)], BORN, 'PUID-2', (1, LINKED)),
    'linked by hand: kept': (
        (1, 'manual'), True, [(2, BORN)], BORN, 'PUID-2', (1, 'manual')),
    'unlinked by hand: stays unlinked': (
        (None, 'manual'), True, [(2, BORN)], BORN, 'PUID-2',
        (None, 'manual')),
    'linked by an order: kept': (
        (1, 'order'), True, [], None, 'X', (1, 'order')),
    'not linked yet: the rule decides': (
        (None, NO_MATCH), False, [(2, None)], BORN, 'PUID-2', (2, LINKED)),
    'no PatientID': (
        None, False, [], None, '', (None, NO_PATIENT_ID)),
    }


@pytest.mark.parametrize(
    'current, kept, candidates, birth_date, patient_id, expected',
    UPLOAD_CASES.values(), ids=UPLOAD_CASES.keys())
def test_upload_link(
        current, kept, candidates, birth_date, patient_id, expected):
    assert upload_link(
        current, kept, candidates, birth_date, patient_id) == expected
