# This file is part of the GNU Health imaging modules.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""What the legacy database of the upgrade test holds.

Shared by the script that builds it with GNU Health's own modules (run by
the legacy virtualenv's Python: standard library only) and by the test that
uploads the studies to Orthanc and checks the upgraded database.
"""

import datetime

# party.ref (the PUID) of the patients; the legacy sync links a study to the
# patient whose PUID is its PatientID (9 characters or more)
PUID_ANA = 'UPG000001'
PUID_BEN = 'UPG000002'
PUID_CARL = 'UPG000003'

# The studies uploaded to Orthanc before the legacy sync, by seed:
# (PatientID, PatientName, number of series, what the legacy users did)
STUDIES = {
    # linked by PUID to Ana, attached to her result, with notes
    1: (PUID_ANA, 'BETZ^Ana', 2, 'result'),
    # Carl's PUID, linked by hand to Ben: the sync must keep Ben
    2: (PUID_CARL, 'KLEIN^Carl', 1, 'manual'),
    # from another hospital, left alone
    3: ('EXT-777', 'ROSS^Dina', 1, None),
    }
# The study of seed 3 was also synced by GNU Health 4 (its records are kept
# by 5.0), linked by hand to Carl there and attached to Ana's second result
V4_STUDY = 3
STUDY_NOTES = "Compared with the study of last year: unchanged."
SERIES_NOTES = "Motion artefacts on this series."
MERGE_COMMENT = "Checked with the modality operator."

# The catalogue edited by the hospital
MG_LOCAL_NAME = "Mammography (local)"
LOCAL_TESTS = [
    # code, name, type code
    ('CT-HEAD', "Head CT", 'CT'),
    ('US-ABD', "Abdominal ultrasound", 'US'),
    # the code of a test that our module ships: taken over, name kept
    ('IMG-MR-BRAIN', "Brain MRI (local)", 'MR'),
    # a type created by hand with the code of a type that we ship
    ('MAMMO', "Screening mammography", 'MG'),
    ]

INTERPRETATION = "No acute intracranial abnormality."
REQUEST_COMMENT = "Headache for two weeks."
IMAGE_NAME = 'key-image.png'
# A 1x1 PNG
IMAGE_DATA = bytes.fromhex(
    '89504e470d0a1a0a0000000d4948445200000001000000010802000000907753'
    'de0000000c4944415408d763f8ffff3f0005fe02fea73581e40000000049454e'
    '44ae426082')
# The birth date of the patients, the one of the DICOM samples
BIRTH_DATE = datetime.date(1980, 1, 15)
