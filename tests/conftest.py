"""Shared fixtures: rasters made on the fly, a quiet Prefect home, a Dask cluster."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import rasterio
from affine import Affine

# Prefect reads its settings when first imported: point it at a private home before any test
# imports it, and keep it quiet and offline.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="geoseg-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

MakeRaster = Callable[..., Path]


@pytest.fixture
def make_raster(tmp_path: Path) -> MakeRaster:
    """Write a GeoTIFF from an array ``[bands, rows, cols]`` or ``[rows, cols]``; return its path.

    Defaults: UTM 36N, 0.5 m pixels, tiled DEFLATE, no nodata.
    """

    def make(
        array: np.ndarray,
        name: str = "scene.tif",
        crs: str | None = "EPSG:32636",
        transform: Affine | None = None,
        nodata: float | None = None,
        tiled: bool = True,
    ) -> Path:
        data = array[np.newaxis] if array.ndim == 2 else array
        count, height, width = data.shape
        profile = {
            "driver": "GTiff",
            "width": width,
            "height": height,
            "count": count,
            "dtype": data.dtype.name,
            "crs": crs,
            "transform": transform or Affine(0.5, 0, 500_000, 0, -0.5, 40_000),
            "nodata": nodata,
            "compress": "deflate",
        }
        if tiled and width >= 16 and height >= 16:
            profile.update(tiled=True, blockxsize=16, blockysize=16)
        path = tmp_path / name
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
        return path

    return make


@pytest.fixture(scope="session")
def dask_address() -> Iterator[str]:
    """A real two-worker Dask cluster of processes on loopback, shared by the end-to-end tests."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        host="127.0.0.1",
    )
    client = Client(cluster)
    yield cluster.scheduler_address
    # Workers that ran Prefect tasks started temporary Prefect servers of their own; a worker
    # killed at close would leave its server running after the tests.
    descendants = psutil.Process().children(recursive=True)
    client.close()
    cluster.close()
    kill_survivors(descendants)


def kill_survivors(processes: list[psutil.Process]) -> None:
    """Kill whichever of ``processes`` outlived their parents' shutdown."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
