"""``geoseg inspect``: what ``geoseg run`` would see in a raster, and how it would tile it."""

from __future__ import annotations

import heapq
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from geoseg.config import DEFAULT_WORKERS, RunConfig
from geoseg.tasks.tiling import RESAMPLING_TOLERANCE

if TYPE_CHECKING:
    from geoseg.flows.segment import RasterPlan
    from geoseg.tasks.tiling import Tile

STARTUP_S = 18.0
"""Fixed cost of a local run, in seconds: the temporary Prefect server and the local Dask cluster
starting, and shutting down; one-batch runs took 16-20 s on a 2-core machine (README,
Performance)."""

MASK_SAMPLE_PX = 256
"""Most pixels across at which a tile's nodata mask is read: enough to find the tiles that are
entirely nodata while time and memory stay bounded on huge rasters (GDAL reads the mask's
overviews when the raster has them)."""


@dataclass(frozen=True)
class Estimate:
    """How long ``geoseg run`` would take on a local cluster, from one tile timed here.

    Attributes
    ----------
    seconds : float
        The whole run, start-up included.
    seconds_per_tile : float
        Reading one tile and running the model on it, per tile of a batch.
    tiles, batches : int
        Tiles the model runs on (nodata tiles left out), and batch tasks holding at least one.
    batch_size, task_tiles, workers, threads : int
        Tiles per model batch, most tiles of a batch task (whole model batches, see
        `geoseg.flows.segment.batches`), local workers, and torch threads per worker.
    device : str
        Where the model ran: ``cpu`` or ``cuda``.
    timed_tile : int or None
        Index of the tile timed; None when every tile is nodata and nothing was timed.
    """

    seconds: float
    seconds_per_tile: float
    tiles: int
    batches: int
    batch_size: int
    task_tiles: int
    workers: int
    threads: int
    device: str
    timed_tile: int | None


@dataclass(frozen=True)
class RasterReport:
    """What ``geoseg inspect`` prints about a raster and its tiling.

    Attributes
    ----------
    path : str
        The raster, as given.
    width, height, count : int
        Size in pixels and number of bands.
    dtypes : tuple of str
        Distinct band data types, in band order.
    crs : str
        ``AUTHORITY:CODE (name)``, or the CRS's name when it has no code.
    crs_unit : str
        Unit of the CRS's first axis (``metre``, ``degree``, ``US survey foot``, ...).
    resolution : tuple of float
        Pixel width and height in CRS units, both positive.
    pixel_size_m : float
        Ground size of one pixel at the raster's centre, in metres.
    bounds : tuple of float
        ``(left, bottom, right, top)`` in CRS units.
    nodata : str
        How invalid pixels are marked: a nodata value, a mask, alpha, or none.
    model : str
        The model's name, the bands it reads and its classes.
    tile_size, overlap_px : int
        Tiling in pixels.
    tiling_from : str
        Where the tile size and overlap come from (options, model or defaults).
    tiles, tile_cols, tile_rows : int
        Number of tiles, and of tile columns and rows.
    gsd_m : float or None
        Ground resolution the model runs at (``--gsd``, else the model's), metres per pixel.
    gsd_from_option : bool
        Whether ``gsd_m`` comes from ``--gsd``.
    model_gsd_m : float or None
        The model's own ground resolution.
    scale : float
        Model pixels per raster pixel: 1.0 when tiles are read as they are.
    empty_tiles : int
        Tiles entirely nodata, which the run skips without running the model.
    empty_exact : bool
        Whether ``empty_tiles`` is exact (masks read at the run's own resolution).
    estimate : Estimate or None
        The estimated run time; None with ``--no-estimate``.
    """

    path: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: str
    crs_unit: str
    resolution: tuple[float, float]
    pixel_size_m: float
    bounds: tuple[float, float, float, float]
    nodata: str
    model: str
    tile_size: int
    overlap_px: int
    tiling_from: str
    tiles: int
    tile_cols: int
    tile_rows: int
    gsd_m: float | None
    gsd_from_option: bool
    model_gsd_m: float | None
    scale: float
    empty_tiles: int
    empty_exact: bool
    estimate: Estimate | None


