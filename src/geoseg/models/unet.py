"""A compact U-Net predicting, per class, object body, boundary and contact channels.

This is the output layout of the SpaceNet-winning building extractors: *body* marks every pixel of
an object, *boundary* its outermost ring of pixels, *contact* the pixels where two objects touch or
nearly touch. Body minus boundary and contact gives one seed per object even where objects touch;
`geoseg.models.instances` grows the seeds back into whole instances.

Channel ``3 * k + j`` of the output holds class ``k`` (0-based, in the order of the model's
classes) and kind ``j`` (0 body, 1 boundary, 2 contact), as logits.

Every convolution casts its weights to the input's dtype, so the scripted network runs in
bfloat16 or float16 by feeding it such a tensor (TorchScript ignores ``torch.autocast`` on CPU).
Train with batch norm, then `fuse_batchnorm` folds it into the convolutions for inference.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's own convention)
from torch import nn

KINDS = ("body", "boundary", "contact")
"""The channels predicted for each class, in output order."""

DEFAULT_WIDTHS = (16, 32, 64, 128, 256)
"""Feature channels per level: about 1.9 M parameters, a 16x downsampling."""


class ConvBlock(nn.Module):
    """3x3 convolution, batch norm (folded away for inference) and ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm: nn.Module = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.conv.bias
        if bias is not None:
            bias = bias.to(x.dtype)
        y = F.conv2d(x, self.conv.weight.to(x.dtype), bias, 1, 1)
        return F.relu(self.norm(y))


class DoubleConv(nn.Module):
    """Two `ConvBlock` in a row: one level of the U-Net."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.first = ConvBlock(in_channels, out_channels)
        self.second = ConvBlock(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.second(self.first(x))
        return out


class UNet(nn.Module):
    """U-Net with ``3 * num_classes`` output logits (body, boundary, contact per class).

    Parameters
    ----------
    in_channels : int
        Bands of the input image.
    num_classes : int
        Object classes; background is implicit.
    widths : tuple of int
        Feature channels per level, finest first; the input's height and width must be multiples
        of ``2 ** (len(widths) - 1)`` (`geoseg.models.segmenter` pads them).

    Examples
    --------
    >>> net = UNet(3, 3)
    >>> net(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 9, 64, 64])
    """

    def __init__(
        self, in_channels: int = 3, num_classes: int = 3, widths: tuple[int, ...] = DEFAULT_WIDTHS
    ) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError("a U-Net needs at least two levels")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.widths = list(widths)
        self.stride = 2 ** (len(widths) - 1)
        self.down = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.down.append(DoubleConv(previous, width))
            previous = width
        self.up = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(DoubleConv(previous + width, width))
            previous = width
        self.head = nn.Conv2d(previous, len(KINDS) * num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for index, level in enumerate(self.down):
            if index > 0:
                x = F.max_pool2d(x, 2)
            x = level(x)
            skips.append(x)
        skips.pop()
        for level in self.up:
            skip = skips.pop()
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = level(torch.cat([x, skip], dim=1))
        bias = self.head.bias
        if bias is not None:
            bias = bias.to(x.dtype)
        return F.conv2d(x, self.head.weight.to(x.dtype), bias)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def hold_batchnorm(net: nn.Module) -> None:
    """Keep every batch norm of ``net`` as it is while the rest trains: each normalises with its
    running statistics, not the batch's, and leaves them, its scale and its shift unchanged
    (no gradient). Call it after ``net.train()``, which puts them back in training mode."""
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
            for parameter in module.parameters():
                parameter.requires_grad_(False)


def fuse_batchnorm(net: UNet) -> UNet:
    """A copy of ``net`` in eval mode with every batch norm folded into its convolution.

    The copy computes the same function as ``net.eval()`` with fewer operations, and has no
    float32-only normalisation left, so it runs entirely in bfloat16 or float16.
    """
    fused = copy.deepcopy(net).eval()
    for block in fused.modules():
        if not isinstance(block, ConvBlock) or not isinstance(block.norm, nn.BatchNorm2d):
            continue
        norm = block.norm
        running_var = norm.running_var
        running_mean = norm.running_mean
        if running_var is None or running_mean is None:
            continue
        factor = norm.weight.detach() / torch.sqrt(running_var + norm.eps)
        conv = block.conv
        folded = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1, bias=True)
        with torch.no_grad():
            folded.weight.copy_(conv.weight * factor[:, None, None, None])
            bias = conv.bias if conv.bias is not None else torch.zeros_like(running_mean)
            assert folded.bias is not None  # created with bias=True above
            folded.bias.copy_((bias - running_mean) * factor + norm.bias.detach())
        block.conv = folded
        block.norm = nn.Identity()
    return fused
