"""Turn stitched objects (pixel space) into measured polygons in map coordinates.

Simplification happens in pixel space, with the tolerance converted from metres at the raster's
centre, so it behaves the same in any CRS. Areas and perimeters are measured on the ellipsoid in
the raster's own CRS, before any reprojection to the output CRS.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import shapely
from pyproj import CRS, Transformer

from geoseg.tasks.measure import measure_geodesic, pixel_size_m
from geoseg.tasks.reading import RasterInfo
from geoseg.tasks.sources import redact
from geoseg.tasks.stitch import StitchedObjects
from geoseg.tasks.vectorize import simplify_pixels, to_crs_geometries
from geoseg.tasks.write import ObjectBatch


def georeference_objects(
    objects: StitchedObjects,
    raster: RasterInfo,
    class_names: Mapping[int, str],
    output_crs: CRS,
    simplify_m: float = 0.0,
    min_area_m2: float = 0.0,
) -> ObjectBatch:
    """Georeference, measure and filter a raster's objects into rows for the GeoPackage.

    ``object_id`` is ``<raster file name>:<row>:<col>`` of the object's first pixel in raster
    order, so it is the same whatever the tiling and the number of workers.
    """
    crs = CRS.from_wkt(raster.crs_wkt)
    geoms_px = objects.geometry
    if simplify_m > 0 and len(objects):
        tolerance_px = simplify_m / pixel_size_m(raster.transform, crs, raster.width, raster.height)
        geoms_px = simplify_pixels(geoms_px, tolerance_px)
    geoms = to_crs_geometries(geoms_px, raster.transform)
    area_m2, perimeter_m = measure_geodesic(geoms, crs)
    keep = area_m2 >= min_area_m2
    if not crs.equals(output_crs):
        transformer = Transformer.from_crs(crs, output_crs, always_xy=True)
        geoms = shapely.transform(geoms, lambda xy: np.column_stack(transformer.transform(*xy.T)))
    # Exteriors counter-clockwise, holes clockwise: the OGC convention, whatever the grid's
    # orientation (a north-down raster would otherwise give clockwise exteriors).
    geoms = shapely.orient_polygons(geoms)
    anchor = objects.anchor[keep].tolist()
    return ObjectBatch(
        geometry=geoms[keep],
        object_id=np.array([f"{raster.name}:{row}:{col}" for row, col in anchor], dtype=object),
        class_name=np.array(
            [class_names[c] for c in objects.class_id[keep].tolist()], dtype=object
        ),
        score=objects.score[keep],
        area_m2=area_m2[keep],
        perimeter_m=perimeter_m[keep],
        source=np.full(len(anchor), redact(raster.path), dtype=object),
    )
