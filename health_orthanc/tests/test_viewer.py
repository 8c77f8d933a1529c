# This file is part of the health_orthanc module for GNU Health.
# The COPYRIGHT file at the top level of this repository contains the full
# copyright notices and license terms.
"""Tests of the viewer URLs, plain and against a real Orthanc with the
Web Viewer and DICOMweb plugins."""
import pytest

from trytond.modules.health_orthanc.orthanc_client import OrthancClient
from trytond.modules.health_orthanc.viewer import (
    VIEWERS, explorer_url, format_plugins, middle_instance, parse_plugins,
    series_urls, study_urls)

from .dicom_samples import make_study
from .orthanc_server import OrthancServer, plugin_path

BASE = 'https://pacs.example.org/orthanc'
STUDY = '6b9e19d9-62094390-5f9ddb01-4a191ae7-9766b715'
SERIES = '9c22365a-d4c3137a-a6b7a68a-44490396-9fe01bae'
STUDY_UID = '1.2.840.113619.2.1'
SERIES_UID = '1.2.840.113619.2.1.3'
ALL = ['explorer.js', 'dicom-web', 'web-viewer', 'stone-webviewer', 'ohif']


@pytest.mark.parametrize('value, expected', [
    (None, set()),
    ('', set()),
    ([], set()),
    (['explorer.js', 'dicom-web', 'web-viewer'], {'dicom-web', 'web-viewer'}),
    ('dicom-web, web-viewer', {'dicom-web', 'web-viewer'}),
    (' ohif  stone-webviewer ', {'ohif', 'stone-webviewer'}),
    ])
def test_parse_plugins(value, expected):
    assert parse_plugins(value) == expected


def test_format_plugins():
    assert format_plugins(['web-viewer', 'explorer.js', 'dicom-web']) == (
        'dicom-web, web-viewer')
    assert parse_plugins(format_plugins(ALL)) == parse_plugins(ALL)
    assert format_plugins(None) == ''


@pytest.mark.parametrize('base, plugins, uid, expected', [
    (BASE, [], STUDY_UID, {
            'explorer': BASE + '/app/explorer.html#study?uuid=' + STUDY,
            }),
    # a trailing slash and upper-case host are normalized
    ('HTTPS://PACS.example.org/orthanc/', ['web-viewer'], STUDY_UID, {
            'explorer': BASE + '/app/explorer.html#study?uuid=' + STUDY,
            }),
    (BASE, ALL, STUDY_UID, {
            'explorer': BASE + '/app/explorer.html#study?uuid=' + STUDY,
            'stone': BASE + '/stone-webviewer/index.html?study=' + STUDY_UID,
            'ohif': BASE + '/ohif/viewer?StudyInstanceUIDs=' + STUDY_UID,
            }),
    # OHIF without DICOMweb: its DICOM JSON data source, by Orthanc ID
    (BASE, 'ohif', STUDY_UID, {
            'explorer': BASE + '/app/explorer.html#study?uuid=' + STUDY,
            'ohif': BASE + '/ohif/viewer?url=../studies/%s/ohif-dicom-json'
            % STUDY,
            }),
    # no StudyInstanceUID: no viewer by UID
    (BASE, ALL, None, {
            'explorer': BASE + '/app/explorer.html#study?uuid=' + STUDY,
            }),
    ('http://127.0.0.1:8042', 'stone-webviewer', STUDY_UID, {
            'explorer': 'http://127.0.0.1:8042/app/explorer.html'
            '#study?uuid=' + STUDY,
            'stone': 'http://127.0.0.1:8042/stone-webviewer/index.html'
            '?study=' + STUDY_UID,
            }),
    (None, ALL, STUDY_UID, {}),
    ])
def test_study_urls(base, plugins, uid, expected):
    urls = study_urls(base, plugins, STUDY, uid)
    assert list(urls) == list(VIEWERS)
    assert urls == dict(dict.fromkeys(VIEWERS), **expected)


