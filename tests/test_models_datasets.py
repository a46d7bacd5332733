"""COCO datasets and georeferenced labels become labelled images, and chips go back to COCO."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine

from geoseg.errors import OptionsError
from geoseg.models.datasets import (
    cut_chips,
    keep_model_classes,
    read_coco,
    read_georeferenced,
    rename_classes,
    write_coco,
)
from geoseg.models.synthetic import synthetic_images

# COCO images are PNGs without georeferencing, on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _write_png(path: Path, array: np.ndarray) -> None:
    with rasterio.open(
        path, "w", driver="PNG", width=array.shape[2], height=array.shape[1], count=3, dtype="uint8"
    ) as dst:
        dst.write(array)


def test_coco_polygons_and_rle(tmp_path: Path) -> None:
    _write_png(tmp_path / "a.png", np.full((3, 20, 30), 90, np.uint8))
    mask = np.zeros((20, 30), bool)
    mask[2:6, 20:25] = True
    counts, run, value = [], 0, False  # uncompressed RLE, column-major
    for pixel in mask.T.ravel():
        if pixel != value:
            counts.append(run)
            run, value = 0, pixel
        run += 1
    counts.append(run)
    document = {
        "images": [{"id": 7, "file_name": "a.png", "width": 30, "height": 20}],
        "categories": [{"id": 5, "name": "building"}, {"id": 9, "name": "lawn"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 9,
                "iscrowd": 0,
                "segmentation": [[1, 1, 11, 1, 11, 9, 1, 9]],
            },
            {
                "id": 2,
                "image_id": 7,
                "category_id": 5,
                "iscrowd": 0,
                "segmentation": {"size": [20, 30], "counts": counts},
            },
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(document))
    (image,), names = read_coco(tmp_path / "ann.json")
    assert names == {1: "building", 2: "lawn"}
    assert image.classes.tolist() == [2, 1]
    assert int((image.instances == 1).sum()) == 10 * 8  # pixel centres inside the square
    np.testing.assert_array_equal(image.instances == 2, mask)
    (renamed,) = rename_classes([image], names, {1: "lawn", 2: "bridge", 3: "building"})
    assert renamed.classes.tolist() == [1, 3]
    with pytest.raises(OptionsError, match="not one of the model's classes"):
        rename_classes([image], names, {1: "bridge"})


# pycocotools 2.0.11 itself trips numpy 2's copy-keyword deprecation.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_coco_compressed_rle(tmp_path: Path) -> None:
    coco_mask = pytest.importorskip("pycocotools.mask")
    _write_png(tmp_path / "a.png", np.zeros((3, 16, 16), np.uint8))
    mask = np.zeros((16, 16), np.uint8)
    mask[3:9, 4:12] = 1
    rle = coco_mask.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode()
    document = {
        "images": [{"id": 1, "file_name": "a.png", "width": 16, "height": 16}],
        "categories": [{"id": 1, "name": "bridge"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": rle}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(document))
    (image,), _ = read_coco(tmp_path / "ann.json")
    np.testing.assert_array_equal(image.instances == 1, mask.astype(bool))


def test_georeferenced_labels_in_another_crs(make_raster, tmp_path: Path) -> None:
    transform = Affine(0.5, 0, 500_000, 0, -0.5, 40_000)  # UTM 36N, 0.5 m
    raster = make_raster(np.zeros((3, 40, 60), np.uint8), transform=transform)
    to_wgs84 = pyproj.Transformer.from_crs("EPSG:32636", "EPSG:4326", always_xy=True)

    def square(x0: float, y0: float, size: float) -> list[list[float]]:
        ring = [(x0, y0), (x0 + size, y0), (x0 + size, y0 - size), (x0, y0 - size), (x0, y0)]
        return [list(to_wgs84.transform(x, y)) for x, y in ring]

    features = [
        {
            "type": "Feature",
            "properties": {"kind": "building"},
            "geometry": {"type": "Polygon", "coordinates": [square(500_002, 39_998, 5)]},
        },
        {
            "type": "Feature",
            "properties": {"kind": "lawn"},
            "geometry": {"type": "Polygon", "coordinates": [square(500_020, 39_990, 4)]},
        },
        {
            "type": "Feature",
            "properties": {"kind": "lawn"},  # 1 m² inside: under min_area_m2
            "geometry": {"type": "Polygon", "coordinates": [square(500_029, 39_981, 2)]},
        },
    ]
    labels = tmp_path / "labels.geojson"
    labels.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    image, names = read_georeferenced(raster, labels, "kind", min_area_m2=2.0)
    assert names == {1: "building", 2: "lawn"}
    assert image.classes.tolist() == [1, 2]
    assert image.gsd_m == 0.5
    # 5 m = 10 pixels from (4, 4); 4 m = 8 pixels from (40, 20); reprojection error << 1 px.
    assert int((image.instances == 1).sum()) == 100
    assert image.instances[4:14, 4:14].min() == 1
    assert int((image.instances == 2).sum()) == 64
    assert image.instances[20:28, 40:48].min() == 2

    chips = cut_chips(image, 32, 28)
    assert [c.instances.shape for c in chips] == [(32, 32)] * 4
    target = write_coco(chips, tmp_path / "coco", names)
    back, back_names = read_coco(target)
    assert back_names == names
    for chip, reread in zip(chips, back, strict=True):
        np.testing.assert_array_equal(chip.image, reread.image)
        np.testing.assert_array_equal(chip.instances, reread.instances)
        np.testing.assert_array_equal(chip.classes, reread.classes)


def test_missing_coco_image_names_the_fix(tmp_path: Path) -> None:
    document = {
        "images": [{"id": 1, "file_name": "nope.png", "width": 4, "height": 4}],
        "annotations": [],
        "categories": [],
    }
    (tmp_path / "ann.json").write_text(json.dumps(document))
    with pytest.raises(OptionsError, match=r"nope\.png.*pass the images folder"):
        read_coco(tmp_path / "ann.json")


def test_classes_a_model_lacks_become_ground_and_the_rest_are_renumbered() -> None:
    (scene,) = synthetic_images(1, size=128, seed=5)
    names = {1: "lawn", 2: "bridge", 3: "building"}
    buildings = np.isin(scene.instances, np.flatnonzero(scene.classes == 3) + 1)

    (kept,) = keep_model_classes([scene], names, {1: "car", 2: "building"})

    assert (kept.instances > 0).tolist() == buildings.tolist()
    assert kept.classes.tolist() == [2] * int(np.sum(scene.classes == 3))
    assert sorted(np.unique(kept.instances[kept.instances > 0])) == list(
        range(1, len(kept.classes) + 1)
    )
    assert np.array_equal(kept.image, scene.image)
    assert np.array_equal(kept.valid, scene.valid)
