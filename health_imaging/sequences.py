# This file is part of the health_imaging module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"Numbering of imaging orders and results in GNU Health's sequences."
from trytond import backend
from trytond.i18n import gettext
from trytond.model import ModelSQL, ValueMixin, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Id

from .exceptions import ImagingSequenceError

# The field names of GNU Health's own imaging package: modules written for
# it, like health_services_imaging, read imaging_req_seq
imaging_req_seq = fields.Many2One(
    'ir.sequence', "Imaging Request Sequence", required=True,
    domain=[('sequence_type', '=', Id(
                'health_imaging', 'seq_type_gnuhealth_imaging_test_request'))])
imaging_sequence = fields.Many2One(
    'ir.sequence', "Imaging Result Sequence", required=True,
    domain=[('sequence_type', '=', Id(
                'health_imaging', 'seq_type_gnuhealth_imaging_test'))])


class GnuHealthSequences(metaclass=PoolMeta):
    __name__ = 'gnuhealth.sequences'

    imaging_req_seq = fields.MultiValue(imaging_req_seq)
    imaging_sequence = fields.MultiValue(imaging_sequence)

    @classmethod
    def default_imaging_req_seq(cls, **pattern):
        return cls._default_imaging_sequence(
            'seq_gnuhealth_imaging_test_request')

    @classmethod
    def default_imaging_sequence(cls, **pattern):
        return cls._default_imaging_sequence('seq_gnuhealth_imaging_test')

    @classmethod
    def _default_imaging_sequence(cls, xml_id):
        ModelData = Pool().get('ir.model.data')
        try:
            return ModelData.get_id('health_imaging', xml_id)
        except KeyError:
            return None

    @classmethod
    def get_imaging_number(cls, field_name):
        "Return the next number of the sequence configured in field_name"
        config = cls(1)
        sequence = config.get_multivalue(field_name)
        if not sequence:
            raise ImagingSequenceError(gettext(
                    'health_imaging.msg_sequence_missing',
                    field=cls.__names__(field_name)['field']))
        return sequence.get()


class ImagingRequestSequence(ModelSQL, ValueMixin):
    "Imaging Request Sequence Setup"
    __name__ = 'gnuhealth.sequences.imaging_req_seq'
    imaging_req_seq = imaging_req_seq


class ImagingSequence(ModelSQL, ValueMixin):
    "Imaging Result Sequence Setup"
    __name__ = 'gnuhealth.sequences.imaging_sequence'
    imaging_sequence = imaging_sequence

    @classmethod
    def __register__(cls, module_name):
        # GNU Health's own health_imaging names it imaging_test_sequence
        TableHandler = backend.TableHandler
        legacy = 'gnuhealth_sequences_imaging_test_sequence'
        if (TableHandler.table_exist(legacy)
                and not TableHandler.table_exist(cls._table)):
            TableHandler.table_rename(legacy, cls._table)
            cls.__table_handler__(module_name).column_rename(
                'imaging_test_sequence', 'imaging_sequence')
        super().__register__(module_name)
