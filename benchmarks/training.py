"""Where a training iteration's time goes, on a GPU (or the CPU); prints one line per figure.

Paints its own synthetic scenes and measures, for batches of ``--batch-size`` crops of
``--tile-size`` px with the recipe's augmentation:

- ``batch preparation``: cropping and augmenting one batch on one core (a loader worker's job);
- ``training step``: transfer, targets, forward, backward and optimiser step on ``--device``,
  on batches already made;
- ``validation`` and ``checkpoint``: the occasional costs of `geoseg.models.training.train`;
- ``loader stream``: batches delivered by ``--loader-workers`` processes, with no training;
- ``fed training``: steps fed by that stream, as `train` runs them.

When the fed iteration takes longer than the step alone, the GPU waits for batches. Example::

    python benchmarks/training.py --device cuda --loader-workers 14
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from geoseg.models.augment import Augmentation
from geoseg.models.contract import select_device
from geoseg.models.synthetic import CLASSES, synthetic_images
from geoseg.models.training import (
    TrainingConfig,
    TrainingSource,
    _batch_stream,  # the stream `train` reads: timed alone here
    _IterationBatches,
    build_network,
    make_batch,
    save_checkpoint,
    train_step,
    validation_loss,
)


def milliseconds(work: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Mean wall time of ``work`` in ms, after one warm-up call."""
    work()
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        work()
    sync()
    return (time.perf_counter() - started) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--iterations", type=int, default=100, help="steps timed per figure")
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--scenes", type=int, default=60, help="synthetic 384 px scenes to crop")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tile-size", type=int, default=256)
    args = parser.parse_args()
    device = select_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.set_num_threads(1)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    scenes = synthetic_images(args.scenes, size=384, seed=7, workers=max(args.loader_workers, 1))
    config = TrainingConfig(classes=CLASSES, batch_size=args.batch_size, tile_px=args.tile_size)
    source = TrainingSource(tuple(scenes), (1, 2, 3), augmentation=Augmentation(zoom=(0.7, 1.4)))
    rng = np.random.default_rng(0)
    made = [make_batch([source], config, rng) for _ in range(4)]
    if device.type == "cuda":
        made = [batch.pin_memory() for batch in made]
    net = build_network(config).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate)
    turn = iter(range(10**9))

    def step() -> None:
        train_step(net, optimizer, made[next(turn) % len(made)], config, device)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}, batches of {args.batch_size} crops of {args.tile_size} px")
    prepare = milliseconds(lambda: make_batch([source], config, rng), 5, lambda: None)
    print(f"batch preparation, one core: {prepare:.0f} ms")
    print(f"training step: {milliseconds(step, args.iterations, sync):.1f} ms")
    check = [made[0]]
    validate = milliseconds(lambda: validation_loss(net, check, config, device), 5, sync)
    print(f"validation, one batch: {validate:.1f} ms")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.ckpt"
        save = milliseconds(lambda: save_checkpoint(path, net, optimizer, 1, config, 2), 5, sync)
    print(f"checkpoint: {save:.1f} ms")
    if args.loader_workers == 0:
        return
    batches = _IterationBatches([source], config)
    stream = _batch_stream(batches, 0, 10**9, args.loader_workers, device.type == "cuda")
    for _ in range(3 * args.loader_workers):
        next(stream)
    alone = milliseconds(lambda: next(stream), args.iterations, lambda: None)
    print(f"loader stream, {args.loader_workers} workers: {alone:.1f} ms per batch")

    def fed() -> None:
        train_step(net, optimizer, next(stream), config, device)

    print(f"fed training: {milliseconds(fed, args.iterations, sync):.1f} ms per iteration")
    stream.close()


if __name__ == "__main__":
    main()
