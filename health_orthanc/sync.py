# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""How a GNU Health database follows an Orthanc server (no trytond here).

The first import lists patients, studies and series page by page; later
syncs follow Orthanc's ``/changes`` feed from a cursor.  Every page is
handed to a *store* (the Tryton model side) that writes it in one batch,
together with the cursor it covers, so an interrupted sync never loses or
duplicates anything: following the feed resumes where the last saved page
ended; an interrupted first import lists again from the start.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Protocol

from .mapping import map_many, map_patient, map_series, map_study
from .orthanc_client import OrthancBadAnswer, OrthancClient, OrthancNotFound

logger = logging.getLogger(__name__)

PAGE_SIZE = 500
CHANGES_PAGE_SIZE = 1000


class Store(Protocol):
    "Where the synchronizer writes; one call is one batch"

    def save(self, patients: list[dict] = (), studies: list[dict] = (),
            series: list[dict] = (), replace_series_of: Iterable[str] = (),
            cursor: int | None = None) -> None:
        ...

    def missing_patients(self, orthanc_ids: Iterable[str]) -> set[str]:
        "Return the Orthanc patient ids that the store does not have"
        ...


@dataclass
class SyncResult:
    "What one sync did"
    full: bool = False
    patients: int = 0
    studies: int = 0
    series: int = 0
    gone: int = 0
    cursor: int = 0
    requests: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)

    def add(self, patients=(), studies=(), series=()):
        self.patients += len(patients)
        self.studies += len(studies)
        self.series += len(series)


class Synchronizer:
    "Bring a store up to date with one Orthanc server"

    def __init__(self, client: OrthancClient, store: Store,
            page_size: int = PAGE_SIZE,
            changes_page_size: int = CHANGES_PAGE_SIZE):
        self.client = client
        self.store = store
        self.page_size = page_size
        self.changes_page_size = changes_page_size

    def run(self, cursor: int | None) -> SyncResult:
        """Synchronize from cursor (None: first import).

        Cursor 0 is a server that had no change when it was imported: it
        is followed like any other.

        A cursor beyond the server's last change means the Orthanc
        database was replaced: everything is imported again.
        """
        start = self.client.request_count
        result = SyncResult()
        if cursor is None:
            self._full_import(result)
        else:
            page = self.client.get_changes(cursor, self.changes_page_size)
            if not page.changes and page.last < cursor:
                logger.warning(
                    "%s: change cursor %s beyond the server's last change "
                    "%s, its database was replaced: importing again",
                    self.client, cursor, page.last)
                self._full_import(result)
            else:
                self._follow_changes(page, cursor, result)
        result.requests = self.client.request_count - start
        return result

    def _pages(self, lister):
        since = 0
        while True:
            items = lister(since=since, limit=self.page_size)
            if items:
                yield items
            if len(items) < self.page_size:
                break
            since += len(items)

    def _full_import(self, result: SyncResult):
        result.full = True
        # Taken before listing: what changes while listing is in the feed
        last = self.client.last_change()
        for kind, lister, mapper in [
                ('patients', self.client.list_patients, map_patient),
                ('studies', self.client.list_studies, map_study),
                ('series', self.client.list_series, map_series),
                ]:
            for items in self._pages(lister):
                records, errors = map_many(mapper, items)
                result.errors.extend(errors)
                self.store.save(**{kind: records})
                result.add(**{kind: records})
        self.store.save(cursor=last)
        result.cursor = last
        # Catch up with what arrived during the listing
        page = self.client.get_changes(last, self.changes_page_size)
        self._follow_changes(page, last, result)

    def _follow_changes(self, page, cursor: int, result: SyncResult):
        result.cursor = cursor
        while True:
            if page.changes:
                self._apply_changes(page, result)
                result.cursor = page.last
            if page.done or not page.changes:
                break
            page = self.client.get_changes(
                result.cursor, self.changes_page_size)

    def _apply_changes(self, page, result: SyncResult):
        patient_ids, study_ids = {}, {}
        for change in page.changes:
            if change.resource_type == 'Patient':
                patient_ids[change.resource_id] = None
            elif change.resource_type == 'Study':
                study_ids[change.resource_id] = None
        studies, series = [], []
        parents = set()
        for study_id in study_ids:
            fetched = self._fetch_study(study_id, result)
            if fetched:
                study, study_series = fetched
                studies.append(study)
                series.extend(study_series)
                if study['orthanc_patient_id']:
                    parents.add(study['orthanc_patient_id'])
        parents -= set(patient_ids)
        for patient_id in self.store.missing_patients(parents):
            patient_ids[patient_id] = None
        patients = []
        for patient_id in patient_ids:
            patient = self._fetch(
                self.client.get_patient, map_patient, patient_id, result)
            if patient:
                patients.append(patient)
        self.store.save(
            patients=patients, studies=studies, series=series,
            replace_series_of=[s['orthanc_id'] for s in studies],
            cursor=page.last)
        result.add(patients, studies, series)

    @staticmethod
    def _skip_or_stop(exception, orthanc_id, result):
        """Skip an unreadable resource, stop on a server error.

        A server error (HTTP 5xx after the retries) may pass: stopping
        keeps the cursor before this page, so the next sync reads the
        resource again instead of losing it.
        """
        if exception.status is not None and exception.status >= 500:
            raise exception
        result.errors.append((orthanc_id, str(exception)))

    def _fetch(self, getter, mapper, orthanc_id, result):
        "Return the mapped resource, None when gone or unreadable"
        try:
            records, errors = map_many(mapper, [getter(orthanc_id)])
        except OrthancNotFound:
            # Deleted since the change was recorded
            result.gone += 1
            return None
        except OrthancBadAnswer as exception:
            self._skip_or_stop(exception, orthanc_id, result)
            return None
        # Under the ID asked for: an answer without ID has only an index
        result.errors.extend((orthanc_id, reason) for _, reason in errors)
        return records[0] if records else None

    def _fetch_study(self, study_id, result):
        study = self._fetch(
            self.client.get_study, lambda s: s, study_id, result)
        if study is None:
            return None
        try:
            series_json = self.client.get_study_series(study_id)
        except OrthancNotFound:
            result.gone += 1
            return None
        except OrthancBadAnswer as exception:
            self._skip_or_stop(exception, study_id, result)
            return None
        records, errors = map_many(
            lambda s: map_study(s, series_json), [study])
        series, series_errors = map_many(map_series, series_json)
        result.errors.extend((study_id, reason) for _, reason in errors)
        # A series without ID (only an index) is reported with its study
        result.errors.extend(
            (key if isinstance(key, str) else study_id, reason)
            for key, reason in series_errors)
        if not records:
            return None
        return records[0], series
