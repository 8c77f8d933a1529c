# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The rule that links an Orthanc patient to a GNU Health patient.

A wrong link shows one person's images in another person's record, so the
rule is strict: exactly one local patient must carry the DICOM PatientID as
PUID or medical record number, and when both birth dates are known they
must agree.  Anything else stays unlinked, with the reason.
"""
from __future__ import annotations

import datetime as dt
from typing import Iterable

LINKED = 'linked'
NO_MATCH = 'no_match'
AMBIGUOUS = 'ambiguous'
BIRTH_DATE_MISMATCH = 'birth_date_mismatch'
NO_PATIENT_ID = 'no_patient_id'


def normalize_identifier(value: str | None) -> str | None:
    "The form in which a PatientID is compared with PUIDs and MRNs"
    if value is None:
        return None
    value = value.strip()
    return value or None


def choose_patient(
        candidates: Iterable[tuple[int, dt.date | None]],
        birth_date: dt.date | None,
        patient_id: str | None = '') -> tuple[int | None, str]:
    """Decide the local patient of an Orthanc patient.

    Parameters
    ----------
    candidates : iterable of (local patient id, its birth date or None)
        Every local patient whose PUID or MRN equals the PatientID; the
        same patient may appear twice (PUID and MRN).
    birth_date : date or None
        The DICOM PatientBirthDate.
    patient_id : str or None
        The DICOM PatientID (None or empty: nothing can be matched).

    Returns
    -------
    (patient id or None, status)
        status is one of LINKED, NO_MATCH, AMBIGUOUS,
        BIRTH_DATE_MISMATCH, NO_PATIENT_ID.
    """
    if not normalize_identifier(patient_id):
        return None, NO_PATIENT_ID
    unique = dict(candidates)
    if not unique:
        return None, NO_MATCH
    if len(unique) > 1:
        return None, AMBIGUOUS
    (local_id, local_birth_date), = unique.items()
    if birth_date and local_birth_date and birth_date != local_birth_date:
        return None, BIRTH_DATE_MISMATCH
    return local_id, LINKED
