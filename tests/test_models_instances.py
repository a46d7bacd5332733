"""Seeded watershed decoding of body, boundary and contact probabilities, and the targets."""

from __future__ import annotations

import pytest
import torch

from geoseg.models.instances import decode_instances, grow_seeds, relabel_consecutive
from geoseg.models.targets import instance_targets


def _touching_pair(contact: bool) -> torch.Tensor:
    """Two 10x12 objects of class 1 sharing an edge at column 14, in a 3-class map."""
    p = torch.zeros(9, 20, 30)
    p[0, 5:15, 3:27] = 0.95
    p[1, 5, 3:27] = p[1, 14, 3:27] = p[1, 5:15, 3] = p[1, 5:15, 26] = 0.9
    if contact:
        p[2, 5:15, 14:16] = 0.9
    return p


def test_contact_line_keeps_touching_objects_apart() -> None:
    labels, classes, scores = decode_instances(_touching_pair(contact=True))
    assert classes.tolist() == [1, 1]
    left, right = labels[10, 5].item(), labels[10, 24].item()
    assert {left, right} == {1, 2}
    # The contact pixels are shared out: together the two instances cover the whole body.
    assert int((labels > 0).sum()) == 10 * 24
    assert torch.allclose(scores, torch.tensor([0.95, 0.95]))


def test_without_contact_the_pair_is_one_object() -> None:
    _, classes, _ = decode_instances(_touching_pair(contact=False))
    assert classes.tolist() == [1]


def test_seed_erosion_cuts_the_neck_through_a_gap_in_the_boundary() -> None:
    p = _touching_pair(contact=True)
    # The predicted contact line misses two rows: the two seeds meet through that gap.
    p[2, 9:11, 14:16] = 0.0
    assert decode_instances(p)[1].tolist() == [1]
    labels, classes, _ = decode_instances(p, seed_erosions_px=[2])
    assert classes.tolist() == [1, 1]
    assert labels[10, 5].item() != labels[10, 24].item()
    # Eroded seeds grow back: together the two instances still cover the whole body.
    assert int((labels > 0).sum()) == 10 * 24


def test_classes_scores_and_small_objects() -> None:
    p = torch.zeros(9, 32, 32)
    p[6, 2:12, 2:12] = 0.8  # a building
    p[3, 20:30, 20:30] = 0.7  # a bridge
    p[0, 0:2, 30:32] = 0.9  # four pixels: below min_pixels
    labels, classes, scores = decode_instances(p, min_pixels=16)
    assert sorted(classes.tolist()) == [2, 3]
    assert int(labels[5, 5]) > 0
    assert int(labels[25, 25]) > 0
    assert int(labels[0, 31]) == 0
    by_class = dict(zip(classes.tolist(), scores.tolist(), strict=True))
    assert abs(by_class[3] - 0.8) < 1e-6
    assert abs(by_class[2] - 0.7) < 1e-6


def test_empty_probabilities_give_no_instances() -> None:
    labels, classes, scores = decode_instances(torch.zeros(3, 8, 8))
    assert classes.numel() == 0
    assert scores.numel() == 0
    assert int(labels.max()) == 0


def test_decoding_is_scriptable() -> None:
    scripted = torch.jit.script(decode_instances)
    labels, classes, _ = scripted(_touching_pair(True), 0.5, [0.6, 0.7, 0.6], 4, 16, 48, 64, [0])
    assert classes.tolist() == [1, 1]
    assert int(labels.max()) == 2


def test_seeds_grow_only_inside_the_region() -> None:
    seeds = torch.zeros(5, 5, dtype=torch.int64)
    seeds[2, 2] = 7
    region = torch.zeros(5, 5, dtype=torch.bool)
    region[1:4, 1:4] = True
    grown = grow_seeds(seeds, region, 10)
    assert int((grown == 7).sum()) == 9
    assert int(grown[0, 0]) == 0


def test_relabel_consecutive() -> None:
    labels, count = relabel_consecutive(torch.tensor([[0, 9], [9, 4]]))
    assert count == 2
    assert labels.tolist() == [[0, 2], [2, 1]]


def test_targets_mark_boundary_and_contact() -> None:
    instances = torch.zeros(1, 8, 12, dtype=torch.int64)
    instances[0, 1:7, 1:6] = 1
    instances[0, 1:7, 6:11] = 2
    targets = instance_targets(instances, torch.tensor([[0, 3, 3]]), 3, contact_px=1)
    body, boundary, contact = targets[0, 6], targets[0, 7], targets[0, 8]
    assert int(body.sum()) == 60
    assert int(targets[0, :6].sum()) == 0
    assert boundary[3, 3] == 0
    assert boundary[1, 3] == 1
    assert boundary[3, 5] == 1
    # Contact is the two columns either side of the shared edge, and only there.
    assert contact[:, 5:7].sum() == 8 * 2
    assert contact[:, :4].sum() == 0


def test_each_class_decodes_with_its_own_seed_erosion() -> None:
    pair = _touching_pair(contact=True)
    pair[2, 9:11, 14:16] = 0.0  # a gap in the contact line, as above
    p = torch.zeros(9, 20, 30)
    p[0:3] = pair[0:3]  # class 1: the pair
    p[6:9] = pair[0:3]  # class 3: the same pair, on top of it

    # Class 3 (decoded last) keeps the pixels both claim: erosion there decides the count.
    assert decode_instances(p, seed_erosions_px=[2, 0, 0])[1].tolist() == [3]
    assert decode_instances(p, seed_erosions_px=[0, 0, 2])[1].tolist() == [3, 3]
    with pytest.raises(ValueError, match="expected 1 or 3 seed thresholds and erosions, got 2"):
        decode_instances(p, seed_erosions_px=[0, 2])
