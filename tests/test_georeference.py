"""Tests for geoseg.tasks.georeference: stitched objects to measured, filtered map polygons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely
from affine import Affine
from pyproj import CRS, Geod, Transformer

from geoseg import run
from geoseg.tasks.georeference import georeference_objects
from geoseg.tasks.reading import RasterInfo
from geoseg.tasks.stitch import StitchedObjects, anchors
from tests.conftest import MakeRaster
from tests.oracle_model import write_oracle_model

CLASSES = {1: "lawn", 2: "bridge", 3: "building"}
UTM = CRS.from_epsg(32636)
UTM_GRID = Affine(0.5, 0, 500_000, 0, -0.5, 40_000)
# Ground area of a 0.5 m UTM pixel on the central meridian, where the scale factor is 0.9996.
UTM_PIXEL_M2 = 0.25 / 0.9996**2


def raster(
    crs: CRS = UTM, transform: Affine = UTM_GRID, width: int = 100, height: int = 80
) -> RasterInfo:
    return RasterInfo(
        path="/data/rasters/scene.tif",
        width=width,
        height=height,
        count=2,
        crs_wkt=crs.to_wkt(),
        transform=transform,
    )


def stitched(*objects: tuple[shapely.Geometry, int, float]) -> StitchedObjects:
    """Objects as stitching yields them, from (geometry, class id, score) triples."""
    geoms = np.array([geometry for geometry, _, _ in objects], dtype=object)
    return StitchedObjects(
        geometry=geoms,
        class_id=np.array([class_id for _, class_id, _ in objects], dtype=np.int64),
        score=np.array([score for _, _, score in objects], dtype=np.float64),
        pixels=shapely.area(geoms).astype(np.int64),
        anchor=anchors(geoms),
    )


def one(geometry: shapely.Geometry) -> StitchedObjects:
    """A single lawn object scored 0.9."""
    return stitched((geometry, 1, 0.9))


def ell(col: int, row: int) -> shapely.Geometry:
    """An L of 3 pixels whose top row holds one pixel at (row, col + 1)."""
    return shapely.union(
        shapely.box(col + 1, row, col + 2, row + 1), shapely.box(col, row + 1, col + 2, row + 2)
    )


def test_objects_get_ids_from_their_first_pixel_classes_scores_and_source() -> None:
    objects = stitched((ell(10, 5), 3, 0.75), (shapely.box(0, 40, 30, 42), 2, 0.5))

    rows = georeference_objects(objects, raster(), CLASSES, UTM)

    assert rows.object_id.tolist() == ["scene.tif:5:11", "scene.tif:40:0"]
    assert rows.class_name.tolist() == ["building", "bridge"]
    assert rows.score.tolist() == [0.75, 0.5]
    assert rows.source.tolist() == ["/data/rasters/scene.tif"] * 2
    assert rows.area_m2 == pytest.approx([3 * UTM_PIXEL_M2, 60 * UTM_PIXEL_M2], rel=1e-6)
    assert rows.perimeter_m == pytest.approx([4 / 0.9996, 32 / 0.9996], rel=1e-6)
    assert shapely.equals(rows.geometry[1], shapely.box(500_000, 39_979, 500_015, 39_980))


def test_objects_below_the_minimum_area_are_dropped() -> None:
    objects = stitched(
        (shapely.box(0, 0, 10, 4), 1, 0.9),  # 40 px, about 10.008 m²
        (shapely.box(20, 0, 30, 3), 1, 0.9),  # 30 px
        (shapely.box(40, 0, 50, 5), 1, 0.9),  # 50 px
    )

    rows = georeference_objects(objects, raster(), CLASSES, UTM, min_area_m2=40 * UTM_PIXEL_M2)

    assert rows.object_id.tolist() == ["scene.tif:0:0", "scene.tif:0:40"]
    assert rows.area_m2 == pytest.approx([40 * UTM_PIXEL_M2, 50 * UTM_PIXEL_M2], rel=1e-9)
    assert len(rows.geometry) == len(rows.score) == len(rows.perimeter_m) == 2


def test_no_objects_give_empty_rows() -> None:
    rows = georeference_objects(
        StitchedObjects.empty(), raster(), CLASSES, UTM, simplify_m=1.0, min_area_m2=5.0
    )

    assert len(rows.object_id) == len(rows.geometry) == len(rows.area_m2) == 0


def test_simplification_tolerance_is_in_metres_on_a_geographic_crs() -> None:
    # 1e-5 degree pixels at 60°N: about 0.56 m east-west by 1.11 m north-south.
    grid = Affine(1e-5, 0, 10.0, 0, -1e-5, 60.0)
    info = raster(CRS.from_epsg(4326), grid)
    corners = [grid @ (50 + dx, 40 + dy) for dx, dy in [(0, 0), (1, 0), (1, 1), (0, 1)]]
    lons, lats = zip(*corners, strict=True)
    pixel_m = np.sqrt(abs(Geod(ellps="WGS84").polygon_area_perimeter(lons, lats)[0]))
    assert 0.7 < pixel_m < 0.9
    # A 40 x 20 px field with a one-pixel bump on its top edge, 1 px off the edge.
    rectangle = shapely.box(30, 30, 70, 50)
    field = shapely.normalize(shapely.union(rectangle, shapely.box(50, 29, 51, 30)))

    info_crs = CRS.from_epsg(4326)

    def simplified(tolerance_m: float) -> tuple[shapely.Geometry, float]:
        rows = georeference_objects(one(field), info, CLASSES, info_crs, tolerance_m)
        return rows.geometry[0], float(rows.area_m2[0])

    exact = shapely.affinity.affine_transform(field, grid.to_shapely())
    smooth = shapely.affinity.affine_transform(rectangle, grid.to_shapely())
    rectangle_m2 = georeference_objects(one(rectangle), info, CLASSES, info_crs).area_m2

    assert shapely.equals(simplified(0.5 * pixel_m)[0], exact)
    geometry, area_m2 = simplified(1.1 * pixel_m)
    assert shapely.equals(geometry, smooth)
    assert area_m2 == pytest.approx(rectangle_m2[0], rel=1e-12)


def test_reprojected_objects_keep_the_areas_measured_in_their_own_crs() -> None:
    objects = stitched((shapely.box(0, 0, 40, 20), 1, 0.9), (ell(60, 60), 1, 0.9))
    mercator = CRS.from_epsg(3857)

    native = georeference_objects(objects, raster(), CLASSES, UTM)
    moved = georeference_objects(objects, raster(), CLASSES, mercator)

    assert moved.area_m2.tolist() == native.area_m2.tolist()
    assert moved.perimeter_m.tolist() == native.perimeter_m.tolist()
    to_mercator = Transformer.from_crs(UTM, mercator, always_xy=True)
    for got, source in zip(moved.geometry, native.geometry, strict=True):
        x, y = to_mercator.transform(*shapely.get_coordinates(source).T)
        np.testing.assert_allclose(shapely.get_coordinates(got), np.column_stack([x, y]))


def test_reprojection_to_a_geographic_crs_gives_longitude_first() -> None:
    rows = georeference_objects(
        one(shapely.box(0, 0, 2, 2)), raster(), CLASSES, CRS.from_epsg(4326)
    )

    lon, lat = shapely.get_coordinates(rows.geometry[0]).mean(axis=0)
    assert lon == pytest.approx(33.0, abs=0.01)  # UTM 36N's central meridian
    assert lat == pytest.approx(0.36, abs=0.01)


def test_north_down_rasters_give_the_same_valid_polygons_and_areas() -> None:
    # The same ground: north-up, and stored bottom row first with a positive pixel height.
    height = 80
    north_up = raster(transform=UTM_GRID, height=height)
    north_down = raster(
        transform=Affine(0.5, 0, 500_000, 0, 0.5, 40_000 - 0.5 * height), height=height
    )
    ring = shapely.difference(shapely.box(10, 10, 30, 30), shapely.box(15, 15, 20, 22))
    flipped = shapely.affinity.affine_transform(ring, [1, 0, 0, -1, 0, height])

    up = georeference_objects(one(ring), north_up, CLASSES, UTM, simplify_m=0.3)
    down = georeference_objects(
        one(shapely.normalize(flipped)), north_down, CLASSES, UTM, simplify_m=0.3
    )

    assert shapely.equals(up.geometry[0], down.geometry[0])
    assert down.geometry[0].is_valid
    for polygon in (up.geometry[0], down.geometry[0]):
        assert polygon.exterior.is_ccw
        assert not any(hole.is_ccw for hole in polygon.interiors)
    assert down.area_m2 == pytest.approx(up.area_m2, rel=1e-12)
    assert down.perimeter_m == pytest.approx(up.perimeter_m, rel=1e-12)
    assert down.area_m2[0] == pytest.approx((400 - 35) * UTM_PIXEL_M2, rel=1e-6)


@pytest.mark.e2e
def test_a_north_down_raster_gives_the_objects_of_the_same_raster_north_up(
    make_raster: MakeRaster, tmp_path: Path
) -> None:
    ids = np.zeros((40, 50), dtype=np.uint16)
    ids[5:15, 5:20] = 1001
    ids[20:35, 10:40] = 3001
    ids[25:30, 20:30] = 0  # a courtyard
    ids[30:40, 42:50] = 2001
    bands = np.stack([np.ones_like(ids), ids])
    up = make_raster(bands, name="up.tif", transform=Affine(0.5, 0, 500_000, 0, -0.5, 40_020))
    down = make_raster(
        bands[:, ::-1], name="down.tif", transform=Affine(0.5, 0, 500_000, 0, 0.5, 40_000)
    )
    model = write_oracle_model(tmp_path / "oracle.pt")

    result = run(
        [up, down],
        tmp_path / "objects.gpkg",
        model=model,
        tile_size=32,
        overlap_px=8,
        workers=1,
        batch_size=16,
    )

    for name in CLASSES.values():
        layer = pyogrio.read_dataframe(result.output, layer=name)
        from_up = layer[layer["source"] == str(up)]
        from_down = layer[layer["source"] == str(down)]
        assert len(from_up) == len(from_down) == 1, name
        assert from_down.geometry.is_valid.all()
        assert shapely.equals(from_up.geometry.iloc[0], from_down.geometry.iloc[0])
        assert from_down["area_m2"].iloc[0] == pytest.approx(from_up["area_m2"].iloc[0], rel=1e-9)
        assert from_down["perimeter_m"].iloc[0] == pytest.approx(
            from_up["perimeter_m"].iloc[0], rel=1e-9
        )
    building = pyogrio.read_dataframe(result.output, layer="building")
    assert building["area_m2"].tolist() == pytest.approx([(450 - 50) * UTM_PIXEL_M2] * 2)
