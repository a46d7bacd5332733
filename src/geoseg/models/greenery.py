"""A shipped colour rule: vegetation instances from RGB, no training (``greenery.pt``).

`GreeneryModel` is an honest heuristic, not a network: it marks pixels whose smoothed colour is
dominated by green, splits them into 8-connected components and reports each component of at
least ``min_pixels`` as one "vegetation" instance. It was tuned on the bundled 0.5 m Swiss aerial
image (lawns and tree crowns found, roofs, roads and deep water not) and fits the model contract
of `geoseg.models.contract`, so the whole pipeline runs without a trained network.

Known limits: touching lawns and crowns merge into one instance, dry (yellow) grass is partly
missed and clear shallow water over a sandy bed can look as green as a lawn.

Regenerate the shipped file with ``python -m geoseg.models.greenery OUT.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's own convention)

from geoseg.models.contract import ModelSpec, package_model
from geoseg.models.labelmaps import label_components, ranked_detections

CLASSES = {1: "vegetation"}
BANDS = (1, 2, 3)
SCALE = 1.0 / 255.0
TILE_SIZE = 512
OVERLAP = 64


class GreeneryModel(torch.nn.Module):
    """Segment vegetation instances in RGB images scaled to 0..1.

    Parameters
    ----------
    threshold : float
        Minimum green excess, in chromaticity units: green's share of R+G+B minus the larger of
        red's and blue's shares. Lawns and crowns score about 0.04-0.12, roofs and roads below
        0.01.
    max_blue_excess : float
        Maximum of blue's share minus red's share. Water is blue-green while leaves reflect more
        red than blue, so this keeps lakes out; shaded crowns sit just below 0.03.
    min_brightness : float
        Minimum R+G+B (0..3): colour ratios of near-black pixels are noise, and no-data pixels
        (filled with 0) must stay background.
    smoothing_px : int
        Edge of the box filter applied to the image first (odd), which averages away JPEG colour
        blocks and leaf-level texture.
    min_pixels : int
        Components smaller than this are dropped (64 px is 16 m² at 0.5 m).
    max_iterations : int
        Cap on connected-component steps (see `label_components`); a component not settled by
        then comes back split into several instances, never merged with another.
    """

    def __init__(
        self,
        threshold: float = 0.03,
        max_blue_excess: float = 0.03,
        min_brightness: float = 0.1,
        smoothing_px: int = 5,
        min_pixels: int = 64,
        max_iterations: int = 64,
    ) -> None:
        super().__init__()
        self.threshold = threshold
        self.max_blue_excess = max_blue_excess
        self.min_brightness = min_brightness
        self.smoothing_px = smoothing_px
        self.min_pixels = min_pixels
        self.max_iterations = max_iterations

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Detections per image, torchvision style (see `geoseg.models.contract`)."""
        return [self.segment(image) for image in images]

    def segment(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Vegetation instances of one ``[3, H, W]`` image, highest score first."""
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError("greenery expects RGB images shaped [3, H, W]")
        height, width = image.shape[1], image.shape[2]
        index, foreground = self.vegetation(image)
        components = label_components(foreground, self.max_iterations)
        sizes = torch.bincount(components.flatten(), minlength=height * width + 1)
        sizes[0] = 0
        kept = torch.nonzero(sizes >= self.min_pixels).flatten()
        count = kept.shape[0]
        lookup = torch.zeros(height * width + 1, dtype=torch.int64, device=image.device)
        lookup[kept] = torch.arange(1, count + 1, device=image.device)
        instances = lookup[components]
        totals = torch.bincount(
            instances.flatten(), weights=index.flatten().double(), minlength=count + 1
        )
        mean_index = (totals[1:] / sizes[kept].double()).float()
        # Greener components are likelier vegetation: the score passes 0.5 at the threshold and
        # approaches 1 about 0.06 above it.
        scores = torch.sigmoid((mean_index - self.threshold) / 0.02)
        classes = torch.ones(count, dtype=torch.int64, device=image.device)
        return ranked_detections(instances, classes, scores)

    def vegetation(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Green excess ``[H, W]`` and the vegetation foreground ``[H, W]`` (bool)."""
        pad = self.smoothing_px // 2
        smooth = F.avg_pool2d(
            image.unsqueeze(0), self.smoothing_px, 1, pad, count_include_pad=False
        ).squeeze(0)
        brightness = smooth.sum(dim=0)
        share = smooth / brightness.clamp(min=1e-6)
        red, green, blue = share[0], share[1], share[2]
        index = green - torch.maximum(red, blue)
        foreground = (
            (index > self.threshold)
            & (blue - red < self.max_blue_excess)
            & (brightness > self.min_brightness)
        )
        return index, foreground


def build(path: str | Path) -> ModelSpec:
    """Write the greenery model file to ``path`` and return its spec."""
    return package_model(
        GreeneryModel(),
        path,
        classes=CLASSES,
        bands=BANDS,
        scale=SCALE,
        tile_size=TILE_SIZE,
        overlap=OVERLAP,
        name="greenery",
    )


def main(argv: list[str]) -> int:
    """Entry point of ``python -m geoseg.models.greenery OUT.pt``."""
    if len(argv) != 1:
        print("usage: python -m geoseg.models.greenery OUT.pt", file=sys.stderr)
        return 2
    spec = build(argv[0])
    print(f"wrote {spec.path} (sha256 {spec.sha256})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
