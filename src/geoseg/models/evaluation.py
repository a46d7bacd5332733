"""Score predicted instances against ground truth.

Two families of figures, per class:

* COCO mask AP (IoU 0.5:0.95) and AP50, computed by pycocotools' ``COCOeval`` (the reference
  implementation, not a re-implementation), from all predictions whatever their score;
* precision, recall and F1 at IoU >= 0.5 with one-to-one matching (the SpaceNet building
  metric), and the total-area error, from the predictions scoring at least the threshold;
* why the unmatched ground-truth objects were missed (`missed_reasons`): merged into a larger
  predicted object, split into several, or not found. On the shipped model most misses are
  merges, which says where to improve a model: separating touching objects, not finding them.

`predict_image` runs any contract model over an image of any size, tile by tile, the way the
pipeline feeds it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's own convention)

from geoseg.errors import OptionsError
from geoseg.models.contract import ModelSpec
from geoseg.tasks.inference import Detector, TilePrediction, predict_tiles, resize_prediction
from geoseg.tasks.tiling import resampling_scale

MATCH_IOU = 0.5


@dataclass(frozen=True, eq=False)
class InstanceSet:
    """Instances of one image: a label map (0 background, ``i`` instance ``i``), their class ids
    and, for predictions, scores."""

    labels: npt.NDArray[Any]
    classes: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32] | None = None


def predict_image(
    model: Detector,
    spec: ModelSpec,
    pixels: npt.NDArray[Any],
    valid: npt.NDArray[np.bool_] | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    device: torch.device | None = None,
    batch_size: int = 4,
    gsd_m: float | None = None,
) -> InstanceSet:
    """Instances of a whole image ``[C, H, W]`` (raw values, the spec's bands) from a model.

    The image is cut into overlapping tiles; each tile keeps the instances whose box centre lies
    in its share of the overlaps (split halfway), so every object comes from the one tile that
    sees it best. Contested pixels go to the higher score. An image whose ground resolution
    ``gsd_m`` differs from the model's is resampled to it first, as the pipeline does, and the
    instances are mapped back onto the image's own pixels.
    """
    scale = resampling_scale(gsd_m, spec.gsd_m) if gsd_m is not None else 1.0
    if scale != 1.0:
        return _predict_resampled(model, spec, pixels, valid, scale, device, batch_size)
    device = device or torch.device("cpu")
    tile_size = tile_size or spec.tile_size or 512
    overlap = spec.overlap if overlap is None else overlap
    overlap = 64 if overlap is None else overlap
    height, width = pixels.shape[1:]
    valid = np.ones((height, width), dtype=bool) if valid is None else valid
    rows, cols = _starts(height, tile_size, overlap), _starts(width, tile_size, overlap)
    windows = [(r, c) for r in rows for c in cols]
    kept_masks: list[tuple[float, int, npt.NDArray[np.bool_], int, int]] = []
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        tiles = [
            pixels[:, r : r + tile_size, c : c + tile_size].astype(np.float32) for r, c in chunk
        ]
        oks = [valid[r : r + tile_size, c : c + tile_size] for r, c in chunk]
        predictions = predict_tiles(model, spec, tiles, oks, 0.0, device)
        for (r, c), prediction in zip(chunk, predictions, strict=True):
            row_lo, row_hi = _core(rows, r, tile_size, height)
            col_lo, col_hi = _core(cols, c, tile_size, width)
            for index in range(prediction.count):
                mask = prediction.labels == index + 1
                ys, xs = np.nonzero(mask)
                cy = r + (ys.min() + ys.max() + 1) / 2
                cx = c + (xs.min() + xs.max() + 1) / 2
                if row_lo <= cy < row_hi and col_lo <= cx < col_hi:
                    kept_masks.append(
                        (
                            float(prediction.scores[index]),
                            int(prediction.class_ids[index]),
                            mask,
                            r,
                            c,
                        )
                    )
    labels = np.zeros((height, width), dtype=np.int32)
    kept_masks.sort(key=lambda item: item[0])  # ascending: the best score is pasted last
    for number, (_, _, mask, r, c) in enumerate(kept_masks, start=1):
        view = labels[r : r + mask.shape[0], c : c + mask.shape[1]]
        view[mask] = number
    present = np.bincount(labels.ravel(), minlength=len(kept_masks) + 1) > 0
    present[0] = False
    lookup = np.zeros(len(kept_masks) + 1, dtype=np.int32)
    lookup[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    classes = np.array([k[1] for k in kept_masks], dtype=np.int64)[present[1:]]
    scores = np.array([k[0] for k in kept_masks], dtype=np.float32)[present[1:]]
    return InstanceSet(lookup[labels], classes, scores)


def _predict_resampled(
    model: Detector,
    spec: ModelSpec,
    pixels: npt.NDArray[Any],
    valid: npt.NDArray[np.bool_] | None,
    scale: float,
    device: torch.device | None,
    batch_size: int,
) -> InstanceSet:
    """`predict_image` on the image resampled by ``scale``, mapped back to its own pixels."""
    height, width = pixels.shape[1:]
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    image = torch.from_numpy(np.asarray(pixels, dtype=np.float32))[None]
    if scale < 1.0:  # averaging when shrinking and bilinear when enlarging, as GDAL reads tiles
        resized = F.interpolate(image, size=size, mode="area")
    else:
        resized = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
    ok = None
    if valid is not None:
        mask = torch.from_numpy(np.asarray(valid, dtype=np.float32))[None, None]
        ok = F.interpolate(mask, size=size, mode="nearest")[0, 0].numpy() > 0.5
    found = predict_image(model, spec, resized[0].numpy(), ok, device=device, batch_size=batch_size)
    scores = found.scores if found.scores is not None else np.ones(len(found.classes), np.float32)
    back = resize_prediction(
        TilePrediction(found.labels.astype(np.uint32), found.classes, scores),
        (height, width),
    )
    return InstanceSet(back.labels.astype(np.int32), back.class_ids, back.scores)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - 2 * overlap
    if step < 1:
        raise OptionsError(f"overlap {overlap} must be less than half the tile size {tile}")
    values = [*range(0, length - tile, step), length - tile]
    return sorted(set(values))


def _core(starts: list[int], start: int, tile: int, length: int) -> tuple[float, float]:
    index = starts.index(start)
    low = 0.0 if index == 0 else (starts[index - 1] + tile + start) / 2
    high = float(length) if index == len(starts) - 1 else (start + tile + starts[index + 1]) / 2
    return low, high


def evaluate_instances(
    truth: Sequence[InstanceSet],
    predictions: Sequence[InstanceSet],
    classes: Mapping[int, str],
    score_threshold: float = 0.5,
    pixel_area_m2: float | None = None,
    average_precision: bool = True,
) -> dict[str, Any]:
    """Per-class AP, AP50, precision, recall, F1 (IoU >= 0.5) and area error.

    ``truth`` and ``predictions`` pair up image by image; predictions need scores. Returns a
    JSON-ready dict: ``{"classes": {name: {...}}, "score_threshold": ..., "images": n}``;
    ``area_error`` is (predicted - true) / true total area, areas in pixels and, with
    ``pixel_area_m2``, in square metres; ``missed`` splits the false negatives by reason (see
    `missed_reasons`). Without ``average_precision`` the COCO AP and AP50, most of the time
    taken, are left out (None).
    """
    if len(truth) != len(predictions):
        raise OptionsError(f"{len(truth)} ground-truth images but {len(predictions)} predictions")
    if average_precision:
        ap = coco_mask_ap(truth, predictions, classes)
    else:
        ap = {class_id: (None, None) for class_id in classes}
    report: dict[str, Any] = {
        "images": len(truth),
        "score_threshold": score_threshold,
        "classes": {},
    }
    for class_id, name in sorted(classes.items()):
        tp = fp = fn = 0
        true_area = predicted_area = 0
        reasons = dict.fromkeys(MISSED_REASONS, 0)
        for gt, pred in zip(truth, predictions, strict=True):
            if pred.scores is None:
                raise OptionsError("predictions need scores")
            g = _select(gt.labels, gt.classes == class_id)
            confident = (pred.classes == class_id) & (pred.scores >= score_threshold)
            p = _select(pred.labels, confident)
            table = contingency(g, p)
            matched = matched_truth(table)
            n_true, n_pred = table.shape[0] - 1, table.shape[1] - 1
            tp += len(matched)
            fp += n_pred - len(matched)
            fn += n_true - len(matched)
            true_area += int(table[1:].sum())
            predicted_area += int(table[:, 1:].sum())
            for reason, count in missed_reasons(table, matched).items():
                reasons[reason] += count
        # Undefined figures (nothing predicted, nothing to find) are None, not a misleading 0.
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / (tp + fn) if tp + fn else None
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
        entry = {
            "ap": ap[class_id][0],
            "ap50": ap[class_id][1],
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "true_positives": tp,
            "false_positives": fp,
            "false_negatives": fn,
            "missed": reasons,
            "true_area_px": true_area,
            "predicted_area_px": predicted_area,
            "area_error": (predicted_area - true_area) / true_area if true_area else None,
        }
        if pixel_area_m2 is not None:
            entry["true_area_m2"] = true_area * pixel_area_m2
            entry["predicted_area_m2"] = predicted_area * pixel_area_m2
        report["classes"][name] = entry
    return report


def _select(labels: npt.NDArray[Any], keep: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """Label map of the kept instances only, renumbered 1..M."""
    lookup = np.zeros(len(keep) + 1, dtype=np.int64)
    lookup[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    selected: npt.NDArray[np.int64] = lookup[labels]
    return selected


def contingency(
    truth: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Pixels of each truth label (rows) under each predicted label (columns), 0 background
    included: object sizes, overlaps and coverage all come from this one count.

    >>> contingency(np.array([[1, 1, 0]]), np.array([[0, 1, 1]]))
    array([[0, 1],
           [1, 1]])
    """
    n_true, n_pred = int(truth.max(initial=0)), int(predicted.max(initial=0))
    pairs = truth.ravel().astype(np.int64) * (n_pred + 1) + predicted.ravel()
    table: npt.NDArray[np.int64] = np.bincount(
        pairs, minlength=(n_true + 1) * (n_pred + 1)
    ).reshape(n_true + 1, n_pred + 1)
    return table


def matched_truth(table: npt.NDArray[np.int64]) -> set[int]:
    """Labels of the truth objects matched one-to-one at IoU >= 0.5, greedily best IoU first,
    from their `contingency` table with the predictions.

    >>> a = np.array([[1, 1, 0, 2]])
    >>> matched_truth(contingency(a, a))
    {1, 2}
    """
    union = table.sum(axis=1)[:, None] + table.sum(axis=0)[None, :] - table
    iou = np.where(union > 0, table / np.maximum(union, 1), 0.0)[1:, 1:]
    candidates = np.argwhere(iou >= MATCH_IOU)
    order = np.argsort(-iou[candidates[:, 0], candidates[:, 1]], kind="stable")
    used_true: set[int] = set()
    used_pred: set[int] = set()
    for t, p in candidates[order]:
        if t not in used_true and p not in used_pred:
            used_true.add(int(t))
            used_pred.add(int(p))
    return {t + 1 for t in used_true}


MISSED_REASONS = ("merged", "split", "not_found")


def missed_reasons(table: npt.NDArray[np.int64], matched: set[int]) -> dict[str, int]:
    """Why the truth objects outside ``matched`` (their labels) were missed, from their
    `contingency` table with the predictions.

    ``merged``: one predicted object covers at least half of it, yet their IoU is under 0.5, so
    that object spills well beyond it (typically over a neighbour as well); ``split``: predicted
    objects cover at least half of it together, none alone; ``not_found``: less than half of it
    is covered.

    Examples
    --------
    >>> table = contingency(
    ...     np.array([[1, 1, 2, 2, 0, 3, 3, 3, 3, 3, 0, 4]]),
    ...     np.array([[1, 1, 1, 1, 1, 2, 2, 3, 3, 0, 0, 0]]),
    ... )
    >>> missed_reasons(table, matched_truth(table))
    {'merged': 2, 'split': 1, 'not_found': 1}
    """
    objects = table[1:]
    size = objects.sum(axis=1)
    covered = objects[:, 1:].sum(axis=1)
    largest = objects[:, 1:].max(axis=1, initial=0)
    missed = np.ones(len(objects), dtype=bool)
    missed[[t - 1 for t in matched]] = False
    present = missed & (size > 0)
    merged = present & (2 * largest >= size)
    split = present & ~merged & (2 * covered >= size)
    return {
        "merged": int(merged.sum()),
        "split": int(split.sum()),
        "not_found": int((present & ~merged & ~split).sum()),
    }


def coco_mask_ap(
    truth: Sequence[InstanceSet], predictions: Sequence[InstanceSet], classes: Mapping[int, str]
) -> dict[int, tuple[float | None, float | None]]:
    """COCO mask AP (IoU 0.5:0.95) and AP50 per class, by pycocotools' ``COCOeval``.

    A class without ground truth gets ``None``. Up to 1000 detections per image count.
    """
    try:
        from pycocotools import mask as coco_mask  # type: ignore[import-untyped]
        from pycocotools.coco import COCO  # type: ignore[import-untyped]
        from pycocotools.cocoeval import COCOeval  # type: ignore[import-untyped]
    except ImportError:
        raise OptionsError("mask AP needs pycocotools: pip install 'geoseg[train]'") from None
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    detections: list[dict[str, Any]] = []
    for image_id, (gt, pred) in enumerate(zip(truth, predictions, strict=True), start=1):
        height, width = gt.labels.shape
        images.append({"id": image_id, "height": height, "width": width})
        for index, class_id in enumerate(gt.classes, start=1):
            rle = _rle(coco_mask, gt.labels == index)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(class_id),
                    "segmentation": rle,
                    "area": float(coco_mask.area(rle)),
                    "bbox": list(coco_mask.toBbox(rle)),
                    "iscrowd": 0,
                }
            )
        scores = pred.scores if pred.scores is not None else np.ones(len(pred.classes), np.float32)
        for index, class_id in enumerate(pred.classes, start=1):
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": int(class_id),
                    "segmentation": _rle(coco_mask, pred.labels == index),
                    "score": float(scores[index - 1]),
                }
            )
    result: dict[int, tuple[float | None, float | None]] = {k: (None, None) for k in classes}
    if not annotations:
        return result
    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO()
        ground.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": k, "name": v} for k, v in classes.items()],
        }
        ground.createIndex()
        found = ground.loadRes(detections) if detections else COCO()
        if not detections:
            found.dataset = {
                "images": images,
                "annotations": [],
                "categories": ground.dataset["categories"],
            }
            found.createIndex()
        evaluator = COCOeval(ground, found, "segm")
        evaluator.params.maxDets = [10, 100, 1000]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"]  # [IoU, recall, class, area, maxDets]
    for k_index, class_id in enumerate(evaluator.params.catIds):
        if not any(a["category_id"] == class_id for a in annotations):
            continue
        values = precision[:, :, k_index, 0, -1]
        at50 = values[0][values[0] > -1]
        everything = values[values > -1]
        result[class_id] = (
            float(everything.mean()) if everything.size else 0.0,
            float(at50.mean()) if at50.size else 0.0,
        )
    return result


