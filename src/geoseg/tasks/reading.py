"""Open rasters, check they are usable, and read tiles window by window.

Nothing here reads a whole raster: ``describe_raster`` reads the header only and ``read_tile``
reads one window of the bands a model needs, with its validity mask.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from geoseg.errors import RasterError, RemoteReadError
from geoseg.tasks.sources import is_network, is_remote, redact, source_name
from geoseg.tasks.tiling import Tile

GDAL_CACHE_MB = 64
"""GDAL block cache per process: GDAL's default (about 5% of RAM) is per worker and adds up."""

_EXACT_IN_FLOAT32 = {np.dtype(name) for name in ("uint8", "int8", "uint16", "int16", "float32")}
"""Pixel types whose every value float32 holds exactly."""

HTTP_RETRIES = {"GDAL_HTTP_MAX_RETRY": "4", "GDAL_HTTP_RETRY_DELAY": "0.5"}
"""GDAL retries remote requests answered 429, 500, 502, 503 or 504, doubling the delay (about
0.5, 1, 2, 4 s); the same variables in the environment take precedence."""


@dataclass(frozen=True)
class RasterInfo:
    """What the pipeline needs to know about an input raster.

    Attributes
    ----------
    path : str
        The raster as given (a local path or anything GDAL opens: ``/vsicurl/``, ``s3://``).
    width, height, count : int
        Size in pixels and number of bands.
    crs_wkt : str
        The raster's CRS as WKT.
    transform : Affine
        Maps pixel ``(col, row)`` to CRS coordinates; north-up or north-down, never rotated.
    """

    path: str
    width: int
    height: int
    count: int
    crs_wkt: str
    transform: Affine

    @property
    def name(self) -> str:
        """The file name, for messages and object ids."""
        return source_name(self.path)


def gdal_env() -> rasterio.Env:
    """A GDAL environment with a bounded block cache and HTTP retries, for every process that
    reads rasters."""
    retries = {key: value for key, value in HTTP_RETRIES.items() if key not in os.environ}
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 1024 * 1024, **retries)


def describe_raster(path: str, bands: tuple[int, ...]) -> RasterInfo:
    """Open a raster's header and refuse what the pipeline cannot georeference or feed a model.

    Raises
    ------
    RasterError
        The file is missing or unreadable, has no CRS or no geotransform (GCPs only included),
        is rotated, sheared or has a zero pixel size, lacks a band the model reads, or has
        complex pixels in one.
    """
    name = source_name(path)
    if not is_remote(path) and not Path(path).exists():
        raise RasterError(f"{redact(path)} does not exist")
    try:
        with gdal_env(), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                width, height, count = src.width, src.height, src.count
                crs, transform, gcps = src.crs, src.transform, src.gcps[0]
                dtypes = src.dtypes
    except RasterioIOError as exc:
        network = is_network(path)
        fix = (
            "check the URL, the credentials and that the server answers (GDAL retried it)"
            if network
            else "pass a GeoTIFF or another raster format GDAL reads"
        )
        # GDAL's own text (redacted here) names the URL: chained, it would reach tracebacks and
        # Prefect's logs unredacted.
        raise RasterError(
            redact(f"{path}: cannot be read as a raster ({gdal_message(exc)}); {fix}")
        ) from (None if network else exc)
    if crs is None and gcps:
        raise RasterError(
            f"{name} is georeferenced by ground control points only; warp it to a grid first "
            "(gdalwarp)"
        )
    if crs is None:
        raise RasterError(
            f"{name} has no CRS; georeference the raster first (gdal_edit.py -a_srs EPSG:<code>)"
        )
    if transform == Affine.identity():
        raise RasterError(f"{name} has no geotransform; georeference the raster first")
    if transform.b != 0 or transform.d != 0:
        raise RasterError(
            f"{name} has a rotated or sheared geotransform; warp it to a north-up grid first "
            "(gdalwarp)"
        )
    if transform.determinant == 0:
        raise RasterError(
            f"{name} has a geotransform with a zero pixel size ({transform.a} x {transform.e}); "
            "fix its georeferencing first"
        )
    missing = [band for band in bands if not 1 <= band <= count]
    if missing:
        raise RasterError(
            f"{name} has {count} band(s) but the model reads band(s) "
            f"{', '.join(map(str, bands))}; pass a raster with those bands or another model"
        )
    complex_bands = [band for band in bands if dtypes[band - 1].startswith("complex")]
    if complex_bands:
        raise RasterError(
            f"{name} has complex pixels ({dtypes[complex_bands[0] - 1]}) in band(s) "
            f"{', '.join(map(str, complex_bands))}; convert them to real values (e.g. amplitude) "
            "first"
        )
    return RasterInfo(
        path=path,
        width=width,
        height=height,
        count=count,
        crs_wkt=crs.to_wkt(),
        transform=transform,
    )


