"""Regenerate the shipped model: pre-train on synthetic scenes, fine-tune on Kampala z20.

::

    python -m geoseg.models.recipe --out src/geoseg/models/builtin/geoseg-default.pt \\
        --data ../shared/data/kampala --device cuda --minutes 6.5 --threads 1 --workers 14 \\
        --loader-workers 14 --batch-size 32 --synthetic-scenes 1200 --pretrain-share 0.3 \\
        --evaluate --synthetic-eval 40

(the shipped model's command: 7.5 minutes of training on one H200 with 16 cores, and about 2.5
minutes of tuning and scoring, which ran on a 2-core CPU; there ``--minutes 80 --threads 2
--workers 2 --synthetic-scenes 200`` takes about 90 minutes and learns much less).

Two stages share the time budget (``--pretrain-share`` of it on synthetic scenes of all three
classes at 0.1-1 m, the rest on the labelled buildings of ``mosaic_z20_c1_rgb.tif``, whose roofs
also teach the bridge channels what is not a bridge, mixed with synthetic scenes so that lawns
and bridges are not forgotten). The held-out
``mosaic_z21_c0_rgb.tif`` is never trained on; with ``--evaluate`` it is scored at the end,
resampled to the model's 0.15 m as ``geoseg run`` reads it, and so are synthetic scenes painted
with seeds no training run uses. ``--score MODEL`` scores an existing model the same way.
Checkpoints of both stages go beside ``--out``; ``--resume`` continues an interrupted stage. The
weights alone go beside it too (``.ckpt``), for ``geoseg train --init`` to fine-tune from.
``--weights CKPT`` skips training: it packages, tunes and scores weights the recipe trained
elsewhere (on a GPU machine, say; pass the same ``--synthetic-scenes`` and ``--seed``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from geoseg.models.augment import Augmentation
from geoseg.models.contract import load_model, read_model_spec, select_device
from geoseg.models.datasets import LabelledImage, read_georeferenced, rename_classes
from geoseg.models.decoding import package_tuned
from geoseg.models.evaluation import InstanceSet, evaluate_instances, format_table, predict_image
from geoseg.models.synthetic import CLASSES, synthetic_images
from geoseg.models.training import (
    MEAN,
    STD,
    Progress,
    TrainingConfig,
    TrainingResult,
    TrainingSource,
    config_from_checkpoint,
    held_out_count,
    load_checkpoint,
    make_batch,
    network_from_checkpoint,
    save_weights,
    split_validation,
    train,
)
from geoseg.models.unet import UNet

TRAIN_RASTER = "mosaic_z20_c1_rgb.tif"
EVAL_RASTER = "mosaic_z21_c0_rgb.tif"
LABELS = "labels_osm_buildings_epsg4326.geojson"
HELD_OUT_SHARE = 0.1
"""Share of the painted synthetic scenes held out: the last ones, for validation."""
SYNTHETIC_EVAL_SEED = 10**9
"""First seed of the synthetic evaluation scenes; training uses seed * 100003 + i, far below."""
TRAINING_GSD_M = 0.15
"""Ground resolution of the fine-tuning raster; zoom augmentation spreads it over 0.1-0.22 m."""


def _stage_summary(result: TrainingResult) -> dict[str, float | int | None]:
    """How one training stage ended, for the report."""
    return {
        "iterations": result.iterations,
        "seconds": round(result.seconds),
        "loss": result.loss,
        "val_loss": result.validation_loss,
    }


def _printer(stage: str) -> Callable[[Progress], None]:
    started = time.perf_counter()

    def report(progress: Progress) -> None:
        if progress.iteration % 10 == 0 or progress.iteration == progress.total:
            val = "" if progress.validation_loss is None else f" val {progress.validation_loss:.3f}"
            print(
                f"[{stage}] {progress.iteration}/{progress.total} loss {progress.loss:.3f}{val} "
                f"{progress.seconds_per_iteration:.2f} s/it {time.perf_counter() - started:.0f} s",
                flush=True,
            )

    return report


def read_training_image(data: Path) -> LabelledImage:
    """The fine-tuning raster with its labelled buildings, in the model's class ids."""
    image, names = read_georeferenced(
        data / TRAIN_RASTER, data / LABELS, default_class="building", min_area_m2=2.0
    )
    (kampala,) = rename_classes([image], names, CLASSES)
    return kampala


