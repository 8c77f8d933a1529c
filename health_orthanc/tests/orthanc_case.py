# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"The base of the database tests that sync a real Orthanc."
import shutil
import tempfile
import unittest

from trytond.pool import Pool
from trytond.tests.test_tryton import activate_module
from trytond.transaction import Transaction

from .dicom_samples import make_study
from .orthanc_server import OrthancServer


def upload_study(orthanc, patient_id, name, seed=0, n_series=2, **kwargs):
    "Upload a study of n_series series of one instance each"
    kwargs.setdefault('accession', 'ACC-%s-%s' % (patient_id, seed))
    for instance in make_study(
            n_series=n_series, n_instances=1, patient_id=patient_id,
            patient_name=name, seed=seed, **kwargs):
        orthanc.upload(instance)


def run_queue():
    """Run the tasks queued by the transaction, as trytond does after the
    commit (the test transaction is never committed)"""
    Queue = Pool().get('ir.queue')
    tasks = Transaction().tasks
    count = 0
    while tasks:
        Queue(tasks.pop()).run()
        count += 1
    return count


class RealOrthancCase(unittest.TestCase):
    "health_orthanc activated and a real Orthanc, emptied before each test"

    @classmethod
    def setUpClass(cls):
        activate_module('health_orthanc')
        cls.workdir = tempfile.mkdtemp(prefix='orthanc-test-')
        cls.orthanc = OrthancServer(cls.workdir).start()

    @classmethod
    def tearDownClass(cls):
        cls.orthanc.stop()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        self.orthanc.clear()

    def create_server(self, label='Main', orthanc=None, **values):
        "Create a validated server record for orthanc (default: the shared)"
        Server = Pool().get('gnuhealth.orthanc.config')
        orthanc = orthanc or self.orthanc
        server, = Server.create([dict({
                        'label': label,
                        'domain': orthanc.url,
                        'user': orthanc.user,
                        'password': orthanc.password,
                        'validated': True,
                        }, **values)])
        return server
