# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Orthanc studies, the imaging requests they perform, and the Delete from
Orthanc wizard.

A study that arrives with the StudyInstanceUID or the accession number of
a request is linked to it and to its result, unless its patient is not the
request's: then it is listed for review.
"""
import logging
from collections import defaultdict

from trytond import backend
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.pool import Pool
from trytond.pyson import Eval
from trytond.tools import grouped_slice
from trytond.transaction import Transaction, without_check_access
from trytond.wizard import Button, StateTransition, StateView, Wizard

from trytond.modules.health_imaging.tools import search_in

from . import legacy, linking
from . import orthanc_client as oc
from .audit import MATCHING, AuditMixin
from .patient import KEPT_LINKS
from .resource import VIEWER_FIELDS, OrthancResourceMixin, viewer_field
from .viewer import study_urls

logger = logging.getLogger(__name__)

REQUEST_LINKS = [
    (None, ''),
    (linking.REQUEST_LINKED, "Linked"),
    (linking.PATIENT_DIFFERS, "Patient differs from the request's"),
    (linking.PATIENT_UNKNOWN, "Patient not linked"),
    (linking.RESULT_DONE, "Result already completed"),
    ]
#: The links of the studies listed for review
REVIEW_LINKS = [
    linking.PATIENT_DIFFERS, linking.PATIENT_UNKNOWN, linking.RESULT_DONE]
#: The request states whose studies may still arrive
OPEN_STATES = ['requested', 'done']
#: The link states of an Orthanc patient that an order may decide: its
#: PatientID names no local patient.  Not a missing PatientID: Orthanc
#: files every study without one under the same patient.
ORDER_LINKABLE = {linking.NO_MATCH}


class OrthancStudy(AuditMixin, OrthancResourceMixin, ModelSQL, ModelView):
    "Orthanc Study"
    __name__ = 'gnuhealth.orthanc.study'
    _rec_name = 'description'
    _orthanc_parent = ('gnuhealth.orthanc.patient', 'orthanc_patient_id')

    # Of the study's server, without a domain that each page of a sync
    # would evaluate study by study: the sync sets it from a lookup by
    # server (_orthanc_context) and users cannot write it (read-only)
    orthanc_patient = fields.Many2One(
        'gnuhealth.orthanc.patient', "Orthanc Patient", readonly=True,
        ondelete='CASCADE')
    patient = fields.Function(
        fields.Many2One('gnuhealth.patient', "Patient"),
        'get_patient', searcher='search_patient')
    patient_id = fields.Char("PatientID", readonly=True)
    study_instance_uid = fields.Char("StudyInstanceUID", readonly=True)
    study_datetime = fields.DateTime("Study Date and Time", readonly=True)
    study_date = fields.Date("Study Date", readonly=True)
    description = fields.Char("Description", readonly=True)
    accession_number = fields.Char("Accession Number", readonly=True)
    referring_physician = fields.Char("Referring Physician", readonly=True)
    institution = fields.Char("Institution", readonly=True)
    study_id = fields.Char("Study ID", readonly=True)
    modalities = fields.Char("Modalities", readonly=True)
    number_of_series = fields.Integer("Series", readonly=True)
    number_of_instances = fields.Integer("Instances", readonly=True)
    series = fields.One2Many(
        'gnuhealth.orthanc.series', 'study', "Series", readonly=True)
    explorer_url = viewer_field(
        'explorer_url', "Orthanc Explorer",
        "The study in Orthanc's own web interface.")
    stone_url = viewer_field(
        'stone_url', "Stone Web Viewer",
        "The study in the Stone Web Viewer (if Orthanc has the plugin).")
    ohif_url = viewer_field(
        'ohif_url', "OHIF Viewer",
        "The study in the OHIF viewer (if Orthanc has the plugin).")
    request = fields.Many2One(
        'gnuhealth.imaging.test.request', "Imaging Request", readonly=True,
        ondelete='SET NULL',
        help="The imaging request this study performs, found by its "
        "StudyInstanceUID or accession number.")
    request_link = fields.Selection(
        REQUEST_LINKS, "Request Link", readonly=True,
        help="Why a study carrying a request's identifiers is not linked "
        "to it: linking would show one person's images in another's "
        "record, or change a completed result (reset the result to draft, "
        "then press Link to Request).")
    request_candidate = fields.Many2One(
        'gnuhealth.imaging.test.request', "Matching Request", readonly=True,
        ondelete='SET NULL',
        states={'invisible': ~Eval('request_candidate')},
        help="The request whose identifiers the study carries, not linked "
        "because the patients do not match or its result is completed.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls._order = [
            ('study_datetime', 'DESC NULLS LAST'),
            ('id', 'DESC'),
            ]
        t = cls.__table__()
        # Searched by the linking to imaging requests
        cls._sql_indexes.update({
                Index(t, (t.study_instance_uid, Index.Equality())),
                Index(t, (t.accession_number, Index.Equality())),
                })
        cls._buttons.update({
                'delete_from_orthanc': {
                    'icon': 'tryton-delete',
                    },
                'link_request': {
                    'invisible': ~Eval('request_link').in_(REVIEW_LINKS),
                    'icon': 'tryton-link',
                    'depends': ['request_link'],
                    },
                'copy_to_project': {
                    'icon': 'tryton-forward',
                    },
                })

    @classmethod
    def __register__(cls, module_name):
        # GNU Health 5.0's own module keeps its studies in another table and
        # GNU Health 4's model of this name, without our columns
        exist = backend.TableHandler.table_exist(cls._table)
        first = not exist or not (
            cls.__table_handler__(module_name).column_exist('orthanc_id'))
        if exist:
            legacy.rename_v4_columns(
                cls.__name__, cls.__table_handler__(module_name))
        super().__register__(module_name)
        if first and legacy.has_legacy_studies():
            legacy.migrate_studies()

    def get_rec_name(self, name):
        date = self.study_date.isoformat() if self.study_date else '?'
        return '%s %s (%s)' % (
            date, self.description or self.modalities or '',
            self.patient_id or '')

    @classmethod
    def search_rec_name(cls, name, clause):
        return search_in(clause, [
                'description', 'accession_number', 'patient_id',
                'study_instance_uid'])

    def get_patient(self, name):
        if self.orthanc_patient and self.orthanc_patient.patient:
            return self.orthanc_patient.patient.id

    @classmethod
    def search_patient(cls, name, clause):
        return [('orthanc_patient.patient' + clause[0][len(name):],)
            + tuple(clause[1:])]

    @classmethod
    def get_viewer_urls(cls, studies, names):
        "Build the viewer URLs from the stored plugins: no network call"
        result = {n: {} for n in names}
        for study in studies:
            urls = study_urls(study.server.base_url, study.server.plugins,
                study.orthanc_id, study.study_instance_uid)
            for name in names:
                result[name][study.id] = urls.get(VIEWER_FIELDS[name])
        return result

    @classmethod
    @ModelView.button_action('health_orthanc.wizard_study_delete')
    def delete_from_orthanc(cls, studies):
        "Open the Delete from Orthanc wizard (confirmation, then result)"
        pass

    @classmethod
    @ModelView.button_action('health_orthanc.wizard_research_copy_studies')
    def copy_to_project(cls, studies):
        "Open Copy to Project (research_copy.py)"
        pass

    @classmethod
    def remove_from_orthanc(cls, studies):
        """Delete the studies from their Orthanc server, then here.

        Each study Orthanc accepted to delete (or had not anymore) is
        deleted here; the others are left as they are.  A study read by
        an imaging result is not sent to Orthanc.  Nothing is raised: a
        study Orthanc deleted must not come back here because another
        failed, so the failures are returned for the caller to report.

        Returns the studies deleted and {study: user message} of the
        others.
        """
        pool = Pool()
        ResultStudy = pool.get(
            'gnuhealth.imaging.test.result-gnuhealth.orthanc.study')
        failures = {}
        linked = defaultdict(set)
        # The administrator must learn which results read them
        with without_check_access():
            for sub_studies in grouped_slice(studies):
                for link in ResultStudy.search([
                            ('study', 'in', [s.id for s in sub_studies]),
                            ]):
                    linked[link.study].add(link.result.rec_name)
        for study, results in linked.items():
            failures[study] = gettext(
                'health_orthanc.msg_study_delete_linked',
                study=study.rec_name, results=', '.join(sorted(results)))
        by_server = defaultdict(list)
        for study in studies:
            if study not in failures:
                by_server[study.server].append(study)
        accepted = []
        for server, server_studies in by_server.items():
            with server.get_client() as client:
                unreachable = None
                for study in server_studies:
                    if unreachable is not None:
                        # Do not wait for each study of an unreachable server
                        failures[study] = gettext(
                            'health_orthanc.msg_study_delete_failed',
                            study=study.rec_name, error=unreachable)
                        continue
                    try:
                        client.delete_study(study.orthanc_id)
                    except oc.OrthancNotFound:
                        # Already gone from Orthanc: only removed here
                        pass
                    except oc.OrthancError as exception:
                        error = server.log_error(exception)
                        failures[study] = gettext(
                            'health_orthanc.msg_study_delete_failed',
                            study=study.rec_name, error=error)
                        if isinstance(exception, oc.OrthancUnreachable):
                            unreachable = error
                        continue
                    accepted.append(study)
        pool.get('gnuhealth.orthanc.audit').orthanc_deletions(
            accepted, failures)
        if accepted:
            logger.info("Deleted %s studies from Orthanc", len(accepted))
            # Nobody deletes studies but through here (audited)
            with without_check_access():
                cls.delete(accepted)
        return accepted, failures

    @classmethod
    def _orthanc_values(cls, server, record, patients):
        return {
            'orthanc_patient': patients.get(record['orthanc_patient_id']),
            'patient_id': record['patient_id'],
            'study_instance_uid': record['study_instance_uid'],
            'study_datetime': record['study_datetime'],
            'study_date': record['study_date'],
            'description': record['description'],
            'accession_number': record['accession_number'],
            'referring_physician': record['referring_physician'],
            'institution': record['institution'],
            'study_id': record['study_id'],
            'last_update': record['last_update'],
            }

    @classmethod
    def upsert(cls, server, records, context=None):
        """Store the page, then link to their requests its changed studies
        and the new ones that an open request may claim"""
        created, updated = super().upsert(server, records, context=context)
        claimed = cls._claimed(server, records) if created else set()
        cls.link_to_requests(cls.browse(
                [i for i in created if i in claimed] + updated))
        return created, updated

    @classmethod
    def _claimed(cls, server, records):
        """Return the ids of the studies of the mapped records whose
        StudyInstanceUID or accession number an open request carries (one
        search, then one look-up when some do)"""
        Request = Pool().get('gnuhealth.imaging.test.request')
        keys = {r['orthanc_id']: (r['study_instance_uid'],
                (r['accession_number'] or '').strip()) for r in records}
        domain = ['OR']
        for name, values in [
                ('study_instance_uid', {u for u, _ in keys.values() if u}),
                ('accession_number', {a for _, a in keys.values() if a})]:
            for sub_values in grouped_slice(list(values)):
                domain.append((name, 'in', list(sub_values)))
        if len(domain) == 1:
            return set()
        uids, accessions = set(), set()
        for request in Request.search(
                [('state', 'in', OPEN_STATES), domain]):
            uids.add(request.study_instance_uid)
            accessions.add(request.accession_number)
        claimed = [k for k, (uid, accession) in keys.items()
            if (uid and uid in uids)
            or (accession and accession in accessions)]
        return set(cls.orthanc_ids(server, claimed).values())

    @classmethod
    @ModelView.button
    def link_request(cls, studies):
        """Try the link again, e.g. after the Orthanc patient was linked
        by hand to the request's patient"""
        Audit = Pool().get('gnuhealth.orthanc.audit')
        before = Audit.request_links_of(studies)
        cls.link_to_requests(studies)
        Audit.requests_linked(before)

    @classmethod
    def link_studies_of(cls, requests):
        """Link the studies already stored that carry the identifiers of
        the requests (one search)"""
        uids = [r.study_instance_uid for r in requests
            if r.study_instance_uid]
        accessions = [r.accession_number for r in requests
            if r.accession_number]
        if not uids and not accessions:
            return
        domain = ['OR']
        for name, values in [('study_instance_uid', uids),
                ('accession_number', accessions)]:
            for sub_values in grouped_slice(values):
                domain.append((name, 'in', list(sub_values)))
        studies = cls.search([('request', '=', None), domain])
        if studies:
            cls.link_to_requests(studies)

    @classmethod
    def link_to_requests(cls, studies):
        """Link the studies to the requests they perform, in one batch.

        Match each study to a request (_match_requests), link the unlinked
        Orthanc patients of the matches (_link_patients), decide each study
        (linking.decide_study_link), write the decisions in one grouped
        write, take the studies not linked off the draft results of other
        patients, and perform the requests of the newly linked ones.
        """
        studies = list(studies)
        matches, by_uid = cls._match_requests(studies)
        # Studies listed for review whose request is gone or cancelled
        stale = [s for s in studies
            if s.request_link and s.id not in matches]
        if not matches and not stale:
            return
        others = cls._link_patients(studies, matches, by_uid)
        if others:
            other_matches, _ = cls._match_requests(others)
            matches.update(other_matches)
            studies.extend(others)
        cls._apply_links(cls.browse([s.id for s in studies]), matches)

    @classmethod
    def _match_requests(cls, studies):
        """Return {study id: request} and {StudyInstanceUID: request}.

        A study keeps its request, else matches the open request whose
        StudyInstanceUID it has, else the one whose accession number it
        has (one search each).
        """
        Request = Pool().get('gnuhealth.imaging.test.request')
        to_match = [s for s in studies if not s.request]
        uids = {s.study_instance_uid for s in to_match
            if s.study_instance_uid}
        accessions = {s.accession_number.strip() for s in to_match
            if s.accession_number and s.accession_number.strip()}
        by_uid, by_accession = {}, {}
        for name, values, index in [
                ('study_instance_uid', uids, by_uid),
                ('accession_number', accessions, by_accession)]:
            for sub_values in grouped_slice(list(values)):
                for request in Request.search([
                            (name, 'in', list(sub_values)),
                            ('state', 'in', OPEN_STATES),
                            ]):
                    index[getattr(request, name)] = request
        matches = {}
        for study in studies:
            request = study.request or by_uid.get(
                study.study_instance_uid) or by_accession.get(
                (study.accession_number or '').strip())
            if request:
                matches[study.id] = request
        return matches, by_uid

    @classmethod
    def _link_patients(cls, studies, matches, by_uid):
        """Link the unlinked Orthanc patients of the matched studies, by the
        linking rule, then by their order; return the other studies of the
        patients linked by order that have a request or are listed for
        review, to decide with these"""
        OrthancPatient = Pool().get('gnuhealth.orthanc.patient')
        unlinked = {s.orthanc_patient for s in studies
            if s.id in matches and s.orthanc_patient
            and not s.orthanc_patient.patient
            and s.orthanc_patient.link_state not in KEPT_LINKS}
        if not unlinked:
            return []
        # Their studies are decided by the caller
        OrthancPatient.link(list(unlinked))
        ordered = cls._link_patients_by_order(cls.browse([
                    s.id for s in studies if not s.request
                    and s.study_instance_uid in by_uid]), by_uid)
        ids = {s.id for s in studies}
        return [s for s in cls.request_studies_of(ordered)
            if s.id not in ids]

    @classmethod
    def studies_of(cls, orthanc_patients):
        "Return the studies of the Orthanc patients (one search)"
        studies = []
        for sub_patients in grouped_slice(orthanc_patients):
            studies.extend(cls.search([
                        ('orthanc_patient', 'in',
                            [p.id for p in sub_patients]),
                        ]))
        return studies

    @classmethod
    def request_studies_of(cls, orthanc_patients):
        """Return the studies of the Orthanc patients that have a request or
        are listed for review (one search)"""
        studies = []
        for sub_patients in grouped_slice(orthanc_patients):
            studies.extend(cls.search([
                        ('orthanc_patient', 'in',
                            [p.id for p in sub_patients]),
                        ['OR',
                            ('request', '!=', None),
                            ('request_link', '!=', None),
                            ],
                        ]))
        return studies

    @classmethod
    def _apply_links(cls, studies, matches):
        """Decide the request of each study, write the decisions grouped,
        detach and perform (see link_to_requests)"""
        Request = Pool().get('gnuhealth.imaging.test.request')
        requests = {r.id: r for r in matches.values()}
        results, attached = cls._results_of(list(requests), studies)
        decisions = defaultdict(list)
        linked = defaultdict(list)
        to_detach = []
        for study in studies:
            request = matches.get(study.id)
            current = (getattr(study.request, 'id', None),
                study.request_link,
                getattr(study.request_candidate, 'id', None))
            patient = (study.orthanc_patient.patient
                if study.orthanc_patient else None)
            decision = linking.decide_study_link(
                cls._request_match(study, request, results, attached),
                patient.id if patient else None)
            if current != decision:
                decisions[decision].append(study)
                if decision[1] == linking.REQUEST_LINKED:
                    linked[request].append(study)
            if linking.leaves_results(current, decision):
                to_detach.append(study)
        to_write = []
        for (request, link, candidate), records in decisions.items():
            to_write.extend((records, {
                        'request': request,
                        'request_link': link,
                        'request_candidate': candidate,
                        }))
        if to_write:
            with without_check_access():
                cls.write(*to_write)
        if to_detach:
            cls.detach_other_patients(to_detach)
        if linked:
            Request.perform(linked, results, attached)

    @staticmethod
    def _request_match(study, request, results, attached):
        "Return the linking.RequestMatch of the request the study matches"
        if request is None:
            return None
        result = results.get(request.id)
        return linking.RequestMatch(
            id=request.id, patient=request.patient.id,
            result_state=result.state if result else None,
            attached=bool(result) and (result.id, study.id) in attached)

    @classmethod
    def _results_of(cls, request_ids, studies):
        """Return {request id: result} of the requests and the
        {(result id, study id)} of the studies (one search each)"""
        pool = Pool()
        Result = pool.get('gnuhealth.imaging.test.result')
        ResultStudy = pool.get(
            'gnuhealth.imaging.test.result-gnuhealth.orthanc.study')
        results = {}
        for sub_ids in grouped_slice(request_ids):
            for result in Result.search([('request', 'in', list(sub_ids))]):
                results[result.request.id] = result
        attached = set()
        for sub_ids in grouped_slice([s.id for s in studies]):
            attached.update((l.result.id, l.study.id)
                for l in ResultStudy.search([
                        ('study', 'in', list(sub_ids)),
                        ]))
        return results, attached

    @classmethod
    def _link_patients_by_order(cls, studies, by_uid):
        """Link to the patient of their order the Orthanc patients whose
        PatientID names no local patient, in one write; return them.

        Only the StudyInstanceUID, given to one request and never reused,
        is taken as evidence (an accession number may be given again or
        come from elsewhere).  Every study of the Orthanc patient that
        points to a request (linked or for review) must point to requests
        of the same patient, and no birth date may contradict it;
        otherwise the studies stay for review.
        """
        OrthancPatient = Pool().get('gnuhealth.orthanc.patient')
        by_patient = defaultdict(list)
        for orthanc_patient, requests in cls._order_evidence(
                studies, by_uid).items():
            patients = {r.patient for r in requests}
            if len(patients) != 1:
                continue
            patient, = patients
            dob = patient.party.dob
            if (orthanc_patient.birth_date and dob
                    and orthanc_patient.birth_date != dob):
                continue
            by_patient[patient].append(orthanc_patient)
        to_write = []
        for patient, orthanc_patients in by_patient.items():
            to_write.extend((orthanc_patients, {
                        'patient': patient.id,
                        'link_state': 'order',
                        }))
        if to_write:
            with without_check_access():
                OrthancPatient.write(*to_write)
        return [p for ps in by_patient.values() for p in ps]

    @classmethod
    def _order_evidence(cls, studies, by_uid):
        """Return {Orthanc patient: [requests]}: for the Orthanc patients an
        order may link, the requests of the studies by StudyInstanceUID and
        of their other studies (one search)"""
        evidence = defaultdict(list)
        for study in studies:
            orthanc_patient = study.orthanc_patient
            if (orthanc_patient and not orthanc_patient.patient
                    and orthanc_patient.link_state in ORDER_LINKABLE):
                evidence[orthanc_patient].append(
                    by_uid[study.study_instance_uid])
        for sub_patients in grouped_slice(list(evidence)):
            for study in cls.search([
                        ('orthanc_patient', 'in',
                            [p.id for p in sub_patients]),
                        ['OR',
                            ('request', '!=', None),
                            ('request_candidate', '!=', None),
                            ],
                        ]):
                evidence[study.orthanc_patient].append(
                    study.request or study.request_candidate)
        return evidence

    @classmethod
    def held_on_server(cls, table, column, server, orthanc_ids):
        """Return those of orthanc_ids that the column of table (a model
        with a study) holds for the studies of server: one query per
        slice of ids"""
        study = cls.__table__()
        cursor = Transaction().connection.cursor()
        found = set()
        for sub_ids in grouped_slice(list(orthanc_ids)):
            cursor.execute(*table.join(study,
                    condition=table.study == study.id
                    ).select(column,
                    where=(study.server == server.id)
                    & column.in_(list(sub_ids))))
            found.update(r for r, in cursor)
        return found

    @classmethod
    def detach_other_patients(cls, studies):
        """Remove the studies from the draft results of another patient
        (one search, one delete); a completed result is left as signed,
        its study being listed for review"""
        ResultStudy = Pool().get(
            'gnuhealth.imaging.test.result-gnuhealth.orthanc.study')
        to_delete = []
        for sub_studies in grouped_slice(studies):
            patients = {s.id: s.patient for s in sub_studies}
            for link in ResultStudy.search([
                        ('study', 'in', list(patients)),
                        ('result.state', '=', 'draft'),
                        ]):
                if link.result.patient != patients[link.study.id]:
                    to_delete.append(link)
        if to_delete:
            with without_check_access(), \
                    Transaction().set_context({MATCHING: True}):
                ResultStudy.delete(to_delete)


