# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Replace GNU Health's own imaging modules by ours on a used database.

A GNU Health 5.0 database is built with GNU Health's gnuhealth-imaging and
gnuhealth-orthanc packages (their own virtualenv, see tests/upgrade) and
used through their wizards against a real Orthanc; then
``trytond-admin -u health_imaging health_orthanc`` runs with our modules,
the servers are synchronized and a test is ordered; everything the
hospital had must still be there. The legacy virtualenv is required: the
test fails without it.
"""
import os
import shutil
import tempfile
import unittest

from trytond.modules.health_orthanc.tests.orthanc_server import OrthancServer

from .upgrade import legacy, legacy_data

DATABASE = os.environ.get('UPGRADE_DB_NAME', 'upgrade_legacy')


class UpgradeFromGnuHealthTestCase(unittest.TestCase):
    "The update of a database of GNU Health's own imaging modules"

    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix='upgrade-test-')
        try:
            cls._build_and_upgrade()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def _build_and_upgrade(cls):
        uri = os.environ.get('TRYTOND_DATABASE_URI', 'sqlite://')
        config = legacy.write_config(cls.workdir, uri)
        cls.orthanc = OrthancServer(os.path.join(cls.workdir, 'orthanc'))
        cls.orthanc.start()
        legacy.upload_studies(cls.orthanc)
        cls.before = legacy.build(config, DATABASE, cls.orthanc,
            os.path.join(cls.workdir, 'legacy.json'))
        cls.upgrade_seconds, _ = legacy.upgrade(config, DATABASE)
        # Updating again changes nothing: the migrations run once
        legacy.upgrade(config, DATABASE)
        cls.after = legacy.inspect(config, DATABASE,
            os.path.join(cls.workdir, 'upgraded.json'))

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, 'orthanc', None):
            cls.orthanc.stop()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def by_id(self, name):
        return {r['id']: r for r in self.after[name]}

    def legacy_study(self, decision):
        patient_id = next(s[0] for s in legacy_data.STUDIES.values()
            if s[3] == decision)
        study, = [s for s in self.before['studies']
            if s['patient_id'] == patient_id]
        return study

    def study(self, orthanc_id):
        study, = [s for s in self.after['studies']
            if s['orthanc_id'] == orthanc_id]
        return study

    def test_requests(self):
        "Every request keeps its order, state, patient, test and doctor"
        after = self.by_id('requests')
        self.assertEqual(
            {r['state'] for r in self.before['requests']},
            {'draft', 'requested', 'done'})
        for request in self.before['requests']:
            upgraded = after[request['id']]
            for name in ['request', 'request_line', 'state', 'patient',
                    'test', 'doctor', 'date', 'comment']:
                self.assertEqual(upgraded[name], request[name], name)
            self.assertEqual(bool(upgraded['urgent']), bool(request['urgent']))

    def test_requested_get_dicom_identifiers(self):
        "The requested tests get the identifiers that requesting gives"
        after = self.by_id('requests')
        for request in self.before['requests']:
            upgraded = after[request['id']]
            if request['state'] == 'requested':
                self.assertEqual(
                    upgraded['accession_number'], request['request'])
                self.assertTrue(upgraded['study_instance_uid'])
            else:
                self.assertIsNone(upgraded['accession_number'])

    def test_results(self):
        "Every result keeps its number, report, images and professional"
        after = self.by_id('results')
        self.assertTrue(any(r['images'] for r in self.before['results']))
        for result in self.before['results']:
            upgraded = after[result['id']]
            for name in ['number', 'comment', 'doctor', 'patient', 'request',
                    'order', 'date', 'images']:
                self.assertEqual(upgraded[name], result[name], name)
            self.assertEqual(upgraded['state'],
                'done' if result['comment'] else 'draft')

    def test_catalogue_without_duplicates(self):
        "Our catalogue takes over the records with the same code"
        for name in ['test_types', 'tests']:
            codes = [r['code'] for r in self.after[name]]
            self.assertEqual(len(codes), len(set(codes)), name)
        types = {t['code']: t for t in self.after['test_types']}
        tests = {t['code']: t for t in self.after['tests']}
        for code, test_type in self.before['test_types'].items():
            self.assertEqual(types[code]['id'], test_type['id'], code)
            self.assertEqual(types[code]['name'], test_type['name'], code)
        for code, test in self.before['tests'].items():
            for name in ['id', 'name', 'type', 'product']:
                self.assertEqual(tests[code][name], test[name], code)
        xml_ids = self.after['xml_ids']
        self.assertEqual(
            xml_ids['test_type_ct'], self.before['test_types']['CT']['id'])
        # Created by hand with a code that we ship, edited: kept as it was
        self.assertEqual(
            xml_ids['test_type_mg'], self.before['test_types']['MG']['id'])
        self.assertEqual(types['MG']['name'], legacy_data.MG_LOCAL_NAME)
        self.assertEqual(xml_ids['test_img_mr_brain'],
            self.before['tests']['IMG-MR-BRAIN']['id'])
        # What we ship and GNU Health did not
        self.assertIn('NM', types)
        self.assertIn('IMG-DX-CHEST', tests)

    def test_numbering_continues(self):
        "A new order and its result continue the legacy numbering"
        orders = {r['request'] for r in self.before['requests']}
        numbers = {r['number'] for r in self.before['results']}
        new = self.after['new_order']
        self.assertEqual(new['request'], '%03d' % (len(orders) + 1))
        self.assertEqual(new['result'], 'TEST%03d' % (len(numbers) + 1))
        self.assertEqual(new['accession_number'], new['request'])

    def test_server(self):
        "The server keeps its connection and follows the changes"
        server, = self.before['servers']
        upgraded, = self.after['servers']
        for name in ['id', 'label', 'domain', 'user', 'password']:
            self.assertEqual(upgraded[name], server[name], name)
        self.assertEqual(upgraded['public_url'],
            server['proxy_domain'].rstrip('/'))
        self.assertTrue(upgraded['validated'])
        self.assertIsNone(upgraded['last_error'])
        self.assertIsNone(upgraded['import_phase'])
        self.assertGreaterEqual(
            upgraded['last'], server['last_changed_index'])

    def test_sync_without_duplicates(self):
        "The first sync imports every study once; a second adds nothing"
        studies = len(self.before['studies'])
        self.assertEqual(studies, len(legacy_data.STUDIES))
        # The studies with a decision exist before the sync
        self.assertEqual(
            self.after['before_sync']['gnuhealth.orthanc.study'], [3, 3])
        first = self.after['first_sync']
        self.assertEqual(first['gnuhealth.orthanc.study'], [studies] * 2)
        self.assertEqual(first['gnuhealth.orthanc.patient'], [studies] * 2)
        self.assertEqual(
            first['gnuhealth.orthanc.series'], [self.before['series']] * 2)
        self.assertEqual(self.after['second_sync'], first)
        self.assertFalse(any(s['missing'] for s in self.after['studies']))

    def test_hand_link(self):
        "A study linked by hand stays with its patient after the sync"
        legacy_study = self.legacy_study('manual')
        self.assertEqual(
            self.study(legacy_study['orthanc_id'])['patient'],
            legacy_study['patient'])
        orthanc_patient, = [p for p in self.after['orthanc_patients']
            if p['patient_id'] == legacy_study['patient_id']]
        self.assertEqual(orthanc_patient['link_state'], 'manual')

    def test_result_study(self):
        "A study attached to a result stays attached, linked by PUID"
        legacy_study = self.legacy_study('result')
        result = self.by_id('results')[legacy_study['result']]
        self.assertEqual(result['studies'], [legacy_study['orthanc_id']])
        self.assertEqual(
            self.study(legacy_study['orthanc_id'])['patient'],
            legacy_study['patient'])

    def test_v4_records(self):
        "GNU Health 4's Orthanc records become ours: link and result kept"
        v4_patient, = self.before['v4_patients']
        v4_study, = self.before['v4_studies']
        orthanc_patient, = [p for p in self.after['orthanc_patients']
            if p['orthanc_id'] == v4_patient['orthanc_id']]
        self.assertEqual(orthanc_patient['patient'], v4_patient['patient'])
        self.assertEqual(orthanc_patient['link_state'], 'manual')
        self.assertEqual(self.study(v4_study['orthanc_id'])['patient'],
            v4_patient['patient'])
        result = self.by_id('results')[v4_study['result']]
        self.assertEqual(result['studies'], [v4_study['orthanc_id']])

    def test_notes(self):
        "The notes of a study and of its series become a note of the study"
        legacy_study = self.legacy_study('result')
        note, = self.study(legacy_study['orthanc_id'])['notes']
        for text in [legacy_data.STUDY_NOTES, legacy_data.MERGE_COMMENT,
                legacy_data.SERIES_NOTES]:
            self.assertIn(text, note)