def format_report(report: RasterReport) -> str:
    """The report as aligned lines for the terminal, ending with a newline."""
    xres, yres = report.resolution
    left, bottom, right, top = report.bounds
    lines = {
        "size": (
            f"{report.width} x {report.height} px, {report.count} band(s), "
            f"{', '.join(report.dtypes)}"
        ),
        "crs": report.crs,
        "resolution": (
            f"{_number(xres)} x {_number(yres)} {report.crs_unit} (CRS units); "
            f"{report.pixel_size_m:.3f} m on the ground at the centre"
        ),
        "bounds": (
            f"{_number(left)}, {_number(bottom)}, {_number(right)}, {_number(top)} "
            "(left, bottom, right, top)"
        ),
        "nodata": report.nodata,
        "model": report.model,
        "gsd": describe_gsd(
            report.gsd_m,
            report.gsd_from_option,
            report.model_gsd_m,
            report.scale,
            report.tile_size,
        ),
        "tiling": (
            f"{report.tile_size} px tiles, {report.overlap_px} px overlap: {report.tiles} "
            f"tile(s), {report.tile_cols} column(s) x {report.tile_rows} row(s) "
            f"({report.tiling_from})"
        ),
        "skipped": describe_skipped(report.empty_tiles, report.tiles, report.empty_exact),
    }
    if report.estimate is not None:
        lines.update(describe_estimate(report.estimate))
    width = max(map(len, lines))
    return report.path + "\n" + "".join(f"  {k.ljust(width)}  {v}\n" for k, v in lines.items())


def _number(value: float) -> str:
    """A coordinate or resolution to 9 decimals without trailing zeros: 2679062.5, 0.00001."""
    return f"{value:.9f}".rstrip("0").rstrip(".")


def tiling_origin(
    tile_size: int | None,
    overlap: int | None,
    model_tile_size: int | None,
    model_overlap: int | None,
) -> str:
    """Say where the tile size and the overlap come from: an option, the model, or the default.

    >>> tiling_origin(256, None, 512, None)
    'tile size from --tile-size, overlap default'
    >>> tiling_origin(None, None, 512, 64)
    'tile size and overlap from the model'
    """

    def origin(option: int | None, name: str, recommended: int | None) -> str:
        if option is not None:
            return f"from --{name}"
        return "from the model" if recommended is not None else "default"

    size = origin(tile_size, "tile-size", model_tile_size)
    overlap_origin = origin(overlap, "overlap", model_overlap)
    if size == overlap_origin:
        return f"tile size and overlap {size}"
    return f"tile size {size}, overlap {overlap_origin}"


def describe_gsd(
    gsd_m: float | None,
    from_option: bool,
    model_gsd_m: float | None,
    scale: float,
    tile_size: int,
) -> str:
    """Say at which ground resolution the model reads the tiles, and how they are resampled.

    >>> describe_gsd(0.15, False, 0.15, 0.5, 1024)
    "0.15 m (the model's): read at 0.15 m: 1024 px raster tiles resampled to 512 px"
    """
    if gsd_m is None:
        return "any (the model declares none): tiles read as they are"
    own = f"{_number(model_gsd_m)} m" if model_gsd_m is not None else "none"
    origin = f"from --gsd; the model's own: {own}" if from_option else "the model's"
    if scale == 1.0:
        how = f"the raster is within {RESAMPLING_TOLERANCE:.0%} of it: tiles read as they are"
    else:
        model_px = max(1, round(tile_size * scale))
        how = f"read at {_number(gsd_m)} m: {tile_size} px raster tiles resampled to {model_px} px"
    return f"{_number(gsd_m)} m ({origin}): {how}"


def describe_skipped(empty: int, tiles: int, exact: bool) -> str:
    """Say how many tiles the run skips as entirely nodata, and whether the count is exact."""
    count = f"{empty} of {tiles}" if exact else f"about {empty} of {tiles}"
    how = "exact" if exact else f"approximate: masks read at most {MASK_SAMPLE_PX} px across"
    return f"{count} tile(s) entirely nodata, skipped without running the model ({how})"


