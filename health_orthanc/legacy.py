# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""What the update keeps of GNU Health's own health_orthanc (5.0).

GNU Health's module copies Orthanc's studies into
gnuhealth_imaging_orthanc_study (keyed by the server's URL) with their
series and instances. The first sync after the update imports everything
again from Orthanc into our records; what people decided by hand on the old
study records is carried over before: a study linked by hand to a patient
(its Orthanc patient is linked by hand), a study attached to a result, the
notes. Only the studies that carry such a decision get a record at once,
with the Orthanc IDs that Orthanc computes from the DICOM identifiers: the
sync finds them and completes them.
"""
import datetime
import hashlib
import logging
from collections import defaultdict, namedtuple

from sql import Column, Null, Table
from trytond import backend
from trytond.pool import Pool
from trytond.transaction import Transaction

from . import orthanc_client as oc

logger = logging.getLogger(__name__)

LEGACY_STUDY_TABLE = 'gnuhealth_imaging_orthanc_study'
LEGACY_SERIES_TABLE = 'gnuhealth_imaging_orthanc_study_series'

LegacyStudy = namedtuple('LegacyStudy', [
        'server', 'orthanc_id', 'study_instance_uid', 'patient_id',
        'patient_name', 'date', 'institution', 'physician', 'patient',
        'result', 'notes', 'merge_comment'])
LegacyStudy.__doc__ = "A row of GNU Health's Orthanc study table"


def orthanc_id(*identifiers):
    """Return the Orthanc ID of the resource with the DICOM identifiers
    (PatientID, then StudyInstanceUID...): a SHA-1 of them joined by "|"
    """
    digest = hashlib.sha1('|'.join(identifiers).encode('utf-8')).hexdigest()
    return '-'.join(digest[i:i + 8] for i in range(0, 40, 8))


def server_key(domain):
    "Return the URL of a server as our records store it"
    try:
        return oc.normalize_domain(domain or '')
    except ValueError:
        return domain


def study_date(value):
    "Return the date of a DICOM DA string, None if it is not one"
    try:
        return datetime.datetime.strptime((value or '').strip(), '%Y%m%d'
            ).date()
    except ValueError:
        return None


def study_notes(study, series_notes=()):
    "Return the text of the note that keeps what was written on a study"
    parts = []
    if study.notes and study.notes.strip():
        parts.append(study.notes.strip())
    if study.merge_comment and study.merge_comment.strip():
        parts.append(study.merge_comment.strip())
    for label, notes in series_notes:
        if notes and notes.strip():
            parts.append('%s: %s' % (label, notes.strip()))
    return '\n\n'.join(parts) or None


def is_hand_link(study, puids):
    """Tell if the study was linked by hand: to a patient other than the
    one whose PUID is its PatientID, which a sync links by itself.

    puids: {GNU Health patient id: PUID}
    """
    return bool(study.patient) and (
        puids.get(study.patient) != (study.patient_id or None))


def plan(studies, servers, puids, series_notes):
    """Return what to create for the legacy studies that carry a decision.

    studies: LegacyStudy rows; servers: {server_key: server id};
    puids: {patient id: PUID}; series_notes: {(server, orthanc_id):
    [(label, notes)]}.

    Returns (patients, studies, skipped): patients {(server id, Orthanc
    ID): values} with the hand links, studies {(server id, Orthanc ID):
    values} with their Orthanc patient's key, 'notes' and 'result' (None
    when none), and the legacy studies skipped because no server has their
    URL. The latest hand link of an Orthanc patient wins.
    """
    patients, new_studies, skipped = {}, {}, []
    for study in studies:
        notes = study_notes(
            study, series_notes.get((study.server, study.orthanc_id), ()))
        hand_link = is_hand_link(study, puids)
        if not (hand_link or study.result or notes):
            continue
        server = servers.get(server_key(study.server))
        if server is None:
            skipped.append(study)
            continue
        patient_key = (server, orthanc_id(study.patient_id or ''))
        patient = patients.setdefault(patient_key, {
                'patient_id': study.patient_id,
                'name': study.patient_name,
                'patient': None,
                'link_state': 'no_match',
                })
        if hand_link:
            patient.update(patient=study.patient, link_state='manual')
        new_studies[(server, study.orthanc_id)] = {
            'orthanc_patient': patient_key,
            'patient_id': study.patient_id,
            'study_instance_uid': study.study_instance_uid,
            'study_date': study_date(study.date),
            'institution': study.institution or None,
            'referring_physician': study.physician or None,
            'notes': notes,
            'result': study.result,
            }
    return patients, new_studies, skipped


# The database side: plain SQL, run by __register__ before the XML files


def has_legacy_studies():
    return backend.TableHandler.table_exist(LEGACY_STUDY_TABLE)


def migrate_servers(server_table):
    """Keep the servers of GNU Health's module: the URLs as ours store them,
    the proxy URL as public URL, and a first import to do that resumes at
    GNU Health's change cursor (the changes since are caught up after)"""
    cursor = Transaction().connection.cursor()
    table = server_table
    cursor.execute(*table.select(table.id, table.domain,
            Column(table, 'proxy_domain'),
            Column(table, 'last_changed_index')))
    for id_, domain, proxy, last_change in cursor.fetchall():
        start = last_change if (last_change or -1) >= 0 else None
        cursor.execute(*table.update([
                    table.domain, table.public_url, table.last,
                    table.import_cursor, table.import_phase,
                    table.import_offset],
                [server_key(domain), server_key(proxy) if proxy else None,
                    None, start, 'patients' if start is not None else None,
                    0 if start is not None else None],
                where=table.id == id_))


