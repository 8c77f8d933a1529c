# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
from trytond.pool import PoolMeta


class Cron(metaclass=PoolMeta):
    __name__ = 'ir.cron'

    @classmethod
    def __setup__(cls):
        super().__setup__()
        cls.method.selection.extend([
                ('gnuhealth.orthanc.config|sync',
                    "Synchronize Orthanc Servers"),
                ('gnuhealth.orthanc.config|reconcile',
                    "Find Studies Deleted from Orthanc"),
                ('gnuhealth.orthanc.dicom_node|echo_all',
                    "Check DICOM Nodes"),
                ('gnuhealth.orthanc.scheduled_query|run_scheduled',
                    "Run Scheduled PACS Queries"),
                ('gnuhealth.orthanc.retrieval|resume',
                    "Resume PACS Retrievals"),
                ])
