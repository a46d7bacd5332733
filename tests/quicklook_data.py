"""Tiny rasters and geoseg outputs whose objects are known in pixels, for the quicklook tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyproj
import shapely
from affine import Affine

from geoseg.reports.quicklook import FILL_ALPHA
from geoseg.tasks.palette import class_colour, rgb
from geoseg.tasks.vectorize import to_crs_geometries
from geoseg.tasks.write import GeoPackageWriter, ObjectBatch

UTM = "EPSG:32636"
TRANSFORM = Affine(0.5, 0, 500_000, 0, -0.5, 40_000)
LEFT, RIGHT = (100, 150, 200), (200, 100, 50)


def read_png(data: bytes, tmp_path: Path) -> np.ndarray:
    """The picture's RGB values 0-255, read back the way a viewer does."""
    from matplotlib.image import imread

    path = tmp_path / "read-back.png"
    path.write_bytes(data)
    return np.rint(imread(path)[..., :3] * 255).astype(int)


def two_tone(make_raster, name: str = "scene.tif") -> Path:
    """An 80 x 40 px RGB raster: left half LEFT, right half RIGHT."""
    array = np.empty((3, 40, 80), dtype=np.uint8)
    array[:, :, :40] = np.array(LEFT)[:, None, None]
    array[:, :, 40:] = np.array(RIGHT)[:, None, None]
    return make_raster(array, name=name, transform=TRANSFORM)


def write_gpkg(
    path: Path, objects: list[tuple[shapely.Geometry, str, str]], sources: list[str]
) -> Path:
    """A geoseg output in UTM 36N of ``(pixel polygon on TRANSFORM, class, source)`` objects."""
    pixels = np.array([geom for geom, _, _ in objects], dtype=object)
    with GeoPackageWriter(path, pyproj.CRS(UTM).to_wkt(), ("lawn", "building"), False) as writer:
        for source in sources:
            writer.add_source(source)
        writer.add(
            ObjectBatch(
                geometry=to_crs_geometries(pixels, TRANSFORM),
                object_id=np.array([f"o{i}" for i in range(len(objects))]),
                class_name=np.array([cls for _, cls, _ in objects]),
                score=np.full(len(objects), 0.9),
                area_m2=np.full(len(objects), 100.0),
                perimeter_m=np.full(len(objects), 40.0),
                source=np.array([source for _, _, source in objects]),
            )
        )
        writer.finish({"geoseg_version": "test", "config": '{"tile_size": 512}'})
    return path


def blend(image: tuple[int, int, int], class_name: str) -> np.ndarray:
    colour = np.array(rgb(class_colour(class_name)))
    return np.rint((1 - FILL_ALPHA) * np.array(image) + FILL_ALPHA * colour)


def write_scene(make_raster, folder: Path) -> tuple[Path, Path]:
    """``scene.tif`` and the GeoPackage ``objects.gpkg`` in ``folder`` (the test's tmp_path):
    a lawn on the raster's left half and a building on its right half; ``other.tif``, on the
    same grid, has a lawn where ``scene.tif`` has nothing."""
    raster = two_tone(make_raster)
    other = two_tone(make_raster, "other.tif")
    gpkg = write_gpkg(
        folder / "objects.gpkg",
        [
            (shapely.box(10, 10, 30, 30), "lawn", str(raster)),
            (shapely.box(50, 5, 70, 20), "building", str(raster)),
            (shapely.box(50, 25, 70, 38), "lawn", str(other)),
        ],
        [str(raster), str(other)],
    )
    return raster, gpkg
