# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""De-identification profiles and the Orthanc request that applies them.

Plain Python (no Tryton).  A :class:`Profile` is data: options plus rows of
:class:`TagRule`.  :func:`plan_anonymization` turns a profile, a
:class:`Subject` and the tags of every instance of a study into an
:class:`AnonymizationPlan`: the body of Orthanc's
``POST /studies/{id}/anonymize``, the per-instance corrections that one
study-wide ``Replace`` cannot express, and notes on what was removed
instead of shifted.

Orthanc applies PS3.15's Basic Application Level Confidentiality Profile
(table E.1-1, ``DicomVersion``), then our ``Keep``/``Remove``/``Replace``.
It does not shift dates: the shifted values are computed here from the
study's own tags.  Its ``Replace`` writes one value into every instance,
so an attribute whose shifted value differs between instances gets the
most common value study-wide and a correction for the others
(:func:`correction_body`, sent to ``POST /instances/{copy}/modify``).
"""
import collections
import dataclasses
import re
from collections.abc import Iterable, Mapping

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from .dicom_dates import DATE_VRS, birth_year_only, try_shift
from .phi_scan import iter_values

__all__ = ['TagRule', 'Profile', 'Subject', 'AnonymizationPlan',
    'ProfileError', 'PROFILES', 'BASIC', 'BASIC_SHIFTED', 'check_profile',
    'profile_from_rows', 'plan_anonymization', 'correction_body',
    'normalize_tags', 'tag_key', 'check_dates', 'date_attributes',
    'ACTIONS', 'DATE_MODES', 'BIRTH_DATE_MODES']

ACTIONS = ('keep', 'remove', 'replace')
DATE_MODES = ('remove', 'shift')
BIRTH_DATE_MODES = ('remove', 'year')
DICOM_VERSIONS = ('2021b', '2017c', '2008')  # Orthanc 1.10.1 knows these

# Set from the subject or by Orthanc: no rule may touch them.
PROTECTED = frozenset({
    'PatientID', 'PatientName', 'StudyInstanceUID', 'SeriesInstanceUID',
    'SOPInstanceUID', 'FrameOfReferenceUID', 'DeidentificationMethod',
    'DeidentificationMethodCodeSequence', 'PatientIdentityRemoved',
    'LongitudinalTemporalInformationModified'})
DESCRIPTIONS = ('StudyDescription', 'SeriesDescription')
# PS3.15 E.3.5 lists more (ethnic group, smoking status...): not kept
PATIENT_CHARACTERISTICS = ('PatientSex', 'PatientAge', 'PatientSize',
    'PatientWeight')
# Type 2 attributes that Orthanc's Basic Profile empties but keeps
# (measured on Orthanc 1.10.1): removing them would break the IOD.
EMPTIED_DATES = frozenset({'StudyDate', 'ContentDate', 'PatientBirthDate'})
UID_KEEP = ['StudyInstanceUID', 'SeriesInstanceUID', 'SOPInstanceUID']
_HEX_TAG = re.compile(r'^\(?([0-9A-Fa-f]{4})[,-]?([0-9A-Fa-f]{4})\)?$')

CODES = {
    'basic': ('113100', 'Basic Application Confidentiality Profile'),
    'dates': ('113107',
        'Retain Longitudinal Temporal Information Modified Dates Option'),
    'patient': ('113108', 'Retain Patient Characteristics Option'),
    }


class ProfileError(ValueError):
    "A profile row that cannot be applied."


@dataclasses.dataclass(frozen=True)
class TagRule:
    """One row of a profile: keep, remove or replace one attribute.

    ``tag`` is a DICOM keyword (``InstitutionName``) or ``gggg,eeee``
    (private tags: ``0009,1010``); ``value`` is only for ``replace``.
    """
    action: str
    tag: str
    value: str = ''


@dataclasses.dataclass(frozen=True)
class Profile:
    """The options of a de-identification profile and its tag rules.

    ``dates``: ``'shift'`` moves every date by the subject's offset (PS3.15
    Retain Longitudinal Temporal Information with Modified Dates) and keeps
    the times; ``'remove'`` leaves no date.  ``birth_date``: ``'remove'``
    or ``'year'`` (shifted, then cut to 1 January of its year).
    """
    code: str
    name: str
    dates: str = 'remove'
    birth_date: str = 'remove'
    keep_descriptions: bool = False
    keep_patient_characteristics: bool = False
    keep_private_tags: bool = False
    dicom_version: str = '2021b'
    rules: tuple[TagRule, ...] = ()


@dataclasses.dataclass(frozen=True)
class Subject:
    "A research subject: its pseudonym and its date shift in days."
    pseudonym: str
    date_shift: int


@dataclasses.dataclass
class AnonymizationPlan:
    """What to ask Orthanc for one study.

    ``body``: for ``POST /studies/{id}/anonymize``.  ``corrections``:
    original instance ID -> ``{keyword: value or None (remove)}`` for the
    instances whose own values differ from the study-wide ``Replace``.
    ``notes``: attributes removed instead of shifted, with the reason (no
    value: the notes may be shown to researchers).
    """
    body: dict
    corrections: dict[str, dict[str, str | None]]
    notes: list[str]


BASIC = Profile(code='basic', name='Basic (PS3.15)')
BASIC_SHIFTED = Profile(
    code='basic_dates_shifted',
    name='Basic, dates shifted, descriptions kept',
    dates='shift', birth_date='year', keep_descriptions=True)
PROFILES = {p.code: p for p in (BASIC, BASIC_SHIFTED)}


def tag_key(tag: str) -> str:
    """Return the keyword of ``tag`` or its ``gggg,eeee`` form if private.

    Raises :class:`ProfileError` for an unknown keyword or a bad tag.
    """
    text = (tag or '').strip()
    match = _HEX_TAG.match(text)
    if match:
        number = int(match.group(1) + match.group(2), 16)
        return keyword_for_tag(number) or '%s,%s' % (
            match.group(1).lower(), match.group(2).lower())
    if not text or tag_for_keyword(text) is None:
        raise ProfileError('unknown DICOM attribute: %r' % tag)
    return text


def check_profile(profile: Profile) -> list[str]:
    "Return the problems of ``profile`` (empty when it can be applied)."
    problems = []
    if profile.dates not in DATE_MODES:
        problems.append('dates must be one of %s' % (DATE_MODES,))
    if profile.birth_date not in BIRTH_DATE_MODES:
        problems.append('birth_date must be one of %s' % (BIRTH_DATE_MODES,))
    if profile.dicom_version not in DICOM_VERSIONS:
        problems.append('unknown DICOM version %r' % profile.dicom_version)
    seen = set()
    for rule in profile.rules:
        try:
            key = tag_key(rule.tag)
        except ProfileError as e:
            problems.append(str(e))
            continue
        if rule.action not in ACTIONS:
            problems.append('%s: unknown action %r' % (key, rule.action))
        elif key in PROTECTED:
            problems.append('%s is set by the de-identification itself'
                % key)
        elif key in seen:
            problems.append('%s has more than one rule' % key)
        seen.add(key)
    return problems


def profile_from_rows(values: Mapping, rules: Iterable[Mapping]) -> Profile:
    """Build a profile from record values (options) and rule rows.

    ``values`` holds the :class:`Profile` fields but ``rules``; each rule
    row has ``action``, ``tag`` and ``value``.  Raises
    :class:`ProfileError` listing every problem.
    """
    fields = {f.name for f in dataclasses.fields(Profile)} - {'rules'}
    profile = Profile(
        **{k: v for k, v in values.items() if k in fields},
        rules=tuple(TagRule(r['action'], r['tag'], r.get('value') or '')
            for r in rules))
    problems = check_profile(profile)
    if problems:
        raise ProfileError('; '.join(problems))
    return profile


def normalize_tags(tags: Mapping) -> dict:
    """Return the top-level tags of one instance keyed by keyword.

    ``tags`` is Orthanc's ``/instances/{id}/tags?short`` (``gggg,eeee``
    keys) or ``/simplified-tags`` (keywords).  Private tags keep their
    ``gggg,eeee`` key.
    """
    result = {}
    for key, value in tags.items():
        match = _HEX_TAG.match(key)
        if match:
            key = keyword_for_tag(int(match.group(1) + match.group(2), 16)) \
                or key
        result[key] = value
    return result


def _vr(keyword):
    try:
        return dictionary_VR(keyword)
    except (KeyError, ValueError):
        return None


def date_attributes(instances: Mapping[str, Mapping]) -> list[str]:
    """Return the keywords of the public DA/DT attributes at the top level
    of the instances (tags keyed by keyword, see :func:`normalize_tags`)."""
    found = set()
    for tags in instances.values():
        for key, value in tags.items():
            if isinstance(value, str) and _vr(key) in DATE_VRS:
                found.add(key)
    return sorted(found)


def _time_of(date_keyword):
    "The TM attribute that goes with a date attribute, if any."
    if not date_keyword.endswith('Date'):
        return None
    keyword = date_keyword[:-4] + 'Time'
    return keyword if _vr(keyword) == 'TM' else None


def _method(profile):
    "The De-identification Method (0012,0063) values and code items."
    texts = ['PS 3.15-%s Table E.1-1 Basic Profile' % profile.dicom_version]
    codes = [CODES['basic']]
    if profile.dates == 'shift':
        texts.append('Dates shifted by a per-subject offset')
        codes.append(CODES['dates'])
    if profile.keep_patient_characteristics:
        texts.append('Patient sex, age, size and weight kept')
        codes.append(CODES['patient'])
    if profile.keep_descriptions:
        texts.append('Study and series descriptions kept')
    if profile.keep_private_tags:
        texts.append('Private attributes kept')
    custom = [r for r in profile.rules]
    if custom:
        texts.append('%d attribute rule(s) of profile %s'
            % (len(custom), profile.code))
    items = [{'CodeValue': value, 'CodingSchemeDesignator': 'DCM',
            'CodeMeaning': meaning} for value, meaning in codes]
    # LO: 64 characters per value; a JSON list makes Orthanc 1.10.1 fail
    return '\\'.join(t[:64] for t in texts), items


def _shift_dates(keywords, instances, days, plan, replace, keep):
    "Study-wide Replace plus per-instance corrections for each date."
    for keyword in keywords:
        vr = _vr(keyword)
        shifted, bad = {}, False
        for instance_id, tags in instances.items():
            if keyword not in tags:
                shifted[instance_id] = None
                continue
            ok, value = try_shift(vr, tags[keyword], days)
            if not ok:
                bad = True
                break
            shifted[instance_id] = value
        if bad:
            plan.body['Remove'].append(keyword)
            plan.notes.append('%s: removed, a value is not a valid date'
                % keyword)
            continue
        counts = collections.Counter(
            v for v in shifted.values() if v is not None)
        # the most common value; the earliest on a tie, to be repeatable
        common = min(counts, key=lambda v: (-counts[v], v))
        replace[keyword] = common
        for instance_id, value in shifted.items():
            if value != common:
                plan.corrections.setdefault(instance_id, {})[keyword] = value
        time = _time_of(keyword)
        if time and any(time in tags for tags in instances.values()):
            keep.append(time)


def _remove_dates(keywords, plan, keep):
    "Remove the dates the Basic Profile would keep (InstanceCreationDate)."
    for keyword in keywords:
        if keyword not in EMPTIED_DATES and keyword not in keep:
            plan.body['Remove'].append(keyword)


def plan_anonymization(profile: Profile, subject: Subject,
        instances: Mapping[str, Mapping]) -> AnonymizationPlan:
    """Return the plan to de-identify one study for ``subject``.

    ``instances`` maps each Orthanc instance ID of the study to its tags
    (``/instances/{id}/tags?short`` or ``/simplified-tags``).
    """
    problems = check_profile(profile)
    if problems:
        raise ProfileError('; '.join(problems))
    instances = {i: normalize_tags(t) for i, t in instances.items()}
    method, codes = _method(profile)
    replace = {
        'PatientID': subject.pseudonym,
        'PatientName': subject.pseudonym,
        'PatientIdentityRemoved': 'YES',
        'DeidentificationMethod': method,
        'DeidentificationMethodCodeSequence': codes,
        'LongitudinalTemporalInformationModified': (
            'MODIFIED' if profile.dates == 'shift' else 'REMOVED'),
        }
    keep = []
    if profile.keep_descriptions:
        keep.extend(DESCRIPTIONS)
    if profile.keep_patient_characteristics:
        keep.extend(PATIENT_CHARACTERISTICS)
    remove = []
    for rule in profile.rules:
        key = tag_key(rule.tag)
        if rule.action == 'keep':
            keep.append(key)
        elif rule.action == 'remove':
            remove.append(key)
        else:
            replace[key] = rule.value
    plan = AnonymizationPlan(body={
            'Replace': replace, 'Keep': keep, 'Remove': remove,
            'KeepPrivateTags': bool(profile.keep_private_tags),
            'Force': True, 'DicomVersion': profile.dicom_version,
            }, corrections={}, notes=[])
    ruled = set(keep) | set(remove) | set(replace)
    dates = [k for k in date_attributes(instances)
        if k not in ruled and k != 'PatientBirthDate']
    if profile.dates == 'shift':
        _shift_dates(dates, instances, subject.date_shift, plan, replace,
            keep)
    else:
        _remove_dates(dates, plan, keep)
    if profile.birth_date == 'year' and 'PatientBirthDate' not in ruled:
        _birth_year(instances, subject.date_shift, plan, replace)
    plan.body['Remove'] = sorted(set(plan.body['Remove']))
    plan.body['Keep'] = sorted(
        set(keep) - set(replace) - set(plan.body['Remove']))
    return plan


def _birth_year(instances, days, plan, replace):
    values = {t.get('PatientBirthDate') or '' for t in instances.values()}
    values.discard('')
    if len(values) != 1:
        if values:
            plan.notes.append('PatientBirthDate: emptied, the instances '
                'disagree')
        return
    try:
        replace['PatientBirthDate'] = birth_year_only(values.pop(), days)
    except ValueError:
        plan.notes.append('PatientBirthDate: emptied, not a valid date')


def correction_body(changes: Mapping[str, str | None]) -> dict:
    """Return the body of ``POST /instances/{copy}/modify`` for one
    instance of the copy: set its own values and keep its UIDs.

    Orthanc 1.10.1 answers the modified file without storing it: the
    caller deletes the copy instance and uploads the answer (a modified
    series cannot be stored in place while it keeps its UIDs).
    """
    return {
        'Replace': {k: v for k, v in changes.items() if v is not None},
        'Remove': sorted(k for k, v in changes.items() if v is None),
        'Keep': list(UID_KEEP),
        'Force': True,
        }


def _leaf_vr(path):
    "The VR of the attribute at the end of an iter_values path."
    leaf = path.rsplit('.', 1)[-1].split('[', 1)[0].split(' ', 1)[0]
    match = _HEX_TAG.match(leaf)
    try:
        if match:
            return dictionary_VR(int(match.group(1) + match.group(2), 16))
        return dictionary_VR(leaf)
    except (KeyError, ValueError):
        return None


def check_dates(original: Mapping, copy: Mapping, days: int | None,
        birth_date: str = 'remove') -> list[tuple[str, str]]:
    """Compare every date of a copy with the same attribute of its original.

    Both are tag dumps of one instance in the same Orthanc form.  With
    ``days`` each non-empty DA/DT of the copy, nested ones included, must
    be its original shifted by ``days`` (``PatientBirthDate`` cut to its
    year when ``birth_date`` is ``'year'``); with ``days=None`` no date may
    be left.  Returns ``(path, reason)`` for each attribute that fails.
    """
    originals = dict(iter_values(original))
    problems = []
    for path, value in iter_values(copy):
        vr = _leaf_vr(path)
        if vr not in DATE_VRS or not value.strip():
            continue
        if days is None:
            problems.append((path, 'date left'))
            continue
        source = originals.get(path)
        if source is None:
            problems.append((path, 'date not in the original'))
            continue
        if path.split(' ')[0] in ('PatientBirthDate', '0010,0030') \
                and birth_date == 'year':
            expected = birth_year_only(source, days)
        else:
            ok, expected = try_shift(vr, source, days)
            if not ok:
                expected = None
        if value != expected:
            problems.append((path, 'not shifted by %d days' % days))
    return problems
