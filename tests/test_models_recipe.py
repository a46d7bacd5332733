"""Tests for geoseg.models.recipe: how the shipped model is scored."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from geoseg.models.recipe import evaluate_synthetic, main
from geoseg.models.segmenter import package_segmenter
from geoseg.models.synthetic import CLASSES
from geoseg.models.training import MEAN, STD
from geoseg.models.unet import UNet


def test_synthetic_scores_cover_every_class_of_unseen_scenes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tmp_path / "tiny.pt"
    package_segmenter(
        UNet(3, len(CLASSES), widths=(4, 8)), model, classes=CLASSES, mean=MEAN, std=STD
    )

    report = evaluate_synthetic(model, count=2, threads=1)

    assert report["images"] == 2
    assert set(report["classes"]) == set(CLASSES.values())
    for scores in report["classes"].values():
        assert 0.0 <= scores["f1"] <= 1.0


def test_the_recipe_needs_a_model_to_write_or_to_score() -> None:
    with pytest.raises(SystemExit):
        main(["--minutes", "1"])
