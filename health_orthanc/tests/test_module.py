# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
from trytond.modules.company.tests import CompanyTestMixin
from trytond.tests.test_tryton import ModuleTestCase


class HealthOrthancTestCase(CompanyTestMixin, ModuleTestCase):
    "Test health_orthanc module"
    module = 'health_orthanc'


del ModuleTestCase
