# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Turn Orthanc's JSON resources into plain dictionaries of record values.

Plain Python (no Tryton).  The functions are tolerant: odd or invalid DICOM
values become ``None`` instead of failing, and only an item that cannot be
identified at all raises :class:`MappingError`.

Conventions of the returned values:

* text values are stripped, NUL and control characters removed, truncated
  to :data:`MAX_LENGTH` characters; an empty text becomes ``None``, except
  the person names (``name``, ``referring_physician``) that are always a
  ``str`` (``''`` when unknown);
* dates are :class:`datetime.date`, date-times naive
  :class:`datetime.datetime` (DICOM dates and times carry no time zone).
"""
import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    'MAX_LENGTH', 'MappingError', 'clean_text', 'parse_dicom_date',
    'parse_dicom_time', 'combine_datetime', 'parse_orthanc_datetime',
    'format_person_name', 'map_patient', 'map_study', 'map_series',
    'map_many',
    ]

logger = logging.getLogger(__name__)

#: Longest text value kept; longer values are truncated.
MAX_LENGTH = 1024

SEX = {'M': 'm', 'F': 'f', 'O': 'o'}
_CONTROL = re.compile(r'[\x00-\x08\x0b-\x1f\x7f]')
_SPACES = re.compile(r'\s+')
_DATE_SEPARATORS = re.compile(r'[.\-/ ]')
_ORTHANC_DATETIME = re.compile(r'^(\d{8})T(\d{6})(?:\.\d+)?$')


class MappingError(ValueError):
    "An Orthanc item cannot be mapped at all (e.g. it has no identifier)."


def clean_text(value: Any, max_length: int = MAX_LENGTH) -> str | None:
    """Return ``value`` as a trimmed one-line text, or None if empty.

    Control characters (NUL included, which PostgreSQL refuses) are
    removed, white space is collapsed and the text is truncated to
    ``max_length`` characters.
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        # a multi-valued tag in some JSON formats
        value = '\\'.join(str(v) for v in value if v is not None)
    elif not isinstance(value, str):
        value = str(value)
    value = _CONTROL.sub('', value)
    value = _SPACES.sub(' ', value).strip()
    if not value:
        return None
    if len(value) > max_length:
        value = value[:max_length].rstrip()
    return value


def parse_dicom_date(value: str | None) -> dt.date | None:
    """Parse a DICOM DA value (``YYYYMMDD``).

    Also accepts the legacy ACR-NEMA ``YYYY.MM.DD`` form, ``YYYY-MM-DD``
    and surrounding spaces.  Empty, partial, range and impossible dates
    (``20230230``, ``00000000``) give None.
    """
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value:
        return None
    digits = _DATE_SEPARATORS.sub('', value)
    if len(digits) != 8 or not (digits.isascii() and digits.isdigit()):
        return None
    try:
        return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


def parse_dicom_time(value: str | None) -> dt.time | None:
    """Parse a DICOM TM value (``HHMMSS.FFFFFF``).

    Partial values (``HH``, ``HHMM``, ``HHMMSS`` with or without fraction),
    the legacy ``HH:MM:SS`` form and surrounding spaces are accepted; a
    leap second ``60`` becomes ``59``.  Invalid values give None.
    """
    if not isinstance(value, str):
        return None
    value = value.strip().replace(':', '')
    if not value:
        return None
    main, _, fraction = value.partition('.')
    if (len(main) not in (2, 4, 6) or not value.isascii()
            or not main.isdigit()
            or (fraction and not fraction.isdigit())):
        return None
    hour = int(main[:2])
    minute = int(main[2:4] or 0)
    second = int(main[4:6] or 0)
    if second == 60:
        second = 59
    microsecond = int((fraction[:6]).ljust(6, '0')) if fraction else 0
    try:
        return dt.time(hour, minute, second, microsecond)
    except ValueError:
        return None


def combine_datetime(date: dt.date | None,
        time: dt.time | None) -> dt.datetime | None:
    """Return the date-time of ``date`` and ``time`` (midnight if no time).

    None when there is no date.
    """
    if date is None:
        return None
    return dt.datetime.combine(date, time or dt.time())


def parse_orthanc_datetime(value: str | None) -> dt.datetime | None:
    """Parse Orthanc's ``YYYYMMDDTHHMMSS`` (e.g. ``LastUpdate``)."""
    if not isinstance(value, str):
        return None
    match = _ORTHANC_DATETIME.match(value.strip())
    if not match:
        return None
    return combine_datetime(parse_dicom_date(match.group(1)),
        parse_dicom_time(match.group(2)))


