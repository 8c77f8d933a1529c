# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The rules that link Orthanc images to GNU Health records.

A wrong link shows one person's images in another person's record, so the
rules are strict.  An Orthanc patient is linked to the one local patient
that carries its DICOM PatientID as PUID or medical record number, when
their birth dates do not disagree (choose_patient).  A study is linked to
the request it matches only when its patient is the request's and the
request's result is not completed (decide_study_link).  Anything else stays
unlinked, with the reason.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
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


def upload_link(
        current: tuple[int | None, str] | None,
        kept: bool,
        candidates: Iterable[tuple[int, dt.date | None]],
        birth_date: dt.date | None,
        patient_id: str | None) -> tuple[int | None, str]:
    """Decide the patient under which the sync files an uploaded study.

    Parameters
    ----------
    current : (local patient id or None, link state) or None
        The link of the study's Orthanc patient when GNU Health has it.
    kept : bool
        Whether a sync never changes that link (chosen by hand, or given
        by an order).
    candidates, birth_date, patient_id
        As choose_patient takes them, for an Orthanc patient not linked.

    Returns
    -------
    (patient id or None, link state)
        The link the study gets: that of its Orthanc patient when it is
        linked or kept, else the one choose_patient decides.
    """
    if current is not None and (current[0] is not None or kept):
        return current
    return choose_patient(candidates, birth_date, patient_id)


# -- studies and the imaging requests they perform --------------------------
#: The links of a study to the request whose identifiers it carries
REQUEST_LINKED = 'linked'
PATIENT_DIFFERS = 'patient_differs'
PATIENT_UNKNOWN = 'patient_unknown'
RESULT_DONE = 'result_done'


@dataclass(frozen=True)
class RequestMatch:
    "The request a study matches, as the study-link decision needs it"
    #: The request's id
    id: int
    #: The id of the request's patient
    patient: int
    #: The state of the request's result, None without result
    result_state: str | None = None
    #: Whether the study is already on that result
    attached: bool = False


def decide_study_link(
        match: RequestMatch | None,
        patient: int | None) -> tuple[int | None, str | None, int | None]:
    """Decide the request of a study: never show one person's images in
    another's record, never change a completed result.

    Parameters
    ----------
    match : RequestMatch or None
        The request the study matches: its own request, else the open
        request whose StudyInstanceUID or accession number it carries.
    patient : int or None
        The GNU Health patient of the study's Orthanc patient.

    Returns
    -------
    (request id or None, link or None, candidate request id or None)
        The study's new ``request``, ``request_link`` and
        ``request_candidate``: linked to the request, or listed for review
        with the reason and the request as candidate.
    """
    if match is None:
        return None, None, None
    if patient is None:
        return None, PATIENT_UNKNOWN, match.id
    if patient != match.patient:
        return None, PATIENT_DIFFERS, match.id
    if (match.result_state not in {None, 'draft'}
            and not match.attached):
        # A completed result is signed: it takes no new study
        return None, RESULT_DONE, match.id
    return match.id, REQUEST_LINKED, None


def leaves_results(
        current: tuple[int | None, str | None, int | None],
        new: tuple[int | None, str | None, int | None]) -> bool:
    """Tell whether a study must leave the draft results of other patients:
    it had a request or a review reason (current) and is not linked now
    (new); both are (request, link, candidate) as decide_study_link
    returns."""
    return new[1] != REQUEST_LINKED and bool(current[0] or current[1])
