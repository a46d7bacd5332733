"""Evaluation figures: perfect predictions score 1, and the matching is one-to-one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import geoseg.models.evaluation
from geoseg.models.contract import load_model, package_model
from geoseg.models.evaluation import (
    InstanceSet,
    contingency,
    evaluate_instances,
    format_table,
    matched_truth,
    missed_reasons,
    predict_image,
)
from geoseg.models.greenery import GreeneryModel
from geoseg.models.synthetic import generate_scene
from geoseg.tasks.inference import predict_tiles
from tests.oracle_model import write_oracle_model

CLASSES = {1: "lawn", 2: "bridge", 3: "building"}

pytest.importorskip("pycocotools")


def _matches(truth: np.ndarray, predicted: np.ndarray) -> int:
    return len(matched_truth(contingency(truth, predicted)))


def test_predictions_equal_to_truth_score_one() -> None:
    scenes = [generate_scene(seed, 96, 0.3) for seed in (1, 2)]
    truth = [InstanceSet(s.instances, s.classes) for s in scenes]
    predictions = [
        InstanceSet(s.instances, s.classes, np.linspace(0.9, 0.6, len(s.classes), dtype=np.float32))
        for s in scenes
    ]
    report = evaluate_instances(truth, predictions, CLASSES, pixel_area_m2=0.09)
    present = {CLASSES[int(c)] for s in scenes for c in s.classes}
    for name in present:
        entry = report["classes"][name]
        assert entry["ap"] == pytest.approx(1.0)
        assert entry["ap50"] == pytest.approx(1.0)
        assert entry["f1"] == 1.0
        assert entry["area_error"] == 0.0
    assert "building" in format_table(report)


def test_misses_and_false_alarms() -> None:
    truth = np.zeros((20, 20), np.int32)
    truth[0:10, 0:10] = 1
    truth[12:20, 12:20] = 2
    predicted = np.zeros((20, 20), np.int32)
    predicted[0:10, 0:9] = 1  # IoU 0.9: a match
    predicted[12:20, 0:8] = 2  # nothing there
    report = evaluate_instances(
        [InstanceSet(truth, np.array([3, 3]))],
        [InstanceSet(predicted, np.array([3, 3]), np.array([0.9, 0.8], np.float32))],
        CLASSES,
    )
    building = report["classes"]["building"]
    assert (
        building["true_positives"],
        building["false_positives"],
        building["false_negatives"],
    ) == (1, 1, 1)
    assert building["f1"] == pytest.approx(0.5)
    assert building["area_error"] == pytest.approx((90 + 64 - 164) / 164)
    assert report["classes"]["lawn"]["f1"] is None


def test_without_average_precision_the_counts_are_the_same_and_ap_is_left_out() -> None:
    scenes = [generate_scene(seed, 96, 0.3) for seed in (3, 4)]
    truth = [InstanceSet(s.instances, s.classes) for s in scenes]
    # Every other object missed, so that the counts are not all perfect.
    predictions = [
        InstanceSet(
            np.where(s.instances % 2 == 1, s.instances, 0),
            s.classes,
            np.full(len(s.classes), 0.9, np.float32),
        )
        for s in scenes
    ]
    full = evaluate_instances(truth, predictions, CLASSES)
    quick = evaluate_instances(truth, predictions, CLASSES, average_precision=False)
    for name, entry in full["classes"].items():
        assert quick["classes"][name] == entry | {"ap": None, "ap50": None}
    assert any(entry["ap50"] is not None for entry in full["classes"].values())


def test_one_prediction_covering_two_objects_matches_at_most_one() -> None:
    truth = np.array([[1, 1, 2, 2]])
    # IoU 0.5 with each object: one of them matches, never both.
    assert _matches(truth, np.array([[1, 1, 1, 1]])) == 1
    assert _matches(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 2]])) == 1
    assert _matches(truth, np.array([[1, 1, 1, 1, 1, 1]])[:, :4] * 0) == 0


def test_predict_image_tiles_and_keeps_each_object_once(tmp_path: Path) -> None:
    spec = package_model(
        GreeneryModel(min_pixels=4),
        tmp_path / "g.pt",
        classes={1: "vegetation"},
        bands=(1, 2, 3),
        scale=1 / 255,
        tile_size=64,
        overlap=16,
    )
    model, spec = load_model(spec.path, torch.device("cpu"))
    image = np.full((3, 150, 170), 120, np.uint8)
    truth = np.zeros((150, 170), np.int32)
    for index, (r, c) in enumerate([(5, 5), (40, 40), (100, 120), (60, 90)], start=1):
        image[:, r : r + 20, c : c + 20] = np.array([60, 160, 50])[:, None, None]
        truth[r : r + 20, c : c + 20] = index
    predicted = predict_image(model, spec, image)
    assert len(predicted.classes) == 4
    assert _matches(truth.astype(np.int64), predicted.labels.astype(np.int64)) == 4


def test_an_image_finer_than_the_model_is_predicted_at_the_model_resolution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, spec = load_model(
        write_oracle_model(tmp_path / "oracle.pt", gsd_m=0.15), torch.device("cpu")
    )
    ids = np.zeros((64, 64), dtype=np.float32)
    ids[4:20, 6:30] = 1001
    ids[30:62, 10:20] = 3001  # whole 2 x 2 blocks: averaging to 0.15 m keeps every id
    image = np.stack([np.ones_like(ids), ids])
    native = predict_image(model, spec, image, tile_size=64, overlap=4)
    seen: list[tuple[int, ...]] = []

    def spy(model: object, spec: object, tiles: list[np.ndarray], *args: object) -> object:
        seen.extend(tile.shape for tile in tiles)
        return predict_tiles(model, spec, tiles, *args)

    monkeypatch.setattr(geoseg.models.evaluation, "predict_tiles", spy)
    resampled = predict_image(model, spec, image, gsd_m=0.075, tile_size=32, overlap=4)

    assert seen == [(2, 32, 32)]
    assert np.array_equal(resampled.labels, native.labels)
    assert np.array_equal(resampled.classes, native.classes)


def test_missed_objects_are_told_apart_as_merged_split_or_not_found() -> None:
    truth = np.zeros((10, 40), np.int32)
    truth[0:10, 0:8] = 1  # two touching roofs ...
    truth[0:10, 8:16] = 2
    truth[0:10, 20:30] = 3  # ... one cut in three ...
    truth[0:4, 34:38] = 4  # ... and one nobody saw
    predicted = np.zeros((10, 40), np.int32)
    predicted[0:10, 0:17] = 1  # ... predicted as one object (IoU 0.47 with each)
    predicted[0:10, 20:23] = 2
    predicted[0:10, 23:26] = 3
    predicted[0:10, 26:29] = 4
    report = evaluate_instances(
        [InstanceSet(truth, np.array([3, 3, 3, 3]))],
        [InstanceSet(predicted, np.array([3, 3, 3, 3]), np.full(4, 0.9, np.float32))],
        CLASSES,
    )
    building = report["classes"]["building"]
    assert building["false_negatives"] == 4
    assert building["missed"] == {"merged": 2, "split": 1, "not_found": 1}
    assert report["classes"]["lawn"]["missed"] == {"merged": 0, "split": 0, "not_found": 0}
    table = format_table(report)
    assert table.splitlines()[-1].split() == ["building", "2", "1", "1"]
    assert "lawn" not in table.split("missed")[1]


def test_matched_objects_are_not_counted_as_missed() -> None:
    truth = np.array([[1, 1, 1, 1, 0, 2, 2]])
    predicted = np.array([[1, 1, 1, 0, 0, 2, 0]])  # IoU 0.75 and 0.5: both match
    table = contingency(truth, predicted)
    matched = matched_truth(table)
    assert matched == {1, 2}
    assert missed_reasons(table, matched) == {"merged": 0, "split": 0, "not_found": 0}
    assert missed_reasons(table, set()) == {"merged": 2, "split": 0, "not_found": 0}
