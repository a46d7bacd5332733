"""Run a model on tiles and turn its detections into one instance label map per tile.

The model sees normalized pixels and returns torchvision-style detections (see
`geoseg.models.contract`); this step checks them against the contract, drops low scores and
resolves pixels claimed by several instances in favour of the highest score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from geoseg.errors import ModelError, OptionsError, RasterError
from geoseg.models.contract import MASK_THRESHOLD, ModelSpec, last_line

Detector = Callable[[list[torch.Tensor]], object]
"""What segments a batch of tiles: a loaded model (`geoseg.models.contract.load_model`), or
anything called the same way and answering by the same contract."""

_PASTE_CHUNK = 64
"""Instances pasted per vectorised step, bounding the memory of their pixel lists."""

_KEYS = ("boxes", "labels", "scores")
"""Keys every detection holds; the instances' pixels come as ``masks`` or as a ``label_map``."""


@dataclass(frozen=True, eq=False)
class TilePrediction:
    """The instances found in one tile.

    Parameters
    ----------
    labels : numpy.ndarray
        uint32 ``[h, w]`` in tile pixel space; 0 is background, label ``k`` (1..N) is instance
        ``k - 1``. Every label 1..N has at least one pixel.
    class_ids : numpy.ndarray
        int64 ``[N]``, ids from the model's ``classes``.
    scores : numpy.ndarray
        float32 ``[N]``, the model's confidence in each instance.
    """

    labels: npt.NDArray[np.uint32]
    class_ids: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]

    def __post_init__(self) -> None:
        if self.labels.ndim != 2 or self.labels.dtype != np.uint32:
            raise ValueError("labels must be a uint32 array [h, w]")
        if self.class_ids.dtype != np.int64 or self.scores.dtype != np.float32:
            raise ValueError("class_ids must be int64 and scores float32")
        if self.class_ids.shape != self.scores.shape or self.class_ids.ndim != 1:
            raise ValueError("class_ids and scores must be 1-D arrays of the same length")
        if self.labels.size and int(self.labels.max()) > len(self.scores):
            raise ValueError("labels refer to more instances than class_ids and scores hold")

    @property
    def count(self) -> int:
        """Number of instances."""
        return len(self.scores)


def predict_tiles(
    model: Detector,
    spec: ModelSpec,
    pixels: Sequence[np.ndarray],
    valid: Sequence[np.ndarray],
    score_threshold: float,
    device: torch.device,
) -> list[TilePrediction]:
    """Segment a batch of tiles in one forward pass.

    Parameters
    ----------
    model, spec
        A model and its description from `geoseg.models.contract.load_model`.
    pixels
        Raw band values, float32 ``[C, h, w]`` per tile, already the spec's bands in order.
        Tiles in one batch may differ in size.
    valid
        bool ``[h, w]`` per tile, False where the raster has no data. Non-finite pixel values
        count as no data too.
    score_threshold
        Instances scoring below this (0..1) are dropped.
    device
        Where the model runs.

    Returns
    -------
    list of TilePrediction
        One per tile, in input order. No-data pixels are always background, and instances left
        without pixels (all no data, or entirely beneath higher-scoring instances) are dropped.

    Raises
    ------
    ModelError
        The model fails or its output breaks the contract (one line naming the model).
    RasterError
        A tile's band count or shape does not fit the spec or its validity mask.
    OptionsError
        ``score_threshold`` is outside 0..1.
    """
    if len(pixels) != len(valid):
        raise RasterError(f"{len(pixels)} tiles of pixels but {len(valid)} validity masks")
    if not 0.0 <= score_threshold <= 1.0:
        raise OptionsError(f"score threshold must be between 0 and 1, got {score_threshold}")
    if not pixels:
        return []
    with torch.inference_mode():
        images, usable = zip(
            *(
                _prepare(spec, tile, ok, index, device)
                for index, (tile, ok) in enumerate(zip(pixels, valid, strict=True))
            ),
            strict=True,
        )
        return _predict_in_memory(model, spec, list(images), list(usable), score_threshold, 0)


