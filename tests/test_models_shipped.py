"""The model files shipped in the package: the default network and the greenery rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from geoseg.errors import ModelError
from geoseg.models.contract import load_model, read_model_spec
from geoseg.models.recipe import EVAL_RASTER, LABELS, evaluate_raster
from geoseg.models.segmenter import package_segmenter
from geoseg.models.shipped import (
    DEFAULT_MODEL,
    default_model_path,
    default_weights_path,
    shipped_model_path,
)
from geoseg.models.synthetic import CLASSES
from geoseg.models.training import MEAN, STD, load_checkpoint, network_from_checkpoint
from tests.conftest import SHARED_DATA

MAX_BYTES = 25 * 2**20
MAX_PARAMETERS = 10_000_000
BUILDING_F1 = 0.670
"""Building F1 at IoU 0.5 of the shipped model on Kampala z21, as the README reports it (bf16;
0.657 in fp32, as on a CPU without native bf16)."""
BRIDGE_FALSE_POSITIVES = 0
"""Bridges the shipped model sees in Kampala z21, which has none."""


def test_the_default_model_is_the_trained_network_of_lawns_bridges_and_buildings() -> None:
    path = default_model_path()
    assert path.name == DEFAULT_MODEL
    spec = read_model_spec(path)
    assert spec.name == "geoseg-default"
    assert spec.classes == {1: "lawn", 2: "bridge", 3: "building"}
    assert (spec.bands, spec.gsd_m, spec.tta) == ((1, 2, 3), 0.15, True)
    assert path.stat().st_size <= MAX_BYTES
    model, _ = load_model(path, torch.device("cpu"))
    assert sum(p.numel() for p in model.parameters()) <= MAX_PARAMETERS


@pytest.mark.e2e
def test_the_default_model_finds_the_buildings_of_the_held_out_kampala_tile() -> None:
    data = SHARED_DATA / "kampala"
    report = evaluate_raster(default_model_path(), data / EVAL_RASTER, data / LABELS, threads=2)
    scores = report["classes"]
    # the figures the README reports, less a margin for arithmetic differences between CPUs
    assert scores["building"]["f1"] >= BUILDING_F1 - 0.02
    assert scores["bridge"]["false_positives"] <= BRIDGE_FALSE_POSITIVES + 2


def test_a_missing_shipped_model_names_the_file_and_how_to_regenerate_it() -> None:
    with pytest.raises(ModelError, match=r"built-in model .*nothing\.pt is missing .*reinstall"):
        shipped_model_path("nothing.pt")


def test_the_shipped_weights_are_the_default_model_for_fine_tuning(tmp_path: Path) -> None:
    net = network_from_checkpoint(load_checkpoint(default_weights_path())).eval()
    package_segmenter(net, tmp_path / "again.pt", classes=CLASSES, mean=MEAN, std=STD)
    again, _ = load_model(tmp_path / "again.pt", torch.device("cpu"))
    shipped, _ = load_model(default_model_path(), torch.device("cpu"))
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(again.probabilities(image), shipped.probabilities(image))
