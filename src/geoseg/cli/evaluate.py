"""``geoseg evaluate``: score a model against labelled images."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from geoseg.cli.console import count_progress, say
from geoseg.cli.options import coco_options, label_class_options


@click.command("evaluate")
@click.option("--model", help="Model file (default: the built-in model).")
@coco_options
@click.option("--raster", type=click.Path(path_type=Path), help="Georeferenced raster.")
@click.option(
    "--labels", type=click.Path(path_type=Path), help="Ground-truth polygons for --raster."
)
@label_class_options
@click.option(
    "--min-area-m2",
    type=float,
    default=2.0,
    show_default=True,
    help="Ignore ground truth covering less inside the raster.",
)
@click.option(
    "--score-threshold",
    type=float,
    default=0.5,
    show_default=True,
    help="For precision, recall, F1 and areas.",
)
@click.option("--tile-size", type=int, help="Tile size in pixels (default: the model's).")
@click.option("--overlap", type=int, help="Tile overlap in pixels (default: the model's).")
@click.option("--threads", type=int, help="Torch threads.")
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option("--tta", is_flag=True, help="Test-time augmentation (flips, rotations; 8x slower).")
@click.option(
    "--gsd",
    type=click.FloatRange(min=0, min_open=True),
    help="Run the model at this ground resolution (m/pixel) instead of its own.",
)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), help="Also write the report as JSON."
)
def evaluate_command(
    model: str | None,
    coco: Path | None,
    images_dir: Path | None,
    raster: Path | None,
    labels: Path | None,
    class_column: str | None,
    class_name: str,
    min_area_m2: float,
    score_threshold: float,
    tile_size: int | None,
    overlap: int | None,
    threads: int | None,
    device: str,
    tta: bool,
    gsd: float | None,
    json_path: Path | None,
) -> None:
    """Print per-class COCO mask AP and AP50, precision, recall, F1 at IoU 0.5 and area error."""
    from geoseg.models.contract import load_model, select_device
    from geoseg.models.evaluation import (
        InstanceSet,
        evaluate_instances,
        format_table,
        predict_image,
    )
    from geoseg.models.labels import load_labelled
    from geoseg.models.shipped import default_model_path
    from geoseg.tasks.inference import configure_torch_threads

    if threads is not None:
        configure_torch_threads(threads)
    torch_device = select_device(device)
    net, spec = load_model(model or default_model_path(), torch_device, tta)
    if gsd is not None:
        spec = replace(spec, gsd_m=gsd)
    images = load_labelled(
        spec.classes,
        coco=coco,
        images_dir=images_dir,
        raster=raster,
        labels=labels,
        class_column=class_column,
        class_name=class_name,
        min_area_m2=min_area_m2,
        bands=spec.bands,
    )
    truth, predictions = [], []
    with count_progress("evaluating", len(images)) as step:
        for image in images:
            predicted = predict_image(
                net,
                spec,
                image.image,
                image.valid,
                tile_size,
                overlap,
                torch_device,
                gsd_m=image.gsd_m,
            )
            truth.append(InstanceSet(image.instances, image.classes))
            predictions.append(predicted)
            step()
    gsd = images[0].gsd_m if len(images) == 1 else None
    report = evaluate_instances(
        truth, predictions, spec.classes, score_threshold, None if gsd is None else gsd * gsd
    )
    report["model"] = spec.name
    report["model_sha256"] = spec.sha256
    say(format_table(report))
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2))
        say(f"Wrote {json_path}")
