"""Ground area and count of objects per class inside zones (parcels, districts, any polygons).

Zones come from any vector file GDAL reads (GeoPackage, GeoJSON, Shapefile), in any CRS. They
are reprojected to the output's CRS (edges densified first, so straight zone edges stay close
to what they were), every object is cut by every zone it overlaps, and each piece is measured
with the same geodesic measurement as the objects themselves
(:func:`geoseg.tasks.measure.measure_geodesic`). An object straddling two zones thus adds each
zone only the area inside it, and the pieces add up to the object. Zone rows sharing a key are
one zone (their union), so a parcel stored in several rows is never counted twice; distinct
zones that overlap each other each count the objects inside them.

Counts are of whole objects: an object is counted in the zone holding its representative point
(``shapely.point_on_surface``; on a border shared by zones, the first of them in the file), so
each object is counted once even when its area is split.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyogrio
import pyogrio.errors
import pyogrio.raw
import pyproj
import shapely

from geoseg.errors import GeosegError, OutputError
from geoseg.reports.export import replacing
from geoseg.reports.results import Results
from geoseg.tasks.measure import measure_geodesic
from geoseg.tasks.reading import first_line

__all__ = [
    "DENSIFY_ZONE_M",
    "ZoneArea",
    "ZoneError",
    "Zones",
    "format_zones_csv",
    "measure_zones",
    "read_zones",
    "split_by_zones",
    "write_zones",
    "zone_columns",
]

DENSIFY_ZONE_M = 10.0
"""Longest zone edge (metres on the ground, or the angle spanning that) kept straight when
zones are reprojected; longer edges are split first."""

_EARTH_RADIUS_M = 6_371_008.8
_POLYGONAL = (3, 6)


class ZoneError(GeosegError, ValueError):
    """A zones file is missing, unreadable, has no such column or layer, or holds no polygons."""


@dataclass(frozen=True, eq=False)
class Zones:
    """Zones read from a file, one per distinct key.

    Attributes
    ----------
    path : Path
        The zones file, as given.
    by : str
        The attribute naming each zone.
    keys : ndarray of object
        One key per zone, in order of first appearance in the file.
    geometry : ndarray of object
        Each zone's (Multi)Polygon in ``crs``: the union of the file's rows with that key.
    crs : pyproj.CRS
        CRS of the zones file.
    """

    path: Path
    by: str
    keys: npt.NDArray[np.object_]
    geometry: npt.NDArray[np.object_]
    crs: pyproj.CRS

    def to_crs(self, crs: pyproj.CRS) -> npt.NDArray[np.object_]:
        """The zone geometries in ``crs``, edges split to :data:`DENSIFY_ZONE_M` first."""
        if self.crs == crs:
            return self.geometry
        axis = self.crs.axis_info[0] if self.crs.axis_info else None
        factor = axis.unit_conversion_factor if axis is not None else 1.0
        step = DENSIFY_ZONE_M / (_EARTH_RADIUS_M if self.crs.is_geographic else 1.0) / factor
        transformer = pyproj.Transformer.from_crs(self.crs, crs, always_xy=True)
        dense = shapely.segmentize(self.geometry, step)
        moved = shapely.transform(
            dense, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
        )
        # Zones the target CRS cannot express (coordinates become infinite) overlap nothing.
        finite = np.array([np.isfinite(shapely.get_coordinates(g)).all() for g in moved])
        moved[~finite] = shapely.MultiPolygon()
        return _polygonal(shapely.make_valid(moved))


@dataclass(frozen=True)
class ZoneArea:
    """Objects of every class inside one zone.

    Attributes
    ----------
    key : str, int or float
        The zone's value of the ``by`` attribute.
    zone_area_m2 : float
        Geodesic ground area of the zone itself, square metres.
    area_m2 : dict of str to float
        Per class, the ground area of the objects' parts inside the zone, square metres.
    count : dict of str to int
        Per class, the objects whose representative point lies in the zone.
    """

    key: str | int | float
    zone_area_m2: float
    area_m2: dict[str, float]
    count: dict[str, int]


def read_zones(path: Path, by: str, layer: str | None = None) -> Zones:
    """Read zones keyed by the attribute ``by`` from a vector file.

    Parameters
    ----------
    path : Path
        Any polygon file GDAL reads: GeoPackage, GeoJSON, Shapefile, ...
    by : str
        The attribute holding each zone's key (a parcel id, a district name).
    layer : str, optional
        The layer to read; needed when the file has several.

    Raises
    ------
    ZoneError
        One line naming ``path``: missing or unreadable file, several layers and no ``layer``,
        no such layer or column, no CRS, or geometries that are not polygons.
    """
    if not path.exists():
        raise ZoneError(f"{path} does not exist")
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    except (pyogrio.errors.DataSourceError, OSError) as exc:
        raise ZoneError(f"{path} cannot be read as vector data ({first_line(exc)})") from exc
    if layer is None and len(layers) > 1:
        raise ZoneError(
            f"{path} has {len(layers)} layers ({', '.join(layers)}); choose one with --layer"
        )
    if layer is not None and layer not in layers:
        raise ZoneError(f"{path} has no layer {layer!r}; its layers are {', '.join(layers)}")
    try:
        meta, _, wkb, values = pyogrio.raw.read(path, layer=layer or layers[0])
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise ZoneError(f"{path} cannot be read ({first_line(exc)})") from exc
    fields = [str(name) for name in meta["fields"]]
    if by not in fields:
        raise ZoneError(
            f"{path} has no column {by!r} for --by; its columns are {', '.join(fields) or 'none'}"
        )
    if meta["crs"] is None:
        raise ZoneError(f"{path} has no CRS; assign one (e.g. ogr2ogr -a_srs) first")
    geometry = np.asarray(shapely.from_wkb(wkb), dtype=object) if wkb is not None else None
    if geometry is None or shapely.is_missing(geometry).all():
        raise ZoneError(f"{path} holds no geometries")
    present = ~shapely.is_missing(geometry)
    if not np.isin(shapely.get_type_id(geometry[present]), _POLYGONAL).all():
        raise ZoneError(f"{path}: zones must be polygons or multipolygons")
    geometry = _polygonal(shapely.make_valid(geometry[present]))
    rows_of: dict[str | int | float, list[int]] = {}
    for row, key in enumerate(values[fields.index(by)][present].tolist()):
        rows_of.setdefault(_plain(key), []).append(row)
    zones = [
        _polygonal(np.array([shapely.union_all(geometry[rows])]))[0]
        if len(rows) > 1
        else geometry[rows[0]]
        for rows in rows_of.values()
    ]
    return Zones(
        path=path,
        by=by,
        keys=np.array(list(rows_of), dtype=object),
        geometry=np.array(zones, dtype=object),
        crs=pyproj.CRS(meta["crs"]),
    )


def _plain(value: object) -> str | int | float:
    """A key as a plain Python value (numpy scalars unwrapped, None as an empty string)."""
    if value is None:
        return ""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str | int | float):
        return value
    return str(value)


def split_by_zones(
    geometry: npt.NDArray[np.object_], zones: npt.NDArray[np.object_]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.object_]]:
    """Cut polygons by zones in the same CRS: every (object, zone) overlap and its piece.

    Returns
    -------
    objects, zone : ndarray of int
        Index of the object and of the zone of each piece.
    pieces : ndarray of object
        The polygonal part of each object ∩ zone (edges and points where they only touch are
        dropped; pieces with no area are left out).

    Examples
    --------
    >>> import numpy as np, shapely
    >>> square = shapely.box(0, 0, 2, 2)
    >>> halves = np.array([shapely.box(-1, -1, 1, 3), shapely.box(1, -1, 3, 3)])
    >>> _, zone, pieces = split_by_zones(np.array([square]), halves)
    >>> zone.tolist(), shapely.area(pieces).tolist()
    ([0, 1], [2.0, 2.0])
    """
    tree = shapely.STRtree(zones)
    objects, zone = tree.query(geometry, predicate="intersects")
    pieces = _polygonal(shapely.intersection(geometry[objects], zones[zone]))
    kept = shapely.area(pieces) > 0
    return objects[kept], zone[kept], pieces[kept]


def _polygonal(geoms: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """Each geometry's polygonal part as a MultiPolygon (empty when it has none)."""
    parts, owner = shapely.get_parts(geoms, return_index=True)
    keep = np.isin(shapely.get_type_id(parts), _POLYGONAL)
    result = np.array([shapely.MultiPolygon()] * len(geoms), dtype=object)
    polygons = shapely.get_parts(parts[keep])
    owners = np.repeat(owner[keep], shapely.get_num_geometries(parts[keep]))
    for number in np.unique(owners).tolist():
        result[number] = shapely.multipolygons(polygons[owners == number])
    return result


