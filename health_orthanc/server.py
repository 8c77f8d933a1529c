# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"Orthanc servers, their synchronization and the Add Orthanc Server wizard."
import datetime
import logging
import threading
from contextlib import contextmanager

from sql import For, Literal, Null
from sql.aggregate import Count
from trytond import backend
from trytond.config import config
from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, Unique, fields
from trytond.model.exceptions import AccessError
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from trytond.modules.health_imaging import upgrade
from trytond.modules.health_imaging.access import (
    DomainAccessMixin, ReadonlyFieldsMixin, check_field_search, server_queue)

from . import legacy
from . import orthanc_client as oc
from .audit import AuditMixin
from .exceptions import OrthancDomainError, OrthancWorklistError
from .store import ServerStore, SyncTakenOver
from .sync import ImportProgress, Synchronizer, SyncResult
from .viewer import explorer_url, format_plugins
from .worklist_publish import ENTRY_STATES

logger = logging.getLogger(__name__)

# What changes how GNU Health reaches the server: changing any re-validates
CONNECTION_FIELDS = {
    'label', 'domain', 'user', 'password', 'verify_tls', 'ca_bundle'}
LINK_MARGIN = datetime.timedelta(hours=1)
#: A sync's claim on SQLite not renewed for this long is of a dead process;
#: a sync renews it with each page it commits
CLAIM_STALE = datetime.timedelta(minutes=30)
#: What the form shows for a password kept: the password itself never
#: leaves the server
PASSWORD_MASK = '*' * 8
#: The section of trytond's configuration that may give the password of
#: a server, by its label: then the database holds none
PASSWORD_SECTION = 'health_orthanc_passwords'
#: Fields only Orthanc administrators read, wherever a domain names them
ADMIN_FIELDS = {'user', 'worklist_folder', 'ca_bundle'}

ERROR_MESSAGES = [
    (oc.OrthancUnauthorized, 'health_orthanc.msg_orthanc_unauthorized'),
    (oc.OrthancTimeout, 'health_orthanc.msg_orthanc_timeout'),
    (oc.OrthancTLSError, 'health_orthanc.msg_orthanc_tls'),
    (oc.OrthancUnreachable, 'health_orthanc.msg_orthanc_unreachable'),
    (oc.NotOrthanc, 'health_orthanc.msg_orthanc_not_orthanc'),
    (oc.OrthancNotFound, 'health_orthanc.msg_orthanc_not_found'),
    (oc.OrthancStalled, 'health_orthanc.msg_orthanc_stalled'),
    (oc.OrthancBadAnswer, 'health_orthanc.msg_orthanc_bad_answer'),
    (oc.OrthancError, 'health_orthanc.msg_orthanc_error'),
    ]


def error_message(exception, domain):
    "Return the user message for an Orthanc client error"
    if isinstance(exception, oc.OrthancUnauthorized) \
            and exception.status == 403:
        return gettext('health_orthanc.msg_orthanc_forbidden',
            domain=domain, error=str(exception))
    for class_, message_id in ERROR_MESSAGES:
        if isinstance(exception, class_):
            return gettext(message_id, domain=domain, error=str(exception))


def dicom_values(system):
    "Return our DICOM AE title and port from Orthanc's /system"
    try:
        ours = oc.local_ae_of(system)
    except oc.OrthancError:
        return {'dicom_aet': None, 'dicom_port': None}
    return {'dicom_aet': ours.aet, 'dicom_port': ours.port}


_SYNC_LOCKS = {}
_SYNC_LOCKS_GUARD = threading.Lock()


def _process_lock(database_name, server_id):
    "Return the lock of the syncs of a server in this process"
    with _SYNC_LOCKS_GUARD:
        return _SYNC_LOCKS.setdefault(
            (database_name, server_id), threading.Lock())


