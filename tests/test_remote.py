"""Rasters read over the network: S3 (a real S3-compatible server on loopback) and HTTP ranges."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pyogrio
import pytest

from geoseg import run
from geoseg.flows.temporary_server import free_port
from tests.conftest import kill_survivors
from tests.oracle_model import write_oracle_model
from tests.scenes import NODATA, objects_of, scene_bands

pytestmark = pytest.mark.e2e


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server on loopback, with GDAL and boto3 pointed at it."""
    port = free_port()
    server = subprocess.Popen(
        [Path(sys.executable).with_name("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_S3_ENDPOINT": f"127.0.0.1:{port}",
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }.items():
        monkeypatch.setenv(name, value)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


@contextlib.contextmanager
def serving(folder: Path, *faults: str) -> Iterator[str]:
    """Serve ``folder`` over HTTP with Range support (and ``faults``, see range_server.py).

    A separate process, not a thread of this one: GDAL holds the GIL while it fetches, which
    would deadlock a server thread here.
    """
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, Path(__file__).with_name("range_server.py"), folder, str(port), *faults]
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP with Range support, by a separate process."""
    folder = tmp_path / "served"
    folder.mkdir()
    with serving(folder) as url:
        yield folder, url


def counts(path: Path) -> dict[str, int]:
    return {
        layer: pyogrio.read_info(path, layer=layer)["features"]
        for layer in ("lawn", "bridge", "building")
    }


def test_a_raster_on_s3_gives_the_same_objects_as_on_disk(
    s3_endpoint: str, make_raster, tmp_path: Path
) -> None:
    import boto3

    scene = make_raster(scene_bands(), nodata=NODATA)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="scenes")
    s3.upload_file(str(scene), "scenes", "city/scene.tif")
    oracle = write_oracle_model(tmp_path / "oracle.pt")
    out = tmp_path / "remote.gpkg"
    # A process of its own, as a user would run it: its workers inherit the AWS settings.
    result = subprocess.run(
        [
            Path(sys.executable).with_name("geoseg"),
            "run",
            "s3://scenes/city/scene.tif",
            "-o",
            out,
            "--model",
            oracle,
            "--tile-size",
            "256",
            "--overlap",
            "32",
            "--workers",
            "1",
        ],
        env={**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert counts(out) == {"lawn": 4, "bridge": 1, "building": 3}
    run_table = pyogrio.read_dataframe(out, layer="run")
    assert run_table.loc[0, "sources"] == "s3://scenes/city/scene.tif"
    for column in run_table.columns:
        assert "testing-secret" not in str(run_table.loc[0, column])
    assert "testing-secret" not in result.stdout + result.stderr


def test_a_raster_over_http_is_read_with_range_requests(
    http_folder: tuple[Path, str], make_raster, tmp_path: Path, dask_address: str
) -> None:
    folder, url = http_folder
    scene = make_raster(scene_bands(), nodata=NODATA)
    os.replace(scene, folder / "scene.tif")
    oracle = write_oracle_model(tmp_path / "oracle.pt")
    result = run(
        [f"{url}/scene.tif"],
        tmp_path / "http.gpkg",
        model=oracle,
        tile_size=256,
        overlap_px=32,
        dask_address=dask_address,
    )
    assert counts(result.output) == {"lawn": 4, "bridge": 1, "building": 3}


def test_a_missing_object_on_s3_is_one_clear_error(s3_endpoint: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from geoseg.cli.main import cli

    oracle = write_oracle_model(tmp_path / "oracle.pt")
    result = CliRunner().invoke(
        cli,
        ["run", "s3://scenes/absent.tif", "-o", str(tmp_path / "o.gpkg"), "--model", str(oracle)],
    )
    assert result.exit_code == 2
    assert result.output.startswith("Error: s3://scenes/absent.tif")
    assert len(result.output.strip().splitlines()) == 1
    assert "testing-secret" not in result.output


def test_transient_http_errors_are_retried_and_change_no_object(
    make_raster, tmp_path: Path, dask_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.1")
    folder = tmp_path / "served"
    folder.mkdir()
    scene = make_raster(scene_bands(), nodata=NODATA)
    os.replace(scene, folder / "scene.tif")
    oracle = write_oracle_model(tmp_path / "oracle.pt")
    options = {"model": oracle, "tile_size": 256, "overlap_px": 32, "dask_address": dask_address}
    local = run([folder / "scene.tif"], tmp_path / "local.gpkg", **options)

    # The first three ranged reads get 503: without retries the raster cannot even be opened.
    with serving(folder, "--fail-first", "3") as url:
        remote = run([f"{url}/scene.tif"], tmp_path / "remote.gpkg", **options)

    assert remote.failures == ()
    assert objects_of(remote.output) == objects_of(local.output)
    assert len(objects_of(local.output)) == 8


def test_an_outage_while_workers_read_pixels_is_survived_by_retrying_their_tasks(
    make_raster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No GDAL retries, in this process and in a worker started here with that environment (a
    # local cluster's workers may be forked from a process started before any monkeypatch): a
    # read that meets the outage fails its batch task, and only Prefect's task retries (after
    # 1 s, then 4 s) can still produce every object.
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
    folder = tmp_path / "served"
    folder.mkdir()
    os.replace(make_raster(scene_bands(), nodata=NODATA), folder / "scene.tif")
    middle = (folder / "scene.tif").stat().st_size // 2  # pixels: the header lies at the start
    oracle = write_oracle_model(tmp_path / "oracle.pt")
    refused = tmp_path / "refused.log"
    outage = ("--outage-from", str(middle), "--outage-seconds", "2", "--failures-log", str(refused))
    with worker_without_gdal_retries(tmp_path) as address, serving(folder, *outage) as url:
        result = run(
            [f"{url}/scene.tif"],
            tmp_path / "objects.gpkg",
            model=oracle,
            tile_size=256,
            overlap_px=32,
            dask_address=address,
        )

    assert counts(result.output) == {"lawn": 4, "bridge": 1, "building": 3}
    assert result.failures == ()
    # Reads of pixels met the outage (task-run counts in Prefect's API arrive as events from
    # the workers, too late or not at all under load: the server's log is the evidence).
    first_refused = int(refused.read_text().split()[0])
    assert first_refused >= middle


@contextlib.contextmanager
def worker_without_gdal_retries(tmp_path: Path) -> Iterator[str]:
    """A scheduler and one ``dask worker`` process whose environment turns GDAL's retries off."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=0, dashboard_address=":0", host="127.0.0.1") as cluster:
        env = {**os.environ, "GDAL_HTTP_MAX_RETRY": "0"}
        worker = [Path(sys.executable).parent / "dask", "worker", cluster.scheduler_address]
        worker += ["--nthreads", "1", "--dashboard-address", ":0", "--host", "127.0.0.1"]
        with (tmp_path / "worker.log").open("wb") as log:
            process = subprocess.Popen(worker, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            with Client(cluster.scheduler_address, timeout=60) as client:
                client.wait_for_workers(1, timeout=60)
            yield cluster.scheduler_address
        finally:
            descendants = psutil.Process(process.pid).children(recursive=True)
            process.terminate()
            process.wait(timeout=30)
            kill_survivors(descendants)


def test_a_permanently_failing_url_is_one_line_and_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from geoseg.cli.main import cli

    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "scene.tif").write_bytes(b"II*\x00" + bytes(1000))
    oracle = write_oracle_model(tmp_path / "oracle.pt")
    out = tmp_path / "o.gpkg"
    with serving(folder, "--fail-after", "0") as url:
        result = CliRunner().invoke(
            cli, ["run", f"{url}/scene.tif", "-o", str(out), "--model", str(oracle)]
        )
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: {url}/scene.tif: cannot be read as a raster (")
    assert line.endswith(
        "check the URL, the credentials and that the server answers (GDAL retried it)"
    )
    assert not out.exists()


def test_a_remote_read_failure_is_retried_by_tasks_and_local_damage_is_not(
    make_raster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rasterio
    from prefect.states import Failed

    from geoseg.errors import RasterError, RemoteReadError
    from geoseg.flows.segment import is_transient
    from geoseg.tasks.reading import describe_raster, gdal_env, read_tile
    from geoseg.tasks.tiling import plan_tiles

    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "1")
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")
    folder = tmp_path / "served"
    folder.mkdir()
    pixels = np.random.default_rng(3).integers(0, 60000, (2, 64, 64), dtype=np.uint16)
    os.replace(make_raster(pixels), folder / "scene.tif")
    # The header comes in the first ranged read; every later one fails: the server went away.
    with serving(folder, "--fail-after", "1") as url:
        raster = describe_raster(f"{url}/scene.tif", (1, 2))
        (tile,) = plan_tiles(raster.width, raster.height, 64, 8)
        with gdal_env(), rasterio.open(raster.path) as src, pytest.raises(RemoteReadError) as error:
            read_tile(src, tile, (1, 2))

    assert str(error.value).startswith("scene.tif: pixels of window (0, 0, 64, 64) cannot be read")
    assert error.value.__cause__ is None
    assert is_transient(None, None, Failed(data=error.value))
    assert not is_transient(None, None, Failed(data=RasterError("damaged.tif: damaged")))


def test_an_s3_output_appears_whole_and_is_never_replaced_without_overwrite(
    s3_endpoint: str, make_raster, tmp_path: Path, dask_address: str
) -> None:
    import boto3
    from click.testing import CliRunner

    from geoseg.cli.main import cli

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="results")
    scene = make_raster(scene_bands(), nodata=NODATA)
    oracle = write_oracle_model(tmp_path / "oracle.pt")
    uri = "s3://results/city/objects.gpkg"
    cache = tmp_path / "cache"

    result = run(
        [scene],
        uri,
        model=oracle,
        tile_size=256,
        overlap_px=32,
        dask_address=dask_address,
        cache_dir=cache,
    )

    assert result.output == uri
    s3.download_file("results", "city/objects.gpkg", str(tmp_path / "back.gpkg"))
    assert counts(tmp_path / "back.gpkg") == {"lawn": 4, "bridge": 1, "building": 3}
    assert (
        json.loads(pyogrio.read_dataframe(tmp_path / "back.gpkg", layer="run").loc[0, "config"])[
            "output"
        ]
        == uri
    )
    assert list(cache.iterdir()) == []  # staging copy and batch files are gone
    again = CliRunner().invoke(
        cli, ["run", str(scene), "-o", uri, "--model", str(oracle), "--cache-dir", str(cache)]
    )
    assert again.exit_code == 2
    assert again.stderr.splitlines()[-1] == (
        f"Error: {uri} already exists; pass --overwrite to replace it"
    )
    no_bucket = CliRunner().invoke(
        cli, ["run", str(scene), "-o", "s3://absent/o.gpkg", "--model", str(oracle)]
    )
    assert no_bucket.exit_code == 2
    assert no_bucket.stderr.splitlines()[-1] == (
        "Error: s3://absent/o.gpkg: bucket absent cannot be used (not found)"
    )
    assert "testing-secret" not in again.output + no_bucket.output
