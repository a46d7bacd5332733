"""geoseg: instance segmentation of very large georeferenced rasters into measured polygons.

The Python API mirrors ``geoseg run``::

    from geoseg import run
    result = run(["scene.tif"], "objects.gpkg", workers=2)
    result.summary  # per source and class: count and total area in m²
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("geoseg")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = ["__version__", "run", "run_config"]


def __getattr__(name: str) -> Any:
    # The API pulls in Prefect and Dask; importing a pure step module should not.
    if name in ("run", "run_config"):
        from geoseg import api

        return getattr(api, name)
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
