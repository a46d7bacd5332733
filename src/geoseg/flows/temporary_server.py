"""One temporary Prefect server for a whole local run: the flow's process and its Dask workers.

Without ``PREFECT_API_URL``, Prefect starts a temporary server in each process that needs an
API; every Dask worker would start one of its own (a process and about 4 s each). Starting it
here and pointing the settings at it makes the workers, which receive the flow's settings with
each task, report to the same server.

The server runs as Prefect runs its own temporary server (uvicorn on a free loopback port, with
this process's settings, no UI), but is started without importing Prefect's server modules into
this process: that import alone takes about 4 s of CPU at the start of every run, while the
Dask workers start beside it.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import certifi
import httpx
import prefect
from prefect.settings import (
    PREFECT_API_SSL_CERT_FILE,
    PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
    PREFECT_API_URL,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    get_current_settings,
    temporary_settings,
)

BEGIN, END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
PORT_IN_USE = 3  # uvicorn's exit status when its port was taken before it bound it

_running: dict[str, subprocess.Popen[bytes]] = {}
"""This process's temporary server, by API URL: started once, stopped at exit."""


@contextmanager
def shared_temporary_server(share: bool) -> Iterator[None]:
    """Run the block against ``PREFECT_API_URL``, or, when none is set and ``share`` (the
    workers run on this machine, so they can reach a server on loopback), against a temporary
    server started here. It is stopped when the process exits, as Prefect stops its own; later
    runs in the same process use it again."""
    if not share or PREFECT_API_URL.value():
        yield
        return
    with temporary_settings(updates={PREFECT_API_URL: running_server(), **loopback_tls()}):
        yield


def running_server() -> str:
    """The API URL of this process's temporary server, started if none is running."""
    for api_url, process in list(_running.items()):
        if process.poll() is None:
            return api_url
        del _running[api_url]
    return start_server()


def start_server() -> str:
    """Start a Prefect API server on a free loopback port; return its API URL once healthy."""
    deadline = time.monotonic() + PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
    while True:
        port = free_port()
        process = subprocess.Popen(server_command(port), env=server_environment())
        atexit.register(stop_server, process)
        api_url = f"http://127.0.0.1:{port}/api"
        status = wait_until_healthy(process, api_url, deadline)
        if status is None:
            _running[api_url] = process
            return api_url
        if status != PORT_IN_USE:
            raise RuntimeError(f"the temporary Prefect server exited with status {status}")


def server_command(port: int) -> list[str]:
    """The command that serves Prefect's API, as Prefect runs its temporary server."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(Path(prefect.__file__).parent.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]


def server_environment() -> dict[str, str]:
    """This process's environment and Prefect settings, marked as a temporary server's (no UI)."""
    return {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }


def free_port() -> int:
    """A loopback port that is free now (the server retries if it is taken meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_healthy(
    process: subprocess.Popen[bytes], api_url: str, deadline: float
) -> int | None:
    """Poll the server's health until it answers (``None``) or its process exits (its status).

    Raises
    ------
    RuntimeError
        The server neither answered nor exited before the deadline; it is stopped.
    """
    with httpx.Client() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return process.returncode
            try:
                if client.get(f"{api_url}/health").status_code == httpx.codes.OK:
                    return None
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    stop_server(process)
    raise RuntimeError(f"the temporary Prefect server did not answer at {api_url} in time")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Stop a server process: terminate, then kill if it lingers."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def is_temporary(api_url: str | None) -> bool:
    """Whether runs go to a temporary server: none configured, or the one started here."""
    return not api_url or api_url in _running


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
