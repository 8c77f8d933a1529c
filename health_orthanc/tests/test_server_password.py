# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"The password of a server: kept, never read back, or from the configuration"
from trytond.config import config
from trytond.model.exceptions import AccessError
from trytond.pool import Pool
from trytond.tests.test_tryton import with_transaction
from trytond.transaction import Transaction

from trytond.modules.health_imaging.tests.tools import create_user

from .orthanc_case import RealOrthancCase, run_queue, upload_study

SECTION = 'health_orthanc_passwords'
NO_COMMIT = {'_orthanc_page_commit': False}


class ServerPasswordTestCase(RealOrthancCase):
    "The password of an Orthanc server"

    def tearDown(self):
        if config.has_section(SECTION):
            config.remove_section(SECTION)
        super().tearDown()

    @with_transaction(context=NO_COMMIT)
    def test_password_kept_not_read_back(self):
        "The password is sent to Orthanc, the field shows stars"
        Server = Pool().get('gnuhealth.orthanc.config')
        server = self.create_server()
        self.assertEqual(server.password, '*' * 8)
        self.assertEqual(server.secret(), self.orthanc.password)
        self.assertFalse(server.password_configured)

        # Writing the stars back keeps it
        Server.write([server], {'password': '*' * 8})
        self.assertEqual(server.secret(), self.orthanc.password)
        Server.write([server], {'password': None})
        self.assertIsNone(Server(server.id).password)
        self.assertIsNone(server.secret())

    @with_transaction(context=NO_COMMIT)
    def test_password_never_searched(self):
        "No user searches or sorts on the password, not even an admin"
        pool = Pool()
        Server = pool.get('gnuhealth.orthanc.config')
        Study = pool.get('gnuhealth.orthanc.study')
        self.create_server()
        admin = create_user('admin2', 'health_orthanc.group_orthanc_admin')
        # As in an RPC call of the administrator
        with Transaction().set_user(admin.id), Transaction().set_context(
                _check_access=True, _request={}):
            self.assert_password_refused(Server, Study)
        # Elsewhere nothing matches, whatever the value
        for value in [self.orthanc.password, None, '']:
            self.assertEqual(Study.search(
                    [('server', 'where', [('password', '=', value)])]), [])

    def assert_password_refused(self, Server, Study):
        for model, domain in [
                (Server, [('password', '=', self.orthanc.password)]),
                (Study, [('server', 'where', [('password', '!=', None)])]),
                (Study, [('server.password', '>=', 'a')]),
                ]:
            with self.subTest(domain=domain):
                with self.assertRaises(AccessError):
                    model.search(domain)
        with self.assertRaises(AccessError):
            Server.search([], order=[('password', 'ASC')])

    @with_transaction(context=NO_COMMIT)
    def test_password_from_configuration(self):
        "trytond's configuration gives the password by the server's label"
        Server = Pool().get('gnuhealth.orthanc.config')
        upload_study(self.orthanc, 'PUID-CONF', 'CONF^Ana')
        server = self.create_server(label='Main PACS', password=None)
        Server.sync_now([server])
        server = Server(server.id)
        self.assertTrue(server.last_error)  # Orthanc refused no password
        self.assertEqual(server.study_count, 0)

        config.add_section(SECTION)
        # For another domain: never sent there
        config.set(SECTION, 'main pacs',
            'https://elsewhere.example.org %s' % self.orthanc.password)
        self.assertFalse(Server(server.id).password_configured)
        self.assertIsNone(Server(server.id).secret())
        # Matched whatever the case of the label
        config.set(SECTION, 'main pacs',
            '%s %s' % (self.orthanc.url, self.orthanc.password))
        server = Server(server.id)
        self.assertTrue(server.password_configured)
        self.assertIsNone(server.password)
        Server.sync_now([server])
        run_queue()
        server = Server(server.id)
        self.assertIsNone(server.last_error)
        self.assertEqual(server.study_count, 1)

    @with_transaction(context=NO_COMMIT)
    def test_password_forgotten_with_the_domain(self):
        """A server moved to another domain forgets its password, so that
        the Check Connection never sends it there"""
        Server = Pool().get('gnuhealth.orthanc.config')
        server = self.create_server()
        Server.write([server], {'domain': self.orthanc.url})
        self.assertEqual(server.secret(), self.orthanc.password)
        Server.write([server], {'domain': 'http://127.0.0.1:9'})
        self.assertIsNone(Server(server.id).password)
        self.assertIsNone(server.secret())
        # Unless a password is given with it
        Server.write([server], {
                'domain': self.orthanc.url, 'password': 'new-one'})
        self.assertEqual(server.secret(), 'new-one')
