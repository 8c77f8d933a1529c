# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""How a GNU Health database follows an Orthanc server (no trytond here).

The first import lists patients, studies and series page by page; later
syncs follow Orthanc's ``/changes`` feed from a cursor.  Every page is
handed to a *store* (the Tryton model side) that writes it in one batch,
together with the cursor it covers, so an interrupted sync never loses or
duplicates anything: following the feed resumes where the last saved page
ended; an interrupted first import resumes from the progress saved with its
last page.  The first import ends by comparing the lists of IDs of Orthanc
with the store and importing what is missing (offsets shift when something
is deleted while listing).

The Radiation Dose Structured Reports of the studies read are downloaded
once (see :meth:`Synchronizer._dose_reports`); the report series that GNU
Health stores into studies (``report_dicom``) are left out.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Protocol

from . import dose
from .mapping import map_many, map_patient, map_series, map_study
from .orthanc_client import (
    OrthancBadAnswer, OrthancClient, OrthancError, OrthancNotFound)
from .report_dicom import is_report_series

logger = logging.getLogger(__name__)

PAGE_SIZE = 500
CHANGES_PAGE_SIZE = 1000
#: The listings of a first import, in their order
PHASES = ('patients', 'studies', 'series')


def is_anonymized_copy(item) -> bool:
    """Tell whether an Orthanc resource was made by ``/anonymize``: the
    intermediate research copies are never clinical records"""
    return isinstance(item, dict) and bool(item.get('AnonymizedFrom'))


def _is_report(item):
    return isinstance(item, dict) and is_report_series(
        item.get('MainDicomTags') or {})


def clinical_series(items):
    "The series of a listing, without the report series GNU Health stored"
    return [i for i in items if not _is_report(i)]


def _map_clinical_series(item):
    "map_series, None for a report series stored by GNU Health"
    return None if _is_report(item) else map_series(item)


@dataclass(frozen=True)
class ImportProgress:
    "How far a first import went, saved with each of its pages"
    #: Orthanc's last change when the import started: the cursor it ends at
    cursor: int
    #: The listing in progress: 'patients', 'studies' or 'series'
    phase: str
    #: The number of items of that listing already read
    offset: int = 0


