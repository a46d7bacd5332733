"""Tests for geoseg.tasks.vectorize: label tiles to pixel-space polygons, affine, simplification."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio.features
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from geoseg.errors import OptionsError
from geoseg.tasks.vectorize import (
    label_polygons,
    polygonize_labels,
    simplify_pixels,
    to_crs_geometries,
)

label_arrays = st.tuples(st.integers(1, 12), st.integers(1, 12)).flatmap(
    lambda shape: arrays(np.uint32, shape, elements=st.integers(0, 4))
)
offsets = st.integers(-50, 50)


def test_polygons_are_in_global_pixel_space() -> None:
    labels = np.zeros((4, 5), dtype=np.uint32)
    labels[1:3, 2:4] = 9

    geoms = polygonize_labels(labels, col_off=100, row_off=20)

    assert list(geoms) == [9]
    assert geoms[9].equals(shapely.box(102, 21, 104, 23))


def test_holes_are_kept() -> None:
    labels = np.ones((3, 3), dtype=np.uint32)
    labels[1, 1] = 0

    geom = polygonize_labels(labels, 0, 0)[1]

    assert geom.geom_type == "Polygon"
    assert len(geom.interiors) == 1
    assert geom.area == 8


def test_diagonal_pixels_are_separate_parts_of_one_multipolygon() -> None:
    labels = np.array([[5, 0], [0, 5]], dtype=np.uint32)

    geom = polygonize_labels(labels, 0, 0)[5]

    assert geom.geom_type == "MultiPolygon"
    assert shapely.get_num_geometries(geom) == 2
    assert geom.is_valid


def test_region_crops_the_array_in_global_coordinates() -> None:
    labels = np.array([[1, 1, 2], [1, 1, 2]], dtype=np.uint32)

    geoms = polygonize_labels(labels, 10, 30, region=(11, 0, 12, 31))

    assert list(geoms) == [1]
    assert geoms[1].equals(shapely.box(11, 30, 12, 31))


@pytest.mark.parametrize("region", [(0, 0, 10, 30), (13, 30, 20, 40), (11, 31, 11, 40)])
def test_region_outside_the_tile_gives_nothing(region: tuple[int, int, int, int]) -> None:
    labels = np.ones((2, 3), dtype=np.uint32)

    assert polygonize_labels(labels, 10, 30, region=region) == {}


def test_background_only_gives_nothing() -> None:
    assert polygonize_labels(np.zeros((3, 3), dtype=np.uint32), 0, 0) == {}


def test_large_labels_survive_the_int32_cast() -> None:
    labels = np.full((1, 1), 2**31 - 1, dtype=np.uint32)

    assert list(polygonize_labels(labels, 0, 0)) == [2**31 - 1]


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.zeros(3, dtype=np.uint32), "2-D"),
        (np.zeros((2, 2), dtype=np.float32), "integer"),
        (np.full((1, 1), 2**31, dtype=np.uint32), "below 2"),
        (np.full((1, 1), -3, dtype=np.int32), "negative"),
    ],
)
def test_bad_label_arrays_are_refused(labels: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        polygonize_labels(labels, 0, 0)


def test_invalid_polygons_from_gdal_would_be_made_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    # GDAL's polygonizer has not been seen to emit invalid rings; stand in for one that does.
    bowtie = {"type": "Polygon", "coordinates": [[(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)]]}
    monkeypatch.setattr(rasterio.features, "shapes", lambda *args, **kwargs: [(bowtie, 1.0)])

    geom = polygonize_labels(np.ones((2, 2), dtype=np.uint32), 0, 0)[1]

    assert geom.is_valid
    assert geom.geom_type == "MultiPolygon"
    assert geom.area == 2


@settings(max_examples=150, deadline=None)
@given(labels=label_arrays, col_off=offsets, row_off=offsets)
def test_area_is_pixel_count_and_polygons_are_valid(
    labels: np.ndarray, col_off: int, row_off: int
) -> None:
    geoms = polygonize_labels(labels, col_off, row_off)

    values, counts = np.unique(labels[labels != 0], return_counts=True)
    assert sorted(geoms) == values.tolist()
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        geom = geoms[value]
        assert geom.is_valid
        assert geom.geom_type in {"Polygon", "MultiPolygon"}
        assert geom.area == count
        coords = shapely.get_coordinates(geom)
        assert np.array_equal(coords, np.round(coords))
        assert geom.bounds[0] >= col_off
        assert geom.bounds[1] >= row_off


@settings(max_examples=60, deadline=None)
@given(labels=label_arrays, dtype=st.sampled_from([np.uint8, np.uint16, np.int16, np.int64]))
def test_every_integer_type_gives_the_same_polygons(labels: np.ndarray, dtype: type) -> None:
    expected_labels, expected = label_polygons(labels, 3, 4)

    got_labels, got = label_polygons(labels.astype(dtype), 3, 4)

    assert got_labels.dtype == np.int64
    assert got_labels.tolist() == expected_labels.tolist()
    assert shapely.equals_exact(got, expected, tolerance=0).all()


def test_label_polygons_pairs_each_label_with_its_geometry() -> None:
    labels = np.array([[0, 4, 4], [9, 0, 0]], dtype=np.uint8)

    found, geoms = label_polygons(labels, 0, 0)

    assert found.tolist() == [4, 9]
    assert geoms[0].equals(shapely.box(1, 0, 3, 1))
    assert geoms[1].equals(shapely.box(0, 1, 1, 2))


@settings(max_examples=150, deadline=None)
@given(labels=label_arrays, col_off=offsets, row_off=offsets, data=st.data())
def test_pieces_over_a_split_union_back_to_the_whole(
    labels: np.ndarray, col_off: int, row_off: int, data: st.DataObject
) -> None:
    height, width = labels.shape
    vertical = data.draw(st.booleans())
    split = data.draw(st.integers(0, width if vertical else height))
    end_col, end_row = col_off + width, row_off + height
    if vertical:
        first = (col_off, row_off, col_off + split, end_row)
        second = (col_off + split, row_off, end_col, end_row)
    else:
        first = (col_off, row_off, end_col, row_off + split)
        second = (col_off, row_off + split, end_col, end_row)

    whole = polygonize_labels(labels, col_off, row_off)
    pieces = [polygonize_labels(labels, col_off, row_off, region) for region in (first, second)]

    assert set(whole) == set(pieces[0]) | set(pieces[1])
    for value, geom in whole.items():
        parts = [piece[value] for piece in pieces if value in piece]
        union = shapely.union_all(parts)
        assert shapely.symmetric_difference(union, geom).area == 0
        assert sum(part.area for part in parts) == geom.area


def test_pixel_corners_land_exactly_on_the_transform() -> None:
    transform = Affine(0.3, 0.1, 712_345.67, -0.05, -0.3, 4_512_345.89)
    cols, rows = np.meshgrid(np.arange(0, 2000, 97), np.arange(0, 1500, 89))
    boxes = shapely.box(cols.ravel(), rows.ravel(), cols.ravel() + 1, rows.ravel() + 1)

    mapped = to_crs_geometries(boxes, transform)

    pixel_xy = shapely.get_coordinates(boxes)
    expected = np.array([transform @ (float(x), float(y)) for x, y in pixel_xy])
    assert np.array_equal(shapely.get_coordinates(mapped), expected)
    assert mapped.shape == boxes.shape


def test_shared_edges_stay_shared_after_the_transform() -> None:
    transform = Affine(0.1, 0.0, 123.456789, 0.0, -0.1, 987.654321)
    left, right = shapely.box(0, 0, 3, 2), shapely.box(3, 0, 5, 2)

    mapped = to_crs_geometries(np.array([left, right]), transform)

    assert shapely.intersection(mapped[0], mapped[1]).geom_type == "LineString"
    assert shapely.union_all(mapped).geom_type == "Polygon"


def test_to_crs_keeps_missing_values() -> None:
    mapped = to_crs_geometries(np.array([None, shapely.box(0, 0, 1, 1)]), Affine.scale(2))

    assert mapped[0] is None
    assert mapped[1].equals(shapely.box(0, -0, 2, 2))


def test_zero_tolerance_only_drops_collinear_vertices() -> None:
    staircase = shapely.Polygon([(0, 0), (1, 0), (2, 0), (2, 1), (2, 2), (1, 2), (1, 1), (0, 1)])

    simplified = simplify_pixels(np.array([staircase]), 0)[0]

    assert shapely.get_num_coordinates(simplified) == 7
    assert simplified.equals(staircase)


def test_simplification_reduces_vertices_and_stays_valid() -> None:
    labels = np.zeros((40, 40), dtype=np.uint32)
    rows, cols = np.mgrid[0:40, 0:40]
    labels[(rows - 20) ** 2 + (cols - 20) ** 2 < 15**2] = 1
    disk = polygonize_labels(labels, 0, 0)[1]

    simplified = simplify_pixels(np.array([disk]), 1.5)[0]

    assert simplified.is_valid
    assert shapely.get_num_coordinates(simplified) < shapely.get_num_coordinates(disk) / 2
    assert abs(simplified.area - disk.area) / disk.area < 0.05


def test_a_huge_tolerance_keeps_a_single_pixel_valid_and_inside() -> None:
    pixel = shapely.box(5, 5, 6, 6)

    simplified = simplify_pixels(np.array([pixel, None]), 10)

    assert simplified[0].is_valid
    assert not simplified[0].is_empty
    assert pixel.covers(simplified[0])
    assert simplified[1] is None


def test_geometries_that_simplification_would_empty_or_break_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GEOS's topology-preserving simplifier has not been seen to do this on pixel polygons, so
    # stand in for a future GEOS that does.
    bowtie = shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])
    broken = np.array([shapely.Polygon(), bowtie, shapely.box(0, 0, 1, 1)], dtype=object)
    monkeypatch.setattr(shapely, "simplify", lambda geoms, *args, **kwargs: broken.copy())
    source = np.array([shapely.box(0, 0, 1, 1), shapely.box(0, 0, 2, 2), shapely.box(0, 0, 3, 1)])

    simplified = simplify_pixels(source, 1)

    assert simplified[0].equals(source[0])
    assert simplified[1].equals(source[1])
    assert simplified[2].equals(shapely.box(0, 0, 1, 1))


@pytest.mark.parametrize("tolerance", [-1.0, float("nan"), float("inf")])
def test_bad_tolerance_is_refused(tolerance: float) -> None:
    with pytest.raises(OptionsError, match="tolerance"):
        simplify_pixels(np.array([shapely.box(0, 0, 1, 1)]), tolerance)
