"""Export a geoseg output's objects to COCO JSON, GeoJSON, shapefiles or GeoParquet.

Every exporter writes to a hidden temporary file beside its target and renames it into place
when complete, like ``geoseg run``, so a failed export leaves no partial file and keeps an
existing one. Targets that exist are refused unless ``overwrite`` is true.

- **COCO** (:func:`coco_dataset`, :func:`write_coco`): instance-segmentation JSON in each source
  raster's pixel coordinates, for training and evaluating models. It needs the source rasters for
  their pixel grids.
- **GeoJSON** (:func:`write_geojson`): one RFC 7946 FeatureCollection, every class together, in
  WGS 84 longitude/latitude.
- **Shapefile** (:func:`write_shapefiles`): one ``.shp`` per class in a folder, with field names
  cut to the dBASE limit of 10 characters (:data:`SHAPEFILE_FIELDS`).
- **GeoParquet** (:func:`write_geoparquet`): one file, every class together, in the output's
  CRS; needs the ``geoparquet`` extra (geopandas and pyarrow).
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyogrio.errors
import pyogrio.raw
import pyproj
import shapely
from affine import Affine

from geoseg.errors import GeosegError, OptionsError, OutputError, RasterError
from geoseg.reports.results import Results
from geoseg.tasks.reading import RasterInfo, describe_raster, first_line
from geoseg.tasks.write import OBJECT_FIELDS, check_output

__all__ = [
    "EXPORTERS",
    "PIXEL_DECIMALS",
    "SHAPEFILE_FIELDS",
    "MissingExtraError",
    "coco_dataset",
    "locate_source",
    "read_grids",
    "replacing",
    "to_pixel_geometries",
    "write_coco",
    "write_geojson",
    "write_geoparquet",
    "write_shapefiles",
]

SHAPEFILE_FIELDS = {
    "object_id": "object_id",
    "class_name": "class",
    "score": "score",
    "area_m2": "area_m2",
    "perimeter_m": "perim_m",
    "source": "source",
}
"""GeoPackage column → shapefile field name; dBASE field names hold at most 10 characters."""

PIXEL_DECIMALS = 6
"""COCO coordinates are rounded to a millionth of a pixel: mapping CRS coordinates back through
the geotransform (and reprojecting) leaves floating-point noise around vertices that lie exactly
on the pixel grid, and rounding returns them to their exact values."""

_DBF_STRING_BYTES = 254
_STRING_FIELDS = ("object_id", "class_name", "source")


class MissingExtraError(GeosegError, ImportError):
    """An export needs an optional dependency that is not installed."""


# --- COCO -------------------------------------------------------------------------------------


def locate_source(source: str, geopackage: Path) -> str:
    """Find a source raster recorded in a GeoPackage: as recorded, else beside the GeoPackage.

    ``geoseg run`` records sources as given, so a relative path is relative to the folder the run
    was started from; when it does not resolve from the current folder, it is tried from the
    GeoPackage's folder. URLs and GDAL virtual paths (``/vsi…``) are returned unchanged.

    Raises
    ------
    RasterError
        If the raster is found in neither place.
    """
    if "://" in source or source.startswith("/vsi") or Path(source).exists():
        return source
    beside = geopackage.parent / source
    if not Path(source).is_absolute() and beside.exists():
        return str(beside)
    raise RasterError(
        f"source raster {source} of {geopackage} does not exist (relative paths are tried from "
        "the current folder and the GeoPackage's folder); COCO export needs it for its pixel grid"
    )


def read_grids(results: Results) -> dict[str, RasterInfo]:
    """Each source raster's pixel grid (size, CRS, geotransform), read from its header.

    Raises
    ------
    RasterError
        If a source raster is missing, unreadable, or not georeferenced on a north-up grid.
    """
    return {
        source: describe_raster(locate_source(source, results.path), ())
        for source in results.sources
    }


def to_pixel_geometries(
    geoms: npt.NDArray[np.object_], transform: Affine
) -> npt.NDArray[np.object_]:
    """Map geometries from a raster's CRS into its pixel space, inverting its geotransform.

    The inverse of :func:`geoseg.tasks.vectorize.to_crs_geometries`: x becomes the column and y
    the row, with ``(0, 0)`` the top-left corner of the top-left pixel and ``(width, height)``
    the bottom-right corner of the raster. For north-up transforms each axis is inverted on its
    own, ``col = (x - c) / a``, which is exact for pixel corners whenever the forward mapping is.
    """
    a, b, c, d, e, f = (float(value) for value in transform[:6])
    if b == 0 and d == 0:

        def apply(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            return np.column_stack(((xy[:, 0] - c) / a, (xy[:, 1] - f) / e))

    else:
        ia, ib, ic, id_, ie, if_ = (float(value) for value in (~transform)[:6])

        def apply(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            x, y = xy[:, 0], xy[:, 1]
            return np.column_stack((x * ia + y * ib + ic, x * id_ + y * ie + if_))

    result: npt.NDArray[np.object_] = shapely.transform(np.asarray(geoms, dtype=object), apply)
    return result


def coco_dataset(results: Results, grids: Mapping[str, RasterInfo]) -> dict[str, Any]:
    """Build a COCO instance-segmentation dataset of the objects, in source pixel coordinates.

    Objects are reprojected from the GeoPackage's CRS to their source raster's CRS when the two
    differ, then mapped to pixel coordinates (see :func:`to_pixel_geometries`), rounded to
    :data:`PIXEL_DECIMALS`.

    - ``images``: one per source (ids from 1, in ``results.sources`` order), sources without
      objects included, with ``file_name`` the raster's file name (the recorded path where two
      sources share a file name), ``width`` and ``height`` in pixels, and ``geoseg_source``, the
      source as recorded.
    - ``categories``: one per class (ids from 1, in layer order), named by the class.
    - ``annotations``: one per object, with ``segmentation`` one ``[x0, y0, x1, y1, ...]`` list
      per polygon part: its exterior ring, open (the first vertex not repeated).
      **COCO polygons cannot express holes**: a lawn around a tree is its outline filled in.
      ``area`` is the object's true area in pixels (holes subtracted, so it is the pixel count
      of unsimplified objects) and may therefore be less than the filled polygons' area.
      ``bbox`` is ``[x, y, width, height]`` in pixels, ``iscrowd`` 0, ``score`` the model's and
      ``object_id`` geoseg's.

    Parameters
    ----------
    results : Results
        The objects.
    grids : mapping of str to RasterInfo
        Each source of ``results.sources`` to its raster's grid (see :func:`read_grids`).

    Returns
    -------
    dict
        The dataset, ready for ``json.dump``; ``pycocotools.coco.COCO`` loads it.
    """
    names = [Path(source).name for source in results.sources]
    if len(set(names)) < len(names):
        names = list(results.sources)
    image_ids = {source: number for number, source in enumerate(results.sources, start=1)}
    category_ids = {name: number for number, name in enumerate(results.class_names, start=1)}
    images = [
        {
            "id": image_ids[source],
            "file_name": name,
            "width": grids[source].width,
            "height": grids[source].height,
            "geoseg_source": source,
        }
        for source, name in zip(results.sources, names, strict=True)
    ]
    objects = results.objects
    pixel_geoms = np.empty(len(objects), dtype=object)
    crs = pyproj.CRS(results.crs_wkt)
    for source in results.sources:
        rows = objects.source == source
        if not rows.any():
            continue
        grid = grids[source]
        geoms = objects.geometry[rows]
        raster_crs = pyproj.CRS(grid.crs_wkt)
        if raster_crs != crs:
            transformer = pyproj.Transformer.from_crs(crs, raster_crs, always_xy=True)
            geoms = shapely.transform(
                geoms, lambda xy, t=transformer: np.column_stack(t.transform(xy[:, 0], xy[:, 1]))
            )
        pixel_geoms[rows] = to_pixel_geometries(geoms, grid.transform)
    annotations = []
    for number, geom in enumerate(pixel_geoms):
        x0, y0, x1, y1 = (_round(v) for v in shapely.bounds(geom).tolist())
        annotations.append(
            {
                "id": number + 1,
                "image_id": image_ids[str(objects.source[number])],
                "category_id": category_ids[str(objects.class_name[number])],
                "segmentation": _exterior_lists(geom),
                "area": _round(float(shapely.area(geom))),
                "bbox": [x0, y0, _round(x1 - x0), _round(y1 - y0)],
                "iscrowd": 0,
                "score": float(objects.score[number]),
                "object_id": str(objects.object_id[number]),
            }
        )
    version = results.run.get("geoseg_version")
    return {
        "info": {
            "description": f"objects of {results.path.name}, exported by geoseg",
            "version": "" if version is None else str(version),
        },
        "licenses": [],
        "images": images,
        "categories": [
            {"id": number, "name": name, "supercategory": ""}
            for name, number in category_ids.items()
        ],
        "annotations": annotations,
    }


def _exterior_lists(geom: shapely.Geometry) -> list[list[int | float]]:
    """Each polygon part's exterior ring as a flat, open ``[x0, y0, x1, y1, ...]`` list."""
    lists = []
    for part in shapely.get_parts(geom).tolist():
        ring = np.round(shapely.get_coordinates(shapely.get_exterior_ring(part)), PIXEL_DECIMALS)
        if len(ring) >= 4:
            lists.append([_round(v) for v in ring[:-1].ravel().tolist()])
    return lists


