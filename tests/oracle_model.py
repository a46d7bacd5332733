"""A deterministic stand-in model whose answers the tests know in advance.

The oracle reads instance ids from the last channel of its input: every distinct value ``v > 0``
is one instance with mask ``channel == v``, class id ``v // 1000`` and score
``1 - (v % 1000) / 2000`` (so ``1.0 >= score > 0.5``). Other channels are ignored. Masks are exact
0/1 probabilities, so a test can draw the instances it expects back.
"""

from __future__ import annotations

from pathlib import Path

import torch

from geoseg.models.contract import package_model

DEFAULT_CLASSES = {1: "lawn", 2: "bridge", 3: "building"}


class OracleModel(torch.nn.Module):
    """TorchScript-able module returning the instances drawn in the input's last channel.

    Its ``tta`` switch (test-time augmentation) changes nothing: the answers are exact anyway.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tta = False

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [self._detect(image) for image in images]

    def _detect(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = image.shape[1], image.shape[2]
        values, inverse = torch.unique(image[-1], return_inverse=True)
        # Instance n is value values[n + offset]; background (v <= 0) goes to a spare last row.
        offset = int((values <= 0).sum())
        count = values.shape[0] - offset
        slot = (inverse.flatten() - offset).clamp(min=-1)
        slot = torch.where(slot < 0, count, slot)
        masks = torch.zeros((count + 1, height * width), dtype=torch.float32)
        masks.scatter_(0, slot.unsqueeze(0), 1.0)
        rows = torch.arange(height).repeat_interleave(width)
        cols = torch.arange(width).repeat(height)
        boxes = torch.stack(
            [
                _extreme(cols, slot, count, width, "amin"),
                _extreme(rows, slot, count, height, "amin"),
                _extreme(cols, slot, count, 0, "amax") + 1,
                _extreme(rows, slot, count, 0, "amax") + 1,
            ],
            dim=1,
        )
        found = values[offset:]
        return {
            "boxes": boxes.to(torch.float32),
            "labels": torch.div(found, 1000, rounding_mode="floor").to(torch.int64),
            "scores": 1.0 - torch.remainder(found, 1000) / 2000.0,
            "masks": masks[:count].view(count, 1, height, width),
        }


def _extreme(
    coords: torch.Tensor, slot: torch.Tensor, count: int, start: int, reduce: str
) -> torch.Tensor:
    """Per-instance minimum or maximum of a pixel coordinate."""
    initial = torch.full((count + 1,), start, dtype=torch.int64)
    return initial.scatter_reduce(0, slot, coords, reduce=reduce, include_self=False)[:count]


def write_oracle_model(
    path: Path,
    classes: dict[int, str] | None = None,
    bands: tuple[int, ...] = (1, 2),
    gsd_m: float | None = None,
    tta: bool = False,
) -> Path:
    """Package the oracle as a geoseg model file at ``path`` (scale 1.0) and return the path."""
    package_model(
        OracleModel(),
        path,
        classes=DEFAULT_CLASSES if classes is None else classes,
        bands=bands,
        scale=1.0,
        name="oracle",
        gsd_m=gsd_m,
        tta=tta,
    )
    return path
