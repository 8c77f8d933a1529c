# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Whether a study may be copied to a research project.

Plain Python (no Tryton).  :func:`decide_copy` takes what the register
knows about the patient, the project and the copies already made, and
returns what to do: make a new copy, run a failed one again, or refuse
with a reason code (the models word it with ``msg_research_refused_*``).
"""
import dataclasses
import datetime as dt

__all__ = ['Enrolment', 'Decision', 'decide_copy', 'NEW', 'AGAIN',
    'REFUSE', 'REASONS', 'COPY_STATES']

NEW, AGAIN, REFUSE = 'new', 'again', 'refuse'
#: The states of a copy record
COPY_STATES = ('queued', 'done', 'failed', 'deleted')
#: The refusals, in the order they are tested
REASONS = (
    'project_inactive',     # today is outside the project's dates
    'not_subject',          # the patient is not enrolled in the project
    'withdrawn',            # the subject withdrew consent
    'consent_later',        # the consent is dated after today
    'already_copied',       # a copy of the study is done
    'copy_queued',          # a copy of the study waits in the queue
    'no_registry_copy',     # the registry has no done copy of the study
    )


@dataclasses.dataclass(frozen=True)
class Enrolment:
    "What the register holds about a patient in a project"
    consent_date: dt.date | None
    withdrawal_date: dt.date | None = None


@dataclasses.dataclass(frozen=True)
class Decision:
    "``action`` is NEW, AGAIN or REFUSE; ``reason`` a code of REASONS"
    action: str
    reason: str | None = None


def _active(today, start, end):
    return (start is None or start <= today) and (end is None
        or today <= end)


def decide_copy(today: dt.date, start: dt.date | None, end: dt.date | None,
        enrolment: Enrolment | None, existing: str | None = None,
        registry_copy: str | None = None,
        from_registry: bool = False) -> Decision:
    """Decide the copy of one study to one project.

    ``start``/``end``: the project's active dates (None: open).
    ``enrolment``: the patient's subject in the project, None if none.
    ``existing``: the state of the copy of this study in this project.
    ``registry_copy``: the state of the registry's copy of the study, for
    a project that copies from the registry (``from_registry``).
    A withdrawal date, whatever it is, stops the copies.
    """
    if not _active(today, start, end):
        return Decision(REFUSE, 'project_inactive')
    if enrolment is None:
        return Decision(REFUSE, 'not_subject')
    if enrolment.withdrawal_date is not None:
        return Decision(REFUSE, 'withdrawn')
    if enrolment.consent_date is None or enrolment.consent_date > today:
        return Decision(REFUSE, 'consent_later')
    if existing == 'done':
        return Decision(REFUSE, 'already_copied')
    if existing == 'queued':
        return Decision(REFUSE, 'copy_queued')
    if from_registry and registry_copy != 'done':
        return Decision(REFUSE, 'no_registry_copy')
    if existing in ('failed', 'deleted'):
        return Decision(AGAIN)
    return Decision(NEW)
