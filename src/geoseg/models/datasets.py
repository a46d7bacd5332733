"""Labelled images for training and evaluation: COCO datasets and georeferenced labels.

Both sources become `LabelledImage` values: pixels plus an instance map and the class of each
instance. COCO datasets are what labelling tools (CVAT, Label Studio, Roboflow) export;
georeferenced labels are a raster plus polygons (GeoPackage, GeoJSON, Shapefile, anything OGR
reads) in any CRS with a class column, reprojected to the raster's CRS and rasterized onto its
grid. `cut_chips` and `write_coco` turn the latter into a COCO dataset (``geoseg chips``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyogrio
import pyproj
import rasterio
import rasterio.errors
import rasterio.features
import rasterio.transform
import shapely
from affine import Affine

from geoseg.errors import OptionsError, RasterError

COCO_IMAGE_FORMAT = "PNG"


@dataclass(frozen=True, eq=False)
class LabelledImage:
    """An image with its instances.

    Parameters
    ----------
    image : numpy.ndarray
        ``[C, H, W]`` raw pixel values (uint8 for 8-bit imagery).
    instances : numpy.ndarray
        int32 ``[H, W]``; 0 background, ``i`` instance ``i`` (1..N).
    classes : numpy.ndarray
        int64 ``[N]``: class id of instance ``i`` at index ``i - 1``.
    valid : numpy.ndarray
        bool ``[H, W]``, False where the image has no data (never counted or trained on).
    name : str
        Where it came from, for messages and COCO file names.
    gsd_m : float or None
        Ground resolution in metres per pixel, when known.
    """

    image: npt.NDArray[Any]
    instances: npt.NDArray[np.int32]
    classes: npt.NDArray[np.int64]
    valid: npt.NDArray[np.bool_]
    name: str = ""
    gsd_m: float | None = None

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[1:] != self.instances.shape:
            raise ValueError("image must be [C, H, W] and instances [H, W] of the same size")
        if self.valid.shape != self.instances.shape:
            raise ValueError("valid must have the shape of instances")
        if self.instances.size and int(self.instances.max()) > len(self.classes):
            raise ValueError("instances refer to more instances than classes lists")


def read_coco(
    annotations: str | Path,
    images_dir: str | Path | None = None,
    class_ids: Mapping[str, int] | None = None,
) -> tuple[list[LabelledImage], dict[int, str]]:
    """Read a COCO instance-segmentation dataset.

    Parameters
    ----------
    annotations
        The COCO JSON file. Segmentations may be polygons or RLE (RLE needs pycocotools).
    images_dir
        Folder of the image files (default: the JSON's folder, then its ``images/`` subfolder).
    class_ids
        Class name to the id used in the result; default: COCO categories in id order, numbered
        1..K. Categories not in ``class_ids`` are ignored.

    Returns
    -------
    images, classes
        The labelled images in the JSON's order and the id-to-name map of the classes.
    """
    path = Path(annotations)
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise OptionsError(f"{path}: cannot read the COCO annotations: {exc}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(document.get(key), list):
            raise OptionsError(f"{path}: not a COCO instance dataset (no {key!r} list)")
    categories = sorted(document["categories"], key=lambda c: c["id"])
    if class_ids is None:
        class_ids = {c["name"]: i for i, c in enumerate(categories, start=1)}
    by_category = {c["id"]: class_ids[c["name"]] for c in categories if c["name"] in class_ids}
    folders = [Path(images_dir)] if images_dir else [path.parent, path.parent / "images"]
    per_image: dict[int, list[dict[str, Any]]] = {}
    for annotation in document["annotations"]:
        per_image.setdefault(annotation["image_id"], []).append(annotation)
    result = []
    for entry in document["images"]:
        file = next(
            (f / entry["file_name"] for f in folders if (f / entry["file_name"]).is_file()), None
        )
        if file is None:
            raise OptionsError(
                f"{path}: image {entry['file_name']!r} not found in "
                f"{', '.join(map(str, folders))}; pass the images folder"
            )
        with warnings.catch_warnings():
            # COCO images are plain pictures: no georeferencing is expected.
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(file) as src:
                pixels = src.read()
        height, width = int(entry["height"]), int(entry["width"])
        if pixels.shape[1:] != (height, width):
            raise OptionsError(
                f"{file}: is {pixels.shape[2]}x{pixels.shape[1]} pixels but {path} says "
                f"{width}x{height}"
            )
        instances = np.zeros((height, width), dtype=np.int32)
        classes: list[int] = []
        for annotation in per_image.get(entry["id"], []):
            class_id = by_category.get(annotation["category_id"])
            if class_id is None or annotation.get("iscrowd", 0):
                continue
            mask = decode_segmentation(annotation["segmentation"], height, width)
            if mask.any():
                classes.append(class_id)
                instances[mask] = len(classes)
        result.append(
            _labelled(pixels, instances, classes, np.ones((height, width), bool), file.name, None)
        )
    return result, {i: n for n, i in class_ids.items()}


def decode_segmentation(segmentation: Any, height: int, width: int) -> npt.NDArray[np.bool_]:
    """bool ``[H, W]`` mask of a COCO segmentation: polygons or RLE (compressed or not)."""
    if isinstance(segmentation, list):
        shapes = [
            shapely.Polygon(np.asarray(ring, dtype=np.float64).reshape(-1, 2))
            for ring in segmentation
            if len(ring) >= 6
        ]
        if not shapes:
            return np.zeros((height, width), dtype=bool)
        mask: npt.NDArray[np.bool_] = rasterio.features.geometry_mask(
            [s.buffer(0) for s in shapes], (height, width), Affine.identity(), invert=True
        )
        return mask
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        # Uncompressed RLE: run lengths alternating background/foreground, column-major.
        counts = np.asarray(segmentation["counts"], dtype=np.int64)
        values = np.zeros(len(counts), dtype=bool)
        values[1::2] = True
        flat = np.repeat(values, counts)
        return flat[: height * width].reshape(width, height).T.copy()
    try:
        from pycocotools import mask as coco_mask  # type: ignore[import-untyped]
    except ImportError:
        raise OptionsError(
            "compressed RLE segmentations need pycocotools: pip install 'geoseg[train]'"
        ) from None
    decoded: npt.NDArray[np.bool_] = coco_mask.decode(segmentation).astype(bool)
    return decoded


def read_georeferenced(
    raster: str | Path,
    labels: str | Path,
    class_column: str | None = None,
    class_ids: Mapping[str, int] | None = None,
    default_class: str = "building",
    min_area_m2: float = 0.0,
    bands: Sequence[int] = (1, 2, 3),
) -> tuple[LabelledImage, dict[int, str]]:
    """Rasterize labelled polygons onto a raster's grid.

    Parameters
    ----------
    raster
        Any raster GDAL reads, with a CRS and a geotransform.
    labels
        Polygons in any CRS OGR reads (reprojected to the raster's CRS).
    class_column
        Attribute holding each polygon's class name; None gives every polygon ``default_class``.
    class_ids
        Class name to id; default: the sorted class names numbered 1..K. Polygons of other
        classes are ignored.
    min_area_m2
        Polygons whose part inside the raster covers less ground (in the raster CRS's units
        squared, metres for projected CRSs) are dropped, as the evaluation protocol asks.
    bands
        1-based raster bands to read.
    """
    raster = Path(raster)
    try:
        src = rasterio.open(raster)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterError(f"{raster}: cannot open the raster: {exc}") from None
    with src:
        if src.crs is None:
            raise RasterError(f"{raster} has no CRS; georeference the raster first")
        pixels = src.read(list(bands))
        valid = src.dataset_mask() > 0
        transform, crs, (height, width) = src.transform, src.crs, src.shape
    geometries, names = _read_labels(Path(labels), class_column, default_class)
    label_crs = pyogrio.read_info(labels)["crs"]
    if label_crs is None:
        raise OptionsError(f"{labels}: the labels have no CRS; assign one (ogr2ogr -a_srs)")
    to_raster = pyproj.Transformer.from_crs(label_crs, crs.to_wkt(), always_xy=True)
    geometries = shapely.transform(
        geometries, lambda xy: np.stack(to_raster.transform(xy[:, 0], xy[:, 1]), axis=1)
    )
    if class_ids is None:
        class_ids = {n: i for i, n in enumerate(sorted(set(names)), start=1)}
    frame = shapely.box(*rasterio.transform.array_bounds(height, width, transform))
    instances = np.zeros((height, width), dtype=np.int32)
    classes: list[int] = []
    for geometry, name in zip(geometries, names, strict=True):
        if geometry is None or name not in class_ids:
            continue
        inside = shapely.intersection(geometry.buffer(0), frame)
        if inside.is_empty or inside.area < min_area_m2:
            continue
        mask = rasterio.features.geometry_mask([inside], (height, width), transform, invert=True)
        if mask.any():
            classes.append(class_ids[name])
            instances[mask] = len(classes)
    gsd = abs(transform.a) if crs.is_projected else None
    image = _labelled(pixels, instances, classes, valid, raster.name, gsd)
    return image, {i: n for n, i in class_ids.items()}


def _read_labels(
    labels: Path, class_column: str | None, default_class: str
) -> tuple[npt.NDArray[np.object_], list[str]]:
    columns = [class_column] if class_column else []
    try:
        _, _, wkb, fields = pyogrio.raw.read(labels, columns=columns)
    except Exception as exc:  # pyogrio raises its own DataSourceError and friends
        raise OptionsError(f"{labels}: cannot read the labels: {exc}") from None
    geometries = shapely.from_wkb(wkb)
    if class_column:
        if not fields:
            raise OptionsError(f"{labels}: no column {class_column!r}; pass --class-column")
        names = [str(v) for v in fields[0]]
    else:
        names = [default_class] * len(geometries)
    return geometries, names


def _labelled(
    pixels: npt.NDArray[Any],
    instances: npt.NDArray[np.int32],
    classes: list[int],
    valid: npt.NDArray[np.bool_],
    name: str,
    gsd_m: float | None,
) -> LabelledImage:
    """Drop instances hidden beneath later ones and number the rest 1..N."""
    class_array = np.asarray(classes, dtype=np.int64)
    present = np.bincount(instances.ravel(), minlength=len(classes) + 1) > 0
    present[0] = False
    lookup = np.zeros(len(classes) + 1, dtype=np.int32)
    lookup[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    return LabelledImage(
        image=pixels,
        instances=lookup[instances],
        classes=class_array[present[1:]],
        valid=valid,
        name=name,
        gsd_m=gsd_m,
    )


def cut_chips(image: LabelledImage, size: int, stride: int | None = None) -> list[LabelledImage]:
    """Cut an image into ``size`` x ``size`` chips every ``stride`` pixels (default: no overlap).

    Edge chips are shifted inwards so every chip is full size; images smaller than ``size``
    give one chip. Instances cut by a chip's edge keep their visible part; chips without valid
    pixels are skipped.
    """
    stride = stride or size
    height, width = image.instances.shape

    def starts(length: int) -> list[int]:
        if length <= size:
            return [0]
        values = [*range(0, length - size, stride), length - size]
        return sorted(set(values))

    chips = []
    for row in starts(height):
        for col in starts(width):
            window = (slice(row, row + size), slice(col, col + size))
            valid = image.valid[window]
            if not valid.any():
                continue
            instances = image.instances[window]
            ids = np.unique(instances[instances > 0])
            lookup = np.zeros(len(image.classes) + 1, dtype=np.int32)
            lookup[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
            chips.append(
                LabelledImage(
                    image=image.image[(slice(None), *window)],
                    instances=lookup[instances],
                    classes=image.classes[ids - 1],
                    valid=valid,
                    name=f"{Path(image.name).stem}_r{row}_c{col}",
                    gsd_m=image.gsd_m,
                )
            )
    return chips


def mask_polygons(mask: npt.NDArray[np.bool_]) -> list[list[float]]:
    """COCO polygons (flat x, y lists in pixel-corner coordinates) of a mask's outer rings.

    Holes are not representable in COCO polygons and are filled.
    """
    polygons = []
    for geometry, value in rasterio.features.shapes(mask.astype(np.uint8), mask=mask):
        if value:
            ring = np.asarray(geometry["coordinates"][0], dtype=np.float64)[:-1]
            polygons.append([round(float(v), 2) for v in ring.ravel()])
    return polygons


def write_coco(
    chips: Sequence[LabelledImage], folder: str | Path, classes: Mapping[int, str]
) -> Path:
    """Write chips as a COCO dataset: ``images/*.png`` and ``annotations.json``; return the JSON."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, chip in enumerate(chips, start=1):
        file_name = f"{chip.name or image_id}.png"
        height, width = chip.instances.shape
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(
                folder / "images" / file_name,
                "w",
                driver=COCO_IMAGE_FORMAT,
                width=width,
                height=height,
                count=chip.image.shape[0],
                dtype=chip.image.dtype.name,
            ) as dst:
                dst.write(chip.image)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for index, class_id in enumerate(chip.classes, start=1):
            mask = chip.instances == index
            rows, cols = np.nonzero(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(class_id),
                    "segmentation": mask_polygons(mask),
                    "area": int(mask.sum()),
                    "bbox": [
                        int(cols.min()),
                        int(rows.min()),
                        int(np.ptp(cols)) + 1,
                        int(np.ptp(rows)) + 1,
                    ],
                    "iscrowd": 0,
                }
            )
    document = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k, "name": v} for k, v in sorted(classes.items())],
    }
    target = folder / "annotations.json"
    target.write_text(json.dumps(document))
    return target


def rename_classes(
    images: Sequence[LabelledImage], names: Mapping[int, str], model_classes: Mapping[int, str]
) -> list[LabelledImage]:
    """Renumber the classes of ``images`` (named by ``names``) to the ids of ``model_classes``.

    Raises
    ------
    OptionsError
        A class of the data is not among the model's, naming both lists.
    """
    unknown = sorted(set(names.values()) - set(model_classes.values()))
    if unknown:
        raise OptionsError(
            f"label class {unknown[0]!r} is not one of the model's classes "
            f"{', '.join(model_classes.values())}; pass --classes or --class-name"
        )
    lookup = _class_lookup(names, model_classes)
    return [
        LabelledImage(im.image, im.instances, lookup[im.classes], im.valid, im.name, im.gsd_m)
        for im in images
    ]


def keep_model_classes(
    images: Sequence[LabelledImage], names: Mapping[int, str], model_classes: Mapping[int, str]
) -> list[LabelledImage]:
    """Renumber the classes of ``images`` (named by ``names``) to the ids of ``model_classes``;
    objects of classes the model does not have become background.

    For generated scenes mixed into training: a model of buildings and cars learns from their
    buildings, and their lawns and bridges are ground like any other.
    """
    lookup = _class_lookup(names, model_classes)
    kept = []
    for im in images:
        classes = lookup[im.classes]
        keep = classes > 0
        renumber = np.zeros(len(classes) + 1, dtype=np.int32)
        renumber[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        kept.append(
            LabelledImage(
                im.image, renumber[im.instances], classes[keep], im.valid, im.name, im.gsd_m
            )
        )
    return kept


def _class_lookup(names: Mapping[int, str], model_classes: Mapping[int, str]) -> np.ndarray:
    """The model's id of each data class id, by name; 0 for a class the model does not have."""
    ids = {name: class_id for class_id, name in model_classes.items()}
    lookup = np.zeros(max(names, default=0) + 1, dtype=np.int64)
    for class_id, name in names.items():
        lookup[class_id] = ids.get(name, 0)
    return lookup
