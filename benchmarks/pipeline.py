"""Benchmark geoseg end to end and step by step; prints one line per figure.

Generates its own rasters (RGB with green blobs on grey ground), runs ``geoseg run`` as a
subprocess exactly as a user would, samples the resident memory of its whole process tree
(client, scheduler, workers, Prefect server), and compares with the bare model's forward passes
over the same tiles. The overhead over the model is measured with the shipped default network
(``--overhead-model``); memory, time against size and the speed-up with the cheap greenery rule
(``--model``), so that they show the pipeline rather than the network. Example (the issue's
sizes; about 25 minutes here)::

    python benchmarks/pipeline.py --small 2048 --mid 4096 --large 16384 --overhead 10000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
import zlib
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import rasterio
import rasterio.features
import torch
from affine import Affine
from rasterio.windows import Window

from geoseg.flows.segment import batches
from geoseg.models.contract import load_model, package_model, read_model_spec
from geoseg.models.precision import native_bf16
from geoseg.models.shipped import GREENERY_MODEL, default_model_path, shipped_model_path
from geoseg.tasks.batch import segment_batch
from geoseg.tasks.inference import TilePrediction, model_input
from geoseg.tasks.reading import read_tile
from geoseg.tasks.stitch import (
    StitchedObjects,
    crop,
    cut_pieces,
    match_overlaps,
    stitch_objects,
)
from geoseg.tasks.tiling import Tile, plan_tiles

BLOCK = 1024


def write_scene(path: Path, size: int, seed: int = 0, blobs: int = 40) -> Path:
    """A size x size RGB GeoTIFF at 0.5 m, written block by block (bounded memory), with
    ``blobs`` green discs per 1024 px block (none: a uniform grey scene)."""
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32632",
        "transform": Affine(0.5, 0, 600_000, 0, -0.5, 5_200_000),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
    }
    rows, cols = np.mgrid[0:BLOCK, 0:BLOCK]
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, BLOCK):
            for col in range(0, size, BLOCK):
                rng = np.random.default_rng([seed, row, col])
                block = np.empty((3, BLOCK, BLOCK), dtype=np.uint8)
                block[:] = rng.integers(110, 140, size=(1, BLOCK, BLOCK), dtype=np.uint8)
                for _ in range(blobs):
                    r, c = rng.integers(0, BLOCK, size=2)
                    radius = rng.integers(8, 60)
                    blob = (rows - r) ** 2 + (cols - c) ** 2 < radius**2
                    block[:, blob] = np.array([70, 140, 60], dtype=np.uint8)[:, None]
                h, w = min(BLOCK, size - row), min(BLOCK, size - col)
                dst.write(block[:, :h, :w], window=Window(col, row, w, h))
    return path


def tree_rss(process: psutil.Process) -> int:
    """Resident memory of a process and all its descendants, in bytes."""
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def per_process_peak(process: psutil.Process, peaks: dict[int, int]) -> None:
    for proc in [process, *process.children(recursive=True)]:
        try:
            peaks[proc.pid] = max(peaks.get(proc.pid, 0), proc.memory_info().rss)
        except psutil.NoSuchProcess:
            continue


class EmptyModel(torch.nn.Module):
    """Finds nothing, at no cost: what is left of a run is everything but the model."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [
            {
                "boxes": torch.zeros((0, 4)),
                "labels": torch.zeros(0, dtype=torch.int64),
                "scores": torch.zeros(0),
                "label_map": torch.zeros(image.shape[1:], dtype=torch.int64),
            }
            for image in images
        ]