def _format_group(group: str, ideographic: bool = False) -> str:
    components = [_SPACES.sub(' ', c).strip() for c in group.split('^')]
    if len(components) > 5:
        # malformed: keep the extra components with the middle names
        components[2:-2] = [' '.join(c for c in components[2:-2] if c)]
    components += [''] * (5 - len(components))
    family, given, middle, prefix, suffix = components
    if ideographic:
        return ' '.join(c for c in (prefix, family, given, middle, suffix)
            if c)
    first = ' '.join(c for c in (prefix, given, middle) if c)
    if family and first:
        name = '%s, %s' % (family, first)
    else:
        name = family or first
    if suffix:
        name = '%s %s' % (name, suffix) if name else suffix
    return name


def format_person_name(value: str | None) -> str:
    """Return a readable name from a DICOM PN value.

    ``Family^Given^Middle^Prefix^Suffix`` becomes
    ``'Family, Prefix Given Middle Suffix'`` (empty components dropped,
    case kept): ``'DOE^John^^Dr.^Jr.'`` → ``'DOE, Dr. John Jr.'``.  With
    ``=`` groups (alphabetic=ideographic=phonetic), the first non-empty
    group is used and an ideographic group is added in parentheses in
    family-name-first order: ``'Yamada^Tarou=山田^太郎=やまだ^たろう'`` →
    ``'Yamada, Tarou (山田 太郎)'``.  Empty or ``'^^^^'`` gives ``''``.
    """
    if not isinstance(value, str):
        return ''
    value = _CONTROL.sub('', value)
    groups = (value.split('=') + ['', ''])[:3]
    alphabetic = _format_group(groups[0])
    ideographic = _format_group(groups[1], ideographic=True)
    phonetic = _format_group(groups[2])
    if alphabetic:
        name = alphabetic
        if ideographic and ideographic != alphabetic:
            name = '%s (%s)' % (name, ideographic)
    else:
        name = ideographic or phonetic
    return clean_text(name) or ''


def _identifier(item: Any, what: str) -> str:
    if not isinstance(item, dict):
        raise MappingError('%s is not a JSON object' % what)
    orthanc_id = item.get('ID')
    if not isinstance(orthanc_id, str) or not orthanc_id.strip():
        raise MappingError('%s has no Orthanc ID' % what)
    return orthanc_id.strip()


def _tags(item: dict, key: str = 'MainDicomTags') -> dict:
    tags = item.get(key)
    return tags if isinstance(tags, dict) else {}


def _sex(value: Any) -> str | None:
    value = clean_text(value)
    return SEX.get(value[:1].upper()) if value else None


def map_patient(orthanc_patient_json: dict) -> dict:
    """Map an Orthanc patient (``/patients/{id}`` or ``?expand``).

    Returns
    -------
    dict
        ``orthanc_id``, ``patient_id`` (DICOM PatientID), ``name``,
        ``birth_date``, ``sex`` (``'m'``, ``'f'``, ``'o'`` or None),
        ``last_update``.

    Raises
    ------
    MappingError
        If the item is not a dict or has no ``ID``.
    """
    orthanc_id = _identifier(orthanc_patient_json, 'patient')
    tags = _tags(orthanc_patient_json)
    return {
        'orthanc_id': orthanc_id,
        'patient_id': clean_text(tags.get('PatientID')),
        'name': format_person_name(tags.get('PatientName')),
        'birth_date': parse_dicom_date(tags.get('PatientBirthDate')),
        'sex': _sex(tags.get('PatientSex')),
        'last_update': parse_orthanc_datetime(
            orthanc_patient_json.get('LastUpdate')),
        }


def _study_series(study_id: str, series: Iterable[dict]) -> list[dict]:
    result = []
    for item in series:
        if not isinstance(item, dict):
            continue
        parent = item.get('ParentStudy')
        if parent and parent != study_id:
            # a full /series?expand listing: keep this study's series
            continue
        result.append(item)
    return result