@pytest.mark.parametrize('plugins, study_uid, series_uid, expected', [
    ([], STUDY_UID, SERIES_UID, {
            'explorer': BASE + '/app/explorer.html#series?uuid=' + SERIES,
            }),
    (['web-viewer'], STUDY_UID, SERIES_UID, {
            'explorer': BASE + '/app/explorer.html#series?uuid=' + SERIES,
            'web_viewer': BASE + '/web-viewer/app/viewer.html?series='
            + SERIES,
            }),
    (ALL, STUDY_UID, SERIES_UID, {
            'explorer': BASE + '/app/explorer.html#series?uuid=' + SERIES,
            'web_viewer': BASE + '/web-viewer/app/viewer.html?series='
            + SERIES,
            'stone': BASE + '/stone-webviewer/index.html?study=%s&series=%s'
            % (STUDY_UID, SERIES_UID),
            'ohif': BASE + '/ohif/viewer?StudyInstanceUIDs=' + STUDY_UID,
            }),
    # Stone needs both UIDs
    (['stone-webviewer'], STUDY_UID, None, {
            'explorer': BASE + '/app/explorer.html#series?uuid=' + SERIES,
            }),
    (['ohif'], None, None, {
            'explorer': BASE + '/app/explorer.html#series?uuid=' + SERIES,
            'ohif': BASE + '/ohif/viewer?url=../studies/%s/ohif-dicom-json'
            % STUDY,
            }),
    ])
def test_series_urls(plugins, study_uid, series_uid, expected):
    urls = series_urls(BASE, plugins, SERIES, STUDY, study_uid, series_uid)
    assert urls == dict(dict.fromkeys(VIEWERS), **expected)


def test_identifiers_quoted():
    urls = series_urls(BASE, ALL, 'a b#c', 'd&e', '1.2&x=3', '4 5')
    assert urls['explorer'].endswith('#series?uuid=a%20b%23c')
    assert urls['web_viewer'].endswith('?series=a%20b%23c')
    assert urls['stone'].endswith('?study=1.2%26x%3D3&series=4%205')


def test_explorer_url():
    "Orthanc Explorer's home page, behind a path prefix too"
    assert explorer_url(BASE) == BASE + '/app/explorer.html'
    assert explorer_url(BASE + '/') == BASE + '/app/explorer.html'
    assert explorer_url(None) is None


def test_no_orthanc_id():
    assert study_urls(BASE, ALL, None, STUDY_UID) == dict.fromkeys(VIEWERS)
    assert series_urls(BASE, ALL, '') == dict.fromkeys(VIEWERS)


def test_real_orthanc_viewers(tmp_path):
    "The URLs open the pages of a real Orthanc with the Web Viewer plugin"
    plugins = [plugin_path('WebViewer'), plugin_path('DicomWeb')]
    with OrthancServer(str(tmp_path), plugins=plugins) as orthanc:
        for data in make_study(n_series=1, n_instances=2):
            answer = orthanc.upload(data)
        client = OrthancClient(orthanc.url, orthanc.user, orthanc.password)
        detected = client.plugins()
        assert {'web-viewer', 'dicom-web'} <= set(detected)
        study = client.get_study(answer['ParentStudy'])
        series = client.get_series(answer['ParentSeries'])
        urls = series_urls(orthanc.url, detected, series['ID'], study['ID'],
            study['MainDicomTags']['StudyInstanceUID'],
            series['MainDicomTags']['SeriesInstanceUID'])
        assert urls['stone'] is None and urls['ohif'] is None
        session = orthanc.session()
        page = session.get(urls['web_viewer'])
        assert page.status_code == 200
        assert 'text/html' in page.headers['Content-Type']
        # the page reads the series it is given, relative to the viewer
        assert session.get(orthanc.url + '/web-viewer/series/'
            + series['ID']).status_code == 200
        explorer = study_urls(orthanc.url, detected, study['ID'])['explorer']
        page, fragment = explorer.split('#')
        assert page == explorer_url(orthanc.url)
        assert fragment == 'study?uuid=' + study['ID']
        response = session.get(page)
        assert response.status_code == 200
        assert 'Orthanc Explorer' in response.text
        assert 'id="study"' in response.text
        assert 'id="series"' in response.text


def _instance(id_, index=None, number=None):
    tags = {} if number is None else {'InstanceNumber': number}
    return {'ID': id_, 'IndexInSeries': index, 'MainDicomTags': tags}


@pytest.mark.parametrize('instances, expected', [
    ([], None),
    ([_instance('a', 1)], 'a'),
    ([_instance('a', 1), _instance('b', 2)], 'b'),
    ([_instance('c', 3), _instance('a', 1), _instance('b', 2)], 'b'),
    # no IndexInSeries: the InstanceNumber tag, even as text
    ([_instance('x', None, '10'), _instance('y', None, '2'),
        _instance('z', None, '1')], 'y'),
    # neither: by ID
    ([_instance('3'), _instance('1'), _instance('2')], '2'),
    # unnumbered ones last
    ([_instance('n'), _instance('a', 1), _instance('b', 2)], 'b'),
    ([_instance('a', 'bad', 'bad'), _instance('b', 1)], 'a'),
    ])
def test_middle_instance(instances, expected):
    middle = middle_instance(instances)
    assert (middle and middle['ID']) == expected
