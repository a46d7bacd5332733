"""Load labelled data for the ``train``, ``chips`` and ``evaluate`` commands.

One place that turns command-line choices (a COCO file, or a raster and a label file) into
`LabelledImage` values numbered with a model's classes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from geoseg.errors import OptionsError
from geoseg.models.datasets import LabelledImage, read_coco, read_georeferenced, rename_classes


def load_labelled(
    model_classes: Mapping[int, str],
    *,
    coco: Path | None = None,
    images_dir: Path | None = None,
    raster: Path | None = None,
    labels: Path | None = None,
    class_column: str | None = None,
    class_name: str = "building",
    min_area_m2: float = 0.0,
    bands: Sequence[int] = (1, 2, 3),
) -> list[LabelledImage]:
    """Labelled images from a COCO dataset or from a raster plus labels, in model class ids.

    ``bands`` (1-based) are read from the raster, or picked from the COCO images.

    Raises
    ------
    OptionsError
        Both or neither source given, a raster without labels or the other way round, or a
        label class the model does not have.
    """
    if coco is not None and (raster is not None or labels is not None):
        raise OptionsError("--coco conflicts with --raster/--labels; give one kind of labels")
    if (raster is None) != (labels is None):
        raise OptionsError("--raster and --labels go together; give both")
    if coco is not None:
        images, names = read_coco(coco, images_dir)
        for image in images:
            if image.image.shape[0] < max(bands):
                raise OptionsError(
                    f"{image.name} has {image.image.shape[0]} bands but band {max(bands)} is needed"
                )
        images = [
            LabelledImage(
                im.image[[b - 1 for b in bands]], im.instances, im.classes, im.valid, im.name
            )
            for im in images
        ]
    elif raster is not None and labels is not None:
        image, names = read_georeferenced(
            raster,
            labels,
            class_column,
            default_class=class_name,
            min_area_m2=min_area_m2,
            bands=bands,
        )
        images = [image]
    else:
        raise OptionsError("no labels given: pass --coco, or --raster with --labels")
    return rename_classes(images, names, model_classes)
