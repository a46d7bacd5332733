"""``geoseg inspect`` through the CLI: what a run would see in a raster and how it would tile it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from click.testing import CliRunner

from geoseg.cli.inspect import tiling_origin
from geoseg.cli.main import cli


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
    assert field(out, "model") == "greenery: reads band(s) 1, 2, 3; classes vegetation"
    # the model recommends 512 px tiles and 64 px overlap: one tile covers 40 x 30 px
    assert field(out, "tiling") == (
        "512 px tiles, 64 px overlap: 1 tile(s), 1 column(s) x 1 row(s) "
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
    }
    code, out, err = invoke("inspect", *args[make_args])
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1
    assert err.startswith("Error: ")
    assert expected in err
