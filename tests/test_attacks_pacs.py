# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The attacks found by the review of PACS query/retrieve (issue #12).

Each test plays, over real JSON-RPC sessions as the user concerned, a
defect that the review found; each failed before its fix.  The set-up is
the one of ``tests/test_pacs_rpc.py`` (its tests are not run again here).
"""
import os
import re

from trytond.pool import Pool

from .rpc import RPCError
from .test_pacs_rpc import QUERY, PacsRPCCase

START = 'gnuhealth.orthanc.query.start'


class PacsAttacksTestCase(PacsRPCCase):
    "The attacks of the review of #12, over JSON-RPC"
    database = '%s_r12_rpc' % (
        re.sub(r'\W', '', os.environ.get('DB_NAME', '')) or 'test_imaging')

    def execute(self, session, state, data):
        "Run a state of a new Query PACS wizard with the data given"
        session_id, _, _ = session.call('wizard.%s.create' % QUERY)
        try:
            return session.call('wizard.%s.execute' % QUERY, session_id,
                data, state)
        finally:
            session.call('wizard.%s.delete' % QUERY, session_id)

    def test_on_change_patient_reads_no_identifiers(self):
        """The on_change of the wizard's start page gives the identifiers
        of any patient to any user: refused outside the wizard's groups"""
        with self.root():
            pool = Pool()
            Party = pool.get('party.party')
            Patient = pool.get('gnuhealth.patient')
            Party.write([Patient(self.ana).party], {'alternative_ids': [
                        ('create', [{
                                    'code': 'SECRET-MRN-77',
                                    'alternative_id_type': 'medical_record',
                                    }])]})
        for login in ['nogroup', 'healthadmin']:
            with self.subTest(user=login), self.assertRaises(RPCError):
                self.sessions[login].model(START, 'on_change',
                    {'patient': self.ana}, ['patient'])
        changes = self.sessions['doctor'].model(START, 'on_change',
            {'patient': self.ana}, ['patient'])
        self.assertEqual(changes['patient_ids'], 'PUID-0001, SECRET-MRN-77')
        self.assertIn('SECRET-MRN-77', changes['identifiers'])
