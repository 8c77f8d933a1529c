# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Make a de-identified copy of a study in Orthanc, check it, send it.

Plain Python (no Tryton), on :class:`~.orthanc_client.OrthancClient`.  The
copy is made and checked in the Orthanc that holds the study (the
clinical Orthanc, or the registry's research Orthanc for a two-stage
copy), never anywhere else:

1. read the tags of every instance (``/studies/{id}/instances-tags``),
   leaving out the reports GNU Health stored in the study (a PDF that
   names the patient): their instances are deleted from the copy;
2. plan (:func:`~.deidentify.plan_anonymization`) and anonymize the study
   (``POST /studies/{id}/anonymize``, as a job);
3. rewrite the instances whose own dates differ from the study-wide
   ``Replace`` (``/instances/{copy}/modify``, delete, upload), found
   through the ``AnonymizedFrom`` of each instance of the copy;
4. read the copy's tags and check every value of every instance: the PHI
   scanner, the dates against the original, the pseudonym, no original
   UID; a copy that fails is deleted and :class:`CopyLeak` raised.
   Orthanc's tags show a value longer than 256 characters, or binary
   (UN, OB...), as null: those of the copy are read from its file
   (``/instances/{id}/file``), and one that is not text is refused as
   not checkable.

Then :func:`send_copy` sends it to the research Orthanc, a peer of the
source (``POST /peers/{name}/store``, as a job), and
:func:`discard_copy` deletes the intermediate copy.  The copy keeps at
least one untouched instance while the corrections run (one instance is
rewritten at a time, and a study of one instance needs none), so its
study and patient keep their ``AnonymizedFrom``: the clinical sync skips
them.
"""
import collections
import dataclasses
import io
import json
import re
import time
from collections.abc import Callable, Mapping
from urllib.parse import quote

import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from .deidentify import (
    Profile, Subject, check_dates, correction_body, normalize_tags,
    plan_anonymization)
from .orthanc_client import OrthancClient, OrthancError, OrthancNotFound
from .phi_scan import Identity, PhiScanner, iter_values
from .report_dicom import is_report_series

__all__ = ['CopyJob', 'CopyOutcome', 'CopyError', 'CopyLeak',
    'identity_from_tags', 'study_tags', 'run_job', 'make_copy',
    'declare_peer', 'send_copy', 'discard_copy', 'describe_path']

#: Seconds a job of Orthanc (anonymize, store) may take
JOB_TIMEOUT = 3600
#: The UIDs that identify the original: none may be left in the copy
ORIGINAL_UIDS = ('0020,000d', '0020,000e', '0008,0018', '0020,0052')
#: Attributes of the original whose values the scanner looks for
IDENTIFYING = {
    'names': ('PatientName', 'OtherPatientNames', 'PatientBirthName',
        'PatientMotherBirthName', 'ResponsiblePerson'),
    'identifiers': ('PatientID', 'OtherPatientIDs'),
    'accession_numbers': ('AccessionNumber',),
    'institutions': ('InstitutionName', 'InstitutionAddress'),
    'physicians': ('ReferringPhysicianName', 'PerformingPhysicianName',
        'PhysiciansOfRecord', 'NameOfPhysiciansReadingStudy',
        'OperatorsName', 'RequestingPhysician'),
    }
#: Image data, never text, that Orthanc's tags show as null: pixel,
#: overlay, LUT and palette data, waveforms
IMAGE_DATA = re.compile(r'^(7fe0,00(08|09|10)|60[0-9a-f]{2},3000'
    r'|0028,(3006|120[1-3]|122[1-3])|5400,1010)$')
#: The kind of problem of a value Orthanc does not show and that is no text
NOT_CHECKABLE = 'value not checkable'
_SEGMENT = re.compile(r'^([0-9a-f]{4},[0-9a-f]{4})(?:\[(\d+)\])?$')


class CopyError(Exception):
    "A step of the copy failed in Orthanc"


class CopyLeak(Exception):
    """The copy still holds what it must not: ``problems`` is a list of
    ``(path, kind, instances)``, never a value"""

    def __init__(self, problems):
        super().__init__(', '.join('%s (%s)' % (describe_path(p), k)
                for p, k, _ in problems))
        self.problems = problems


@dataclasses.dataclass(frozen=True)
class CopyJob:
    """One study to copy: its Orthanc ID in the source, the profile, the
    subject (pseudonym, days from the source's dates) and the identifying
    values of the patient; with ``identify_source``, those of the
    original's tags are added (not for a source already de-identified,
    whose pseudonym is no name)"""
    study_id: str
    profile: Profile
    subject: Subject
    identity: Identity
    identify_source: bool = True


@dataclasses.dataclass
class CopyOutcome:
    "The checked copy, in the source Orthanc"
    copy_id: str
    study_instance_uid: str
    series: int
    instances: int
    values: int
    notes: list[str]


def describe_path(path: str) -> str:
    "``0008,0080`` -> ``0008,0080 InstitutionName``"
    head = path.split('.', 1)[0].split('[', 1)[0].split(' ', 1)[0]
    try:
        keyword = keyword_for_tag(int(head.replace(',', ''), 16))
    except ValueError:
        keyword = ''
    return '%s %s' % (path, keyword) if keyword else path


def _values(value):
    if isinstance(value, str):
        return [v for v in value.split('\\') if v.strip()]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v.strip()]
    return []


def identity_from_tags(instances: Mapping[str, Mapping],
        identity: Identity | None = None) -> Identity:
    """Add to ``identity`` the identifying values found in the original's
    tags (any Orthanc form): names, IDs (OtherPatientIDsSequence too),
    birth date, accession numbers, institutions, physicians"""
    found = {name: list(getattr(identity, name, None) or [])
        for name in IDENTIFYING}
    birth_date = identity.birth_date if identity else None
    for tags in instances.values():
        tags = normalize_tags(tags)
        for name, keywords in IDENTIFYING.items():
            for keyword in keywords:
                found[name].extend(_values(tags.get(keyword)))
        for item in tags.get('OtherPatientIDsSequence') or []:
            if isinstance(item, Mapping):
                found['identifiers'].extend(
                    _values(normalize_tags(item).get('PatientID')))
        birth_date = birth_date or (tags.get('PatientBirthDate') or None)
    return Identity(birth_date=birth_date,
        **{k: sorted(set(v)) for k, v in found.items()})


def _path(*parts):
    return '/'.join(quote(p, safe='') for p in parts)


def study_tags(client: OrthancClient, study_id: str) -> dict:
    "Return {instance ID: tags (short form)} of every instance of a study"
    tags = client.get_json(_path('studies', study_id, 'instances-tags'),
        {'short': ''})
    if not isinstance(tags, dict):
        raise CopyError('Orthanc did not list the tags of study %s'
            % study_id)
    return tags


def _unshown(tags, path=''):
    "Yield the path of each value the short form shows as null"
    for key, value in tags.items():
        where = '%s.%s' % (path, key) if path else key
        if value is None:
            if not IMAGE_DATA.match(key.lower()):
                yield where
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    yield from _unshown(item, '%s[%d]' % (where, index))


def _segments(path):
    "``0008,1110[0].0008,1150`` -> [('0008,1110', 0), ('0008,1150', None)]"
    result = []
    for part in path.split('.'):
        match = _SEGMENT.match(part.lower())
        if not match:
            return None
        key, index = match.groups()
        result.append((key, int(index) if index is not None else None))
    return result


def _as_text(value):
    "The text of a DICOM value, None when it is no text (binary data)"
    if value is None:
        return ''
    if isinstance(value, bytes):
        value = value.rstrip(b'\0 ')
        try:
            text = value.decode('utf-8')
        except UnicodeDecodeError:
            text = value.decode('latin-1')
        if all(c.isprintable() or c in '\r\n\t' for c in text):
            return text
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        texts = [_as_text(v) for v in value]
        return None if None in texts else '\\'.join(texts)
    if isinstance(value, Dataset):
        return None
    return str(value)


def _text_at(dataset, segments):
    "The text of the element at segments of dataset, None if none"
    element = None
    for key, index in segments:
        group, number = key.split(',')
        element = dataset.get(Tag(int(group, 16), int(number, 16)))
        if element is None:
            return None
        if index is not None:
            try:
                dataset = element.value[index]
            except (IndexError, TypeError):
                return None
    if element is None or element.VR == 'SQ':
        return None
    return _as_text(element.value)


def _set_value(tags, segments, text):
    for key, index in segments[:-1]:
        tags = tags[key][index]
    tags[segments[-1][0]] = text


def reveal_unshown(client: OrthancClient, instances: Mapping) -> list:
    """Put in the short-form tags of instances the values Orthanc shows
    as null (too long, binary), read from the instance's file; return the
    problems ``[(path, NOT_CHECKABLE, instances)]`` of those that are no
    text.  Only the files of instances with such values are read."""
    counts = collections.Counter()
    for instance, tags in instances.items():
        paths = list(_unshown(tags))
        if not paths:
            continue
        data = client.request(
            'GET', _path('instances', instance, 'file')).content
        dataset = pydicom.dcmread(io.BytesIO(data), force=True)
        for path in paths:
            segments = _segments(path)
            text = _text_at(dataset, segments) if segments else None
            if text is None:
                counts[path] += 1
            else:
                _set_value(tags, segments, text)
    return [(path, NOT_CHECKABLE, n) for path, n in sorted(counts.items())]


def run_job(client: OrthancClient, path: str, body: dict,
        timeout: float = JOB_TIMEOUT) -> dict:
    """POST body to path as an asynchronous job, wait for it; return the
    job's Content.  Raise CopyError when it fails or takes too long."""
    answer = client.request('POST', path, data=json.dumps(
            dict(body, Asynchronous=True)),
        headers={'Content-Type': 'application/json'}).json()
    job = answer['ID']
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        state = client.get_json(_path('jobs', job))
        if state.get('State') == 'Success':
            return state.get('Content') or {}
        if state.get('State') == 'Failure':
            raise CopyError(('%s: %s %s' % (path,
                        state.get('ErrorDescription') or '',
                        state.get('ErrorDetails') or '')).strip())
        if time.monotonic() > deadline:
            client.request('POST', _path('jobs', job, 'cancel'))
            raise CopyError('%s: not done after %d s' % (path, timeout))
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


