# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"Helpers of the tests that need GNU Health patients, requests and users"
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


def create_request(patient, test_code='IMG-DX-CHEST', **values):
    "Create a draft imaging request of the test for the patient"
    pool = Pool()
    Test = pool.get('gnuhealth.imaging.test')
    Request = pool.get('gnuhealth.imaging.test.request')
    test, = Test.search([('code', '=', test_code)])
    request, = Request.create([dict({
                    'patient': patient.id,
                    'requested_test': test.id,
                    }, **values)])
    return request


def create_user(login, *groups):
    "Create a user in the groups given as 'module.xml_id'"
    pool = Pool()
    User = pool.get('res.user')
    ModelData = pool.get('ir.model.data')
    user, = User.create([{
                'name': login, 'login': login,
                'groups': [('add', [
                            ModelData.get_id(*g.split('.')) for g in groups])],
                }])
    return user
