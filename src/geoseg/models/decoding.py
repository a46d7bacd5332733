"""Choose the decoding of a trained network on validation images, and package it with it.

The seeded watershed that turns probabilities into instances (`geoseg.models.instances`) has two
parameters that decide how touching objects are cut apart: the seed threshold and the seed
erosion. Their best values depend on the network and the imagery, and they matter as much as
training (seed erosion took the shipped model's building F1 on held-out Kampala from 0.28 to
0.53), so every trained model has them chosen on its own validation images.
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
"""Decoding seed thresholds and seed erosions tried on the validation images; the best pair is
packaged in the model file."""
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
) -> tuple[ModelSpec, dict[str, float], list[dict[str, float]]]:
    """Write ``net`` as a model file at ``out`` (``options`` as `package_segmenter` takes them)
    with the decoding that scores best on ``validation`` (see `tune_decoding`, which passes each
    pair's scores to ``report``).

    Returns the file's spec, the chosen decoding and the scores of every pair tried. Groups with
    no labelled object are left out; with none left, the file keeps the default decoding.
    """
    package = partial(package_segmenter, net, out, **options)
    spec = package()
    groups = {
        name: images for name, images in validation.items() if any(len(im.classes) for im in images)
    }
    if not groups:
        return spec, {}, []
    decoding, scores = tune_decoding(out, groups, threads, device, report)
    spec = package(
        seed_threshold=decoding["seed_threshold"],
        seed_erosion_px=int(decoding["seed_erosion_px"]),
    )
    return spec, decoding, scores


def tune_decoding(
    model_path: Path,
    validation: Mapping[str, Sequence[LabelledImage]],
    threads: int,
    device: torch.device,
    report: Callable[[dict[str, float]], None] | None = None,
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The decoding's seed threshold and seed erosion that score best on the validation images;
    and the scores of every pair tried.

    Images are read as they are, not resampled to the model's resolution: held-out parts of
    the training data, at the resolutions the network was trained at. An image with objects
    scores the mean F1 at IoU 0.5 over their classes; a group of images (real, synthetic) their
    mean; a pair the mean over groups. The network runs once per image (`ReplayedNetwork`);
    only the decoding runs once per pair.
    Higher thresholds and wider erosions split touching objects apart, lower ones keep thin
    objects whole.
    """
    torch.set_num_threads(threads)
    model, spec = load_model(model_path, device)
    candidates = [
        {"seed_threshold": threshold, "seed_erosion_px": erosion}
        for erosion in SEED_EROSIONS_PX
        for threshold in SEED_THRESHOLDS
    ]
    f1s: dict[str, list[list[float]]] = {name: [[] for _ in candidates] for name in validation}
    packaged = {attribute: getattr(model, attribute) for attribute in candidates[0]}
    try:
        for name, images in validation.items():
            for image in images:
                if not len(image.classes):
                    continue
                replayed = ReplayedNetwork(model, TUNING_CACHE_BYTES)
                for scores, candidate in zip(f1s[name], candidates, strict=True):
                    for attribute, value in candidate.items():
                        setattr(model, attribute, value)
                    scores.append(_mean_f1(replayed, spec, image, device))
    finally:  # load_model shares the loaded model within the process: leave it as packaged
        for attribute, value in packaged.items():
            setattr(model, attribute, value)
    rows: list[dict[str, float]] = []
    for index, candidate in enumerate(candidates):
        groups = {name: float(np.mean(scores[index])) for name, scores in f1s.items()}
        row = {key: float(value) for key, value in candidate.items()}
        row |= {name: round(f1, 4) for name, f1 in groups.items()}
        row["mean"] = round(float(np.mean(list(groups.values()))), 4)
        if report is not None:
            report(row)
        rows.append(row)
    best = max(rows, key=lambda row: row["mean"])
    return {key: best[key] for key in candidates[0]}, rows


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


def _mean_f1(model: Detector, spec: ModelSpec, image: LabelledImage, device: torch.device) -> float:
    predicted = predict_image(model, spec, image.image, image.valid, device=device)
    report = evaluate_instances(
        [InstanceSet(image.instances, image.classes)],
        [predicted],
        spec.classes,
        average_precision=False,
    )
    present = {spec.classes[int(k)] for k in np.unique(image.classes)}
    return float(np.mean([report["classes"][name]["f1"] for name in present]))
