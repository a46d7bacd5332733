"""Tests for geoseg.models.recipe: how the shipped model is scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.models.contract import load_model
from geoseg.models.recipe import (
    build_parser,
    evaluate_image,
    evaluate_synthetic,
    main,
    run,
)
from geoseg.models.segmenter import package_segmenter
from geoseg.models.synthetic import CLASSES, synthetic_images
from geoseg.models.training import (
    MEAN,
    STD,
    TrainingConfig,
    build_network,
    load_checkpoint,
    network_from_checkpoint,
    save_checkpoint,
    save_weights,
    split_validation,
)
from geoseg.models.unet import UNet


def tiny_model(folder: Path) -> Path:
    torch.manual_seed(0)
    model = folder / "tiny.pt"
    package_segmenter(
        UNet(3, len(CLASSES), widths=(4, 8)), model, classes=CLASSES, mean=MEAN, std=STD
    )
    return model


def test_synthetic_scores_cover_every_class_of_unseen_scenes(tmp_path: Path) -> None:
    model = tiny_model(tmp_path)

    report = evaluate_synthetic(model, count=2, threads=1)

    assert report["images"] == 2
    assert set(report["classes"]) == set(CLASSES.values())
    for scores in report["classes"].values():
        assert 0.0 <= scores["f1"] <= 1.0


def test_one_labelled_image_is_scored_with_every_object_counted_once(tmp_path: Path) -> None:
    (scene,) = synthetic_images(1, size=96, seed=3)

    report = evaluate_image(tiny_model(tmp_path), scene, threads=1)

    for class_id, name in CLASSES.items():
        scores = report["classes"][name]
        objects = int(np.sum(scene.classes == class_id))
        assert scores["true_positives"] + scores["false_negatives"] == objects
    assert report["inference_mp_per_s"] > 0


def test_the_recipe_needs_a_model_to_write_or_to_score() -> None:
    with pytest.raises(SystemExit):
        main(["--minutes", "1"])


def test_packaging_a_run_s_checkpoint_beside_it_keeps_its_state_to_resume(
    tmp_path: Path,
) -> None:
    config = TrainingConfig(classes=CLASSES, widths=(4, 8))
    net = build_network(config)
    run_checkpoint = tmp_path / "ft.ckpt"
    save_checkpoint(run_checkpoint, net, torch.optim.AdamW(net.parameters()), 5, config, 10)
    out, scenes = str(tmp_path / "ft.pt"), "10"
    args = build_parser().parse_args(
        ["--out", out, "--weights", str(run_checkpoint), "--synthetic-scenes", scenes]
    )

    run(args, synthetic_images(1, size=192, seed=2)[0])

    assert "optimizer" in load_checkpoint(run_checkpoint)
    assert (tmp_path / "ft.pt").exists()


def test_trained_weights_are_packaged_and_tuned_without_training(tmp_path: Path) -> None:
    config = TrainingConfig(classes=CLASSES, widths=(4, 8))
    weights = tmp_path / "trained.ckpt"
    net = build_network(config)
    save_weights(weights, net, config)
    args = build_parser().parse_args(
        ["--out", str(tmp_path / "m.pt"), "--weights", str(weights), "--synthetic-scenes", "10"]
    )

    real = synthetic_images(1, size=192, seed=2)[0]  # 0.18 m, an object in its validation rows
    assert len(split_validation([real], 0.15)[1][0].classes)

    summary = run(args, real)

    assert summary["weights"] == str(weights)
    beside = load_checkpoint(tmp_path / "m.ckpt")  # the weights, for geoseg train --init
    assert "optimizer" not in beside
    assert network_from_checkpoint(beside).state_dict().keys() == net.state_dict().keys()
    assert "pretrain" not in summary
    assert "finetune" not in summary
    model, _ = load_model(tmp_path / "m.pt", torch.device("cpu"))
    chosen = summary["decoding"]["chosen"]  # type: ignore[index]
    names = [CLASSES[k] for k in sorted(CLASSES)]
    assert model.seed_thresholds == [chosen[name]["seed_threshold"] for name in names]
    assert model.seed_erosions_px == [chosen[name]["seed_erosion_px"] for name in names]