def run(args: argparse.Namespace, kampala: LabelledImage) -> dict[str, object]:
    """Both training stages on synthetic scenes and ``kampala`` (see `read_training_image`), or
    the weights of ``--weights``; then packaging and optional evaluation. Returns a summary."""
    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    device = select_device(args.device)
    summary: dict[str, object] = {
        "minutes": args.minutes,
        "threads": args.threads,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "loader_workers": args.loader_workers,
    }
    base_seed = args.seed * 100_003
    held = held_out_count(args.synthetic_scenes, HELD_OUT_SHARE)
    trained = args.synthetic_scenes - held
    held_scenes = synthetic_images(held, size=384, seed=base_seed + trained, workers=args.workers)
    kampala_train, kampala_val = split_validation([kampala], 0.15)
    if args.weights:
        document = load_checkpoint(args.weights)
        net = network_from_checkpoint(document)
        beside = out.with_suffix(".ckpt")
        if beside != Path(args.weights).resolve():  # never drop a run's state to resume from
            save_weights(beside, net, config_from_checkpoint(document))
        summary["weights"] = str(args.weights)
    else:
        train_scenes = synthetic_images(trained, size=384, seed=base_seed, workers=args.workers)
        net = train_stages(args, train_scenes, held_scenes, kampala_train, kampala_val, summary)
    summary["batch_size"], summary["tile_size"], summary["training_gsd_m"] = (
        args.batch_size,
        args.tile_size,
        TRAINING_GSD_M,
    )
    validation = {"kampala": kampala_val, "synthetic": held_scenes}
    spec, decoding, scores = package_tuned(
        net,
        out,
        validation,
        args.threads,
        device,
        report=lambda row: print(f"[tune] {row}", flush=True),
        classes=CLASSES,
        mean=MEAN,
        std=STD,
        name="geoseg-default",
        gsd_m=TRAINING_GSD_M,
    )
    summary["decoding"] = {"chosen": decoding, "validation_f1": scores}
    summary["model"] = {"path": spec.path, "sha256": spec.sha256, "bytes": out.stat().st_size}
    if args.evaluate:
        summary |= score(out, Path(args.data), args)
    return summary


def train_stages(
    args: argparse.Namespace,
    train_scenes: Sequence[LabelledImage],
    held_scenes: Sequence[LabelledImage],
    kampala_train: Sequence[LabelledImage],
    kampala_val: Sequence[LabelledImage],
    summary: dict[str, object],
) -> UNet:
    """Pre-train on synthetic scenes, fine-tune on Kampala mixed with them; record both stages
    in ``summary`` and save the weights beside ``--out`` (``.ckpt``)."""
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    device = select_device(args.device)
    budget = args.minutes
    synthetic = TrainingSource(
        tuple(train_scenes), (1, 2, 3), augmentation=Augmentation(zoom=(0.7, 1.4))
    )
    common = {
        "classes": CLASSES,
        "batch_size": args.batch_size,
        "tile_px": args.tile_size,
        "seed": args.seed,
        "boundary_px": args.boundary_px,
        "contact_px": args.contact_px,
    }
    pre_config = TrainingConfig(
        **common,
        iterations=100_000,
        max_minutes=budget * args.pretrain_share,
        validate_every=50,
        checkpoint_every=50,
    )
    rng = np.random.default_rng([args.seed, 1])
    pre_val = [
        make_batch([TrainingSource(tuple(held_scenes), (1, 2, 3))], pre_config, rng, augment=False)
    ]
    net, pre = train(
        [synthetic],
        pre_config,
        validation=pre_val,
        checkpoint=out.with_suffix(".pretrain.ckpt"),
        resume=args.resume and out.with_suffix(".pretrain.ckpt").is_file(),
        on_progress=_printer("pretrain"),
        device=device,
        loader_workers=args.loader_workers,
    )
    summary["pretrain"] = _stage_summary(pre)
    # Kampala has lawns the labels leave out, but no bridge: its roofs teach what is not a bridge.
    real = TrainingSource(
        tuple(kampala_train), (2, 3), weight=3.0, augmentation=Augmentation(zoom=(0.67, 1.5))
    )
    fine_config = TrainingConfig(
        **common,
        iterations=100_000,
        max_minutes=budget * (1 - args.pretrain_share),
        learning_rate=1e-3,
        warmup_iterations=10,
        validate_every=50,
        checkpoint_every=50,
    )
    fine_val = [
        make_batch([TrainingSource(tuple(kampala_val), (2, 3))], fine_config, rng, augment=False)
        for _ in range(2)
    ]
    net, fine = train(
        [real, synthetic],
        fine_config,
        validation=fine_val,
        checkpoint=out.with_suffix(".finetune.ckpt"),
        resume=args.resume and out.with_suffix(".finetune.ckpt").is_file(),
        initial=net,
        on_progress=_printer("finetune"),
        device=device,
        loader_workers=args.loader_workers,
    )
    summary["finetune"] = _stage_summary(fine)
    save_weights(out.with_suffix(".ckpt"), net, fine_config)
    return net


def score(model_path: Path, data: Path, args: argparse.Namespace) -> dict[str, object]:
    """The issue's figures of a model: held-out z21 buildings (also with test-time augmentation
    when the model has it), then unseen synthetic scenes."""
    z21 = {
        "z21": evaluate_raster(
            model_path, data / EVAL_RASTER, data / LABELS, args.threads, args.device
        )
    }
    if read_model_spec(model_path).tta:
        z21["z21_tta"] = evaluate_raster(
            model_path, data / EVAL_RASTER, data / LABELS, args.threads, args.device, tta=True
        )
    return {
        **z21,
        "synthetic": evaluate_synthetic(model_path, args.synthetic_eval, args.threads, args.device),
    }


