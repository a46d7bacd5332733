"""Rasters read over the network: S3 (a real S3-compatible server on loopback) and HTTP ranges."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyogrio
import pytest

from geoseg import run
from tests.oracle_model import write_oracle_model
from tests.scenes import NODATA, scene_bands

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@pytest.fixture
def http_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP with Range support, by a separate process.

    Not a thread of this process: GDAL holds the GIL while it fetches, which would deadlock
    a server thread here.
    """
    folder = tmp_path / "served"
    folder.mkdir()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("range_server.py")), str(folder), str(port)]
    )
    wait_for_port(port)
    yield folder, f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


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
