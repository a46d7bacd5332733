"""Segment one batch of tiles on a worker: read, infer, cut to cores, save to disk.

This is the unit of parallel work. It takes references (a raster path, tile windows, a model
path) and returns a small report; pixels and masks never travel through the scheduler. The
model is loaded once per worker process and reused for every batch.

torch and the inference step are imported when a batch runs, not with this module: the flow's
process imports it to submit batches and never runs one (torch alone is 180 MB and 2.4 s of
start-up there). Local workers import them before they take work (see ``geoseg.api``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from distributed import get_worker

from geoseg.models.contract import ModelSpec, load_model, select_device
from geoseg.tasks.partials import compact_labels, save_batch
from geoseg.tasks.reading import open_raster, read_tile
from geoseg.tasks.stitch import TilePieces, cut_pieces
from geoseg.tasks.tiling import Tile

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class BatchReport:
    """What a batch produced: its file and which tiles have instances in it."""

    path: Path
    tiles_with_instances: tuple[int, ...]
    tiles_skipped: int
    instances: int


def segment_batch(
    raster_path: str,
    tiles: Sequence[Tile],
    model_path: str,
    score_threshold: float,
    out: Path,
    device: str = "auto",
    torch_threads: int | None = None,
    scale: float = 1.0,
    tta: bool = False,
    batch_size: int | None = None,
) -> BatchReport:
    """Segment ``tiles`` of a raster and save their pieces and label arrays to ``out``.

    The model sees ``batch_size`` tiles at a time (all at once when None); only one model
    batch's pixels are held at a time. Tiles that are entirely nodata are skipped without
    running the model. With ``scale`` (model pixels per raster pixel) other than 1, each tile
    is read resampled to the model's ground resolution and its instances are mapped back onto
    the raster's own pixels, so that pieces, polygons and areas stay on the raster's grid.
    ``tta`` switches on the model's test-time augmentation.
    """
    from geoseg.tasks.inference import configure_torch_threads

    if torch_threads is not None:
        configure_torch_threads(torch_threads)
    torch_device = worker_device(device)
    model, spec = load_model(model_path, torch_device, tta)
    step = batch_size or max(1, len(tiles))
    results: list[tuple[TilePieces, np.ndarray]] = []
    skipped = 0
    with open_raster(raster_path) as src:
        for first in range(0, len(tiles), step):
            chunk = tiles[first : first + step]
            chunk_results, chunk_skipped = _segment_model_batch(
                src, chunk, model, spec, score_threshold, torch_device, scale
            )
            results += chunk_results
            skipped += chunk_skipped
    save_batch(out, results)
    return BatchReport(
        path=out,
        tiles_with_instances=tuple(pieces.tile.index for pieces, _ in results),
        tiles_skipped=skipped,
        instances=sum(len(pieces.class_ids) for pieces, _ in results),
    )


def _segment_model_batch(
    src: rasterio.DatasetReader,
    tiles: Sequence[Tile],
    model: torch.jit.ScriptModule,
    spec: ModelSpec,
    score_threshold: float,
    device: torch.device,
    scale: float,
) -> tuple[list[tuple[TilePieces, np.ndarray]], int]:
    """One model batch: the pieces and label array of each tile with instances; and how many
    tiles were skipped as entirely nodata."""
    from geoseg.tasks.inference import predict_tiles, resize_prediction

    kept, pixels, valid = [], [], []
    for tile in tiles:
        tile_pixels, tile_valid = read_tile(src, tile, spec.bands, model_shape(tile, scale))
        if tile_valid.any():
            kept.append(tile)
            pixels.append(tile_pixels)
            valid.append(tile_valid)
    if not kept:
        return [], len(tiles)
    predictions = predict_tiles(model, spec, pixels, valid, score_threshold, device)
    if scale != 1.0:
        predictions = [
            resize_prediction(prediction, (tile.height, tile.width))
            for tile, prediction in zip(kept, predictions, strict=True)
        ]
    # Compacted at once: a task holds the label arrays of up to 64 tiles until it saves them.
    results = [
        (cut_pieces(tile, prediction), compact_labels(prediction.labels))
        for tile, prediction in zip(kept, predictions, strict=True)
        if len(prediction.class_ids)
    ]
    return results, len(tiles) - len(kept)


def worker_device(preference: str) -> torch.device:
    """This worker's torch device: on a machine with several GPUs, local workers (named 0, 1,
    ...) take one GPU each; others use ``preference`` as it is (one GPU per worker is then set
    with ``CUDA_VISIBLE_DEVICES``)."""
    import torch

    device = select_device(preference)
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if count > 1 and device.index is None:
        try:
            name = get_worker().name
        except ValueError:  # not on a Dask worker
            return device
        if isinstance(name, int):
            return torch.device("cuda", name % count)
    return device


def model_shape(tile: Tile, scale: float) -> tuple[int, int] | None:
    """The (rows, cols) a tile is read at for the model; None for the tile's own size."""
    if scale == 1.0:
        return None
    return max(1, round(tile.height * scale)), max(1, round(tile.width * scale))