def _round(value: float) -> int | float:
    """A coordinate rounded to :data:`PIXEL_DECIMALS`, as an int when it is whole (shorter JSON)."""
    rounded = round(float(value), PIXEL_DECIMALS)
    return int(rounded) if rounded.is_integer() else rounded


def write_coco(results: Results, path: Path, overwrite: bool = False) -> None:
    """Write :func:`coco_dataset` of the objects to a JSON file.

    Raises
    ------
    RasterError
        If a source raster is missing or unusable (see :func:`read_grids`).
    OutputError
        If ``path`` cannot be written or exists and ``overwrite`` is false.
    """
    check_output(path, overwrite)
    dataset = coco_dataset(results, read_grids(results))
    with replacing(path, overwrite) as temp:
        temp.write_text(json.dumps(dataset, ensure_ascii=False), encoding="utf-8")


# --- GIS formats ------------------------------------------------------------------------------


def write_geojson(results: Results, path: Path, overwrite: bool = False) -> None:
    """Write every object to one RFC 7946 GeoJSON FeatureCollection in WGS 84.

    GDAL's GeoJSON driver in RFC 7946 mode reprojects to longitude/latitude (in that order) on
    WGS 84, orients exterior rings counter-clockwise and holes clockwise, splits geometries at
    the antimeridian and rounds coordinates to 7 decimals (about 1 cm). Properties are the
    GeoPackage's columns, ``class_name`` telling the classes apart.

    Raises
    ------
    OutputError
        If ``path`` cannot be written or exists and ``overwrite`` is false.
    """
    objects = results.objects
    with replacing(path, overwrite) as temp:
        _write_vector(
            temp,
            "GeoJSON",
            results.path.stem,
            objects.geometry,
            [_column(results, name) for name in OBJECT_FIELDS],
            OBJECT_FIELDS,
            results.crs_wkt,
            {"RFC7946": "YES"},
        )


