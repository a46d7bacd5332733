"""Where a run keeps its per-batch results, so a killed run resumes without redoing work.

Batch files live in a hidden folder beside the output, one sub-folder per raster whose name is a
digest of everything that decides the batch results: the raster (path, size, modification time
and georeferencing), the model file's sha256, the tiling and the score threshold. Changing any of
them gives another folder, so stale results are never reused. Batch files are written atomically
(see ``partials``): a file that exists is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from geoseg.tasks.reading import RasterInfo


def cache_folder(output: Path) -> Path:
    """The hidden folder beside ``output`` that holds a run's batch files."""
    return output.with_name(f".{output.name}.geoseg-cache")


def raster_fingerprint(raster: RasterInfo) -> dict[str, object]:
    """What identifies a raster's content cheaply: its header, and size and mtime when local."""
    identity: dict[str, object] = {
        "path": raster.path,
        "shape": [raster.count, raster.height, raster.width],
        "crs": raster.crs_wkt,
        "transform": list(raster.transform)[:6],
    }
    if os.path.exists(raster.path):
        stat = os.stat(raster.path)
        identity.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    return identity


BATCH_LAYOUT = 2
"""Version of how a raster's tiles are grouped into batch files: batch files grouped another
way (by an older geoseg) are never resumed from, since their tiles would not line up."""


def batch_folder(
    output: Path,
    raster: RasterInfo,
    model_sha256: str,
    tiling: tuple[int, int],
    batch_size: int,
    score_threshold: float,
    scale: float = 1.0,
    tta: bool = False,
) -> Path:
    """The folder of one raster's batch files for these model, tiling and inference parameters.

    ``scale`` (model pixels per raster pixel) and ``tta`` change what the model sees, so they
    are part of the key, and so is `BATCH_LAYOUT`.
    """
    key = {
        "layout": BATCH_LAYOUT,
        "raster": raster_fingerprint(raster),
        "model_sha256": model_sha256,
        "tiling": list(tiling),
        "batch_size": batch_size,
        "score_threshold": score_threshold,
        "scale": scale,
        "tta": tta,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_folder(output) / f"{Path(raster.name).stem}-{digest}"


def clear_cache(output: Path) -> None:
    """Delete every cached batch of ``output``'s runs."""
    shutil.rmtree(cache_folder(output), ignore_errors=True)
