"""The built-in greenery model: finds green things, ignores grey, red and blue-green ones."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's own convention)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from geoseg.models.contract import ModelSpec, load_model, read_model_spec
from geoseg.models.greenery import (
    build,
    label_components,
    main,
    neighbourhood_max,
    ranked_detections,
)
from geoseg.models.shipped import GREENERY_MODEL, shipped_model_path
from geoseg.tasks.inference import TilePrediction, predict_tiles

CPU = torch.device("cpu")
GREY, LAWN, TREE = (128, 128, 128), (90, 116, 86), (61, 75, 64)
ROOF, WATER = (150, 80, 70), (48, 71, 75)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.jit.ScriptModule, ModelSpec]:
    return load_model(build(tmp_path_factory.mktemp("m") / "greenery.pt").path, CPU)


def image(height: int = 120, width: int = 160) -> np.ndarray:
    """A grey RGB scene, float32 ``[3, h, w]`` with 8-bit values, plus a little noise."""
    noise = np.random.default_rng(3).normal(0, 3, (3, height, width))
    return (np.array(GREY, np.float32)[:, None, None] + noise).astype(np.float32)


def paint(pixels: np.ndarray, where: np.ndarray, colour: tuple[int, int, int]) -> None:
    pixels[:, where] = np.array(colour, np.float32)[:, None]


def disk(shape: tuple[int, int], row: int, col: int, radius: int) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - row) ** 2 + (cols - col) ** 2 <= radius**2


def segment(model: tuple[torch.jit.ScriptModule, ModelSpec], pixels: np.ndarray) -> TilePrediction:
    valid = np.ones(pixels.shape[1:], bool)
    return predict_tiles(*model, [pixels], [valid], 0.5, CPU)[0]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_finds_green_blobs_and_not_roofs_or_water(
    built: tuple[torch.jit.ScriptModule, ModelSpec],
) -> None:
    pixels = image()
    crown = disk((120, 160), 35, 40, 18)
    lawn = np.zeros((120, 160), bool)
    lawn[70:110, 80:150] = True
    roof = np.zeros_like(lawn)
    roof[10:50, 90:150] = True
    water = np.zeros_like(lawn)
    water[80:115, 5:60] = True
    for where, colour in ((crown, TREE), (lawn, LAWN), (roof, ROOF), (water, WATER)):
        paint(pixels, where, colour)
    got = segment(built, pixels)
    assert got.count == 2
    np.testing.assert_array_equal(got.class_ids, [1, 1])
    assert all(0.5 < s < 1 for s in got.scores)
    found = [got.labels == k for k in (1, 2)]
    best = {
        name: max(iou(mask, f) for f in found) for name, mask in (("crown", crown), ("lawn", lawn))
    }
    assert min(best.values()) > 0.85, best  # smoothing shaves a pixel or two off dark edges
    assert not got.labels[roof | water].any()
    # The lawn is greener than the shaded crown, so it scores higher and comes first.
    assert iou(found[0], lawn) > 0.9


def test_finds_nothing_in_grey_or_tiny_specks(
    built: tuple[torch.jit.ScriptModule, ModelSpec],
) -> None:
    pixels = image()
    assert segment(built, pixels).count == 0
    paint(pixels, disk((120, 160), 60, 80, 3), LAWN)  # about 29 px: below the 64 px minimum
    assert segment(built, pixels).count == 0


def test_touching_blobs_are_one_instance_and_separate_ones_are_not(
    built: tuple[torch.jit.ScriptModule, ModelSpec],
) -> None:
    pixels = image()
    paint(pixels, disk((120, 160), 40, 40, 15) | disk((120, 160), 40, 68, 15), LAWN)
    paint(pixels, disk((120, 160), 95, 130, 15), LAWN)
    assert segment(built, pixels).count == 2


def test_nodata_is_background(built: tuple[torch.jit.ScriptModule, ModelSpec]) -> None:
    pixels = image()
    paint(pixels, np.ones((120, 160), bool), LAWN)
    valid = np.ones((120, 160), bool)
    valid[:, :80] = False
    (got,) = predict_tiles(*built, [pixels], [valid], 0.5, CPU)
    assert got.count == 1
    assert not got.labels[:, :80].any()
    assert got.labels[:, 82:].all()


def reference_components(mask: np.ndarray) -> np.ndarray:
    """8-connected components by breadth-first flood fill, numbered in scan order."""
    out = np.zeros(mask.shape, np.int64)
    count = 0
    for start in zip(*np.nonzero(mask), strict=True):
        if out[start]:
            continue
        count += 1
        out[start] = count
        queue = deque([start])
        while queue:
            r, c = queue.popleft()
            for rr in range(max(r - 1, 0), min(r + 2, mask.shape[0])):
                for cc in range(max(c - 1, 0), min(c + 2, mask.shape[1])):
                    if mask[rr, cc] and not out[rr, cc]:
                        out[rr, cc] = count
                        queue.append((rr, cc))
    return out


def spiral(size: int) -> np.ndarray:
    """A one-pixel-wide spiral path: the longest component a square can hold, roughly."""
    mask = np.zeros((size, size), bool)
    top, left, bottom, right = 0, 0, size - 1, size - 1
    while top <= bottom and left <= right:
        mask[top, left : right + 1] = True
        mask[top : bottom + 1, right] = True
        if top + 2 <= bottom:
            mask[bottom, left : right + 1] = True
        if left + 2 <= right and top + 2 <= bottom:
            mask[top + 2 : bottom + 1, left] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
        if top <= bottom:
            mask[top - 1, left] = True  # the link into the next ring
    return mask


@pytest.mark.parametrize("case", ["random", "dense", "spiral", "empty", "full"])
def test_label_components_matches_flood_fill(case: str) -> None:
    rng = np.random.default_rng(11)
    mask = {
        "random": rng.random((60, 70)) < 0.45,
        "dense": rng.random((60, 70)) < 0.6,
        "spiral": spiral(64),
        "empty": np.zeros((5, 7), bool),
        "full": np.ones((5, 7), bool),
    }[case]
    labels = label_components(torch.from_numpy(mask), 64).numpy()
    reference = reference_components(mask)
    assert ((labels > 0) == mask).all()
    pairs = set(zip(reference[mask].tolist(), labels[mask].tolist(), strict=True))
    count = int(reference.max())
    assert len(pairs) == count == len({b for _, b in pairs}), "a component was split or merged"


def test_shipped_model_matches_build(
    built: tuple[torch.jit.ScriptModule, ModelSpec],
) -> None:
    shipped = read_model_spec(shipped_model_path(GREENERY_MODEL))
    fresh = built[1]
    fields = ("name", "classes", "bands", "scale", "mean", "std", "tile_size", "overlap")
    assert {f: getattr(shipped, f) for f in fields} == {f: getattr(fresh, f) for f in fields}
    assert (shipped.classes, shipped.bands, shipped.tile_size, shipped.overlap) == (
        {1: "vegetation"},
        (1, 2, 3),
        512,
        64,
    )
    pixels = image()
    paint(pixels, disk((120, 160), 60, 80, 30), TREE)
    paint(pixels, disk((120, 160), 20, 20, 12), LAWN)
    ours, theirs = (
        segment(built, pixels),
        segment(load_model(shipped_model_path(GREENERY_MODEL), CPU), pixels),
    )
    assert ours.count == 2
    np.testing.assert_array_equal(ours.labels, theirs.labels)
    np.testing.assert_array_equal(ours.scores, theirs.scores)


def test_module_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = tmp_path / "g.pt"
    assert main([str(out)]) == 0
    assert read_model_spec(out).name == "greenery"
    assert str(out) in capsys.readouterr().out


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
        elements=st.floats(-1e6, 1e6, width=32),
    )
)
def test_neighbourhood_max_is_a_3x3_max_pool(values: np.ndarray) -> None:
    tensor = torch.from_numpy(values)
    pooled = F.max_pool2d(tensor[None, None], 3, 1, 1)[0, 0]
    assert torch.equal(neighbourhood_max(tensor), pooled)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.int64,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=10),
        elements=st.integers(0, 4),
    )
)
def test_ranked_detections_order_by_score_and_box_each_instance(labels: np.ndarray) -> None:
    scores = torch.tensor([0.2, 0.9, 0.5, 0.7])
    classes = torch.tensor([1, 2, 3, 4])
    out = ranked_detections(torch.from_numpy(labels), classes, scores)
    assert out["scores"].tolist() == sorted(scores.tolist(), reverse=True)
    assert out["labels"].tolist() == [2, 4, 3, 1]
    for rank, instance in enumerate([2, 4, 3, 1], start=1):
        mask = labels == instance
        assert np.array_equal(out["label_map"].numpy() == rank, mask)
        if mask.any():
            rows, cols = np.nonzero(mask)
            box = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            assert out["boxes"][rank - 1].tolist() == box