def write_shapefiles(results: Results, folder: Path, overwrite: bool = False) -> list[Path]:
    """Write one shapefile per class, ``<class name>.shp``, into a folder (made if missing).

    Fields are renamed by :data:`SHAPEFILE_FIELDS` (``class_name`` → ``class``, ``perimeter_m``
    → ``perim_m``), strings are UTF-8 (a ``.cpg`` file says so) and the CRS goes to ``.prj``.
    Classes without objects get an empty shapefile, as they have an empty layer.

    Returns
    -------
    list of Path
        The ``.shp`` files, in class order.

    Raises
    ------
    OutputError
        If ``folder`` is a file, its parent is missing, or a shapefile exists and ``overwrite``
        is false.
    OptionsError
        If a text value is longer than a dBASE field holds (254 bytes).
    """
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file; --to shapefile writes into a folder")
    if not folder.parent.is_dir():
        raise OutputError(f"output folder {folder.parent} does not exist; create it first")
    targets = [folder / f"{name}.shp" for name in results.class_names]
    existing = [str(target) for target in targets if target.exists()]
    if existing and not overwrite:
        raise OutputError(f"{existing[0]} already exists; pass --overwrite to replace it")
    for name in _STRING_FIELDS:
        lengths = [len(str(value).encode()) for value in _column(results, name).tolist()]
        if lengths and max(lengths) > _DBF_STRING_BYTES:
            raise OptionsError(
                f"{results.path}: a {name} value is {max(lengths)} bytes long but shapefile "
                f"fields hold {_DBF_STRING_BYTES}; export to geojson or geoparquet instead"
            )
    folder.mkdir(exist_ok=True)
    fields = [SHAPEFILE_FIELDS[name] for name in OBJECT_FIELDS]
    staging = folder / f".geoseg-export-{secrets.token_hex(6)}"
    staging.mkdir()
    try:
        for class_name in results.class_names:
            rows = results.rows_of(class_name)
            _write_vector(
                staging / f"{class_name}.shp",
                "ESRI Shapefile",
                class_name,
                results.objects.geometry[rows],
                [_column(results, name)[rows] for name in OBJECT_FIELDS],
                fields,
                results.crs_wkt,
                {"ENCODING": "UTF-8"},
            )
        for file in sorted(staging.iterdir()):
            os.replace(file, folder / file.name)
    except GeosegError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write shapefiles into {folder}: {first_line(exc)}") from exc
    finally:
        for file in staging.iterdir():
            file.unlink()
        staging.rmdir()
    return targets


