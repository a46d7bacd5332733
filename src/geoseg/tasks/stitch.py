"""Join the instances of overlapping tiles into whole objects.

Each tile keeps only the pixels of its *core* (see ``tiling``): since cores partition the raster,
no pixel is ever counted twice. Two instances from neighbouring tiles are the same object when
their masks agree over the pixels both tiles see (their overlap); matched instances are joined
transitively, so an object larger than a tile comes out whole, while two objects that merely
touch stay apart because their masks do not overlap. The result does not depend on the order in
which tiles arrive, nor on tile size or overlap when the model sees the same instances.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import shapely

from geoseg.tasks.components import connected_groups
from geoseg.tasks.dissolve import dissolve_groups
from geoseg.tasks.heap import old_objects_frozen
from geoseg.tasks.tiling import PixelBox, Tile, overlapping_pairs
from geoseg.tasks.vectorize import label_polygons

if TYPE_CHECKING:
    from geoseg.tasks.inference import TilePrediction

BLOCK_PX = 2048
"""Side, in pixels, of the runs of tile cores in which a large object is dissolved first."""

MIN_OVERLAP = 0.5
"""Share of the smaller mask (inside the overlap) that two instances must have in common."""

InstanceKey = tuple[int, int]
"""An instance of one tile: ``(tile index, label)``."""


@dataclass(frozen=True)
class TilePieces:
    """The instances one tile predicted, cut to the tile's core.

    Attributes
    ----------
    tile : Tile
        Where the instances come from.
    class_ids, scores : np.ndarray
        Per instance (label ``k`` is entry ``k - 1``): int64 class ids and float32 scores.
    core_px : np.ndarray
        Per instance, int64 count of its pixels inside the core.
    pieces : np.ndarray
        Per instance (object dtype), the (Multi)Polygon of its core pixels in global pixel space;
        None for an instance with no core pixels.
    """

    tile: Tile
    class_ids: np.ndarray
    scores: np.ndarray
    core_px: np.ndarray
    pieces: npt.NDArray[np.object_]


@dataclass(frozen=True)
class StitchedObjects:
    """A raster's whole objects in global pixel space, before georeferencing, in raster order
    of their anchors; one entry per object in each array.

    Columns rather than an object per object: a large raster yields hundreds of thousands of
    objects, and every step after stitching works on whole arrays.

    Attributes
    ----------
    geometry : np.ndarray
        Normalized (Multi)Polygons (object dtype).
    class_id, pixels : np.ndarray
        int64 class ids and pixel counts.
    score : np.ndarray
        float64 scores.
    anchor : np.ndarray
        int64 [N, 2]: each object's first pixel in raster order, ``(row, col)``; the same
        whatever the tiling, so it names the object stably.
    """

    geometry: npt.NDArray[np.object_]
    class_id: npt.NDArray[np.int64]
    score: npt.NDArray[np.float64]
    pixels: npt.NDArray[np.int64]
    anchor: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.geometry)

    @classmethod
    def empty(cls) -> StitchedObjects:
        """No objects."""
        return cls(
            geometry=np.empty(0, dtype=object),
            class_id=np.empty(0, dtype=np.int64),
            score=np.empty(0, dtype=np.float64),
            pixels=np.empty(0, dtype=np.int64),
            anchor=np.empty((0, 2), dtype=np.int64),
        )


def anchors(geoms: np.ndarray) -> np.ndarray:
    """First pixel in raster order, ``(row, col)``, of each pixel-space geometry: int64 [N, 2].

    The top row is the smallest y of any vertex; the first pixel of that row starts at the
    smallest x among the vertices on it. Vertices must be non-negative integers below 2**31.
    """
    coords, owner = shapely.get_coordinates(geoms, return_index=True)
    if not len(coords):
        return np.empty((0, 2), dtype=np.int64)
    xy = coords.astype(np.int64)
    key = (xy[:, 1] << 32) | xy[:, 0]
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    first = np.minimum.reduceat(key, starts)
    return np.column_stack((first >> 32, first & 0xFFFFFFFF))


def crop(labels: np.ndarray, tile: Tile, box: PixelBox) -> np.ndarray:
    """The part of a tile's label array that falls in a global pixel box."""
    col0, row0, col1, row1 = box
    return labels[
        row0 - tile.row_off : row1 - tile.row_off, col0 - tile.col_off : col1 - tile.col_off
    ]


@old_objects_frozen()
def cut_pieces(tile: Tile, prediction: TilePrediction) -> TilePieces:
    """Keep the core part of every instance of a tile, as polygons in global pixel space."""
    count = len(prediction.class_ids)
    labels, geoms = label_polygons(
        crop(prediction.labels, tile, tile.core), tile.core[0], tile.core[1]
    )
    pieces = np.full(count, None, dtype=object)
    pieces[labels - 1] = geoms
    core_px = np.zeros(count, dtype=np.int64)
    core_px[labels - 1] = np.rint(shapely.area(geoms))  # pixel polygons: area = pixel count
    return TilePieces(
        tile=tile,
        class_ids=prediction.class_ids,
        scores=prediction.scores,
        core_px=core_px,
        pieces=pieces,
    )


