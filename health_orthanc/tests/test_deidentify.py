# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Tests of de-identification profiles and the Orthanc request they make."""
import pytest

from trytond.modules.health_orthanc.deidentify import (
    BASIC, BASIC_SHIFTED, PROFILES, Profile, ProfileError, Subject, TagRule,
    check_dates, check_profile, correction_body, date_attributes,
    normalize_tags, plan_anonymization, profile_from_rows, tag_key)

SUBJECT = Subject('TRIAL-K3M9Q2XZ-7', -10)


def study(*instances):
    "Tag dumps keyed by instance ID, in the simplified form"
    return {'i%d' % n: tags for n, tags in enumerate(instances)}


ONE = study({'PatientName': 'DOE^John', 'PatientID': 'P1',
        'StudyDate': '20230315', 'SeriesDate': '20230315',
        'PatientBirthDate': '19800115', 'InstanceCreationDate': '20230315',
        'StudyTime': '101010'})


def test_shipped_profiles():
    assert set(PROFILES) == {'basic', 'basic_dates_shifted'}
    assert PROFILES['basic'].name == 'Basic (PS3.15)'
    assert PROFILES['basic_dates_shifted'].name == (
        'Basic, dates shifted, descriptions kept')
    for profile in PROFILES.values():
        assert check_profile(profile) == []


@pytest.mark.parametrize('tag, key', [
    ('InstitutionName', 'InstitutionName'),
    ('0008,0080', 'InstitutionName'),
    ('(0008,0080)', 'InstitutionName'),
    ('0008-0080', 'InstitutionName'),
    ('00080080', 'InstitutionName'),
    ('0009,1010', '0009,1010'),
    ('0009,10AB', '0009,10ab'),
    ])
def test_tag_key(tag, key):
    assert tag_key(tag) == key


@pytest.mark.parametrize('tag', ['NoSuchTag', '', '0008,008', 'x,y'])
def test_tag_key_unknown(tag):
    with pytest.raises(ProfileError):
        tag_key(tag)


@pytest.mark.parametrize('profile, problem', [
    (Profile('p', 'P', dates='keep'), 'dates must be'),
    (Profile('p', 'P', birth_date='full'), 'birth_date must be'),
    (Profile('p', 'P', dicom_version='2023b'), 'unknown DICOM version'),
    (Profile('p', 'P', rules=(TagRule('keep', 'PatientID'),)),
        'PatientID is set by the de-identification'),
    (Profile('p', 'P', rules=(TagRule('keep', 'StudyInstanceUID'),)),
        'StudyInstanceUID is set by'),
    (Profile('p', 'P', rules=(TagRule('copy', 'InstitutionName'),)),
        'unknown action'),
    (Profile('p', 'P', rules=(TagRule('keep', 'Nope'),)),
        'unknown DICOM attribute'),
    (Profile('p', 'P', rules=(TagRule('keep', 'InstitutionName'),
                TagRule('remove', '0008,0080'))),
        'InstitutionName has more than one rule'),
    ])
def test_check_profile(profile, problem):
    problems = check_profile(profile)
    assert len(problems) == 1
    assert problem in problems[0]
    with pytest.raises(ProfileError):
        plan_anonymization(profile, SUBJECT, ONE)


def test_profile_from_rows():
    profile = profile_from_rows(
        {'code': 'x', 'name': 'X', 'dates': 'shift', 'id': 12},
        [{'action': 'keep', 'tag': 'BodyPartExamined', 'value': None},
            {'action': 'replace', 'tag': 'InstitutionName',
                'value': 'Research site'}])
    assert profile.dates == 'shift'
    assert profile.rules == (TagRule('keep', 'BodyPartExamined', ''),
        TagRule('replace', 'InstitutionName', 'Research site'))
    with pytest.raises(ProfileError, match='PatientName'):
        profile_from_rows({'code': 'x', 'name': 'X'},
            [{'action': 'keep', 'tag': 'PatientName'}])


def test_basic_body():
    plan = plan_anonymization(BASIC, SUBJECT, ONE)
    body = plan.body
    assert body['Force'] is True
    assert body['DicomVersion'] == '2021b'
    assert body['KeepPrivateTags'] is False
    assert body['Keep'] == []
    # StudyDate and the birth date are emptied by Orthanc; the
    # creation date, kept by Orthanc's Basic Profile, is removed
    assert body['Remove'] == ['InstanceCreationDate', 'SeriesDate']
    replace = body['Replace']
    assert replace['PatientID'] == replace['PatientName'] == SUBJECT.pseudonym
    assert replace['PatientIdentityRemoved'] == 'YES'
    assert replace['LongitudinalTemporalInformationModified'] == 'REMOVED'
    assert replace['DeidentificationMethod'] == (
        'PS 3.15-2021b Table E.1-1 Basic Profile')
    assert [c['CodeValue'] for c in replace[
            'DeidentificationMethodCodeSequence']] == ['113100']
    assert 'StudyDate' not in replace
    assert plan.corrections == {} and plan.notes == []


