"""Tiny geoseg outputs and zone files with hand-computable areas, for zones and compare tests.

Objects are squares in UTM 32N (EPSG:32632) near its central meridian, written with the real
GeoPackageWriter and measured with the real geodesic measurement, so a 10 m square is 100 m²
divided by the UTM scale factor squared (0.9996²): 100.08 m² on the ground.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyogrio.raw
import pyproj
import shapely

from geoseg.tasks.measure import measure_geodesic
from geoseg.tasks.write import GeoPackageWriter, ObjectBatch

CRS = "EPSG:32632"
X0, Y0 = 500_000.0, 5_000_000.0
CLASSES = ("lawn", "building")


def square(x: float, y: float, side: float = 10.0) -> shapely.Polygon:
    """A square with its lower-left corner ``(x, y)`` metres from (X0, Y0), in UTM 32N."""
    return shapely.box(X0 + x, Y0 + y, X0 + x + side, Y0 + y + side)


def write_objects(
    path: Path,
    objects: Sequence[tuple[str, shapely.Geometry]],
    classes: Sequence[str] = CLASSES,
    crs: str = CRS,
) -> Path:
    """A geoseg output holding ``(class, polygon)`` objects, measured as ``geoseg run`` does."""
    geometry = np.array([geom for _, geom in objects], dtype=object)
    area, perimeter = measure_geodesic(geometry, pyproj.CRS(crs))
    n = len(objects)
    with GeoPackageWriter(path, pyproj.CRS(crs).to_wkt(), classes, overwrite=False) as out:
        out.add_source("scene.tif")
        out.add(
            ObjectBatch(
                geometry=geometry,
                object_id=np.array([f"scene.tif:{i}:0" for i in range(n)], dtype=object),
                class_name=np.array([name for name, _ in objects], dtype=object),
                score=np.full(n, 0.9),
                area_m2=area,
                perimeter_m=perimeter,
                source=np.full(n, "scene.tif", dtype=object),
            )
        )
        out.finish({"geoseg_version": "test"})
    return path


def write_zone_file(
    path: Path,
    keys: Sequence[str | int],
    zones: Sequence[shapely.Geometry],
    crs: str = CRS,
    column: str = "parcel_id",
    layer: str | None = None,
    append: bool = False,
) -> Path:
    """A polygon file (driver from the suffix) with one ``column`` value per zone, in ``crs``;
    zones given in UTM 32N are reprojected to ``crs``."""
    geometry = np.array(zones, dtype=object)
    if crs != CRS:
        move = pyproj.Transformer.from_crs(CRS, crs, always_xy=True)
        geometry = shapely.transform(
            shapely.segmentize(geometry, 1.0),
            lambda xy: np.column_stack(move.transform(xy[:, 0], xy[:, 1])),
        )
    values = np.array(keys, dtype=np.int64 if isinstance(keys[0], int) else object)
    pyogrio.raw.write(
        path,
        shapely.to_wkb(geometry),
        [values],
        fields=[column],
        layer=layer,
        crs=crs,
        geometry_type="Polygon",
        append=append,
    )
    return path


def write_two_dates(folder: Path, after_crs: str = CRS) -> tuple[Path, Path]:
    """``before.gpkg`` and ``after.gpkg`` of the same place with known changes.

    lawn at (0, 0) moves 1 m east (IoU 90/110: persisted); lawn at (50, 0) is gone
    (disappeared); lawn at (100, 0) moves 6 m east (IoU 40/160: below 0.5, so it disappears
    and reappears); a new lawn at (200, 0) appears; the building at (300, 0) stays.
    ``after.gpkg`` is written in ``after_crs`` (its objects reprojected, measured there).
    """
    before = write_objects(
        folder / "before.gpkg",
        [
            ("lawn", square(0, 0)),
            ("lawn", square(50, 0)),
            ("lawn", square(100, 0)),
            ("building", square(300, 0)),
        ],
    )
    later = [
        ("lawn", square(1, 0)),
        ("lawn", square(106, 0)),
        ("lawn", square(200, 0)),
        ("building", square(300, 0)),
    ]
    if after_crs != CRS:
        move = pyproj.Transformer.from_crs(CRS, after_crs, always_xy=True)
        later = [
            (name, shapely.transform(
                shapely.segmentize(geom, 1.0),
                lambda xy: np.column_stack(move.transform(xy[:, 0], xy[:, 1])),
            ))
            for name, geom in later
        ]  # fmt: skip
    after = write_objects(folder / "after.gpkg", later, crs=after_crs)
    return before, after
