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


class ResourceExportMixin:
    """Check the access to the resource of the records exported: Tryton
    checks it in read and search, not in export_data, which reads the
    records given by their ids"""
    __slots__ = ()

    @classmethod
    def export_data(cls, records, fields_names, header=False):
        cls.check_access([r.id for r in records], mode='read')
        return super().export_data(records, fields_names, header=header)


class Attachment(ResourceExportMixin, metaclass=PoolMeta):
    __name__ = 'ir.attachment'


class Note(ResourceExportMixin, metaclass=PoolMeta):
    __name__ = 'ir.note'
