# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"The Orthanc studies read by imaging results."
from trytond.model import ModelSQL, fields
from trytond.pool import PoolMeta
from trytond.pyson import Eval


class ImagingTestResultStudy(ModelSQL):
    "Imaging Result - Orthanc Study"
    __name__ = 'gnuhealth.imaging.test.result-gnuhealth.orthanc.study'

    result = fields.Many2One(
        'gnuhealth.imaging.test.result', "Result", required=True,
        ondelete='CASCADE')
    study = fields.Many2One(
        'gnuhealth.orthanc.study', "Study", required=True,
        ondelete='RESTRICT')


class ImagingTestResult(metaclass=PoolMeta):
    __name__ = 'gnuhealth.imaging.test.result'

    studies = fields.Many2Many(
        'gnuhealth.imaging.test.result-gnuhealth.orthanc.study',
        'result', 'study', "Studies",
        domain=[('patient', '=', Eval('patient', -1))],
        help="The Orthanc studies of the patient that this result reads.")
