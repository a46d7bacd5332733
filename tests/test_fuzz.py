"""Fuzzing raster input: damaged files fail with one-line `RasterError`s, never crash or hang.

Random bytes and mutated copies of a small tiled DEFLATE GeoTIFF (bytes flipped, overwritten,
truncated) go through what a run does with an input: ``describe_raster`` (the preflight) and
``read_tile`` for every planned tile (the workers). Each example either works or raises a
``RasterError`` whose message is one line naming the file. A handful also go through the real
CLI, which must exit 2 with one line for every file the preflight refuses.
"""

from __future__ import annotations

import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geoseg.cli.main import cli
from geoseg.errors import RasterError
from geoseg.tasks.reading import describe_raster, gdal_env, read_tile
from geoseg.tasks.tiling import plan_tiles
from tests.oracle_model import write_oracle_model

BANDS = (1,)
TILE_SIZE, OVERLAP_PX = 32, 8
EXAMPLE_SECONDS = 10
"""A wall-clock bound per example: one GDAL read of this tiny file takes milliseconds."""
MAX_TILES = 64
"""A mutated header may declare a huge raster; reading its first and last tiles shows the point."""

FUZZ = settings(
    max_examples=60,
    deadline=5000,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def geotiff_bytes() -> bytes:
    """A 80 x 56 px, 2-band uint16 GeoTIFF, tiled 16 x 16, DEFLATE, with nodata."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 3000, size=(2, 56, 80), dtype=np.uint16)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "valid.tif"
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            width=80,
            height=56,
            count=2,
            dtype="uint16",
            crs="EPSG:32636",
            transform=Affine(0.5, 0, 500_000, 0, -0.5, 40_000),
            nodata=0,
            tiled=True,
            blockxsize=16,
            blockysize=16,
            compress="deflate",
        ) as dst:
            dst.write(data)
        return path.read_bytes()


VALID = geotiff_bytes()


@st.composite
def mutated_geotiffs(draw: st.DrawFn) -> bytes:
    """The valid GeoTIFF with a few byte ranges flipped, overwritten or cut off."""
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "overwrite", "truncate"]))
        # Headers, IFDs and tile offsets sit near the start and the end: aim there often.
        where = draw(
            st.one_of(
                st.integers(0, min(len(data) - 1, 512)),
                st.integers(max(0, len(data) - 1024), len(data) - 1),
                st.integers(0, len(data) - 1),
            )
        )
        if kind == "flip":
            length = draw(st.integers(1, 16))
            mask = draw(st.integers(1, 255))
            for i in range(where, min(where + length, len(data))):
                data[i] ^= mask
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=32))
            data[where : where + len(chunk)] = chunk
        elif len(data) > 1:
            data = data[: max(1, where)]
    return bytes(data)


class ExampleTimeoutError(Exception):
    """An example ran past `EXAMPLE_SECONDS`: a hang in reading."""


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise `ExampleTimeoutError` in the test after ``seconds`` (main thread only; pytest-timeout
    backs it for hangs inside C code that never return to Python)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise ExampleTimeoutError(f"example ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def read_like_a_run(path: Path) -> int:
    """Describe the raster, then read every planned tile as a worker does; the tiles read."""
    info = describe_raster(str(path), BANDS)
    tiles = plan_tiles(info.width, info.height, TILE_SIZE, OVERLAP_PX)
    chosen = (
        tiles if len(tiles) <= MAX_TILES else tiles[: MAX_TILES // 2] + tiles[-MAX_TILES // 2 :]
    )
    with gdal_env(), rasterio.open(path) as src:
        for tile in chosen:
            pixels, valid = read_tile(src, tile, BANDS)
            assert pixels.shape == (len(BANDS), tile.height, tile.width)
            assert pixels.dtype == np.float32
            assert valid.shape == (tile.height, tile.width)
    return len(chosen)


def check_example(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed-scene.tif"
        path.write_bytes(data)
        with time_limit(EXAMPLE_SECONDS):
            try:
                read_like_a_run(path)
            except RasterError as exc:
                message = str(exc)
                assert "\n" not in message, message
                assert path.name in message, message


def test_valid_file_reads_every_tile() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "valid.tif"
        path.write_bytes(VALID)
        assert read_like_a_run(path) == len(plan_tiles(80, 56, TILE_SIZE, OVERLAP_PX)) == 6


def test_truncated_file_is_a_raster_error() -> None:
    """The oracle for the properties below: a file cut in the middle of its tiles."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed-scene.tif"
        path.write_bytes(VALID[: len(VALID) // 2])
        with pytest.raises(RasterError, match=r"fuzzed-scene\.tif"):
            read_like_a_run(path)


@pytest.mark.timeout(120)
@FUZZ
@given(data=st.binary(min_size=0, max_size=4096))
def test_random_bytes(data: bytes) -> None:
    check_example(data)


@pytest.mark.timeout(120)
@FUZZ
@given(data=st.binary(min_size=8, max_size=512).map(lambda tail: b"II*\x00" + tail))
def test_random_bytes_behind_a_tiff_signature(data: bytes) -> None:
    check_example(data)


@pytest.mark.timeout(180)
@settings(FUZZ, max_examples=150)
@given(data=mutated_geotiffs())
def test_mutated_geotiffs(data: bytes) -> None:
    check_example(data)


# --- through the CLI -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "oracle.pt"
    write_oracle_model(path, bands=BANDS)
    return path


@pytest.mark.timeout(120)
@settings(FUZZ, max_examples=12)
@given(data=st.one_of(mutated_geotiffs(), st.binary(max_size=2048)))
def test_cli_preflight_refuses_with_one_line(tiny_model: Path, data: bytes) -> None:
    """A file the preflight refuses exits 2 with one line; one it accepts is read directly.

    Files that pass the preflight would start Prefect and Dask: instead of a full run, their
    tiles are read as the workers would read them.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzzed-scene.tif"
        path.write_bytes(data)
        try:
            describe_raster(str(path), BANDS)
        except RasterError:
            accepted = False
        else:
            accepted = True
        if accepted:
            check_example(data)
            return
        with time_limit(EXAMPLE_SECONDS):
            result = CliRunner().invoke(
                cli,
                [
                    "run",
                    str(path),
                    "-o",
                    str(Path(folder) / "out.gpkg"),
                    "--model",
                    str(tiny_model),
                ],
            )
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("Error: "), result.stderr
        assert path.name in lines[0]
        assert not (Path(folder) / "out.gpkg").exists()