def test_shifted_body():
    plan = plan_anonymization(BASIC_SHIFTED, SUBJECT, ONE)
    body = plan.body
    assert body['Keep'] == ['SeriesDescription', 'StudyDescription',
        'StudyTime']
    assert body['Remove'] == []
    replace = body['Replace']
    assert replace['StudyDate'] == '20230305'
    assert replace['SeriesDate'] == '20230305'
    assert replace['InstanceCreationDate'] == '20230305'
    assert replace['PatientBirthDate'] == '19800101'
    assert replace['LongitudinalTemporalInformationModified'] == 'MODIFIED'
    assert [c['CodeValue'] for c in replace[
            'DeidentificationMethodCodeSequence']] == ['113100', '113107']
    assert replace['DeidentificationMethod'].split('\\') == [
        'PS 3.15-2021b Table E.1-1 Basic Profile',
        'Dates shifted by a per-subject offset',
        'Study and series descriptions kept']
    assert all(len(v) <= 64
        for v in replace['DeidentificationMethod'].split('\\'))


def test_options_and_rules():
    profile = Profile('p', 'P', keep_patient_characteristics=True,
        keep_private_tags=True, rules=(
            TagRule('keep', 'BodyPartExamined'),
            TagRule('remove', '0009,1010'),
            TagRule('replace', 'InstitutionName', 'Site 1')))
    body = plan_anonymization(profile, SUBJECT, ONE).body
    assert body['KeepPrivateTags'] is True
    assert body['Keep'] == ['BodyPartExamined', 'PatientAge', 'PatientSex',
        'PatientSize', 'PatientWeight']
    assert body['Remove'] == ['0009,1010', 'InstanceCreationDate',
        'SeriesDate']
    assert body['Replace']['InstitutionName'] == 'Site 1'
    method = body['Replace']['DeidentificationMethod'].split('\\')
    assert 'Private attributes kept' in method
    assert '3 attribute rule(s) of profile p' in method
    assert [c['CodeValue'] for c in body['Replace'][
            'DeidentificationMethodCodeSequence']] == ['113100', '113108']


def test_a_removed_time_is_not_kept():
    "The time that goes with a shifted date is kept, unless removed"
    profile = Profile('p', 'P', dates='shift',
        rules=(TagRule('remove', 'StudyTime'),))
    body = plan_anonymization(profile, SUBJECT, ONE).body
    assert 'StudyTime' in body['Remove']
    assert 'StudyTime' not in body['Keep']


def test_date_attributes():
    assert date_attributes(study(
            {'StudyDate': '1', 'StudyTime': '1', 'PatientName': 'X',
                'AcquisitionDateTime': '1', '0009,1010': '20230101'},
            {'SeriesDate': '1', 'RequestAttributesSequence': [
                    {'ScheduledProcedureStepStartDate': '1'}]})) == [
        'AcquisitionDateTime', 'SeriesDate', 'StudyDate']


def test_a_rule_wins_over_the_dates():
    "A date kept by a rule is neither shifted nor removed"
    profile = Profile('p', 'P', dates='shift',
        rules=(TagRule('keep', 'SeriesDate'),))
    body = plan_anonymization(profile, SUBJECT, ONE).body
    assert 'SeriesDate' not in body['Replace']
    assert 'SeriesDate' in body['Keep']


# (series date, content date, acquisition date-time) of each instance
@pytest.mark.parametrize('values, replace, corrections', [
    # one value everywhere: nothing to correct
    ([('20230315', '20230315', '20230315101600')] * 3,
        {'SeriesDate': '20230305', 'ContentDate': '20230305',
            'AcquisitionDateTime': '20230305101600'},
        {}),
    # a series of the next day: the majority wins, the other is corrected
    ([('20230315', '20230315', '20230315101600'),
     ('20230315', '20230315', '20230315101600'),
     ('20230316', '20230316', '20230316101600')],
        {'SeriesDate': '20230305', 'ContentDate': '20230305',
            'AcquisitionDateTime': '20230305101600'},
        {'i2': {'SeriesDate': '20230306', 'ContentDate': '20230306',
                'AcquisitionDateTime': '20230306101600'}}),
    # a date-time is different on every instance
    ([('20230315', '20230315', '20230315101600'),
     ('20230315', '20230315', '20230315101700'),
     ('20230315', '20230315', '20230315101600')],
        {'SeriesDate': '20230305', 'ContentDate': '20230305',
            'AcquisitionDateTime': '20230305101600'},
        {'i1': {'AcquisitionDateTime': '20230305101700'}}),
    # an instance without the attribute: Replace would add it, remove it
    ([('20230315', '20230315', '20230315101600'),
     ('20230315', '20230315', '20230315101600'),
     ('20230315', '20230315', None)],
        {'SeriesDate': '20230305', 'ContentDate': '20230305',
            'AcquisitionDateTime': '20230305101600'},
        {'i2': {'AcquisitionDateTime': None}}),
    ])
