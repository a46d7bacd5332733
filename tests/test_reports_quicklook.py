"""Quicklook pictures and HTML reports: what is drawn where, in which colour, at which scale."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pyproj
import pytest
import shapely
from affine import Affine

from geoseg.errors import OptionsError, RasterError
from geoseg.reports.html import render_report
from geoseg.reports.quicklook import (
    FILL_ALPHA,
    MIN_SIZE,
    NODATA_RGB,
    make_quicklook,
    match_source,
    north_angle_deg,
    plan_layout,
    plan_scale_bar,
    to_rgb,
)
from geoseg.reports.results import read_results
from geoseg.reports.summary import summarize
from geoseg.tasks.palette import class_colour, rgb
from geoseg.tasks.vectorize import to_crs_geometries
from geoseg.tasks.write import GeoPackageWriter, ObjectBatch
from tests.reports_data import write_output

pytest.importorskip("matplotlib")

UTM = "EPSG:32636"
TRANSFORM = Affine(0.5, 0, 500_000, 0, -0.5, 40_000)
LEFT, RIGHT = (100, 150, 200), (200, 100, 50)


def read_png(data: bytes, tmp_path: Path) -> np.ndarray:
    """The picture's RGB values 0-255, read back the way a viewer does."""
    from matplotlib.image import imread

    path = tmp_path / "read-back.png"
    path.write_bytes(data)
    return np.rint(imread(path)[..., :3] * 255).astype(int)


def two_tone(make_raster, name: str = "scene.tif") -> Path:
    """An 80 x 40 px RGB raster: left half LEFT, right half RIGHT."""
    array = np.empty((3, 40, 80), dtype=np.uint8)
    array[:, :, :40] = np.array(LEFT)[:, None, None]
    array[:, :, 40:] = np.array(RIGHT)[:, None, None]
    return make_raster(array, name=name, transform=TRANSFORM)


def write_gpkg(
    path: Path, objects: list[tuple[shapely.Geometry, str, str]], sources: list[str]
) -> Path:
    """A geoseg output in UTM 36N of ``(pixel polygon on TRANSFORM, class, source)`` objects."""
    pixels = np.array([geom for geom, _, _ in objects], dtype=object)
    with GeoPackageWriter(path, pyproj.CRS(UTM).to_wkt(), ("lawn", "building"), False) as writer:
        for source in sources:
            writer.add_source(source)
        writer.add(
            ObjectBatch(
                geometry=to_crs_geometries(pixels, TRANSFORM),
                object_id=np.array([f"o{i}" for i in range(len(objects))]),
                class_name=np.array([cls for _, cls, _ in objects]),
                score=np.full(len(objects), 0.9),
                area_m2=np.full(len(objects), 100.0),
                perimeter_m=np.full(len(objects), 40.0),
                source=np.array([source for _, _, source in objects]),
            )
        )
        writer.finish({"geoseg_version": "test", "config": '{"tile_size": 512}'})
    return path


def blend(image: tuple[int, int, int], class_name: str) -> np.ndarray:
    colour = np.array(rgb(class_colour(class_name)))
    return np.rint((1 - FILL_ALPHA) * np.array(image) + FILL_ALPHA * colour)


@pytest.fixture
def scene(make_raster, tmp_path: Path) -> tuple[Path, Path]:
    """``scene.tif`` with a lawn (left half) and a building (right half); ``other.tif`` on the
    same grid with a lawn where ``scene.tif`` has nothing."""
    raster = two_tone(make_raster)
    other = two_tone(make_raster, "other.tif")
    gpkg = write_gpkg(
        tmp_path / "objects.gpkg",
        [
            (shapely.box(10, 10, 30, 30), "lawn", str(raster)),
            (shapely.box(50, 5, 70, 20), "building", str(raster)),
            (shapely.box(50, 25, 70, 38), "lawn", str(other)),
        ],
        [str(raster), str(other)],
    )
    return raster, gpkg


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


@pytest.mark.parametrize(("width", "height"), [(800, 400), (100, 300), (50, 50)])
def test_picture_has_the_requested_longest_side(
    make_raster, tmp_path: Path, width: int, height: int
) -> None:
    raster = make_raster(np.full((3, height, width), 90, np.uint8), transform=TRANSFORM)
    gpkg = write_gpkg(tmp_path / "o.gpkg", [], [str(raster)])
    quicklook = make_quicklook(read_results(gpkg), str(raster), 300)
    picture = read_png(quicklook.png, tmp_path)
    assert picture.shape[:2] == (quicklook.layout.height, quicklook.layout.width)
    assert max(picture.shape[:2]) in (299, 300)  # rounding the map's height to whole pixels
    assert abs(quicklook.layout.map_width / quicklook.layout.map_height - width / height) < 0.02


