"""Write measured objects to a GeoPackage atomically, one batch at a time.

Rows go to a hidden temporary GeoPackage beside the output; only when the run finishes is it
moved into place with ``os.replace``, so a reader never sees a half-written file and an existing
output is only replaced by a complete one. The output holds one MultiPolygon layer per class
(present even with no objects), a ``summary`` table (count and total area per source raster and
class), a one-row ``run`` table describing how the objects were made, a ``failures`` table
(rasters skipped and why), plus a default QGIS style per class layer (``layer_styles``,
:mod:`geoseg.tasks.styles`) and dataset metadata (:mod:`geoseg.tasks.metadata`).
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt
import pyogrio.errors
import pyogrio.raw
import shapely

from geoseg.errors import OptionsError, OutputError
from geoseg.tasks.metadata import add_metadata, class_layer_description
from geoseg.tasks.styles import add_layer_styles

__all__ = [
    "OBJECT_FIELDS",
    "RESERVED_TABLES",
    "GeoPackageWriter",
    "ObjectBatch",
    "RasterFailure",
    "SummaryRow",
    "check_class_names",
    "check_output",
]

OBJECT_FIELDS = ("object_id", "class_name", "score", "area_m2", "perimeter_m", "source")
"""Attribute columns of every class layer, in order."""

RESERVED_TABLES = ("summary", "run")
"""Non-spatial tables of the output; no class may take their names."""

_OWN_TABLES = (*RESERVED_TABLES, "failures", "layer_styles")
_STRING_FIELDS = frozenset({"object_id", "class_name", "source"})
_SYSTEM_PREFIXES = ("gpkg_", "rtree_", "sqlite_")
_LAYER_NAME = re.compile(r"\w(?:[\w .-]{0,62}[\w.-])?")
_POLYGON, _MULTIPOLYGON = 3, 6
_SIDE_FILES = ("", "-journal", "-wal", "-shm")


@dataclass(frozen=True, eq=False)
class ObjectBatch:
    """Rows for the output: one entry per object in every column.

    Attributes
    ----------
    geometry : ndarray of object
        Polygons or MultiPolygons in the output CRS.
    object_id, class_name, source : ndarray of str (object or unicode dtype)
        Stable object identifier, class name (one of the writer's classes), source raster path.
    score : ndarray of float
        Model confidence in [0, 1].
    area_m2, perimeter_m : ndarray of float
        Geodesic ground area (m²) and perimeter (m).
    """

    geometry: npt.NDArray[np.object_]
    object_id: npt.NDArray[np.object_ | np.str_]
    class_name: npt.NDArray[np.object_ | np.str_]
    score: npt.NDArray[np.floating]
    area_m2: npt.NDArray[np.floating]
    perimeter_m: npt.NDArray[np.floating]
    source: npt.NDArray[np.object_ | np.str_]

    def __post_init__(self) -> None:
        sizes = {}
        for field in fields(self):
            column = getattr(self, field.name)
            if not isinstance(column, np.ndarray) or column.ndim != 1:
                raise ValueError(f"ObjectBatch.{field.name} must be a 1-D numpy array")
            sizes[field.name] = column.size
        if len(set(sizes.values())) > 1:
            raise ValueError(f"ObjectBatch columns differ in length: {sizes}")

    def __len__(self) -> int:
        return int(self.geometry.size)


@dataclass(frozen=True)
class RasterFailure:
    """A source raster the run skipped, and the one-line reason (credentials redacted)."""

    source: str
    reason: str


@dataclass(frozen=True)
class SummaryRow:
    """Objects of one class found in one source raster."""

    source: str
    class_name: str
    count: int
    total_area_m2: float


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse an output that cannot be written, before any work is done.

    Raises
    ------
    OutputError
        If the output's folder is missing or not writable, the output is a folder, or it exists
        and ``overwrite`` is false. Messages use ``path`` as given.
    """
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"output folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {folder} is not writable; choose another output path")
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name such as {path / 'objects.gpkg'}")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it")


def check_class_names(class_names: Sequence[str]) -> None:
    """Refuse class names that cannot be GeoPackage layer names of the output.

    A name must be 1 to 64 letters, digits, ``_``, ``-``, ``.`` or inner spaces, must not start
    like SQLite's and GeoPackage's own tables (``gpkg_``, ``rtree_``, ``sqlite_``), must not be
    ``summary``, ``run``, ``failures`` or ``layer_styles``, and must differ from the other names
    ignoring case (SQLite table names are case-insensitive).

    Raises
    ------
    OptionsError
        Naming the first unusable class.
    """
    if not class_names:
        raise OptionsError("the model has no classes; the output needs at least one class layer")
    seen: dict[str, str] = {}
    for name in class_names:
        folded = name.casefold()
        if not _LAYER_NAME.fullmatch(name):
            why = "use 1 to 64 letters, digits, '_', '-', '.' or inner spaces"
        elif folded.startswith(_SYSTEM_PREFIXES):
            why = f"names starting with {', '.join(_SYSTEM_PREFIXES)} are reserved by GeoPackage"
        elif folded in _OWN_TABLES:
            why = f"{', '.join(_OWN_TABLES)} are the output's own tables"
        elif folded in seen:
            why = f"it clashes with class {seen[folded]!r} (layer names ignore case)"
        else:
            seen[folded] = name
            continue
        raise OptionsError(
            f"class name {name!r} cannot be a GeoPackage layer name: {why}; "
            "rename the class in the model's metadata"
        )