class DeleteStudiesStart(ModelView):
    "Delete Studies from Orthanc"
    __name__ = 'gnuhealth.orthanc.study.delete.start'

    studies = fields.Many2Many(
        'gnuhealth.orthanc.study', None, None, "Studies", readonly=True)


class DeleteStudiesResult(ModelView):
    "Delete Studies from Orthanc Result"
    __name__ = 'gnuhealth.orthanc.study.delete.result'

    deleted = fields.Integer("Deleted", readonly=True)
    failed = fields.Integer("Not Deleted", readonly=True)
    message = fields.Text("Message", readonly=True)
    studies = fields.Many2Many(
        'gnuhealth.orthanc.study', None, None, "Studies Not Deleted",
        readonly=True)


class DeleteStudies(Wizard):
    """Delete Studies from Orthanc

    The studies Orthanc deleted are deleted here too and kept deleted
    (the transaction commits); the others are listed with the reason, so
    a failure never brings back a study that is gone from Orthanc.
    """
    __name__ = 'gnuhealth.orthanc.study.delete'

    start = StateView(
        'gnuhealth.orthanc.study.delete.start',
        'health_orthanc.study_delete_start_view_form', [
            Button("Cancel", 'end', 'tryton-cancel', default=True),
            Button("Delete", 'remove', 'tryton-delete'),
            ])
    remove = StateTransition()
    result = StateView(
        'gnuhealth.orthanc.study.delete.result',
        'health_orthanc.study_delete_result_view_form', [
            Button("Close", 'end', 'tryton-close', default=True),
            ])

    def default_start(self, fields):
        return {'studies': [s.id for s in self.records]}

    def transition_remove(self):
        pool = Pool()
        Study = pool.get('gnuhealth.orthanc.study')
        deleted, failures = Study.remove_from_orthanc(self.records)
        if not failures:
            return 'end'
        self.result.deleted = len(deleted)
        self.result.failed = len(failures)
        self.result.message = '\n'.join([gettext(
                    'health_orthanc.msg_study_delete_partial',
                    deleted=len(deleted), failed=len(failures))]
            + list(failures.values()))
        self.result.studies = list(failures)
        return 'result'

    def default_result(self, fields):
        return {
            'deleted': self.result.deleted,
            'failed': self.result.failed,
            'message': self.result.message,
            'studies': [getattr(s, 'id', s) for s in self.result.studies],
            }

    def end(self):
        return 'reload'