def is_report_instance(tags: Mapping) -> bool:
    """Tell whether an instance (short tags) is of a report GNU Health
    stored in the study: its PDF names the patient, it is never copied"""
    return is_report_series({
            'Modality': tags.get('0008,0060'),
            'Manufacturer': tags.get('0008,0070'),
            })


def _drop_reports(client, reports, sources):
    """Delete from the copy the instances made from the reports; return
    the sources of the others"""
    kept = {}
    for copy, original in sources.items():
        if original in reports:
            client.request('DELETE', _path('instances', copy))
        else:
            kept[copy] = original
    return kept


def _copy_sources(client, copy_id):
    "{copy instance ID: original instance ID}"
    instances = client.get_json(_path('studies', copy_id, 'instances'))
    return {i['ID']: i.get('AnonymizedFrom') for i in instances}


def _apply_corrections(client, corrections, sources):
    "Rewrite, one at a time, the instances whose own values differ"
    copies = {original: copy for copy, original in sources.items()}
    for original, changes in corrections.items():
        copy = copies[original]
        data = client.request('POST', _path('instances', copy, 'modify'),
            data=json.dumps(correction_body(changes)),
            headers={'Content-Type': 'application/json'}).content
        client.request('DELETE', _path('instances', copy))
        stored = client.upload_instance(data)
        if stored.get('ID') != copy:
            # Orthanc's ID is a hash of the UIDs, which are kept
            raise CopyError('instance %s came back as %s'
                % (copy, stored.get('ID')))


