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

import numpy as np
import shapely

from geoseg.tasks.inference import TilePrediction
from geoseg.tasks.tiling import PixelBox, Tile, overlapping_pairs
from geoseg.tasks.vectorize import polygonize_labels

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
    pieces : dict[int, shapely.Geometry]
        Label to the (Multi)Polygon of its core pixels, in global pixel space; only labels with
        core pixels.
    """

    tile: Tile
    class_ids: np.ndarray
    scores: np.ndarray
    core_px: np.ndarray
    pieces: dict[int, shapely.Geometry]


@dataclass(frozen=True)
class StitchedObject:
    """One whole object in global pixel space, before georeferencing."""

    geometry: shapely.Geometry
    class_id: int
    score: float
    pixels: int

    @property
    def anchor(self) -> tuple[int, int]:
        """The object's first pixel in raster order, ``(row, col)``: stable across tilings."""
        coords = shapely.get_coordinates(self.geometry)
        top = coords[:, 1].min()
        return int(top), int(coords[coords[:, 1] == top, 0].min())


def crop(labels: np.ndarray, tile: Tile, box: PixelBox) -> np.ndarray:
    """The part of a tile's label array that falls in a global pixel box."""
    col0, row0, col1, row1 = box
    return labels[
        row0 - tile.row_off : row1 - tile.row_off, col0 - tile.col_off : col1 - tile.col_off
    ]


def cut_pieces(tile: Tile, prediction: TilePrediction) -> TilePieces:
    """Keep the core part of every instance of a tile, as polygons in global pixel space."""
    core_labels = crop(prediction.labels, tile, tile.core)
    count = len(prediction.class_ids)
    core_px = np.bincount(core_labels.ravel(), minlength=count + 1)[1:].astype(np.int64)
    pieces = polygonize_labels(core_labels, tile.core[0], tile.core[1]) if core_px.any() else {}
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


def group_instances(
    keys: Iterable[InstanceKey], matches: Iterable[tuple[InstanceKey, InstanceKey]]
) -> list[list[InstanceKey]]:
    """Connected groups of instances under the match relation (union-find), each sorted."""
    parent: dict[InstanceKey, InstanceKey] = {key: key for key in keys}

    def root(key: InstanceKey) -> InstanceKey:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for x, y in matches:
        rx, ry = root(x), root(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    groups: dict[InstanceKey, list[InstanceKey]] = {}
    for key in sorted(parent):
        groups.setdefault(root(key), []).append(key)
    return list(groups.values())


def stitch_objects(
    tiles: Sequence[TilePieces], matches: Iterable[tuple[InstanceKey, InstanceKey]]
) -> list[StitchedObject]:
    """Join matched instances into objects, sorted by their first pixel in raster order.

    An object's geometry is the union of its instances' core pieces; its class is the one that
    covers most of its pixels (ties to the lower class id); its score is the pixel-weighted mean
    of its instances' scores. Instances with no core pixels in any tile of their group (seen
    only in an overlap by a tile that does not own those pixels) are dropped.
    """
    by_index = {pieces.tile.index: pieces for pieces in tiles}
    keys = [
        (pieces.tile.index, label)
        for pieces in tiles
        for label in range(1, len(pieces.class_ids) + 1)
    ]
    objects = []
    for group in group_instances(keys, matches):
        members = [(by_index[index], label) for index, label in group]
        weights = np.array([p.core_px[label - 1] for p, label in members], dtype=np.int64)
        if weights.sum() == 0:
            continue
        class_ids = np.array([p.class_ids[label - 1] for p, label in members], dtype=np.int64)
        scores = np.array([p.scores[label - 1] for p, label in members], dtype=np.float64)
        votes: dict[int, int] = {}
        for class_id, weight in zip(class_ids.tolist(), weights.tolist(), strict=True):
            votes[class_id] = votes.get(class_id, 0) + weight
        class_id = min(votes, key=lambda c: (-votes[c], c))
        parts = [p.pieces[label] for p, label in members if label in p.pieces]
        geometry = parts[0] if len(parts) == 1 else shapely.union_all(parts)
        objects.append(
            StitchedObject(
                geometry=shapely.normalize(shapely.simplify(geometry, 0)),
                class_id=class_id,
                score=float(np.average(scores, weights=weights)),
                pixels=int(weights.sum()),
            )
        )
    objects.sort(key=lambda obj: obj.anchor)
    return objects
