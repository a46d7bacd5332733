"""Tests for geoseg.models.decoding: the decoding chosen on validation images."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.models.contract import load_model
from geoseg.models.datasets import LabelledImage
from geoseg.models.decoding import (
    MAX_UPSAMPLING,
    SEED_EROSIONS_PX,
    SEED_THRESHOLDS,
    ReplayedNetwork,
    chosen_f1,
    package_tuned,
    tune_decoding,
)
from geoseg.models.evaluation import predict_image
from geoseg.models.segmenter import package_segmenter
from geoseg.models.shipped import default_model_path
from geoseg.models.synthetic import CLASSES, generate_scene, synthetic_images
from geoseg.models.training import MEAN, STD
from geoseg.models.unet import UNet

CPU = torch.device("cpu")


def tiny_network() -> UNet:
    torch.manual_seed(0)
    return UNet(3, len(CLASSES), widths=(4, 8))


def without_objects(image: LabelledImage) -> LabelledImage:
    return replace(image, instances=np.zeros_like(image.instances), classes=image.classes[:0])


def test_the_decoding_is_tuned_over_every_candidate_and_group(tmp_path: Path) -> None:
    scenes = synthetic_images(3, size=96, seed=7)
    model = tmp_path / "tiny.pt"
    package_segmenter(tiny_network(), model, classes=CLASSES, mean=MEAN, std=STD)
    rows: list[dict[str, float]] = []

    chosen, scores = tune_decoding(
        model, {"a": scenes[:2], "b": [scenes[2], without_objects(scenes[0])]}, 1, CPU, rows.append
    )

    pairs = {(row["seed_threshold"], row["seed_erosion_px"]) for row in scores}
    assert pairs == {(t, e) for t in SEED_THRESHOLDS for e in SEED_EROSIONS_PX}
    labelled = sorted({CLASSES[int(k)] for scene in scenes for k in scene.classes})
    assert set(chosen) == set(CLASSES.values())
    for name, pair in chosen.items():  # each class its own best pair; others the best overall
        key = f"f1 {name}" if name in labelled else "mean"
        best = max(scores, key=lambda row: row[key])
        assert pair == {k: best[k] for k in ("seed_threshold", "seed_erosion_px")}
    for row in scores:
        classes = [row[f"f1 {name}"] for name in labelled]
        assert all(0.0 <= row[key] <= 1.0 for key in ("a", "b", "mean"))
        assert row["mean"] == pytest.approx(np.mean(classes), abs=1e-3)
    assert chosen_f1(scores) == pytest.approx(
        np.mean([max(row[f"f1 {name}"] for row in scores) for name in labelled])
    )
    assert rows == scores
    loaded, _ = load_model(model, CPU)  # the same object tuning used: left as packaged
    assert (loaded.seed_thresholds, loaded.seed_erosions_px) == ([0.6], [0])


def test_the_packaged_model_decodes_with_the_chosen_pair(tmp_path: Path) -> None:
    scenes = synthetic_images(2, size=96, seed=11)
    out = tmp_path / "tuned.pt"

    spec, chosen, scores = package_tuned(
        tiny_network(), out, {"synthetic": scenes}, 1, CPU, classes=CLASSES, mean=MEAN, std=STD
    )

    model, loaded = load_model(out, CPU)
    names = [CLASSES[k] for k in sorted(CLASSES)]
    assert model.seed_thresholds == [chosen[name]["seed_threshold"] for name in names]
    assert model.seed_erosions_px == [chosen[name]["seed_erosion_px"] for name in names]
    assert len(scores) == len(SEED_THRESHOLDS) * len(SEED_EROSIONS_PX)
    assert loaded.sha256 == spec.sha256


def test_without_labelled_objects_the_default_decoding_is_kept(tmp_path: Path) -> None:
    (scene,) = synthetic_images(1, size=96, seed=11)
    out = tmp_path / "untuned.pt"

    _, chosen, scores = package_tuned(
        tiny_network(),
        out,
        {"empty": [without_objects(scene)], "none": []},
        1,
        CPU,
        classes=CLASSES,
        mean=MEAN,
        std=STD,
    )

    model, _ = load_model(out, CPU)
    assert (chosen, scores) == ({}, [])
    assert (model.seed_thresholds, model.seed_erosions_px) == ([0.6], [0])


def test_a_replayed_network_decodes_what_it_kept_as_the_model_would(tmp_path: Path) -> None:
    # A copy: the decoding is changed on the loaded model, which load_model caches per file.
    model, spec = load_model(shutil.copy(default_model_path(), tmp_path / "shipped.pt"), CPU)
    scenes = synthetic_images(2, size=160, seed=5)
    replayed, nothing_kept = ReplayedNetwork(model, 2**30), ReplayedNetwork(model, 0)
    decoded = []

    for threshold, erosion in ((0.6, 0), (0.9, 4)):
        model.seed_thresholds, model.seed_erosions_px = [threshold], [erosion]
        for scene in scenes:
            expected = predict_image(model, spec, scene.image, scene.valid, 96, 16, CPU)
            for network in (replayed, nothing_kept):
                found = predict_image(network, spec, scene.image, scene.valid, 96, 16, CPU)
                assert np.array_equal(found.labels, expected.labels)
                assert np.array_equal(found.classes, expected.classes)
            decoded.append(expected.labels)

    assert any(not np.array_equal(a, b) for a, b in zip(decoded[:2], decoded[2:], strict=True))
    assert len(replayed.kept) == 2 * 4  # 4 tiles of 96 px per scene
    assert not nothing_kept.kept


def _scene_at(seed: int, gsd_m: float) -> LabelledImage:
    scene = generate_scene(seed, 96, gsd_m)
    return LabelledImage(
        scene.image, scene.instances, scene.classes, np.ones((96, 96), bool), "s", gsd_m
    )


def test_the_decoding_is_chosen_on_images_fine_enough_for_the_models_resolution(
    tmp_path: Path,
) -> None:
    model = tmp_path / "at_0.3m.pt"
    package_segmenter(tiny_network(), model, classes=CLASSES, mean=MEAN, std=STD, gsd_m=0.3)
    fine, coarse = _scene_at(3, 0.2), _scene_at(4, 0.3 * MAX_UPSAMPLING * 1.1)
    assert len(fine.classes)
    assert len(coarse.classes)

    _, scores = tune_decoding(model, {"fine": [fine], "coarse": [coarse]}, 1, CPU)
    assert scores
    assert all("fine" in row and "coarse" not in row for row in scores)

    out = tmp_path / "untuned.pt"
    _, chosen, scores = package_tuned(
        tiny_network(),
        out,
        {"coarse": [coarse]},
        1,
        CPU,
        classes=CLASSES,
        mean=MEAN,
        std=STD,
        gsd_m=0.3,
    )
    assert (chosen, scores) == ({}, [])
    assert load_model(out, CPU)[0].seed_erosions_px == [0]
