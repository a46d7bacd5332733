"""Tests for geoseg.tasks.measure: geodesic areas and perimeters in any CRS, pixel size."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest
import shapely
from affine import Affine
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from geoseg.errors import RasterError
from geoseg.tasks.measure import (
    DENSIFY_M,
    area_method,
    densify,
    measure_geodesic,
    pixel_size_m,
)
from geoseg.tasks.vectorize import polygonize_labels, to_crs_geometries

UTM32N = pyproj.CRS("EPSG:32632")
UTM33N = pyproj.CRS("EPSG:32633")
WGS84 = pyproj.CRS("EPSG:4326")
WEB_MERCATOR = pyproj.CRS("EPSG:3857")
LV95 = pyproj.CRS("EPSG:2056")
LOCAL = pyproj.CRS(
    'ENGCRS["lab bench",EDATUM["bench"],CS[Cartesian,2],'
    'AXIS["x",east,LENGTHUNIT["metre",1]],AXIS["y",north,LENGTHUNIT["metre",1]]]'
)
# UTM's scale on its central meridian: 100 m on the map is 100 / 0.9996 m on the ground.
UTM_K0 = 0.9996


def reproject(geom: shapely.Geometry, source: pyproj.CRS, target: pyproj.CRS) -> shapely.Geometry:
    """The same ground shape in another CRS, densified to 1 m so edges follow it closely."""
    transformer = pyproj.Transformer.from_crs(source, target, always_xy=True)
    return shapely.transform(
        shapely.segmentize(geom, 1.0), lambda xy: np.column_stack(transformer.transform(*xy.T))
    )


def utm33_square_at_60n(size_m: float) -> shapely.Geometry:
    """A square on UTM 33N's central meridian (15°E) with its south-west corner at 60°N."""
    x, y = pyproj.Transformer.from_crs(WGS84, UTM33N, always_xy=True).transform(15.0, 60.0)
    return shapely.box(x, y, x + size_m, y + size_m)


def test_100_m_square_in_utm() -> None:
    square = shapely.box(500_000, 5_000_000, 500_100, 5_000_100)

    area, perimeter = measure_geodesic(np.array([square]), UTM32N)

    assert area[0] == pytest.approx(10_000, rel=1e-3)
    assert area[0] == pytest.approx(10_000 / UTM_K0**2, rel=1e-5)
    assert perimeter[0] == pytest.approx(400 / UTM_K0, rel=1e-5)


def test_100_m_square_in_swiss_lv95_on_the_bessel_ellipsoid() -> None:
    square = shapely.box(2_600_000, 1_200_000, 2_600_100, 1_200_100)  # next to Bern

    area, _ = measure_geodesic(np.array([square]), LV95)

    assert area[0] == pytest.approx(10_000, rel=1e-3)


def test_same_ground_square_has_the_same_area_in_every_crs() -> None:
    square = utm33_square_at_60n(100)
    in_lonlat = reproject(square, UTM33N, WGS84)
    in_mercator = reproject(square, UTM33N, WEB_MERCATOR)

    areas = [
        measure_geodesic(np.array([geom]), crs)[0][0]
        for geom, crs in [(square, UTM33N), (in_lonlat, WGS84), (in_mercator, WEB_MERCATOR)]
    ]

    assert areas[0] == pytest.approx(10_000 / UTM_K0**2, rel=1e-5)
    assert areas[1] == pytest.approx(areas[0], rel=1e-6)
    assert areas[2] == pytest.approx(areas[0], rel=1e-6)
    # What a planar measure would have reported in Web Mercator at 60°N.
    assert in_mercator.area / areas[0] == pytest.approx(4, rel=0.01)


def test_lonlat_axis_order_is_longitude_first() -> None:
    # 0.001° x 0.001° at 60°N: ~55.8 m east-west by ~111.4 m north-south.
    cell = shapely.box(15.0, 60.0, 15.001, 60.001)

    area, _ = measure_geodesic(np.array([cell]), WGS84)

    assert area[0] == pytest.approx(55.8 * 111.4, rel=2e-3)