def evaluate_synthetic(
    model_path: Path, count: int, threads: int, device: str = "cpu"
) -> dict[str, object]:
    """Score a model on ``count`` synthetic scenes painted with seeds no training run uses.

    Scenes span 0.1-1 m, as in pre-training, and are read as they are (no resampling).
    """
    torch.set_num_threads(threads)
    torch_device = select_device(device)
    model, spec = load_model(model_path, torch_device)
    scenes = synthetic_images(count, size=384, seed=SYNTHETIC_EVAL_SEED)
    predictions = [
        predict_image(model, spec, scene.image, scene.valid, device=torch_device)
        for scene in scenes
    ]
    truth = [InstanceSet(scene.instances, scene.classes) for scene in scenes]
    report = evaluate_instances(truth, predictions, spec.classes)
    print(format_table(report), flush=True)
    return report


def evaluate_raster(
    model_path: Path,
    raster: Path,
    labels: Path,
    threads: int,
    device: str = "cpu",
    tta: bool = False,
) -> dict[str, object]:
    """Score a model on a raster's labelled buildings (the issue's protocol: >= 2 m², clipped)."""
    image, names = read_georeferenced(raster, labels, default_class="building", min_area_m2=2.0)
    (image,) = rename_classes([image], names, read_model_spec(model_path).classes)
    return evaluate_image(model_path, image, threads, device, tta)


def evaluate_image(
    model_path: Path, image: LabelledImage, threads: int, device: str = "cpu", tta: bool = False
) -> dict[str, object]:
    """Score a model on one labelled image (in the model's class ids), read at the model's
    ground resolution as ``geoseg run`` reads it; the report adds the inference speed."""
    torch.set_num_threads(threads)
    torch_device = select_device(device)
    model, spec = load_model(model_path, torch_device, tta)
    started = time.perf_counter()
    predicted = predict_image(
        model, spec, image.image, image.valid, device=torch_device, gsd_m=image.gsd_m
    )
    seconds = time.perf_counter() - started
    report = evaluate_instances(
        [InstanceSet(image.instances, image.classes)], [predicted], spec.classes
    )
    print(format_table(report), flush=True)
    report["inference_mp_per_s"] = image.instances.size / 1e6 / seconds
    return report


def build_parser() -> argparse.ArgumentParser:
    """The options of ``python -m geoseg.models.recipe``."""
    parser = argparse.ArgumentParser(
        prog="python -m geoseg.models.recipe", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", help="model file to write")
    parser.add_argument(
        "--data", default="../shared/data/kampala", help="folder of the Kampala rasters and labels"
    )
    parser.add_argument("--minutes", type=float, default=90.0, help="total training time budget")
    parser.add_argument(
        "--pretrain-share", type=float, default=0.35, help="share of the budget on synthetic scenes"
    )
    parser.add_argument(
        "--synthetic-scenes",
        type=int,
        default=300,
        help="synthetic 384 px scenes to paint (about 0.3 s each; a tenth are held out)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument(
        "--boundary-px", type=int, default=1, help="width of the boundary targets, in pixels"
    )
    parser.add_argument(
        "--contact-px",
        type=int,
        default=2,
        help="width of the contact targets (where touching objects are cut apart), in pixels",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes painting the synthetic scenes"
    )
    parser.add_argument(
        "--loader-workers",
        type=int,
        default=0,
        help="processes making training batches ahead of the step (for a GPU: the free cores)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the stage checkpoints")
    parser.add_argument(
        "--weights",
        metavar="CKPT",
        help="skip training: package, tune and score these trained weights (a .ckpt the recipe "
        "or geoseg train wrote, on a GPU machine say), and write them without any optimiser "
        "state beside --out (unless CKPT is that file); pass the same --synthetic-scenes and "
        "--seed",
    )
    parser.add_argument(
        "--evaluate", action="store_true", help="score the result on z21 and synthetic scenes"
    )
    parser.add_argument(
        "--score", metavar="MODEL", help="only score this model file (no training); --out unused"
    )
    parser.add_argument(
        "--synthetic-eval", type=int, default=40, help="synthetic scenes to score on"
    )
    parser.add_argument("--report", help="write the summary as JSON here")
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``python -m geoseg.models.recipe``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.out and not args.score:
        parser.error("pass --out to train a model, or --score MODEL to score one")
    if args.score:
        summary = score(Path(args.score), Path(args.data), args)
    else:
        summary = run(args, read_training_image(Path(args.data)))
    text = json.dumps(summary, indent=2, default=float)
    if args.report:
        Path(args.report).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
