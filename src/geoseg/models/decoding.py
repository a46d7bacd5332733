"""Choose the decoding of a trained network on validation images, and package it with it.

The seeded watershed that turns probabilities into instances (`geoseg.models.instances`) has two
parameters that decide how touching objects are cut apart: the seed threshold and the seed
erosion. Their best values depend on the network, the imagery and the class, and they matter
as much as training (seed erosion took the shipped model's building F1 on held-out Kampala from
0.28 to 0.53), so every trained model has them chosen per class on its own validation images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoseg.models.contract import ModelSpec, load_model
from geoseg.models.datasets import LabelledImage
from geoseg.models.evaluation import InstanceSet, evaluate_instances, predict_image
from geoseg.models.segmenter import package_segmenter
from geoseg.models.unet import UNet
from geoseg.tasks.inference import Detector

SEED_THRESHOLDS = (0.6, 0.7, 0.8, 0.9)
SEED_EROSIONS_PX = (0, 2, 4)
"""Decoding seed thresholds and seed erosions tried on the validation images; each class's best
pair is packaged in the model file."""
MAX_UPSAMPLING = 1.5
"""Validation images coarser than this many times the model's ground resolution are left out
of the choice: read as `geoseg run` reads them, they would be enlarged to the model's
resolution, at the square of that factor in pixels, to mimic imagery the model is not meant
for."""
TUNING_CACHE_BYTES = 2 * 1024**3
"""Network output kept per validation image while the decodings are tried on it."""


def package_tuned(
    net: UNet,
    out: Path,
    validation: Mapping[str, Sequence[LabelledImage]],
    threads: int,
    device: torch.device,
    report: Callable[[dict[str, float]], None] | None = None,
    **options: Any,
) -> tuple[ModelSpec, dict[str, dict[str, float]], list[dict[str, float]]]:
    """Write ``net`` as a model file at ``out`` (``options`` as `package_segmenter` takes them)
    with the decoding of each class that scores best on ``validation`` (see `tune_decoding`,
    which passes each pair's scores to ``report``).

    Returns the file's spec, the chosen decoding per class name and the scores of every pair
    tried. With no labelled object to score, the file keeps the default decoding.
    """
    package = partial(package_segmenter, net, out, **options)
    spec = package()
    decoding, scores = tune_decoding(out, validation, threads, device, report)
    if not decoding:
        return spec, {}, []
    names = [spec.classes[class_id] for class_id in sorted(spec.classes)]
    spec = package(
        seed_thresholds=[decoding[name]["seed_threshold"] for name in names],
        seed_erosions_px=[int(decoding[name]["seed_erosion_px"]) for name in names],
    )
    return spec, decoding, scores


def tune_decoding(
    model_path: Path,
    validation: Mapping[str, Sequence[LabelledImage]],
    threads: int,
    device: torch.device,
    report: Callable[[dict[str, float]], None] | None = None,
) -> tuple[dict[str, dict[str, float]], list[dict[str, float]]]:
    """The decoding's seed threshold and seed erosion that score best on the validation images,
    for each class of the model; and the scores of every pair tried.

    Lawns, bridges and roofs differ in shape and size, so each class gets its own pair. A class
    scores a pair by its F1 at IoU 0.5 averaged over the images with objects of it, per group
    (real, synthetic), then over the groups; a class no validation image holds gets the pair
    with the best mean over classes. Each row holds a pair, each group's mean F1 over its
    images and their classes, the class scores (``f1 NAME``) and ``mean``, their mean; no image
    left to score gives no choice and no rows.

    Images are read at the model's ground resolution, as `geoseg run` reads imagery, for
    erosion is counted in the model's pixels: read at their own 0.1-1 m, synthetic scenes had
    a fine-tuned model's buildings decoded with 2 px, which cost a tenth of its building F1 on
    Kampala at the model's 0.15 m, where 4 px was right. Images coarser than `MAX_UPSAMPLING`
    times the model's resolution are left out. The network runs once per image
    (`ReplayedNetwork`); only the decoding runs once per pair. Higher thresholds and wider
    erosions split touching objects apart, lower ones keep thin and small objects whole.
    """
    torch.set_num_threads(threads)
    model, spec = load_model(model_path, device)
    candidates = [
        {"seed_threshold": threshold, "seed_erosion_px": erosion}
        for erosion in SEED_EROSIONS_PX
        for threshold in SEED_THRESHOLDS
    ]
    per_image: dict[str, list[list[float]]] = {
        name: [[] for _ in candidates] for name in validation
    }
    per_class: dict[str, dict[str, list[list[float]]]] = {}
    packaged = (model.seed_thresholds, model.seed_erosions_px)
    try:
        for group, images in validation.items():
            for image in images:
                if not len(image.classes) or not _at_model_resolution(image, spec):
                    continue
                replayed = ReplayedNetwork(model, TUNING_CACHE_BYTES)
                for index, candidate in enumerate(candidates):
                    model.seed_thresholds = [candidate["seed_threshold"]]
                    model.seed_erosions_px = [candidate["seed_erosion_px"]]
                    f1s = _class_f1s(replayed, spec, image, device)
                    per_image[group][index].append(float(np.mean(list(f1s.values()))))
                    for name, f1 in f1s.items():
                        by_group = per_class.setdefault(name, {})
                        by_group.setdefault(group, [[] for _ in candidates])[index].append(f1)
    finally:  # load_model shares the loaded model within the process: leave it as packaged
        model.seed_thresholds, model.seed_erosions_px = packaged
    if not per_class:
        return {}, []
    rows: list[dict[str, float]] = []
    for index, candidate in enumerate(candidates):
        row = {key: float(value) for key, value in candidate.items()}
        row |= {
            group: round(float(np.mean(f1s[index])), 4)
            for group, f1s in per_image.items()
            if f1s[index]
        }
        classes = {
            f"f1 {name}": round(float(np.mean([np.mean(f1s[index]) for f1s in groups.values()])), 4)
            for name, groups in sorted(per_class.items())
        }
        row |= classes
        row["mean"] = round(float(np.mean(list(classes.values()))), 4)
        if report is not None:
            report(row)
        rows.append(row)
    overall = max(rows, key=lambda row: row["mean"])
    chosen = {}
    for name in spec.classes.values():
        best = max(rows, key=lambda row: row[f"f1 {name}"]) if name in per_class else overall
        chosen[name] = {key: best[key] for key in candidates[0]}
    return chosen, rows


def chosen_f1(scores: Sequence[Mapping[str, float]]) -> float:
    """The validation F1 of the decoding `tune_decoding` chose from ``scores``: the mean over
    classes of each class's best score."""
    names = [key for key in scores[0] if key.startswith("f1 ")]
    return float(np.mean([max(row[name] for row in scores) for name in names]))


class ReplayedNetwork:
    """A loaded model whose network runs once per tile: called again on the same tile, it
    decodes the probabilities it kept with the decoding set on the model at that time.

    Probabilities are kept up to ``max_bytes``; tiles beyond run the network every time.
    """

    def __init__(self, model: torch.jit.ScriptModule, max_bytes: int) -> None:
        self.model = model
        self.max_bytes = max_bytes
        self.kept: dict[bytes, torch.Tensor] = {}
        self.kept_bytes = 0

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Detections per image, as the model gives them (see `geoseg.models.contract`)."""
        keys = [_tile_key(image) for image in images]
        known = dict(self.kept)
        missing = [index for index, key in enumerate(keys) if key not in known]
        fresh = self._probabilities([images[index] for index in missing])
        for index, probabilities in zip(missing, fresh, strict=True):
            known[keys[index]] = probabilities
            size = probabilities.numel() * probabilities.element_size()
            if self.kept_bytes + size <= self.max_bytes:
                self.kept[keys[index]] = probabilities
                self.kept_bytes += size
        return [self.model.detect(known[key]) for key in keys]

    def _probabilities(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        if not images:
            return []
        if all(image.shape == images[0].shape for image in images):
            return list(self.model.probabilities(torch.stack(images)).unbind(0))
        return [self.model.probabilities(image.unsqueeze(0))[0] for image in images]


def _tile_key(image: torch.Tensor) -> bytes:
    shape = ",".join(map(str, image.shape)).encode()
    return shape + hashlib.blake2b(image.cpu().numpy().tobytes(), digest_size=16).digest()


def _class_f1s(
    model: Detector, spec: ModelSpec, image: LabelledImage, device: torch.device
) -> dict[str, float]:
    """F1 at IoU 0.5 of each class with objects in ``image``, read at the model's resolution."""
    predicted = predict_image(
        model, spec, image.image, image.valid, device=device, gsd_m=image.gsd_m
    )
    report = evaluate_instances(
        [InstanceSet(image.instances, image.classes)],
        [predicted],
        spec.classes,
        average_precision=False,
    )
    present = [spec.classes[int(k)] for k in np.unique(image.classes)]
    return {name: float(report["classes"][name]["f1"]) for name in present}


def _at_model_resolution(image: LabelledImage, spec: ModelSpec) -> bool:
    """Whether ``image`` is fine enough to be read at the model's resolution (see
    `MAX_UPSAMPLING`)."""
    if spec.gsd_m is None or image.gsd_m is None:
        return True
    return image.gsd_m <= MAX_UPSAMPLING * spec.gsd_m
