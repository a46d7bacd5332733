"""Tests for geoseg.models.precision: bfloat16 only where the device computes it natively."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from geoseg.errors import OptionsError
from geoseg.models import contract
from geoseg.models.contract import load_model
from geoseg.models.precision import native_bf16, training_precision
from geoseg.models.segmenter import package_segmenter
from geoseg.models.synthetic import CLASSES
from geoseg.models.training import MEAN, STD, TrainingConfig
from geoseg.models.unet import UNet

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_training_precision_follows_the_hardware(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("geoseg.models.precision.native_bf16", lambda device: native)

    assert training_precision("auto", CPU) == ("bf16" if native else "fp32")
    assert training_precision("bf16", CPU) == "bf16"
    assert training_precision("fp32", CPU) == "fp32"


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(OptionsError, match="precision must be one of auto, bf16, fp32"):
        training_precision("fp16", CPU)
    with pytest.raises(OptionsError, match="got 'fp8'"):
        TrainingConfig(classes=dict(enumerate(CLASSES.values(), start=1)), precision="fp8")


def test_devices_without_bfloat16_units_do_not_claim_them() -> None:
    assert native_bf16(torch.device("meta")) is False
    assert isinstance(native_bf16(CPU), bool)


@pytest.mark.parametrize("native", [True, False])
def test_a_segmenter_runs_in_float32_on_cpus_that_emulate_bfloat16(
    native: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("geoseg.models.precision.native_bf16", lambda device: native)
    contract._load_cached.cache_clear()
    torch.manual_seed(0)
    net = UNet(3, len(CLASSES), widths=(4, 8))
    package_segmenter(net, tmp_path / "auto.pt", classes=CLASSES, mean=MEAN, std=STD)
    package_segmenter(
        net, tmp_path / "bf16.pt", classes=CLASSES, mean=MEAN, std=STD, precision="bf16"
    )

    automatic, _ = load_model(tmp_path / "auto.pt", CPU)
    forced, _ = load_model(tmp_path / "bf16.pt", CPU)

    assert automatic.precision == ("auto" if native else "fp32")
    assert forced.precision == "bf16"  # a model that asks for bfloat16 gets it
    contract._load_cached.cache_clear()
