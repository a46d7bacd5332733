"""Turn body, boundary and contact probabilities into instances: a seeded watershed in torch.

For each class, *seeds* are the pixels that are surely inside an object and far from its edge
(high body, low boundary and contact probability). Their connected components, one per object
even where objects touch, grow back pixel by pixel into the body mask, each step claiming the
unlabelled body pixels next to a labelled one: a watershed on the distance from the seeds, in
the spirit of the SpaceNet-winning building extractors. Body regions that no seed reaches
become instances of their own. Everything is TorchScript-compatible, so the decoding travels
inside the model file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's own convention)

from geoseg.models.labelmaps import label_components, neighbourhood_max


def relabel_consecutive(labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Map the non-zero labels of an int64 map to ``1..N`` (0 stays background); return N.

    Examples
    --------
    >>> relabel_consecutive(torch.tensor([[0, 7], [7, 3]]))
    (tensor([[0, 2], [2, 1]]), 2)
    """
    if labels.numel() == 0:
        return labels.to(torch.int64), 0
    # A histogram and a running sum: linear time, where torch.unique would sort every pixel.
    present = torch.bincount(labels.flatten(), minlength=int(labels.max()) + 1) > 0
    present[0] = False
    lookup = torch.cumsum(present.to(torch.int64), 0) * present.to(torch.int64)
    return lookup[labels], int(present.sum())


def grow_seeds(seeds: torch.Tensor, region: torch.Tensor, max_steps: int) -> torch.Tensor:
    """Grow labelled ``seeds`` (int64 ``[H, W]``, 0 unlabelled) into ``region`` (bool).

    Each step gives every unlabelled region pixel the largest label among its 8 neighbours, so
    seeds expand at one pixel per step and stop where they meet; pixels outside ``region``
    never get a label, and seeds outside it keep theirs. Stops early once nothing changes.
    """
    labels = seeds.to(torch.float32 if seeds.numel() < 16_777_216 else torch.float64)
    for _ in range(max_steps):
        open_pixels = region & (labels == 0)
        grown = torch.where(open_pixels, neighbourhood_max(labels), labels)
        if torch.equal(grown, labels):
            break
        labels = grown
    return labels.to(torch.int64)