def test_long_edges_are_densified() -> None:
    # ~500 km square in Web Mercator at 60°N: its straight edges are not geodesics.
    to_lonlat = pyproj.Transformer.from_crs(WEB_MERCATOR, WGS84, always_xy=True)
    corner = reproject(shapely.Point(15.0, 60.0), WGS84, WEB_MERCATOR)
    square = shapely.box(corner.x, corner.y, corner.x + 1_000_000, corner.y + 1_000_000)
    geod = pyproj.Geod(ellps="WGS84")

    def geodesic_area(geom: shapely.Geometry) -> float:
        lonlat = shapely.transform(geom, lambda xy: np.column_stack(to_lonlat.transform(*xy.T)))
        return float(abs(geod.geometry_area_perimeter(lonlat)[0]))

    reference = geodesic_area(shapely.segmentize(square, 50.0))

    area, _ = measure_geodesic(np.array([square]), WEB_MERCATOR)

    assert abs(geodesic_area(square) / reference - 1) > 1e-3
    assert area[0] == pytest.approx(reference, rel=1e-7)


@settings(max_examples=100, deadline=None)
@given(
    arrays(np.float64, (5, 2), elements=st.floats(-50, 50, allow_nan=False)),
    st.floats(0.5, 40),
)
def test_densify_splits_long_edges_evenly_and_keeps_every_vertex(
    points: np.ndarray, max_length: float
) -> None:
    triangle = np.vstack([points[:3], points[:1]])  # two closed rings of the same edges
    square = np.vstack([points[1:], points[1:2]])
    coords = np.vstack([triangle, square])
    ring_of = np.repeat([0, 1], [4, 5])

    dense, dense_ring = densify(coords, ring_of, max_length)

    for ring, original in enumerate((triangle, square)):
        ring_coords = dense[dense_ring == ring]
        lengths = np.hypot(*np.diff(original, axis=0).T)
        parts = np.maximum(np.ceil(lengths / max_length), 1).astype(int)
        assert len(ring_coords) == 1 + parts.sum()
        assert (ring_coords[np.r_[0, np.cumsum(parts)]] == original).all()
        assert (np.hypot(*np.diff(ring_coords, axis=0).T) <= max_length * (1 + 1e-9)).all()


def test_holes_are_subtracted_and_parts_summed() -> None:
    shell = shapely.box(500_000, 5_000_000, 500_100, 5_000_100)
    with_hole = shell.difference(shapely.box(500_040, 5_000_040, 500_060, 5_000_060))
    second = shapely.box(500_200, 5_000_000, 500_300, 5_000_100)
    multi = shapely.MultiPolygon([with_hole, second])

    area, perimeter = measure_geodesic(np.array([shell, with_hole, multi]), UTM32N)

    assert area[1] == pytest.approx(area[0] * (1 - 0.04), rel=1e-9)
    assert area[2] == pytest.approx(area[1] + area[0], rel=1e-9)
    assert perimeter[1] == pytest.approx(perimeter[0] * 1.2, rel=1e-6)
    assert perimeter[2] == pytest.approx(perimeter[1] + perimeter[0], rel=1e-9)


def test_area_is_positive_whatever_the_ring_orientation() -> None:
    square = shapely.box(500_000, 5_000_000, 500_100, 5_000_100)
    clockwise = shapely.orient_polygons(square, exterior_cw=True)

    area, _ = measure_geodesic(np.array([square, clockwise]), UTM32N)

    assert area[0] > 0
    assert area[1] == area[0]


def test_empty_and_missing_geometries_measure_zero() -> None:
    geoms = np.array([shapely.Polygon(), None, shapely.MultiPolygon()], dtype=object)

    area, perimeter = measure_geodesic(geoms, UTM32N)

    assert area.tolist() == [0.0, 0.0, 0.0]
    assert perimeter.tolist() == [0.0, 0.0, 0.0]


def test_nothing_to_measure() -> None:
    area, perimeter = measure_geodesic(np.array([], dtype=object), UTM32N)

    assert area.shape == perimeter.shape == (0,)


