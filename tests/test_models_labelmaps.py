"""Label maps in torch: connected components, the 3x3 neighbourhood maximum, contract output."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's own convention)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from geoseg.models.labelmaps import label_components, neighbourhood_max, ranked_detections


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