class ConnectionMixin:
    "How GNU Health reaches an Orthanc server"
    __slots__ = ()

    label = fields.Char("Label", required=True, help="A unique name.")
    domain = fields.Char(
        "Domain", required=True,
        help="The base URL of the Orthanc REST API, "
        "e.g. https://pacs.example.org/orthanc")
    user = fields.Char("Username")
    verify_tls = fields.Boolean(
        "Verify TLS Certificate",
        help="Refuse servers whose HTTPS certificate cannot be verified.")
    ca_bundle = fields.Char(
        "CA Bundle", states={'invisible': ~Eval('verify_tls')},
        help="Path on the Tryton server of the certificate authorities "
        "to trust, when the server's certificate is not signed by a "
        "public authority.")

    @staticmethod
    def default_verify_tls():
        return True


class OrthancServer(DomainAccessMixin, ReadonlyFieldsMixin, AuditMixin,
        ConnectionMixin, ModelSQL, ModelView):
    "Orthanc Server"
    __name__ = 'gnuhealth.orthanc.config'
    _rec_name = 'label'

    password = fields.Function(fields.Char(
            "Password", strip=False,
            help="Kept on the server and never shown again: the field "
            "shows stars once a password is kept. Type a new one to "
            "replace it. Empty when the password is given in trytond's "
            "configuration."),
        'get_password', setter='set_password')
    password_configured = fields.Function(fields.Boolean(
            "Password in Configuration",
            help="The password of this server is given in the Tryton "
            "server's configuration file (section "
            "[health_orthanc_passwords], by label), not in the database."),
        'get_password_configured')

    validated = fields.Boolean(
        "Validated", readonly=True,
        help="GNU Health reached the server with these credentials.")
    last = fields.Integer(
        "Change Cursor", readonly=True,
        help="The last change of the Orthanc change log already imported; "
        "empty until the first import.")
    import_cursor = fields.Integer(
        "Import Cursor", readonly=True,
        help="The change cursor at which the first import in progress "
        "started: it becomes the change cursor when the import ends.")
    import_phase = fields.Selection([
            (None, ''),
            ('patients', "Patients"),
            ('studies', "Studies"),
            ('series', "Series"),
            ], "Import Phase", readonly=True,
        states={'invisible': ~Eval('import_phase')},
        help="The list that the first import in progress reached; "
        "an interrupted import continues there.")
    import_offset = fields.Integer(
        "Import Offset", readonly=True,
        states={'invisible': ~Eval('import_phase')},
        help="The number of items of that list already imported.")
    sync_time = fields.DateTime("Last Sync", readonly=True)
    since_sync = fields.Function(
        fields.TimeDelta("Since Last Sync"), 'get_since_sync')
    last_error = fields.Text("Last Error", readonly=True)
    last_error_time = fields.DateTime("Last Error Time", readonly=True)
    publish_worklists = fields.Boolean(
        "Publish Worklists",
        help="Publish the requested imaging tests on this server as DICOM "
        "Modality Worklist entries, for the modalities to query.")
    worklist_folder = fields.Char(
        "Worklist Folder", states={'invisible': ~Eval('publish_worklists')},
        help="The folder served by Orthanc's ModalityWorklists plugin "
        "(its Worklists > Database setting): GNU Health writes the entries "
        "there, so it must be on a disk shared by the Tryton server and "
        "Orthanc. Empty: the worklists REST API of Orthanc 1.12.10 or "
        "later is used.")
    worklist_station_aet = fields.Char(
        "Scheduled Station AE Title", size=16,
        states={'invisible': ~Eval('publish_worklists')},
        help="The AE title of the modality that performs the tests, "
        "written in each entry; empty for any modality.")
    worklist_modalities = fields.Char(
        "Worklist Modalities",
        states={'invisible': ~Eval('publish_worklists')},
        help="The DICOM modality codes of the tests published on this "
        "server, separated by spaces (e.g. \"CT MR\"); empty for every "
        "modality. A server listing the modality is preferred to one "
        "taking every modality.")
    patients = fields.One2Many(
        'gnuhealth.orthanc.patient', 'server', "Patients", readonly=True)
    studies = fields.One2Many(
        'gnuhealth.orthanc.study', 'server', "Studies", readonly=True)
    patient_count = fields.Function(
        fields.Integer("Patients"), 'get_counts')
    study_count = fields.Function(fields.Integer("Studies"), 'get_counts')
    explorer_url = fields.Function(
        fields.Char("Orthanc Explorer"), 'get_explorer_url')
    public_url = fields.Char(
        "Public URL",
        help="The base URL of Orthanc that the users' browsers reach, "
        "when it differs from the domain (e.g. a reverse proxy); "
        "the viewer links are built on it.")
    plugins = fields.Char(
        "Plugins", readonly=True,
        help="The plugins Orthanc runs, read when the connection is "
        "checked; the viewer links of the missing ones are hidden.")
    research = fields.Boolean(
        "Research Server",
        help="An Orthanc that receives de-identified research copies: "
        "never synchronized, never linked to patients.")
    dicom_aet = fields.Char(
        "Our AE Title", readonly=True,
        help="The DICOM AE title of this Orthanc, read when the connection "
        "is checked. A PACS sends retrieved studies only to the AE titles "
        "it knows: its administrator must declare this one, with the host "
        "of this Orthanc and its DICOM port.")
    dicom_port = fields.Integer(
        "Our DICOM Port", readonly=True,
        help="The DICOM port of this Orthanc, to declare on the PACS with "
        "its AE title.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('label_uniq', Unique(t, t.label),
                'health_orthanc.msg_server_label_unique'),
            ]
        cls._buttons.update({
                'do_sync': {
                    'icon': 'tryton-refresh',
                    },
                'check_servers': {
                    'icon': 'tryton-ok',
                    },
                'do_reconcile': {
                    'icon': 'tryton-search',
                    },
                })

    @classmethod
    def __register__(cls, module_name):
        exist = backend.TableHandler.table_exist(cls._table)
        # GNU Health's own health_orthanc has the same table
        legacy_table = exist and not cls.__table_handler__(
            module_name).column_exist('import_phase')
        super().__register__(module_name)
        table_h = cls.__table_handler__(module_name)
        # Kept out of the fields: no domain, order or read reaches it
        table_h.add_column('password', cls.password._field._sql_type)
        # The claim of a sync on SQLite (see _claim): internal
        table_h.add_column('sync_claim', fields.DateTime._sql_type)
        if legacy_table:
            legacy.migrate_servers(cls.__table__())
        upgrade.detach_legacy_records(
            module_name, {'res.user': {'user_orthanc'}})

    @staticmethod
    def default_validated():
        return False

    @staticmethod
    def default_research():
        return False

    @classmethod
    def get_password(cls, servers, name):
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        kept = set()
        for sub_ids in grouped_slice([s.id for s in servers]):
            cursor.execute(*table.select(table.id,
                    where=table.id.in_(list(sub_ids))
                    & (table.password != Null) & (table.password != '')))
            kept.update(i for i, in cursor)
        return {s.id: PASSWORD_MASK if s.id in kept else None
            for s in servers}

    @classmethod
    def set_password(cls, servers, name, value):
        if value == PASSWORD_MASK:
            return
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        for sub_ids in grouped_slice([s.id for s in servers]):
            cursor.execute(*table.update([table.password], [value or None],
                    where=table.id.in_(list(sub_ids))))

    @classmethod
    def _forget_password_elsewhere(cls, servers, values):
        """Return the write arguments of values for the servers: a server
        whose domain changes forgets its password unless a new one is
        given, so that a kept password never goes to another host"""
        if 'domain' not in values or 'password' in values:
            return [servers, values]
        moved = [s for s in servers if s.domain != values['domain']]
        kept = [s for s in servers if s not in moved]
        args = []
        if kept:
            args.extend((kept, values))
        if moved:
            args.extend((moved, dict(values, password=None)))
        return args

    def get_password_configured(self, name):
        return self.configured_password() is not None

    def configured_password(self):
        """Return the password that trytond's configuration gives for the
        label of this server and its domain, or None.

        The value is the domain, a space and the password: the password is
        never sent to a server of another domain, whatever its label.
        """
        if not self.label:
            return None
        value = config.get(PASSWORD_SECTION, self.label.strip(), default=None)
        if not value:
            return None
        domain, _, password = value.strip().partition(' ')
        try:
            domain = oc.normalize_domain(domain)
        except ValueError:
            domain = None
        if domain != self.domain or not password.strip():
            logger.warning("Orthanc server %s: the password of the "
                "configuration is for %s, not for %s: not used",
                self.label, domain, self.domain)
            return None
        return password.strip()

    def secret(self):
        "Return the password to send to Orthanc"
        configured = self.configured_password()
        if configured is not None:
            return configured
        if self.id is None or self.id < 0:
            # Not saved yet (the Add Orthanc Server wizard checks it)
            return self.password
        table = self.__table__()
        cursor = Transaction().connection.cursor()
        cursor.execute(*table.select(table.password,
                where=table.id == self.id))
        row = cursor.fetchone()
        return row[0] if row else None

    @classmethod
    def domain_password(cls, domain, tables):
        # A client is told; anywhere else (nested under another model, or
        # Tryton's own checks) the condition holds for no server
        if '_request' in Transaction().context:
            raise AccessError(
                gettext('health_orthanc.msg_server_password_search'))
        return Literal(False)

    @classmethod
    def order_password(cls, tables):
        if '_request' in Transaction().context:
            raise AccessError(
                gettext('health_orthanc.msg_server_password_search'))
        return []

    @classmethod
    def _domain_admin_field(cls, domain, tables):
        "The domain of a field only Orthanc administrators read"
        name = domain[0].split('.', 1)[0]
        check_field_search(cls, name)
        field = cls._fields[name]
        return fields.Field.convert_domain.__wrapped__(
            field, domain, tables, cls)

    domain_user = domain_worklist_folder = domain_ca_bundle = \
        _domain_admin_field

    def get_since_sync(self, name):
        if self.sync_time:
            elapsed = datetime.datetime.now() - self.sync_time
            return datetime.timedelta(seconds=int(elapsed.total_seconds()))

    @classmethod
    def get_counts(cls, servers, names):
        pool = Pool()
        result = {n: {s.id: 0 for s in servers} for n in names}
        cursor = Transaction().connection.cursor()
        for name, model in [
                ('patient_count', 'gnuhealth.orthanc.patient'),
                ('study_count', 'gnuhealth.orthanc.study')]:
            if name not in names:
                continue
            table = pool.get(model).__table__()
            for sub_ids in grouped_slice([s.id for s in servers]):
                cursor.execute(*table.select(
                        table.server, Count(Literal('*')),
                        where=table.server.in_(list(sub_ids)),
                        group_by=[table.server]))
                result[name].update(cursor)
        return result

    def get_explorer_url(self, name):
        return explorer_url(self.base_url)

    @property
    def base_url(self):
        "The URL of Orthanc for the browsers: the public URL or the domain"
        return self.public_url or self.domain

    @classmethod
    def _normalize(cls, values):
        for name in ['domain', 'public_url']:
            if not values.get(name):
                continue
            try:
                values[name] = oc.normalize_domain(values[name])
            except ValueError as exception:
                raise OrthancDomainError(gettext(
                        'health_orthanc.msg_server_domain_invalid',
                        domain=values[name],
                        reason=str(exception))) from exception
        if 'public_url' in values and not values['public_url']:
            values['public_url'] = None
        return values

    @classmethod
    def create(cls, vlist):
        vlist = [cls._normalize(v.copy()) for v in vlist]
        servers = super().create(vlist)
        cls._check_research(servers)
        Pool().get('gnuhealth.orthanc.audit').servers_created(servers)
        to_check = [s for s in servers if not s.validated]
        if to_check:
            # The scheduled sync takes validated servers only
            with server_queue():
                cls.__queue__.check_servers(to_check)
        return servers

    @classmethod
    def write(cls, *args):
        actions = iter(args)
        args, to_check = [], []
        for servers, values in zip(actions, actions):
            values = cls._normalize(values.copy())
            if CONNECTION_FIELDS.intersection(values):
                values['validated'] = False
                to_check.extend(servers)
            args.extend(cls._forget_password_elsewhere(servers, values))
        Audit = Pool().get('gnuhealth.orthanc.audit')
        before = Audit.servers_before(args)
        super().write(*args)
        checked = []
        for servers, values in zip(args[::2], args[1::2]):
            if {'research', 'publish_worklists'} & set(values):
                checked.extend(servers)
        cls._check_research(checked)
        Audit.servers_changed(before)
        if to_check:
            # Reach the server after the commit, in a worker if any
            with server_queue():
                cls.__queue__.check_servers(to_check)

    @classmethod
    def _check_research(cls, servers):
        """Refuse a research server that publishes worklists or holds
        synchronized patients, and a project's server not research"""
        pool = Pool()
        Patient = pool.get('gnuhealth.orthanc.patient')
        Project = pool.get('gnuhealth.imaging.research.project')
        research = [s for s in servers if s.research]
        for server in research:
            if server.publish_worklists:
                raise OrthancDomainError(gettext(
                        'health_orthanc.msg_server_research_worklists',
                        server=server.rec_name))
        with without_check_access():
            if research and Patient.search(
                    [('server', 'in', [s.id for s in research])], limit=1):
                raise OrthancDomainError(gettext(
                        'health_orthanc.msg_server_research_synced'))
            others = [s.id for s in servers if not s.research]
            projects = others and Project.search(
                [('research_server', 'in', others)], limit=1)
        if projects:
            raise OrthancDomainError(gettext(
                    'health_orthanc.msg_server_research_used',
                    server=projects[0].research_server.rec_name,
                    project=projects[0].rec_name))

    @classmethod
    def delete(cls, servers):
        "Refuse to delete a server that still holds worklist entries"
        Request = Pool().get('gnuhealth.imaging.test.request')
        for sub_servers in grouped_slice(servers):
            # An Orthanc administrator may read no request
            with without_check_access():
                requests = Request.search([
                        ('worklist_server', 'in',
                            [s.id for s in sub_servers]),
                        ('worklist_state', 'in', list(ENTRY_STATES)),
                        ], limit=1)
                names = [(r.worklist_server.label, r.rec_name)
                    for r in requests]
            if names:
                (server, request), = names
                raise OrthancWorklistError(gettext(
                        'health_orthanc.msg_worklist_delete_server',
                        server=server, request=request))
        Pool().get('gnuhealth.orthanc.audit').servers_deleted(servers)
        super().delete(servers)

    @classmethod
    def copy(cls, servers, default=None):
        default = default.copy() if default is not None else {}
        for name in ['validated', 'last', 'sync_time', 'last_error',
                'last_error_time', 'patients', 'studies', 'plugins',
                'dicom_aet', 'dicom_port']:
            default.setdefault(name)
        for name in ['import_cursor', 'import_phase', 'import_offset']:
            default.setdefault(name)
        default['label'] = lambda data: data['label'] + ' (copy)'
        return super().copy(servers, default=default)

    def get_client(self, **kwargs):
        "Return an Orthanc client for this server"
        verify = self.verify_tls
        if verify and self.ca_bundle:
            verify = self.ca_bundle
        return oc.OrthancClient(
            self.domain, self.user, self.secret(), verify=verify, **kwargs)

    @classmethod
    @ModelView.button
    def check_servers(cls, servers):
        "Check that each server answers with its credentials"
        DicomNode = Pool().get('gnuhealth.orthanc.dicom_node')
        for server in servers:
            try:
                with server.get_client() as client:
                    system = client.check()
                    plugins = format_plugins(client.plugins())
            except oc.OrthancError as exception:
                server._record_error(exception, validated=False)
            else:
                with without_check_access():
                    cls.write([server], dict(dicom_values(system),
                            validated=True,
                            plugins=plugins,
                            last_error=None,
                            last_error_time=None))
                DicomNode.read_from_orthanc(server)

    def log_error(self, exception):
        "Log an Orthanc error of the server, return its user message"
        logger.warning(
            "Orthanc server %s (%s): %s", self.label, self.domain, exception)
        return error_message(exception, self.domain)

    def _record_error(self, exception, **values):
        message = self.log_error(exception)
        values.update({
                'last_error': message,
                'last_error_time': datetime.datetime.now(),
                })
        if isinstance(exception, oc.OrthancUnauthorized):
            values['validated'] = False
        with without_check_access():
            self.write([self], values)
        return message

    def _record_item_errors(self, errors, time):
        "Record and log the items a sync or a reconciliation skipped"
        with without_check_access():
            self.write([self], {
                    'last_error': gettext(
                        'health_orthanc.msg_sync_item_errors',
                        count=len(errors),
                        errors='\n'.join('%s: %s' % e for e in errors[:20])),
                    'last_error_time': time,
                    })
        for key, reason in errors:
            logger.warning("Orthanc server %s: skipped %s: %s",
                self.label, key, reason)

    @classmethod
    def sync(cls, servers=None):
        """Queue a sync of each server (default: the validated ones).

        The method of the scheduled action; a failing server never stops
        the others.
        """
        cls._queue_each('sync_now', servers)

    @classmethod
    @ModelView.button
    def do_sync(cls, servers):
        cls.sync(servers)

    @classmethod
    def reconcile(cls, servers=None):
        """Queue a reconciliation of each server (default: the validated
        ones): flag the patients and studies deleted from Orthanc.

        The method of the daily scheduled action and of the Check
        Deletions button; Orthanc's change log never reports deletions.
        Nothing is deleted in GNU Health: a result keeps its studies.
        """
        cls._queue_each('reconcile_now', servers)

    @classmethod
    @ModelView.button
    def do_reconcile(cls, servers):
        cls.reconcile(servers)

    @classmethod
    def _queue_each(cls, method, servers=None):
        "Queue method for each server (default: the validated ones)"
        if servers is None:
            servers = cls.search([('validated', '=', True)])
        with server_queue():
            for server in servers:
                if not server.research:
                    getattr(cls.__queue__, method)([server])

    @classmethod
    def sync_now(cls, servers):
        """Synchronize each server now; return {server id: SyncResult}, the
        result None when the sync did not run or failed (see Last Error)"""
        results = {}
        for server in servers:
            if server.research:
                # Never read into clinical records
                results[server.id] = None
                continue
            with server._sync_lock() as locked:
                if locked:
                    result = server._synchronize()
                else:
                    logger.info(
                        "Orthanc server %s: already syncing", server.label)
                    result = None
                if result is not None:
                    server._end_sync(result)
            results[server.id] = result
        return results

    @classmethod
    def reconcile_now(cls, servers):
        """Reconcile each server now: import what GNU Health lacks and
        flag what Orthanc lost; return {server id: studies flagged}, None
        when the reconciliation did not run or failed"""
        results = {}
        for server in servers:
            if server.research:
                results[server.id] = None
                continue
            with server._sync_lock() as locked:
                if locked:
                    result = server._reconcile()
                else:
                    logger.info("Orthanc server %s: syncing, not reconciled",
                        server.label)
                    result = None
                if result is not None:
                    result = server._mark_missing(result.present)
            results[server.id] = result
        return results

    @contextmanager
    def _sync_lock(self):
        """Hold the server's sync lock in the block; give False when another
        sync or reconciliation of the server holds it.

        Where the database has row locks, the server's row (see _lock),
        released at each page commit and taken again by ServerStore.commit.
        SQLite serializes the writers but a sync commits each page: a lock
        of the process, keyed by database and server, and a claim written
        in the server's row for the other processes (trytond and
        trytond-cron share the file), are held to the end.
        """
        transaction = Transaction()
        if transaction.database.has_select_for():
            yield self._lock()
            return
        lock = _process_lock(transaction.database.name, self.id)
        if not lock.acquire(blocking=False):
            yield False
            return
        try:
            claimed = self._claim()
            try:
                yield claimed
            finally:
                if claimed:
                    self._claim(release=True)
        finally:
            lock.release()

    def _claim(self, release=False):
        """Claim the server's syncs for this one on SQLite, or release
        the claim; return False when another process claimed it less than
        CLAIM_STALE ago (a claim older is of a process that died).

        The claim is committed at once: SQLite lets one writer at a time,
        so the process that claims second waits, then sees the claim.
        """
        transaction = Transaction()
        table = self.__table__()
        cursor = transaction.connection.cursor()
        now = datetime.datetime.now()
        if release:
            cursor.execute(*table.update([table.sync_claim], [None],
                    where=table.id == self.id))
        else:
            cursor.execute(*table.update([table.sync_claim], [now],
                    where=(table.id == self.id)
                    & ((table.sync_claim == Null)
                        | (table.sync_claim < now - CLAIM_STALE))))
            if cursor.rowcount != 1:
                return False
        if transaction.context.get('_orthanc_page_commit', True):
            transaction.commit()
        return True

    def _lock(self):
        """Take the server's row lock without waiting; False if another
        sync holds it (True on SQLite, see _sync_lock).

        Not ModelSQL.lock: it restarts the transaction to wait for the row
        where a sync must skip, and cannot be taken again between the
        pages that the sync commits.
        """
        transaction = Transaction()
        table = self.__table__()
        cursor = transaction.connection.cursor()
        if not transaction.database.has_select_for():
            # Renew the claim (see _claim) with the page
            cursor.execute(*table.update(
                    [table.sync_claim], [datetime.datetime.now()],
                    where=table.id == self.id))
            return True
        cursor.execute('SAVEPOINT orthanc_lock')
        try:
            cursor.execute(*table.select(table.id,
                    where=table.id == self.id,
                    for_=For('UPDATE', nowait=True)))
        except backend.DatabaseOperationalError:
            cursor.execute('ROLLBACK TO SAVEPOINT orthanc_lock')
            return False
        cursor.execute('RELEASE SAVEPOINT orthanc_lock')
        return True

    def _import_progress(self):
        "Return the progress of an interrupted first import, if any"
        if (self.last is None and self.import_phase
                and self.import_cursor is not None):
            return ImportProgress(self.import_cursor, self.import_phase,
                self.import_offset or 0)

    def _synchronize(self):
        "Run the sync of the server; return its SyncResult, None on failure"
        try:
            with self.get_client() as client:
                return Synchronizer(client, ServerStore(self)).run(
                    self.last, self._import_progress())
        except SyncTakenOver:
            logger.info(
                "Orthanc server %s: another sync took over", self.label)
        except oc.OrthancError as exception:
            self._record_error(exception)
        except Exception as exception:
            logger.exception("Orthanc server %s: sync failed", self.label)
            Transaction().rollback()
            self._record_error(oc.OrthancError(str(exception)))

    def _end_sync(self, result):
        "Link the patients, record the outcome of a sync that went through"
        Patient = Pool().get('gnuhealth.orthanc.patient')
        # Links may also come from patients registered since the last sync;
        # the margin covers transactions still open when it ran
        since = (self.sync_time - LINK_MARGIN) if self.sync_time else None
        Patient.link_server_patients(self, since=since)
        now = datetime.datetime.now()
        with without_check_access():
            self.write([self], {
                    'sync_time': now,
                    'validated': True,
                    'last_error': None,
                    'last_error_time': None,
                    })
        if result.errors:
            self._record_item_errors(result.errors, now)
        if result.full:
            # What a replaced Orthanc database lost, from the lists of IDs
            # that the import ends with
            self._mark_missing(result.present)
        logger.info(
            "Orthanc server %s: %s sync, %s patients, %s studies, "
            "%s series, %s requests, cursor %s", self.label,
            'full' if result.full else 'incremental', result.patients,
            result.studies, result.series, result.requests, result.cursor)

    def _reconcile(self):
        """Import what GNU Health lacks; return the SyncResult with the IDs
        present in Orthanc, None on failure"""
        try:
            with self.get_client() as client:
                if self.last is None:
                    # The first import ends with the same import
                    return SyncResult(present={
                            k: client.list_ids(k)
                            for k in ['patients', 'studies']})
                result = Synchronizer(client, ServerStore(self)).reconcile()
        except SyncTakenOver:
            logger.info(
                "Orthanc server %s: a sync took over", self.label)
            return None
        except oc.OrthancError as exception:
            self._record_error(exception)
            return None
        if result.errors:
            self._record_item_errors(result.errors, datetime.datetime.now())
        if result.studies or result.patients:
            logger.info("Orthanc server %s: imported %s patients, "
                "%s studies, %s series missing in GNU Health", self.label,
                result.patients, result.studies, result.series)
        return result

    def _mark_missing(self, present):
        "Flag the patients and studies not in present; return the studies"
        pool = Pool()
        Patient = pool.get('gnuhealth.orthanc.patient')
        Study = pool.get('gnuhealth.orthanc.study')
        Patient.mark_missing(self, present['patients'])
        flagged = Study.mark_missing(self, present['studies'])
        logger.info("Orthanc server %s: %s studies missing",
            self.label, flagged)
        return flagged