def _predict_in_memory(
    model: Detector,
    spec: ModelSpec,
    images: list[torch.Tensor],
    usable: list[torch.Tensor],
    score_threshold: float,
    first: int,
) -> list[TilePrediction]:
    """Predictions for ``images`` (tiles ``first``, ``first + 1``, ... of the batch), in as few
    forward passes as the device's memory allows.

    A pass that runs out of memory is split in two and retried, and later batches on the device
    start from the largest number of tiles that fitted. Each pass's detections become label maps
    before the next pass runs, so their per-instance masks never pile up.
    """
    device = str(images[0].device)
    largest = _TILES_THAT_FIT.get(device, len(images))
    if len(images) > largest:
        return [
            prediction
            for start in range(0, len(images), largest)
            for prediction in _predict_in_memory(
                model,
                spec,
                images[start : start + largest],
                usable[start : start + largest],
                score_threshold,
                first + start,
            )
        ]
    try:
        output = model(images)
    # Exceptions raised inside TorchScript surface as torch.jit.Error or RuntimeError (a CUDA
    # out-of-memory error included), not as their own type.
    except (torch.jit.Error, RuntimeError, ValueError, TypeError, IndexError) as exc:
        if not _out_of_memory(exc):
            raise ModelError(f"model {spec.name!r} failed: {last_line(exc)}") from None
        if len(images) == 1:
            height, width = images[0].shape[1:]
            raise ModelError(
                f"model {spec.name!r} ran out of memory on {device} with a single tile of "
                f"{height}x{width} pixels; use a smaller --tile-size"
            ) from None
    else:
        detections = _check_output(output, spec, [image.shape[1:] for image in images], first)
        return [
            _resolve(detection, ok, score_threshold)
            for detection, ok in zip(detections, usable, strict=True)
        ]
    if images[0].is_cuda:
        torch.cuda.empty_cache()
    half = len(images) // 2
    _TILES_THAT_FIT[device] = min(half, _TILES_THAT_FIT.get(device, half))
    return _predict_in_memory(
        model, spec, images[:half], usable[:half], score_threshold, first
    ) + _predict_in_memory(model, spec, images[half:], usable[half:], score_threshold, first + half)


_TILES_THAT_FIT: dict[str, int] = {}
"""Per device, the most tiles one forward pass has managed since one ran out of memory."""


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc)


def resize_prediction(prediction: TilePrediction, shape: tuple[int, int]) -> TilePrediction:
    """A prediction made on a resampled tile, mapped back onto the tile's own pixels.

    Each pixel of ``shape`` (rows, cols) takes the label of the resampled pixel whose footprint
    holds its centre. Instances left without pixels (possible when the model saw more pixels
    than the raster has) are dropped and the rest renumbered in order.
    """
    height, width = prediction.labels.shape
    rows = ((np.arange(shape[0]) + 0.5) * height / shape[0]).astype(np.intp)
    cols = ((np.arange(shape[1]) + 0.5) * width / shape[1]).astype(np.intp)
    labels = prediction.labels[np.minimum(rows, height - 1)[:, None], np.minimum(cols, width - 1)]
    present = np.bincount(labels.ravel(), minlength=prediction.count + 1)[1:] > 0
    if present.all():
        return TilePrediction(labels, prediction.class_ids, prediction.scores)
    renumber = np.zeros(prediction.count + 1, dtype=np.uint32)
    renumber[1:][present] = np.arange(1, int(present.sum()) + 1, dtype=np.uint32)
    return TilePrediction(
        renumber[labels], prediction.class_ids[present], prediction.scores[present]
    )


def configure_torch_threads(n: int) -> None:
    """Limit PyTorch's intra-op threads in this process to ``n``.

    Set it to the cores a worker really has: two torch threads sharing one core run many times
    slower than one.
    """
    if n < 1:
        raise OptionsError(f"torch threads must be at least 1, got {n}")
    torch.set_num_threads(n)


