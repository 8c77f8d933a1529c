# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"What Orthanc patients, studies and series have in common."
import datetime
from collections import defaultdict

from sql import Column
from trytond import backend
from trytond.i18n import gettext
from trytond.model import Index, Unique, fields
from trytond.model.exceptions import SQLConstraintError
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access

from trytond.modules.health_imaging.access import (
    DomainAccessMixin, ReadonlyFieldsMixin)

VIEWER_FIELDS = {
    'explorer_url': 'explorer',
    'web_viewer_url': 'web_viewer',
    'stone_url': 'stone',
    'ohif_url': 'ohif',
    }


def viewer_field(name, string, help):
    "A function field of a viewer URL, hidden when the server has none"
    return fields.Function(fields.Char(
            string, help=help, states={'invisible': ~Eval(name)}),
        'get_viewer_urls')


class OrthancResourceMixin(DomainAccessMixin, ReadonlyFieldsMixin):
    "A copy of an Orthanc resource, identified by its server and Orthanc ID"
    __slots__ = ()

    server = fields.Many2One(
        'gnuhealth.orthanc.config', "Server", required=True, readonly=True,
        ondelete='CASCADE')
    orthanc_id = fields.Char("Orthanc ID", required=True, readonly=True)
    last_update = fields.DateTime("Last Update in Orthanc", readonly=True)
    missing = fields.Boolean(
        "Missing on Server", readonly=True,
        help="Deleted from Orthanc: GNU Health keeps the record, "
        "the images are gone.")
    missing_since = fields.DateTime("Missing Since", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        if backend.name == 'sqlite':
            # SQLite has no such constraint and Tryton's check of it in
            # Python reads the whole table at each create and write: it is
            # checked by validate through this index, which also serves
            # the lookups by Orthanc ID (elsewhere the unique index does)
            cls._sql_indexes.add(Index(t,
                    (t.server, Index.Equality()),
                    (t.orthanc_id, Index.Equality())))
        else:
            cls._sql_constraints += [
                ('server_orthanc_id_uniq', Unique(t, t.server, t.orthanc_id),
                    'health_orthanc.msg_resource_unique'),
                ]

    @classmethod
    def validate_fields(cls, records, field_names):
        super().validate_fields(records, field_names)
        # Only when they change: the sync writes the other fields of
        # thousands of records
        if backend.name == 'sqlite' and (field_names is None
                or field_names & {'server', 'orthanc_id'}):
            cls._check_orthanc_id_unique(records)

    @classmethod
    def _check_orthanc_id_unique(cls, records):
        "Raise when another record has the server and Orthanc ID of one"
        table, other = cls.__table__(), cls.__table__()
        cursor = Transaction().connection.cursor()
        for sub_ids in grouped_slice([r.id for r in records]):
            cursor.execute(*table.join(other, condition=(
                        (other.server == table.server)
                        & (other.orthanc_id == table.orthanc_id)
                        & (other.id != table.id))
                    ).select(table.id,
                    where=table.id.in_(list(sub_ids)), limit=1))
            if cursor.fetchone():
                raise SQLConstraintError(
                    gettext('health_orthanc.msg_resource_unique'))

    @staticmethod
    def default_missing():
        return False

    @classmethod
    def mark_missing(cls, server, present, page_size=1000):
        """Flag the records whose Orthanc ID is not in present, and clear
        the flag of those back; return the number newly flagged

        The stored records are read a page at a time."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        if not isinstance(present, (set, frozenset)):
            present = set(present)
        gone, back = [], []
        last = 0
        while True:
            cursor.execute(*table.select(
                    table.id, table.orthanc_id, table.missing,
                    where=(table.server == server.id) & (table.id > last),
                    order_by=[table.id.asc], limit=page_size))
            rows = cursor.fetchall()
            for id_, orthanc_id, missing in rows:
                if orthanc_id in present:
                    if missing:
                        back.append(id_)
                elif not missing:
                    gone.append(id_)
            if len(rows) < page_size:
                break
            last = rows[-1][0]
        to_write = []
        if gone:
            to_write.extend((cls.browse(gone), {
                        'missing': True,
                        'missing_since': datetime.datetime.now(),
                        }))
        if back:
            to_write.extend((cls.browse(back),
                    {'missing': False, 'missing_since': None}))
        if to_write:
            with without_check_access():
                cls.write(*to_write)
        return len(gone)

    @classmethod
    def orthanc_ids(cls, server, orthanc_ids):
        "Return {Orthanc ID: record id} for those the server already has"
        return {k: id_ for k, (id_, _) in cls._orthanc_stored(
                server, orthanc_ids, []).items()}

    @classmethod
    def _orthanc_values(cls, server, record, context):
        "Return the values to store for a mapped Orthanc record"
        raise NotImplementedError

    @classmethod
    def _orthanc_new_values(cls, vlist):
        "Complete in place the values of the records to create"
        pass

    #: (parent model, key of its Orthanc ID in the mapped records)
    _orthanc_parent = None

    @classmethod
    def _orthanc_context(cls, server, records):
        """Return what _orthanc_values needs, looked up once per batch:
        {parent Orthanc ID: parent record id}"""
        if not cls._orthanc_parent:
            return {}
        model, key = cls._orthanc_parent
        Parent = Pool().get(model)
        return Parent.orthanc_ids(
            server, {r[key] for r in records if r[key]})

    @classmethod
    def upsert(cls, server, records, context=None):
        """Create or update the records of an Orthanc page in one batch.

        The stored values of the existing records are read in the same
        query that finds them: only the records whose values changed are
        written, grouped by the values written, so that an unchanged
        record keeps its write date and a page read again costs one query.
        context is what _orthanc_context returns, when the caller has it.

        Returns the ids of the created and of the changed records.
        """
        records = list({r['orthanc_id']: r for r in records}.values())
        if context is None:
            context = cls._orthanc_context(server, records)
        to_create, new_values = [], {}
        for record in records:
            values = cls._orthanc_values(server, record, context)
            if values is None:
                continue
            # Sent by Orthanc, so present there
            values.update(missing=False, missing_since=None)
            new_values[record['orthanc_id']] = values
        names = sorted({n for v in new_values.values() for n in v})
        stored = cls._orthanc_stored(server, new_values, names)
        changed = defaultdict(list)
        for orthanc_id, values in new_values.items():
            if orthanc_id not in stored:
                values.update(server=server.id, orthanc_id=orthanc_id)
                to_create.append(values)
                continue
            id_, current = stored[orthanc_id]
            diff = tuple((n, values[n]) for n in names
                if n in values and not cls._orthanc_same(
                    n, current[n], values[n]))
            if diff:
                changed[diff].append(cls(id_))
        to_write = []
        for diff, group in changed.items():
            to_write.extend((group, dict(diff)))
        if to_create:
            cls._orthanc_new_values(to_create)
        with without_check_access():
            created = cls.create(to_create) if to_create else []
            if to_write:
                cls.write(*to_write)
        return ([r.id for r in created],
            [r.id for group in changed.values() for r in group])

    @classmethod
    def _orthanc_stored(cls, server, orthanc_ids, names):
        """Return {Orthanc ID: (id, {name: stored value})} of the records
        of server among orthanc_ids, read in one query per slice"""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        columns = [Column(table, n) for n in names]
        result = {}
        for sub_ids in grouped_slice(list(orthanc_ids)):
            cursor.execute(*table.select(table.orthanc_id, table.id, *columns,
                    where=(table.server == server.id)
                    & table.orthanc_id.in_(list(sub_ids))))
            for row in cursor:
                result[row[0]] = (row[1], dict(zip(names, row[2:])))
        return result

    @classmethod
    def _orthanc_same(cls, name, stored, value):
        "Tell if the stored column value is the value to write"
        value = cls._fields[name].sql_format(value)
        if stored is None or value is None:
            return stored is None and value is None
        if isinstance(value, bool):
            return bool(stored) == value
        if isinstance(value, datetime.datetime):
            if isinstance(stored, str):
                stored = datetime.datetime.fromisoformat(stored)
            return stored.replace(microsecond=0) == value
        if isinstance(value, datetime.date):
            if isinstance(stored, str):
                stored = datetime.date.fromisoformat(stored)
            elif isinstance(stored, datetime.datetime):
                stored = stored.date()
            return stored == value
        return stored == value
