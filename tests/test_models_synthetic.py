"""Synthetic scenes: reproducible, labels that agree with the pixels, objects laid out apart."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from geoseg.models.synthetic import (
    BRIDGE,
    BUILDING,
    LAWN,
    _Canvas,
    generate_scene,
    synthetic_images,
)


def test_same_seed_same_scene_other_seed_other_scene() -> None:
    a, b = generate_scene(5, 96, 0.3), generate_scene(5, 96, 0.3)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.instances, b.instances)
    np.testing.assert_array_equal(a.classes, b.classes)
    assert not np.array_equal(generate_scene(6, 96, 0.3).image, a.image)


def test_labels_are_consistent() -> None:
    scene = generate_scene(11, 160, 0.4)
    assert scene.image.shape == (3, 160, 160)
    assert scene.image.dtype == np.uint8
    n = len(scene.classes)
    assert n > 0
    assert set(np.unique(scene.instances)) == set(range(n + 1))
    assert set(scene.classes.tolist()) <= {LAWN, BRIDGE, BUILDING}
    assert scene.masks.shape == (n, 160, 160)
    assert (scene.masks.sum(axis=(1, 2)) >= 12).all()


def test_lawns_are_green_and_differ_from_their_surroundings() -> None:
    greens = []
    for seed in range(6):
        scene = generate_scene(seed, 128, 0.25)
        pixels = scene.image.astype(np.float64)
        for index, class_id in enumerate(scene.classes, start=1):
            if class_id == LAWN:
                r, g, b = (pixels[c][scene.instances == index].mean() for c in range(3))
                greens.append(g - max(r, b))
    assert greens
    assert np.median(greens) > 10


def test_objects_scale_with_ground_resolution() -> None:
    def median_size(gsd: float) -> float:
        sizes = [np.bincount(generate_scene(s, 128, gsd).instances.ravel())[1:] for s in range(4)]
        return float(np.median(np.concatenate(sizes)))

    # 16x the area in pixels, less what the scene edge cuts off the larger objects.
    assert median_size(0.15) > 2.5 * median_size(0.6)


def test_rejects_tiny_scenes() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        generate_scene(0, 8)


def test_scenes_painted_in_several_processes_are_the_same_scenes() -> None:
    one = synthetic_images(3, size=64, seed=11)
    two = synthetic_images(3, size=64, seed=11, workers=2)

    assert [image.name for image in two] == [image.name for image in one]
    for a, b in zip(one, two, strict=True):
        assert np.array_equal(a.image, b.image)
        assert np.array_equal(a.instances, b.instances)
        assert a.gsd_m == b.gsd_m


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    gap=st.floats(0.0, 20.0),
    sizes=st.lists(st.floats(2.0, 40.0), min_size=1, max_size=8),
)
def test_a_placed_shape_keeps_its_gap_from_what_it_avoids(
    seed: int, gap: float, sizes: list[float]
) -> None:
    canvas = _Canvas(np.random.default_rng(seed), 128, 0.5)
    canvas.take("road", box(0, 60, 128, 70))
    canvas.take("lawn", box(10, 10, 40, 40))  # not avoided below: may be overlapped
    for size in sizes:
        shape = box(-size / 2, -size / 2, size / 2, size / 2)
        at = canvas.place(shape, ("road", "building"), gap, margin=0.0)
        if at is None:
            continue
        placed = shapely.affinity.translate(shape, *at)
        for held in canvas.taken["road"] + canvas.taken.get("building", []):
            assert placed.distance(held) >= gap
        canvas.take("building", placed)


def test_a_shape_with_no_room_is_left_out() -> None:
    canvas = _Canvas(np.random.default_rng(0), 64, 0.5)
    canvas.take("water", box(-40, -40, 104, 104))

    assert canvas.place(box(-2, -2, 2, 2), ("water",), 0.0, margin=4.0) is None
    assert canvas.place(box(-2, -2, 2, 2), ("road",), 0.0, margin=4.0) is not None