def map_study(orthanc_study_json: dict,
        series: Iterable[dict] | None = None) -> dict:
    """Map an Orthanc study (``/studies/{id}`` or ``?expand``).

    Parameters
    ----------
    orthanc_study_json : dict
        The study.
    series : list of dict, optional
        Expanded series (``/studies/{id}/series?expand`` or
        ``/series?expand``; series of other studies are ignored).  They
        give ``modalities`` and ``number_of_instances``.

    Returns
    -------
    dict
        ``orthanc_id``, ``orthanc_patient_id``, ``patient_id``,
        ``study_instance_uid``, ``study_datetime``, ``study_date``,
        ``description``, ``accession_number``, ``referring_physician``,
        ``institution``, ``study_id``, ``modalities`` (``'CT, MR'``, None
        without series), ``number_of_series``, ``number_of_instances``
        (None without series), ``last_update``.

    Raises
    ------
    MappingError
        If the item has no ``ID`` or no ``StudyInstanceUID``.
    """
    orthanc_id = _identifier(orthanc_study_json, 'study')
    tags = _tags(orthanc_study_json)
    patient_tags = _tags(orthanc_study_json, 'PatientMainDicomTags')
    uid = clean_text(tags.get('StudyInstanceUID'), 64)
    if not uid:
        raise MappingError('study %s has no StudyInstanceUID' % orthanc_id)
    study_date = parse_dicom_date(tags.get('StudyDate'))
    study_time = parse_dicom_time(tags.get('StudyTime'))

    modalities = number_of_instances = None
    number_of_series = None
    if series is not None:
        series = _study_series(orthanc_id, series)
        number_of_series = len(series)
        found = set()
        number_of_instances = 0
        for item in series:
            modality = clean_text(_tags(item).get('Modality'), 16)
            if modality:
                found.add(modality.upper())
            instances = item.get('Instances')
            if isinstance(instances, list):
                number_of_instances += len(instances)
        modalities = ', '.join(sorted(found)) or None
    elif isinstance(orthanc_study_json.get('Series'), list):
        number_of_series = len(orthanc_study_json['Series'])

    return {
        'orthanc_id': orthanc_id,
        'orthanc_patient_id': clean_text(
            orthanc_study_json.get('ParentPatient')),
        'patient_id': clean_text(patient_tags.get('PatientID')),
        'study_instance_uid': uid,
        'study_datetime': combine_datetime(study_date, study_time),
        'study_date': study_date,
        'description': clean_text(tags.get('StudyDescription')),
        'accession_number': clean_text(tags.get('AccessionNumber')),
        'referring_physician': format_person_name(
            tags.get('ReferringPhysicianName')),
        'institution': clean_text(tags.get('InstitutionName')),
        'study_id': clean_text(tags.get('StudyID')),
        'modalities': modalities,
        'number_of_series': number_of_series,
        'number_of_instances': number_of_instances,
        'last_update': parse_orthanc_datetime(
            orthanc_study_json.get('LastUpdate')),
        }


def map_series(orthanc_series_json: dict) -> dict:
    """Map an Orthanc series (``/series/{id}`` or ``?expand``).

    Returns
    -------
    dict
        ``orthanc_id``, ``orthanc_study_id``, ``series_instance_uid``,
        ``modality``, ``description``, ``series_number`` (int or None),
        ``body_part``, ``number_of_instances``, ``last_update``.
    """
    orthanc_id = _identifier(orthanc_series_json, 'series')
    tags = _tags(orthanc_series_json)
    number = clean_text(tags.get('SeriesNumber'))
    try:
        number = int(number) if number is not None else None
    except ValueError:
        number = None
    if number is not None and not -2 ** 31 <= number < 2 ** 31:
        # IS is 12 characters: more than a database integer holds
        number = None
    modality = clean_text(tags.get('Modality'), 16)
    instances = orthanc_series_json.get('Instances')
    return {
        'orthanc_id': orthanc_id,
        'orthanc_study_id': clean_text(
            orthanc_series_json.get('ParentStudy')),
        'series_instance_uid': clean_text(tags.get('SeriesInstanceUID'), 64),
        'modality': modality.upper() if modality else None,
        'description': clean_text(tags.get('SeriesDescription')),
        'series_number': number,
        'body_part': clean_text(tags.get('BodyPartExamined')),
        'number_of_instances': (len(instances)
            if isinstance(instances, list) else None),
        'last_update': parse_orthanc_datetime(
            orthanc_series_json.get('LastUpdate')),
        }


def map_many(func: Callable[[Any], dict],
        items: Iterable[Any]) -> tuple[list[dict], list[tuple[Any, str]]]:
    """Map every item, skipping and reporting those that fail.

    Returns
    -------
    records : list of dict
        The mapped items, in order.
    errors : list of (id or index, reason)
        The Orthanc ``ID`` of each failing item when it has one, else its
        index in ``items``, with a short reason.
    """
    records, errors = [], []
    for index, item in enumerate(items):
        try:
            records.append(func(item))
        except Exception as exc:
            key = index
            if isinstance(item, dict) and isinstance(item.get('ID'), str) \
                    and item['ID'].strip():
                key = item['ID'].strip()
            if not isinstance(exc, MappingError):
                logger.warning('cannot map Orthanc item %s', key,
                    exc_info=True)
            errors.append((key, str(exc) or exc.__class__.__name__))
    return records, errors