def test_dates_per_instance(values, replace, corrections):
    instances = []
    for series, content, acquired in values:
        tags = {'StudyDate': '20230315', 'SeriesDate': series,
            'ContentDate': content}
        if acquired:
            tags['AcquisitionDateTime'] = acquired
        instances.append(tags)
    plan = plan_anonymization(BASIC_SHIFTED, SUBJECT, study(*instances))
    for keyword, value in replace.items():
        assert plan.body['Replace'][keyword] == value
    assert plan.corrections == corrections
    assert plan.notes == []


@pytest.mark.parametrize('bad', ['20230230', 'unknown', '2023-03-15'])
def test_invalid_date_removed_and_noted(bad):
    instances = study({'StudyDate': '20230315', 'SeriesDate': '20230315'},
        {'StudyDate': '20230315', 'SeriesDate': bad})
    plan = plan_anonymization(BASIC_SHIFTED, SUBJECT, instances)
    assert 'SeriesDate' not in plan.body['Replace']
    assert 'SeriesDate' in plan.body['Remove']
    assert plan.notes == ['SeriesDate: removed, a value is not a valid date']
    # the value itself is never in a note
    assert bad not in ' '.join(plan.notes)
    assert plan.body['Replace']['StudyDate'] == '20230305'


@pytest.mark.parametrize('births, replace, note', [
    (['19800115', '19800115'], '19800101', None),
    (['19800105', ''], '19791201'[:4] + '0101', None),
    (['19800115', '19800116'], None, 'instances disagree'),
    (['1980-01-15', '1980-01-15'], None, 'not a valid date'),
    (['', ''], None, None),
    ])
def test_birth_year(births, replace, note):
    instances = study(*({'PatientBirthDate': b} for b in births))
    plan = plan_anonymization(BASIC_SHIFTED, SUBJECT, instances)
    assert plan.body['Replace'].get('PatientBirthDate') == replace
    assert bool(plan.notes) == bool(note)
    if note:
        assert note in plan.notes[0]


def test_short_tags_and_private_dates():
    "Orthanc's ?short form works; private tags are not read as dates"
    instances = {'a': {'0008,0020': '20230315', '0008,0021': '20230315',
            '0009,0010': 'CREATOR', '0009,1010': '20230315'}}
    assert normalize_tags(instances['a']) == {'StudyDate': '20230315',
        'SeriesDate': '20230315', '0009,0010': 'CREATOR',
        '0009,1010': '20230315'}
    plan = plan_anonymization(BASIC_SHIFTED, SUBJECT, instances)
    assert plan.body['Replace']['SeriesDate'] == '20230305'
    assert '0009,1010' not in plan.body['Replace']


def test_correction_body():
    assert correction_body({'SeriesDate': '20230306',
            'AcquisitionDateTime': None}) == {
        'Replace': {'SeriesDate': '20230306'},
        'Remove': ['AcquisitionDateTime'],
        'Keep': ['StudyInstanceUID', 'SeriesInstanceUID', 'SOPInstanceUID'],
        'Force': True}


ORIGINAL = {'0008,0020': '20230315', '0010,0030': '19800115',
    '0008,002a': '20230315101600.5+0100', '0008,0030': '101010',
    '0040,0275': [{'0040,0244': '20230314', '0040,0009': 'SPS1'}]}


@pytest.mark.parametrize('copy, days, birth, problems', [
    ({'0008,0020': '20230305', '0010,0030': '19800101',
      '0008,002a': '20230305101600.5+0100', '0008,0030': '101010'},
        -10, 'year', []),
    ({'0008,0020': '', '0010,0030': ''}, None, 'remove', []),
    ({'0008,0020': '20230315'}, None, 'remove',
        [('0008,0020', 'date left')]),
    ({'0008,0020': '20230315'}, -10, 'remove',
        [('0008,0020', 'not shifted by -10 days')]),
    ({'0010,0030': '19800105'}, -10, 'remove', []),
    ({'0010,0030': '19800105'}, -10, 'year',
        [('0010,0030', 'not shifted by -10 days')]),
    # a nested date is compared too
    ({'0040,0275': [{'0040,0244': '20230314'}]}, -10, 'remove',
        [('0040,0275[0].0040,0244', 'not shifted by -10 days')]),
    ({'0040,0275': [{'0040,0244': '20230304'}]}, -10, 'remove', []),
    ({'0008,0021': '20230305'}, -10, 'remove',
        [('0008,0021', 'date not in the original')]),
    ])
def test_check_dates(copy, days, birth, problems):
    assert check_dates(ORIGINAL, copy, days, birth) == problems


def test_check_dates_simplified_and_full_forms():
    original = {'StudyDate': '20230315',
        'PerformedProtocolCodeSequence': [{'CodeValue': '1'}]}
    assert check_dates(original, {'StudyDate': '20230316'}, 1) == []
    full_original = {'0008,0020': {'Name': 'StudyDate', 'Type': 'String',
            'Value': '20230315'}}
    full_copy = {'0008,0020': {'Name': 'StudyDate', 'Type': 'String',
            'Value': '20230314'}}
    assert check_dates(full_original, full_copy, 1) == [
        ('0008,0020 StudyDate', 'not shifted by 1 days')]
