"""Synthetic scenes: reproducible, labels that agree with the pixels, objects laid out apart."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import LineString, box

from geoseg.models.synthetic import (
    BRIDGE,
    BUILDING,
    LAWN,
    _Canvas,
    _deck,
    _paint_cars,
    _paint_party_walls,
    _paint_trees,
    _rectangle,
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


def test_a_terrace_shows_a_wall_between_its_units() -> None:
    canvas = _Canvas(np.random.default_rng(0), 64, 0.15)
    units = [_rectangle(22, 32, 20, 16, 0), _rectangle(42, 32, 20, 16, 0)]
    roof = canvas.mask(shapely.union_all(units))
    canvas.paint(roof, (0.5, 0.5, 0.5))

    _paint_party_walls(canvas, units)

    brightness = canvas.image.mean(axis=2)
    assert abs(brightness[25:40, 31:33].mean() - 0.5) >= 0.1  # the seam at x = 32
    assert np.allclose(brightness[25:40, 14:28], 0.5)  # the units' own roofs
    assert np.allclose(brightness[~roof], 0.0)  # nothing outside them


def test_neighbouring_lawns_differ_in_tone() -> None:
    ratios = []
    for seed in range(30):
        scene = generate_scene(seed, size=192)
        lawns = set((np.flatnonzero(scene.classes == LAWN) + 1).tolist())
        labels = scene.instances
        pairs = {
            tuple(sorted((int(a), int(b))))
            for first, second in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:]))
            for a, b in zip(first.ravel(), second.ravel(), strict=True)
            if a != b and a in lawns and b in lawns
        }
        brightness = scene.image.astype(np.float64).sum(axis=0)
        for a, b in pairs:
            tones = sorted(np.median(brightness[labels == index]) for index in (a, b))
            ratios.append(tones[1] / tones[0])
    assert len(ratios) >= 10
    assert np.mean(np.array(ratios) >= 1.06) >= 0.9  # tones alike before: half of them


def test_bridges_across_one_river_stay_apart() -> None:
    canvas = _Canvas(np.random.default_rng(1), 128, 0.5)
    river = LineString([(0, 64), (128, 64)])
    built = []
    for _ in range(6):
        placed = _deck(canvas, river, 40.0, 12.0)
        if placed is not None:
            built.append(placed[0])
            canvas.take("bridge", placed[0])
    assert len(built) >= 2
    for index, deck in enumerate(built):
        assert all(deck.distance(other) >= canvas.px(2) for other in built[index + 1 :])


def test_trees_keep_off_water_and_cars_off_bridge_decks() -> None:
    canvas = _Canvas(np.random.default_rng(2), 64, 0.2)
    canvas.take("water", box(-20, -20, 84, 84))
    road = LineString([(0, 32), (64, 32)])
    canvas.take("bridge", box(-20, 20, 84, 44))

    _paint_trees(canvas)
    _paint_cars(canvas, [road])

    assert not canvas.image.any()
