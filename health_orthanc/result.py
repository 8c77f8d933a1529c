# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"The Orthanc studies read by imaging results."
from trytond import backend
from trytond.i18n import gettext
from trytond.model import ModelSQL, Unique, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.transaction import Transaction

from trytond.modules.health_imaging.access import DomainAccessMixin

from . import legacy
from .audit import AuditMixin
from .exceptions import OrthancResourceError


class ImagingTestResultStudy(DomainAccessMixin, ModelSQL):
    "Imaging Result - Orthanc Study"
    __name__ = 'gnuhealth.imaging.test.result-gnuhealth.orthanc.study'

    result = fields.Many2One(
        'gnuhealth.imaging.test.result', "Result", required=True,
        ondelete='CASCADE')
    study = fields.Many2One(
        'gnuhealth.orthanc.study', "Study", required=True,
        ondelete='RESTRICT')

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('result_study_uniq', Unique(t, t.result, t.study),
                'health_orthanc.msg_result_study_unique'),
            ]

    @classmethod
    def create(cls, vlist):
        Result = Pool().get('gnuhealth.imaging.test.result')
        cls._check_draft(Result.browse({v['result'] for v in vlist}))
        links = super().create(vlist)
        Pool().get('gnuhealth.orthanc.audit').result_studies(
            links, attached=True)
        return links

    @classmethod
    def write(cls, *args):
        pool = Pool()
        Result = pool.get('gnuhealth.imaging.test.result')
        Audit = pool.get('gnuhealth.orthanc.audit')
        actions = iter(args)
        results, moved = set(), []
        for links, values in zip(actions, actions):
            results.update(link.result for link in links)
            if values.get('result'):
                results.add(Result(values['result']))
            if {'result', 'study'} & set(values):
                moved.extend(links)
        cls._check_draft(results)
        Audit.result_studies(moved, attached=False)
        super().write(*args)
        Audit.result_studies(cls.browse(moved), attached=True)
        if moved:
            Result.studies_removed(results)

    @classmethod
    def delete(cls, links):
        pool = Pool()
        results = {link.result for link in links}
        cls._check_draft(results)
        pool.get('gnuhealth.orthanc.audit').result_studies(
            links, attached=False)
        super().delete(links)
        # Their reports leave the studies (study_report.py)
        pool.get('gnuhealth.imaging.test.result').studies_removed(results)

    @classmethod
    def _check_draft(cls, results):
        """A completed result is signed: its studies never change (the
        results are locked, so that none is completed meanwhile)"""
        Result = Pool().get('gnuhealth.imaging.test.result')
        results = [r for r in results if r and r.id >= 0]
        Result.lock(results)
        for result in Result.browse(results):
            if result.state != 'draft':
                raise OrthancResourceError(gettext(
                        'health_orthanc.msg_result_studies_done',
                        result=result.rec_name))

    @classmethod
    def __register__(cls, module_name):
        # Registered after the studies, which the update may have created
        # from GNU Health's own module
        migrate = not backend.TableHandler.table_exist(cls._table)
        if not migrate:
            # A study attached twice to a result (a race of versions
            # before the unique constraint) keeps one row
            table = cls.__table__()
            link, other = cls.__table__(), cls.__table__()
            cursor = Transaction().connection.cursor()
            cursor.execute(*table.delete(where=table.id.in_(
                        link.join(other, condition=(
                                (other.result == link.result)
                                & (other.study == link.study)
                                & (other.id < link.id))).select(link.id))))
        super().__register__(module_name)
        study_h = Pool().get('gnuhealth.orthanc.study').__table_handler__()
        if migrate:
            legacy.migrate_result_studies(cls.__table__(),
                v4_results=study_h.column_exist('imaging_test'))


class ImagingTestResult(AuditMixin, metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging.test.result'

    studies = fields.Many2Many(
        'gnuhealth.imaging.test.result-gnuhealth.orthanc.study',
        'result', 'study', "Studies",
        domain=[('patient', '=', Eval('patient', -1))],
        help="The Orthanc studies of the patient that this result reads.")
