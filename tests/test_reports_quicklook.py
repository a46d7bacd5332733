"""Quicklook pictures: what is drawn where and in which colour, for which raster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely

from geoseg.errors import RasterError
from geoseg.reports.quicklook import NODATA_RGB, make_quicklook, match_source, to_rgb
from geoseg.reports.results import read_results
from geoseg.tasks.palette import class_colour, rgb
from tests.quicklook_data import (
    LEFT,
    RIGHT,
    TRANSFORM,
    blend,
    read_png,
    two_tone,
    write_gpkg,
    write_scene,
)
from tests.reports_data import write_output

pytest.importorskip("matplotlib")


@pytest.fixture
def scene(make_raster, tmp_path: Path) -> tuple[Path, Path]:
    return write_scene(make_raster, tmp_path)


def test_objects_are_filled_in_their_class_colour_over_the_image(
    scene: tuple[Path, Path], tmp_path: Path
) -> None:
    raster, gpkg = scene
    quicklook = make_quicklook(read_results(gpkg), str(raster), 400)
    picture = read_png(quicklook.png, tmp_path)
    # 80 x 40 px on a 400 px wide map: 5 picture pixels per raster pixel, map on top.
    assert picture.shape[:2] == (quicklook.layout.height, 400)
    assert quicklook.layout.map_height == 200
    np.testing.assert_allclose(picture[100, 100], blend(LEFT, "lawn"), atol=1)
    np.testing.assert_allclose(picture[60, 300], blend(RIGHT, "building"), atol=1)
    # Outlines are opaque, on the objects' edges (raster column 10 is picture column 50).
    lawn = np.array(rgb(class_colour("lawn")))
    assert any(np.abs(picture[100, col] - lawn).max() <= 1 for col in (49, 50))
    # Far from every object the image is untouched.
    np.testing.assert_array_equal(picture[180, 180], LEFT)
    np.testing.assert_array_equal(picture[120, 230], RIGHT)


def test_objects_of_another_source_are_not_drawn(scene: tuple[Path, Path], tmp_path: Path) -> None:
    raster, gpkg = scene
    quicklook = make_quicklook(read_results(gpkg), str(raster), 400)
    picture = read_png(quicklook.png, tmp_path)
    # other.tif's lawn covers raster pixels 50-70 x 25-38: picture (row 160, col 300).
    np.testing.assert_array_equal(picture[160, 300], RIGHT)
    assert [(row.class_name, row.count) for row in quicklook.legend] == [
        ("lawn", 1),
        ("building", 1),
    ]
    other = make_quicklook(read_results(gpkg), str(raster.with_name("other.tif")), 400)
    np.testing.assert_allclose(
        read_png(other.png, tmp_path)[160, 300], blend(RIGHT, "lawn"), atol=1
    )


@pytest.mark.parametrize(("width", "height"), [(800, 400), (100, 300), (50, 50), (1000, 10)])
def test_picture_has_the_requested_longest_side(
    make_raster, tmp_path: Path, width: int, height: int
) -> None:
    raster = make_raster(np.full((3, height, width), 90, np.uint8), transform=TRANSFORM)
    gpkg = write_gpkg(tmp_path / "o.gpkg", [], [str(raster)])
    quicklook = make_quicklook(read_results(gpkg), str(raster), 300)
    picture = read_png(quicklook.png, tmp_path)
    assert picture.shape[:2] == (quicklook.layout.height, quicklook.layout.width)
    assert max(picture.shape[:2]) == 300
    assert abs(quicklook.layout.map_width / quicklook.layout.map_height - width / height) < 0.02


def test_one_band_16_bit_raster_with_nodata(make_raster, tmp_path: Path) -> None:
    values = np.tile(np.linspace(1000, 3000, 80, dtype=np.uint16), (40, 1))
    values[:, :8] = 0  # nodata
    raster = make_raster(values, transform=TRANSFORM, nodata=0)
    gpkg = write_gpkg(
        tmp_path / "o.gpkg", [(shapely.box(50, 5, 70, 20), "building", str(raster))], [str(raster)]
    )
    picture = read_png(make_quicklook(read_results(gpkg), str(raster), 400).png, tmp_path)
    np.testing.assert_array_equal(picture[100, 20], NODATA_RGB)
    dark, bright = picture[150, 60], picture[150, 380]
    assert dark[0] == dark[1] == dark[2]
    assert bright[0] == bright[1] == bright[2]
    assert dark[0] < 40
    assert bright[0] > 215
    assert not (picture[60, 300, 0] == picture[60, 300, 1] == picture[60, 300, 2])


def test_objects_are_reprojected_to_the_raster_crs(make_raster, tmp_path: Path) -> None:
    # b.tif is in Web Mercator, the output in UTM 36N; its lawn is pixels (1, 1)-(5, 3).
    output = write_output(tmp_path, make_raster, relative_sources=True)
    results = read_results(output.gpkg)
    quicklook = make_quicklook(results, str(output.rasters["b"]), 400)
    assert quicklook.source == "b.tif"  # the relative source, found beside the GeoPackage
    picture = read_png(quicklook.png, tmp_path)
    # 20 x 10 px on a 400 px wide map: 20 picture pixels per raster pixel.
    np.testing.assert_allclose(picture[40, 60], blend((100, 100, 100), "lawn"), atol=1)
    np.testing.assert_array_equal(picture[120, 200], (100, 100, 100))


def test_a_raster_that_is_no_source_is_refused(scene: tuple[Path, Path], make_raster) -> None:
    _, gpkg = scene
    stranger = two_tone(make_raster, "stranger.tif")
    with pytest.raises(RasterError, match=r"stranger\.tif is not a source of .*objects\.gpkg"):
        match_source(read_results(gpkg), str(stranger))


def test_to_rgb_stretches_floats_and_marks_nan_as_nodata() -> None:
    pixels = np.array([[[np.nan, 0.0, 0.5, 1.0]]], dtype=np.float32)
    out = to_rgb(pixels, np.ones((1, 4), bool))
    np.testing.assert_array_equal(out[0, 0], NODATA_RGB)
    assert out[0, 1, 0] < out[0, 2, 0] < out[0, 3, 0]


def test_to_rgb_uses_the_colour_table_of_a_paletted_band() -> None:
    out = to_rgb(np.array([[[0, 1]]], np.uint8), np.ones((1, 2), bool), {1: (10, 20, 30, 255)})
    np.testing.assert_array_equal(out[0], [[0, 0, 0], [10, 20, 30]])