def write_geoparquet(results: Results, path: Path, overwrite: bool = False) -> None:
    """Write every object to one GeoParquet file in the GeoPackage's CRS.

    Uses ``geopandas.GeoDataFrame.to_parquet`` (GeoParquet 1.x metadata, WKB geometries, the CRS
    as PROJJSON); the columns are the GeoPackage's.

    Raises
    ------
    MissingExtraError
        If geopandas or pyarrow is not installed.
    OutputError
        If ``path`` cannot be written or exists and ``overwrite`` is false.
    """
    check_output(path, overwrite)
    geopandas = _optional_module("geopandas", "geoparquet")
    _optional_module("pyarrow", "geoparquet")
    frame = geopandas.GeoDataFrame(
        {name: _column(results, name) for name in OBJECT_FIELDS},
        geometry=geopandas.GeoSeries(results.objects.geometry, crs=results.crs_wkt),
    )
    with replacing(path, overwrite) as temp:
        frame.to_parquet(temp, index=False)


EXPORTERS: dict[str, Callable[[Results, Path, bool], object]] = {
    "coco": write_coco,
    "geojson": write_geojson,
    "shapefile": write_shapefiles,
    "geoparquet": write_geoparquet,
}
"""Export format name → writer ``(results, path, overwrite)``."""


# --- helpers ----------------------------------------------------------------------------------


def _column(results: Results, name: str) -> npt.NDArray[np.generic]:
    values: npt.NDArray[np.generic] = getattr(results.objects, name)
    return values.astype(object if name in _STRING_FIELDS else np.float64)


def _optional_module(name: str, extra: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MissingExtraError(
            f"--to {extra} needs {name}, which is not installed; pip install 'geoseg[{extra}]'"
        ) from exc


def _write_vector(
    path: Path,
    driver: str,
    layer: str,
    geometry: npt.NDArray[np.object_],
    columns: list[npt.NDArray[np.generic]],
    fields: tuple[str, ...] | list[str],
    crs_wkt: str,
    layer_options: dict[str, str],
) -> None:
    try:
        pyogrio.raw.write(
            path,
            shapely.to_wkb(geometry),
            columns,
            fields=list(fields),
            layer=layer,
            driver=driver,
            geometry_type="MultiPolygon",
            crs=crs_wkt,
            layer_options=layer_options,
        )
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise OutputError(f"cannot write {path.name}: {first_line(exc)}") from exc


@contextmanager
def replacing(path: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary path beside ``path``, moved onto it when the block completes.

    The temporary file keeps ``path``'s suffix (GDAL picks drivers by it) and is removed if the
    block fails; ``path`` is refused if it exists without ``overwrite``.
    """
    check_output(path, overwrite)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial{path.suffix}")
    try:
        yield temp
        if not overwrite and path.exists():
            raise OutputError(f"{path} already exists; pass --overwrite to replace it")
        os.replace(temp, path)
    except OSError as exc:
        if isinstance(exc, GeosegError):
            raise
        raise OutputError(f"cannot write {path}: {first_line(exc)}") from exc
    finally:
        temp.unlink(missing_ok=True)