def measure_zones(results: Results, zones: Zones) -> list[ZoneArea]:
    """Area and count of each class's objects inside each zone.

    Zones are reprojected to the output's CRS; pieces are measured on the ellipsoid of that CRS
    like the objects' own ``area_m2``. Zones that overlap no object (another place, another
    CRS's extent) get zero areas and counts.

    Returns
    -------
    list of ZoneArea
        One per zone, in the zones' order; per-class dictionaries in ``results.class_names``
        order.
    """
    crs = pyproj.CRS(results.crs_wkt)
    zone_geometry = zones.to_crs(crs)
    zone_area, _ = measure_geodesic(zones.geometry, zones.crs)
    size = len(zones.keys)
    area = {name: np.zeros(size) for name in results.class_names}
    count = {name: np.zeros(size, dtype=np.int64) for name in results.class_names}
    objects = results.objects
    tree = shapely.STRtree(zone_geometry)
    for name in results.class_names:
        geometry = objects.geometry[results.rows_of(name)]
        if geometry.size == 0:
            continue
        _, zone, pieces = split_by_zones(geometry, zone_geometry)
        piece_area, _ = measure_geodesic(pieces, crs)
        area[name] += np.bincount(zone, weights=piece_area, minlength=size)
        points = shapely.point_on_surface(geometry)
        point, holder = tree.query(points, predicate="intersects")
        # A point on a border shared by two zones counts in the first of them only.
        order = np.lexsort((holder, point))
        _, first = np.unique(point[order], return_index=True)
        count[name] += np.bincount(holder[order][first], minlength=size)
    return [
        ZoneArea(
            key=zones.keys[number],
            zone_area_m2=float(zone_area[number]),
            area_m2={name: float(area[name][number]) for name in results.class_names},
            count={name: int(count[name][number]) for name in results.class_names},
        )
        for number in range(size)
    ]