class GeoPackageWriter:
    """Stream object batches into a GeoPackage that appears only when complete.

    Use as a context manager: ``__enter__`` creates the temporary file with one empty layer per
    class, :meth:`add_source` and :meth:`add` append, and :meth:`finish` writes the ``summary``
    and ``run`` tables and moves the file into place. Leaving the block without ``finish`` (an
    exception, or a forgotten call) deletes the temporary file and leaves any existing output as
    it was.

    Parameters
    ----------
    path : Path
        Output GeoPackage.
    crs_wkt : str
        WKT of the output CRS, the CRS of every batch's geometries.
    class_names : sequence of str
        One layer per class, in this order.
    overwrite : bool
        Whether an existing output may be replaced (when :meth:`finish` succeeds).

    Raises
    ------
    OutputError
        If the output cannot be written (see :func:`check_output`).
    OptionsError
        If a class name cannot be a layer name (see :func:`check_class_names`).
    """

    def __init__(
        self, path: Path, crs_wkt: str, class_names: Sequence[str], overwrite: bool
    ) -> None:
        check_output(path, overwrite)
        check_class_names(class_names)
        self._path = path
        self._crs_wkt = crs_wkt
        self._class_names = tuple(class_names)
        self._overwrite = overwrite
        self._temp: Path | None = None
        self._finished = False
        self._count: dict[tuple[str, str], int] = {}
        self._area_m2: dict[tuple[str, str], float] = {}
        self._sources: list[str] = []

    def __enter__(self) -> GeoPackageWriter:
        if self._temp is not None or self._finished:
            raise RuntimeError("a GeoPackageWriter can only be entered once")
        token = secrets.token_hex(6)
        self._temp = self._path.with_name(f".{self._path.name}.{token}.partial.gpkg")
        empty: list[npt.NDArray[np.generic]] = [
            np.empty(0, dtype=object if name in _STRING_FIELDS else np.float64)
            for name in OBJECT_FIELDS
        ]
        for number, class_name in enumerate(self._class_names):
            self._write(
                class_name,
                np.empty(0, dtype=object),
                empty,
                OBJECT_FIELDS,
                append=number > 0,
                layer_items={"DESCRIPTION": class_layer_description(class_name)},
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._finished:
            self._discard()

    def add_source(self, source: str) -> None:
        """Register a source raster so the summary lists it even if it has no objects."""
        if source not in self._sources:
            self._sources.append(source)
            for class_name in self._class_names:
                self._count[source, class_name] = 0
                self._area_m2[source, class_name] = 0.0

    def add(self, batch: ObjectBatch) -> None:
        """Append a batch's rows to their class layers and to the running summary.

        Polygons are promoted to MultiPolygons. Sources not yet registered are registered.

        Raises
        ------
        ValueError
            If a class name is not one of the writer's or a geometry is not polygonal.
        OutputError
            If writing fails (disk full, ...); the temporary file is removed.
        """
        self._require_open()
        class_name = batch.class_name.astype(object)
        unknown = set(class_name.tolist()) - set(self._class_names)
        if unknown:
            raise ValueError(f"unknown class names {sorted(unknown)}; known: {self._class_names}")
        geometry = _multipolygons(batch.geometry)
        columns = (
            batch.object_id.astype(object),
            class_name,
            batch.score.astype(np.float64),
            batch.area_m2.astype(np.float64),
            batch.perimeter_m.astype(np.float64),
            batch.source.astype(object),
        )
        for source in dict.fromkeys(columns[5].tolist()):
            self.add_source(source)
        for name in self._class_names:
            rows = class_name == name
            if not rows.any():
                continue
            self._write(
                name,
                shapely.to_wkb(geometry[rows]),
                [column[rows] for column in columns],
                OBJECT_FIELDS,
                append=True,
            )
            sources = columns[5][rows]
            areas = columns[3][rows]
            for source in dict.fromkeys(sources.tolist()):
                mine = sources == source
                self._count[source, name] += int(mine.sum())
                self._area_m2[source, name] += float(areas[mine].sum())

    def finish(
        self,
        run: Mapping[str, str | int | float | None],
        failures: Sequence[RasterFailure] = (),
    ) -> list[SummaryRow]:
        """Write the ``summary``, ``run`` and ``failures`` tables; move the GeoPackage into place.

        Parameters
        ----------
        run : mapping of str to str, int, float or None
            The ``run`` table's single row, one column per key in order.
        failures : sequence of RasterFailure
            Rasters the run skipped: the ``failures`` table (``source``, ``reason``), written
            even when empty.

        Returns
        -------
        list of SummaryRow
            One row per registered source and class, in registration and class order.

        Raises
        ------
        OutputError
            If writing or moving fails, or the output appeared meanwhile and overwrite is off.
        """
        temp = self._require_open()
        summary = [
            SummaryRow(
                source=source,
                class_name=name,
                count=self._count[source, name],
                total_area_m2=self._area_m2[source, name],
            )
            for source in self._sources
            for name in self._class_names
        ]
        self._write(
            "summary",
            None,
            [
                np.array([row.source for row in summary], dtype=object),
                np.array([row.class_name for row in summary], dtype=object),
                np.array([row.count for row in summary], dtype=np.int64),
                np.array([row.total_area_m2 for row in summary], dtype=np.float64),
            ],
            ("source", "class_name", "count", "total_area_m2"),
            append=True,
        )
        self._write(
            "failures",
            None,
            [
                np.array([failure.source for failure in failures], dtype=object),
                np.array([failure.reason for failure in failures], dtype=object),
            ],
            ("source", "reason"),
            append=True,
        )
        self._write("run", None, _run_columns(run), tuple(run), append=True)
        try:
            add_layer_styles(temp, self._class_names)
            add_metadata(temp, self._class_names, run)
        except sqlite3.Error as exc:
            self._discard()
            raise OutputError(f"cannot write styles and metadata to {self._path}: {exc}") from exc
        if not self._overwrite and self._path.exists():
            self._discard()
            raise OutputError(f"{self._path} already exists; pass --overwrite to replace it")
        try:
            os.replace(temp, self._path)
        except OSError as exc:
            self._discard()
            raise OutputError(f"cannot move the finished output into {self._path}: {exc}") from exc
        self._finished = True
        self._temp = None
        return summary

    def _require_open(self) -> Path:
        if self._finished or self._temp is None:
            raise RuntimeError("GeoPackageWriter is not open: use it in a with block, finish once")
        return self._temp

    def _write(
        self,
        layer: str,
        wkb: npt.NDArray[np.object_] | None,
        columns: Sequence[npt.NDArray[np.generic]],
        names: Sequence[str],
        append: bool,
        layer_items: Mapping[str, str] | None = None,
    ) -> None:
        temp = self._require_open()
        try:
            pyogrio.raw.write(
                temp,
                wkb,
                list(columns),
                fields=list(names),
                layer=layer,
                driver="GPKG",
                geometry_type=None if wkb is None else "MultiPolygon",
                crs=None if wkb is None else self._crs_wkt,
                append=append,
                # GeoPackage 1.2 opens without warnings in QGIS builds on older GDAL (< 3.7).
                dataset_options=None if append else {"VERSION": "1.2"},
                layer_metadata=layer_items,
            )
        except (OSError, pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
            self._discard()
            raise OutputError(f"cannot write {self._path}: {exc}") from exc

    def _discard(self) -> None:
        if self._temp is not None:
            for suffix in _SIDE_FILES:
                Path(f"{self._temp}{suffix}").unlink(missing_ok=True)
        self._temp = None


def _multipolygons(geometry: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """Promote Polygons to single-part MultiPolygons; reject anything not polygonal."""
    types = shapely.get_type_id(geometry)
    if not np.isin(types, (_POLYGON, _MULTIPOLYGON)).all():
        raise ValueError("ObjectBatch.geometry must hold only Polygons and MultiPolygons")
    result = np.asarray(geometry, dtype=object).copy()
    polygons = types == _POLYGON
    if polygons.any():
        result[polygons] = shapely.multipolygons(result[polygons][:, np.newaxis])
    return result


def _run_columns(run: Mapping[str, str | int | float | None]) -> list[npt.NDArray[np.generic]]:
    """One single-value column per key, typed from the value (``None`` becomes a NULL string)."""
    if not run:
        raise ValueError("the run table needs at least one column")
    folded = [key.casefold() for key in run]
    if len(set(folded)) < len(folded) or "fid" in folded or "" in folded:
        raise ValueError(f"run keys must be distinct (ignoring case), non-empty, not fid: {folded}")
    columns: list[npt.NDArray[np.generic]] = []
    for value in run.values():
        if isinstance(value, bool):
            columns.append(np.array([value], dtype=np.bool_))
        elif isinstance(value, int):
            columns.append(np.array([value], dtype=np.int64))
        elif isinstance(value, float):
            columns.append(np.array([value], dtype=np.float64))
        else:
            columns.append(np.array([value], dtype=object))
    return columns
