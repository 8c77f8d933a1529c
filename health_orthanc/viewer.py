# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""The web pages that show a study or a series of an Orthanc server.

Plain Python, without Tryton: given the public base URL of the server,
the plugins it runs (the IDs listed by ``GET /plugins``) and the
identifiers of the resource, return the URL of each viewer, or None when
the server has not the plugin.

The formats (checked against Orthanc 1.10.1 and the plugins' sources):

``explorer``
    Orthanc Explorer, built in: ``app/explorer.html#study?uuid=<Orthanc
    ID>`` (``#series?uuid=`` for a series).
``web_viewer``
    The Orthanc Web Viewer plugin (ID ``web-viewer``, e.g. Debian's
    orthanc-webviewer 2.8): ``web-viewer/app/viewer.html?series=<Orthanc
    series ID>``.  It shows one series only, so a study has none.
``stone``
    The Stone Web Viewer plugin (ID ``stone-webviewer``), by DICOM UIDs:
    ``stone-webviewer/index.html?study=<StudyInstanceUID>`` with
    ``&series=<SeriesInstanceUID>`` for a series.
``ohif``
    The OHIF plugin (ID ``ohif``), which opens whole studies: with the
    DICOMweb plugin (its ``dicom-web`` data source)
    ``ohif/viewer?StudyInstanceUIDs=<StudyInstanceUID>``, otherwise its
    ``dicom-json`` data source
    ``ohif/viewer?url=../studies/<Orthanc ID>/ohif-dicom-json``.
"""
from collections.abc import Iterable
from urllib.parse import quote

from .orthanc_client import normalize_domain

__all__ = ['VIEWERS', 'PLUGINS', 'parse_plugins', 'format_plugins',
    'explorer_url', 'study_urls', 'series_urls', 'middle_instance']

#: The viewers, in the order they are shown
VIEWERS = ('explorer', 'web_viewer', 'stone', 'ohif')
EXPLORER = 'app/explorer.html'
WEB_VIEWER = 'web-viewer'
STONE = 'stone-webviewer'
OHIF = 'ohif'
DICOM_WEB = 'dicom-web'
#: The plugin each viewer needs (None: built in)
PLUGINS = {
    'explorer': None,
    'web_viewer': WEB_VIEWER,
    'stone': STONE,
    'ohif': OHIF,
    }


def parse_plugins(value: str | Iterable[str] | None) -> set[str]:
    """Return the set of plugin IDs of ``value``.

    ``value`` is the answer of ``GET /plugins`` (a list) or the text made
    by :func:`format_plugins`; ``explorer.js`` (the extensions of Orthanc
    Explorer, not a plugin) and blanks are left out.
    """
    if not value:
        return set()
    if isinstance(value, str):
        value = value.replace(',', ' ').split()
    return {str(p).strip() for p in value
        if str(p).strip() and str(p).strip() != 'explorer.js'}


def format_plugins(value: str | Iterable[str] | None) -> str:
    "Return the plugin IDs of value as a sorted, comma-separated text"
    return ', '.join(sorted(parse_plugins(value)))


def _id(value: str) -> str:
    return quote(value, safe='-.')


def explorer_url(base_url: str | None) -> str | None:
    "Return the URL of Orthanc Explorer's home page, None without base_url"
    if base_url:
        return '%s/%s' % (normalize_domain(base_url), EXPLORER)


def study_urls(base_url: str, plugins, orthanc_id: str,
        study_uid: str | None = None) -> dict[str, str | None]:
    """Return {viewer: URL or None} for a study.

    Parameters
    ----------
    base_url : str
        The public URL of the Orthanc server (what a browser reaches).
    plugins : str or iterable of str
        The IDs of the plugins of the server, see :func:`parse_plugins`.
    orthanc_id : str
        Orthanc's ID of the study.
    study_uid : str, optional
        The StudyInstanceUID; without it the viewers by UID are None.
    """
    urls = dict.fromkeys(VIEWERS)
    if not base_url or not orthanc_id:
        return urls
    base = normalize_domain(base_url)
    plugins = parse_plugins(plugins)
    urls['explorer'] = '%s/%s#study?uuid=%s' % (
        base, EXPLORER, _id(orthanc_id))
    if study_uid and STONE in plugins:
        urls['stone'] = '%s/stone-webviewer/index.html?study=%s' % (
            base, _id(study_uid))
    if OHIF in plugins:
        urls['ohif'] = _ohif(base, plugins, orthanc_id, study_uid)
    return urls


def series_urls(base_url: str, plugins, orthanc_id: str,
        study_orthanc_id: str | None = None, study_uid: str | None = None,
        series_uid: str | None = None) -> dict[str, str | None]:
    """Return {viewer: URL or None} for a series.

    Parameters are those of :func:`study_urls` for the series, with the
    Orthanc ID and the StudyInstanceUID of its study: Stone opens a
    series within its study, OHIF opens the whole study.
    """
    urls = dict.fromkeys(VIEWERS)
    if not base_url or not orthanc_id:
        return urls
    base = normalize_domain(base_url)
    plugins = parse_plugins(plugins)
    urls['explorer'] = '%s/%s#series?uuid=%s' % (
        base, EXPLORER, _id(orthanc_id))
    if WEB_VIEWER in plugins:
        urls['web_viewer'] = '%s/web-viewer/app/viewer.html?series=%s' % (
            base, _id(orthanc_id))
    if study_uid and series_uid and STONE in plugins:
        urls['stone'] = (
            '%s/stone-webviewer/index.html?study=%s&series=%s' % (
                base, _id(study_uid), _id(series_uid)))
    if OHIF in plugins and study_orthanc_id:
        urls['ohif'] = _ohif(base, plugins, study_orthanc_id, study_uid)
    return urls


def _ohif(base, plugins, study_orthanc_id, study_uid):
    if DICOM_WEB in plugins:
        if study_uid:
            return '%s/ohif/viewer?StudyInstanceUIDs=%s' % (
                base, _id(study_uid))
        return None
    return '%s/ohif/viewer?url=../studies/%s/ohif-dicom-json' % (
        base, _id(study_orthanc_id))


def _int(value):
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def middle_instance(instances: list[dict]) -> dict | None:
    """Return the instance in the middle of a series, None if empty.

    ``instances`` is the answer of ``GET /series/{id}/instances``; they
    are ordered by ``IndexInSeries``, then by the InstanceNumber tag,
    then by ID (instances without a number come last), so the choice
    does not depend on the order Orthanc lists them in.
    """
    def key(instance):
        index = _int(instance.get('IndexInSeries'))
        number = _int((instance.get('MainDicomTags') or {}).get(
                'InstanceNumber'))
        return (index is None, index or 0, number is None, number or 0,
            str(instance.get('ID', '')))
    instances = sorted(instances, key=key)
    if not instances:
        return None
    return instances[len(instances) // 2]