class Store(Protocol):
    "Where the synchronizer writes; one call is one batch"

    def save(self, patients: list[dict] = (), studies: list[dict] = (),
            series: list[dict] = (), replace_series_of: Iterable[str] = (),
            cursor: int | None = None,
            progress: ImportProgress | None = None,
            doses: list[tuple[str, str, dose.DoseReport]] = ()
            ) -> list[tuple[str, str]]:
        """Write a page at once.

        cursor ends a first import (its progress is forgotten); progress
        is how far a first import went (the cursor is emptied until it
        ends).  doses are (study Orthanc ID, instance Orthanc ID, report)
        of the dose reports read, of studies saved by now.  Return
        [(instance Orthanc ID, reason)] of the dose reports whose values
        could not be kept (stored as not understood).
        """
        ...

    def dose_instances(self, orthanc_ids: Iterable[str]) -> set[str]:
        "Return the Orthanc IDs of the instances read as dose reports"
        ...

    def missing_patients(self, orthanc_ids: Iterable[str]) -> set[str]:
        "Return the Orthanc patient ids that the store does not have"
        ...

    def missing_ids(self, kind: str, orthanc_ids: Iterable[str]) -> set[str]:
        """Return the Orthanc ids of kind ('patients', 'studies' or
        'series') that the store does not have"""
        ...

    def series_studies(self, orthanc_ids: Iterable[str]) -> dict[str, str]:
        """Return {series Orthanc id: study Orthanc id} of the series
        that the store has"""
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
    #: A first import continued from its saved progress
    resumed: bool = False
    #: The Orthanc IDs of the patients and studies listed by a
    #: reconciliation (first import included), to flag what is missing:
    #: {'patients': [...], 'studies': [...]}
    present: dict[str, list[str]] | None = None

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

    def run(self, cursor: int | None,
            progress: ImportProgress | None = None) -> SyncResult:
        """Synchronize from cursor (None: first import).

        Cursor 0 is a server that had no change when it was imported: it
        is followed like any other.

        A first import interrupted after saving progress continues from
        there.  A cursor (or the cursor of the progress) beyond the
        server's last change means the Orthanc database was replaced:
        everything is imported again.
        """
        start = self.client.request_count
        result = SyncResult()
        if cursor is None:
            self._full_import(result, progress)
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

    def reconcile(self) -> SyncResult:
        """Import what Orthanc has and the store has not.

        Lists the IDs of the patients, studies and series (three
        requests, in ``present`` of the result) and imports the missing
        ones by ID; the cursor is not changed.
        """
        start = self.client.request_count
        result = SyncResult()
        self._reconcile(result)
        result.requests = self.client.request_count - start
        return result

    def _pages(self, kind, lister, since=0):
        """Yield each non-empty page and the offset after it

        A page that does not advance (see OrthancClient.check_page) stops
        the import: a listing that keeps answering the same page would
        otherwise be read forever."""
        ids = None
        while True:
            items = lister(since=since, limit=self.page_size)
            ids = self.client.check_page(kind, items, self.page_size, ids)
            since += len(items)
            if items:
                yield items, since
            if len(items) < self.page_size:
                break

    def _full_import(self, result: SyncResult,
            progress: ImportProgress | None = None):
        result.full = True
        # Taken before listing: what changes while listing is in the feed
        last = self.client.last_change()
        if progress is not None and progress.phase not in PHASES:
            logger.warning("%s: unknown first import phase %r: importing "
                "from the start", self.client, progress.phase)
            progress = None
        if progress is not None:
            if last < progress.cursor:
                logger.warning(
                    "%s: first import started at change %s beyond the "
                    "server's last change %s, its database was replaced: "
                    "importing again", self.client, progress.cursor, last)
                progress = None
            else:
                result.resumed = True
                logger.info("%s: resuming the first import at %s %s",
                    self.client, progress.phase, progress.offset)
        if progress is None:
            progress = ImportProgress(last, PHASES[0])
        last = progress.cursor
        listers = {
            'patients': (self.client.list_patients, map_patient),
            'studies': (self.client.list_studies, map_study),
            'series': (self.client.list_series, map_series),
            }
        for kind in PHASES[PHASES.index(progress.phase):]:
            lister, mapper = listers[kind]
            offset = progress.offset if kind == progress.phase else 0
            for items, offset in self._pages(kind, lister, offset):
                items = [i for i in items if not is_anonymized_copy(i)]
                doses = []
                if kind == 'series':
                    items = clinical_series(items)
                    # The studies' other series may be on other pages
                    doses = self._dose_reports(
                        items, result, whole_studies=False)
                records, errors = map_many(mapper, items)
                result.errors.extend(errors)
                result.errors.extend(self.store.save(**{kind: records},
                        progress=ImportProgress(last, kind, offset),
                        doses=doses))
                result.add(**{kind: records})
        self.store.save(cursor=last)
        result.cursor = last
        # Catch up with what arrived during the listing
        page = self.client.get_changes(last, self.changes_page_size)
        self._follow_changes(page, last, result)
        # What the offsets skipped when something was deleted meanwhile
        self._reconcile(result)

    def _reconcile(self, result: SyncResult):
        # Not again what this sync reported
        reported = {key for key, _ in result.errors}
        missing, result.present = {}, {}
        for kind in PHASES:
            # One list at a time; the series are not kept
            ids = self.client.list_ids(kind)
            missing[kind] = self.store.missing_ids(kind, ids) - reported
            if kind != 'series':
                result.present[kind] = ids
            del ids
        self.import_ids(result=result, **missing)

    def import_ids(self, patients: Iterable[str] = (),
            studies: Iterable[str] = (), series: Iterable[str] = (),
            result: SyncResult | None = None) -> SyncResult:
        """Import resources by Orthanc ID, a page at a time.

        A study comes with its series and, when the store does not have
        it, its patient; a series comes with its whole study.  The cursor
        is not changed.
        """
        if result is None:
            result = SyncResult()
        for page in self._slices(patients):
            self._import(page, (), {}, result)
        for page in self._slices(studies):
            self._import((), page, {}, result)
        if series:
            # Most came with their study
            series = self.store.missing_ids('series', series)
        for page in self._slices(series):
            self._import((), (), dict.fromkeys(page, ()), result)
        return result

    def _slices(self, orthanc_ids):
        "Yield the sorted IDs a page at a time"
        orthanc_ids = sorted(orthanc_ids)
        for index in range(0, len(orthanc_ids), self.page_size):
            yield orthanc_ids[index:index + self.page_size]

    def _follow_changes(self, page, cursor: int, result: SyncResult):
        """Apply the pages of changes from page on.

        Each page is after the previous one (the client refuses a page that
        does not advance with OrthancStalled), so this ends.

        The next page is listed before the studies of a page are read:
        those reads see every change of the next page, so a study read
        for a page is not read again for the next one (a study whose
        changes straddle two pages costs one read, and a change logged
        after the read is on a later page, read as usual).
        """
        result.cursor = cursor
        fresh = set()
        while page.changes:
            following = failure = None
            if not page.done:
                try:
                    following = self.client.get_changes(
                        page.last, self.changes_page_size)
                except OrthancError as exception:
                    # Raised once this page is saved, as if asked after it
                    failure = exception
            fresh = self._apply_changes(page, result, fresh)
            result.cursor = page.last
            if failure is not None:
                raise failure
            if following is None:
                break
            page = following

    def _apply_changes(self, page, result: SyncResult, fresh=()):
        """Read and save what the changes of page touched, except the
        studies in fresh (read after page was listed); return the studies
        read"""
        patient_ids, study_ids, series_ids = {}, {}, {}
        for change in page.changes:
            if change.resource_type == 'Patient':
                patient_ids[change.resource_id] = None
            elif change.resource_type == 'Study':
                if change.resource_id not in fresh:
                    study_ids[change.resource_id] = None
            elif change.resource_type == 'Series':
                series_ids.setdefault(change.resource_id, set()).add(
                    change.change_type)
        return self._import(patient_ids, study_ids, series_ids, result,
            cursor=page.last, fresh=fresh)

    def _import(self, patient_ids, study_ids, series_changes, result,
            cursor=None, fresh=()):
        """Read the patients, the studies and the studies of the series
        changes, and save them in one page with cursor; return the
        Orthanc IDs of the studies read

        series_changes is {series Orthanc id: change types}; the studies
        in fresh are not read for their series.
        """
        studies, series, read, listed = [], [], set(fresh), []
        self._read_studies(study_ids, studies, series, read, result, listed)
        if series_changes:
            # A series that came after its study was read: read the study
            # again, unless it is in this page already
            covered = {s['orthanc_id'] for s in series}
            parents = self._series_parents(
                {k: v for k, v in series_changes.items()
                    if k not in covered}, result)
            self._read_studies(
                [i for i in parents if i not in read], studies, series,
                read, result, listed)
        patient_ids = dict.fromkeys(patient_ids)
        parents = {s['orthanc_patient_id'] for s in studies
            if s['orthanc_patient_id']} - set(patient_ids)
        for patient_id in self.store.missing_patients(parents):
            patient_ids[patient_id] = None
        patients = []
        for patient_id in patient_ids:
            patient = self._fetch(
                self.client.get_patient, map_patient, patient_id, result)
            if patient:
                patients.append(patient)
        if cursor is None and not (patients or studies):
            return set()
        result.errors.extend(self.store.save(
                patients=patients, studies=studies, series=series,
                replace_series_of=[s['orthanc_id'] for s in studies],
                cursor=cursor, doses=self._dose_reports(listed, result)))
        result.add(patients, studies, series)
        return {s['orthanc_id'] for s in studies}

    def _read_studies(self, study_ids, studies, series, read, result,
            listed):
        """Read the studies with their series; add the series as Orthanc
        lists them to listed"""
        for study_id in study_ids:
            read.add(study_id)
            fetched = self._fetch_study(study_id, result)
            if fetched:
                study, study_series, series_json = fetched
                studies.append(study)
                series.extend(study_series)
                listed.extend(series_json)

    def _dose_reports(self, series_json, result, whole_studies=True):
        """Download and read the dose reports of the SR series not read
        before; return [(study Orthanc ID, instance Orthanc ID, report)].

        series_json are series as Orthanc lists them, with their instances.
        One question to the store for them all; for each new instance of
        an SR series, its SOP class from Orthanc's index (one request),
        then its file when it may be a dose report (see
        dose.is_dose_report_candidate, which also needs the modalities of
        the study: those of series_json when it holds whole studies).  An
        instance that is no dose report is kept as such: never read again.
        """
        by_study, candidates = {}, []
        for item in series_json:
            study = item.get('ParentStudy')
            modality = str((item.get('MainDicomTags') or {}).get(
                    'Modality') or '').strip().upper()
            by_study.setdefault(study, set()).add(modality)
            if modality == 'SR':
                candidates.extend((study, i) for i in item.get('Instances')
                    or () if isinstance(i, str))
        if not candidates:
            return []
        known = self.store.dose_instances([i for _, i in candidates])
        reports = []
        for study, instance_id in candidates:
            if instance_id not in known:
                report = self._dose_report(instance_id,
                    by_study[study] if whole_studies else None, result)
                if report is not None:
                    reports.append((study, instance_id, report))
        return reports

    def _dose_report(self, instance_id, modalities, result):
        "Return the DoseReport of an instance, None when it cannot be read"
        try:
            sop_class = self.client.instance_metadata(
                instance_id, 'SopClassUid')
            if not dose.is_dose_report_candidate(
                    {'SopClassUid': sop_class, 'Modality': 'SR'}, modalities):
                return dose.DoseReport(dose.NOT_DOSE,
                    dose.not_dose_class(sop_class), sop_class_uid=sop_class)
            return dose.parse_dose_report(
                self.client.instance_file(instance_id))
        except OrthancNotFound:
            result.gone += 1
        except OrthancBadAnswer as exception:
            self._skip_or_stop(exception, instance_id, result)

    def _series_parents(self, series_changes, result):
        """Return the Orthanc IDs of the studies to read for the series
        changes, in order

        A series the store has tells its study; a NewSeries of such a
        series is already imported.  The others are read for their
        ParentStudy.
        """
        known = self.store.series_studies(list(series_changes))
        parents = {}
        for series_id, change_types in series_changes.items():
            if series_id in known:
                if set(change_types) != {'NewSeries'}:
                    parents[known[series_id]] = None
                continue
            record = self._fetch(self.client.get_series,
                _map_clinical_series, series_id, result)
            if record and record['orthanc_study_id']:
                parents[record['orthanc_study_id']] = None
        return list(parents)

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
            item = getter(orthanc_id)
            if is_anonymized_copy(item):
                return None
            records, errors = map_many(mapper, [item])
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
        series_json = clinical_series(series_json)
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
        return records[0], series, series_json
