"""``geoseg train``: train or fine-tune the built-in network and package it as a model file."""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import click

from geoseg.cli.console import say, training_progress
from geoseg.cli.options import coco_options, label_class_options

if TYPE_CHECKING:
    from geoseg.models.datasets import LabelledImage

DEFAULT_CLASSES = "lawn,bridge,building"


@click.command("train")
@click.argument("output", type=click.Path(path_type=Path))
@coco_options
@click.option("--raster", type=click.Path(path_type=Path), help="Georeferenced raster to train on.")
@click.option(
    "--labels", type=click.Path(path_type=Path), help="Polygons (GeoPackage, GeoJSON, ...)."
)
@label_class_options
@click.option(
    "--synthetic",
    type=int,
    default=0,
    show_default=True,
    help="Synthetic scenes to generate and mix in.",
)
@click.option(
    "--classes", default=DEFAULT_CLASSES, show_default=True, help="The model's classes, in order."
)
@click.option(
    "--absent",
    multiple=True,
    metavar="CLASS",
    help="A class of the model the labelled imagery has none of (repeatable): its pixels then "
    "teach the model what is not one, e.g. --absent bridge for a tile without bridges.",
)
@click.option(
    "--init",
    "init_checkpoint",
    type=click.Path(path_type=Path),
    help="Fine-tune from this checkpoint ('default': the shipped model's weights).",
)
@click.option(
    "--freeze-batchnorm/--train-batchnorm",
    default=None,
    help="Keep the batch norms of the --init weights as they are, or train them with the rest "
    "[default: frozen with --init, which small batches' statistics would unsettle; trained "
    "otherwise; a resumed run keeps its own].",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="Checkpoint file [default: OUTPUT with .ckpt].",
)
@click.option("--resume", is_flag=True, help="Continue the run saved in --checkpoint.")
@click.option("--iterations", type=int, default=2000, show_default=True)
@click.option("--minutes", type=float, help="Stop after this long; the schedule shrinks to fit.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option(
    "--tile-size", type=int, default=256, show_default=True, help="Training crop edge (pixels)."
)
@click.option("--learning-rate", type=float, default=2e-3, show_default=True)
@click.option("--val-fraction", type=float, default=0.15, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, help="Torch threads (set to the free cores).")
@click.option(
    "--loader-workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Processes that make batches ahead of the training step; on a GPU, the free cores.",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "bf16", "fp32"]),
    default="auto",
    show_default=True,
    help="auto: bf16 where the device computes it natively (GPUs, CPUs with AVX512-BF16 or "
    "AMX), else fp32.",
)
@click.option(
    "--gsd",
    type=click.FloatRange(min=0, min_open=True),
    help="Ground resolution (m/pixel) the model is for, recorded in it as gsd_m "
    "[default: the labelled raster's, none for COCO images].",
)
def train_command(
    output: Path,
    coco: Path | None,
    images_dir: Path | None,
    raster: Path | None,
    labels: Path | None,
    class_column: str | None,
    class_name: str,
    synthetic: int,
    classes: str,
    absent: tuple[str, ...],
    init_checkpoint: Path | None,
    freeze_batchnorm: bool | None,
    checkpoint: Path | None,
    resume: bool,
    iterations: int,
    minutes: float | None,
    batch_size: int,
    tile_size: int,
    learning_rate: float,
    val_fraction: float,
    seed: int,
    threads: int | None,
    loader_workers: int,
    device: str,
    precision: str,
    gsd: float | None,
) -> None:
    """Train a body/boundary/contact U-Net and write it to OUTPUT as a geoseg model file.

    Labels come from a COCO dataset (--coco) or a raster with polygons (--raster, --labels),
    optionally mixed with synthetic scenes (--synthetic N); --synthetic alone pre-trains.
    """
    import numpy as np
    import torch

    from geoseg.errors import OptionsError
    from geoseg.models.contract import select_device
    from geoseg.models.datasets import keep_model_classes
    from geoseg.models.decoding import chosen_f1, package_tuned
    from geoseg.models.labels import load_labelled
    from geoseg.models.shipped import default_weights_path
    from geoseg.models.synthetic import CLASSES as SYNTHETIC_CLASSES
    from geoseg.models.synthetic import synthetic_images
    from geoseg.models.training import (
        MEAN,
        STD,
        TrainingConfig,
        TrainingSource,
        load_checkpoint,
        make_batch,
        network_from_checkpoint,
        split_validation,
        train,
        unlabelled_classes,
    )
    from geoseg.tasks.inference import configure_torch_threads

    if resume and init_checkpoint is not None:
        raise OptionsError("--resume conflicts with --init: a resumed run has its own weights")
    checkpoint = checkpoint or output.with_suffix(".ckpt")
    names = [n.strip() for n in classes.split(",") if n.strip()]
    model_classes = dict(enumerate(names, start=1))
    if threads is not None:
        configure_torch_threads(threads)
    torch_device = select_device(device)
    has_labels = coco is not None or raster is not None or labels is not None
    if not has_labels and synthetic <= 0:
        raise OptionsError(
            "nothing to train on: pass --coco, --raster with --labels, or --synthetic N"
        )
    if absent and not has_labels:
        raise OptionsError("--absent needs labelled imagery: pass --coco or --raster with --labels")
    sources: list[TrainingSource] = []
    held_out: dict[str, TrainingSource] = {}
    if has_labels:
        images = load_labelled(
            model_classes,
            coco=coco,
            images_dir=images_dir,
            raster=raster,
            labels=labels,
            class_column=class_column,
            class_name=class_name,
        )
        if gsd is None and images and all(im.gsd_m for im in images):
            gsd = float(np.median([im.gsd_m for im in images]))
        train_images, held = split_validation(images, val_fraction)
        present = {int(c) for im in images for c in im.classes}
        labelled = tuple(sorted(present | _absent_ids(absent, model_classes, images)))
        sources.append(TrainingSource(tuple(train_images), labelled, weight=3.0))
        held_out["labelled"] = TrainingSource(tuple(held), labelled)
    if synthetic > 0:
        scenes = keep_model_classes(
            synthetic_images(synthetic, seed=seed * 100_003), SYNTHETIC_CLASSES, model_classes
        )
        train_scenes, held_scenes = split_validation(scenes, val_fraction)
        synthetic_classes = tuple(
            k for k, v in model_classes.items() if v in SYNTHETIC_CLASSES.values()
        )
        sources.append(TrainingSource(tuple(train_scenes), synthetic_classes))
        held_out["synthetic"] = TrainingSource(tuple(held_scenes), synthetic_classes)
    unlabelled = unlabelled_classes(sources, model_classes)
    if unlabelled:
        remedy = "" if init_checkpoint or resume else "; --classes leaves classes out"
        click.echo(
            f"Warning: nothing in this run labels {', '.join(unlabelled.values())}, so the model "
            f"will not find them (a fine-tuned model forgets them); --synthetic N labels lawns, "
            f"bridges and buildings, --absent CLASS says the labelled imagery has none{remedy}",
            err=True,
        )
    config = TrainingConfig(
        classes=model_classes,
        tile_px=tile_size,
        batch_size=batch_size,
        iterations=iterations,
        max_minutes=minutes,
        learning_rate=learning_rate,
        seed=seed,
        precision=precision,
        freeze_batchnorm=_freeze_batchnorm(freeze_batchnorm, init_checkpoint, checkpoint, resume),
    )
    rng = np.random.default_rng([seed, 2**31 - 1])
    validation = [make_batch(list(held_out.values()), config, rng, augment=False) for _ in range(2)]
    if init_checkpoint is not None and str(init_checkpoint) == "default":
        init_checkpoint = default_weights_path()
    initial = network_from_checkpoint(load_checkpoint(init_checkpoint)) if init_checkpoint else None
    with training_progress(iterations) as report:
        net, result = train(
            sources,
            config,
            validation=validation,
            device=torch_device,
            checkpoint=checkpoint,
            resume=resume,
            initial=initial,
            on_progress=report,
            loader_workers=loader_workers,
        )
    say(
        f"Trained {result.iterations} iterations in {result.seconds / 60:.1f} min "
        f"(loss {result.loss:.3f}, validation {result.validation_loss or float('nan'):.3f})"
    )
    tuned = partial(
        package_tuned,
        validation={group: list(source.images) for group, source in held_out.items()},
        threads=threads or torch.get_num_threads(),
        device=torch_device,
        classes=model_classes,
        mean=MEAN,
        std=STD,
        gsd_m=gsd,
    )
    spec, decoding, scores = tuned(net, output)
    chosen = (
        "seed threshold and erosion "
        + ", ".join(
            f"{name} {pair['seed_threshold']} and {pair['seed_erosion_px']:.0f} px"
            for name, pair in decoding.items()
        )
        + ", chosen on the validation images"
        if decoding
        else "the default decoding (no labelled object to choose one on)"
    )
    say(f"Wrote {spec.path} with {chosen}; checkpoint {checkpoint}")
    if not scores:
        return
    line = f"Validation F1 at IoU 0.5: {chosen_f1(scores):.3f}"
    if init_checkpoint is not None:
        start = network_from_checkpoint(load_checkpoint(init_checkpoint))
        with tempfile.TemporaryDirectory(dir=output.parent) as folder:
            _, _, start_scores = tuned(start, Path(folder) / "start.pt")
        line += f" (the --init weights, each with its best decoding: {chosen_f1(start_scores):.3f})"
    say(line)


