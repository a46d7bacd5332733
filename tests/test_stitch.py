from __future__ import annotations

import random

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.tasks.inference import TilePrediction
from geoseg.tasks.stitch import (
    StitchedObjects,
    anchors,
    cut_pieces,
    match_instances,
    match_overlaps,
    stitch_objects,
)
from geoseg.tasks.tiling import Tile, plan_tiles
from geoseg.tasks.vectorize import polygonize_labels


def predict_exactly(truth: np.ndarray, classes: dict[int, int], tile: Tile) -> TilePrediction:
    """What a perfect model sees in a tile: the truth's instances, relabelled 1..N."""
    window = truth[
        tile.row_off : tile.row_off + tile.height, tile.col_off : tile.col_off + tile.width
    ]
    ids = np.unique(window[window > 0])
    lookup = np.zeros(int(truth.max()) + 1, dtype=np.uint32)
    lookup[ids] = np.arange(1, len(ids) + 1, dtype=np.uint32)
    return TilePrediction(
        labels=lookup[window],
        class_ids=np.array([classes[int(i)] for i in ids], dtype=np.int64),
        scores=np.array([0.5 + (int(i) % 7) / 20 for i in ids], dtype=np.float32),
    )


def stitch_truth(
    truth: np.ndarray, classes: dict[int, int], tile_size: int, overlap: int, seed: int = 0
) -> StitchedObjects:
    height, width = truth.shape
    tiles = plan_tiles(width, height, tile_size, overlap)
    predictions = {t.index: predict_exactly(truth, classes, t) for t in tiles}
    order = list(tiles)
    random.Random(seed).shuffle(order)
    pieces = [cut_pieces(t, predictions[t.index]) for t in order]
    matches = match_overlaps(tiles, lambda t: predictions[t.index].labels)
    random.Random(seed + 1).shuffle(matches)
    return stitch_objects(pieces, matches)


def truth_objects(truth: np.ndarray) -> dict[int, shapely.Geometry]:
    return polygonize_labels(truth.astype(np.uint32), 0, 0)