def match_instances(
    labels_a: np.ndarray, labels_b: np.ndarray, min_overlap: float = MIN_OVERLAP
) -> list[tuple[int, int]]:
    """Pairs of labels ``(a, b)`` that are one object seen by two tiles over the same pixels.

    ``labels_a`` and ``labels_b`` are the two tiles' label arrays cropped to their shared box.
    Two instances match when the pixels they share cover at least ``min_overlap`` of the smaller
    of the two (counted inside the shared box). Objects that only touch share no pixel.

    >>> a = np.array([[1, 1, 2, 2]]); b = np.array([[3, 3, 0, 4]])
    >>> match_instances(a, b)
    [(1, 3), (2, 4)]
    """
    a = labels_a.ravel().astype(np.int64)
    b = labels_b.ravel().astype(np.int64)
    both = (a > 0) & (b > 0)
    if not both.any():
        return []
    size_a = np.bincount(a)
    size_b = np.bincount(b)
    codes = a[both] * len(size_b) + b[both]
    pairs, shared = np.unique(codes, return_counts=True)
    la, lb = np.divmod(pairs, len(size_b))
    keep = shared >= min_overlap * np.minimum(size_a[la], size_b[lb])
    return [(int(x), int(y)) for x, y in zip(la[keep], lb[keep], strict=True)]


def match_overlaps(
    tiles: tuple[Tile, ...],
    load_labels: Callable[[Tile], np.ndarray | None],
    min_overlap: float = MIN_OVERLAP,
) -> list[tuple[InstanceKey, InstanceKey]]:
    """Match instances across every pair of overlapping tiles.

    ``load_labels`` returns a tile's label array, or None for a tile with no instances (skipped
    as nodata, or nothing found); it is called pair by pair in plan order, so a small cache keeps
    memory bounded by a few rows of tiles.
    """
    matches: list[tuple[InstanceKey, InstanceKey]] = []
    for a, b, shared in overlapping_pairs(tiles):
        labels_a = load_labels(a)
        labels_b = load_labels(b) if labels_a is not None else None
        if labels_a is None or labels_b is None:
            continue
        pairs = match_instances(crop(labels_a, a, shared), crop(labels_b, b, shared), min_overlap)
        matches.extend(((a.index, x), (b.index, y)) for x, y in pairs)
    return matches


@old_objects_frozen()
def stitch_objects(
    tiles: Sequence[TilePieces], matches: Iterable[tuple[InstanceKey, InstanceKey]]
) -> StitchedObjects:
    """Join matched instances into objects, sorted by their first pixel in raster order.

    An object's geometry is the union of its instances' core pieces; its class is the one that
    covers most of its pixels (ties to the lower class id); its score is the pixel-weighted mean
    of its instances' scores. Instances with no core pixels in any tile of their group (seen
    only in an overlap by a tile that does not own those pixels) are dropped.
    """
    ordered = sorted(tiles, key=lambda pieces: pieces.tile.index)
    starts = np.cumsum([0] + [len(p.class_ids) for p in ordered])
    first = {p.tile.index: int(start) for p, start in zip(ordered, starts, strict=False)}
    count = int(starts[-1])
    if count == 0:
        return StitchedObjects.empty()
    class_ids = np.concatenate([p.class_ids for p in ordered]).astype(np.int64)
    scores = np.concatenate([p.scores for p in ordered]).astype(np.float64)
    core_px = np.concatenate([p.core_px for p in ordered]).astype(np.int64)
    pieces = np.concatenate([p.pieces for p in ordered])
    tile_block = [
        ((p.tile.core[1] // BLOCK_PX) << 32) + p.tile.core[0] // BLOCK_PX for p in ordered
    ]
    block = np.repeat(np.array(tile_block, dtype=np.int64), np.diff(starts))
    pairs = [(first[a] + la - 1, first[b] + lb - 1) for (a, la), (b, lb) in matches]
    groups = connected_groups({i for pair in pairs for i in pair}, pairs)
    joined = np.zeros(count, dtype=bool)
    group_members, classes, weighted, pixels = [], [], [], []
    for group in groups:
        members = np.array(group)
        joined[members] = True
        weights = core_px[members]
        if weights.sum() == 0:
            continue
        votes = np.bincount(class_ids[members], weights=weights)
        group_members.append(members[weights > 0])
        classes.append(int(np.argmax(votes)))
        weighted.append(float(np.dot(scores[members], weights) / weights.sum()))
        pixels.append(int(weights.sum()))
    geometries = np.empty(0, dtype=object)
    if group_members:
        sizes = [len(members) for members in group_members]
        grouped = np.concatenate(group_members)
        geometries = dissolve_groups(
            pieces[grouped], np.repeat(np.arange(len(sizes)), sizes), block[grouped]
        )
    alone = ~joined & (core_px > 0)
    geoms = np.concatenate([geometries, pieces[alone]])
    classes_all = np.concatenate([np.array(classes, dtype=np.int64), class_ids[alone]])
    scores_all = np.concatenate([np.array(weighted, dtype=np.float64), scores[alone]])
    pixels_all = np.concatenate([np.array(pixels, dtype=np.int64), core_px[alone]])
    if len(geoms) == 0:
        return StitchedObjects.empty()
    geoms = shapely.normalize(geoms)
    firsts = anchors(geoms)
    order = np.lexsort((firsts[:, 1], firsts[:, 0]))
    return StitchedObjects(
        geometry=geoms[order],
        class_id=classes_all[order],
        score=scores_all[order],
        pixels=pixels_all[order],
        anchor=firsts[order],
    )
