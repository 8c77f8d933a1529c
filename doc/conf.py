# Sphinx configuration of the documentation of the health_imaging and
# health_orthanc modules.  Build it with:
#
#     python -m sphinx -W -b html doc /tmp/doc-html

project = 'GNU Health Imaging and Orthanc'
copyright = 'GNU Health contributors'
author = 'GNU Health contributors'
version = '7.0'
release = '7.0.0'

extensions = []

master_doc = 'index'
source_suffix = {'.rst': 'restructuredtext'}
exclude_patterns = ['_build']
default_role = None
pygments_style = 'sphinx'

html_title = '%s %s' % (project, release)
html_static_path = []