class AddServerStart(ConnectionMixin, ModelView):
    "Add Orthanc Server"
    __name__ = 'gnuhealth.orthanc.add_server.start'

    password = fields.Char("Password", strip=False)
    research = fields.Boolean(
        "Research Server",
        help="It receives de-identified research copies: it is never "
        "synchronized.")


class AddServerResult(ModelView):
    "Add Orthanc Server Result"
    __name__ = 'gnuhealth.orthanc.add_server.result'

    message = fields.Text("Message", readonly=True)
    server = fields.Many2One(
        'gnuhealth.orthanc.config', "Server", readonly=True,
        help="Open the server to follow its first import.")


class AddServer(Wizard):
    "Add Orthanc Server"
    __name__ = 'gnuhealth.orthanc.add_server'

    start = StateView(
        'gnuhealth.orthanc.add_server.start',
        'health_orthanc.add_server_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel'),
            Button("Begin", 'connect', 'tryton-ok', default=True),
            ])
    connect = StateTransition()
    failed = StateView(
        'gnuhealth.orthanc.add_server.result',
        'health_orthanc.add_server_failed_view_form', [
            Button("Close", 'end', 'tryton-close'),
            Button("Back", 'start', 'tryton-back', default=True),
            ])
    succeeded = StateView(
        'gnuhealth.orthanc.add_server.result',
        'health_orthanc.add_server_succeeded_view_form', [
            Button("Close", 'end', 'tryton-close', default=True),
            ])

    def default_start(self, fields):
        if getattr(self.start, 'label', None):
            return {
                'label': self.start.label,
                'domain': self.start.domain,
                'user': self.start.user,
                'verify_tls': self.start.verify_tls,
                'ca_bundle': self.start.ca_bundle,
                'research': getattr(self.start, 'research', False),
                }
        return {}

    def transition_connect(self):
        Server = Pool().get('gnuhealth.orthanc.config')
        server, error = self._check_server()
        if error:
            self.failed.message = error
            return 'failed'
        server.validated = True
        server.save()
        # The first import runs in its own task, after the commit
        Server.sync([server])
        self.succeeded.server = server
        self.succeeded.message = gettext(
            'health_orthanc.msg_add_server_%s' % (
                'research' if server.research else 'started'),
            label=server.label)
        return 'succeeded'

    def _check_server(self):
        """Return the new server (not saved) once it answered with its
        credentials, or None and the message that says why not"""
        Server = Pool().get('gnuhealth.orthanc.config')
        try:
            domain = oc.normalize_domain(self.start.domain)
        except ValueError as exception:
            return None, gettext(
                'health_orthanc.msg_server_domain_invalid',
                domain=self.start.domain, reason=str(exception))
        label = self.start.label.strip()
        if Server.search([('label', '=', label)]):
            return None, gettext(
                'health_orthanc.msg_server_label_exists', label=label)
        server = Server(
            label=label, domain=domain, user=self.start.user,
            password=self.start.password,
            verify_tls=bool(self.start.verify_tls),
            ca_bundle=self.start.ca_bundle,
            research=bool(getattr(self.start, 'research', False)))
        try:
            with server.get_client() as client:
                system = client.check()
                server.plugins = format_plugins(client.plugins())
        except oc.OrthancError as exception:
            return None, error_message(exception, domain)
        for name, value in dicom_values(system).items():
            setattr(server, name, value)
        return server, None

    def default_failed(self, fields):
        return {'message': self.failed.message}

    def default_succeeded(self, fields):
        return {
            'message': self.succeeded.message,
            'server': self.succeeded.server.id,
            }
