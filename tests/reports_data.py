"""A small geoseg output written with the real GeoPackageWriter, for the report and export tests.

Two rasters: ``a.tif`` in UTM 36N (the output CRS) and ``b.tif`` in Web Mercator, whose objects
are reprojected into the output as ``geoseg run`` does. Every object is known in its raster's
pixel coordinates, so exports back to pixels can be compared exactly; ``area_m2`` values are
round numbers chosen for hand-computed statistics, not measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import shapely
from affine import Affine

from geoseg.tasks.vectorize import to_crs_geometries
from geoseg.tasks.write import GeoPackageWriter, ObjectBatch

OUTPUT_CRS = "EPSG:32636"
A_TRANSFORM = Affine(0.5, 0, 500_000, 0, -0.5, 40_000)
B_CRS = "EPSG:3857"
B_TRANSFORM = Affine(0.5, 0, 3_673_553, 0, -0.5, 40_286)
CLASSES = ("lawn", "building")


@dataclass(frozen=True)
class Known:
    """One object as written: its raster, class, pixel polygon and attributes."""

    raster: str  # "a" or "b"
    class_name: str
    pixels: shapely.Geometry
    score: float
    area_m2: float
    perimeter_m: float


LAWN_WITH_HOLE = shapely.box(10, 10, 20, 20).difference(shapely.box(13, 13, 15, 15))
L_SHAPE = shapely.Polygon([(0, 20), (4, 20), (4, 22), (2, 22), (2, 25), (0, 25)])
KNOWN = (
    Known("a", "lawn", shapely.box(2, 3, 6, 7), 0.9, 10.0, 12.5),
    Known("a", "lawn", LAWN_WITH_HOLE, 0.8, 20.0, 30.25),
    Known(
        "a",
        "lawn",
        shapely.MultiPolygon([shapely.box(25, 2, 27, 4), shapely.box(30, 2, 33, 5)]),
        0.7,
        60.0,
        14.0,
    ),
    Known("a", "building", L_SHAPE, 0.95, 5.0, 9.0),
    Known("b", "lawn", shapely.box(1, 1, 5, 3), 0.6, 100.0, 40.5),
)


@dataclass(frozen=True)
class Output:
    """Paths of a written output and of its rasters, and the source string of each raster."""

    gpkg: Path
    rasters: dict[str, Path]
    sources: dict[str, str]


def write_output(folder: Path, make_raster: Any, relative_sources: bool = False) -> Output:
    """Write ``a.tif``, ``b.tif`` and ``objects.gpkg`` holding :data:`KNOWN` into ``folder``.

    ``make_raster`` is the conftest factory (it writes into ``folder``, the test's tmp_path).
    With ``relative_sources`` the sources are recorded as bare file names, as a run started in
    the rasters' folder records them.
    """
    rasters = {
        "a": make_raster(
            np.full((3, 30, 40), 100, dtype=np.uint8), name="a.tif", transform=A_TRANSFORM
        ),
        "b": make_raster(
            np.full((3, 10, 20), 100, dtype=np.uint8),
            name="b.tif",
            crs=B_CRS,
            transform=B_TRANSFORM,
        ),
    }
    sources = {k: (p.name if relative_sources else str(p)) for k, p in rasters.items()}
    to_output = pyproj.Transformer.from_crs(B_CRS, OUTPUT_CRS, always_xy=True)
    geometry = []
    for known in KNOWN:
        transform = A_TRANSFORM if known.raster == "a" else B_TRANSFORM
        geom = to_crs_geometries(np.array([known.pixels], dtype=object), transform)[0]
        if known.raster == "b":
            geom = shapely.transform(
                geom, lambda xy: np.column_stack(to_output.transform(xy[:, 0], xy[:, 1]))
            )
        geometry.append(geom)
    gpkg = folder / "objects.gpkg"
    with GeoPackageWriter(gpkg, pyproj.CRS(OUTPUT_CRS).to_wkt(), CLASSES, False) as writer:
        for source in sources.values():
            writer.add_source(source)
        writer.add(
            ObjectBatch(
                geometry=np.array(geometry, dtype=object),
                object_id=np.array([f"{k.raster}.tif:{i}:0" for i, k in enumerate(KNOWN)]),
                class_name=np.array([k.class_name for k in KNOWN]),
                score=np.array([k.score for k in KNOWN]),
                area_m2=np.array([k.area_m2 for k in KNOWN]),
                perimeter_m=np.array([k.perimeter_m for k in KNOWN]),
                source=np.array([sources[k.raster] for k in KNOWN]),
            )
        )
        writer.finish({"geoseg_version": "0.1.0-test", "output_crs": OUTPUT_CRS})
    return Output(gpkg=gpkg, rasters=rasters, sources=sources)