@st.composite
def layouts(draw: st.DrawFn) -> tuple[np.ndarray, dict[int, int]]:
    """Non-overlapping rectangles, rings and L-shapes that may touch each other."""
    height = draw(st.integers(20, 120))
    width = draw(st.integers(20, 120))
    truth = np.zeros((height, width), dtype=np.int32)
    classes: dict[int, int] = {}
    for object_id in range(1, draw(st.integers(1, 25)) + 1):
        h = draw(st.integers(1, height))
        w = draw(st.integers(1, width))
        r = draw(st.integers(0, height - h))
        c = draw(st.integers(0, width - w))
        if (truth[r : r + h, c : c + w] != 0).any():
            continue
        truth[r : r + h, c : c + w] = object_id
        shape = draw(st.sampled_from(["box", "ring", "ell"]))
        if shape == "ring" and h >= 3 and w >= 3:
            truth[r + 1 : r + h - 1, c + 1 : c + w - 1] = 0
        elif shape == "ell" and h >= 2 and w >= 2:
            truth[r : r + h // 2, c + w // 2 : c + w] = 0
        classes[object_id] = draw(st.integers(1, 3))
    return truth, classes


@settings(max_examples=60, deadline=None)
@given(layouts(), st.integers(16, 48), st.data())
def test_stitching_a_perfect_model_gives_every_object_exactly_once(
    layout: tuple[np.ndarray, dict[int, int]], tile_size: int, data: st.DataObject
) -> None:
    truth, classes = layout
    overlap = data.draw(st.integers(1, tile_size // 2))
    objects = stitch_truth(truth, classes, tile_size, overlap, seed=data.draw(st.integers(0, 9)))
    expected = truth_objects(truth)
    assert len(objects) == len(expected)
    ids = list(expected)
    firsts = anchors(np.array([expected[i] for i in ids], dtype=object))
    by_anchor = {(int(r), int(c)): i for i, (r, c) in zip(ids, firsts, strict=True)}
    columns = (objects.geometry, objects.class_id.tolist(), objects.pixels.tolist())
    for (row, col), (geometry, class_id, pixels) in zip(
        objects.anchor.tolist(), zip(*columns, strict=True), strict=True
    ):
        object_id = by_anchor[(row, col)]
        assert class_id == classes[object_id]
        assert geometry.is_valid
        assert geometry.symmetric_difference(expected[object_id]).area == 0
        assert pixels == int((truth == object_id).sum())


@settings(max_examples=25, deadline=None)
@given(layouts(), st.integers(16, 40), st.integers(16, 40))
def test_result_does_not_depend_on_tile_size(
    layout: tuple[np.ndarray, dict[int, int]], size_a: int, size_b: int
) -> None:
    truth, classes = layout
    a = stitch_truth(truth, classes, size_a, size_a // 4)
    b = stitch_truth(truth, classes, size_b, size_b // 3, seed=5)
    assert np.array_equal(a.anchor, b.anchor)
    assert np.array_equal(a.class_id, b.class_id)
    assert np.array_equal(a.pixels, b.pixels)
    assert shapely.equals(a.geometry, b.geometry).all()


def test_touching_objects_stay_apart_and_a_long_bridge_stays_whole() -> None:
    truth = np.zeros((60, 200), dtype=np.int32)
    truth[10:30, 10:50] = 1  # two adjoining lawns, cut by tile borders
    truth[10:30, 50:90] = 2
    truth[40:44, 0:200] = 3  # a bridge longer than any tile
    truth[0:60, 120:124] = 4  # crossing nothing, touching the bridge from above and below
    truth[40:44, 120:124] = 3
    classes = {1: 1, 2: 1, 3: 2, 4: 3}
    objects = stitch_truth(truth, classes, 32, 8)
    assert len(objects) == 4
    areas = sorted(shapely.area(objects.geometry).tolist())
    assert areas == sorted([800.0, 800.0, 800.0, 60 * 4 - 16.0])


def test_an_object_over_many_blocks_comes_out_as_from_a_single_union(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Object 1 covers the raster but for 60 other objects: holes in it, some of them rings
    # around islands of object 1, so its pieces span every block.
    rng = np.random.default_rng(3)
    truth = np.ones((240, 240), dtype=np.int32)
    for object_id in range(2, 62):
        r, c = rng.integers(0, 230, 2)
        h, w = rng.integers(3, 10, 2)
        truth[r : r + h, c : c + w] = object_id
        if object_id % 3 == 0:
            truth[r + 1 : r + h - 1, c + 1 : c + w - 1] = 1
    classes = {int(i): 1 for i in np.unique(truth)}
    monkeypatch.setattr("geoseg.tasks.stitch.BLOCK_PX", 10**6)
    at_once = stitch_truth(truth, classes, 32, 8)
    monkeypatch.setattr("geoseg.tasks.stitch.BLOCK_PX", 72)
    by_blocks = stitch_truth(truth, classes, 32, 8)
    whole = truth_objects(truth)[1]
    (largest,) = np.flatnonzero(by_blocks.pixels == (truth == 1).sum())
    assert by_blocks.geometry[largest].is_valid
    assert by_blocks.geometry[largest].symmetric_difference(whole).area == 0
    assert np.array_equal(by_blocks.anchor, at_once.anchor)
    assert all(
        a.equals_exact(b, 0) for a, b in zip(by_blocks.geometry, at_once.geometry, strict=True)
    )


def test_match_instances_needs_shared_pixels() -> None:
    a = np.array([[1, 1, 0, 2], [1, 1, 0, 2]])
    b = np.array([[5, 5, 6, 0], [5, 5, 6, 0]])
    assert match_instances(a, b) == [(1, 5)]


def test_class_is_the_majority_and_score_is_pixel_weighted() -> None:
    truth = np.zeros((20, 60), dtype=np.int32)
    truth[5:15, 0:60] = 1
    tiles = plan_tiles(60, 20, 32, 8)
    assert [t.core[2] - t.core[0] for t in tiles] == [28, 14, 18]
    classes, scores = [2, 1, 2], [0.6, 0.9, 0.8]
    preds = [
        TilePrediction(
            predict_exactly(truth, {1: 1}, t).labels, np.array([c]), np.array([s], dtype=np.float32)
        )
        for t, c, s in zip(tiles, classes, scores, strict=True)
    ]
    pieces = [cut_pieces(t, p) for t, p in zip(tiles, preds, strict=True)]
    objects = stitch_objects(pieces, match_overlaps(tiles, lambda t: preds[t.index].labels))
    assert len(objects) == 1
    assert objects.class_id[0] == 2  # 460 px of class 2 against 140 px of the best-scored class 1
    assert objects.score[0] == pytest.approx((0.6 * 28 + 0.9 * 14 + 0.8 * 18) / 60)
    assert objects.pixels[0] == 600


@settings(max_examples=80, deadline=None)
@given(layouts())
def test_anchor_is_each_objects_first_pixel_in_raster_order(
    layout: tuple[np.ndarray, dict[int, int]],
) -> None:
    truth, _ = layout
    objects = truth_objects(truth)
    firsts = anchors(np.array(list(objects.values()), dtype=object))
    for object_id, (row, col) in zip(objects, firsts.tolist(), strict=True):
        assert [row, col] == np.argwhere(truth == object_id)[0].tolist()


def test_anchors_of_nothing() -> None:
    assert anchors(np.empty(0, dtype=object)).shape == (0, 2)


@settings(max_examples=60, deadline=None)
@given(layouts(), st.integers(16, 48), st.data())
def test_a_tiles_pieces_cover_exactly_its_core_pixels(
    layout: tuple[np.ndarray, dict[int, int]], tile_size: int, data: st.DataObject
) -> None:
    truth, classes = layout
    tiles = plan_tiles(truth.shape[1], truth.shape[0], tile_size, tile_size // 4)
    tile = tiles[data.draw(st.integers(0, len(tiles) - 1))]
    prediction = predict_exactly(truth, classes, tile)

    pieces = cut_pieces(tile, prediction)

    core = prediction.labels[
        tile.core[1] - tile.row_off : tile.core[3] - tile.row_off,
        tile.core[0] - tile.col_off : tile.core[2] - tile.col_off,
    ]
    counts = np.bincount(core.ravel(), minlength=prediction.count + 1)[1:]
    assert pieces.core_px.tolist() == counts.tolist()
    assert pieces.pieces.shape == (prediction.count,)
    assert shapely.is_missing(pieces.pieces).tolist() == (counts == 0).tolist()
    present = counts > 0
    assert shapely.area(pieces.pieces[present]).tolist() == counts[present].tolist()
