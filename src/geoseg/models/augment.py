"""Random training crops with augmentations that suit overhead imagery.

Overhead scenes have no up: 90-degree rotations and flips give eight equally real views.
Ground resolution varies between sources, so crops are also rescaled (a log-uniform zoom), and
sensors and light differ, so colours are jittered. Instances are resampled with nearest
neighbour, so they stay exact labels. Each crop's colour changes are drawn with the crop
(`draw_colour`) but applied where the batch is used (`jitter_colours`, on the GPU when training
there): on a GPU machine's CPU cores they were two fifths of a crop's cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's own convention)

from geoseg.models.datasets import LabelledImage


@dataclass(frozen=True)
class Augmentation:
    """How crops are varied.

    Parameters
    ----------
    zoom : tuple of float
        Range of the resampling factor (output pixels per input pixel), drawn log-uniformly:
        ``(0.5, 2.0)`` shows a 0.15 m source at 0.075-0.3 m per pixel.
    rotate, flip : bool
        Random 90-degree rotations and horizontal flips (together all eight views).
    brightness, contrast, saturation, channel_gain : float
        Maximum relative change of each (0 disables it).
    noise : float
        Standard deviation of additive Gaussian noise, on the 0..1 scale.
    """

    zoom: tuple[float, float] = (0.67, 1.5)
    rotate: bool = True
    flip: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.3
    channel_gain: float = 0.08
    noise: float = 0.01

    def __post_init__(self) -> None:
        if not 0 < self.zoom[0] <= self.zoom[1]:
            raise ValueError(
                f"zoom must be an increasing pair of positive factors, got {self.zoom}"
            )


NO_AUGMENTATION = Augmentation(
    zoom=(1.0, 1.0),
    rotate=False,
    flip=False,
    brightness=0,
    contrast=0,
    saturation=0,
    channel_gain=0,
    noise=0,
)
"""Plain crops, for validation."""


@dataclass(frozen=True, eq=False)
class Crop:
    """One training sample: float pixels scaled to 0..1, instances, classes and validity, and
    the colour changes still to apply (see `draw_colour`)."""

    image: torch.Tensor  # float32 [C, T, T], 0..1, colours as in the source
    instances: torch.Tensor  # int64 [T, T]
    classes: torch.Tensor  # int64 [N + 1]; entry i is the class of instance i, entry 0 unused
    valid: torch.Tensor  # bool [T, T]
    colour: torch.Tensor  # float32 [4 + C]


def sample_crop(
    source: LabelledImage,
    size: int,
    rng: np.random.Generator,
    augmentation: Augmentation,
    scale: float = 1.0 / 255.0,
    around: tuple[int, int] | None = None,
) -> Crop:
    """A random ``size`` x ``size`` crop of ``source``, augmented (its colour changes drawn, not
    applied: see `jitter_colours`); with ``around`` (row, column), one holding that pixel.

    Where the zoomed crop reaches past the image, it is padded with invalid pixels.
    """
    low, high = augmentation.zoom
    zoom = math.exp(rng.uniform(math.log(low), math.log(high)))
    extent = max(round(size / zoom), 1)
    height, width = source.instances.shape
    pixel = around or (None, None)
    row = _window_start(height, extent, pixel[0], rng)
    col = _window_start(width, extent, pixel[1], rng)
    window = (slice(row, row + extent), slice(col, col + extent))
    image = torch.from_numpy(np.ascontiguousarray(source.image[(slice(None), *window)])).float()
    instances = torch.from_numpy(source.instances[window].astype(np.int64))
    valid = torch.from_numpy(source.valid[window])
    pad_rows, pad_cols = extent - instances.shape[0], extent - instances.shape[1]
    if pad_rows or pad_cols:
        image = F.pad(image, [0, pad_cols, 0, pad_rows])
        instances = F.pad(instances, [0, pad_cols, 0, pad_rows])
        valid = F.pad(valid, [0, pad_cols, 0, pad_rows])
    image = image * scale
    if extent != size:
        image = F.interpolate(
            image[None],
            size=(size, size),
            mode="bilinear",
            align_corners=False,
            antialias=extent > size,
        )[0]
        instances = F.interpolate(instances[None, None].float(), size=(size, size), mode="nearest")[
            0, 0
        ].long()
        valid = (
            F.interpolate(valid[None, None].float(), size=(size, size), mode="nearest")[0, 0] > 0.5
        )
    if augmentation.rotate:
        k = int(rng.integers(0, 4))
        image, instances, valid = (t.rot90(k, [-2, -1]) for t in (image, instances, valid))
    if augmentation.flip and rng.random() < 0.5:
        image, instances, valid = (t.flip(-1) for t in (image, instances, valid))
    classes = torch.cat([torch.zeros(1, dtype=torch.int64), torch.from_numpy(source.classes)])
    colour = draw_colour(rng, augmentation, image.shape[0])
    return Crop(image.contiguous(), instances.contiguous(), classes, valid.contiguous(), colour)


def _window_start(length: int, extent: int, inside: int | None, rng: np.random.Generator) -> int:
    """A random start of a window of ``extent`` along an axis of ``length``, holding ``inside``
    when given."""
    last = max(length - extent, 0)
    if inside is None:
        return int(rng.integers(0, last + 1))
    return int(rng.integers(max(inside - extent + 1, 0), min(inside, last) + 1))


def draw_colour(rng: np.random.Generator, augmentation: Augmentation, bands: int) -> torch.Tensor:
    """One crop's random colour changes, for `jitter_colours`: float32 ``[4 + bands]`` holding
    the brightness, contrast and saturation factors, the noise's standard deviation, and a gain
    per band (factors 1 and no noise where ``augmentation`` disables them)."""
    a = augmentation

    def factor(limit: float) -> float:
        return 1 + rng.uniform(-limit, limit) if limit else 1.0

    brightness, contrast, saturation = (
        factor(a.brightness),
        factor(a.contrast),
        factor(a.saturation),
    )
    gains = [factor(a.channel_gain) for _ in range(bands)]
    return torch.tensor([brightness, contrast, saturation, a.noise, *gains], dtype=torch.float32)


def jitter_colours(
    images: torch.Tensor, colour: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Brightness, contrast, saturation (three bands only), per-band gain and noise, as
    `draw_colour` drew them per crop, on 0..1 images ``[B, C, H, W]`` wherever they are;
    ``generator`` (on the images' device) draws the noise."""
    factors = colour.to(images.device)[:, :, None, None]
    images = images * factors[:, 0:1]
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * factors[:, 1:2] + mean
    if images.shape[1] == 3:
        grey = images.mean(dim=1, keepdim=True)
        images = grey + (images - grey) * factors[:, 2:3]
    images = images * factors[:, 4:]
    noise = factors[:, 3:4]
    if bool((noise > 0).any()):
        draws = torch.randn(
            images.shape, generator=generator, device=images.device, dtype=images.dtype
        )
        images = images + draws * noise
    return images.clamp(0, 1)


def collate(
    crops: Sequence[Crop],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack crops: images ``[B, C, T, T]``, instances ``[B, T, T]``, classes ``[B, M + 1]``
    (padded with 0), valid ``[B, T, T]``, colour changes ``[B, 4 + C]``."""
    longest = max(c.classes.shape[0] for c in crops)
    classes = torch.zeros((len(crops), longest), dtype=torch.int64)
    for index, crop in enumerate(crops):
        classes[index, : crop.classes.shape[0]] = crop.classes
    return (
        torch.stack([c.image for c in crops]),
        torch.stack([c.instances for c in crops]),
        classes,
        torch.stack([c.valid for c in crops]),
        torch.stack([c.colour for c in crops]),
    )
