"""Read a GeoPackage written by ``geoseg run`` back into memory, checking that it is one.

A geoseg output holds one MultiPolygon layer per class with the columns of
:data:`geoseg.tasks.write.OBJECT_FIELDS`, a non-spatial ``summary`` table (source, class_name,
count, total_area_m2) and a one-row ``run`` table. Anything else (a missing file, a file GDAL
cannot open, a GeoPackage from another tool) is refused with one line naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyogrio
import pyogrio.errors
import pyogrio.raw
import pyproj
import shapely

from geoseg.errors import GeosegError
from geoseg.tasks.reading import first_line
from geoseg.tasks.write import OBJECT_FIELDS, RESERVED_TABLES, ObjectBatch

__all__ = ["GeoPackageError", "Results", "read_results"]

_SUMMARY_FIELDS = ("source", "class_name", "count", "total_area_m2")
_NOT_GEOSEG = "is not a geoseg output"


class GeoPackageError(GeosegError, ValueError):
    """A GeoPackage to read is missing, unreadable or not written by ``geoseg run``."""


@dataclass(frozen=True, eq=False)
class Results:
    """The content of a geoseg output GeoPackage.

    Attributes
    ----------
    path : Path
        The GeoPackage, as given.
    crs_wkt : str
        WKT of the CRS of every class layer (the output CRS of the run).
    class_names : tuple of str
        Class layers, in the GeoPackage's layer order.
    sources : tuple of str
        Source rasters as recorded by the run (paths as given to ``geoseg run``), in the order of
        the ``summary`` table, followed by any other source found in the class layers.
    objects : ObjectBatch
        Every object of every class layer, layer by layer in ``class_names`` order, rows in
        layer order; geometries are MultiPolygons in ``crs_wkt``.
    run : dict of str to str, int, float or None
        The single row of the ``run`` table (empty if the table has no row).
    """

    path: Path
    crs_wkt: str
    class_names: tuple[str, ...]
    sources: tuple[str, ...]
    objects: ObjectBatch
    run: dict[str, str | int | float | None] = field(default_factory=dict)

    def rows_of(self, class_name: str) -> npt.NDArray[np.bool_]:
        """Boolean row selector of the objects of one class."""
        selected: npt.NDArray[np.bool_] = self.objects.class_name == class_name
        return selected


def read_results(path: Path) -> Results:
    """Read a ``geoseg run`` GeoPackage and check that it is one.

    Parameters
    ----------
    path : Path
        The GeoPackage.

    Returns
    -------
    Results

    Raises
    ------
    GeoPackageError
        If the file is missing, is a folder, is not a GeoPackage, or lacks the ``summary`` and
        ``run`` tables or a class layer with geoseg's columns. The message names ``path``.
    """
    if not path.exists():
        raise GeoPackageError(f"{path} does not exist")
    if path.is_dir():
        raise GeoPackageError(f"{path} is a folder, not a GeoPackage")
    try:
        layers = pyogrio.list_layers(path)
        driver = pyogrio.read_info(path, layer=0)["driver"] if len(layers) else None
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise GeoPackageError(f"{path} is not a GeoPackage ({first_line(exc)})") from exc
    if driver != "GPKG":
        raise GeoPackageError(f"{path} is not a GeoPackage (GDAL reads it as {driver})")
    tables = {str(name): geometry for name, geometry in layers}
    missing = [name for name in RESERVED_TABLES if name not in tables]
    if missing:
        raise GeoPackageError(
            f"{path} {_NOT_GEOSEG}: it has no {' or '.join(missing)} table; "
            "make one with geoseg run"
        )
    class_names = tuple(
        name
        for name, geometry in tables.items()
        if geometry is not None and name not in RESERVED_TABLES
    )
    if not class_names:
        raise GeoPackageError(f"{path} {_NOT_GEOSEG}: it has no class layer")
    crs_wkt, columns = _read_class_layers(path, class_names)
    summary = _read_table(path, "summary", _SUMMARY_FIELDS)
    run = _read_table(path, "run", ())
    recorded = [str(source) for source in summary["source"].tolist()]
    found = [str(source) for source in columns["source"].tolist()]
    return Results(
        path=path,
        crs_wkt=crs_wkt,
        class_names=class_names,
        sources=tuple(dict.fromkeys([*recorded, *found])),
        objects=ObjectBatch(**columns),
        run={name: _scalar(values[0]) for name, values in run.items() if len(values)},
    )


def _read_class_layers(path: Path, class_names: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """Concatenate the class layers' columns; check they share geoseg's columns and one CRS."""
    parts: dict[str, list[npt.NDArray[np.generic]]] = {
        name: [] for name in ("geometry", *OBJECT_FIELDS)
    }
    crs_wkts = set()
    for name in class_names:
        try:
            meta, _, wkb, values = pyogrio.raw.read(path, layer=name)
        except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
            raise GeoPackageError(
                f"{path}: layer {name!r} cannot be read ({first_line(exc)})"
            ) from exc
        fields = [str(f) for f in meta["fields"]]
        absent = [f for f in OBJECT_FIELDS if f not in fields]
        if absent:
            raise GeoPackageError(
                f"{path} {_NOT_GEOSEG}: layer {name!r} lacks column(s) {', '.join(absent)}"
            )
        if meta["crs"] is None:
            raise GeoPackageError(f"{path}: layer {name!r} has no CRS")
        crs_wkts.add(pyproj.CRS(meta["crs"]).to_wkt())
        count = len(values[0]) if values else 0
        geometry = shapely.from_wkb(wkb) if wkb is not None else np.empty(count, dtype=object)
        parts["geometry"].append(np.asarray(geometry, dtype=object))
        for column in OBJECT_FIELDS:
            value = values[fields.index(column)]
            string = column in ("object_id", "class_name", "source")
            parts[column].append(value.astype(object if string else np.float64))
    if len(crs_wkts) > 1:
        raise GeoPackageError(f"{path}: class layers are in different CRSs: {sorted(crs_wkts)}")
    return crs_wkts.pop(), {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _read_table(
    path: Path, name: str, required: tuple[str, ...]
) -> dict[str, npt.NDArray[np.generic]]:
    """A non-spatial table's columns by name, refusing one that lacks ``required`` columns."""
    try:
        meta, _, _, values = pyogrio.raw.read(path, layer=name, read_geometry=False)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise GeoPackageError(f"{path}: table {name!r} cannot be read ({first_line(exc)})") from exc
    columns = {str(f): v for f, v in zip(meta["fields"], values, strict=True)}
    absent = [f for f in required if f not in columns]
    if absent:
        raise GeoPackageError(
            f"{path} {_NOT_GEOSEG}: table {name!r} lacks column(s) {', '.join(absent)}"
        )
    return columns


def _scalar(value: object) -> str | int | float | None:
    """A numpy scalar from a table as a plain Python value."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)