def _prepare(
    spec: ModelSpec, tile: np.ndarray, ok: np.ndarray, index: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    if tile.ndim != 3 or tile.shape[0] != len(spec.bands):
        raise RasterError(
            f"tile {index} has shape {tile.shape} but model {spec.name!r} reads "
            f"{len(spec.bands)} bands {spec.bands} as [C, h, w]"
        )
    if ok.shape != tile.shape[1:]:
        raise RasterError(
            f"tile {index}: validity mask {ok.shape} does not match pixels {tile.shape[1:]}"
        )
    # Neither array is changed in place below, so neither is copied unless torch needs it to be.
    image = model_input(to_device(np.ascontiguousarray(tile, dtype=np.float32), device), spec)
    usable = to_device(np.ascontiguousarray(ok, dtype=bool), device)
    # A finite sum means every value is finite: one pass instead of a test per value.
    if not bool(torch.isfinite(image.sum())):
        usable = usable & torch.isfinite(image).all(dim=0)
    if not bool(usable.all()):
        # Zero is the band mean once standardised: the least informative value to the network,
        # and it keeps fill values such as -9999 from producing edges or detections.
        image = torch.where(usable, image, torch.zeros((), device=device))
    return image, usable


def model_input(pixels: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """Raw float32 band values ``[C, h, w]`` as the model takes them: multiplied by the spec's
    ``scale``, then standardised with its ``mean`` and ``std`` when it has them."""
    image = pixels * spec.scale
    if spec.mean is not None and spec.std is not None:
        mean = torch.tensor(spec.mean, dtype=torch.float32, device=image.device)[:, None, None]
        std = torch.tensor(spec.std, dtype=torch.float32, device=image.device)[:, None, None]
        image.sub_(mean).div_(std)
    return image


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A tensor of ``array`` on ``device``; copies to a GPU go through pinned memory, without
    blocking, so the next tile is prepared while this one is on its way."""
    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _check_output(
    output: object, spec: ModelSpec, shapes: list[torch.Size], first: int = 0
) -> list[dict[str, torch.Tensor]]:
    model = f"model {spec.name!r}"
    # Scripted torchvision detection models return (losses, detections) instead of detections.
    if isinstance(output, tuple) and len(output) == 2 and isinstance(output[0], dict):
        output = output[1]
    if not isinstance(output, list) or len(output) != len(shapes):
        count = len(output) if isinstance(output, (list, tuple)) else type(output).__name__
        raise ModelError(
            f"{model} must return a list of {len(shapes)} dicts (one per image), got {count}"
        )
    known = torch.tensor(sorted(spec.classes), dtype=torch.int64)
    checked = []
    for index, (detection, (height, width)) in enumerate(zip(output, shapes, strict=True)):
        where = f"{model}, image {first + index}"
        if not isinstance(detection, dict):
            raise ModelError(f"{where}: expected a dict, got {type(detection).__name__}")
        pixels = "label_map" if isinstance(detection.get("label_map"), torch.Tensor) else "masks"
        for key in (*_KEYS, pixels):
            if not isinstance(detection.get(key), torch.Tensor):
                raise ModelError(f"{where}: output lacks the tensor {key!r}")
        boxes, labels, scores = (detection[key] for key in _KEYS)
        n = boxes.shape[0] if boxes.ndim == 2 else -1
        size = (int(height), int(width))
        expected = {"boxes": (n, 4), "labels": (n,), "scores": (n,)}
        expected[pixels] = size if pixels == "label_map" else (n, 1, *size)
        for key, shape in expected.items():
            if tuple(detection[key].shape) != shape:
                raise ModelError(
                    f"{where}: {key!r} has shape {list(detection[key].shape)}, "
                    f"expected {list(shape)} as [N, ...] for an input of {height}x{width} pixels"
                )
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ModelError(f"{where}: 'labels' must be integers, got {labels.dtype}")
        if not scores.is_floating_point() or not bool(torch.isfinite(scores).all()):
            raise ModelError(f"{where}: 'scores' must be finite floating-point values")
        labels = labels.to("cpu", torch.int64)
        unknown = labels[~torch.isin(labels, known)]
        if unknown.numel():
            raise ModelError(
                f"{where}: label {int(unknown[0])} is not among the model's classes "
                f"{sorted(spec.classes)}"
            )
        instances = detection[pixels]
        if pixels == "label_map":
            instances = _checked_label_map(instances, n, where)
        checked.append(
            {"labels": labels, "scores": scores.to("cpu", torch.float32), pixels: instances}
        )
    return checked


_WIDENED = (torch.uint16, torch.uint32, torch.uint64)
"""Label map types torch has few operations for (not even a minimum): widened to int64."""


def _checked_label_map(label_map: torch.Tensor, count: int, where: str) -> torch.Tensor:
    if label_map.is_floating_point() or label_map.dtype == torch.bool:
        raise ModelError(f"{where}: 'label_map' must be integers, got {label_map.dtype}")
    if label_map.dtype in _WIDENED:
        label_map = label_map.to(torch.int64)
    if not label_map.numel():
        return label_map
    low, high = torch.aminmax(label_map)
    if not 0 <= int(low) <= int(high) <= count:
        raise ModelError(
            f"{where}: 'label_map' values must lie in 0..{count} (0 background, k detection k)"
        )
    return label_map


def _resolve(
    detection: dict[str, torch.Tensor], usable: torch.Tensor, score_threshold: float
) -> TilePrediction:
    scores = detection["scores"].numpy()
    kept = np.flatnonzero(scores >= score_threshold)
    if not len(kept):
        return TilePrediction(
            labels=np.zeros(usable.shape, dtype=np.uint32),
            class_ids=np.zeros(0, dtype=np.int64),
            scores=np.zeros(0, dtype=np.float32),
        )
    if "label_map" in detection:
        owner = _label_map_owner(detection["label_map"], kept, len(scores), usable)
    else:
        owner = _mask_owner(detection["masks"], scores, kept, usable)
    # Survivors keep the model's order and are numbered 1..N.
    survivors = np.flatnonzero(np.bincount(owner.ravel(), minlength=len(scores) + 1)[1:])
    if len(survivors) == len(scores):
        labels = owner.astype(np.uint32)
    else:
        relabel = np.zeros(len(scores) + 1, dtype=np.uint32)
        relabel[survivors + 1] = np.arange(1, len(survivors) + 1, dtype=np.uint32)
        labels = relabel[owner]
    return TilePrediction(
        labels=labels,
        class_ids=detection["labels"].numpy()[survivors].astype(np.int64),
        scores=scores[survivors].astype(np.float32),
    )


def _label_map_owner(
    label_map: torch.Tensor, kept: npt.NDArray[np.intp], count: int, usable: torch.Tensor
) -> npt.NDArray[np.integer]:
    """Each pixel's detection (``k`` for detection ``k - 1``, 0 for none) from a label map,
    without the detections scoring below the threshold and the unusable pixels."""
    label_map = label_map.to(usable.device)
    if len(kept) < count:
        keep = torch.zeros(count + 1, dtype=torch.bool, device=usable.device)
        keep[torch.as_tensor(kept, device=usable.device) + 1] = True
        label_map = torch.where(keep[label_map.long()], label_map, 0)
    if not bool(usable.all()):
        label_map = torch.where(usable, label_map, 0)
    result: npt.NDArray[np.integer] = label_map.cpu().numpy()
    return result


def _mask_owner(
    masks: torch.Tensor,
    scores: npt.NDArray[np.float32],
    kept: npt.NDArray[np.intp],
    usable: torch.Tensor,
) -> npt.NDArray[np.int64]:
    """Each pixel's detection (``k`` for detection ``k - 1``, 0 for none) from per-instance
    masks, the highest score winning contested pixels."""
    height, width = usable.shape
    # Paste order: ascending score, and among equal scores the earlier instance last, so the
    # highest score wins contested pixels and ties go to the model's own (usually ranked) order.
    order = kept[np.lexsort((-kept, scores[kept]))]
    # Rank 0 never wins a pixel, so dropped instances need no copying out of the masks.
    rank = np.zeros(len(scores), dtype=np.int32)
    rank[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    ranks = torch.as_tensor(rank, device=usable.device)
    owner = torch.zeros(height * width, dtype=torch.int32, device=usable.device)
    for start in range(0, len(scores), _PASTE_CHUNK):
        if not rank[start : start + _PASTE_CHUNK].any():
            continue
        covered = masks[start : start + _PASTE_CHUNK, 0].to(usable.device) > MASK_THRESHOLD
        instance, pixel = covered.flatten(1).nonzero(as_tuple=True)
        owner.scatter_reduce_(0, pixel, ranks[start + instance], reduce="amax")
    owner = torch.where(usable, owner.view(height, width), 0)
    detection_of_rank = np.concatenate([[0], order + 1]).astype(np.int64)
    result: npt.NDArray[np.int64] = detection_of_rank[owner.cpu().numpy()]
    return result