def check_copy(job: CopyJob, originals: Mapping, copies: Mapping,
        sources: Mapping) -> tuple[list, int]:
    """Check every value of every instance of the copy against its
    original; return the problems ``[(path, kind, instances)]`` and the
    number of values checked"""
    scanner = PhiScanner(job.identity)
    profile, subject = job.profile, job.subject
    days = subject.date_shift if profile.dates == 'shift' else None
    uids = {tags.get(key) for tags in originals.values()
        for key in ORIGINAL_UIDS} - {None}
    counts = collections.Counter()
    checked = 0
    for copy, tags in copies.items():
        original = originals.get(sources.get(copy))
        if original is None:
            counts['(instance)', 'not from the original'] += 1
            continue
        values = list(iter_values(tags))
        checked += len(values)
        for finding in scanner.scan(copy, tags):
            counts[finding.path, finding.kind] += 1
        for path, reason in check_dates(
                original, tags, days, profile.birth_date):
            counts[path, reason] += 1
        for path, value in values:
            if value in uids:
                counts[path, 'original UID'] += 1
        for key in ('0010,0010', '0010,0020'):
            if tags.get(key) != subject.pseudonym:
                counts[key, 'not the pseudonym'] += 1
    problems = sorted((path, kind, n) for (path, kind), n in counts.items())
    return problems, checked


