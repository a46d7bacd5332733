"""One temporary Prefect server per local run, shared by the flow and its Dask workers."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import certifi
import httpx
import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import (
    PREFECT_API_SSL_CERT_FILE,
    PREFECT_API_TLS_INSECURE_SKIP_VERIFY,
    PREFECT_API_URL,
    temporary_settings,
)

from geoseg import run
from geoseg.flows import temporary_server
from geoseg.flows.temporary_server import is_temporary, shared_temporary_server
from tests.oracle_model import write_oracle_model
from tests.scenes import NODATA, scene_bands


def prefect_servers() -> set[int]:
    """Process ids of the Prefect API servers this process and its descendants run."""
    found = set()
    for process in psutil.Process().children(recursive=True):
        try:
            command = " ".join(process.cmdline())
        except psutil.Error:
            continue
        if "prefect.server.api.server:create_app" in command:
            found.add(process.pid)
    return found


@pytest.mark.e2e
def test_local_workers_report_to_the_run_s_server_instead_of_starting_their_own(
    make_raster, tmp_path: Path
) -> None:
    raster = make_raster(scene_bands(), nodata=NODATA)
    # Servers of other tests' clusters (whose workers are remote to their runs) may be running.
    before = prefect_servers()
    seen: set[int] = set()
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(0.05):
            seen.update(prefect_servers())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run(
            [raster],
            tmp_path / "objects.gpkg",
            model=write_oracle_model(tmp_path / "oracle.pt"),
            tile_size=128,
            overlap_px=32,
            batch_size=1,
            workers=2,
        )
    finally:
        finished.set()
        watcher.join()
    assert result.batches > 2  # both workers ran tasks
    [shared] = temporary_server._running.values()
    assert shared.pid in before | seen
    assert seen - before - {shared.pid} == set()


def test_a_configured_api_or_a_remote_cluster_gets_no_temporary_server() -> None:
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        with shared_temporary_server(share=True):
            assert PREFECT_API_URL.value() == "http://127.0.0.1:9/api"
        assert not is_temporary(PREFECT_API_URL.value())
    with temporary_settings(restore_defaults={PREFECT_API_URL}), shared_temporary_server(False):
        assert not PREFECT_API_URL.value()
        assert is_temporary(PREFECT_API_URL.value())


def test_the_server_is_reused_by_later_runs_and_restarted_if_it_died() -> None:
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with shared_temporary_server(share=True):
            first = PREFECT_API_URL.value()
            assert is_temporary(first)
            assert httpx.get(f"{first}/health").json() is True
        with shared_temporary_server(share=True):
            assert PREFECT_API_URL.value() == first
        temporary_server._running[first].kill()
        temporary_server._running[first].wait()
        with shared_temporary_server(share=True):
            second = PREFECT_API_URL.value()
            assert httpx.get(f"{second}/health").json() is True
    assert second != first
    assert not is_temporary(first)


def test_clients_of_the_temporary_server_load_one_certificate_whatever_the_user_s_tls() -> None:
    settings = {
        PREFECT_API_SSL_CERT_FILE: certifi.where(),
        PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True,
    }
    with temporary_settings(updates=settings, restore_defaults={PREFECT_API_URL}):
        with shared_temporary_server(share=True):
            assert not PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value()
            bundle = Path(PREFECT_API_SSL_CERT_FILE.value())
            assert bundle.read_text().count("BEGIN CERTIFICATE") == 1
            assert ssl.create_default_context(cafile=bundle).cert_store_stats()["x509_ca"] == 1
            with get_client(sync_client=True) as client:
                assert client.hello().status_code == httpx.codes.OK
        assert PREFECT_API_SSL_CERT_FILE.value() == certifi.where()
