"""A ground-truth scene for end-to-end tests: an image band and an instance-id band.

The oracle model (tests/oracle_model.py) reads the id band, so the pipeline's output must match
these objects exactly, whatever the tiling and the number of workers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio

NODATA = 65535
WIDTH, HEIGHT = 700, 600


def truth_ids() -> np.ndarray:
    """Instance ids (class id * 1000 + n) of a 700 x 600 scene, 0 = background."""
    ids = np.zeros((HEIGHT, WIDTH), dtype=np.uint16)
    ids[200:260, 200:262] = 1001  # a lawn over a tile corner
    ids[100:180, 150:240] = 1002  # two adjoining lawns
    ids[100:180, 240:330] = 1003
    ids[430:600, 300:650] = 1004  # a park larger than a tile
    ids[400:412, 5:695] = 2001  # a bridge across the whole scene
    ids[300:380, 500:600] = 3001  # a building with a courtyard (hole)
    ids[320:360, 530:570] = 0
    ids[20:120, 420:460] = 3002  # an L-shaped building
    ids[80:120, 460:560] = 3002
    ids[520:560, 80:140] = 3003  # a building half under nodata
    return ids


def nodata_mask() -> np.ndarray:
    """True where the scene has no data."""
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[480:600, 0:100] = True
    return mask


def scene_bands() -> np.ndarray:
    """Band 1: an image with nodata; band 2: instance ids. uint16 ``[2, rows, cols]``."""
    rng = np.random.default_rng(7)
    image = rng.integers(1, 1000, size=(HEIGHT, WIDTH), dtype=np.uint16)
    image[nodata_mask()] = NODATA
    return np.stack([image, truth_ids()])


def expected_ids() -> np.ndarray:
    """What the pipeline must find: the truth with nodata pixels removed."""
    ids = truth_ids()
    ids[nodata_mask()] = 0
    return ids


def objects_of(path: Path) -> list[tuple[str, float, str]]:
    """Every object of a run on this scene as (object_id, area_m2, WKB hex), sorted."""
    rows = []
    for layer in ("lawn", "bridge", "building"):
        frame = pyogrio.read_dataframe(path, layer=layer)
        rows += [
            (oid, round(area, 6), geom.wkb_hex)
            for oid, area, geom in zip(
                frame["object_id"], frame["area_m2"], frame.geometry, strict=True
            )
        ]
    return sorted(rows)