def read_tile(
    src: rasterio.DatasetReader,
    tile: Tile,
    bands: tuple[int, ...],
    out_shape: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read one tile's bands as float32 ``[C, h, w]`` and its validity mask ``[h, w]``.

    A pixel is valid when every band read is valid in the raster's mask (declared nodata, an
    internal or sidecar mask, or alpha) and finite. With ``out_shape`` (rows, cols) GDAL
    resamples the window on read: averaging when shrinking, bilinear when enlarging; the mask
    takes the nearest pixel.

    Raises
    ------
    RemoteReadError
        A raster read over the network failed after GDAL's retries (worth retrying later).
    RasterError
        A local raster's pixels cannot be read (damaged or truncated).
    """
    window = Window(tile.col_off, tile.row_off, tile.width, tile.height)
    dtypes = {np.dtype(src.dtypes[band - 1]) for band in bands}
    shape = None if out_shape is None else (len(bands), *out_shape)
    try:
        if out_shape is None:
            # NumPy converts the types float32 holds exactly several times faster than GDAL.
            exact = dtypes <= _EXACT_IN_FLOAT32
            pixels = src.read(list(bands), window=window, out_dtype=None if exact else "float32")
            pixels = pixels.astype(np.float32, copy=False)
        else:
            shrinking = out_shape[0] * out_shape[1] < tile.width * tile.height
            pixels = src.read(
                list(bands),
                window=window,
                out_dtype="float32",
                out_shape=shape,
                resampling=Resampling.average if shrinking else Resampling.bilinear,
            )
        masks = (
            None
            if all_valid(src, bands)
            else src.read_masks(list(bands), window=window, out_shape=shape)
        )
    except RasterioIOError as exc:
        if is_network(src.name):
            raise RemoteReadError(
                redact(
                    f"{source_name(src.name)}: pixels of window {tile.box} cannot be read "
                    f"({gdal_message(exc, src.name)}) after retries; the server or the network "
                    "failed, or the file is damaged: check it and run again"
                )
            ) from None
        raise RasterError(
            redact(
                f"{source_name(src.name)}: pixels of window {tile.box} cannot be read "
                f"({gdal_message(exc, src.name)}); the file is damaged or truncated, recreate "
                "or download it again"
            )
        ) from exc
    valid = np.ones(pixels.shape[1:], dtype=bool) if masks is None else np.all(masks > 0, axis=0)
    if any(np.issubdtype(dtype, np.floating) for dtype in dtypes):
        valid &= np.all(np.isfinite(pixels), axis=0)  # integer bands are always finite
    return pixels, valid


def all_valid(src: rasterio.DatasetReader, bands: tuple[int, ...]) -> bool:
    """Whether ``bands`` have no nodata value, mask or alpha: every pixel is then valid and
    their masks need not be read."""
    return all(src.mask_flag_enums[band - 1] == [MaskFlags.all_valid] for band in bands)


@contextmanager
def open_raster(path: str) -> Iterator[rasterio.DatasetReader]:
    """Open a raster in :func:`gdal_env` to read its tiles.

    Raises
    ------
    RemoteReadError
        A raster read over the network cannot be opened after GDAL's retries.
    RasterError
        A local raster cannot be opened.
    """
    with gdal_env():
        try:
            src = rasterio.open(path)
        except RasterioIOError as exc:
            error = RemoteReadError if is_network(path) else RasterError
            # Unchained: GDAL's text names the URL, which must not reach Prefect's logs.
            raise error(
                redact(f"{path}: cannot be opened ({gdal_message(exc)}); check it and run again")
            ) from None
        with src:
            yield src


def gdal_message(exc: BaseException, path: str = "") -> str:
    """GDAL's own message behind a rasterio error, on one line and without ``path``'s prefix.

    rasterio wraps GDAL's errors in a generic "Read failed. See previous exception for details."
    whose cause holds the message that says what is wrong, e.g. ``IReadBlock failed at X offset
    3, Y offset 1: TIFFReadEncodedTile() failed.``
    """
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return first_line(exc).removeprefix(f"{path}, ") if path else first_line(exc)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
