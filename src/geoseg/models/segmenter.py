"""The deployable model: U-Net, padding, precision, test-time augmentation and decoding in one.

`InstanceSegmenter` wraps a trained `geoseg.models.unet.UNet` so that its ``forward`` follows the
model contract (`geoseg.models.contract`): a list of float32 ``[C, H, W]`` images, already scaled
and standardised by the pipeline, in; per image a dict of ``boxes``, ``labels``, ``scores`` and
``masks`` out. Everything runs inside TorchScript, so `package_segmenter` writes one
self-contained model file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's own convention)
from torch import nn

from geoseg.models.contract import ModelSpec, package_model
from geoseg.models.instances import decode_instances
from geoseg.models.labelmaps import ranked_detections
from geoseg.models.unet import UNet, fuse_batchnorm

PRECISIONS = ("fp32", "auto", "bf16", "fp16")
"""``auto``: bfloat16 on CPU, float16 on CUDA; ``bf16``/``fp16`` force one; ``fp32`` neither.
`geoseg.models.contract.load_model` turns ``auto`` into ``fp32`` on CPUs that only emulate
bfloat16 (see `geoseg.models.precision`)."""


class InstanceSegmenter(nn.Module):
    """Contract-conforming instance segmentation from a body/boundary/contact U-Net.

    Parameters
    ----------
    net : UNet
        The trained network; its batch norms are folded into the convolutions here.
    precision : str
        One of `PRECISIONS`. Reduced precision roughly halves CPU inference time on CPUs with
        native bfloat16 support (and multiplies it on those without); the probabilities are
        summed and decoded in float32 either way.
    channels_last : bool
        Run the network in channels-last memory layout (faster convolutions on CPU and GPU).
    tta : bool
        Average the probabilities over the 8 flips and 90-degree rotations (8x slower).
    body_threshold, seed_thresholds, min_seed_pixels, min_pixels, seed_erosions_px
        Decoding parameters, see `geoseg.models.instances.decode_instances`; seed thresholds
        and erosions one per class (or one for all).
    """

    def __init__(
        self,
        net: UNet,
        precision: str = "auto",
        channels_last: bool = True,
        tta: bool = False,
        body_threshold: float = 0.5,
        seed_thresholds: Sequence[float] = (0.6,),
        min_seed_pixels: int = 4,
        min_pixels: int = 16,
        seed_erosions_px: Sequence[int] = (0,),
    ) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.net = fuse_batchnorm(net)
        self.stride = net.stride
        self.precision = precision
        self.channels_last = channels_last
        self.tta = tta
        self.body_threshold = body_threshold
        self.seed_thresholds = [float(value) for value in seed_thresholds]
        self.min_seed_pixels = min_seed_pixels
        self.min_pixels = min_pixels
        self.seed_erosions_px = [int(value) for value in seed_erosions_px]

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Detections per image, torchvision style (see `geoseg.models.contract`)."""
        if len(images) == 0:
            return []
        same_shape = True
        for image in images:
            if image.shape != images[0].shape:
                same_shape = False
        if same_shape:
            probabilities = self.probabilities(torch.stack(images))
            return [self.detect(p) for p in probabilities.unbind(0)]
        return [self.detect(self.probabilities(image.unsqueeze(0))[0]) for image in images]

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Body, boundary, contact probabilities ``[B, 3K, H, W]`` (float32) of ``[B, C, H, W]``."""
        height, width = batch.shape[2], batch.shape[3]
        pad_bottom = (self.stride - height % self.stride) % self.stride
        pad_right = (self.stride - width % self.stride) % self.stride
        # Zero is the band mean after standardisation, as the pipeline fills no-data pixels.
        x = F.pad(batch, [0, pad_right, 0, pad_bottom])
        x = x.to(self._dtype(x.device))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.tta:
            total = torch.zeros(
                (x.shape[0], self.net.head.out_channels, x.shape[2], x.shape[3]),
                dtype=torch.float32,
                device=x.device,
            )
            for flip in [False, True]:
                flipped = x.flip(3) if flip else x
                for k in range(4):
                    out = torch.sigmoid(self.net(flipped.rot90(k, [2, 3])).float())
                    out = out.rot90(-k, [2, 3])
                    total += out.flip(3) if flip else out
            probabilities = total / 8.0
        else:
            probabilities = torch.sigmoid(self.net(x).float())
        return probabilities[:, :, :height, :width].contiguous()

    def detect(self, probabilities: torch.Tensor) -> dict[str, torch.Tensor]:
        """Contract output of one image from its probabilities ``[3K, H, W]``, best score first."""
        labels, classes, scores = decode_instances(
            probabilities,
            self.body_threshold,
            self.seed_thresholds,
            self.min_seed_pixels,
            self.min_pixels,
            seed_erosions_px=self.seed_erosions_px,
        )
        return ranked_detections(labels, classes, scores)

    def _dtype(self, device: torch.device) -> torch.dtype:
        if self.precision == "bf16" or (self.precision == "auto" and device.type == "cpu"):
            return torch.bfloat16
        if self.precision == "fp16" or (self.precision == "auto" and device.type == "cuda"):
            return torch.float16
        return torch.float32


def package_segmenter(
    net: UNet,
    path: str | Path,
    *,
    classes: Mapping[int, str],
    mean: Sequence[float],
    std: Sequence[float],
    bands: Sequence[int] = (1, 2, 3),
    scale: float = 1.0 / 255.0,
    tile_size: int = 512,
    overlap: int = 64,
    name: str | None = None,
    precision: str = "auto",
    gsd_m: float | None = None,
    seed_thresholds: Sequence[float] = (0.6,),
    seed_erosions_px: Sequence[int] = (0,),
) -> ModelSpec:
    """Wrap ``net`` in an `InstanceSegmenter` and write it as a geoseg model file.

    ``classes`` must number the network's classes 1..K in output order; ``gsd_m`` is the ground
    resolution (m/pixel) it was trained for; ``seed_thresholds`` and ``seed_erosions_px`` are the
    decoding's, one per class in class order or one for all (see
    `geoseg.models.instances.decode_instances`). The file offers test-time
    augmentation, off unless the loader switches it on (``geoseg run --tta``).
    """
    if sorted(classes) != list(range(1, net.num_classes + 1)):
        raise ValueError(f"classes must be numbered 1..{net.num_classes}, got {sorted(classes)}")
    module = InstanceSegmenter(
        net.cpu(),
        precision=precision,
        seed_thresholds=seed_thresholds,
        seed_erosions_px=seed_erosions_px,
    )
    module.eval()
    return package_model(
        module,
        path,
        classes=classes,
        bands=bands,
        scale=scale,
        mean=mean,
        std=std,
        tile_size=tile_size,
        overlap=overlap,
        name=name,
        gsd_m=gsd_m,
        tta=True,
    )
