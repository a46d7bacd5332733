"""Synthetic scenes: reproducible, and labels that agree with the pixels."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.models.synthetic import BRIDGE, BUILDING, LAWN, generate_scene, synthetic_images


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