def run_geoseg(
    raster: Path,
    out: Path,
    workers: int,
    threads: int,
    args: argparse.Namespace,
    model: str | None = None,
) -> dict[str, float]:
    """Run ``geoseg run`` and return wall time, peak summed RSS and peak RSS of one process."""
    command = [
        Path(sys.executable).with_name("geoseg"),
        "run",
        raster,
        "-o",
        out,
        "--overwrite",
        "--workers",
        str(workers),
        "--threads-per-worker",
        str(threads),
        "--tile-size",
        str(args.tile_size),
        "--overlap",
        str(args.overlap),
        "--batch-size",
        str(args.batch_size),
        "--model",
        model or args.model,
        # Read the 0.5 m scene as it is, whatever resolution the model declares, so that the
        # run and the bare forward passes see the same tiles.
        "--gsd",
        "0.5",
    ]
    env = {**os.environ, "PREFECT_HOME": str(out.parent / "prefect")}
    start = time.perf_counter()
    process = psutil.Popen([str(c) for c in command], env=env, stdout=subprocess.DEVNULL)
    peak_sum = 0
    peaks: dict[int, int] = {}
    while process.poll() is None:
        peak_sum = max(peak_sum, tree_rss(process))
        per_process_peak(process, peaks)
        time.sleep(0.2)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"geoseg run failed on {raster} with status {process.returncode}")
    return {
        "wall_s": wall,
        "peak_sum_mb": peak_sum / 2**20,
        "peak_one_mb": max(peaks.values()) / 2**20,
    }


def bare_forward(
    raster: Path, threads: int, args: argparse.Namespace, share: tuple[int, int] = (0, 1)
) -> dict[str, float]:
    """Time the model's forward passes alone over the raster's tiles (read time kept apart);
    ``share`` ``(k, n)``: only every n-th tile from the k-th, as worker k of n."""
    torch.set_num_threads(threads)
    model, spec = load_model(args.overhead_model, torch.device("cpu"))
    with rasterio.open(raster) as src:
        tiles = plan_tiles(src.width, src.height, args.tile_size, args.overlap)
        tiles = tiles[share[0] :: share[1]]
        forward = read = 0.0
        for i in range(0, len(tiles), args.batch_size):
            t0 = time.perf_counter()
            batch = [read_tile(src, tile, spec.bands) for tile in tiles[i : i + args.batch_size]]
            t1 = time.perf_counter()
            images = [model_input(torch.from_numpy(pixels), spec) for pixels, _ in batch]
            with torch.inference_mode():
                model(images)
            forward += time.perf_counter() - t1
            read += t1 - t0
    return {"forward_s": forward, "read_s": read, "tiles": len(tiles)}


def bare_forward_split(raster: Path, workers: int, args: argparse.Namespace) -> float:
    """Wall time of the forward passes split over ``workers`` processes of one torch thread
    each, laid out as ``geoseg run``'s workers are: the slowest process's forward time."""
    jobs = [(raster, 1, args, (k, workers)) for k in range(workers)]
    with get_context("spawn").Pool(workers) as pool:
        return max(fig["forward_s"] for fig in pool.starmap(bare_forward, jobs))


def stitch_throughput(size: int, args: argparse.Namespace) -> dict[str, float]:
    """MP/s of cutting, matching and stitching a dense label raster; and of shapes() on it
    (each the best of five runs)."""
    rng = np.random.default_rng(1)
    labels = np.zeros((size, size), dtype=np.uint32)
    count = size * size // 400
    rows = rng.integers(0, size - 12, count)
    cols = rng.integers(0, size - 12, count)
    for n, (r, c) in enumerate(zip(rows, cols, strict=True), start=1):
        labels[r : r + rng.integers(4, 12), c : c + rng.integers(4, 12)] = n
    tiles = plan_tiles(size, size, args.tile_size, args.overlap)

    def predict(tile: Tile) -> TilePrediction:
        window = crop(labels, tile, tile.box)
        ids, local = np.unique(window, return_inverse=True)
        n = len(ids) - 1 if ids[0] == 0 else len(ids)
        local = local.reshape(window.shape).astype(np.uint32) + (0 if ids[0] == 0 else 1)
        return TilePrediction(local, np.ones(n, dtype=np.int64), np.ones(n, dtype=np.float32))

    predictions = {tile.index: predict(tile) for tile in tiles}

    def ours() -> StitchedObjects:
        pieces = [cut_pieces(tile, predictions[tile.index]) for tile in tiles]
        return stitch_objects(pieces, match_overlaps(tiles, lambda t: predictions[t.index].labels))

    def reference() -> int:
        source = labels.astype(np.int32)
        return sum(1 for _ in rasterio.features.shapes(source, mask=labels > 0))

    # Best of five of each, taken in turns: on a shared 2-core VM a single run of either
    # can be slowed by a third by neighbours (shapes() alone ranged from 18 to 28 MP/s in the
    # best of three of four runs in a row).
    ours_s, reference_s = [], []
    for _ in range(5):
        start = time.perf_counter()
        objects = ours()
        ours_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        shapes = reference()
        reference_s.append(time.perf_counter() - start)
    ours_best, reference_best = min(ours_s), min(reference_s)
    megapixels = size * size / 1e6
    return {
        "ours_mps": megapixels / ours_best,
        "shapes_mps": megapixels / reference_best,
        "objects": len(objects),
        "polygons": shapes,
    }


