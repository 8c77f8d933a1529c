# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"The two Orthancs of the PACS tests: kept in the module's tests package"
from trytond.modules.health_orthanc.tests.pacs_pair import (  # noqa: F401
    OUR_AET, PACS_AET, nodelay, start_pacs, start_pair)
