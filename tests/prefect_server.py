"""A real ``prefect server start`` on loopback for tests, and a clean stop of process trees.

Each server gets its own ``PREFECT_HOME`` and a free port; its clients get the environment to
reach it. Stopping kills the whole process group and every descendant: an orphaned uvicorn
server would outlive the test run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from geoseg.flows.temporary_server import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Server:
    """A Prefect server on loopback and the environment its clients need."""

    api_url: str
    env: dict[str, str]
    logs: Path

    def log_tail(self) -> str:
        """The last lines of every process log, for failure messages."""
        parts = []
        for log in sorted(self.logs.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-40:]
            parts.append(f"--- {log.name} ---\n" + "\n".join(lines))
        return "\n".join(parts)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start a long-running ``prefect`` command in a session of its own, logging to a file."""
        with (self.logs / f"{name}.log").open("wb") as log:
            return subprocess.Popen(
                [str(BIN / "prefect"), *args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def call(self, *args: str) -> None:
        """Run a ``prefect`` command to completion; fail with its output if it fails."""
        done = subprocess.run(
            [str(BIN / "prefect"), *args, "--no-prompt"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 0, (
            f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}\n{self.log_tail()}"
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process, its process group and every descendant (uvicorn, flow-run processes)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        tree = psutil.Process(process.pid).children(recursive=True)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)
    for child in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


@contextlib.contextmanager
def running_server(tmp_path: Path) -> Iterator[Server]:
    """``prefect server start`` on a free loopback port with its own home, stopped afterwards."""
    port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    base |= {
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    api_url = f"http://127.0.0.1:{port}/api"
    client_env = base | {"PREFECT_API_URL": api_url, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    server = Server(api_url, client_env, logs)
    process = Server(api_url, base, logs).start(
        "server", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the server exited early\n{server.log_tail()}"
            assert time.monotonic() < deadline, f"no /api/health in 60 s\n{server.log_tail()}"
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{api_url}/health", timeout=2) as response,
            ):
                if response.status == 200:
                    break
            time.sleep(0.25)
        yield server
    finally:
        stop(process)
