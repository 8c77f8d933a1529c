# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"Helpers of the tests that need GNU Health patients"
from trytond.pool import Pool


def create_patient(
        name='Ana', lastname='Betz', puid=None, mrn=None, dob=None):
    """Create a GNU Health patient with an optional PUID and MRN.

    Parties are created one per create call (GNU Health 5.0 refuses more)
    and need a federation country.
    """
    pool = Pool()
    Party = pool.get('party.party')
    Patient = pool.get('gnuhealth.patient')
    Country = pool.get('country.country')
    if not Country.search([('code', '=', 'XX')]):
        Country.create([{'name': 'Testland', 'code': 'XX'}])
    values = {
        'name': name, 'lastname': lastname, 'is_person': True,
        'is_patient': True, 'gender': 'f', 'fed_country': 'XX', 'dob': dob,
        }
    if puid:
        values['ref'] = puid
    if mrn:
        values['alternative_ids'] = [('create', [{
                            'code': mrn,
                            'alternative_id_type': 'medical_record',
                            }])]
    party, = Party.create([values])
    patients = Patient.search([('party', '=', party.id)])
    if not patients:
        patients = Patient.create([{'party': party.id}])
    return patients[0]