def test_layout_refuses_a_size_too_small_for_the_legend() -> None:
    with pytest.raises(OptionsError, match="--max-size 100 is too small"):
        plan_layout(100, 100, 2, 100)
    assert plan_layout(100, 100, 2, MIN_SIZE).height <= MIN_SIZE


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


def ground_m(crs: str, a: tuple[float, float], b: tuple[float, float]) -> float:
    """Geodesic distance between two points of ``crs``, computed directly with pyproj."""
    to_lonlat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    (lon1, lon2), (lat1, lat2) = to_lonlat.transform([a[0], b[0]], [a[1], b[1]])
    return float(pyproj.Geod(ellps="WGS84").inv(lon1, lat1, lon2, lat2)[2])


@pytest.mark.parametrize(
    ("crs", "transform", "expected_m"),
    [
        # 0.0001 degree pixels at 60 N: a pixel is about 5.6 m wide on the ground, not 11 m.
        ("EPSG:4326", Affine(0.0001, 0, 10.0, 0, -0.0001, 60.05), 1000),
        # Web Mercator at 60 N: a CRS metre is half a metre on the ground.
        ("EPSG:3857", Affine(1.0, 0, 1_113_194, 0, -1.0, 8_399_737), 100),
        ("EPSG:32636", Affine(0.5, 0, 500_000, 0, -0.5, 40_000), 100),
    ],
)
def test_scale_bar_is_true_ground_length(crs: str, transform: Affine, expected_m: float) -> None:
    bar = plan_scale_bar(transform, pyproj.CRS(crs), 1000, 1000)
    assert bar is not None
    assert bar.length_m == expected_m
    centre_row = 500
    metres = ground_m(crs, transform @ (450, centre_row), transform @ (550, centre_row))
    assert bar.length_px == pytest.approx(expected_m / (metres / 100), rel=1e-3)
    assert bar.label == (f"{expected_m / 1000:g} km" if expected_m >= 1000 else f"{expected_m} m")


def test_scale_bar_says_where_it_holds_when_the_scale_varies() -> None:
    # 10 degrees of latitude from 40 to 50 N: the ground width of a degree changes by a fifth.
    bar = plan_scale_bar(Affine(0.01, 0, 0, 0, -0.01, 50), pyproj.CRS("EPSG:4326"), 1000, 1000)
    assert bar is not None
    assert bar.label.endswith("at the centre")


def test_north_arrow_follows_meridian_convergence() -> None:
    mercator = Affine(1.0, 0, 1_113_194, 0, -1.0, 8_399_737)
    assert north_angle_deg(mercator, pyproj.CRS("EPSG:3857"), 500, 500) == pytest.approx(
        0, abs=1e-6
    )
    # 6 degrees east of UTM 36N's central meridian at 60 N, grid north leans east of true north.
    x, y = pyproj.Transformer.from_crs("EPSG:4326", UTM, always_xy=True).transform(39, 60)
    utm = Affine(1.0, 0, x - 250, 0, -1.0, y + 250)
    angle = north_angle_deg(utm, pyproj.CRS(UTM), 500, 500)
    convergence = pyproj.Proj(UTM).get_factors(39, 60).meridian_convergence
    assert angle == pytest.approx(-abs(convergence), abs=0.05)
    flipped = Affine(1.0, 0, x - 250, 0, 1.0, y - 250)  # a north-down raster
    assert abs(north_angle_deg(flipped, pyproj.CRS(UTM), 500, 500)) == pytest.approx(
        180 - abs(convergence), abs=0.05
    )


def test_html_report_is_self_contained(scene: tuple[Path, Path]) -> None:
    raster, gpkg = scene
    results = read_results(gpkg)
    quicklook = make_quicklook(results, str(raster), 400)
    page = render_report(results, quicklook, summarize(results))
    embedded = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert embedded is not None
    assert base64.b64decode(embedded.group(1)) == quicklook.png
    assert re.search(
        rf"<td>{re.escape(str(raster))}</td><td>.*lawn</td><td class=\"n\">1</td>", page
    )
    assert re.search(r"<td>all sources</td><td>.*lawn</td><td class=\"n\">2</td>", page)
    assert "<svg" in page
    assert "&quot;tile_size&quot;: 512" in page
    for external in ("<script", "<link", 'src="http', "url("):
        assert external not in page


def test_html_report_escapes_hostile_names(make_raster, tmp_path: Path) -> None:
    hostile = "<img src=x onerror=alert(1)>.tif"
    raster = two_tone(make_raster, hostile)
    gpkg = write_gpkg(
        tmp_path / "o.gpkg", [(shapely.box(1, 1, 9, 9), "lawn", str(raster))], [str(raster)]
    )
    results = read_results(gpkg)
    page = render_report(results, make_quicklook(results, str(raster), 400), summarize(results))
    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;.tif" in page
