"""A run killed at any point resumes without redoing finished batches or changing its result."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import geoseg.tasks.cache
from geoseg import run
from geoseg.flows.segment import RunResult
from geoseg.tasks.cache import cache_folder
from tests.oracle_model import write_oracle_model
from tests.scenes import NODATA, objects_of, scene_bands

pytestmark = pytest.mark.e2e

TILING = {"tile_size": 96, "overlap_px": 8, "batch_size": 2}


@pytest.fixture
def oracle(tmp_path: Path) -> Path:
    return write_oracle_model(tmp_path / "oracle.pt")


def test_whole_run_killed_then_resumed_matches_an_uninterrupted_run(
    make_raster, oracle: Path, tmp_path: Path, dask_address: str
) -> None:
    scene = make_raster(scene_bands(), nodata=NODATA)
    out = tmp_path / "objects.gpkg"
    command = [
        Path(sys.executable).with_name("geoseg"),
        "run",
        scene,
        "-o",
        out,
        "--model",
        oracle,
        "--workers",
        "1",
        "--tile-size",
        "96",
        "--overlap",
        "8",
        "--batch-size",
        "2",
    ]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    process = subprocess.Popen(command, env=env, start_new_session=True)
    deadline = time.monotonic() + 180
    done: list[Path] = []
    while time.monotonic() < deadline and process.poll() is None:
        done = list(cache_folder(out).glob("*/batch-*.npz"))
        if len(done) >= 4:
            break
        time.sleep(0.05)
    # The whole tree, including the temporary Prefect server, which runs in a session of its own.
    tree = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGKILL)
    for child in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    process.wait(timeout=30)
    assert len(done) >= 4, "the run must be killed after some batches finished"
    assert not out.exists()

    resumed = run([scene], out, model=oracle, dask_address=dask_address, **TILING)
    assert len(done) <= resumed.batches_reused < resumed.batches
    assert not cache_folder(out).exists()

    fresh = run([scene], tmp_path / "fresh.gpkg", model=oracle, dask_address=dask_address, **TILING)
    assert fresh.batches_reused == 0
    assert objects_of(out) == objects_of(fresh.output)


def test_changed_parameters_never_reuse_stale_batches(
    make_raster, oracle: Path, tmp_path: Path, dask_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = make_raster(scene_bands(), nodata=NODATA)
    out = tmp_path / "objects.gpkg"
    first = run([scene], out, model=oracle, dask_address=dask_address, keep_cache=True, **TILING)
    assert first.batches_reused == 0
    assert cache_folder(out).exists()

    def rerun(**options: object) -> RunResult:
        kept = {"keep_cache": True} if "clear_cache" not in options else {}
        return run(
            [scene],
            out,
            model=oracle,
            dask_address=dask_address,
            overwrite=True,
            **{**TILING, **kept, **options},  # type: ignore[arg-type]
        )

    again = rerun()
    assert again.batches_reused == again.batches
    with monkeypatch.context() as patched:
        patched.setattr(geoseg.tasks.cache, "BATCH_LAYOUT", geoseg.tasks.cache.BATCH_LAYOUT + 1)
        regrouped = rerun()
    assert regrouped.batches_reused == 0  # batch files grouped another way are never resumed
    assert rerun(overlap_px=12).batches_reused == 0
    cleared = rerun(clear_cache=True)
    assert cleared.batches_reused == 0
    assert not cache_folder(out).exists()
