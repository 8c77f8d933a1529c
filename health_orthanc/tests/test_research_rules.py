# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Whether a study may be copied to a research project: table tests."""
import datetime as dt

import pytest

from trytond.modules.health_orthanc.research_rules import (
    AGAIN, NEW, REASONS, REFUSE, Decision, Enrolment, decide_copy)

TODAY = dt.date(2026, 3, 10)
DAY = dt.timedelta(days=1)
CONSENTED = Enrolment(consent_date=TODAY - 30 * DAY)


@pytest.mark.parametrize('kwargs, decision', [
    ({}, Decision(NEW)),
    ({'enrolment': None}, Decision(REFUSE, 'not_subject')),
    ({'enrolment': Enrolment(TODAY)}, Decision(NEW)),
    ({'enrolment': Enrolment(TODAY + DAY)},
        Decision(REFUSE, 'consent_later')),
    ({'enrolment': Enrolment(None)}, Decision(REFUSE, 'consent_later')),
    ({'enrolment': Enrolment(TODAY - DAY, TODAY)},
        Decision(REFUSE, 'withdrawn')),
    # a withdrawal, whatever its date, stops the copies
    ({'enrolment': Enrolment(TODAY - DAY, TODAY + 10 * DAY)},
        Decision(REFUSE, 'withdrawn')),
    ({'start': TODAY + DAY}, Decision(REFUSE, 'project_inactive')),
    ({'end': TODAY - DAY}, Decision(REFUSE, 'project_inactive')),
    ({'start': TODAY, 'end': TODAY}, Decision(NEW)),
    ({'existing': 'done'}, Decision(REFUSE, 'already_copied')),
    ({'existing': 'queued'}, Decision(REFUSE, 'copy_queued')),
    ({'existing': 'failed'}, Decision(AGAIN)),
    ({'existing': 'deleted'}, Decision(AGAIN)),
    ({'from_registry': True}, Decision(REFUSE, 'no_registry_copy')),
    ({'from_registry': True, 'registry_copy': 'failed'},
        Decision(REFUSE, 'no_registry_copy')),
    ({'from_registry': True, 'registry_copy': 'done'}, Decision(NEW)),
    ({'from_registry': True, 'registry_copy': 'done', 'existing': 'failed'},
        Decision(AGAIN)),
    # the first refusal in the order of REASONS wins
    ({'end': TODAY - DAY, 'enrolment': None},
        Decision(REFUSE, 'project_inactive')),
    ({'enrolment': Enrolment(TODAY - DAY, TODAY), 'existing': 'done'},
        Decision(REFUSE, 'withdrawn')),
    ({'existing': 'done', 'from_registry': True},
        Decision(REFUSE, 'already_copied')),
    ])
def test_decide_copy(kwargs, decision):
    arguments = dict(today=TODAY, start=None, end=None, enrolment=CONSENTED)
    arguments.update(kwargs)
    assert decide_copy(**arguments) == decision
    assert decision.reason is None or decision.reason in REASONS