def describe_estimate(estimate: Estimate) -> dict[str, str]:
    """The ``estimate`` line, and the ``timing`` line saying what was timed and what was not."""
    startup = f"{STARTUP_S:g} s start-up (temporary Prefect server, local cluster)"
    if estimate.timed_tile is None:
        return {
            "estimate": f"about {format_duration(estimate.seconds)}: every tile is nodata, "
            f"only the {startup}"
        }
    return {
        "estimate": (
            f"about {format_duration(estimate.seconds)}: {estimate.tiles} tile(s) in "
            f"{estimate.batches} batch(es) of up to {estimate.task_tiles} on "
            f"{estimate.workers} worker(s) ({estimate.device}, {estimate.threads} torch "
            f"thread(s) each) + {startup}"
        ),
        "timing": (
            f"{estimate.seconds_per_tile:.3f} s per tile (reading and model), timed on tile "
            f"{estimate.timed_tile} in a batch of {estimate.batch_size} copies after a warm-up; "
            "stitching, vectorizing and writing not counted"
        ),
    }


def format_duration(seconds: float) -> str:
    """A duration for people, to the second under an hour, else to the minute.

    >>> format_duration(200)
    '3 min 20 s'
    """
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60:02d} s"
    return f"{total // 3600} h {total % 3600 // 60:02d} min"


def run_seconds(
    batch_tiles: Sequence[int],
    seconds_per_tile: float,
    workers: int,
    startup_s: float = STARTUP_S,
) -> float:
    """Wall time of a run, in seconds: the start-up, then batch tasks on ``workers`` workers.

    ``batch_tiles`` holds the tiles each batch task runs the model on, in plan order. Each task
    goes to the first worker free, as Dask hands out tasks, and is never split between workers:
    a raster of one task keeps one worker busy whatever the number of workers.

    >>> run_seconds([8, 8, 2], 1.0, workers=2, startup_s=0)
    10.0
    """
    free_at = [0.0] * workers
    for tiles in batch_tiles:
        heapq.heappush(free_at, heapq.heappop(free_at) + tiles * seconds_per_tile)
    return startup_s + max(free_at)


def sample_shape(shape: tuple[int, int], most_px: int = MASK_SAMPLE_PX) -> tuple[int, int]:
    """The (rows, cols) to read a tile's mask at: ``shape`` shrunk to at most ``most_px``
    across, in proportion.

    >>> sample_shape((1024, 512), 256)
    (256, 128)
    """
    factor = max(shape) / most_px
    if factor <= 1:
        return shape
    return max(1, round(shape[0] / factor)), max(1, round(shape[1] / factor))


def find_empty_tiles(
    raster: str, tiles: Sequence[Tile], bands: tuple[int, ...], scale: float
) -> tuple[frozenset[int], bool]:
    """Indices of the tiles entirely nodata, which the run skips, and whether that is exact.

    Each tile's validity is read with the run's own `read_tile`, at the shape the run reads it
    (the model's, see `geoseg.tasks.batch.model_shape`) shrunk to at most `MASK_SAMPLE_PX`
    across: the count is exact when no tile was shrunk; otherwise a tile whose valid pixels all
    fall between the samples counts as empty. Integer rasters with no nodata are not read.
    """
    import numpy as np

    from geoseg.tasks.batch import model_shape
    from geoseg.tasks.reading import all_valid, open_raster, read_tile

    empty = set()
    exact = True
    with open_raster(raster) as src:
        no_nodata = all_valid(src, bands)
        floating = any(np.dtype(src.dtypes[band - 1]).kind == "f" for band in bands)
        if no_nodata and not floating:  # every pixel valid and finite: nothing to skip
            return frozenset(), True
        for tile in tiles:
            shape = model_shape(tile, scale) or (tile.height, tile.width)
            sample = sample_shape(shape)
            exact = exact and sample == shape
            _, valid = read_tile(src, tile, bands, sample)
            if not valid.any():
                empty.add(tile.index)
    return frozenset(empty), exact


