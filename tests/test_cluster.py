"""Runs on a real cluster of hand-started ``dask scheduler`` and ``dask worker`` processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from geoseg import run
from geoseg.tasks.cache import cache_folder
from tests.conftest import kill_survivors
from tests.oracle_model import write_oracle_model
from tests.scenes import NODATA, objects_of, scene_bands

pytestmark = pytest.mark.e2e


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and two single-threaded workers on loopback, as separate processes."""
    folder = tmp_path_factory.mktemp("cluster")
    scheduler_file = folder / "scheduler.json"
    bin_dir = Path(sys.executable).parent
    processes = [
        start(
            [
                bin_dir / "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                ":0",
                "--scheduler-file",
                scheduler_file,
            ],
            folder / "scheduler.log",
        )
    ]
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    address = json.loads(scheduler_file.read_text())["address"]
    processes += [
        start(
            [
                bin_dir / "dask",
                "worker",
                address,
                "--nthreads",
                "1",
                "--nworkers",
                "1",
                "--host",
                "127.0.0.1",
                "--dashboard-address",
                ":0",
                "--memory-limit",
                "4GB",
            ],
            folder / f"worker-{n}.log",
        )
        for n in range(2)
    ]
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        yield address
        # Workers that ran Prefect tasks started temporary Prefect servers of their own (they are
        # remote to the run), which outlive a worker stopped by the shutdown.
        descendants = [
            child
            for process in processes
            for child in psutil.Process(process.pid).children(recursive=True)
        ]
        client.shutdown()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    kill_survivors(descendants)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_oracle_model(tmp_path_factory.mktemp("model") / "oracle.pt")


def test_remote_cluster_gives_the_same_objects_as_a_local_one(
    cluster: str, make_raster, oracle: Path, tmp_path: Path
) -> None:
    scene = make_raster(scene_bands(), nodata=NODATA)
    remote = run(
        [scene],
        tmp_path / "remote.gpkg",
        model=oracle,
        tile_size=128,
        overlap_px=16,
        dask_address=cluster,
    )
    local = run(
        [scene], tmp_path / "local.gpkg", model=oracle, tile_size=128, overlap_px=16, workers=1
    )
    assert remote.objects == local.objects == 8
    assert objects_of(remote.output) == objects_of(local.output)


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(
    cluster: str, make_raster, oracle: Path, tmp_path: Path
) -> None:
    from distributed import Client

    scene = make_raster(scene_bands(), nodata=NODATA)
    expected = run(
        [scene],
        tmp_path / "expected.gpkg",
        model=oracle,
        tile_size=96,
        overlap_px=8,
        batch_size=2,
        dask_address=cluster,
    )
    with Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
    result: dict[str, object] = {}

    def segment() -> None:
        result["run"] = run(
            [scene],
            tmp_path / "killed.gpkg",
            model=oracle,
            tile_size=96,
            overlap_px=8,
            batch_size=2,
            dask_address=cluster,
        )

    thread = threading.Thread(target=segment)
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and thread.is_alive():
        batches = list(cache_folder(tmp_path / "killed.gpkg").glob("*/batch-*.npz"))
        if len(batches) >= 4:
            break
        time.sleep(0.05)
    assert 4 <= len(batches) < 28, "the worker must be killed while the run is under way"
    # The killed worker's own temporary Prefect server would outlive it.
    orphans = psutil.Process(pids[0]).children(recursive=True)
    os.kill(pids[0], signal.SIGKILL)
    kill_survivors(orphans)
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert objects_of(tmp_path / "killed.gpkg") == objects_of(expected.output)
    with Client(cluster) as client:
        client.wait_for_workers(2, timeout=60)
        assert pids[0] not in client.run(os.getpid).values()


@pytest.fixture(scope="module")
def gpu_and_cpu_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler with a worker offering two GPU slots and a CPU-only worker."""
    from distributed import Client, LocalCluster

    folder = tmp_path_factory.mktemp("resources")
    with LocalCluster(n_workers=0, dashboard_address=":0", host="127.0.0.1") as scheduler:
        worker = [Path(sys.executable).parent / "dask", "worker", scheduler.scheduler_address]
        worker += ["--nthreads", "2", "--dashboard-address", ":0", "--host", "127.0.0.1"]
        processes = [
            start([*worker, "--name", "gpu", "--resources", "GPU=2"], folder / "gpu.log"),
            start([*worker, "--name", "cpu"], folder / "cpu.log"),
        ]
        try:
            with Client(scheduler.scheduler_address, timeout=60) as client:
                client.wait_for_workers(2, timeout=60)
            yield scheduler.scheduler_address
        finally:
            descendants = [
                child
                for process in processes
                for child in psutil.Process(process.pid).children(recursive=True)
            ]
            for process in processes:
                process.terminate()
                process.wait(timeout=30)
            kill_survivors(descendants)


def test_cuda_batches_land_only_on_workers_that_offer_gpus(gpu_and_cpu_workers: str) -> None:
    # The flow submits batches inside dask.annotate(resources=batch_resources(device)); the
    # client behind prefect-dask's task runner merges those annotations into each task.
    from dask.base import annotate
    from distributed import Client, get_worker

    from geoseg.flows.segment import batch_resources

    def where(_: int) -> str:
        return str(get_worker().name)

    with Client(gpu_and_cpu_workers, timeout=60) as client:
        with annotate(resources=batch_resources("cuda")):
            futures = [client.submit(where, n, pure=False) for n in range(12)]
        gpu_only = client.gather(futures)
        with annotate(resources=batch_resources("auto")):
            futures = [client.submit(where, n, pure=False) for n in range(24)]
        anywhere = client.gather(futures)

    assert set(gpu_only) == {"gpu"}
    assert set(anywhere) <= {"gpu", "cpu"}
    assert batch_resources("auto") == batch_resources("cpu") == {}
