"""Ground areas and perimeters of polygons, measured on the ellipsoid whatever the raster's CRS.

Planar areas are only right in an equal-area projection: in Web Mercator (EPSG:3857) at 60°N a
square metre on the map is a quarter of a square metre on the ground, and in a geographic CRS
the planar "area" is in square degrees. So every polygon is reprojected to the longitude and
latitude of its CRS's own geodetic datum and measured there with geodesics (``pyproj.Geod``,
Karney's algorithm), which is exact on the ellipsoid up to the edge densification below.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import pyproj
import shapely
from affine import Affine
from pyproj.exceptions import ProjError

from geoseg.errors import RasterError
from geoseg.tasks.reading import RasterInfo
from geoseg.tasks.tiling import resampling_scale
from geoseg.tasks.vectorize import to_crs_geometries

__all__ = [
    "DENSIFY_M",
    "area_method",
    "densify",
    "measure_geodesic",
    "model_scale",
    "pixel_size_m",
]

DENSIFY_M = 1000.0
"""Longest polygon edge (metres, or the angle spanning that on the Earth) measured as one
geodesic. An edge is straight in the raster's CRS but a geodesic bends in most projections: in
Web Mercator at 60°N, measuring only the corners of a square 500 km on a side is off by 0.3%;
with edges split to 1 km the error is below 1e-8. Pixel-scale edges are left alone, so measuring
stays fast."""

_EARTH_RADIUS_M = 6_371_008.8
_POLYGON_TYPES = (3, 6)


@dataclass(frozen=True)
class _Geodesy:
    """What measuring in one CRS needs, built once per CRS."""

    to_lonlat: pyproj.Transformer
    geod: pyproj.Geod
    segment_length: float


def _crs_label(crs: pyproj.CRS) -> str:
    authority = crs.to_authority()
    return f"{authority[0]}:{authority[1]}" if authority else crs.name


def _geodetic(crs: pyproj.CRS) -> tuple[pyproj.CRS, pyproj.Geod]:
    """The longitude/latitude CRS under ``crs`` and the geodesics on its ellipsoid."""
    geodetic = crs.geodetic_crs
    geod = geodetic.get_geod() if geodetic is not None else None
    if geodetic is None or geod is None:
        raise RasterError(
            f"CRS {_crs_label(crs)!r} has no geodetic datum, so ground areas cannot be measured; "
            "georeference the raster in a CRS tied to the Earth first"
        )
    return geodetic, geod


@lru_cache(maxsize=32)
def _geodesy(crs: pyproj.CRS) -> _Geodesy:
    geodetic, geod = _geodetic(crs)
    try:
        to_lonlat = pyproj.Transformer.from_crs(crs, geodetic, always_xy=True)
    except ProjError as exc:
        raise RasterError(
            f"cannot convert CRS {_crs_label(crs)!r} to longitude/latitude: {exc}"
        ) from exc
    axis = crs.axis_info[0] if crs.axis_info else None
    factor = axis.unit_conversion_factor if axis is not None else 1.0
    if crs.is_geographic:
        segment_length = DENSIFY_M / _EARTH_RADIUS_M / factor
    else:
        segment_length = DENSIFY_M / factor
    return _Geodesy(to_lonlat=to_lonlat, geod=geod, segment_length=segment_length)


def measure_geodesic(
    geoms: npt.NDArray[np.object_], crs: pyproj.CRS
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Measure the ground area and perimeter of polygons on the ellipsoid of their CRS.

    Edges longer than :data:`DENSIFY_M` are split first (see :func:`densify`), then all
    coordinates are reprojected at once to longitude/latitude on ``crs``'s geodetic datum and
    every ring is measured with ``pyproj.Geod.polygon_area_perimeter`` on that datum's ellipsoid
    (WGS 84 for UTM, Bessel 1841 for EPSG:2056, ...).

    Parameters
    ----------
    geoms : ndarray of object, 1-D
        Polygons or MultiPolygons in ``crs`` with x = easting or longitude and y = northing or
        latitude, as rasterio and GDAL order them, even where the CRS declares latitude first
        (EPSG:4326); ``None`` and empty geometries are allowed.
    crs : pyproj.CRS
        CRS of the coordinates.

    Returns
    -------
    area_m2 : ndarray of float64
        Ground area in square metres: holes subtracted, parts of a MultiPolygon summed; 0 for
        ``None`` or empty geometries.
    perimeter_m : ndarray of float64
        Length in metres of all rings (exteriors and holes) of each geometry.

    Raises
    ------
    RasterError
        If ``crs`` has no geodetic datum (an engineering or local CRS) or its coordinates cannot
        be converted to longitude/latitude.

    Examples
    --------
    >>> import numpy as np, pyproj, shapely
    >>> square = shapely.box(500_000, 5_000_000, 500_100, 5_000_100)  # 100 m in UTM 32N
    >>> area, perimeter = measure_geodesic(np.array([square, shapely.Polygon()]),
    ...                                    pyproj.CRS("EPSG:32632"))
    >>> round(float(area[0]), -1), float(area[1])
    (10010.0, 0.0)
    """
    source = np.asarray(geoms, dtype=object)
    if source.ndim != 1:
        raise ValueError(f"geoms must be a 1-D array, got shape {source.shape}")
    present = ~shapely.is_missing(source)
    if not np.isin(shapely.get_type_id(source[present]), _POLYGON_TYPES).all():
        raise ValueError("measure_geodesic only measures Polygon and MultiPolygon geometries")
    area = np.zeros(source.size, dtype=np.float64)
    perimeter = np.zeros(source.size, dtype=np.float64)
    geodesy = _geodesy(crs)
    parts, part_geom = shapely.get_parts(source, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    if rings.size == 0:
        return area, perimeter
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    coords, coord_ring = densify(coords, coord_ring, geodesy.segment_length)
    lon, lat = geodesy.to_lonlat.transform(coords[:, 0], coords[:, 1])
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise RasterError(
            f"some polygons lie outside the valid area of CRS {_crs_label(crs)!r} and cannot be "
            "measured; check the raster's georeferencing"
        )
    # Rings come out closed; Geod closes them itself, so the repeated last vertex is dropped.
    ends = np.searchsorted(coord_ring, np.arange(rings.size), side="right")
    starts = np.concatenate(([0], ends[:-1]))
    ring_area = np.empty(rings.size, dtype=np.float64)
    ring_length = np.empty(rings.size, dtype=np.float64)
    polygon_area_perimeter = geodesy.geod.polygon_area_perimeter
    for i, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        ring_area[i], ring_length[i] = polygon_area_perimeter(
            lon[start : end - 1], lat[start : end - 1]
        )
    exterior = np.concatenate(([True], ring_part[1:] != ring_part[:-1]))
    signed = np.where(exterior, np.abs(ring_area), -np.abs(ring_area))
    ring_geom = part_geom[ring_part]
    area += np.bincount(ring_geom, weights=signed, minlength=source.size)
    perimeter += np.bincount(ring_geom, weights=ring_length, minlength=source.size)
    return area, perimeter


def densify(
    coords: npt.NDArray[np.float64], ring_of: npt.NDArray[np.intp], max_length: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """Split every ring edge longer than ``max_length`` into equal parts no longer than it.

    Works on the rings' coordinates (closed rings, ``ring_of`` naming each vertex's ring, as
    ``shapely.get_coordinates(..., return_index=True)`` gives them) rather than on geometries:
    ``shapely.segmentize`` also rebuilds each polygon's topology, which on an object of a
    million vertices takes longer than measuring it.

    >>> coords = np.array([[0.0, 0.0], [3.0, 0.0], [3.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    >>> densify(coords, np.zeros(5, dtype=np.intp), 1.5)[0].tolist()
    [[0.0, 0.0], [1.5, 0.0], [3.0, 0.0], [3.0, 1.0], [1.5, 1.0], [0.0, 1.0], [0.0, 0.0]]
    """
    following = np.r_[ring_of[1:] == ring_of[:-1], False]  # the vertex starts an edge
    step = np.zeros_like(coords)
    step[following] = np.diff(coords, axis=0)[following[:-1]]
    length = np.hypot(step[:, 0], step[:, 1])
    parts = np.maximum(np.ceil(length / max_length), 1).astype(np.intp)
    if (parts == 1).all():
        return coords, ring_of
    source = np.repeat(np.arange(len(coords)), parts)
    fraction = (np.arange(len(source)) - np.repeat(np.cumsum(parts) - parts, parts)) / parts[source]
    dense = coords[source] + step[source] * fraction[:, None]
    return dense, ring_of[source]


def area_method(crs: pyproj.CRS) -> str:
    """Describe how :func:`measure_geodesic` measures in ``crs``, for the run metadata.

    Raises
    ------
    RasterError
        If ``crs`` has no geodetic datum.

    Examples
    --------
    >>> import pyproj
    >>> area_method(pyproj.CRS("EPSG:32636"))  # doctest: +NORMALIZE_WHITESPACE
    'geodesic on the WGS 84 ellipsoid (pyproj.Geod), polygons reprojected from EPSG:32636 to
    WGS 84 longitude/latitude, edges densified to at most 1000 m'
    """
    geodetic, _ = _geodetic(crs)
    ellipsoid = geodetic.ellipsoid.name if geodetic.ellipsoid is not None else geodetic.name
    if crs.is_geographic:
        where = f"polygons measured in {_crs_label(crs)} longitude/latitude"
    else:
        where = f"polygons reprojected from {_crs_label(crs)} to {geodetic.name} longitude/latitude"
    return (
        f"geodesic on the {ellipsoid} ellipsoid (pyproj.Geod), {where}, "
        f"edges densified to at most {DENSIFY_M:.0f} m"
    )


def pixel_size_m(transform: Affine, crs: pyproj.CRS, width: int, height: int) -> float:
    """Ground size of one pixel at the raster's centre: the square root of its geodesic area.

    Used to turn options given in metres (simplification tolerance, minimum area) into pixels.
    For rasters in a geographic CRS or in Web Mercator the size varies with latitude, so the
    value is only right near the centre.

    Parameters
    ----------
    transform : affine.Affine
        The raster's transform from pixel (col, row) to ``crs`` coordinates.
    crs : pyproj.CRS
        The raster's CRS.
    width, height : int
        Raster size in pixels.

    Returns
    -------
    float
        Metres.

    Raises
    ------
    RasterError
        If ``crs`` has no geodetic datum.
    """
    if width < 1 or height < 1:
        raise ValueError(f"raster size must be positive, got {width} x {height} pixels")
    centre = shapely.box(width / 2 - 0.5, height / 2 - 0.5, width / 2 + 0.5, height / 2 + 0.5)
    area, _ = measure_geodesic(to_crs_geometries(np.array([centre]), transform), crs)
    return float(np.sqrt(area[0]))


def model_scale(raster: RasterInfo, gsd_m: float | None) -> float:
    """Model pixels per raster pixel for a model that expects ``gsd_m`` metres per pixel.

    1.0 when the model takes any resolution or the raster is close to it (see
    `geoseg.tasks.tiling.resampling_scale`); the raster's pixel size is taken at its centre.
    """
    if gsd_m is None:
        return 1.0
    crs = pyproj.CRS.from_wkt(raster.crs_wkt)
    return resampling_scale(pixel_size_m(raster.transform, crs, raster.width, raster.height), gsd_m)
