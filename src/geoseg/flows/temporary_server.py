"""One temporary Prefect server for a whole local run: the flow's process and its Dask workers.

Without ``PREFECT_API_URL``, Prefect starts a temporary server in each process that needs an
API; every Dask worker would start one of its own (a process and about 4 s each). Starting it
here and pointing the settings at it makes the workers, which receive the flow's settings with
each task, report to the same server.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import certifi
from prefect.settings import (
    PREFECT_API_SSL_CERT_FILE,
    PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
    PREFECT_API_URL,
    temporary_settings,
)

BEGIN, END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"


@contextmanager
def shared_temporary_server(share: bool) -> Iterator[None]:
    """Run the block against ``PREFECT_API_URL``, or, when none is set and ``share`` (the
    workers run on this machine, so they can reach a server on loopback), against a temporary
    server started here. Prefect stops it when the process exits, as it does its own."""
    if not share or PREFECT_API_URL.value():
        yield
        return
    # The server's module costs seconds to import: only when a temporary server is needed.
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url, **loopback_tls()}):
        yield


def loopback_tls() -> dict[Any, Any]:
    """Settings that make Prefect's clients cheap to create against the temporary server.

    Every Prefect client builds a TLS context from a CA bundle, even for a plain-HTTP API: 50
    ms or more with certifi's or the system's bundle (``SSL_CERT_FILE``), for every task run on
    every worker (Prefect has no way to share one context yet: PrefectHQ/prefect#19106). The
    temporary server speaks plain HTTP on loopback, so no bundle is ever used; one certificate
    will do. These settings only concern TLS to the Prefect API, which this server has none of.
    """
    return {
        PREFECT_API_SSL_CERT_FILE: str(one_certificate_bundle()),
        PREFECT_API_TLS_INSECURE_SKIP_VERIFY: False,
    }


def one_certificate_bundle() -> Path:
    """A CA file holding certifi's first certificate, in the temporary folder, written once."""
    path = Path(tempfile.gettempdir()) / "geoseg-loopback-ca.pem"
    if not path.exists():
        bundle = Path(certifi.where()).read_text()
        first = bundle[bundle.index(BEGIN) : bundle.index(END) + len(END)]
        partial = path.with_name(f"{path.name}.{os.getpid()}")
        partial.write_text(first + "\n")
        partial.replace(path)
    return path


def is_temporary(api_url: str | None) -> bool:
    """Whether runs go to a temporary server: none configured, or the one started above."""
    if not api_url:
        return True
    if "prefect.server.api.server" not in sys.modules:
        return False  # no temporary server was started in this process
    server = sys.modules["prefect.server.api.server"].SubprocessASGIServer._instances.get(None)
    return server is not None and server.running and api_url == server.api_url
