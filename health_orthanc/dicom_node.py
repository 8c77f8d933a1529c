# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""DICOM nodes: the PACS and modalities an Orthanc server talks to.

GNU Health is the keeper of the nodes it declares: Orthanc forgets the
nodes declared through its REST API when it restarts, so they are declared
again whenever Orthanc lacks them or holds other settings.
"""
import datetime
import logging
from collections import defaultdict

from trytond.i18n import gettext
from trytond.model import ModelSQL, ModelView, Unique, fields
from trytond.model.exceptions import AccessError
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.transaction import Transaction, without_check_access

from trytond.modules.health_imaging.access import (
    DomainAccessMixin, ReadonlyFieldsMixin)

from . import dicom_network as dn
from . import orthanc_client as oc
from .exceptions import DicomNodeError, DicomNodeValidationError
from .server import error_message

logger = logging.getLogger(__name__)

ECHO_STATES = [
    (None, ''),
    ('ok', "OK"),
    ('failed', "Failed"),
    ]
#: What Orthanc holds of a node: changing any declares it again
ORTHANC_FIELDS = {
    'name', 'server', 'aet', 'host', 'port', 'manufacturer', 'timeout'}
#: The studies moved by one Orthanc job, when the node caps no lower
RETRIEVE_BATCH = 100


class DicomNode(DomainAccessMixin, ReadonlyFieldsMixin, ModelSQL, ModelView):
    "DICOM Node"
    __name__ = 'gnuhealth.orthanc.dicom_node'

    name = fields.Char(
        "Name", required=True,
        help="The name of the node in Orthanc: letters, digits, \"-\" and "
        "\"_\" only.")
    server = fields.Many2One(
        'gnuhealth.orthanc.config', "Orthanc Server", required=True,
        ondelete='CASCADE',
        help="The Orthanc server that talks to the node and receives the "
        "studies retrieved from it.")
    aet = fields.Char(
        "AE Title", required=True, help="The AE title of the node.")
    host = fields.Char(
        "Host", required=True,
        help="The host name or IP address of the node, as Orthanc "
        "reaches it.")
    port = fields.Integer(
        "Port", required=True, help="The DICOM port of the node.")
    manufacturer = fields.Selection(
        [(m, m) for m in dn.MANUFACTURERS], "Manufacturer", required=True,
        help="How Orthanc adapts its queries to the node; Generic unless "
        "the node needs otherwise.")
    timeout = fields.Integer(
        "Timeout", domain=['OR',
            ('timeout', '=', None), ('timeout', '>', 0)],
        help="Seconds to wait for the node; empty for Orthanc's "
        "DicomScuTimeout (10 s by default).")
    may_query = fields.Boolean(
        "Query", help="Users may search the node's studies (C-FIND).")
    may_retrieve = fields.Boolean(
        "Retrieve",
        help="Users may bring the node's studies into Orthanc (C-MOVE).")
    answer_limit = fields.Integer(
        "Answer Limit", domain=['OR',
            ('answer_limit', '=', None), ('answer_limit', '>', 0)],
        help="The most answers the node sends to one query, when it has "
        "such a limit (many PACS stop at 500): a query that gets as many "
        "is split by dates and sent again.")
    from_orthanc = fields.Boolean(
        "Declared in Orthanc", readonly=True,
        help="The node comes from Orthanc's configuration, not from GNU "
        "Health: change its settings in Orthanc.")
    active = fields.Boolean("Active")
    echo_state = fields.Selection(
        ECHO_STATES, "Status", readonly=True,
        help="The outcome of the last echo (C-ECHO) of the node.")
    echo_time = fields.DateTime("Last Check", readonly=True)
    echo_message = fields.Text(
        "Last Check Result", readonly=True,
        states={'invisible': ~Eval('echo_message')})
    our_aet = fields.Function(fields.Char(
            "Our AE Title",
            help="The AE title of the Orthanc server: the node must know it "
            "with our host and DICOM port to send studies."),
        'get_ours')
    our_port = fields.Function(fields.Integer(
            "Our DICOM Port",
            help="The DICOM port of the Orthanc server, to declare on the "
            "node with our AE title."),
        'get_ours')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('server_name_uniq', Unique(t, t.server, t.name),
                'health_orthanc.msg_dicom_node_unique'),
            ]
        cls._order = [('name', 'ASC'), ('id', 'ASC')]
        cls._buttons.update({
                'echo': {
                    'icon': 'tryton-refresh',
                    },
                })

    @staticmethod
    def default_manufacturer():
        return 'Generic'

    @staticmethod
    def default_may_query():
        return True

    @staticmethod
    def default_may_retrieve():
        return True

    @staticmethod
    def default_active():
        return True

    @staticmethod
    def default_from_orthanc():
        return False

    def get_ours(self, name):
        return getattr(self.server, 'dicom_' + name[len('our_'):], None)

    def as_dicom(self):
        "Return the node as Orthanc declares it"
        return dn.DicomNode(
            name=self.name or '', aet=self.aet or '', host=self.host or '',
            port=self.port or 0, manufacturer=self.manufacturer or '',
            timeout=self.timeout or 0)

    @property
    def batch_size(self):
        "The most studies to move in one job: each is found by one C-FIND"
        return min(self.answer_limit or RETRIEVE_BATCH, RETRIEVE_BATCH)

    @classmethod
    def validate(cls, nodes):
        super().validate(nodes)
        for node in nodes:
            if node.from_orthanc:
                # Orthanc took it: its configuration file is the keeper
                continue
            for _, reason in dn.validate_node(node.as_dicom()):
                raise DicomNodeValidationError(gettext(
                        'health_orthanc.msg_dicom_node_%s' % reason,
                        node=node.name or '',
                        manufacturers=', '.join(dn.MANUFACTURERS)))

    @classmethod
    def create(cls, vlist):
        nodes = super().create(vlist)
        cls._declare([n for n in nodes if not n.from_orthanc])
        return nodes

    @classmethod
    def write(cls, *args):
        actions = iter(args)
        changed, former = [], {}
        for nodes, values in zip(actions, actions):
            if not ORTHANC_FIELDS & set(values):
                continue
            for node in nodes:
                if node.from_orthanc:
                    raise AccessError(gettext(
                            'health_orthanc.msg_dicom_node_from_orthanc',
                            node=node.name))
                former[node.id] = (node.server, node.name)
            changed.extend(nodes)
        super().write(*args)
        if changed:
            changed = cls.browse([n.id for n in changed])
            # Declared first: a refused declaration keeps the former node
            cls._declare(changed)
            # A node renamed or moved leaves its former name behind
            cls._forget([former[n.id] for n in changed
                    if former[n.id] != (n.server, n.name)])

    @classmethod
    def delete(cls, nodes):
        kept = [(n.server, n.name) for n in nodes if not n.from_orthanc]
        super().delete(nodes)
        cls._forget(kept)

    @classmethod
    def copy(cls, nodes, default=None):
        default = default.copy() if default is not None else {}
        for name in ['echo_state', 'echo_time', 'echo_message']:
            default.setdefault(name)
        default.setdefault('from_orthanc', False)
        default.setdefault('name', lambda data: data['name'] + '_copy')
        return super().copy(nodes, default=default)

    @classmethod
    def _by_server(cls, items):
        "Group (server, item) pairs by server"
        grouped = defaultdict(list)
        for server, item in items:
            grouped[server].append(item)
        return grouped.items()

    @classmethod
    def _declare(cls, nodes):
        "Declare the nodes in their Orthanc; raise when one is refused"
        for server, server_nodes in cls._by_server(
                (n.server, n) for n in nodes):
            node = None
            try:
                with server.get_client() as client:
                    for node in server_nodes:
                        client.declare_node(node.as_dicom())
            except oc.OrthancError as error:
                raise DicomNodeError(gettext(
                        'health_orthanc.msg_dicom_node_declare_failed',
                        node=node.name, server=server.rec_name,
                        error=node.error_text(error))) from error

    @classmethod
    def _forget(cls, names):
        "Remove the (server, name) nodes from their Orthanc"
        for server, server_names in cls._by_server(names):
            name = None
            try:
                with server.get_client() as client:
                    for name in server_names:
                        client.delete_node(name)
            except oc.OrthancError as error:
                raise DicomNodeError(gettext(
                        'health_orthanc.msg_dicom_node_remove_failed',
                        node=name, server=server.rec_name,
                        error=error_message(error, server.domain))
                    ) from error

    def ensure_declared(self, client, declared=None):
        """Declare the node again when Orthanc lacks it or holds other
        settings; return whether it was declared.

        declared is Orthanc's list of nodes (read when not given).
        """
        if declared is None:
            declared = client.list_nodes()
        if self.from_orthanc:
            if self.name not in declared:
                raise oc.NodeNotDeclared(self.name, operation='declare')
            return False
        wanted = self.as_dicom()
        if declared.get(self.name) == wanted:
            return False
        client.declare_node(wanted)
        logger.info("DICOM node %s declared again in Orthanc server %s",
            self.name, self.server.label)
        return True

    def error_text(self, error):
        "Return the user message of an error talking to the node"
        if not isinstance(error, oc.DicomNetworkError):
            return error_message(error, self.server.domain)
        return gettext('health_orthanc.msg_dicom_%s' % error.code,
            node=self.name, aet=self.aet, host=self.host, port=self.port,
            server=self.server.rec_name,
            our_aet=self.server.dicom_aet or '?',
            our_port=self.server.dicom_port or '?',
            status='0x%04X' % (error.dimse_status or 0),
            details=error.details or error.message or '')

    # -- echo ----------------------------------------------------------------
    @classmethod
    @ModelView.button
    def echo(cls, nodes):
        "Check that each node answers (C-ECHO); keep the outcome on it"
        cls.check_nodes(nodes)

    @classmethod
    def check_nodes(cls, nodes, timeout=None):
        """Echo the nodes (a query node is also asked whether it takes our
        C-FIND) and write the outcome; return {node: message or None}"""
        results = {}
        for server, server_nodes in cls._by_server(
                (n.server, n) for n in nodes):
            try:
                with server.get_client() as client:
                    declared = client.list_nodes()
                    for node in server_nodes:
                        results[node] = node._echo(client, declared, timeout)
            except oc.OrthancError as error:
                message = error_message(error, server.domain)
                for node in server_nodes:
                    results.setdefault(node, message)
        now = datetime.datetime.now()
        to_write = []
        for node, message in results.items():
            to_write.extend(([node], {
                        'echo_state': 'failed' if message else 'ok',
                        'echo_time': now,
                        'echo_message': message,
                        }))
        if to_write:
            with without_check_access():
                cls.write(*to_write)
        return results

    def _echo(self, client, declared, timeout=None):
        "Echo the node; return the message of the failure, None when OK"
        try:
            self.ensure_declared(client, declared)
            client.echo(self.name, timeout=timeout or self.timeout or None,
                check_find=bool(self.may_query))
        except oc.DicomNetworkError as error:
            logger.info("DICOM node %s: %s", self.name, error)
            return self.error_text(error)

    @classmethod
    def echo_all(cls):
        """Read the nodes of every validated server from Orthanc, then echo
        every active node: the method of the scheduled action"""
        Server = Pool().get('gnuhealth.orthanc.config')
        servers = Server.search([('validated', '=', True)])
        for server in servers:
            cls.read_from_orthanc(server)
        cls.check_nodes(cls.search([
                    ('server', 'in', [s.id for s in servers]),
                    ]))

    @classmethod
    def read_from_orthanc(cls, server):
        """List the nodes that Orthanc knows and GNU Health does not (from
        Orthanc's configuration file), marked as such; deactivate those
        Orthanc no longer lists.  A failure is logged, never raised."""
        try:
            with server.get_client() as client:
                listed = client.list_nodes()
        except oc.OrthancError as error:
            logger.warning("Orthanc server %s: nodes not read: %s",
                server.label, error)
            return
        with without_check_access(), \
                Transaction().set_context(active_test=False):
            known = {n.name: n for n in cls.search([
                        ('server', '=', server.id)])}
            # A modality of the configuration neither answers queries nor
            # sends studies: an administrator allows what the node does
            cls.create([dict(cls._listed_values(node),
                        server=server.id, from_orthanc=True,
                        may_query=False, may_retrieve=False)
                    for name, node in sorted(listed.items())
                    if name not in known])
            ours = [n for n in known.values() if n.from_orthanc]
            gone = [n for n in ours if n.active and n.name not in listed]
            back = [n for n in ours if not n.active and n.name in listed]
            if gone:
                cls.write(gone, {'active': False})
            if back:
                cls.write(back, {'active': True})

    @staticmethod
    def _listed_values(node):
        manufacturer = node.manufacturer
        if manufacturer not in dn.MANUFACTURERS:
            manufacturer = 'Generic'
        return {
            'name': node.name,
            'aet': node.aet,
            'host': node.host,
            'port': node.port,
            'manufacturer': manufacturer,
            'timeout': node.timeout or None,
            }
