"""Choose the decoding of a trained network on validation images, and package it with it.

The seeded watershed that turns probabilities into instances (`geoseg.models.instances`) has two
parameters that decide how touching objects are cut apart: the seed threshold and the seed
erosion. Their best values depend on the network and the imagery, and they matter as much as
training (seed erosion took the shipped model's building F1 on held-out Kampala from 0.28 to
0.53), so every trained model has them chosen on its own validation images.
"""

from __future__ import annotations

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

SEED_THRESHOLDS = (0.6, 0.7, 0.8, 0.9)
SEED_EROSIONS_PX = (0, 2, 4)
"""Decoding seed thresholds and seed erosions tried on the validation images; the best pair is
packaged in the model file."""


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
    mean; a pair the mean over groups.
    Higher thresholds and wider erosions split touching objects apart, lower ones keep thin
    objects whole.
    """
    torch.set_num_threads(threads)
    model, spec = load_model(model_path, device)
    scores: list[dict[str, float]] = []
    for erosion in SEED_EROSIONS_PX:
        for threshold in SEED_THRESHOLDS:
            model.seed_threshold, model.seed_erosion_px = threshold, erosion
            groups = {
                name: float(
                    np.mean(
                        [
                            _mean_f1(model, spec, image, device)
                            for image in images
                            if len(image.classes)
                        ]
                    )
                )
                for name, images in validation.items()
            }
            row = {"seed_threshold": threshold, "seed_erosion_px": erosion}
            row |= {name: round(f1, 4) for name, f1 in groups.items()}
            row["mean"] = round(float(np.mean(list(groups.values()))), 4)
            if report is not None:
                report(row)
            scores.append(row)
    best = max(scores, key=lambda row: row["mean"])
    return {
        "seed_threshold": best["seed_threshold"],
        "seed_erosion_px": best["seed_erosion_px"],
    }, scores


def _mean_f1(
    model: torch.jit.ScriptModule, spec: ModelSpec, image: LabelledImage, device: torch.device
) -> float:
    predicted = predict_image(model, spec, image.image, image.valid, device=device)
    report = evaluate_instances(
        [InstanceSet(image.instances, image.classes)], [predicted], spec.classes
    )
    present = {spec.classes[int(k)] for k in np.unique(image.classes)}
    return float(np.mean([report["classes"][name]["f1"] for name in present]))