def zone_columns(by: str, class_names: Sequence[str]) -> list[str]:
    """Output columns: the key, the zone's area, then ``<class>_area_m2`` and ``<class>_count``."""
    columns = [by, "zone_area_m2"]
    for name in class_names:
        columns += [f"{name}_area_m2", f"{name}_count"]
    return columns


def _rows(rows: Sequence[ZoneArea], class_names: Sequence[str]) -> list[list[str | int | float]]:
    table: list[list[str | int | float]] = []
    for row in rows:
        values: list[str | int | float] = [row.key, row.zone_area_m2]
        for name in class_names:
            values += [row.area_m2[name], row.count[name]]
        table.append(values)
    return table


def format_zones_csv(rows: Sequence[ZoneArea], by: str, class_names: Sequence[str]) -> str:
    """Rows as CSV with a header of :func:`zone_columns`, full precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(zone_columns(by, class_names))
    writer.writerows(_rows(rows, class_names))
    return buffer.getvalue()


def write_zones(
    rows: Sequence[ZoneArea],
    zones: Zones,
    class_names: Sequence[str],
    path: Path,
    overwrite: bool = False,
) -> None:
    """Write rows atomically: CSV for ``.csv``, else a GeoPackage layer ``zones`` that keeps each
    zone's geometry (MultiPolygon, in the zones file's CRS) beside the columns.

    Raises
    ------
    OutputError
        If ``path`` exists without ``overwrite`` or cannot be written; nothing is left behind.
    """
    with replacing(path, overwrite) as temp:
        if path.suffix.lower() == ".csv":
            temp.write_text(format_zones_csv(rows, zones.by, class_names), encoding="utf-8")
            return
        table = _rows(rows, class_names)
        columns = zone_columns(zones.by, class_names)
        data = [_key_column([row.key for row in rows])] + [
            np.array([line[i] for line in table]) for i in range(1, len(columns))
        ]
        try:
            pyogrio.raw.write(
                temp,
                shapely.to_wkb(zones.geometry),
                data,
                fields=columns,
                layer="zones",
                driver="GPKG",
                geometry_type="MultiPolygon",
                crs=zones.crs.to_wkt(),
            )
        except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
            raise OutputError(f"cannot write {path}: {first_line(exc)}") from exc


def _key_column(keys: Sequence[str | int | float]) -> npt.NDArray[np.generic]:
    """Keys typed as in the zones file: integers, reals, else text."""
    if all(isinstance(key, int) for key in keys):
        return np.array(keys, dtype=np.int64)
    if all(isinstance(key, int | float) for key in keys):
        return np.array(keys, dtype=np.float64)
    return np.array([str(key) for key in keys], dtype=object)
