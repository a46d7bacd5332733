"""Run geoseg from Python: the same run as ``geoseg run``, for notebooks and other programs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import dask
from distributed import LocalCluster
from prefect_dask.task_runners import DaskTaskRunner

from geoseg.config import DEFAULT_WORKERS, RunConfig
from geoseg.errors import GeosegError
from geoseg.flows.segment import (
    RunRequest,
    RunResult,
    all_failed,
    failure_of,
    isolates_failures,
    segment_rasters,
)
from geoseg.flows.temporary_server import shared_temporary_server
from geoseg.models.contract import check_tta, cuda_device_count, read_model_spec
from geoseg.models.shipped import default_model_path
from geoseg.tasks.destination import cache_anchor, check_s3_output
from geoseg.tasks.reading import describe_raster
from geoseg.tasks.sources import DEFAULT_STAC_ASSET, expand_inputs
from geoseg.tasks.write import check_output

GPU_BATCHES_IN_FLIGHT = 2
"""Batches a local GPU worker runs at once (see `start_local_cluster`)."""
GLIBC_TRIM_SETTING = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
"""Dask's nannies set ``MALLOC_TRIM_THRESHOLD_`` in their workers, which switches off glibc's
adaptive mmap threshold: every tile-sized array is then mapped, page-faulted and unmapped
afresh, and a batch of tiles costs three times the CPU. Local workers go without it."""


def run(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    tile_size: int | None = None,
    overlap_px: int | None = None,
    batch_size: int = 8,
    workers: int | None = None,
    dask_address: str | None = None,
    score_threshold: float = 0.5,
    min_area_m2: float = 0.0,
    simplify_m: float = 0.0,
    overwrite: bool = False,
    device: str = "auto",
    threads_per_worker: int | None = None,
    keep_cache: bool = False,
    clear_cache: bool = False,
    stac_asset: str = DEFAULT_STAC_ASSET,
    crs: str | None = None,
    fail_fast: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    gsd_m: float | None = None,
    tta: bool = False,
) -> RunResult:
    """Segment rasters into measured objects written to a GeoPackage.

    Parameters are those of ``geoseg run`` (see ``RunConfig``); ``output`` is a local path or
    ``s3://bucket/key.gpkg``. Returns where the output went, the per-source, per-class summary
    (count and total area in m²) and the rasters that failed: with several rasters and no
    ``fail_fast``, a raster that fails is skipped and listed in ``failures`` (and in the
    output's ``failures`` table) instead of raising. A run that crashed or was killed resumes
    when called again with the same arguments: only missing batches are segmented.

    Raises
    ------
    GeosegError
        Bad input (every raster, or the only one, or any with ``fail_fast``), a bad model,
        conflicting options or an unwritable output; nothing is written.
    """
    config = RunConfig(
        inputs=tuple(os.fspath(path) for path in inputs),
        output=os.fspath(output),
        model=None if model is None else os.fspath(model),
        tile_size=tile_size,
        overlap_px=overlap_px,
        batch_size=batch_size,
        workers=workers,
        dask_address=dask_address,
        score_threshold=score_threshold,
        min_area_m2=min_area_m2,
        simplify_m=simplify_m,
        overwrite=overwrite,
        device=device,
        threads_per_worker=threads_per_worker,
        keep_cache=keep_cache,
        clear_cache=clear_cache,
        stac_asset=stac_asset,
        crs=crs,
        fail_fast=fail_fast,
        cache_dir=None if cache_dir is None else Path(cache_dir),
        gsd_m=gsd_m,
        tta=tta,
    )
    return run_config(config)


def run_config(config: RunConfig) -> RunResult:
    """Check a run's inputs, model and output up front, then run the flow on Dask."""
    config = replace(config, inputs=expand_inputs(config.inputs, config.stac_asset))
    spec = read_model_spec(config.model or default_model_path())
    check_tta(spec, config.tta)
    check_rasters(config, spec.bands)
    config.tiling(spec.tile_size, spec.overlap)
    if isinstance(config.output, str):
        check_s3_output(config.output, config.overwrite)
        staging = cache_anchor(config.output, config.cache_dir)
        staging.parent.mkdir(parents=True, exist_ok=True)
        check_output(staging, overwrite=True)
    else:
        check_output(config.output, config.overwrite)
    if config.dask_address is not None:
        return _run_flow(config, DaskTaskRunner(address=config.dask_address))
    config = local_cluster_config(config)
    with ThreadPoolExecutor(1) as pool:
        # The workers start (and import what the tasks need) while the Prefect server starts.
        starting = pool.submit(start_local_cluster, config)
        try:
            with shared_temporary_server(share=True):
                address = starting.result().scheduler_address
                return _run_flow(config, DaskTaskRunner(address=address))
        finally:
            _close(starting)


def _run_flow(config: RunConfig, runner: DaskTaskRunner) -> RunResult:
    flow = segment_rasters.with_options(task_runner=runner)  # type: ignore[arg-type]
    return flow(RunRequest(config=config))


def _close(starting: Future[LocalCluster]) -> None:
    """Close a local cluster once it has started (or failed to)."""
    if starting.exception() is None:
        starting.result().close()


def check_rasters(config: RunConfig, bands: tuple[int, ...]) -> None:
    """Check every raster's header; a bad one stops the run unless others can still be run.

    Raises
    ------
    GeosegError
        The only raster, every raster, or (with ``fail_fast``) any raster is unusable.
    """
    isolate = isolates_failures(config, len(config.inputs))
    failures = []
    for path in config.inputs:
        try:
            describe_raster(path, bands)
        except GeosegError as exc:
            if not isolate:
                raise
            failures.append((failure_of(path, exc), exc))
    if failures and len(failures) == len(config.inputs):
        raise all_failed(failures)


def local_cluster_config(config: RunConfig) -> RunConfig:
    """Size a local cluster: one worker per GPU where CUDA is used, else split the CPU cores."""
    gpus = 0 if config.device == "cpu" else cuda_device_count()
    if gpus:
        workers = config.workers or gpus
        return replace(config, device="cuda", workers=workers, threads_per_worker=1)
    workers = config.workers or DEFAULT_WORKERS
    threads = config.threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
    return replace(config, workers=workers, threads_per_worker=threads)


def start_local_cluster(config: RunConfig) -> LocalCluster:
    """A local cluster of worker processes (sized by `local_cluster_config`) that have already
    imported the flow's tasks and the inference step, so the first batch does not wait for torch
    and rasterio to load.

    Local CUDA workers offer `GPU_BATCHES_IN_FLIGHT` GPU slots and as many threads, so one
    batch's reading and vectorizing overlap another's model time on the same GPU.
    """
    options: dict[str, Any] = {
        "n_workers": config.workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": ":0",
        "preload": [segment_rasters.fn.__module__, "geoseg.tasks.inference"],
    }
    if config.device == "cuda":
        options["threads_per_worker"] = GPU_BATCHES_IN_FLIGHT
        options["resources"] = {"GPU": GPU_BATCHES_IN_FLIGHT}
    with dask.config.set({GLIBC_TRIM_SETTING: None}):
        return LocalCluster(**options)  # type: ignore[no-untyped-call]
