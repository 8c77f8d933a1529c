# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Tests of what the update keeps of GNU Health's own health_orthanc."""
import datetime as dt

import pytest

from trytond.modules.health_orthanc.legacy import (
    LegacyStudy, is_hand_link, orthanc_id, plan, server_key, study_date,
    study_notes)

URL = 'http://pacs:8042'


def study(patient_id='P1', patient=None, result=None, notes=None,
        merge_comment=None, orthanc='S1', server=URL):
    return LegacyStudy(server=server, orthanc_id=orthanc,
        study_instance_uid='1.2.3', patient_id=patient_id,
        patient_name='DOE^Jane', date='20240131', institution='',
        physician='', patient=patient, result=result, notes=notes,
        merge_comment=merge_comment)


@pytest.mark.parametrize('identifiers, expected', [
    # The IDs Orthanc 1.10 gave to a study of the upgrade test
    (('UPG000001', '2.25.220474599500671933398518701761429741461'),
        'fc726561-fc76ed96-49cabc37-e3f6f36a-8bf0c012'),
    (('UPG000003',), '1e255465-583e36b3-dc1431de-86b022ea-6c855ad4'),
    ])
def test_orthanc_id(identifiers, expected):
    assert orthanc_id(*identifiers) == expected


@pytest.mark.parametrize('domain, expected', [
    ('http://pacs:8042/', 'http://pacs:8042'),
    ('HTTP://PACS:8042', 'http://pacs:8042'),
    ('https://h/orthanc/', 'https://h/orthanc'),
    ('not a url', 'not a url'),
    ])
def test_server_key(domain, expected):
    assert server_key(domain) == expected


@pytest.mark.parametrize('value, expected', [
    ('20240131', dt.date(2024, 1, 31)),
    (' 20240131 ', dt.date(2024, 1, 31)),
    ('', None),
    (None, None),
    ('2024', None),
    ])
def test_study_date(value, expected):
    assert study_date(value) == expected


@pytest.mark.parametrize('notes, merge, series, expected', [
    (None, None, [], None),
    ('  ', '', [('Series 1', ' ')], None),
    ('Seen.', None, [], 'Seen.'),
    ('Seen.', 'Merged.', [('Series 2 T1', 'Blurred.')],
        'Seen.\n\nMerged.\n\nSeries 2 T1: Blurred.'),
    ])
def test_study_notes(notes, merge, series, expected):
    assert study_notes(
        study(notes=notes, merge_comment=merge), series) == expected


@pytest.mark.parametrize('patient_id, patient, expected', [
    ('P1', None, False),
    ('P1', 1, False),  # the patient whose PUID it is: a sync links it
    ('P1', 2, True),
    ('', 1, True),
    (None, 1, True),
    ])
def test_is_hand_link(patient_id, patient, expected):
    assert is_hand_link(
        study(patient_id=patient_id, patient=patient), {1: 'P1', 2: 'P2'}
        ) == expected


def test_plan_keeps_only_decisions():
    patients, studies, skipped = plan(
        [study(patient=1)], {URL: 7}, {1: 'P1'}, {})
    assert (patients, studies, skipped) == ({}, {}, [])


def test_plan_hand_link_result_and_notes():
    legacy = [
        study(patient=2, orthanc='S1'),
        study(result=5, orthanc='S2', patient_id='P9'),
        study(orthanc='S3', patient_id='P9'),
        ]
    patients, studies, skipped = plan(legacy, {URL: 7}, {1: 'P1'},
        {(URL, 'S3'): [('Series 1', 'Note.')]})
    p1, p9 = (7, orthanc_id('P1')), (7, orthanc_id('P9'))
    assert patients == {
        p1: {'patient_id': 'P1', 'name': 'DOE^Jane', 'patient': 2,
            'link_state': 'manual'},
        p9: {'patient_id': 'P9', 'name': 'DOE^Jane', 'patient': None,
            'link_state': 'no_match'},
        }
    assert studies[(7, 'S1')]['orthanc_patient'] == p1
    assert studies[(7, 'S1')]['study_date'] == dt.date(2024, 1, 31)
    assert studies[(7, 'S2')]['result'] == 5
    assert studies[(7, 'S3')]['notes'] == 'Series 1: Note.'
    assert skipped == []


def test_plan_latest_hand_link_wins():
    patients, _, _ = plan(
        [study(patient=2, orthanc='S1'), study(patient=3, orthanc='S2')],
        {URL: 7}, {}, {})
    assert patients[(7, orthanc_id('P1'))]['patient'] == 3


def test_plan_unknown_server():
    legacy = study(patient=2, server='http://gone')
    assert plan([legacy], {URL: 7}, {}, {}) == ({}, {}, [legacy])