def _freeze_batchnorm(
    chosen: bool | None, init_checkpoint: Path | None, checkpoint: Path, resume: bool
) -> bool:
    """``--freeze-batchnorm`` as given; by default what the resumed run did, else whether the
    run fine-tunes."""
    if chosen is not None:
        return chosen
    if resume and checkpoint.is_file():
        from geoseg.models.training import config_from_checkpoint, load_checkpoint

        return config_from_checkpoint(load_checkpoint(checkpoint)).freeze_batchnorm
    return init_checkpoint is not None


def _absent_ids(
    absent: tuple[str, ...], model_classes: dict[int, str], images: list[LabelledImage]
) -> set[int]:
    """The class ids of ``--absent``: names of the model's classes no label has."""
    import numpy as np

    from geoseg.errors import OptionsError

    ids = {name: class_id for class_id, name in model_classes.items()}
    unknown = [name for name in absent if name not in ids]
    if unknown:
        raise OptionsError(
            f"--absent {unknown[0]}: not a class of the model ({', '.join(model_classes.values())})"
        )
    for name in absent:
        count = sum(int((np.asarray(im.classes) == ids[name]).sum()) for im in images)
        if count:
            raise OptionsError(f"--absent {name}: the labels hold {count} objects of that class")
    return {ids[name] for name in absent}