@settings(max_examples=60, deadline=None)
@given(
    mask=st.tuples(st.integers(1, 16), st.integers(2, 16)).flatmap(
        lambda shape: arrays(np.uint32, shape, elements=st.integers(0, 1))
    ),
    x=st.floats(100_000, 900_000),
    y=st.floats(0, 9_000_000),
    pixel_m=st.floats(0.1, 200),
    data=st.data(),
)
def test_areas_add_up_when_a_polygon_is_split(
    mask: np.ndarray, x: float, y: float, pixel_m: float, data: st.DataObject
) -> None:
    # Split the way tiles split an object: along a pixel column, edges straight in the CRS.
    height, width = mask.shape
    cut = data.draw(st.integers(1, width - 1))
    whole = polygonize_labels(mask, 0, 0)
    left = polygonize_labels(mask, 0, 0, region=(0, 0, cut, height))
    right = polygonize_labels(mask, 0, 0, region=(cut, 0, width, height))
    assume(1 in left and 1 in right)
    transform = Affine(pixel_m, 0, x, 0, -pixel_m, y)
    geoms = to_crs_geometries(np.array([whole[1], left[1], right[1]]), transform)

    area, _ = measure_geodesic(geoms, UTM32N)

    scale = UTM_K0 * (1 + (x - 500_000) ** 2 / (2 * 6_371_000**2))
    assert area[0] == pytest.approx(mask.sum() * pixel_m**2 / scale**2, rel=1e-4)
    # Not exact: a piece may have a vertex where the whole has none (or the reverse) on an edge
    # that is straight in UTM, and geodesics bend away from UTM's straight lines by ~L²/8 * x/R²
    # (L: edge length, x: distance from the central meridian, R: Earth's radius), a 1.2 mm bulge
    # on a 1 km edge 400 km off the meridian. The cut changes the area by a few L³ x/R² / 12 at
    # most (bounded generously below); Karney's areas also have a rounding floor of ~1e-5 m².
    edge_m = min(max(mask.shape) * pixel_m, DENSIFY_M)
    bulge_m2 = edge_m**3 * abs(x - 500_000) / 6_371_000**2 / 3
    assert abs(area[1] + area[2] - area[0]) <= bulge_m2 + 1e-4


def test_a_crs_without_a_geodetic_datum_is_refused() -> None:
    with pytest.raises(RasterError, match=r"lab bench.*no geodetic datum"):
        measure_geodesic(np.array([shapely.box(0, 0, 1, 1)]), LOCAL)
    with pytest.raises(RasterError, match="no geodetic datum"):
        area_method(LOCAL)


def test_coordinates_outside_the_projection_are_refused() -> None:
    beyond = shapely.box(1e8, 5_000_000, 1e8 + 10, 5_000_010)  # far outside UTM's domain

    with pytest.raises(RasterError, match="outside"):
        measure_geodesic(np.array([beyond]), UTM32N)


def test_non_polygons_are_refused() -> None:
    with pytest.raises(ValueError, match="Polygon"):
        measure_geodesic(np.array([shapely.Point(0, 0)]), UTM32N)


@pytest.mark.parametrize(
    ("crs", "words"),
    [
        (pyproj.CRS("EPSG:32636"), ["WGS 84 ellipsoid", "pyproj.Geod", "from EPSG:32636"]),
        (LV95, ["Bessel 1841 ellipsoid", "from EPSG:2056", "CH1903+"]),
        (WGS84, ["WGS 84 ellipsoid", "in EPSG:4326"]),
    ],
)
def test_area_method_says_how_and_where(crs: pyproj.CRS, words: list[str]) -> None:
    method = area_method(crs)

    assert method.startswith("geodesic on the ")
    for word in words:
        assert word in method


def test_pixel_size_in_utm() -> None:
    transform = Affine(0.5, 0, 499_000, 0, -0.5, 5_001_000)

    assert pixel_size_m(transform, UTM32N, 4000, 4000) == pytest.approx(0.5 / UTM_K0, rel=1e-5)


def test_pixel_size_in_web_mercator_at_60n_is_about_half_the_nominal() -> None:
    corner = reproject(shapely.Point(15.0, 60.0), WGS84, WEB_MERCATOR)
    transform = Affine(1, 0, corner.x - 50, 0, -1, corner.y + 50)

    # Web Mercator is spherical; on the ellipsoid a pixel at 60°N is 0.17% larger than cos(60°).
    assert pixel_size_m(transform, WEB_MERCATOR, 100, 100) == pytest.approx(0.5, rel=3e-3)


def test_pixel_size_in_lonlat_uses_the_centre_pixel() -> None:
    # 1e-5° pixels, raster centre at 15°E 60°N.
    transform = Affine(1e-5, 0, 15.0 - 1e-3, 0, -1e-5, 60.0 + 1e-3)
    geod = pyproj.Geod(ellps="WGS84")
    east = geod.inv(15.0, 60.0, 15.0 + 1e-5, 60.0)[2]
    north = geod.inv(15.0, 60.0, 15.0, 60.0 + 1e-5)[2]

    size = pixel_size_m(transform, WGS84, 200, 200)

    assert size == pytest.approx(np.sqrt(east * north), rel=1e-4)


def test_pixel_size_needs_a_raster() -> None:
    with pytest.raises(ValueError, match="positive"):
        pixel_size_m(Affine.identity(), UTM32N, 0, 10)
