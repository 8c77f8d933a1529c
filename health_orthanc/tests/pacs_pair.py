# This file is part of GNU Health.  The COPYRIGHT file at the top level of
# this repository contains the full copyright notices and license terms.
"""Two real Orthancs on loopback: a hospital PACS and GNU Health's own.

Each one declares the other in its configuration file's
``DicomModalities``, so their DICOM ports are chosen before they start.
Orthanc's DCMTK leaves Nagle's algorithm on unless ``TCP_NODELAY`` is set
in its environment (~90 ms per DICOM exchange on loopback): it is set
while the servers start.

Self-contained (module tests must not import the top-level ``tests``
package); the top-level tests and the benchmark import it.
"""
import contextlib
import os

from .orthanc_server import OrthancServer, free_port

__all__ = ['PACS_AET', 'OUR_AET', 'nodelay', 'start_pacs', 'start_pair']

PACS_AET = 'PACS'
OUR_AET = 'GNUHEALTH'


@contextlib.contextmanager
def nodelay(enabled: bool = True):
    "Set (or remove) TCP_NODELAY=1 in the environment of started processes"
    saved = os.environ.get('TCP_NODELAY')
    if enabled:
        os.environ['TCP_NODELAY'] = '1'
    else:
        os.environ.pop('TCP_NODELAY', None)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop('TCP_NODELAY', None)
        else:
            os.environ['TCP_NODELAY'] = saved


def start_pacs(workdir: str, our_port: int, port: int | None = None,
        aet: str = PACS_AET, config: dict | None = None,
        tcp_nodelay: bool = True) -> OrthancServer:
    """Start an Orthanc playing a PACS that knows our Orthanc.

    ``our_port`` is the DICOM port of GNU Health's Orthanc (AE title
    :data:`OUR_AET`); ``port`` the PACS's own DICOM port (a free one if
    None), available as ``server.dicom_port_used``.
    """
    port = port or free_port()
    extra = {
        'DicomPort': port,
        'DicomModalities': {OUR_AET: [OUR_AET, '127.0.0.1', our_port]},
        }
    extra.update(config or {})
    with nodelay(tcp_nodelay):
        server = OrthancServer(workdir, dicom=True, aet=aet,
            extra_config=extra).start()
    server.dicom_port_used = port
    return server


def start_pair(workdir: str, pacs_config: dict | None = None,
        our_config: dict | None = None, tcp_nodelay: bool = True):
    """Start the PACS and our Orthanc; return ``(pacs, ours)``.

    Our Orthanc's configuration file declares the PACS as the node
    ``PACS``.  The DICOM ports in use are ``server.dicom_port_used``.
    """
    pacs_port, our_port = free_port(), free_port()
    pacs = start_pacs(os.path.join(workdir, 'pacs'), our_port, pacs_port,
        config=pacs_config, tcp_nodelay=tcp_nodelay)
    extra = {
        'DicomPort': our_port,
        'DicomModalities': {PACS_AET: [PACS_AET, '127.0.0.1', pacs_port]},
        }
    extra.update(our_config or {})
    try:
        with nodelay(tcp_nodelay):
            ours = OrthancServer(os.path.join(workdir, 'ours'), dicom=True,
                aet=OUR_AET, extra_config=extra).start()
    except Exception:
        pacs.stop()
        raise
    ours.dicom_port_used = our_port
    return pacs, ours
