"""One raster that fails does not sink a batch of rasters, unless --fail-fast."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyogrio
import pytest
from click.testing import CliRunner

from geoseg import run
from geoseg.cli.main import cli
from geoseg.config import RunConfig, read_run_file
from geoseg.errors import RasterError
from tests.oracle_model import write_oracle_model
from tests.scenes import NODATA, scene_bands

pytestmark = pytest.mark.e2e


@pytest.fixture
def oracle(tmp_path: Path) -> Path:
    return write_oracle_model(tmp_path / "oracle.pt")


def damaged_raster(make_raster) -> Path:
    """A GeoTIFF whose header reads but whose tiles are broken: it fails mid-run, not up front."""
    pixels = np.random.default_rng(1).integers(0, 60000, (2, 64, 64), dtype=np.uint16)
    path = make_raster(pixels, name="damaged.tif")
    data = bytearray(path.read_bytes())
    data[len(data) // 3 : 2 * len(data) // 3] = b"\xff" * (len(data) // 3)
    path.write_bytes(bytes(data))
    return path


def counts(path: Path) -> dict[str, int]:
    return {
        layer: pyogrio.read_info(path, layer=layer)["features"]
        for layer in ("lawn", "bridge", "building")
    }


def test_failing_rasters_are_skipped_recorded_and_retried_on_the_next_run(
    make_raster, oracle: Path, dask_address: str, tmp_path: Path
) -> None:
    good = make_raster(scene_bands(), name="good.tif", nodata=NODATA)
    no_crs = make_raster(np.ones((2, 32, 32), dtype=np.uint16), name="nocrs.tif", crs=None)
    damaged = damaged_raster(make_raster)
    out = tmp_path / "objects.gpkg"
    args = [
        "run",
        str(good),
        str(no_crs),
        str(damaged),
        "-o",
        str(out),
        "--model",
        str(oracle),
        "--dask-address",
        dask_address,
        "--tile-size",
        "256",
        "--overlap",
        "32",
        "--batch-size",
        "4",
    ]

    first = CliRunner().invoke(cli, args)

    assert first.exit_code == 3, first.output
    warnings = [line for line in first.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 2
    assert warnings[0].startswith("Warning: nocrs.tif has no CRS")
    assert warnings[1].startswith("Warning: damaged.tif: pixels of window")
    assert counts(out) == {"lawn": 4, "bridge": 1, "building": 3}
    failures = pyogrio.read_dataframe(out, layer="failures")
    assert list(failures["source"]) == [str(no_crs), str(damaged)]
    assert failures["reason"].str.contains("\n").sum() == 0
    run_table = pyogrio.read_dataframe(out, layer="run")
    assert run_table.loc[0, "rasters_failed"] == 2
    assert run_table.loc[0, "sources"] == str(good)
    summary = pyogrio.read_dataframe(out, layer="summary")
    assert set(summary["source"]) == {str(good)}

    # The damaged raster is replaced by a good copy; the same command again (with --overwrite,
    # the output now exists) reuses good.tif's batches and segments only what failed.
    make_raster(scene_bands(), name="damaged.tif", nodata=NODATA)
    second = CliRunner().invoke(cli, [*args, "--overwrite"])

    assert second.exit_code == 3, second.output
    reused, total = map(
        int, re.search(r"\((\d+) of (\d+) batches resumed\)", second.stdout).groups()
    )
    assert 0 < reused < total
    assert counts(out) == {"lawn": 8, "bridge": 2, "building": 6}
    failures = pyogrio.read_dataframe(out, layer="failures")
    assert list(failures["source"]) == [str(no_crs)]


def test_fail_fast_stops_at_a_raster_failing_mid_run_and_writes_nothing(
    make_raster, oracle: Path, dask_address: str, tmp_path: Path
) -> None:
    good = make_raster(scene_bands(), name="good.tif", nodata=NODATA)
    damaged = damaged_raster(make_raster)
    out = tmp_path / "objects.gpkg"

    with pytest.raises(RasterError, match=r"^damaged\.tif: pixels of window"):
        run(
            [good, damaged],
            out,
            model=oracle,
            tile_size=256,
            overlap_px=32,
            dask_address=dask_address,
            fail_fast=True,
        )

    assert sorted(p.name for p in tmp_path.iterdir() if "objects.gpkg" in p.name) == []


def test_a_batch_where_every_raster_fails_is_bad_input(
    make_raster, oracle: Path, tmp_path: Path
) -> None:
    no_crs = make_raster(np.ones((2, 32, 32), dtype=np.uint16), name="nocrs.tif", crs=None)
    out = tmp_path / "objects.gpkg"

    result = CliRunner().invoke(
        cli,
        ["run", str(no_crs), str(tmp_path / "absent.tif"), "-o", str(out), "--model", str(oracle)],
    )

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: no raster could be segmented: nocrs.tif has no CRS; georeference the raster first "
        "(gdal_edit.py -a_srs EPSG:<code>) (and 1 more failed rasters)"
    ]
    assert not out.exists()


def test_fail_fast_is_a_run_file_key_and_refuses_the_first_bad_raster(
    make_raster, oracle: Path, tmp_path: Path
) -> None:
    good = make_raster(scene_bands(), name="good.tif", nodata=NODATA)
    run_file = tmp_path / "run.toml"
    run_file.write_text(f'inputs = ["{tmp_path / "absent.tif"}", "{good}"]\nfail_fast = true\n')
    assert read_run_file(run_file)["fail_fast"] is True

    result = CliRunner().invoke(
        cli,
        ["run", "--config", str(run_file), "-o", str(tmp_path / "o.gpkg"), "--model", str(oracle)],
    )

    assert result.exit_code == 2
    assert result.stderr.strip() == f"Error: {tmp_path / 'absent.tif'} does not exist"
    assert not (tmp_path / "o.gpkg").exists()
    assert RunConfig(inputs=("a.tif",), output=Path("o.gpkg")).fail_fast is False
