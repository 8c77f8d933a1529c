# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"The sync's store: writes the pages of a sync of a server (see sync.Store)."
from trytond.pool import Pool
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access


class SyncTakenOver(Exception):
    "Another sync of the same server holds its lock"


STORE_MODELS = {
    'patients': 'gnuhealth.orthanc.patient',
    'studies': 'gnuhealth.orthanc.study',
    'series': 'gnuhealth.orthanc.series',
    }
#: Created with the pages too: forgotten at each commit as well
PAGE_MODELS = list(STORE_MODELS.values()) + [
    'gnuhealth.orthanc.dose', 'gnuhealth.orthanc.dose.event',
    'gnuhealth.orthanc.dose.value']


class ServerStore:
    "Writes the pages of a sync into the database (see sync.Store)"

    def __init__(self, server):
        self.server = server

    def save(self, patients=(), studies=(), series=(), replace_series_of=(),
            cursor=None, progress=None, doses=()):
        pool = Pool()
        Patient = pool.get('gnuhealth.orthanc.patient')
        Study = pool.get('gnuhealth.orthanc.study')
        Series = pool.get('gnuhealth.orthanc.series')
        Server = pool.get('gnuhealth.orthanc.config')
        if patients:
            Patient.upsert(self.server, patients)
        if studies:
            Study.upsert(self.server, studies)
        if series or replace_series_of:
            Series.upsert(self.server, series, replace_series_of)
        errors = []
        if doses:
            errors = pool.get('gnuhealth.orthanc.dose').store_reports(
                self.server, doses)
        state = self._state(cursor, progress)
        if state:
            with without_check_access():
                Server.write([self.server], state)
        self.commit()
        return errors

    @staticmethod
    def _state(cursor, progress):
        "Return the values of the server for the cursor or the progress"
        if cursor is not None:
            return {
                'last': cursor,
                'import_cursor': None,
                'import_phase': None,
                'import_offset': None,
                }
        if progress is not None:
            # The cursor stays empty until the import ends
            return {
                'last': None,
                'import_cursor': progress.cursor,
                'import_phase': progress.phase,
                'import_offset': progress.offset,
                }

    def missing_patients(self, orthanc_ids):
        Patient = Pool().get('gnuhealth.orthanc.patient')
        return set(orthanc_ids) - set(
            Patient.orthanc_ids(self.server, orthanc_ids))

    def missing_ids(self, kind, orthanc_ids):
        """Compare a slice of IDs at a time, through the index on the
        Orthanc ID: memory holds one slice of the stored IDs"""
        Model = Pool().get(STORE_MODELS[kind])
        table = Model.__table__()
        cursor = Transaction().connection.cursor()
        missing = set()
        for sub_ids in grouped_slice(orthanc_ids):
            sub_ids = set(sub_ids)
            cursor.execute(*table.select(table.orthanc_id,
                    where=(table.server == self.server.id)
                    & table.orthanc_id.in_(list(sub_ids))))
            sub_ids.difference_update(r for r, in cursor)
            missing.update(sub_ids)
        if kind == 'series' and missing:
            # The sync leaves out the report series stored by GNU Health
            missing -= Pool().get('gnuhealth.orthanc.study.report'
                ).report_series(self.server, missing)
        return missing

    def dose_instances(self, orthanc_ids):
        return Pool().get('gnuhealth.orthanc.dose').instances_read(
            self.server, orthanc_ids)

    def series_studies(self, orthanc_ids):
        pool = Pool()
        series = pool.get('gnuhealth.orthanc.series').__table__()
        study = pool.get('gnuhealth.orthanc.study').__table__()
        cursor = Transaction().connection.cursor()
        result = {}
        for sub_ids in grouped_slice(list(orthanc_ids)):
            cursor.execute(*series.join(study,
                    condition=series.study == study.id
                    ).select(series.orthanc_id, study.orthanc_id,
                    where=(series.server == self.server.id)
                    & series.orthanc_id.in_(list(sub_ids))))
            result.update(cursor)
        return result

    def commit(self):
        """Make the page durable, then take the server's lock again.

        The commit releases the lock: when another sync took it meanwhile,
        this one stops and leaves it the rest, from the committed cursor.
        """
        transaction = Transaction()
        if transaction.context.get('_orthanc_page_commit', True):
            transaction.commit()
            # Tryton remembers the ids created and deleted in the
            # transaction until its end; once committed they are like any
            # other: forgotten, so that memory stays flat over the pages
            for name in PAGE_MODELS:
                transaction.create_records.pop(name, None)
                transaction.delete_records.pop(name, None)
            if not self.server._lock():
                raise SyncTakenOver(self.server.label)
