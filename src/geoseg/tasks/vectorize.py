"""Turn instance-label tiles into polygons and move them from pixel space into the raster's CRS.

Pixel space is the global raster's: x = column, y = row, origin at the raster's top-left corner,
pixel (r, c) covers [c, c+1) x [r, r+1). Polygons built here have integer vertices in that space,
so pieces of one object polygonized in different tiles union back exactly; they only reach the
CRS (through the raster's affine transform) after stitching and simplification.
"""

from __future__ import annotations

from itertools import chain

import numpy as np
import numpy.typing as npt
import rasterio.features
import shapely
from affine import Affine

from geoseg.errors import OptionsError

__all__ = ["label_polygons", "polygonize_labels", "simplify_pixels", "to_crs_geometries"]

_MAX_LABEL = 2**31 - 1

_SHAPES_DTYPES = (np.uint8, np.uint16, np.int16, np.int32)
"""Integer types ``rasterio.features.shapes`` takes as they are; others are converted to int32."""


def polygonize_labels(
    labels: npt.NDArray[np.integer],
    col_off: int,
    row_off: int,
    region: tuple[int, int, int, int] | None = None,
) -> dict[int, shapely.Geometry]:
    """Polygonize every nonzero label of a tile in global pixel space: ``label_polygons`` as a
    mapping of label to geometry.

    >>> import numpy as np
    >>> geoms = polygonize_labels(np.array([[0, 7], [7, 0]], dtype=np.uint32), 10, 20)
    >>> geoms[7].geom_type, geoms[7].area
    ('MultiPolygon', 2.0)
    """
    unique, geoms = label_polygons(labels, col_off, row_off, region)
    return dict(zip(unique.tolist(), geoms.tolist(), strict=True))


