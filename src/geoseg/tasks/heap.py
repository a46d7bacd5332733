"""Keep Python's cyclic garbage collector off the process's long-lived objects during the steps
that allocate many small ones."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def old_objects_frozen() -> Iterator[None]:
    """Leave the objects alive on entry out of garbage collection until exit.

    Vectorizing makes a few Python objects per polygon vertex (rasterio's GeoJSON), and every
    full collection this triggers would also walk every long-lived object of the process:
    torch, the model, Prefect, hundreds of thousands of them. Freezing those made cutting,
    matching and stitching 13 to 18 % faster. Only what the collector scans changes: reference
    counting frees as before, and on exit the frozen objects rejoin the oldest generation.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