def read_studies():
    "Return the LegacyStudy rows of GNU Health's study table, oldest first"
    table = Table(LEGACY_STUDY_TABLE)
    cursor = Transaction().connection.cursor()
    cursor.execute(*table.select(*(Column(table, c) for c in [
                    'server', 'orthanc_UID', 'study_instance_UID',
                    'patient_id', 'patient_name', 'date', 'institution',
                    'performing_physician_name', 'patient', 'imaging_test',
                    'notes', 'merge_comment']),
            order_by=[table.id.asc]))
    return [LegacyStudy(*row) for row in cursor.fetchall()]


def read_series_notes():
    "Return {(server, Orthanc study ID): [(series label, notes)]}"
    result = defaultdict(list)
    if not backend.TableHandler.table_exist(LEGACY_SERIES_TABLE):
        return result
    study, series = Table(LEGACY_STUDY_TABLE), Table(LEGACY_SERIES_TABLE)
    cursor = Transaction().connection.cursor()
    cursor.execute(*series.join(study, condition=series.study == study.id
            ).select(study.server, Column(study, 'orthanc_UID'),
            series.series_number, series.series_description, series.notes,
            where=(series.notes != Null) & (series.notes != ''),
            order_by=[series.id.asc]))
    for server, orthanc_id, number, description, notes in cursor:
        label = ' '.join(filter(None, ['Series', number, description]))
        result[(server, orthanc_id)].append((label, notes))
    return result


def server_ids():
    "Return {server_key: id} of the servers"
    table = Pool().get('gnuhealth.orthanc.config').__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*table.select(table.domain, table.id))
    return {server_key(d): i for d, i in cursor}


def patient_puids():
    "Return {patient id: PUID}"
    pool = Pool()
    patient = pool.get('gnuhealth.patient').__table__()
    party = pool.get('party.party').__table__()
    cursor = Transaction().connection.cursor()
    cursor.execute(*patient.join(party, condition=patient.party == party.id
            ).select(patient.id, party.ref))
    return dict(cursor)


def insert(table, rows):
    "Insert rows ({column: value}) in table; return their ids"
    cursor = Transaction().connection.cursor()
    ids = []
    now = datetime.datetime.now()
    for row in rows:
        row = dict(row, create_uid=0, create_date=now)
        columns = sorted(row)
        query = table.insert([Column(table, c) for c in columns],
            [[row[c] for c in columns]])
        if backend.name == 'sqlite':
            cursor.execute(*query)
            ids.append(cursor.lastrowid)
        else:
            query.returning = [table.id]
            cursor.execute(*query)
            ids.append(cursor.fetchone()[0])
    return ids


def stored_ids(table, keys):
    "Return {(server, Orthanc ID): id} of the records of table among keys"
    cursor = Transaction().connection.cursor()
    cursor.execute(*table.select(table.server, table.orthanc_id, table.id,
            where=table.orthanc_id.in_([k[1] for k in keys] or [''])))
    return {(s, o): i for s, o, i in cursor if (s, o) in keys}