def time_tile(raster: str, tile: Tile, model: str, scale: float, config: RunConfig) -> float:
    """Seconds to read ``tile`` and run the model on it, as a worker of ``config`` would.

    The tile is read at the model's shape, the model runs once on it to warm up, then on a
    batch of ``config.batch_size`` copies, with the worker's torch threads and device.
    """
    import torch

    from geoseg.models.contract import load_model, select_device
    from geoseg.tasks.batch import model_shape
    from geoseg.tasks.inference import configure_torch_threads, predict_tiles
    from geoseg.tasks.reading import open_raster, read_tile

    device = select_device(config.device)
    threads = torch.get_num_threads()
    configure_torch_threads(config.threads_per_worker or threads)
    try:
        network, spec = load_model(model, device, config.tta)
        with open_raster(raster) as src:
            started = time.perf_counter()
            pixels, valid = read_tile(src, tile, spec.bands, model_shape(tile, scale))
            read_s = time.perf_counter() - started
        predict_tiles(network, spec, [pixels], [valid], config.score_threshold, device)
        copies = config.batch_size
        started = time.perf_counter()
        predict_tiles(
            network, spec, [pixels] * copies, [valid] * copies, config.score_threshold, device
        )
        model_s = (time.perf_counter() - started) / copies
    finally:
        torch.set_num_threads(threads)
    return read_s + model_s


def inspect_raster(raster: str, config: RunConfig, estimate: bool = True) -> RasterReport:
    """Read a raster's header and a model's spec, plan the tiles as ``geoseg run`` would, count
    the nodata tiles it would skip and, with ``estimate``, time the model to estimate the run.

    The estimate assumes a local cluster sized as ``geoseg run`` sizes it (``--workers``, else
    2 workers, or one per GPU; cores split between them).

    Raises
    ------
    RasterError
        If the raster is missing, unreadable, not georeferenced on a north-up grid, lacks a band
        the model reads, or its CRS has no geodetic datum.
    ModelError
        If the model file breaks the model contract, or has no test-time augmentation to
        switch on.
    OptionsError
        If the tile size, overlap or device is unusable.
    """
    import pyproj
    import rasterio
    from rasterio.enums import MaskFlags
    from rasterio.errors import NotGeoreferencedWarning

    from geoseg.flows.segment import plan_raster
    from geoseg.models.contract import check_tta, read_model_spec
    from geoseg.models.shipped import default_model_path
    from geoseg.tasks.measure import pixel_size_m
    from geoseg.tasks.reading import describe_raster, gdal_env

    model = config.model or str(default_model_path())
    spec = read_model_spec(model)
    check_tta(spec, config.tta)
    info = describe_raster(raster, spec.bands)
    plan = plan_raster(config, spec, info)
    with gdal_env(), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(raster) as src:
            dtypes = tuple(dict.fromkeys(src.dtypes))
            nodata_value = src.nodata
            flags = [set(band_flags) for band_flags in src.mask_flag_enums]
            bounds = tuple(float(v) for v in src.bounds)
    marks = []
    if any(MaskFlags.nodata in band for band in flags):
        marks.append(f"value {nodata_value:g}")
    if any(MaskFlags.per_dataset in band and MaskFlags.alpha not in band for band in flags):
        marks.append("a mask band")
    if any(MaskFlags.alpha in band for band in flags):
        marks.append("an alpha band")
    crs = pyproj.CRS(info.crs_wkt)
    authority = crs.to_authority()
    axis = crs.axis_info[0] if crs.axis_info else None
    classes = ", ".join(spec.classes[label] for label in sorted(spec.classes))
    empty, exact = find_empty_tiles(raster, plan.tiles, spec.bands, plan.scale)
    return RasterReport(
        path=raster,
        width=info.width,
        height=info.height,
        count=info.count,
        dtypes=dtypes,
        crs=f"{authority[0]}:{authority[1]} ({crs.name})" if authority else crs.name,
        crs_unit=axis.unit_name if axis is not None else "unknown unit",
        resolution=(abs(info.transform.a), abs(info.transform.e)),
        pixel_size_m=pixel_size_m(info.transform, crs, info.width, info.height),
        bounds=(bounds[0], bounds[1], bounds[2], bounds[3]),
        nodata=" and ".join(marks) if marks else "none (every pixel is valid)",
        model=(f"{spec.name}: reads band(s) {', '.join(map(str, spec.bands))}; classes {classes}"),
        tile_size=plan.tiling[0],
        overlap_px=plan.tiling[1],
        tiling_from=tiling_origin(
            config.tile_size, config.overlap_px, spec.tile_size, spec.overlap
        ),
        tiles=len(plan.tiles),
        tile_cols=len({tile.col_off for tile in plan.tiles}),
        tile_rows=len({tile.row_off for tile in plan.tiles}),
        gsd_m=plan.gsd_m,
        gsd_from_option=config.gsd_m is not None,
        model_gsd_m=spec.gsd_m,
        scale=plan.scale,
        empty_tiles=len(empty),
        empty_exact=exact,
        estimate=estimate_run(raster, plan, empty, model, config) if estimate else None,
    )


