"""Throughput of geoseg's worker path on a GPU (or the CPU); prints one line per figure.

Writes its own raster (``pipeline.write_scene``, 0.5 m), takes a model file (``--model``; by
default the shipped U-Net architecture with untrained weights, packaged like a trained one) and
measures on ``--device``:

- ``forward``: the model alone on batches of tiles already in memory (the ceiling);
- ``worker, 1 batch in flight``: ``segment_batch`` over every batch of the raster, as a worker
  runs it (read, infer, decode, cut to tile cores, save);
- ``worker, N in flight``: the same with N batches at once sharing one model, which is what a
  Dask GPU worker started with ``--nthreads N --resources GPU=N`` does: reading and cutting of
  some batches overlap the GPU work of another;
- ``--memory-fraction F`` caps this process's share of the GPU's memory, so that batches too big
  for it show the worker splitting them (the tiles that fitted are printed);
- ``dask``: the same batches submitted with ``resources={"GPU": 1}`` to a scheduler with one GPU
  worker and one CPU-only worker: every batch must land on the GPU worker.

Ground throughput is given in km²/hour at the model's ``gsd_m`` (else the raster's 0.5 m). Example::

    python benchmarks/gpu.py --size 8192 --model model.pt --batch-size 16 --in-flight 4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import rasterio
import torch

from geoseg.models.contract import load_model, read_model_spec, select_device
from geoseg.models.segmenter import package_segmenter
from geoseg.models.synthetic import CLASSES
from geoseg.models.training import MEAN, STD
from geoseg.models.unet import UNet
from geoseg.tasks import inference
from geoseg.tasks.batch import segment_batch
from geoseg.tasks.inference import model_input
from geoseg.tasks.reading import read_tile
from geoseg.tasks.tiling import Tile, plan_tiles
from pipeline import cpu_description, write_scene

GSD_M = 0.5


def untrained_model(path: Path) -> Path:
    """The shipped architecture with random weights (throughput does not depend on training)."""
    torch.manual_seed(0)
    package_segmenter(UNet(3, len(CLASSES)), path, classes=CLASSES, mean=MEAN, std=STD)
    return path


def groups(tiles: list[Tile], size: int) -> list[list[Tile]]:
    """Consecutive batches of ``size`` tiles."""
    return [tiles[i : i + size] for i in range(0, len(tiles), size)]


def forward_rate(raster: Path, model_path: Path, device: torch.device, batch: int) -> float:
    """Megapixels per second of the model alone, over tiles read beforehand."""
    model, spec = load_model(model_path, device)
    with rasterio.open(raster) as src:
        tiles = plan_tiles(src.width, src.height, spec.tile_size or 512, spec.overlap or 64)
        pixels = [read_tile(src, tile, spec.bands)[0] for tile in tiles[: batch * 8]]
    images = [model_input(torch.from_numpy(p), spec).to(device) for p in pixels]
    with torch.inference_mode():
        model(images[:batch])
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, len(images), batch):
            model(images[i : i + batch])
        if device.type == "cuda":
            torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return sum(p.shape[1] * p.shape[2] for p in pixels) / 1e6 / seconds


def worker_rate(
    raster: Path, model_path: Path, device: str, batch: int, in_flight: int, out: Path
) -> tuple[float, int]:
    """Megapixels per second of ``segment_batch`` over the raster; and instances found."""
    with rasterio.open(raster) as src:
        width, height = src.width, src.height
    _, spec = load_model(model_path, select_device(device))
    tiles = plan_tiles(width, height, spec.tile_size or 512, spec.overlap or 64)
    jobs = groups(tiles, batch)
    segment_batch(str(raster), jobs[0], str(model_path), 0.5, out / "warm.npz", device)
    start = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        reports = list(
            pool.map(
                lambda item: segment_batch(
                    str(raster), item[1], str(model_path), 0.5, out / f"{item[0]}.npz", device
                ),
                enumerate(jobs),
            )
        )
    seconds = time.perf_counter() - start
    return width * height / 1e6 / seconds, sum(r.instances for r in reports)


def dask_rate(
    raster: Path, model_path: Path, device: str, batch: int, in_flight: int, out: Path
) -> tuple[float, dict[str, int]]:
    """Megapixels per second through Dask with GPU resources; batches run per worker name."""
    from distributed import Client, LocalCluster

    with rasterio.open(raster) as src:
        width, height = src.width, src.height
    _, spec = load_model(model_path, select_device(device))
    jobs = groups(plan_tiles(width, height, spec.tile_size or 512, spec.overlap or 64), batch)
    with LocalCluster(n_workers=0, dashboard_address=":0") as cluster, Client(cluster) as client:
        worker = [sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address]
        gpu = [*worker, "--name", "gpu", "--nthreads", str(in_flight)]
        gpu += ["--resources", f"GPU={in_flight}", "--no-dashboard"]
        cpu = [*worker, "--name", "cpu", "--nthreads", "2", "--no-dashboard"]
        # infra/dask.yaml: without the malloc trim setting Dask's nannies give their workers.
        dask_config = Path(__file__).resolve().parents[1] / "infra" / "dask.yaml"
        quiet = {
            **os.environ,
            "DASK_LOGGING__DISTRIBUTED": "error",
            "DASK_CONFIG": str(dask_config),
        }
        processes = [subprocess.Popen(gpu, env=quiet), subprocess.Popen(cpu, env=quiet)]
        try:
            client.wait_for_workers(2, timeout=120)
            names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
            warm = (str(raster), jobs[0], str(model_path), 0.5, out / "dask-warm.npz", device)
            client.submit(segment_batch, *warm, resources={"GPU": 1}, pure=False).result()
            start = time.perf_counter()
            futures = [
                client.submit(
                    segment_batch,
                    str(raster),
                    job,
                    str(model_path),
                    0.5,
                    out / f"dask-{i}.npz",
                    device,
                    resources={"GPU": 1},
                    pure=False,
                )
                for i, job in enumerate(jobs)
            ]
            client.gather(futures)
            seconds = time.perf_counter() - start
            placed: dict[str, int] = {}
            for holders in client.who_has(futures).values():
                for address in holders:
                    placed[str(names[address])] = placed.get(str(names[address]), 0) + 1
        finally:
            for process in processes:
                process.terminate()
                process.wait(30)
    return width * height / 1e6 / seconds, placed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=8192, help="side of the raster (px)")
    parser.add_argument("--model", type=Path, help="model file (default: untrained U-Net)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--in-flight", type=int, default=4, help="batches at once on one GPU")
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument(
        "--memory-fraction", type=float, help="cap on this process's share of GPU memory"
    )
    args = parser.parse_args()
    device = select_device(args.device)
    if args.memory_fraction is not None:
        torch.cuda.set_per_process_memory_fraction(args.memory_fraction, device.index or 0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_description()
    print(f"device: {name}, torch {torch.__version__}, raster {args.size}^2 at {GSD_M} m")
    with tempfile.TemporaryDirectory(prefix="geoseg-gpu-") as folder:
        work = Path(folder)
        model = args.model or untrained_model(work / "untrained.pt")
        raster = write_scene(work / "scene.tif", args.size)
        # Tiles are fed at the raster's pixels; a model declaring gsd_m covers its own ground.
        gsd = read_model_spec(model).gsd_m or GSD_M
        print(f"km2/hour at {gsd} m per model pixel")
        km2 = 3600 * gsd**2 / 1e6

        def line(figure: str, mps: float, detail: str = "") -> None:
            print(f"{figure}: {mps:.1f} MP/s, {mps * 1e6 * km2:.0f} km2/hour {detail}".rstrip())

        if args.memory_fraction is None:  # the bare model has no way around running out
            line(
                f"forward (batch {args.batch_size})",
                forward_rate(raster, model, device, args.batch_size),
            )
        for in_flight in sorted({1, args.in_flight}):
            mps, found = worker_rate(raster, model, str(device), args.batch_size, in_flight, work)
            line(f"worker, {in_flight} batch(es) in flight", mps, f"({found} instances)")
        if not args.skip_dask:
            mps, placed = dask_rate(
                raster, model, str(device), args.batch_size, args.in_flight, work
            )
            line("dask, GPU=1 per batch", mps, f"(batches per worker: {placed})")
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        print(f"peak GPU memory allocated in this process: {peak:.2f} GiB")
        print(f"tiles per forward pass after running out of memory: {inference._TILES_THAT_FIT}")


if __name__ == "__main__":
    main()