def report(figure: str, detail: str, value: float, target: str) -> None:
    """One line per figure: what, the measurements behind it, the value and its target."""
    print(f"{figure}: {value:.2f} (target {target}) | {detail}", flush=True)


def orchestration(work: Path, args: argparse.Namespace) -> dict[str, float]:
    """Cost per tile of a run whose model finds nothing in a grey scene: the orchestration
    (Prefect tasks on Dask, futures, progress), reading and writing per batch, but no model and
    no objects. The fixed start-up and shut-down, the median of three one-batch runs (after one
    that creates Prefect's database), are taken out."""
    model = work / "empty.pt"
    package_model(EmptyModel(), model, classes={1: "nothing"}, bands=(1, 2, 3), scale=1 / 255)
    size = args.orchestration
    tiles = len(plan_tiles(size, size, args.tile_size, args.overlap))
    small = write_scene(work / "one-batch.tif", args.tile_size, blobs=0)
    fixed = [
        run_geoseg(small, work / "one-batch.gpkg", 2, 1, args, str(model))["wall_s"]
        for _ in range(4)
    ][1:]
    raster = write_scene(work / "empty.tif", size, blobs=0)
    many = run_geoseg(raster, work / "empty.gpkg", 2, 1, args, str(model))
    return {
        "tiles": tiles,
        "one_s": float(np.median(fixed)),
        "many_s": many["wall_s"],
        "compute_s_per_tile": batch_compute(raster, str(model), work, args),
    }


def batch_compute(raster: Path, model: str, work: Path, args: argparse.Namespace) -> float:
    """Seconds per tile of a worker's own work on ``raster`` (reading, preparing, the model,
    cutting, saving), run in this process on one thread, without Prefect or Dask."""
    torch.set_num_threads(1)
    size = args.batch_size
    with rasterio.open(raster) as src:
        tasks = batches(plan_tiles(src.width, src.height, args.tile_size, args.overlap), size)
    segment_batch(str(raster), tasks[0], model, 0.5, work / "warm.npz", "cpu", 1, batch_size=size)
    timed = tasks[1:4]
    start = time.perf_counter()
    for index, task in enumerate(timed):
        out = work / f"t{index}.npz"
        segment_batch(str(raster), task, model, 0.5, out, "cpu", 1, batch_size=size)
    return (time.perf_counter() - start) / sum(len(task) for task in timed)


def _cpu_bound() -> float:
    """Seconds of a fixed CPU-bound loop like a worker's (deflate, sorting, Python code)."""
    labels = np.random.default_rng(0).integers(0, 4, size=(512, 512), dtype=np.uint8)
    start = time.perf_counter()
    for _ in range(60):
        zlib.compress(labels.tobytes(), 6)
        np.unique(labels.astype(np.int64) * 7 + 3)
        sum(i * i for i in range(20_000))
    return time.perf_counter() - start


def _timed_loop(barrier: Any, results: Any) -> None:
    barrier.wait()
    results.put(_cpu_bound())


def _slowest_of(processes: int) -> float:
    """Seconds of the slowest of ``processes`` copies of the loop started together."""
    context = get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=_timed_loop, args=(barrier, results)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    seconds = max(results.get() for _ in workers)
    for worker in workers:
        worker.join()
    return float(seconds)


