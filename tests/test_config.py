"""Tests for geoseg.config: RunConfig validation and how tiling is chosen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from geoseg.config import (
    DEFAULT_OVERLAP_PX,
    DEFAULT_TILE_SIZE,
    RunConfig,
    read_run_file,
    run_file_document,
)
from geoseg.errors import OptionsError


def config(**options: Any) -> RunConfig:
    return RunConfig(inputs=("scene.tif",), output=Path("objects.gpkg"), **options)


def test_defaults_are_valid() -> None:
    made = config()

    assert (made.batch_size, made.score_threshold, made.device) == (8, 0.5, "auto")
    assert made.workers is None
    assert made.dask_address is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "--batch-size 0: must be at least 1"),
        ({"workers": 0}, "--workers 0: must be at least 1"),
        ({"threads_per_worker": -2}, "--threads-per-worker -2: must be at least 1"),
        ({"score_threshold": 1.5}, "--score-threshold 1.5: must be within [0, 1]"),
        ({"score_threshold": -0.1}, "--score-threshold -0.1: must be within [0, 1]"),
        ({"score_threshold": float("nan")}, "--score-threshold nan: must be within [0, 1]"),
        ({"min_area_m2": -1.0}, "--min-area-m2 -1.0: must be a number, 0 or more"),
        ({"min_area_m2": float("nan")}, "--min-area-m2 nan: must be a number, 0 or more"),
        ({"simplify_m": -0.5}, "--simplify-m -0.5: must be a number, 0 or more"),
        ({"simplify_m": float("inf")}, "--simplify-m inf: must be a number, 0 or more"),
        ({"device": "tpu"}, "--device tpu: choose auto, cpu or cuda"),
    ],
)
def test_each_bad_option_is_refused_by_name(options: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionsError) as error:
        config(**options)

    assert str(error.value) == message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tile_size": 8}, "tile size 8 px is too small"),
        ({"overlap_px": 0}, "overlap 0 px: tiles must overlap"),
        ({"tile_size": 64, "overlap_px": 40}, "overlap 40 px is more than half the tile size 64"),
    ],
)
def test_bad_tiling_is_refused_up_front(options: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionsError, match=f"^{message}"):
        config(**options)


def test_no_input_is_refused() -> None:
    with pytest.raises(OptionsError, match=r"^no input raster given$"):
        RunConfig(inputs=(), output=Path("objects.gpkg"))


def test_workers_and_a_dask_address_conflict_and_both_are_named() -> None:
    with pytest.raises(OptionsError) as error:
        config(workers=4, dask_address="tcp://10.0.0.5:8786")

    assert str(error.value).startswith("--workers and --dask-address conflict")
    assert "\n" not in str(error.value)


def test_a_dask_address_alone_or_workers_alone_are_fine() -> None:
    assert config(dask_address="tcp://10.0.0.5:8786").workers is None
    assert config(workers=3).workers == 3


def test_options_win_over_the_model_and_the_defaults() -> None:
    assert config(tile_size=256, overlap_px=32).tiling(1024, 128) == (256, 32)


def test_the_model_recommendation_comes_before_the_defaults() -> None:
    assert config().tiling(1024, 128) == (1024, 128)
    assert config().tiling(None, None) == (DEFAULT_TILE_SIZE, DEFAULT_OVERLAP_PX)
    assert config().tiling(1024, None) == (1024, DEFAULT_OVERLAP_PX)
    assert config().tiling(None, 16) == (DEFAULT_TILE_SIZE, 16)
    assert config(tile_size=300).tiling(1024, 100) == (300, 100)
    assert config(overlap_px=10).tiling(1024, 100) == (1024, 10)


@pytest.mark.parametrize(("tile_size", "overlap_px"), [(16, 8), (64, 32), (100, 50), (128, 64)])
def test_the_default_overlap_is_clamped_to_half_a_small_tile(
    tile_size: int, overlap_px: int
) -> None:
    assert config(tile_size=tile_size).tiling(None, None) == (tile_size, overlap_px)


def test_a_recommended_overlap_is_clamped_to_half_a_small_tile_too() -> None:
    assert config(tile_size=64).tiling(None, 100) == (64, 32)
    assert config().tiling(40, None) == (40, 20)


def test_a_model_recommending_an_unusable_tile_size_is_refused() -> None:
    with pytest.raises(OptionsError, match=r"^tile size 8 px is too small"):
        config().tiling(8, None)


def test_run_file_in_toml_gives_config_fields(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        'inputs = ["a.tif", "b.tif"]\noutput = "out.gpkg"\ntile_size = 256\noverlap = 32\n'
        'score_threshold = 1\noverwrite = true\nasset = "analytic"\n'
    )
    fields = read_run_file(path)
    assert fields == {
        "inputs": ("a.tif", "b.tif"),
        "output": Path("out.gpkg"),
        "tile_size": 256,
        "overlap_px": 32,
        "score_threshold": 1,
        "overwrite": True,
        "stac_asset": "analytic",
    }
    assert RunConfig(**fields).tiling(None, None) == (256, 32)  # type: ignore[arg-type]


def test_run_file_document_round_trips_through_json(tmp_path: Path) -> None:
    config = RunConfig(inputs=("a.tif",), output=Path("o.gpkg"), tile_size=300, workers=3)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run_file_document(config)))
    assert RunConfig(**read_run_file(path)) == config  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tilesize = 3", "unknown key 'tilesize'"),
        ('tile_size = "big"', "tile_size = 'big' should be int"),
        ("overwrite = 1", "overwrite = 1 should be bool"),
        ("workers = true", "workers = True should be int"),
        ("inputs = [1, 2]", "inputs should be a list of paths"),
        ("tile_size = ", "not valid TOML or JSON"),
    ],
)
def test_run_file_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(OptionsError, match=message):
        read_run_file(path)


def test_an_unknown_output_crs_is_refused_by_name() -> None:
    with pytest.raises(OptionsError, match="--crs EPSG:99999999: not a CRS"):
        config(crs="EPSG:99999999")
    assert config(crs="EPSG:4326").crs == "EPSG:4326"
