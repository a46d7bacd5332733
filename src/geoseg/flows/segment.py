"""The main flow: rasters in, measured objects in one GeoPackage out.

Only orchestration lives here. Batches of tiles run as Prefect tasks on the flow's task runner
(Dask workers); each writes its results to a batch file next to the output and returns a small
report. Stitching, georeferencing and writing then run raster by raster in the flow's process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.futures import PrefectFuture
from pyproj import CRS

import geoseg
from geoseg.config import RunConfig, run_file_document
from geoseg.errors import GeosegError
from geoseg.models.contract import ModelSpec, read_model_spec
from geoseg.models.greenery import default_model_path
from geoseg.tasks.batch import BatchReport, segment_batch
from geoseg.tasks.cache import batch_folder, clear_cache
from geoseg.tasks.georeference import georeference_objects
from geoseg.tasks.inference import MASK_THRESHOLD
from geoseg.tasks.measure import area_method
from geoseg.tasks.partials import stitch_saved
from geoseg.tasks.reading import RasterInfo, describe_raster
from geoseg.tasks.sources import expand_inputs, redact
from geoseg.tasks.tiling import Tile, plan_tiles
from geoseg.tasks.write import GeoPackageWriter, SummaryRow


@dataclass(frozen=True)
class RunResult:
    """Where a run's output went, what it holds, and how many batches were reused."""

    output: Path
    summary: tuple[SummaryRow, ...]
    objects: int
    batches: int
    batches_reused: int


def is_transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Retry failures of I/O and workers, never bad input: that fails the same way again."""
    try:
        state.result()
    except GeosegError:
        return False
    except Exception:
        return True
    return True


inspect_raster = task(name="inspect-raster", cache_policy=NO_CACHE)(describe_raster)
segment = task(
    name="segment-batch",
    task_run_name="segment {out.parent.name}/{out.stem}",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=is_transient,
    cache_policy=NO_CACHE,
)(segment_batch)
stitch = task(name="stitch", cache_policy=NO_CACHE)(stitch_saved)
georeference = task(name="georeference", cache_policy=NO_CACHE)(georeference_objects)


def batches(tiles: Sequence[Tile], size: int) -> list[tuple[Tile, ...]]:
    """Consecutive groups of ``size`` tiles (the last may be shorter)."""
    return [tuple(tiles[i : i + size]) for i in range(0, len(tiles), size)]


def run_record(
    config: RunConfig,
    spec: ModelSpec,
    tiling: tuple[int, int],
    crs: CRS,
    started: datetime,
    batches: tuple[int, int],
    sources: Sequence[str],
) -> dict[str, str | int | float | None]:
    """The row of the output's ``run`` table: enough to know how every object was made."""
    return {
        "geoseg_version": geoseg.__version__,
        "model_name": spec.name,
        "model_path": spec.path,
        "model_sha256": spec.sha256,
        "sources": "\n".join(map(redact, sources)),
        "tile_size": tiling[0],
        "overlap_px": tiling[1],
        "batch_size": config.batch_size,
        "score_threshold": config.score_threshold,
        "mask_threshold": MASK_THRESHOLD,
        "min_area_m2": config.min_area_m2,
        "simplify_m": config.simplify_m,
        "area_method": area_method(crs),
        "output_crs": crs.to_string(),
        "dask_address": config.dask_address,
        "workers": config.workers,
        "device": config.device,
        "batches": batches[0],
        "batches_reused": batches[1],
        "flow_run_id": str(runtime.flow_run.id),
        "config": json.dumps(run_file_document(config)),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def submit_raster(
    raster: RasterInfo, tiles: tuple[Tile, ...], folder: Path, model_path: str, config: RunConfig
) -> list[tuple[Path, PrefectFuture[BatchReport] | None]]:
    """Submit the batches of a raster that have no result file yet.

    Returns each batch's file with the future that will write it, or None when an earlier,
    interrupted run already wrote it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pending = []
    for index, batch in enumerate(batches(tiles, config.batch_size)):
        path = folder / f"batch-{index:06d}.npz"
        future = None
        if not path.exists():
            future = segment.submit(
                raster.path,
                batch,
                model_path,
                config.score_threshold,
                path,
                config.device,
                config.threads_per_worker,
            )
        pending.append((path, future))
    return pending


@flow(name="geoseg-run", validate_parameters=False)
def segment_rasters(config: RunConfig) -> RunResult:
    """Segment every input raster and write its measured objects to one GeoPackage.

    The output CRS is the first raster's; objects of rasters in other CRSs are measured in their
    own CRS, then reprojected. Batch results are kept beside the output until the run succeeds,
    so running the same command again after a crash redoes only the missing batches.
    """
    model_path = config.model or str(default_model_path())
    spec = read_model_spec(model_path)
    sources = expand_inputs(config.inputs, config.stac_asset)
    rasters = [inspect_raster(path, spec.bands) for path in sources]
    tiling = config.tiling(spec.tile_size, spec.overlap)
    if config.clear_cache:
        clear_cache(config.output)
    try:
        summary, objects, counts = segment_into(config, spec, model_path, rasters, tiling)
    except GeosegError:
        clear_cache(config.output)  # bad input fails again the same way: nothing to resume
        raise
    if not config.keep_cache:
        clear_cache(config.output)
    return RunResult(
        output=config.output,
        summary=tuple(summary),
        objects=objects,
        batches=counts[0],
        batches_reused=counts[1],
    )


def segment_into(
    config: RunConfig,
    spec: ModelSpec,
    model_path: str,
    rasters: Sequence[RasterInfo],
    tiling: tuple[int, int],
) -> tuple[list[SummaryRow], int, tuple[int, int]]:
    """Segment the rasters into the output; the summary, object count and batches (all, reused)."""
    started = datetime.now(UTC)
    output_crs = CRS.from_user_input(config.crs or rasters[0].crs_wkt)
    class_names = [spec.classes[key] for key in sorted(spec.classes)]
    objects = 0
    with GeoPackageWriter(config.output, output_crs.to_wkt(), class_names, config.overwrite) as out:
        plans = [plan_tiles(r.width, r.height, *tiling) for r in rasters]
        submitted = [
            submit_raster(
                raster,
                plan,
                batch_folder(
                    config.output,
                    raster,
                    spec.sha256,
                    tiling,
                    config.batch_size,
                    config.score_threshold,
                ),
                model_path,
                config,
            )
            for raster, plan in zip(rasters, plans, strict=True)
        ]
        for raster, plan, pending in zip(rasters, plans, submitted, strict=True):
            out.add_source(redact(raster.path))
            for _, future in pending:
                if future is not None:
                    future.result()
            stitched = stitch(plan, [path for path, _ in pending])
            rows = georeference(
                stitched, raster, spec.classes, output_crs, config.simplify_m, config.min_area_m2
            )
            out.add(rows)
            objects += len(rows.object_id)
        counts = (
            sum(len(p) for p in submitted),
            sum(future is None for p in submitted for _, future in p),
        )
        summary = out.finish(
            run_record(config, spec, tiling, output_crs, started, counts, [r.path for r in rasters])
        )
    return summary, objects, counts
