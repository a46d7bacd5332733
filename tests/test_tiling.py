from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geoseg.errors import OptionsError
from geoseg.tasks.tiling import (
    Tile,
    check_tiling,
    overlapping_pairs,
    plan_axis,
    plan_tiles,
    raster_tiling,
    resampling_scale,
)


@st.composite
def tilings(draw: st.DrawFn) -> tuple[int, int, int, int]:
    tile_size = draw(st.integers(16, 96))
    overlap = draw(st.integers(1, tile_size // 2))
    width = draw(st.integers(1, 400))
    height = draw(st.integers(1, 400))
    return width, height, tile_size, overlap


@given(tilings())
def test_tiles_stay_inside_and_cores_partition_the_raster(
    params: tuple[int, int, int, int],
) -> None:
    width, height, tile_size, overlap = params
    owner = np.zeros((height, width), dtype=np.int32)
    covered = np.zeros((height, width), dtype=bool)
    for tile in plan_tiles(width, height, tile_size, overlap):
        assert min(tile.col_off, tile.row_off) >= 0
        assert tile.col_off + tile.width <= width
        assert tile.row_off + tile.height <= height
        assert (tile.width, tile.height) == (min(tile_size, width), min(tile_size, height))
        col0, row0, col1, row1 = tile.core
        owner[row0:row1, col0:col1] += 1
        covered[
            tile.row_off : tile.row_off + tile.height, tile.col_off : tile.col_off + tile.width
        ] = True
    assert covered.all()
    assert (owner == 1).all()


@given(tilings())
def test_neighbours_overlap_by_at_least_the_overlap(params: tuple[int, int, int, int]) -> None:
    width, _, tile_size, overlap = params
    axis = plan_axis(width, tile_size, overlap)
    for (a, size, _, _), (b, _, _, _) in itertools.pairwise(axis):
        assert a + size - b >= overlap


@given(tilings())
def test_cores_keep_at_least_half_the_overlap_of_context(params: tuple[int, int, int, int]) -> None:
    width, _, tile_size, overlap = params
    for offset, size, start, end in plan_axis(width, tile_size, overlap):
        assert start == 0 or start - offset >= overlap // 2
        assert end == width or offset + size - end >= overlap // 2


def test_small_raster_is_one_tile() -> None:
    (tile,) = plan_tiles(5, 1, 512, 64)
    assert tile.box == (0, 0, 5, 1)
    assert tile.core == (0, 0, 5, 1)


def test_last_tile_is_pulled_back_to_the_edge() -> None:
    assert [o for o, *_ in plan_axis(1000, 512, 64)] == [0, 448, 488]


def test_overlapping_pairs_include_diagonals() -> None:
    tiles = plan_tiles(40, 40, 24, 8)
    pairs = {(a.index, b.index) for a, b, _ in overlapping_pairs(tiles)}
    assert pairs == {(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)}
    boxes = {(a.index, b.index): box for a, b, box in overlapping_pairs(tiles)}
    assert boxes[(0, 3)] == (16, 16, 24, 24)


@pytest.mark.parametrize(
    ("tile_size", "overlap", "message"),
    [
        (0, 1, "tile size 0"),
        (512, 0, "overlap 0"),
        (512, 300, "more than half"),
        (64, -1, "overlap -1"),
    ],
)
def test_bad_tiling_is_refused(tile_size: int, overlap: int, message: str) -> None:
    with pytest.raises(OptionsError, match=message):
        plan_tiles(100, 100, tile_size, overlap)


def test_tile_refuses_core_outside_window() -> None:
    with pytest.raises(ValueError, match="not inside"):
        Tile(index=0, col_off=0, row_off=0, width=10, height=10, core=(0, 0, 11, 10))


def test_resampling_scale_is_one_within_tolerance_or_without_a_model_resolution() -> None:
    assert resampling_scale(0.075, 0.15) == pytest.approx(0.5)
    assert resampling_scale(0.5, 0.15) == pytest.approx(0.5 / 0.15)
    assert resampling_scale(0.152, 0.15) == 1.0
    assert resampling_scale(0.3, None) == 1.0


@given(
    tile=st.integers(16, 1024),
    overlap_share=st.floats(0.0, 0.49),
    scale=st.floats(0.05, 20.0),
)
def test_raster_tiling_is_always_a_valid_tiling(
    tile: int, overlap_share: float, scale: float
) -> None:
    overlap = max(1, int(tile * overlap_share))
    raster_tile, raster_overlap = raster_tiling(tile, overlap, scale)

    check_tiling(raster_tile, raster_overlap)
    assert raster_tile == max(16, round(tile / scale))
