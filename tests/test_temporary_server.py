"""One temporary Prefect server per local run, shared by the flow and its Dask workers."""

from __future__ import annotations

import threading
from pathlib import Path

import psutil
import pytest
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, temporary_settings

from geoseg import run
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
    shared = SubprocessASGIServer().server_process
    assert shared is not None
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
