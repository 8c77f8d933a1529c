# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The patient each answer of a PACS links to (no Orthanc needed)."""
import datetime as dt
import unittest

from trytond.tests.test_tryton import activate_module, with_transaction

from trytond.modules.health_imaging.tests.tools import create_patient
from trytond.modules.health_orthanc.dicom_network import StudyAnswer
from trytond.modules.health_orthanc.linking import (
    AMBIGUOUS, BIRTH_DATE_MISMATCH, LINKED, NO_MATCH, NO_PATIENT_ID)

BORN = dt.date(1970, 1, 1)
OTHER = dt.date(1999, 9, 9)

#: (answers as (PatientID, birth date), the link of each: 'ana' or None
#: and its state)
LINKS = [
    ([('P1', BORN)], [('ana', LINKED)]),
    ([('P1', OTHER)], [(None, BIRTH_DATE_MISMATCH)]),
    ([('P1', None)], [('ana', LINKED)]),
    ([('P2', BORN)], [(None, NO_MATCH)]),
    ([('', BORN)], [(None, NO_PATIENT_ID)]),
    # Two people under one PatientID on the node: neither is linked,
    # whatever the order of the answers
    ([('P1', OTHER), ('P1', BORN)],
        [(None, AMBIGUOUS), (None, AMBIGUOUS)]),
    ([('P1', BORN), ('P1', OTHER), ('P1', None)],
        [(None, AMBIGUOUS)] * 3),
    ([(' P1', BORN), ('P1', OTHER)], [(None, AMBIGUOUS)] * 2),
    # One birth date, and answers without one: the same person
    ([('P1', BORN), ('P1', None)], [('ana', LINKED), ('ana', LINKED)]),
    ([('P1', OTHER), ('P2', BORN)],
        [(None, BIRTH_DATE_MISMATCH), (None, NO_MATCH)]),
    ]


class AnswerLinksTestCase(unittest.TestCase):
    "The links of the answers of a query, by the rule of the sync"

    @classmethod
    def setUpClass(cls):
        activate_module('health_orthanc')

    @with_transaction()
    def test_answer_links(self):
        from trytond.modules.health_orthanc.retrieval import (
            answer_key, answer_links)
        ana = create_patient('Ana', 'García', puid='P1', dob=BORN)
        for rows, expected in LINKS:
            with self.subTest(rows=rows):
                answers = [StudyAnswer(study_uid='1.%d' % i, patient_id=p,
                        birth_date=b) for i, (p, b) in enumerate(rows)]
                links = answer_links(answers)
                self.assertEqual(
                    [links[answer_key(a)] for a in answers],
                    [(ana.id if who else None, state)
                        for who, state in expected])
