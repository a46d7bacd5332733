"""One temporary Prefect server for a whole local run: the flow's process and its Dask workers.

Without ``PREFECT_API_URL``, Prefect starts a temporary server in each process that needs an
API; every Dask worker would start one of its own (a process and about 4 s each). Starting it
here and pointing the settings at it makes the workers, which receive the flow's settings with
each task, report to the same server.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.settings import PREFECT_API_URL, temporary_settings


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
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield


def is_temporary(api_url: str | None) -> bool:
    """Whether runs go to a temporary server: none configured, or the one started above."""
    if not api_url:
        return True
    if "prefect.server.api.server" not in sys.modules:
        return False  # no temporary server was started in this process
    server = sys.modules["prefect.server.api.server"].SubprocessASGIServer._instances.get(None)
    return server is not None and server.running and api_url == server.api_url