def make_copy(client: OrthancClient, job: CopyJob,
        made: Callable[[str], None] | None = None) -> CopyOutcome:
    """Make and check the de-identified copy of job's study in the Orthanc
    of client; return it.  ``made(copy_id)`` is called as soon as the copy
    exists (to record it before anything else can fail).

    A copy that fails a check, or a step, is deleted before raising
    :class:`CopyLeak` or :class:`CopyError` (or the OrthancError)."""
    originals = study_tags(client, job.study_id)
    # GNU Health's own reports (a PDF naming the patient) are left out
    reports = {i for i, tags in originals.items() if is_report_instance(tags)}
    originals = {i: tags for i, tags in originals.items()
        if i not in reports}
    if not originals:
        raise CopyError('study %s has no instance' % job.study_id)
    if job.identify_source:
        job = dataclasses.replace(
            job, identity=identity_from_tags(originals, job.identity))
    plan = plan_anonymization(job.profile, job.subject, originals)
    content = run_job(client, _path('studies', job.study_id, 'anonymize'),
        plan.body)
    copy_id = content['ID']
    try:
        if made:
            made(copy_id)
        sources = _drop_reports(
            client, reports, _copy_sources(client, copy_id))
        _apply_corrections(client, plan.corrections, sources)
        copies = study_tags(client, copy_id)
        unchecked = reveal_unshown(client, copies)
        problems, checked = check_copy(job, originals, copies, sources)
        problems = sorted(problems + unchecked)
        if problems:
            raise CopyLeak(problems)
        study = client.get_study(copy_id)
    except BaseException:
        discard_copy(client, copy_id)
        raise
    return CopyOutcome(copy_id=copy_id,
        study_instance_uid=study.get('MainDicomTags', {}).get(
            'StudyInstanceUID'),
        series=len(study.get('Series') or []), instances=len(copies),
        values=checked, notes=plan.notes)


def declare_peer(client: OrthancClient, name: str, url: str,
        user: str | None, password: str | None):
    """Declare (again) the research Orthanc as a peer of client's Orthanc:
    a peer declared over REST is forgotten when Orthanc restarts, and the
    password, never shown back, may have changed"""
    body = {'Url': url}
    if user:
        body.update(Username=user, Password=password or '')
    client.request('PUT', _path('peers', name), data=json.dumps(body),
        headers={'Content-Type': 'application/json'})


def send_copy(client: OrthancClient, peer: str, copy_id: str) -> int:
    "Send the copy to the peer; return the number of instances sent"
    content = run_job(client, _path('peers', peer, 'store'),
        {'Resources': [copy_id]})
    if content.get('FailedInstancesCount'):
        raise CopyError('%s of %s instances not sent' % (
                content['FailedInstancesCount'],
                content.get('InstancesCount')))
    return content.get('InstancesCount') or 0


def discard_copy(client: OrthancClient, copy_id: str) -> bool:
    "Delete a copy; return False when it was already gone"
    try:
        client.delete_study(copy_id)
    except OrthancNotFound:
        return False
    except OrthancError:
        # Reported by the caller's own error; a leftover copy is
        # de-identified and skipped by the sync
        return False
    return True