def estimate_run(
    raster: str, plan: RasterPlan, empty: frozenset[int], model: str, config: RunConfig
) -> Estimate:
    """Estimate a run of ``plan`` on a local cluster sized as ``geoseg run`` sizes it, timing
    the model on the first tile that is not in ``empty`` (nothing is timed when all are)."""
    from geoseg.api import local_cluster_config
    from geoseg.flows.segment import batches
    from geoseg.models.contract import select_device

    cluster = local_cluster_config(config)
    workers = cluster.workers or DEFAULT_WORKERS
    to_run = [tile for tile in plan.tiles if tile.index not in empty]
    timed = to_run[0] if to_run else None
    per_tile = 0.0 if timed is None else time_tile(raster, timed, model, plan.scale, cluster)
    tasks = batches(plan.tiles, config.batch_size)
    batch_tiles = [sum(tile.index not in empty for tile in batch) for batch in tasks]
    return Estimate(
        seconds=run_seconds(batch_tiles, per_tile, workers),
        seconds_per_tile=per_tile,
        tiles=len(to_run),
        batches=sum(count > 0 for count in batch_tiles),
        batch_size=config.batch_size,
        task_tiles=max((len(batch) for batch in tasks), default=0),
        workers=workers,
        threads=cluster.threads_per_worker or 1,
        device=select_device(cluster.device).type,
        timed_tile=None if timed is None else timed.index,
    )


@click.command("inspect", short_help="Describe a raster and how geoseg run would tile it.")
@click.argument("raster")
@click.option("--model", help="TorchScript model file (default: the built-in model).")
@click.option("--tile-size", type=int, help="Tile size in pixels (default: the model's, or 512).")
@click.option("--overlap", type=int, help="Tile overlap in pixels (default: the model's, or 64).")
@click.option(
    "--gsd",
    type=float,
    help="Run the model at this ground resolution (m/pixel) [default: the model's own].",
)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Tiles per task.")
@click.option(
    "--workers", type=int, help=f"Local Dask worker processes [default: {DEFAULT_WORKERS}]."
)
@click.option("--threads-per-worker", type=int, help="Torch threads per worker.")
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option("--tta", is_flag=True, help="Time the model with test-time augmentation.")
@click.option(
    "--no-estimate", is_flag=True, help="Skip the run-time estimate (it loads and times the model)."
)
def inspect_command(
    raster: str,
    model: str | None,
    tile_size: int | None,
    overlap: int | None,
    gsd: float | None,
    batch_size: int,
    workers: int | None,
    threads_per_worker: int | None,
    device: str,
    tta: bool,
    no_estimate: bool,
) -> None:
    """Describe RASTER as geoseg run would see it: size, CRS, resolution, nodata, the model's
    ground resolution, the tiles, the nodata tiles it would skip and an estimated run time.

    The raster is checked as geoseg run checks it and its tiles are planned by the same code:
    at the model's ground resolution (or --gsd), with the options' tiling, else the model's,
    else 512 px tiles overlapping by 64 px. The run time is estimated by timing the model on one
    tile of the raster here, for a local cluster sized as geoseg run sizes it.
    """
    config = RunConfig(
        inputs=(raster,),
        output=Path(os.devnull),
        model=model,
        tile_size=tile_size,
        overlap_px=overlap,
        gsd_m=gsd,
        batch_size=batch_size,
        workers=workers,
        threads_per_worker=threads_per_worker,
        device=device,
        tta=tta,
    )
    click.echo(format_report(inspect_raster(raster, config, not no_estimate)), nl=False)
