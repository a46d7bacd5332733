"""Train the body/boundary/contact U-Net: batches, loss, optimiser steps, checkpoints.

The loop draws every batch from a random generator seeded with ``(seed, iteration)``, so a run
is reproducible and a resumed run continues exactly where the checkpoint left it. Sources are
mixed by weight, every batch holds an object of each labelled class (see `make_batch`), and
each source says which classes its labels are complete for: a source of buildings only teaches
nothing about lawns (the lawn channels are masked out of its loss), so real buildings mixed
with synthetic scenes keep what synthetic pre-training taught about lawns and bridges. Masking
alone does not keep it: the layers the classes share still change, and fine-tuning on
buildings alone forgets lawns and bridges (see `unlabelled_classes`).

Checkpoints hold only tensors and plain values and are read with
``torch.load(weights_only=True)``: a checkpoint can never run code.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's own convention)

from geoseg.errors import ModelError, OptionsError
from geoseg.models.augment import (
    NO_AUGMENTATION,
    Augmentation,
    collate,
    jitter_colours,
    sample_crop,
)
from geoseg.models.datasets import LabelledImage
from geoseg.models.labelmaps import label_boxes
from geoseg.models.precision import TRAINING_PRECISIONS, training_precision
from geoseg.models.targets import instance_targets
from geoseg.models.unet import DEFAULT_WIDTHS, UNet, hold_batchnorm

MEAN = (0.45, 0.44, 0.39)
"""Per-band mean of 0..1 RGB used to standardise inputs (recorded in the model file)."""
STD = (0.21, 0.20, 0.20)
"""Per-band standard deviation of 0..1 RGB used to standardise inputs."""

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True, eq=False)
class TrainingSource:
    """Labelled images drawn from with probability proportional to ``weight``.

    ``labelled_classes`` lists the model class ids whose every object is labelled in these
    images; the other classes' channels do not contribute to the loss.
    """

    images: tuple[LabelledImage, ...]
    labelled_classes: tuple[int, ...]
    weight: float = 1.0
    augmentation: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self) -> None:
        if not self.images:
            raise OptionsError("a training source needs at least one image")
        if self.weight <= 0:
            raise OptionsError(f"source weight must be positive, got {self.weight}")

    @cached_property
    def object_counts(self) -> dict[int, npt.NDArray[np.float64]]:
        """Objects of each labelled class in each image, for `make_batch` to draw crops around."""
        classes = [im.classes for im in self.images]
        return {
            class_id: np.array([np.count_nonzero(c == class_id) for c in classes], np.float64)
            for class_id in self.labelled_classes
        }

    @cached_property
    def object_boxes(self) -> list[npt.NDArray[np.int64]]:
        """Each image's instance boxes (x0, y0, x1, y1; see `label_boxes`): `make_batch` looks
        for an object's pixels inside its box, not across a whole raster, at every batch."""
        return [
            label_boxes(torch.from_numpy(im.instances.astype(np.int64)), len(im.classes))
            .long()
            .numpy()
            for im in self.images
        ]


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of a run; recorded in every checkpoint.

    ``iterations`` is the length of the learning-rate schedule; ``max_minutes`` (optional, counted
    from the start or the resumption of a run) ends the run earlier and shortens the schedule to
    what fits, re-measured every 25 steps. ``boundary_px`` and ``contact_px`` are the widths of
    the boundary and contact targets (see `instance_targets`). ``freeze_batchnorm`` keeps every
    batch norm's statistics, scale and shift as the initial weights have them (see
    `hold_batchnorm`): for fine-tuning with small batches, whose own statistics are too noisy to
    replace those learnt from larger ones.
    """

    classes: dict[int, str]
    tile_px: int = 256
    batch_size: int = 8
    iterations: int = 2000
    max_minutes: float | None = None
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_iterations: int = 30
    seed: int = 0
    precision: str = "auto"
    boundary_px: int = 1
    contact_px: int = 2
    validate_every: int = 100
    checkpoint_every: int = 100
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    freeze_batchnorm: bool = False

    def __post_init__(self) -> None:
        if sorted(self.classes) != list(range(1, len(self.classes) + 1)):
            raise OptionsError(f"classes must be numbered 1..K, got {sorted(self.classes)}")
        if self.precision not in TRAINING_PRECISIONS:
            raise OptionsError(
                f"precision must be one of {', '.join(TRAINING_PRECISIONS)}, got {self.precision!r}"
            )
        names = ("tile_px", "batch_size", "iterations", "boundary_px", "contact_px")
        for name in (*names, "validate_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise OptionsError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.tile_px % (2 ** (len(self.widths) - 1)):
            raise OptionsError(
                f"tile size {self.tile_px} must be a multiple of {2 ** (len(self.widths) - 1)}"
            )


@dataclass
class Batch:
    """Network inputs of one step, and the instance maps its targets are made from.

    Targets are made where the batch is used (`targets`), not where it is drawn: on a GPU they
    cost next to nothing, while in a loader worker they were two thirds of a batch's CPU time.
    Instance maps and valid masks are also a fourteenth of the bytes of the targets and weights
    of three classes, to copy out of loader workers and onto a GPU. Likewise the crops travel
    as 8-bit pixels with their colour changes still to apply (`network_input`): a quarter of
    the bytes of float pixels, and the jitter, two fifths of a crop's CPU time, runs batched
    where the batch is used.
    """

    images: torch.Tensor  # uint8 [B, C, T, T]: crops as 0..255, colours not yet changed
    instances: torch.Tensor  # int32 [B, T, T]: 0 background, i instance i
    classes: torch.Tensor  # int64 [B, M + 1]: the 1-based class of each instance
    valid: torch.Tensor  # bool [B, T, T]: pixels inside the source image
    labelled: torch.Tensor  # bool [B, 3K]: the channels the crop's source labels
    colour: torch.Tensor  # float32 [B, 4 + C]: colour changes (see `draw_colour`)
    noise_seed: int  # seeds the colour noise, so a batch gives the same input every time

    def to(self, device: torch.device) -> Batch:
        return self._mapped(lambda tensor: tensor.to(device, non_blocking=True))

    def pin_memory(self) -> Batch:
        """Page-locked copies, so that `to` a GPU can overlap the next step (DataLoader calls
        this when ``pin_memory=True``)."""
        return self._mapped(torch.Tensor.pin_memory)

    def network_input(self) -> torch.Tensor:
        """Float32 ``[B, C, T, T]``: the crops with their colour changes, standardised, on the
        batch's device."""
        generator = torch.Generator(self.images.device).manual_seed(self.noise_seed)
        changed = jitter_colours(self.images.float() / 255.0, self.colour, generator)
        return standardise(changed)

    def targets(self, config: TrainingConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 targets and loss weights ``[B, 3K, T, T]`` (see `instance_targets`), on the
        batch's device; a weight is 1 where the loss counts."""
        num_classes = len(config.classes)
        targets = instance_targets(
            self.instances.long(), self.classes, num_classes, config.boundary_px, config.contact_px
        )
        weights = self.labelled[:, :, None, None] & self.valid[:, None]
        return targets, weights.float().expand_as(targets)

    def _mapped(self, change: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        return Batch(
            change(self.images),
            change(self.instances),
            change(self.classes),
            change(self.valid),
            change(self.labelled),
            change(self.colour),
            self.noise_seed,
        )


@dataclass(frozen=True)
class Progress:
    """What the loop reports after each step."""

    iteration: int
    total: int
    loss: float
    validation_loss: float | None
    seconds_per_iteration: float


@dataclass(frozen=True)
class TrainingResult:
    """How a run ended."""

    iterations: int
    seconds: float
    loss: float
    validation_loss: float | None


def unlabelled_classes(
    sources: Sequence[TrainingSource], classes: dict[int, str]
) -> dict[int, str]:
    """The classes no source labels: a run teaches the model nothing about them, and a model
    fine-tuned without them forgets them (the shipped model, fine-tuned for 10 minutes on
    buildings alone, found no lawn or bridge of the synthetic test scenes afterwards)."""
    labelled = {class_id for source in sources for class_id in source.labelled_classes}
    return {class_id: name for class_id, name in classes.items() if class_id not in labelled}


def build_network(config: TrainingConfig) -> UNet:
    """A fresh U-Net for ``config``'s classes, seeded for reproducibility."""
    torch.manual_seed(config.seed)
    return UNet(3, len(config.classes), tuple(config.widths))


def make_batch(
    sources: Sequence[TrainingSource],
    config: TrainingConfig,
    rng: np.random.Generator,
    augment: bool = True,
) -> Batch:
    """Draw ``config.batch_size`` crops from ``sources`` (their targets are made later, see
    `Batch.targets`).

    The first crops hold an object of each class that a source labels and has objects of, one
    class each, so every batch teaches every class: in 8 random crops a rare class is often
    missing (bridges from half the batches), and fine-tuning then forgot it or marked roofs as
    one. The others are drawn from the sources by weight, as nnU-Net fills its batches.
    """
    draws = [_object_draw(sources, c, rng) for c in _object_classes(sources)[: config.batch_size]]
    weights = np.array([s.weight for s in sources], dtype=np.float64)
    while len(draws) < config.batch_size:
        source = sources[int(rng.choice(len(sources), p=weights / weights.sum()))]
        sizes = np.array([im.instances.size for im in source.images], dtype=np.float64)
        image = source.images[int(rng.choice(len(sizes), p=sizes / sizes.sum()))]
        draws.append((source, image, None))
    crops, masks = [], []
    for source, image, around in draws:
        augmentation = source.augmentation if augment else NO_AUGMENTATION
        crops.append(sample_crop(image, config.tile_px, rng, augmentation, around=around))
        labelled = torch.zeros(3 * len(config.classes), dtype=torch.bool)
        for class_id in source.labelled_classes:
            labelled[3 * (class_id - 1) : 3 * class_id] = True
        masks.append(labelled)
    images, instances, classes, valid, colour = collate(crops)
    pixels = (images * 255.0).round().clamp(0, 255).to(torch.uint8)
    labelled = torch.stack(masks)
    seed = int(rng.integers(0, 2**31))
    return Batch(pixels, instances.to(torch.int32), classes, valid, labelled, colour, seed)


def _object_classes(sources: Sequence[TrainingSource]) -> list[int]:
    """The classes, in id order, that some source labels and has objects of."""
    return sorted({c for s in sources for c, n in s.object_counts.items() if n.any()})


def _object_draw(
    sources: Sequence[TrainingSource], class_id: int, rng: np.random.Generator
) -> tuple[TrainingSource, LabelledImage, tuple[int, int] | None]:
    """A source labelling ``class_id`` (by weight), one of its images (by its objects of the
    class) and a pixel of one of those objects; no pixel when that object has none."""
    counts = [s.object_counts.get(class_id, np.zeros(1)) for s in sources]
    weights = np.array([s.weight * bool(c.any()) for s, c in zip(sources, counts, strict=True)])
    index = int(rng.choice(len(sources), p=weights / weights.sum()))
    source, count = sources[index], counts[index]
    image_index = int(rng.choice(len(count), p=count / count.sum()))
    image = source.images[image_index]
    instance = int(rng.choice(np.flatnonzero(image.classes == class_id))) + 1
    x0, y0, x1, y1 = source.object_boxes[image_index][instance - 1]
    rows, cols = np.nonzero(image.instances[y0:y1, x0:x1] == instance)
    if not len(rows):
        return source, image, None
    pick = int(rng.integers(len(rows)))
    return source, image, (int(y0 + rows[pick]), int(x0 + cols[pick]))


class _IterationBatches(torch.utils.data.Dataset[Batch]):
    """Batch ``i`` of a run is drawn with a generator seeded by ``(seed, i)``, wherever it is
    made: in the training process or in a loader worker, the run is the same."""

    def __init__(self, sources: Sequence[TrainingSource], config: TrainingConfig) -> None:
        self.sources, self.config = sources, config

    def __getitem__(self, iteration: int) -> Batch:
        rng = np.random.default_rng([self.config.seed, iteration])
        return make_batch(self.sources, self.config, rng)


def _batch_stream(
    batches: _IterationBatches, start: int, stop: int, workers: int, pin: bool
) -> Generator[Batch, None, None]:
    """Batches ``start .. stop - 1`` in order, made by ``workers`` forked processes ahead of
    the training step (none: made here, one at a time)."""
    if workers == 0:
        yield from (batches[i] for i in range(start, stop))
        return
    # Forked workers share the images without copying them; DataLoader gives each worker one
    # torch thread, so no OpenMP pool is used across the fork.
    loader = torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        sampler=range(start, stop),
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=4,
        multiprocessing_context="fork",
    )
    yield from loader


def standardise(images: torch.Tensor) -> torch.Tensor:
    """0..1 RGB ``[B, 3, H, W]`` to the network's input scale (see `MEAN`, `STD`)."""
    mean = torch.tensor(MEAN, dtype=torch.float32, device=images.device)[:, None, None]
    std = torch.tensor(STD, dtype=torch.float32, device=images.device)[:, None, None]
    return (images - mean) / std


def segmentation_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice over the weighted pixels of every channel.

    Dice keeps the thin boundary and contact channels from being drowned by their background.
    It counts only the channels with an object pixel in the batch: on a channel with none, Dice
    is least when the channel is zero everywhere, and a rare class (bridges are in a third of
    the synthetic crops) was pushed to zero by every batch that happened to lack one, until
    fine-tuning erased it. Cross-entropy alone keeps such channels low where nothing is.
    """
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    bce_mean = (bce * weights).sum() / weights.sum().clamp(min=1.0)
    probabilities = torch.sigmoid(logits) * weights
    truth = targets * weights
    dims = (0, 2, 3)
    intersection = (probabilities * truth).sum(dims)
    denominator = probabilities.sum(dims) + truth.sum(dims)
    dice = 1.0 - (2.0 * intersection + 1.0) / (denominator + 1.0)
    counted = truth.sum(dims) > 0
    dice_mean = dice[counted].mean() if bool(counted.any()) else logits.sum() * 0.0
    return bce_mean + dice_mean


def train_step(
    net: UNet,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    config: TrainingConfig,
    device: torch.device,
) -> float:
    """One optimiser step on ``batch``; returns the loss."""
    net.train()
    if config.freeze_batchnorm:
        hold_batchnorm(net)
    batch = batch.to(device)
    images = batch.network_input().contiguous(memory_format=torch.channels_last)
    with _autocast(config, device):
        logits = net(images)
    loss = segmentation_loss(logits, *batch.targets(config))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return float(loss.detach())


def validation_loss(
    net: UNet, batches: Sequence[Batch], config: TrainingConfig, device: torch.device
) -> float:
    """Mean loss over fixed validation batches, in eval mode."""
    net.eval()
    total = 0.0
    with torch.inference_mode():
        for batch in batches:
            moved = batch.to(device)
            with _autocast(config, device):
                logits = net(moved.network_input().contiguous(memory_format=torch.channels_last))
            total += float(segmentation_loss(logits, *moved.targets(config)))
    return total / max(len(batches), 1)


def _autocast(config: TrainingConfig, device: torch.device) -> torch.autocast:
    """bfloat16 autocast when the run's precision resolves to it on ``device``."""
    bf16 = training_precision(config.precision, device) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def learning_rate(config: TrainingConfig, iteration: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak at ``total`` iterations."""
    peak = config.learning_rate
    if iteration < config.warmup_iterations:
        return peak * (iteration + 1) / config.warmup_iterations
    progress = min(
        (iteration - config.warmup_iterations) / max(total - config.warmup_iterations, 1), 1.0
    )
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(
    path: str | Path,
    net: UNet,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    config: TrainingConfig,
    total: int,
) -> None:
    """Write a checkpoint that `load_checkpoint` reads with ``weights_only=True``."""
    _write_checkpoint(
        path,
        net,
        config,
        optimizer=optimizer.state_dict(),
        iteration=iteration,
        total=total,
    )


def save_weights(path: str | Path, net: UNet, config: TrainingConfig) -> None:
    """Write a checkpoint of the weights alone (no optimiser, no position in a run): what
    ``geoseg train --init`` fine-tunes from, a third of a full checkpoint's size."""
    _write_checkpoint(path, net, config)


def _write_checkpoint(path: str | Path, net: UNet, config: TrainingConfig, **run: Any) -> None:
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    document = {
        "format": CHECKPOINT_FORMAT,
        # CPU tensors: a plain torch.load of weights trained on a GPU then works on any machine.
        "model": {name: value.cpu() for name, value in net.state_dict().items()},
        **run,
        "config": _config_document(config),
        "mean": list(MEAN),
        "std": list(STD),
    }
    torch.save(document, temporary)
    temporary.replace(target)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``); one-line `ModelError` if unusable."""
    file = Path(path)
    try:
        document = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{file}: checkpoint not found") from None
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        last = str(exc).strip().splitlines()[-1:] or [type(exc).__name__]
        raise ModelError(f"{file}: not a readable geoseg checkpoint: {last[0]}") from None
    if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{file}: not a geoseg training checkpoint (format {CHECKPOINT_FORMAT})")
    return document


def config_from_checkpoint(document: dict[str, Any], **overrides: Any) -> TrainingConfig:
    """The `TrainingConfig` stored in a checkpoint, with ``overrides`` applied."""
    values = dict(document["config"])
    values["classes"] = {int(k): v for k, v in values["classes"].items()}
    values["widths"] = tuple(values["widths"])
    values.update(overrides)
    return TrainingConfig(**values)


def network_from_checkpoint(document: dict[str, Any]) -> UNet:
    """The network of a checkpoint with its weights loaded."""
    config = config_from_checkpoint(document)
    net = UNet(3, len(config.classes), config.widths)
    try:
        net.load_state_dict(document["model"])
    except RuntimeError as exc:
        raise ModelError(
            f"checkpoint weights do not fit the network: {str(exc).splitlines()[0]}"
        ) from None
    return net


def _config_document(config: TrainingConfig) -> dict[str, Any]:
    values = asdict(config)
    values["classes"] = {str(k): v for k, v in config.classes.items()}
    values["widths"] = list(config.widths)
    return values


def train(
    sources: Sequence[TrainingSource],
    config: TrainingConfig,
    *,
    validation: Sequence[Batch] = (),
    device: torch.device | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    initial: UNet | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    loader_workers: int = 0,
) -> tuple[UNet, TrainingResult]:
    """Train a U-Net on ``sources``; return it and how the run ended.

    Parameters
    ----------
    sources
        Where crops come from (see `TrainingSource`).
    config
        Hyper-parameters.
    validation
        Fixed batches (see `make_batch` with ``augment=False``) scored every
        ``config.validate_every`` iterations and at the end.
    device
        CPU by default.
    checkpoint
        File written every ``config.checkpoint_every`` iterations and at the end.
    resume
        Continue from ``checkpoint`` (weights, optimiser, iteration); it must exist.
    initial
        Start from these weights (fine-tuning) instead of a fresh network; ignored on resume.
    on_progress
        Called after every iteration (a progress bar).
    loader_workers
        Processes that make batches ahead of the training step (0: the training process makes
        each in turn). A GPU trains faster than one CPU core crops and augments; the batches,
        and so the run, are the same for any number.
    """
    if loader_workers < 0:
        raise OptionsError(f"loader workers must be 0 or more, got {loader_workers}")
    device = device or torch.device("cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # crops never change size: time kernels once
    net = initial if initial is not None else build_network(config)
    net = net.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    start, total = 0, config.iterations
    if resume:
        if checkpoint is None or not Path(checkpoint).is_file():
            raise OptionsError(f"cannot resume: checkpoint {checkpoint} does not exist")
        document = load_checkpoint(checkpoint)
        net.load_state_dict(document["model"])
        optimizer.load_state_dict(document["optimizer"])
        start, total = int(document["iteration"]), int(document["total"])
    upper = total
    began = time.perf_counter()
    loss, val_loss = math.nan, None
    iteration = start
    pace = 0.0
    stream = _batch_stream(
        _IterationBatches(sources, config), start, upper, loader_workers, device.type == "cuda"
    )
    with closing(stream) as batches:
        for batch in batches:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, iteration, total)
            loss = train_step(net, optimizer, batch, config, device)
            iteration += 1
            elapsed = time.perf_counter() - began
            pace = elapsed / (iteration - start)
            if config.max_minutes is not None:
                # Re-plan now and then: the pace changes when other work shares the cores.
                if (iteration - start) % 25 == 5:
                    fits = iteration + int((config.max_minutes * 60 - elapsed) / pace)
                    total = max(min(upper, fits), iteration)
                if elapsed > config.max_minutes * 60:
                    total = iteration  # out of time: the schedule ends here
            last = iteration == total
            if validation and (iteration % config.validate_every == 0 or last):
                val_loss = validation_loss(net, validation, config, device)
            if checkpoint is not None and (iteration % config.checkpoint_every == 0 or last):
                save_checkpoint(checkpoint, net, optimizer, iteration, config, total)
            if on_progress is not None:
                on_progress(Progress(iteration, total, loss, val_loss, pace))
            if last:
                break
    net.eval()
    return net, TrainingResult(iteration - start, time.perf_counter() - began, loss, val_loss)


def held_out_count(count: int, fraction: float) -> int:
    """How many of ``count`` images `split_validation` holds out: ``fraction`` of them, at least
    one."""
    return max(1, round(count * fraction))


def split_validation(
    images: Sequence[LabelledImage], fraction: float
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """Hold out ``fraction`` of the data for validation.

    Several images: the last ``fraction`` of them (at least one). One image: its bottom rows,
    so that training and validation pixels never overlap.
    """
    if not 0 < fraction < 1:
        raise OptionsError(f"validation fraction must be between 0 and 1, got {fraction}")
    if len(images) > 1:
        held = held_out_count(len(images), fraction)
        return list(images[:-held]), list(images[-held:])
    (image,) = images
    height = image.instances.shape[0]
    cut = round(height * (1 - fraction))
    return [_rows(image, 0, cut)], [_rows(image, cut, height)]


def _rows(image: LabelledImage, start: int, stop: int) -> LabelledImage:
    instances = image.instances[start:stop]
    ids = np.unique(instances[instances > 0])
    lookup = np.zeros(len(image.classes) + 1, dtype=np.int32)
    lookup[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return LabelledImage(
        image=image.image[:, start:stop],
        instances=lookup[instances],
        classes=image.classes[ids - 1],
        valid=image.valid[start:stop],
        name=image.name,
        gsd_m=image.gsd_m,
    )
