"""The main flow: rasters in, measured objects in one GeoPackage out.

Only orchestration lives here. Batches of tiles run as Prefect tasks on the flow's task runner
(Dask workers); each writes its results to a batch file next to the output and returns a small
report. Stitching, georeferencing and writing then run raster by raster in the flow's process.
With several rasters, one that fails (unreadable, no CRS, a read error mid-run) is recorded in
the output's ``failures`` table and the others are still written, unless ``fail_fast``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dask.base import annotate
from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.futures import PrefectFuture
from pydantic import BaseModel, ConfigDict, model_serializer
from pyproj import CRS

import geoseg
from geoseg import progress, stopping
from geoseg.config import RunConfig, run_file_document
from geoseg.errors import GeosegError, RasterError, RemoteReadError
from geoseg.models.contract import MASK_THRESHOLD, ModelSpec, read_model_spec
from geoseg.models.shipped import default_model_path
from geoseg.tasks.batch import BatchReport, segment_batch
from geoseg.tasks.cache import batch_folder, clear_cache
from geoseg.tasks.destination import cache_anchor, upload_output
from geoseg.tasks.georeference import georeference_objects
from geoseg.tasks.measure import area_method, model_scale
from geoseg.tasks.partials import stitch_saved
from geoseg.tasks.reading import RasterInfo, describe_raster, first_line
from geoseg.tasks.sources import expand_inputs, redact, source_name
from geoseg.tasks.tiling import Tile, plan_tiles
from geoseg.tasks.write import GeoPackageWriter, RasterFailure, SummaryRow


@dataclass(frozen=True)
class RunResult:
    """Where a run's output went, what it holds, how many batches were reused, what failed.

    ``output`` is a local path, or the ``s3://`` URI the GeoPackage was uploaded to.
    ``failures`` lists the rasters skipped (only with several rasters and no ``fail_fast``).
    """

    output: Path | str
    summary: tuple[SummaryRow, ...]
    objects: int
    batches: int
    batches_reused: int
    failures: tuple[RasterFailure, ...] = ()


class RunRequest(BaseModel):
    """The flow's one parameter: a run's configuration, recorded by Prefect without secrets.

    Prefect stores a flow run's parameters in its database and shows them in its UI. This
    wrapper is recorded as the run file that repeats the run (inputs and output redacted, see
    ``run_file_document``), while the flow itself uses the configuration as given.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    config: RunConfig

    @model_serializer
    def _recorded(self) -> dict[str, object]:
        return run_file_document(self.config)


def is_transient(task: Any, task_run: TaskRun, state: State[Any]) -> bool:
    """Retry failures of I/O, remote reads and workers, never bad input: that fails again."""
    try:
        state.result()
    except RemoteReadError:
        return True
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
    retry_delay_seconds=[1, 4],
    retry_condition_fn=is_transient,
    cache_policy=NO_CACHE,
)(segment_batch)
stitch = task(name="stitch", cache_policy=NO_CACHE)(stitch_saved)
georeference = task(name="georeference", cache_policy=NO_CACHE)(georeference_objects)


MAX_BATCHES_PER_TASK = 8
MIN_TASKS = 16
TAIL_SHARE = 4