def decode_instances(
    probabilities: torch.Tensor,
    body_threshold: float = 0.5,
    seed_thresholds: list[float] | None = None,
    min_seed_pixels: int = 4,
    min_pixels: int = 16,
    max_grow_steps: int = 48,
    max_component_steps: int = 64,
    seed_erosions_px: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Instances from per-class body, boundary and contact probabilities ``[3K, H, W]``.

    Parameters
    ----------
    probabilities
        Channel ``3k`` body, ``3k+1`` boundary, ``3k+2`` contact of class ``k`` (0-based), 0..1.
    body_threshold
        Body probability above which a pixel belongs to some object of the class.
    seed_thresholds
        ``body * (1 - boundary) * (1 - contact)`` above which a pixel is a seed, per class
        (one value: every class; default 0.6).
    min_seed_pixels
        Smaller seed components are noise and dropped (their pixels still join a neighbour).
    min_pixels
        Smaller instances are dropped.
    max_grow_steps, max_component_steps
        Caps on the growing steps (pixels from a seed to the object's edge) and on the
        connected-component steps (see `geoseg.models.labelmaps.label_components`).
    seed_erosions_px
        Seeds are eroded by this many pixels before they are labelled, per class (one value:
        every class; default 0), which cuts the thin necks through gaps in a predicted
        boundary that would join two touching objects' seeds. It also removes the seeds of
        objects narrower than twice the erosion, which then join a neighbour or stand alone:
        objects of different classes, shapes and sizes are best decoded with different values.

    Returns
    -------
    labels : torch.Tensor
        int64 ``[H, W]``; 0 background, ``i`` instance ``i - 1``.
    classes : torch.Tensor
        int64 ``[N]``, 1-based class of each instance.
    scores : torch.Tensor
        float32 ``[N]``, mean body probability over each instance's pixels.
    """
    num_classes = probabilities.shape[0] // 3
    height, width = probabilities.shape[1], probabilities.shape[2]
    device = probabilities.device
    result = torch.zeros((height, width), dtype=torch.int64, device=device)
    classes: list[torch.Tensor] = []
    scores: list[torch.Tensor] = []
    offset = 0
    thresholds = [0.6] if seed_thresholds is None else seed_thresholds
    erosions = [0] if seed_erosions_px is None else seed_erosions_px
    for count in [len(thresholds), len(erosions)]:
        if count != 1 and count != num_classes:
            raise ValueError(
                f"expected 1 or {num_classes} seed thresholds and erosions, got {count}"
            )
    for k in range(num_classes):
        seed_threshold = thresholds[k if len(thresholds) > 1 else 0]
        seed_erosion_px = erosions[k if len(erosions) > 1 else 0]
        body = probabilities[3 * k]
        boundary = probabilities[3 * k + 1]
        contact = probabilities[3 * k + 2]
        region = body > body_threshold
        if not bool(region.any()):
            continue
        # Work inside the box around the class's pixels (plus a margin): cheap for rare classes.
        rows = torch.nonzero(region.any(dim=1)).flatten()
        cols = torch.nonzero(region.any(dim=0)).flatten()
        r0, r1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, height)
        c0, c1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, width)
        region = region[r0:r1, c0:c1]
        body = body[r0:r1, c0:c1]
        boundary = boundary[r0:r1, c0:c1]
        contact = contact[r0:r1, c0:c1]
        seeds = region & (body * (1.0 - boundary) * (1.0 - contact) > seed_threshold)
        if seed_erosion_px > 0:
            size = 2 * seed_erosion_px + 1
            outside = (~seeds).to(torch.float32).view(1, 1, seeds.shape[0], seeds.shape[1])
            seeds = F.max_pool2d(outside, size, 1, seed_erosion_px).view(seeds.shape) == 0
        seed_labels, seed_count = relabel_consecutive(label_components(seeds, max_component_steps))
        if seed_count > 0:
            seed_sizes = torch.bincount(seed_labels.flatten(), minlength=seed_count + 1)
            keep = seed_sizes >= min_seed_pixels
            keep[0] = False
            seed_labels = torch.where(keep[seed_labels], seed_labels, 0)
        grown = grow_seeds(seed_labels, region, max_grow_steps)
        # Body regions without a seed (small or thin objects) are objects too.
        orphans = region & (grown == 0)
        orphan_labels = label_components(orphans, max_component_steps)
        top = int(grown.max()) if grown.numel() > 0 else 0
        merged = torch.where(orphans, orphan_labels + top, grown)
        labels, count = relabel_consecutive(merged)
        if count == 0:
            continue
        sizes = torch.bincount(labels.flatten(), minlength=count + 1)
        sums = torch.bincount(
            labels.flatten(), weights=body.flatten().double(), minlength=count + 1
        )
        kept = torch.nonzero(sizes[1:] >= min_pixels).flatten() + 1
        n = kept.shape[0]
        if n == 0:
            continue
        lookup = torch.zeros(count + 1, dtype=torch.int64, device=device)
        lookup[kept] = torch.arange(offset + 1, offset + n + 1, device=device)
        mapped = lookup[labels]
        window = result[r0:r1, c0:c1]
        result[r0:r1, c0:c1] = torch.where(mapped > 0, mapped, window)
        classes.append(torch.full((n,), k + 1, dtype=torch.int64, device=device))
        scores.append((sums[kept] / sizes[kept].double()).float())
        offset += n
    if offset == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return result, empty, torch.zeros(0, dtype=torch.float32, device=device)
    # A pixel claimed by two classes went to the later one: drop instances left without pixels.
    present = torch.nonzero(torch.bincount(result.flatten(), minlength=offset + 1)[1:]).flatten()
    final, _ = relabel_consecutive(result)
    return final, torch.cat(classes)[present], torch.cat(scores)[present]
