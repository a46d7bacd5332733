"""Training targets from instance maps: body, boundary and contact channels per class.

An instance map is an int ``[H, W]`` array, 0 for background and ``i`` for instance ``i`` (any
positive ids); ``classes`` gives each instance's 1-based class. The targets are the channels the
U-Net learns (see `geoseg.models.unet`): *body* covers each object, *boundary* the object's pixels
within ``boundary_px`` of another label (background or another object), *contact* every pixel
(object or background) within ``contact_px`` of two different objects, which is where touching
objects must be cut apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's own convention)


def _max_filter(values: torch.Tensor, radius: int) -> torch.Tensor:
    return F.max_pool2d(values, 2 * radius + 1, 1, radius)


def instance_targets(
    instances: torch.Tensor,
    classes: torch.Tensor,
    num_classes: int,
    boundary_px: int = 1,
    contact_px: int = 2,
) -> torch.Tensor:
    """Float32 targets ``[B, 3 * num_classes, H, W]`` of instance maps ``[B, H, W]``.

    Parameters
    ----------
    instances
        int64 ``[B, H, W]``; 0 background, ``i > 0`` instance ``i``.
    classes
        int64 ``[B, M + 1]``: ``classes[b, i]`` is the 1-based class of instance ``i`` of image
        ``b`` (entry 0 is ignored).
    num_classes
        K, the network's classes.
    boundary_px, contact_px
        Widths in pixels of the boundary ring and of the contact zone.
    """
    batch, height, width = instances.shape
    ids = instances.to(torch.float32).unsqueeze(1)
    big = float(instances.numel() + 1)
    # The largest and smallest object id around each pixel (background excluded from the min).
    largest = _max_filter(ids, boundary_px)
    smallest = -_max_filter(-torch.where(ids > 0, ids, big), boundary_px)
    edge = (ids > 0) & ((largest != ids) | (smallest != ids) | (_has_background(ids, boundary_px)))
    near_max = _max_filter(ids, contact_px)
    near_min = -_max_filter(-torch.where(ids > 0, ids, big), contact_px)
    contact = (near_min < big) & (near_max != near_min)
    pixel_class = torch.gather(classes, 1, instances.flatten(1)).view(batch, 1, height, width)
    pixel_class = torch.where(instances.unsqueeze(1) > 0, pixel_class, 0)
    # Contact belongs to the classes of the objects it separates.
    contact_class = _max_filter(pixel_class.float(), contact_px).long()
    targets = torch.zeros(
        (batch, 3 * num_classes, height, width), dtype=torch.float32, device=instances.device
    )
    for k in range(num_classes):
        of_class = pixel_class == k + 1
        targets[:, 3 * k : 3 * k + 1] = of_class.float()
        targets[:, 3 * k + 1 : 3 * k + 2] = (of_class & edge).float()
        near_class = (contact_class == k + 1) | of_class
        targets[:, 3 * k + 2 : 3 * k + 3] = (contact & near_class).float()
    return targets


def _has_background(ids: torch.Tensor, radius: int) -> torch.Tensor:
    background = (ids == 0).float()
    # Pixels outside the image count as background: objects cut by the edge keep a boundary.
    padded = F.pad(background, [radius] * 4, value=1.0)
    return F.max_pool2d(padded, 2 * radius + 1, 1, 0) > 0