def batches(tiles: Sequence[Tile], batch_size: int) -> list[tuple[Tile, ...]]:
    """The tiles of each batch task, in plan order.

    A task runs whole model batches of ``batch_size`` tiles: one on small rasters, and on a
    raster of more than `MIN_TASKS` model batches up to `MAX_BATCHES_PER_TASK` of them, as many
    as keep at least `MIN_TASKS` tasks to spread over the workers. Each task costs the flow
    about 0.15 s (Prefect serialises its settings with every submit to Dask), which would
    otherwise be 20 ms per tile. Tasks shrink towards the end of the plan, to a `TAIL_SHARE`
    of the model batches left, down to one: the workers then finish together instead of one
    waiting on the other's last big task. The grouping depends only on the tile count and
    ``batch_size``, so a resumed run finds the batch files it wrote before.
    """
    model_batches = -(-len(tiles) // batch_size)
    largest = min(MAX_BATCHES_PER_TASK, model_batches // MIN_TASKS)
    groups, start = [], 0
    while start < model_batches:
        take = max(1, min(largest, (model_batches - start) // TAIL_SHARE))
        groups.append(tuple(tiles[start * batch_size : (start + take) * batch_size]))
        start += take
    return groups


def isolates_failures(config: RunConfig, rasters: int) -> bool:
    """Whether a failing raster is recorded and skipped rather than failing the run."""
    return rasters > 1 and not config.fail_fast


def failure_of(source: str, exc: BaseException) -> RasterFailure:
    """A failed raster's record: its source and a one-line reason, credentials redacted."""
    reason = first_line(exc)
    if not isinstance(exc, GeosegError):
        reason = f"{source_name(source)}: {type(exc).__name__}: {reason}"
    return RasterFailure(source=redact(source), reason=redact(reason))


def all_failed(failures: Sequence[tuple[RasterFailure, BaseException]]) -> BaseException:
    """The error of a run whose every raster failed: bad input, or the first bug if one was."""
    for _, exc in failures:
        if not isinstance(exc, GeosegError):
            return exc
    more = f" (and {len(failures) - 1} more failed rasters)" if len(failures) > 1 else ""
    return RasterError(f"no raster could be segmented: {failures[0][0].reason}{more}")


def run_name() -> str:
    """The flow run's name: ``geoseg <first raster's file name> (+N more rasters)``."""
    request = runtime.flow_run.parameters.get("request")
    inputs = request.config.inputs if isinstance(request, RunRequest) else ()
    if not inputs:
        return "geoseg"
    more = f" (+{len(inputs) - 1})" if len(inputs) > 1 else ""
    return redact(f"geoseg {source_name(inputs[0])}{more}")


def run_record(
    config: RunConfig,
    spec: ModelSpec,
    tiling: tuple[int, int],
    crs: CRS,
    started: datetime,
    batches: tuple[int, int],
    sources: Sequence[str],
    failed: int,
) -> dict[str, str | int | float | None]:
    """The row of the output's ``run`` table: enough to know how every object was made."""
    return {
        "geoseg_version": geoseg.__version__,
        "model_name": spec.name,
        "model_path": spec.path,
        "model_sha256": spec.sha256,
        "sources": "\n".join(map(redact, sources)),
        "rasters_failed": failed,
        "tile_size": tiling[0],
        "overlap_px": tiling[1],
        "gsd_m": config.gsd_m or spec.gsd_m,
        "tta": int(config.tta),
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


def batch_resources(device: str) -> dict[str, float]:
    """Dask resources of a batch task: one GPU slot when the run asks for CUDA, else none.

    Workers that offer ``GPU`` slots (``dask worker --resources GPU=2``) then get every batch,
    and CPU-only workers in the same cluster none.
    """
    return {"GPU": 1} if device == "cuda" else {}


@dataclass(frozen=True)
class RasterPlan:
    """How a run tiles one raster.

    ``gsd_m`` is the ground resolution the model runs at (``--gsd``, else the model's; None:
    any), ``scale`` model pixels per raster pixel (1.0: tiles read as they are), ``tiling`` the
    tile size and overlap in raster pixels, ``tiles`` the plan.
    """

    gsd_m: float | None
    scale: float
    tiling: tuple[int, int]
    tiles: tuple[Tile, ...]


def plan_raster(config: RunConfig, spec: ModelSpec, raster: RasterInfo) -> RasterPlan:
    """Plan a raster's tiles as the run does: at the model's ground resolution (or ``--gsd``),
    with the options' tiling, else the model's, else the defaults.

    ``geoseg inspect`` plans with this too, so it shows exactly the tiles a run would make.
    """
    gsd_m = config.gsd_m or spec.gsd_m
    scale = model_scale(raster, gsd_m)
    tiling = config.tiling(spec.tile_size, spec.overlap, scale)
    return RasterPlan(gsd_m, scale, tiling, plan_tiles(raster.width, raster.height, *tiling))


def submit_raster(
    raster: RasterInfo,
    tiles: tuple[Tile, ...],
    folder: Path,
    model_path: str,
    config: RunConfig,
    scale: float,
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
            with annotate(resources=batch_resources(config.device)):
                future = segment.submit(
                    raster.path,
                    batch,
                    model_path,
                    config.score_threshold,
                    path,
                    config.device,
                    config.threads_per_worker,
                    scale,
                    config.tta,
                    config.batch_size,
                )
        progress.batch_submitted(path, batch, future)
        pending.append((path, future))
    return pending


@flow(name="geoseg-run", validate_parameters=False, flow_run_name=run_name)
def segment_rasters(request: RunRequest) -> RunResult:
    """Segment every input raster and write its measured objects to one GeoPackage.

    The output CRS is the first raster's; objects of rasters in other CRSs are measured in their
    own CRS, then reprojected. Batch results are kept beside the output until the run succeeds,
    so running the same command again after a crash redoes only the missing batches. With
    several rasters and no ``fail_fast``, a raster that fails is recorded and skipped; the batch
    results are then kept too, so a second run redoes only what failed.
    """
    stopping.reclaim_sigterm()
    config = request.config
    model_path = config.model or str(default_model_path())
    spec = read_model_spec(model_path)
    sources = expand_inputs(config.inputs, config.stac_asset)
    isolate = isolates_failures(config, len(sources))
    rasters: list[RasterInfo] = []
    failures: list[tuple[RasterFailure, BaseException]] = []
    for path in sources:
        try:
            rasters.append(inspect_raster(path, spec.bands))
        except GeosegError as exc:
            if not isolate:
                raise
            failures.append((failure_of(path, exc), exc))
            get_run_logger().warning("skipped %s", failures[-1][0].reason)
    if not rasters:
        raise all_failed(failures)
    anchor = cache_anchor(config.output, config.cache_dir)
    anchor.parent.mkdir(parents=True, exist_ok=True)
    if config.clear_cache:
        clear_cache(anchor)
    try:
        summary, objects, counts = segment_into(
            config, spec, model_path, rasters, anchor, failures, isolate
        )
    except GeosegError:
        clear_cache(anchor)  # bad input fails again the same way: nothing to resume
        raise
    if isinstance(config.output, str):
        upload_output(anchor, config.output, config.overwrite)
        anchor.unlink()
    if not config.keep_cache and not failures:
        clear_cache(anchor)
        if anchor != config.output and not any(anchor.parent.iterdir()):
            anchor.parent.rmdir()
    result = RunResult(
        output=config.output,
        summary=tuple(summary),
        objects=objects,
        batches=counts[0],
        batches_reused=counts[1],
        failures=tuple(failure for failure, _ in failures),
    )
    report(result)
    return result


def segment_into(
    config: RunConfig,
    spec: ModelSpec,
    model_path: str,
    rasters: Sequence[RasterInfo],
    anchor: Path,
    failures: list[tuple[RasterFailure, BaseException]],
    isolate: bool,
) -> tuple[list[SummaryRow], int, tuple[int, int]]:
    """Segment the rasters into the output; the summary, object count and batches (all, reused).

    Batch files live in ``anchor``'s cache folder; an S3 output is written to ``anchor`` (its
    staging copy). Rasters that fail are appended to ``failures`` when ``isolate``; else their
    error is raised.
    """
    started = datetime.now(UTC)
    output_crs = CRS.from_user_input(config.crs or rasters[0].crs_wkt)
    class_names = [spec.classes[key] for key in sorted(spec.classes)]
    target, overwrite = anchor, True  # a stale staging copy of an S3 output is replaced
    if isinstance(config.output, Path):
        target, overwrite = config.output, config.overwrite
    objects = 0
    segmented: list[str] = []
    planned = [plan_raster(config, spec, raster) for raster in rasters]
    plans = [raster_plan.tiles for raster_plan in planned]
    with GeoPackageWriter(target, output_crs.to_wkt(), class_names, overwrite) as out:
        progress.run_planned(plans)
        submitted = [
            submit_raster(
                raster,
                raster_plan.tiles,
                batch_folder(
                    anchor,
                    raster,
                    spec.sha256,
                    raster_plan.tiling,
                    config.batch_size,
                    config.score_threshold,
                    raster_plan.scale,
                    config.tta,
                ),
                model_path,
                config,
                raster_plan.scale,
            )
            for raster, raster_plan in zip(rasters, planned, strict=True)
        ]
        for raster, plan, pending in zip(rasters, plans, submitted, strict=True):
            try:
                # Stitching waits for each batch as it reaches its tiles, following the workers.
                stitched = stitch(plan, [path for path, _ in pending], waiter(pending))
                progress.batches_waited(path for path, _ in pending)
                rows = georeference(
                    stitched,
                    raster,
                    spec.classes,
                    output_crs,
                    config.simplify_m,
                    config.min_area_m2,
                )
            except Exception as exc:
                if not isolate:
                    raise
                settle(pending)  # the batches that succeed are kept for the next run
                failures.append((failure_of(raster.path, exc), exc))
                get_run_logger().warning("skipped %s", failures[-1][0].reason)
                continue
            out.add_source(redact(raster.path))
            out.add(rows)
            objects += len(rows.object_id)
            segmented.append(raster.path)
        if not segmented:
            raise all_failed(failures)
        counts = (
            sum(len(p) for p in submitted),
            sum(future is None for p in submitted for _, future in p),
        )
        record = run_record(
            config, spec, planned[0].tiling, output_crs, started, counts, segmented, len(failures)
        )
        summary = out.finish(record, [failure for failure, _ in failures])
    return summary, objects, counts


def waiter(
    pending: Sequence[tuple[Path, PrefectFuture[BatchReport] | None]],
) -> Callable[[Path], None]:
    """A wait for the batch that writes a file, raising its failure; no wait for a file an
    earlier, interrupted run wrote."""
    futures = dict(pending)

    def ready(path: Path) -> None:
        future = futures[path]
        if future is not None:
            future.result()

    return ready


def settle(pending: Sequence[tuple[Path, PrefectFuture[BatchReport] | None]]) -> None:
    """Wait for every batch of a raster that failed, whatever their outcome."""
    for _, future in pending:
        if future is not None:
            future.wait()


def report(result: RunResult) -> None:
    """Prefect artifacts of a run: objects and area per source and class, and the output."""
    create_table_artifact(
        key="geoseg-objects",
        table=[
            {
                "source": source_name(row.source),
                "class": row.class_name,
                "objects": row.count,
                "total_area_m2": round(row.total_area_m2, 2),
            }
            for row in result.summary
        ],
        description="Objects and total ground area (m²) per source raster and class",
    )
    lines = [
        f"**Output**: `{redact(str(result.output))}`",
        "",
        f"{result.objects} objects from {len({row.source for row in result.summary})} raster(s); "
        f"{result.batches_reused} of {result.batches} batches reused.",
    ]
    if result.failures:
        lines += ["", f"**{len(result.failures)} raster(s) failed** and were skipped:", ""]
        lines += [f"- `{failure.source}`: {failure.reason}" for failure in result.failures]
    create_markdown_artifact(
        key="geoseg-output", markdown="\n".join(lines), description="Where the objects went"
    )
