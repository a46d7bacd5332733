"""The main flow: rasters in, measured objects in one GeoPackage out.

Only orchestration lives here. Batches of tiles run as Prefect tasks on the flow's task runner
(Dask workers); each writes its results to a batch file next to the output and returns a small
report. Stitching, georeferencing and writing then run raster by raster in the flow's process.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from pyproj import CRS

import geoseg
from geoseg.config import RunConfig
from geoseg.errors import GeosegError
from geoseg.models.contract import ModelSpec, read_model_spec
from geoseg.models.greenery import default_model_path
from geoseg.tasks.batch import BatchReport, segment_batch
from geoseg.tasks.georeference import georeference_objects
from geoseg.tasks.measure import area_method
from geoseg.tasks.partials import stitch_saved
from geoseg.tasks.reading import RasterInfo, describe_raster
from geoseg.tasks.tiling import Tile, plan_tiles
from geoseg.tasks.write import GeoPackageWriter, SummaryRow

MASK_THRESHOLD = 0.5


@dataclass(frozen=True)
class RunResult:
    """Where a run's output went and what it holds."""

    output: Path
    summary: tuple[SummaryRow, ...]
    objects: int


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
    task_run_name="segment {out.stem}",
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


@contextmanager
def work_folder(output: Path) -> Iterator[Path]:
    """A hidden folder beside the output for batch files, removed when the run ends."""
    folder = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".work", dir=output.parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_record(
    config: RunConfig,
    spec: ModelSpec,
    tiling: tuple[int, int],
    crs: CRS,
    started: datetime,
) -> dict[str, str | int | float | None]:
    """The row of the output's ``run`` table: enough to know how every object was made."""
    return {
        "geoseg_version": geoseg.__version__,
        "model_name": spec.name,
        "model_path": spec.path,
        "model_sha256": spec.sha256,
        "sources": "\n".join(config.inputs),
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
        "flow_run_id": str(runtime.flow_run.id),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def submit_raster(
    number: int,
    raster: RasterInfo,
    tiles: tuple[Tile, ...],
    model_path: str,
    config: RunConfig,
    work: Path,
) -> list[Any]:
    """Submit a raster's batches to the task runner; futures of ``BatchReport``."""
    stem = f"{number:04d}-{Path(raster.path).stem}"
    return [
        segment.submit(
            raster.path,
            batch,
            model_path,
            config.score_threshold,
            work / f"{stem}-{index:06d}.npz",
            config.device,
            config.threads_per_worker,
        )
        for index, batch in enumerate(batches(tiles, config.batch_size))
    ]


@flow(name="geoseg-run", validate_parameters=False)
def segment_rasters(config: RunConfig) -> RunResult:
    """Segment every input raster and write its measured objects to one GeoPackage.

    The output CRS is the first raster's; objects of rasters in other CRSs are measured in their
    own CRS, then reprojected.
    """
    started = datetime.now(UTC)
    model_path = config.model or str(default_model_path())
    spec = read_model_spec(model_path)
    rasters = [inspect_raster(path, spec.bands) for path in config.inputs]
    tiling = config.tiling(spec.tile_size, spec.overlap)
    output_crs = CRS.from_wkt(rasters[0].crs_wkt)
    class_names = [spec.classes[key] for key in sorted(spec.classes)]
    objects = 0
    with (
        GeoPackageWriter(config.output, output_crs.to_wkt(), class_names, config.overwrite) as out,
        work_folder(config.output) as work,
    ):
        plans = [plan_tiles(r.width, r.height, *tiling) for r in rasters]
        futures = [
            submit_raster(number, raster, plan, model_path, config, work)
            for number, (raster, plan) in enumerate(zip(rasters, plans, strict=True))
        ]
        for raster, plan, pending in zip(rasters, plans, futures, strict=True):
            out.add_source(raster.path)
            reports: list[BatchReport] = [future.result() for future in pending]
            stitched = stitch(plan, [report.path for report in reports])
            rows = georeference(
                stitched, raster, spec.classes, output_crs, config.simplify_m, config.min_area_m2
            )
            out.add(rows)
            objects += len(rows.object_id)
        summary = out.finish(run_record(config, spec, tiling, output_crs, started))
    return RunResult(output=config.output, summary=tuple(summary), objects=objects)
