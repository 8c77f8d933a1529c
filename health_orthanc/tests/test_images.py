# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Viewers, previews attached to results, uploads and deletions, against a
real Orthanc running the Web Viewer and DICOMweb plugins."""
import io
import shutil
import tempfile
import zipfile

from trytond.exceptions import UserError
from trytond.model.exceptions import AccessError, ValidationError
from trytond.model.modelview import AccessButtonError
from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module, with_transaction
from trytond.transaction import Transaction

from trytond.modules.health_imaging.tests.tools import (
    create_patient, create_user)
from trytond.modules.health_orthanc.tests.test_upload_files import (
    patch_members)

from .dicom_samples import make_study
from .fake_orthanc import FakeOrthanc, orthanc_error
from .orthanc_case import RealOrthancCase, run_queue, upload_study
from .orthanc_server import OrthancServer, plugin_path

NO_COMMIT = {'_orthanc_page_commit': False}
PNG = b'\x89PNG\r\n\x1a\n'


class OrthancImagesTestCase(RealOrthancCase):
    "What clinicians and administrators do with the images of a study"

    @classmethod
    def setUpClass(cls):
        activate_module('health_orthanc')
        cls.workdir = tempfile.mkdtemp(prefix='orthanc-test-')
        cls.orthanc = OrthancServer(cls.workdir, plugins=[
                plugin_path('WebViewer'), plugin_path('DicomWeb')]).start()

    @classmethod
    def tearDownClass(cls):
        cls.orthanc.stop()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def synced_server(self):
        Server = Pool().get('gnuhealth.orthanc.config')
        server = self.create_server()
        Server.check_servers([server])
        Server.sync_now([server])
        return server

    def create_result(self, patient, studies):
        pool = Pool()
        Test = pool.get('gnuhealth.imaging.test')
        Result = pool.get('gnuhealth.imaging.test.result')
        test, = Test.search([], limit=1)
        result, = Result.create([{
                    'patient': patient.id,
                    'requested_test': test.id,
                    'studies': [('add', [s.id for s in studies])],
                    }])
        return result

    @with_transaction(context=NO_COMMIT)
    def test_plugins_and_viewer_urls(self):
        "Viewer links follow the plugins detected and the public URL"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.orthanc.study')
        Queue = pool.get('ir.queue')
        upload_study(self.orthanc, 'P1', 'ONE^Patient')
        server = self.synced_server()
        self.assertEqual(server.plugins, 'dicom-web, web-viewer')
        study, = Study.search([('server', '=', server.id)])
        self.assertEqual(study.explorer_url,
            '%s/app/explorer.html#study?uuid=%s' % (
                self.orthanc.url, study.orthanc_id))
        # No Stone nor OHIF plugin: no link
        self.assertIsNone(study.stone_url)
        self.assertIsNone(study.ohif_url)
        series = study.series[0]
        self.assertEqual(series.web_viewer_url,
            '%s/web-viewer/app/viewer.html?series=%s' % (
                self.orthanc.url, series.orthanc_id))
        response = self.orthanc.session().get(series.web_viewer_url)
        self.assertEqual(response.status_code, 200)

        # Behind a reverse proxy: links for the browsers, API unchanged
        Queue.delete(Queue.search([]))
        Server.write([server], {
                'public_url': ' HTTPS://PACS.example.org/orthanc/ '})
        self.assertEqual(server.public_url, 'https://pacs.example.org/orthanc')
        self.assertTrue(server.validated)
        self.assertEqual(Queue.search_count([]), 0)
        self.assertEqual(server.explorer_url,
            'https://pacs.example.org/orthanc/app/explorer.html')
        study = Study(study.id)
        self.assertTrue(study.explorer_url.startswith(
                'https://pacs.example.org/orthanc/app/explorer.html#study'))
        self.assertTrue(study.series[0].web_viewer_url.startswith(
                'https://pacs.example.org/orthanc/web-viewer/'))
        with self.assertRaises(ValidationError):
            Server.write([server], {'public_url': 'pacs.example.org'})
        Server.write([server], {'public_url': ''})
        self.assertIsNone(server.public_url)

        # Plugins gone (detected at the next check): links hidden
        Server.write([server], {'plugins': None})
        self.assertIsNone(Study(study.id).series[0].web_viewer_url)

    @with_transaction(context=NO_COMMIT)
    def test_preview_attached_to_result(self):
        "The preview of a series goes to the images of the result"
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Series = pool.get('gnuhealth.orthanc.series')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        for data in make_study(n_series=1, n_instances=3, seed=4,
                patient_id='PUID-ANA', patient_name='BETZ^Ana'):
            self.orthanc.upload(data)
        self.synced_server()
        study, = Study.search([('patient', '=', ana.id)])
        series, = study.series
        self.assertIsNone(series.preview)
        result = self.create_result(ana, [study])

        Series.fetch_preview([series])
        self.assertTrue(series.preview.startswith(PNG))
        instances = self.orthanc.request(
            'GET', '/series/%s/instances' % series.orthanc_id).json()
        middle = [i['ID'] for i in sorted(
                instances, key=lambda i: i['IndexInSeries'])][1]
        self.assertEqual(series.preview_instance, middle)

        Series.attach_preview([series])
        image, = result.images
        self.assertTrue(image.name.endswith('.png'))
        self.assertEqual(result.get_images(),
            [(bytes(series.preview), 'image/png')])
        # Twice: not duplicated
        Series.attach_preview([series])
        self.assertEqual(len(result.get_images()), 1)

    @with_transaction(context=NO_COMMIT)
    def test_attach_needs_result(self):
        "A series whose study no result reads cannot be attached"
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Series = pool.get('gnuhealth.orthanc.series')
        Attachment = pool.get('ir.attachment')
        upload_study(self.orthanc, 'P2', 'TWO^Patient', n_series=1)
        self.synced_server()
        study, = Study.search([])
        with self.assertRaises(UserError) as error:
            Series.attach_preview(list(study.series))
        self.assertIn('not read by any imaging result', str(error.exception))
        self.assertEqual(Attachment.search_count([]), 0)

    @with_transaction(context=NO_COMMIT)
    def test_preview_batch_with_failures(self):
        "A series that fails does not stop the previews of the others"
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Series = pool.get('gnuhealth.orthanc.series')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        upload_study(self.orthanc, 'PUID-ANA', 'BETZ^Ana', n_series=3)
        self.synced_server()
        study, = Study.search([('patient', '=', ana.id)])
        kept, gone, gone2 = study.series
        result = self.create_result(ana, [study])
        # Deleted in Orthanc since the last sync
        for record in [gone, gone2]:
            self.orthanc.request('DELETE', '/series/' + record.orthanc_id)

        # Attach: the preview of the series left is fetched and attached
        Series.attach_preview([kept, gone])
        kept, gone = Series.browse([kept.id, gone.id])
        self.assertTrue(kept.preview.startswith(PNG))
        self.assertIsNone(kept.preview_error)
        self.assertEqual(result.get_images(),
            [(bytes(kept.preview), 'image/png')])
        self.assertIsNone(gone.preview)
        self.assertIn(gone.rec_name, gone.preview_error)
        self.assertIn('No preview of the series', gone.preview_error)

        # Fetch: stored for the good ones, the reason kept for the others
        Series.write([kept], {'preview': None, 'preview_instance': None})
        Series.fetch_preview([gone, kept, gone2])
        kept, gone2 = Series.browse([kept.id, gone2.id])
        self.assertTrue(kept.preview.startswith(PNG))
        self.assertTrue(gone2.preview_error)

        # Only failures: nothing to store, the reasons raised together
        with self.assertRaises(UserError) as error:
            Series.fetch_preview([gone, gone2])
        self.assertIn('No preview of the 2 series', str(error.exception))
        self.assertIn(gone.rec_name, str(error.exception))
        self.assertIn(gone2.rec_name, str(error.exception))
        with self.assertRaises(UserError) as error:
            Series.attach_preview([gone])
        self.assertIn('No preview of the series', str(error.exception))
        self.assertEqual(len(result.get_images()), 1)

    @with_transaction(context=NO_COMMIT)
    def test_attach_to_done_result(self):
        "A done result gets no preview until it is reset to draft"
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Series = pool.get('gnuhealth.orthanc.series')
        Result = pool.get('gnuhealth.imaging.test.result')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        upload_study(self.orthanc, 'PUID-ANA', 'BETZ^Ana', n_series=1)
        self.synced_server()
        study, = Study.search([('patient', '=', ana.id)])
        series, = study.series
        draft = self.create_result(ana, [study])
        done = self.create_result(ana, [study])
        Result.write([done], {'comment': 'No fracture.'})
        Result.complete([done])

        with self.assertRaises(UserError) as error:
            Series.attach_preview([series])
        self.assertIn(done.rec_name, str(error.exception))
        self.assertNotIn(draft.rec_name, str(error.exception))
        self.assertIn('Reset to Draft', str(error.exception))
        self.assertEqual(draft.get_images(), [])
        self.assertEqual(done.get_images(), [])
        self.assertIsNone(Series(series.id).preview)  # not even fetched

        Result.draft([done])
        Series.attach_preview([series])
        self.assertEqual(len(done.get_images()), 1)
        self.assertEqual(len(draft.get_images()), 1)

    @with_transaction(context=NO_COMMIT)
    def test_upload_wizard(self):
        "2 DICOM files, a duplicate and a text file in a zip, then synced"
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Upload = pool.get('gnuhealth.orthanc.upload', type='wizard')
        UploadFile = pool.get('gnuhealth.orthanc.upload.file')
        server = self.synced_server()
        self.assertEqual(Study.search_count([]), 0)
        first, second = make_study(n_series=2, n_instances=1, seed=8,
            patient_id='UP-1', patient_name='UPLOAD^Ann')
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, 'w', zipfile.ZIP_DEFLATED) as zf:
            zf.writestr('study/1.dcm', first)
            zf.writestr('study/2.dcm', second)
            zf.writestr('copy/1.dcm', first)
            zf.writestr('README.txt', 'Images of Ann')
            zf.writestr('secret.dcm', second)
        # secret.dcm marked encrypted, as a zip tool with a password does
        data = patch_members(archive.getvalue(), ['secret.dcm'], flag=0x1)

        session_id, _, _ = Upload.create()
        wizard = Upload(session_id)
        wizard.start.server = server
        wizard.start.files = [UploadFile(file_name='ann.zip', data=data)]
        self.assertEqual(wizard.transition_upload(), 'result')
        # The sync is queued: it runs after the wizard's commit
        self.assertEqual(Study.search_count([]), 0)
        self.assertEqual(run_queue(), 1)
        result = wizard.default_result(None)
        self.assertEqual(
            (result['stored'], result['already_stored'], result['rejected'],
                result['failed']), (2, 1, 2, 0))
        self.assertEqual([(l['file_name'], l['status'])
                for l in result['lines']], [
                ('ann.zip/study/1.dcm', 'stored'),
                ('ann.zip/study/2.dcm', 'stored'),
                ('ann.zip/copy/1.dcm', 'already_stored'),
                ('ann.zip/README.txt', 'rejected'),
                ('ann.zip/secret.dcm', 'rejected'),
                ])
        # Each reason is the user message, saying what to do
        details = [l['detail'] for l in result['lines']]
        self.assertEqual(details[:3], ['', '', ''])
        self.assertIn('cannot read it as a DICOM file', details[3])
        self.assertIn('protected by a password', details[4])
        self.assertIn('2 stored', result['message'])
        # The sync brought the study
        study, = Study.search([('server', '=', server.id)])
        self.assertEqual(result['studies'], [study.id])
        self.assertEqual(study.patient_id, 'UP-1')
        self.assertEqual(study.number_of_series, 2)
        self.assertFalse(wizard.start.files)  # not kept in the session

    @with_transaction(context=NO_COMMIT)
    def test_upload_wrong_password(self):
        "A refused upload is reported per file, without the password"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Upload = pool.get('gnuhealth.orthanc.upload', type='wizard')
        UploadFile = pool.get('gnuhealth.orthanc.upload.file')
        server = self.create_server(password='Wrong-Secret-42')
        Server.write([server], {'validated': True})
        session_id, _, _ = Upload.create()
        wizard = Upload(session_id)
        wizard.start.server = server
        wizard.start.files = [UploadFile(
                file_name='a.dcm', data=make_study(1, 1, seed=9)[0])]
        wizard.transition_upload()
        result = wizard.default_result(None)
        self.assertEqual(result['failed'], 1)
        line, = result['lines']
        self.assertIn('refused', line['detail'])
        for text in [result['message'], line['detail']]:
            self.assertNotIn('Wrong-Secret-42', text)
            self.assertNotIn(self.orthanc.password, text)

    def delete_studies(self, studies):
        """Run Delete from Orthanc on studies as the client does: return
        the next state and the values of the result page (or None)"""
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Delete = pool.get('gnuhealth.orthanc.study.delete', type='wizard')
        Action = pool.get('ir.action')
        ModelData = pool.get('ir.model.data')
        # The button opens the wizard
        self.assertEqual(Study.delete_from_orthanc(studies),
            Action.get_action_id(ModelData.get_id(
                    'health_orthanc', 'wizard_study_delete')))
        with Transaction().set_context(
                active_model=Study.__name__,
                active_ids=[s.id for s in studies],
                active_id=studies[0].id):
            session_id, start, _ = Delete.create()
            wizard = Delete(session_id)
            self.assertEqual(wizard.default_start(None),
                {'studies': [s.id for s in studies]})
            state = wizard.transition_remove()
            result = wizard.default_result(None) if state == 'result' \
                else None
            wizard.delete(session_id)
        return state, result

    def in_orthanc(self, orthanc_id):
        return self.orthanc.session().get(
            self.orthanc.url + '/studies/' + orthanc_id).status_code == 200

    @with_transaction(context=NO_COMMIT)
    def test_delete_study(self):
        "Gone in both places; a study read by a result is kept"
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Series = pool.get('gnuhealth.orthanc.series')
        ResultStudy = pool.get(
            'gnuhealth.imaging.test.result-gnuhealth.orthanc.study')
        ana = create_patient('Ana', 'Betz', puid='PUID-ANA')
        upload_study(self.orthanc, 'PUID-ANA', 'BETZ^Ana', seed=1)
        upload_study(self.orthanc, 'PUID-ANA', 'BETZ^Ana', seed=2)
        self.synced_server()
        kept, gone = Study.search([('patient', '=', ana.id)])
        result = self.create_result(ana, [kept])
        gone_id = gone.orthanc_id

        state, values = self.delete_studies([kept, gone])
        self.assertEqual(state, 'result')
        self.assertEqual((values['deleted'], values['failed']), (1, 1))
        self.assertEqual(values['studies'], [kept.id])
        self.assertIn(result.rec_name, values['message'])
        self.assertIn('Remove it from the Studies', values['message'])
        self.assertTrue(self.in_orthanc(kept.orthanc_id))
        self.assertFalse(self.in_orthanc(gone_id))
        self.assertEqual(Study.search([]), [kept])
        self.assertEqual(Series.search_count([('study', '=', kept.id)]), 2)
        self.assertEqual(Series.search_count([]), 2)

        # Already deleted in Orthanc (e.g. by hand): removed here only
        ResultStudy.delete(ResultStudy.search([]))
        self.orthanc.request('DELETE', '/studies/' + kept.orthanc_id)
        self.assertEqual(self.delete_studies([kept]), ('end', None))
        self.assertEqual(Study.search_count([]), 0)

    @with_transaction(context=NO_COMMIT)
    def test_delete_partial_failure(self):
        """What Orthanc deleted is deleted here, the failures are listed:
        an error of one server, another unreachable, and a study already
        gone"""
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.orthanc.study')
        upload_study(self.orthanc, 'P5', 'FIVE^Patient', seed=5)
        server = self.synced_server()
        real, = Study.search([('server', '=', server.id)])
        real_id = real.orthanc_id
        with FakeOrthanc() as fake, FakeOrthanc() as down:
            fake.set('/studies/refused', status=500,
                body=orthanc_error(500, 'Database locked'))
            # Unknown to the fake: 404, already gone
            down.set('/studies/first', close=True)
            failing, unreachable = Server.create([{
                        'label': 'Failing', 'domain': fake.url,
                        'validated': True,
                        }, {
                        'label': 'Down', 'domain': down.url,
                        'validated': True,
                        }])
            refused, already, first, second = Study.create([
                    {'server': failing.id, 'orthanc_id': 'refused'},
                    {'server': failing.id, 'orthanc_id': 'already'},
                    {'server': unreachable.id, 'orthanc_id': 'first'},
                    {'server': unreachable.id, 'orthanc_id': 'second'},
                    ])
            state, values = self.delete_studies(
                [refused, real, first, already, second])
            # One server down: its other studies are not even tried
            self.assertEqual(down.count('/studies/second'), 0)
            self.assertEqual(fake.count('/studies/already'), 1)

        self.assertEqual(state, 'result')
        self.assertEqual((values['deleted'], values['failed']), (2, 3))
        self.assertEqual(sorted(values['studies']),
            sorted([refused.id, first.id, second.id]))
        self.assertFalse(self.in_orthanc(real_id))
        self.assertEqual(sorted(Study.search([])),
            sorted([refused, first, second]))
        message = values['message']
        self.assertTrue(message.startswith(
                '2 study(ies) deleted from Orthanc and GNU Health; 3 not'))
        self.assertIn('Database locked', message)
        self.assertEqual(message.count('Cannot reach Orthanc'), 2)

    @with_transaction(context=NO_COMMIT)
    def test_access(self):
        "Only Orthanc administrators delete; clinicians preview"
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        Series = pool.get('gnuhealth.orthanc.series')
        Server = pool.get('gnuhealth.orthanc.config')
        upload_study(self.orthanc, 'P3', 'THREE^Patient', n_series=1)
        server = self.synced_server()
        study, = Study.search([])
        doctor = create_user('doctor', 'health.group_health_doctor')
        imaging = create_user(
            'imaging', 'health_imaging.group_health_imaging')
        admin = create_user(
            'orthanc', 'health_orthanc.group_orthanc_admin')
        for user in [doctor, imaging]:
            with Transaction().set_user(user.id), \
                    Transaction().set_context(_check_access=True):
                with self.assertRaises(AccessButtonError):
                    Study.delete_from_orthanc([study])
                Series.fetch_preview(list(study.series))
                values, = Server.read([server.id], ['plugins', 'label'])
                with self.assertRaises(AccessError):
                    Server.read([server.id], ['password'])
        self.assertTrue(Series(study.series[0].id).preview.startswith(PNG))

        # Imaging technicians upload, and the sync writes what they cannot
        Upload = pool.get('gnuhealth.orthanc.upload', type='wizard')
        UploadFile = pool.get('gnuhealth.orthanc.upload.file')
        with Transaction().set_user(imaging.id), \
                Transaction().set_context(_check_access=True):
            session_id, _, _ = Upload.create()
            wizard = Upload(session_id)
            self.assertEqual(wizard.default_start(None),
                {'server': server.id})
            wizard.start.server = server
            wizard.start.files = [UploadFile(file_name='new.dcm',
                    data=make_study(1, 1, seed=21, patient_id='P4')[0])]
            wizard.transition_upload()
            self.assertEqual(wizard.default_result(None)['stored'], 1)
            run_queue()
        self.assertEqual(Study.search_count([]), 2)
        with Transaction().set_user(admin.id), \
                Transaction().set_context(_check_access=True):
            self.assertEqual(self.delete_studies([study]), ('end', None))
        self.assertEqual(Study.search_count([]), 1)
        # The wizard too (from the action menu of the studies); trytond
        # 7.0 words its refusal with a KeyError, so check its groups
        ActionWizard = pool.get('ir.action.wizard')
        ModelData = pool.get('ir.model.data')
        self.assertEqual(
            ActionWizard.get_groups('gnuhealth.orthanc.study.delete'),
            {ModelData.get_id('health_orthanc', 'group_orthanc_admin')})
