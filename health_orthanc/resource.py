# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"What Orthanc patients, studies and series have in common."
import datetime

from trytond.model import Unique, fields
from trytond.pool import Pool
from trytond.tools import grouped_slice
from trytond.transaction import Transaction


class OrthancResourceMixin:
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
        cls._sql_constraints += [
            ('server_orthanc_id_uniq', Unique(t, t.server, t.orthanc_id),
                'health_orthanc.msg_resource_unique'),
            ]

    @staticmethod
    def default_missing():
        return False

    @classmethod
    def mark_missing(cls, server, present):
        """Flag the records whose Orthanc ID is not in present, and clear
        the flag of those back; return the number newly flagged"""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        present = set(present)
        gone, back = [], []
        cursor.execute(*table.select(
                table.id, table.orthanc_id, table.missing,
                where=table.server == server.id))
        for id_, orthanc_id, missing in cursor:
            if orthanc_id in present:
                if missing:
                    back.append(cls(id_))
            elif not missing:
                gone.append(cls(id_))
        to_write = []
        if gone:
            to_write.extend((gone, {
                        'missing': True,
                        'missing_since': datetime.datetime.now(),
                        }))
        if back:
            to_write.extend((back, {'missing': False, 'missing_since': None}))
        if to_write:
            with Transaction().set_context(orthanc_sync=True):
                cls.write(*to_write)
        return len(gone)

    @classmethod
    def orthanc_ids(cls, server, orthanc_ids):
        "Return {Orthanc ID: record id} for those the server already has"
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        result = {}
        for sub_ids in grouped_slice(list(orthanc_ids)):
            cursor.execute(*table.select(table.orthanc_id, table.id,
                    where=(table.server == server.id)
                    & table.orthanc_id.in_(list(sub_ids))))
            result.update(cursor)
        return result

    @classmethod
    def _orthanc_values(cls, server, record, context):
        "Return the values to store for a mapped Orthanc record"
        raise NotImplementedError

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
    def upsert(cls, server, records):
        """Create or update the records of an Orthanc page in one batch.

        Returns the created and the updated record ids.
        """
        records = list({r['orthanc_id']: r for r in records}.values())
        existing = cls.orthanc_ids(server, [r['orthanc_id'] for r in records])
        context = cls._orthanc_context(server, records)
        to_create, to_write = [], []
        for record in records:
            values = cls._orthanc_values(server, record, context)
            if values is None:
                continue
            # Sent by Orthanc, so present there
            values.update(missing=False, missing_since=None)
            id_ = existing.get(record['orthanc_id'])
            if id_ is None:
                values.update(
                    server=server.id, orthanc_id=record['orthanc_id'])
                to_create.append(values)
            else:
                to_write.extend(([cls(id_)], values))
        with Transaction().set_context(orthanc_sync=True):
            created = cls.create(to_create) if to_create else []
            if to_write:
                cls.write(*to_write)
        return [r.id for r in created], [r[0].id for r in to_write[::2]]