def machine_ceiling(repeats: int = 5) -> list[float]:
    """Throughput of a CPU-bound loop in two processes at once over one process alone, once per
    repeat, sorted: what two cores give two independent processes here, before any of geoseg's
    work. On a virtual machine two cores may share one physical core, or its caches and memory
    bandwidth, and the ratio moves from one moment to the next."""
    return sorted(2 * _slowest_of(1) / _slowest_of(2) for _ in range(repeats))


def cpu_description() -> str:
    """The CPU's model name and vector extensions: figures differ between machines that look
    alike from ``os.cpu_count()`` (bfloat16 runs natively on some, is emulated on others)."""
    name = platform.processor() or "CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    bf16 = "native" if native_bf16(torch.device("cpu")) else "emulated, so fp32"
    return f"{name} ({torch.backends.cpu.get_cpu_capability()}, bf16 {bf16})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=2048, help="side of the small raster (px)")
    parser.add_argument("--mid", type=int, default=4096, help="side of the mid raster (px)")
    parser.add_argument("--large", type=int, default=16384, help="side of the large raster (px)")
    parser.add_argument("--overhead", type=int, default=10000, help="side of the overhead raster")
    parser.add_argument(
        "--orchestration", type=int, default=16384, help="side of the empty-scene raster"
    )
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--model",
        default=str(shipped_model_path(GREENERY_MODEL)),
        help="model of the memory, size and speed-up figures (default: greenery)",
    )
    parser.add_argument(
        "--overhead-model",
        default=str(default_model_path()),
        help="model of the overhead figure (default: the shipped network)",
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["overhead", "orchestration", "scale", "stitch"],
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    half = max(1, cores // 2)
    print(
        f"machine: {cores} cores, {cpu_description()}, torch {torch.__version__}, models: "
        f"{read_model_spec(args.overhead_model).name} (overhead), "
        f"{read_model_spec(args.model).name} (the rest)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="geoseg-bench-") as folder:
        work = Path(folder)
        if {"orchestration", "overhead", "scale"} - set(args.skip):
            # Prefect creates its database on a fresh PREFECT_HOME's first run (about 9 s
            # here): once per machine, so one small run first keeps it out of the figures.
            warm = write_scene(work / "warm-up.tif", 512)
            run_geoseg(warm, work / "warm-up.gpkg", 1, cores, args)
        if "stitch" not in args.skip:
            fig = stitch_throughput(4096, args)
            detail = f"ours {fig['ours_mps']:.1f} MP/s, shapes() {fig['shapes_mps']:.1f} MP/s"
            report(
                "stitch+vectorize / features.shapes",
                detail,
                fig["ours_mps"] / fig["shapes_mps"],
                ">= 0.5",
            )
        fixed = None
        if "orchestration" not in args.skip:
            fig = orchestration(work, args)
            fixed = fig["one_s"]
            per_tile = 1000 * (fig["many_s"] - fig["one_s"]) / (fig["tiles"] - 1)
            detail = (
                f"{fig['tiles']:.0f} tiles of a grey scene, no objects: {fig['many_s']:.1f} s; "
                f"one batch: {fig['one_s']:.1f} s (start-up and shut-down, median of 3)"
            )
            report("ms per tile beyond the model", detail, per_tile, "< 5")
            own = 1000 * fig["compute_s_per_tile"] / 2
            detail = (
                f"less the workers' own reading, preparing and saving ({own:.1f} ms per tile "
                "on each of 2 workers, timed without Prefect and Dask)"
            )
            report("ms per tile of Prefect and Dask", detail, per_tile - own, "< 5")
        if "overhead" not in args.skip:
            raster = write_scene(work / "overhead.tif", args.overhead)
            bare = bare_forward(raster, cores, args)
            split = bare_forward_split(raster, 2, args)
            e2e = run_geoseg(raster, work / "overhead.gpkg", 2, half, args, args.overhead_model)
            mp = args.overhead**2 / 1e6
            detail = (
                f"{mp:.0f} MP, {bare['tiles']:.0f} tiles: geoseg run {e2e['wall_s']:.1f} s, bare "
                f"forward {bare['forward_s']:.1f} s, reading alone {bare['read_s']:.1f} s"
            )
            report("end to end / bare model", detail, e2e["wall_s"] / bare["forward_s"], "<= 1.15")
            detail = (
                f"the bare passes split over 2 processes of 1 thread, as the run's workers: "
                f"{split:.1f} s"
            )
            report("end to end / bare model as the workers", detail, e2e["wall_s"] / split, "none")
            # One megapixel at 0.5 m covers 0.25 km².
            rate = f"{mp * 0.25 / (e2e['wall_s'] / 3600):.1f} km2/hour at 0.5 m"
            report("end-to-end MP/s", rate, mp / e2e["wall_s"], "as high as the model allows")
        if "scale" not in args.skip:
            small = run_geoseg(
                write_scene(work / "small.tif", args.small), work / "small.gpkg", 2, half, args
            )
            mid = run_geoseg(
                write_scene(work / "mid.tif", args.mid), work / "mid.gpkg", 2, half, args
            )
            large_raster = write_scene(work / "large.tif", args.large)
            large = run_geoseg(large_raster, work / "large.gpkg", 2, half, args)
            detail = (
                f"peak RSS summed over all processes: {small['peak_sum_mb']:.0f} MB at "
                f"{args.small}^2, {large['peak_sum_mb']:.0f} MB at {args.large}^2"
            )
            report(
                "memory large / small",
                detail,
                large["peak_sum_mb"] / small["peak_sum_mb"],
                "<= 1.3",
            )
            report("largest process MB", f"at {args.large}^2", large["peak_one_mb"], "< 1536")
            pixels = (args.large / args.mid) ** 2
            detail = (
                f"{mid['wall_s']:.1f} s at {args.mid}^2, {large['wall_s']:.1f} s at {args.large}^2"
            )
            report(
                f"time large / mid ({pixels:.0f}x pixels)",
                detail,
                large["wall_s"] / mid["wall_s"],
                f"<= {pixels + 1:.0f}",
            )
            # On the large raster, where the fixed start-up is a small share.
            one = run_geoseg(large_raster, work / "one.gpkg", 1, cores, args)
            detail = (
                f"{args.large}^2: 1 x {cores} threads {one['wall_s']:.1f} s, "
                f"2 x {half} {large['wall_s']:.1f} s"
            )
            if fixed is not None:
                work_ratio = (one["wall_s"] - fixed) / (large["wall_s"] - fixed)
                detail += f"; {work_ratio:.2f} without the {fixed:.1f} s of a one-batch run"
            report("speed-up 2 workers / 1", detail, one["wall_s"] / large["wall_s"], ">= 1.7")
            # The same worker twice: each worker keeps one thread, as in the 2-worker run.
            single = run_geoseg(large_raster, work / "single.gpkg", 1, 1, args)
            detail = f"{args.large}^2: 1 x 1 thread {single['wall_s']:.1f} s"
            report(
                "speed-up 2 workers / 1, 1 thread each",
                detail,
                single["wall_s"] / large["wall_s"],
                "none",
            )
            threads_gain = single["wall_s"] / one["wall_s"]
            detail = f"{args.large}^2: 1 x 1 thread against 1 x {cores} threads"
            report("one worker's speed-up from its threads", detail, threads_gain, "none")
            ratios = machine_ceiling()
            ceiling = ratios[len(ratios) // 2]
            detail = (
                "a CPU-bound loop in 2 processes at once against 1 alone, median of "
                f"{len(ratios)} (from {ratios[0]:.2f} to {ratios[-1]:.2f})"
            )
            report("this machine's 2-process ceiling", detail, ceiling, "none")
            # At best two workers take the one-thread run's time down by the machine's ceiling,
            # while the one-worker run already has what its second thread gives it.
            detail = (
                "2 workers / 1 worker if the second worker split the work perfectly: the "
                "ceiling over one worker's speed-up from its threads"
            )
            report("speed-up bound", detail, ceiling / threads_gain, "none")


if __name__ == "__main__":
    main()
