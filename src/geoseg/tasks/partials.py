"""Per-batch results on disk: what workers hand to stitching without going through the scheduler.

A batch file is a compressed NumPy archive (no pickles, so reading one never runs code) holding,
per tile, its instance label array (for matching across overlaps) and its core pieces as WKB.
Files are written to a temporary name and renamed, so a batch file is either whole or absent.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import closing
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from geoseg.tasks.stitch import StitchedObjects, TilePieces, match_overlaps, stitch_objects
from geoseg.tasks.tiling import Tile


def save_batch(path: Path, results: Sequence[tuple[TilePieces, np.ndarray]]) -> None:
    """Write the pieces and label arrays of a batch's tiles atomically."""
    arrays: dict[str, np.ndarray] = {
        "tiles": np.array([pieces.tile.index for pieces, _ in results], dtype=np.int64)
    }
    for pieces, labels in results:
        i = pieces.tile.index
        present = np.flatnonzero(~shapely.is_missing(pieces.pieces))
        wkbs = shapely.to_wkb(pieces.pieces[present]).tolist()
        arrays[f"labels_{i}"] = compact_labels(labels)
        arrays[f"class_ids_{i}"] = pieces.class_ids
        arrays[f"scores_{i}"] = pieces.scores
        arrays[f"core_px_{i}"] = pieces.core_px
        arrays[f"piece_labels_{i}"] = (present + 1).astype(np.int64)
        arrays[f"piece_ends_{i}"] = np.cumsum([len(w) for w in wkbs], dtype=np.int64)
        arrays[f"piece_wkb_{i}"] = np.frombuffer(b"".join(wkbs), dtype=np.uint8)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            np.savez_compressed(file, allow_pickle=False, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """A label array in the smallest unsigned type that holds its largest label.

    Stitching reads every tile's labels back in the flow's process; uint8 instead of uint32
    makes that four times less to inflate.
    """
    largest = int(labels.max(initial=0))
    for dtype in (np.uint8, np.uint16, np.uint32):
        if largest <= np.iinfo(dtype).max:
            return labels.astype(dtype, copy=False)
    return labels


def load_pieces(path: Path, tiles: Sequence[Tile]) -> list[TilePieces]:
    """Read back the pieces of a batch's tiles (not their label arrays)."""
    by_index = {tile.index: tile for tile in tiles}
    with np.load(path, allow_pickle=False) as archive:
        results = []
        for i in archive["tiles"].tolist():
            ends = archive[f"piece_ends_{i}"]
            buffer = archive[f"piece_wkb_{i}"].tobytes()
            starts = np.concatenate([[0], ends])[:-1]
            class_ids = archive[f"class_ids_{i}"]
            pieces = np.full(len(class_ids), None, dtype=object)
            pieces[archive[f"piece_labels_{i}"] - 1] = shapely.from_wkb(
                [buffer[s:e] for s, e in zip(starts, ends, strict=True)]
            )
            results.append(
                TilePieces(
                    tile=by_index[i],
                    class_ids=class_ids,
                    scores=archive[f"scores_{i}"],
                    core_px=archive[f"core_px_{i}"],
                    pieces=pieces,
                )
            )
    return results


class LabelArchives:
    """Reads tiles' label arrays from batch files, keeping the ``keep`` last used files open:
    opening one reads its whole index (seven arrays per tile), which costs more than inflating
    a uint8 label array. Close it when done."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._open: OrderedDict[Path, Any] = OrderedDict()

    def labels(self, path: Path, tile: Tile) -> np.ndarray:
        archive = self._open.pop(path, None)
        if archive is None:
            archive = np.load(path, allow_pickle=False)
        self._open[path] = archive
        while len(self._open) > self._keep:
            self._open.popitem(last=False)[1].close()
        return np.asarray(archive[f"labels_{tile.index}"])

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()


def stitch_saved(
    tiles: tuple[Tile, ...],
    batch_files: Sequence[Path],
    ready: Callable[[Path], object] = lambda path: None,
) -> StitchedObjects:
    """Stitch a raster's objects from its batch files (in plan order).

    Files are read in order as stitching reaches their tiles, each once ``ready`` returns for
    it: passed a wait for the batch that writes it, stitching follows the workers instead of
    starting after the last batch. Pieces are kept (they are polygons, small); label arrays are
    read pair by pair, in plan order, through a cache of two rows of tiles: memory grows with
    the raster's width, not its area.
    """
    files = _FilesInOrder(tiles, batch_files, ready)
    with closing(LabelArchives(keep=4)) as archives:

        def read_labels(tile: Tile) -> np.ndarray | None:
            path = files.file_of(tile)
            return None if path is None else archives.labels(path, tile)

        tiles_per_row = len({tile.col_off for tile in tiles})
        labels_of = lru_cache(maxsize=2 * tiles_per_row + 2)(read_labels)
        matches = match_overlaps(tiles, labels_of)
    return stitch_objects(files.all_pieces(), matches)


class _FilesInOrder:
    """A raster's batch files, read one after another as their tiles are asked for."""

    def __init__(
        self, tiles: tuple[Tile, ...], paths: Sequence[Path], ready: Callable[[Path], object]
    ) -> None:
        self._tiles, self._unread, self._ready = tiles, list(reversed(paths)), ready
        self._pieces: list[TilePieces] = []
        self._file_of: dict[int, Path] = {}
        self._last_index = -1  # the highest tile index read so far

    def file_of(self, tile: Tile) -> Path | None:
        """The file holding ``tile``'s results; None for a tile with none (skipped as nodata).

        Files cover consecutive runs of tiles, so once a later tile has been read, an absent
        tile is in no file.
        """
        while tile.index not in self._file_of and tile.index > self._last_index and self._unread:
            self._read_next()
        return self._file_of.get(tile.index)

    def all_pieces(self) -> list[TilePieces]:
        """The pieces of every tile, once every file is read."""
        while self._unread:
            self._read_next()
        return self._pieces

    def _read_next(self) -> None:
        path = self._unread.pop()
        self._ready(path)
        batch = load_pieces(path, self._tiles)
        self._pieces.extend(batch)
        for pieces in batch:
            self._file_of[pieces.tile.index] = path
            self._last_index = max(self._last_index, pieces.tile.index)