def label_polygons(
    labels: npt.NDArray[np.integer],
    col_off: int,
    row_off: int,
    region: tuple[int, int, int, int] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.object_]]:
    """Polygonize every nonzero label of a tile in global pixel space.

    Pixels are joined through their edges (4-connectivity), so a label whose pixels touch only
    at corners becomes a MultiPolygon whose parts share those corners. Holes are kept.

    Parameters
    ----------
    labels : ndarray of shape (height, width), unsigned or signed integers
        Instance labels of the tile; 0 is background. Labels must be below 2**31.
    col_off, row_off : int
        Global pixel column and row of the tile's top-left pixel.
    region : tuple of int (col0, row0, col1, row1), optional
        Half-open box in global pixels; only the tile's pixels inside it are polygonized (the
        array is cropped, geometries are never clipped). ``None`` means the whole tile.

    Returns
    -------
    labels : ndarray of int64
        The labels present in the (cropped) tile, ascending; empty when the region misses it.
    geometries : ndarray of object
        For each, one valid shapely Polygon or MultiPolygon with integer vertices in global pixel
        space; its area is the label's pixel count.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must be a 2-D array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must have an integer dtype, got {labels.dtype}")
    height, width = labels.shape
    row0, col0, row1, col1 = 0, 0, height, width
    if region is not None:
        rcol0, rrow0, rcol1, rrow1 = region
        col0, row0 = max(rcol0 - col_off, 0), max(rrow0 - row_off, 0)
        col1, row1 = min(rcol1 - col_off, width), min(rrow1 - row_off, height)
        if col1 <= col0 or row1 <= row0:
            return _no_polygons()
    window = labels[row0:row1, col0:col1]
    if window.size == 0:
        return _no_polygons()
    if window.max() > _MAX_LABEL:
        raise ValueError(f"labels must be below 2**31, got {window.max()}")
    if np.issubdtype(window.dtype, np.signedinteger) and window.min() < 0:
        raise ValueError(f"labels must not be negative, got {window.min()}")
    source = window if window.dtype in _SHAPES_DTYPES else window.astype(np.int32)
    foreground = source != 0
    if not foreground.any():
        return _no_polygons()
    shapes = rasterio.features.shapes(
        source,
        mask=foreground,
        connectivity=4,
        transform=Affine.translation(col_off + col0, row_off + row0),
    )
    # Building all rings in one vectorised call converts GeoJSON several times faster than
    # shapely.geometry.shape per feature, which matters because this runs on every tile.
    coords: list[tuple[float, float]] = []
    ring_sizes: list[int] = []
    ring_parts: list[int] = []
    part_values: list[float] = []
    for part, (geojson, value) in enumerate(shapes):
        for ring in geojson["coordinates"]:
            coords.extend(ring)
            ring_sizes.append(len(ring))
            ring_parts.append(part)
        part_values.append(value)
    xy = np.fromiter(chain.from_iterable(coords), dtype=np.float64, count=2 * len(coords))
    rings = shapely.linearrings(
        xy.reshape(-1, 2), indices=np.repeat(np.arange(len(ring_sizes)), ring_sizes)
    )
    parts = shapely.polygons(rings, indices=np.asarray(ring_parts))
    unique, geoms = _group_parts(parts, np.asarray(part_values, dtype=np.int64))
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        # "structure" keeps only areas, so the result stays a Polygon or MultiPolygon.
        geoms[invalid] = shapely.make_valid(
            geoms[invalid], method="structure", keep_collapsed=False
        )
    return unique, geoms


def _no_polygons() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.object_]]:
    """No labels, no geometries."""
    return np.empty(0, dtype=np.int64), np.empty(0, dtype=object)


def _group_parts(
    parts: npt.NDArray[np.object_], values: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.object_]]:
    """Join the polygons that share a label into one geometry per label, labels ascending."""
    order = np.argsort(values, kind="stable")
    parts, values = parts[order], values[order]
    unique, first, counts = np.unique(values, return_index=True, return_counts=True)
    geoms = parts[first]
    several = counts > 1
    if several.any():
        in_multi = np.repeat(several, counts)
        group = np.repeat(np.arange(unique.size), counts)[in_multi]
        geoms[several] = shapely.multipolygons(
            parts[in_multi], indices=np.unique(group, return_inverse=True)[1]
        )
    return unique, geoms


def to_crs_geometries(geoms: npt.NDArray[np.object_], transform: Affine) -> npt.NDArray[np.object_]:
    """Map geometries from global pixel space into the raster's CRS with its affine transform.

    Every coordinate becomes ``transform @ (x, y)`` evaluated in the same floating-point order as
    ``affine.Affine``, so a pixel corner (col, row) lands exactly where the transform puts it and
    objects that shared edges in pixel space still share them in the CRS.

    Parameters
    ----------
    geoms : ndarray of object
        Shapely geometries in global pixel space (x = column, y = row).
    transform : affine.Affine
        The raster's transform from pixel (col, row) to CRS coordinates.

    Returns
    -------
    ndarray of object
        The geometries in the raster's CRS, same shape as ``geoms``; missing values stay ``None``.
    """
    a, b, c, d, e, f = (float(value) for value in transform[:6])

    def apply(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack((x * a + y * b + c, x * d + y * e + f))

    result: npt.NDArray[np.object_] = shapely.transform(np.asarray(geoms, dtype=object), apply)
    return result


def simplify_pixels(geoms: npt.NDArray[np.object_], tolerance_px: float) -> npt.NDArray[np.object_]:
    """Simplify polygons in pixel space without changing their topology.

    Parameters
    ----------
    geoms : ndarray of object
        Polygons or MultiPolygons in global pixel space.
    tolerance_px : float
        Largest distance (pixels) a vertex may move; 0 only drops collinear vertices, which
        turns a staircase of pixel edges into its corner points and leaves the area unchanged.

    Returns
    -------
    ndarray of object
        Valid simplified geometries, same shape as ``geoms``. A geometry that simplification
        would make empty or invalid (a sliver a few pixels wide) is returned unchanged, so
        non-empty input never becomes empty.

    Raises
    ------
    OptionsError
        If ``tolerance_px`` is negative or not finite.
    """
    if not np.isfinite(tolerance_px) or tolerance_px < 0:
        raise OptionsError(
            f"simplification tolerance must be a finite number >= 0 pixels, got {tolerance_px}"
        )
    source = np.asarray(geoms, dtype=object)
    simplified: npt.NDArray[np.object_] = shapely.simplify(
        source, tolerance_px, preserve_topology=True
    )
    broken = ~shapely.is_missing(source) & (
        shapely.is_empty(simplified) | ~shapely.is_valid(simplified)
    )
    simplified[broken] = source[broken]
    return simplified