def _rle(coco_mask: Any, mask: npt.NDArray[np.bool_]) -> dict[str, Any]:
    rle: dict[str, Any] = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def format_table(report: Mapping[str, Any]) -> str:
    """The report as a fixed-width text table, one row per class."""
    header = (
        f"{'class':<12}{'AP':>7}{'AP50':>7}{'P':>7}{'R':>7}{'F1':>7}"
        f"{'TP':>6}{'FP':>6}{'FN':>6}{'area err':>10}"
    )
    lines = [header, "-" * len(header)]

    def number(value: float | None) -> str:
        return "   n/a" if value is None else f"{value:6.3f}"

    for name, entry in report["classes"].items():
        error = entry["area_error"]
        lines.append(
            f"{name:<12} {number(entry['ap'])} {number(entry['ap50'])} {number(entry['precision'])}"
            f" {number(entry['recall'])} {number(entry['f1'])}{entry['true_positives']:>6}"
            f"{entry['false_positives']:>6}{entry['false_negatives']:>6}"
            f"{'n/a' if error is None else f'{error:+.1%}':>10}"
        )
    missed = [
        (name, entry["missed"])
        for name, entry in report["classes"].items()
        if any(entry["missed"].values())
    ]
    if missed:
        lines += ["", f"{'missed':<12}{'merged':>8}{'split':>8}{'not found':>11}"]
        lines += [
            f"{name:<12}{why['merged']:>8}{why['split']:>8}{why['not_found']:>11}"
            for name, why in missed
        ]
    return "\n".join(lines)