def migrate_studies():
    """Create our records of the legacy studies that carry a decision: the
    hand links, the notes (as notes of our study); the results are attached
    by migrate_result_studies. GNU Health 4's records of the same Orthanc
    IDs, already in our tables, are completed instead."""
    pool = Pool()
    patient_table = pool.get('gnuhealth.orthanc.patient').__table__()
    Study = pool.get('gnuhealth.orthanc.study')
    study_table = Study.__table__()
    Note = pool.get('ir.note')
    cursor = Transaction().connection.cursor()
    studies = read_studies()
    patients, new_studies, skipped = plan(
        studies, server_ids(), patient_puids(), read_series_notes())
    for study in skipped:
        logger.warning("Orthanc study %s of %s: no server has this URL, "
            "not kept", study.orthanc_id, study.server)
    patient_ids = stored_ids(patient_table, set(patients))
    for key, id_ in patient_ids.items():
        if patients[key]['link_state'] == 'manual':
            cursor.execute(*patient_table.update(
                    [patient_table.patient, patient_table.link_state],
                    [patients[key]['patient'], 'manual'],
                    where=patient_table.id == id_))
    new_keys = sorted(set(patients) - set(patient_ids))
    patient_ids.update(zip(new_keys, insert(patient_table, [
                    dict(patients[k], server=k[0], orthanc_id=k[1],
                        missing=False)
                    for k in new_keys])))
    study_ids = stored_ids(study_table, set(new_studies))
    new_keys = sorted(set(new_studies) - set(study_ids))
    rows = []
    for key in new_keys:
        values = dict(new_studies[key], server=key[0], orthanc_id=key[1],
            missing=False)
        values['orthanc_patient'] = patient_ids[values['orthanc_patient']]
        del values['notes'], values['result']
        rows.append(values)
    study_ids.update(zip(new_keys, insert(study_table, rows)))
    insert(Note.__table__(), [{
                'resource': '%s,%s' % (Study.__name__, study_ids[k]),
                'message': v['notes'],
                } for k, v in sorted(new_studies.items()) if v['notes']])
    logger.info("GNU Health's Orthanc studies: %s kept with a decision, "
        "%s hand links; the first sync imports the rest", len(study_ids),
        sum(p['link_state'] == 'manual' for p in patients.values()))


def migrate_result_studies(relation_table, v4_results=False):
    """Attach to the results the studies that GNU Health's module attached
    (and GNU Health 4's, whose studies are in our table)"""
    pool = Pool()
    study = pool.get('gnuhealth.orthanc.study').__table__()
    cursor = Transaction().connection.cursor()
    pairs = set()
    if has_legacy_studies():
        servers = server_ids()
        keys = {(servers.get(server_key(s.server)), s.orthanc_id): s.result
            for s in read_studies() if s.result}
        pairs.update((keys[k], i) for k, i in stored_ids(study, keys).items())
    if v4_results:
        imaging_test = Column(study, 'imaging_test')
        cursor.execute(*study.select(imaging_test, study.id,
                where=imaging_test != Null))
        pairs.update(cursor)
    insert(relation_table,
        [{'result': r, 'study': s} for r, s in sorted(pairs)])


#: The columns of GNU Health 4's models of our names, renamed to ours
V4_COLUMNS = {
    'gnuhealth.orthanc.patient': [
        ('uuid', 'orthanc_id'), ('ident', 'patient_id'),
        ('bd', 'birth_date')],
    'gnuhealth.orthanc.study': [
        ('uuid', 'orthanc_id'), ('patient', 'orthanc_patient'),
        ('instance_uid', 'study_instance_uid'), ('date', 'study_date'),
        ('ident', 'study_id'), ('ref_phys', 'referring_physician')],
    }


def rename_v4_columns(model, table_h):
    """Rename the columns of GNU Health 4's model of the same name (kept by
    5.0) to ours; return whether the table was GNU Health's"""
    if not table_h.column_exist('uuid') or table_h.column_exist('orthanc_id'):
        return False
    for old, new in V4_COLUMNS[model]:
        if table_h.column_exist(old) and not table_h.column_exist(new):
            table_h.column_rename(old, new)
    return True


def migrate_v4_links(table):
    """Keep the links of GNU Health 4's Orthanc patients: a link to a
    patient other than the one of its PUID was made by hand"""
    cursor = Transaction().connection.cursor()
    puids = patient_puids()
    cursor.execute(*table.select(table.id, table.patient, table.patient_id,
            where=table.patient != Null))
    for id_, patient, patient_id in cursor.fetchall():
        state = 'linked' if puids.get(patient) == patient_id else 'manual'
        cursor.execute(*table.update([table.link_state], [state],
                where=table.id == id_))
