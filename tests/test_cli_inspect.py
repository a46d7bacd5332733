"""``geoseg inspect`` through the CLI: what a run would see in a raster and how it would tile it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from click.testing import CliRunner

from geoseg.cli.inspect import (
    STARTUP_S,
    format_duration,
    run_seconds,
    sample_shape,
    tiling_origin,
)
from geoseg.cli.main import cli
from geoseg.config import RunConfig
from geoseg.flows.segment import plan_raster
from geoseg.models.contract import read_model_spec
from geoseg.models.shipped import GREENERY_MODEL, shipped_model_path
from geoseg.tasks.batch import segment_batch
from geoseg.tasks.reading import describe_raster
from tests.oracle_model import write_oracle_model


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def field(output: str, name: str) -> str:
    """The value on the line labelled ``name``."""
    (line,) = [line for line in output.splitlines() if line.split()[:1] == [name]]
    return line.split(None, 1)[1]


def test_inspect_utm_raster_with_the_built_in_model(make_raster) -> None:
    raster = make_raster(np.zeros((3, 30, 40), dtype=np.uint8), nodata=0)
    code, out, err = invoke("inspect", raster)
    assert code == 0, err
    assert out.splitlines()[0] == str(raster)
    assert field(out, "size") == "40 x 30 px, 3 band(s), uint8"
    assert field(out, "crs") == "EPSG:32636 (WGS 84 / UTM zone 36N)"
    assert field(out, "resolution").startswith("0.5 x 0.5 metre (CRS units); 0.500 m on the")
    assert field(out, "bounds") == "500000, 39985, 500020, 40000 (left, bottom, right, top)"
    assert field(out, "nodata") == "value 0"
    assert field(out, "model") == (
        "geoseg-default: reads band(s) 1, 2, 3; classes lawn, bridge, building"
    )
    # the model sees 512 px tiles at 0.15 m: 154 px of this 0.5 m raster, one tile covers it all
    assert field(out, "gsd") == (
        "0.15 m (the model's): read at 0.15 m: 154 px raster tiles resampled to 514 px"
    )
    assert field(out, "tiling") == (
        "154 px tiles, 19 px overlap: 1 tile(s), 1 column(s) x 1 row(s) "
        "(tile size and overlap from the model)"
    )


def test_inspect_plans_tiles_from_the_options(make_raster) -> None:
    raster = make_raster(np.zeros((3, 30, 40), dtype=np.uint8))
    code, out, err = invoke("inspect", raster, "--tile-size", "16", "--overlap", "4")
    assert code == 0, err
    assert field(out, "nodata") == "none (every pixel is valid)"
    # columns at 0, 12, 24 and rows at 0, 12, 14 (the last pulled back to the edge)
    assert field(out, "tiling") == (
        "16 px tiles, 4 px overlap: 9 tile(s), 3 column(s) x 3 row(s) "
        "(tile size from --tile-size, overlap from --overlap)"
    )


def test_inspect_gives_degrees_and_metres_for_a_geographic_raster(make_raster) -> None:
    transform = Affine(1e-5, 0, 33.0, 0, -1e-5, 0.01)
    raster = make_raster(
        np.zeros((3, 20, 20), dtype=np.uint8), crs="EPSG:4326", transform=transform
    )
    code, out, err = invoke("inspect", raster)
    assert code == 0, err
    resolution = field(out, "resolution")
    assert resolution.startswith("0.00001 x 0.00001 degree (CRS units); ")
    assert field(out, "bounds") == "33, 0.0098, 33.0002, 0.01 (left, bottom, right, top)"
    metres = float(resolution.split("; ")[1].split()[0])
    assert metres == pytest.approx(1.11, abs=0.01)  # 1e-5° near the equator


def test_tiling_origin_names_each_source() -> None:
    assert tiling_origin(None, None, None, None) == "tile size and overlap default"
    assert tiling_origin(None, 8, 512, None) == "tile size from the model, overlap from --overlap"
    assert tiling_origin(256, 8, 512, 64) == "tile size from --tile-size, overlap from --overlap"


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        ("missing", "does not exist"),
        ("one band", "has 1 band(s) but the model reads band(s) 1, 2, 3"),
        ("no crs", "has no CRS"),
        ("bad tiling", "overlap 20 px is more than half the tile size 32 px"),
        ("bad model", "not-a-model.pt"),
        ("no tta", "has no test-time augmentation"),
        ("bad gsd", "--gsd -1.0: must be a positive number of metres"),
    ],
)
def test_inspect_bad_input_is_one_line_and_exit_2(
    make_raster, tmp_path: Path, make_args: str, expected: str
) -> None:
    good = make_raster(np.zeros((3, 20, 20), dtype=np.uint8), name="good.tif")
    model = tmp_path / "not-a-model.pt"
    model.write_text("not a model")
    args: dict[str, list[str | Path]] = {
        "missing": [tmp_path / "absent.tif"],
        "one band": [make_raster(np.zeros((20, 20), dtype=np.uint8), name="gray.tif")],
        "no crs": [make_raster(np.zeros((3, 20, 20), dtype=np.uint8), name="nocrs.tif", crs=None)],
        "bad tiling": [good, "--tile-size", "32", "--overlap", "20"],
        "bad model": [good, "--model", model],
        "no tta": [good, "--model", shipped_model_path(GREENERY_MODEL), "--tta"],
        "bad gsd": [good, "--gsd", "-1"],
    }
    code, out, err = invoke("inspect", *args[make_args])
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("Error: ")
    assert expected in err


def run_plan(raster: Path, model: Path, **options: object) -> tuple[int, int, float]:
    """What a run would do with the raster: its tiles, the tiles it skips as nodata (counted by
    the run's own batch task) and its scale, planned by the flow's own code."""
    config = RunConfig(inputs=(str(raster),), output=Path(os.devnull), model=str(model), **options)
    spec = read_model_spec(model)
    plan = plan_raster(config, spec, describe_raster(str(raster), spec.bands))
    batch = segment_batch(
        str(raster), plan.tiles, str(model), 0.5, raster.with_suffix(".npz"), "cpu", 1, plan.scale
    )
    return len(plan.tiles), batch.tiles_skipped, plan.scale


@pytest.fixture
def quadrant(make_raster) -> Path:
    """64 x 64 px, two bands, nodata (255) over the top-left 32 x 32 px, no objects elsewhere."""
    pixels = np.zeros((2, 64, 64), dtype=np.uint8)
    pixels[:, :32, :32] = 255
    return make_raster(pixels, nodata=255)


def test_inspect_counts_the_nodata_tiles_a_run_skips_and_times_a_tile_it_runs(
    quadrant: Path, tmp_path: Path
) -> None:
    oracle = write_oracle_model(tmp_path / "oracle.pt")
    options = ["--tile-size", "16", "--overlap", "4", "--batch-size", "2", "--device", "cpu"]
    workers = ["--workers", "3", "--threads-per-worker", "1"]
    code, out, err = invoke("inspect", quadrant, "--model", oracle, *options, *workers)
    assert code == 0, err
    # 5 x 5 tiles at 0, 12, 24, 36, 48: the 2 x 2 at 0 and 12 lie inside the nodata quadrant
    assert field(out, "tiling").startswith("16 px tiles, 4 px overlap: 25 tile(s), 5 column(s)")
    assert field(out, "skipped") == (
        "4 of 25 tile(s) entirely nodata, skipped without running the model (exact)"
    )
    assert run_plan(quadrant, oracle, tile_size=16, overlap_px=4) == (25, 4, 1.0)
    # batches of 2: tiles 0 and 1 fill the first batch, which runs nothing
    assert field(out, "estimate").startswith(
        "about 18 s: 21 tile(s) in 12 batch(es) of up to 2 on 3 worker(s) "
        "(cpu, 1 torch thread(s) each) + 18 s start-up"
    )
    # tiles 0 and 1 are nodata: the first tile the run would run is 2
    assert re.fullmatch(
        r"\d+\.\d{3} s per tile \(reading and model\), timed on tile 2 in a batch of 2 copies "
        r"after a warm-up; stitching, vectorizing and writing not counted",
        field(out, "timing"),
    )


def test_inspect_of_an_all_nodata_raster_estimates_the_start_up_only(
    make_raster, tmp_path: Path
) -> None:
    raster = make_raster(np.full((2, 20, 20), 7, dtype=np.uint8), nodata=7)
    oracle = write_oracle_model(tmp_path / "oracle.pt")
    code, out, err = invoke("inspect", raster, "--model", oracle, "--tile-size", "16")
    assert code == 0, err
    assert field(out, "skipped").startswith("4 of 4 tile(s) entirely nodata")
    assert field(out, "estimate") == (
        "about 18 s: every tile is nodata, only the 18 s start-up "
        "(temporary Prefect server, local cluster)"
    )
    assert "timing" not in out


def test_inspect_plans_tiles_resampled_to_the_model_ground_resolution(
    make_raster, tmp_path: Path
) -> None:
    # 0.5 m pixels, nodata over the first 1024 columns: a model at 1 m reads 1024 px tiles
    pixels = np.zeros((2, 1100, 2000), dtype=np.uint8)
    pixels[:, :, :1024] = 255
    raster = make_raster(pixels, nodata=255)
    oracle = write_oracle_model(tmp_path / "coarse.pt", gsd_m=1.0)
    code, out, err = invoke("inspect", raster, "--model", oracle, "--no-estimate")
    assert code == 0, err
    assert field(out, "gsd") == (
        "1 m (the model's): read at 1 m: 1024 px raster tiles resampled to 512 px"
    )
    # the default 512 px tiles and 64 px overlap, in model pixels, become 1024 and 128 raster
    # px: columns at 0, 896 and 976, rows at 0 and 76
    assert field(out, "tiling") == (
        "1024 px tiles, 128 px overlap: 6 tile(s), 3 column(s) x 2 row(s) "
        "(tile size and overlap default)"
    )
    # the column of tiles at 0 is nodata; masks read at 256 of the 512 px the run reads
    assert field(out, "skipped") == (
        "about 2 of 6 tile(s) entirely nodata, skipped without running the model "
        "(approximate: masks read at most 256 px across)"
    )
    assert run_plan(raster, oracle) == (6, 2, pytest.approx(0.5, abs=1e-3))
    assert "estimate" not in out


def test_inspect_gsd_option_overrides_the_model(make_raster, tmp_path: Path) -> None:
    raster = make_raster(np.zeros((2, 1100, 2000), dtype=np.uint8))
    oracle = write_oracle_model(tmp_path / "coarse.pt", gsd_m=1.0)
    code, out, err = invoke("inspect", raster, "--model", oracle, "--gsd", "0.51", "--no-estimate")
    assert code == 0, err
    assert field(out, "gsd") == (
        "0.51 m (from --gsd; the model's own: 1 m): the raster is within 5% of it: "
        "tiles read as they are"
    )
    # 512 px tiles at 0, 448, 896, 1344, 1488 and 0, 448, 588
    assert field(out, "tiling").startswith("512 px tiles, 64 px overlap: 15 tile(s)")
    assert field(out, "skipped").startswith("0 of 15 tile(s)")
    assert run_plan(raster, oracle, gsd_m=0.51) == (15, 0, 1.0)


def test_run_seconds_gives_whole_batches_to_the_first_free_worker() -> None:
    assert run_seconds([8, 8, 2], 1.0, workers=2, startup_s=0) == 10.0
    assert run_seconds([8, 8, 8, 8], 0.5, workers=4, startup_s=0) == 4.0
    assert run_seconds([8, 8, 8, 8], 0.5, workers=1, startup_s=0) == 16.0
    # one batch keeps one worker busy however many there are
    assert run_seconds([4], 0.5, workers=4, startup_s=10) == 12.0
    # nodata batches cost nothing: the start-up only
    assert run_seconds([0, 0], 2.0, workers=2) == STARTUP_S


def test_sample_shape_shrinks_large_tiles_only() -> None:
    assert sample_shape((100, 60)) == (100, 60)
    assert sample_shape((256, 256)) == (256, 256)
    assert sample_shape((1024, 512)) == (256, 128)
    assert sample_shape((5000, 10)) == (256, 1)


def test_format_duration() -> None:
    assert format_duration(0.4) == "0 s"
    assert format_duration(59.6) == "1 min 00 s"
    assert format_duration(200) == "3 min 20 s"
    assert format_duration(7290) == "2 h 01 min"
