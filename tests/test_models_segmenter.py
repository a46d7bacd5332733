"""The packaged network follows the model contract through the real inference step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.models.contract import load_model
from geoseg.models.segmenter import InstanceSegmenter, package_segmenter
from geoseg.models.unet import UNet
from geoseg.tasks.inference import predict_tiles

CLASSES = {1: "lawn", 2: "bridge", 3: "building"}


class _Oracle(UNet):
    """A U-Net whose logits say: one building where the first band is bright."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        body = (x[:, :1] > 0.5).to(x.dtype) * 20.0 - 10.0
        nothing = torch.full_like(body, -10.0)
        return torch.cat([nothing] * 6 + [body, nothing, nothing], dim=1)


def test_contract_output_through_predict_tiles(tmp_path: Path) -> None:
    spec = package_segmenter(
        _Oracle(3, 3, (8, 16)),
        tmp_path / "m.pt",
        classes=CLASSES,
        mean=(0, 0, 0),
        std=(1, 1, 1),
        scale=1.0,
        precision="fp32",
    )
    model, loaded = load_model(spec.path, torch.device("cpu"))
    tile = np.zeros((3, 40, 50), np.float32)
    tile[0, 10:20, 5:30] = 1.0
    tile[0, 30:38, 40:48] = 1.0
    other = np.zeros((3, 33, 21), np.float32)  # a different size in the same batch
    valid = [np.ones((40, 50), bool), np.ones((33, 21), bool)]
    first, second = predict_tiles(model, loaded, [tile, other], valid, 0.5, torch.device("cpu"))
    assert first.count == 2
    assert second.count == 0
    assert first.class_ids.tolist() == [3, 3]
    assert set(np.unique(first.labels[10:20, 5:30])) == {1} or set(
        np.unique(first.labels[10:20, 5:30])
    ) == {2}
    assert int((first.labels > 0).sum()) == 10 * 25 + 8 * 8
    raw = model([torch.from_numpy(tile)])[0]
    assert "masks" not in raw
    assert raw["label_map"].shape == (40, 50)
    assert sorted(torch.unique(raw["label_map"]).tolist()) == [0, 1, 2]
    assert raw["boxes"].tolist()[0] in (
        [5.0, 10.0, 30.0, 20.0],
        [40.0, 30.0, 48.0, 38.0],
    )


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_tta_and_precision_agree_with_plain(precision: str) -> None:
    torch.manual_seed(0)
    net = UNet(3, 3, (8, 16)).eval()
    image = torch.randn(3, 24, 24)
    plain = InstanceSegmenter(net, precision="fp32", channels_last=False)
    other = torch.jit.script(InstanceSegmenter(net, precision=precision, tta=True))
    with torch.inference_mode():
        p_plain = plain.probabilities(image[None])
        p_other = other.probabilities(image[None])
    assert p_other.dtype == torch.float32
    assert p_other.shape == (1, 9, 24, 24)
    # Averaging 8 views of an untrained net changes values, but they stay probabilities near it.
    assert float((p_plain - p_other).abs().mean()) < 0.1


def test_rejects_classes_not_numbered_from_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="numbered"):
        package_segmenter(
            UNet(3, 2, (8, 16)),
            tmp_path / "m.pt",
            classes={2: "a", 3: "b"},
            mean=(0, 0, 0),
            std=(1, 1, 1),
        )
