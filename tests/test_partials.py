"""Tests for geoseg.tasks.partials: batch files on disk and stitching from them."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import shapely

from geoseg.tasks.inference import TilePrediction
from geoseg.tasks.partials import LabelArchives, load_pieces, save_batch, stitch_saved
from geoseg.tasks.stitch import TilePieces, cut_pieces, match_overlaps, stitch_objects
from geoseg.tasks.tiling import Tile, plan_tiles

WIDTH, HEIGHT = 60, 44
TILES = plan_tiles(WIDTH, HEIGHT, 16, 4)


def truth_ids() -> np.ndarray:
    """Objects crossing tile borders, one with a hole, one in two parts touching at a corner."""
    ids = np.zeros((HEIGHT, WIDTH), dtype=np.int64)
    ids[2:14, 5:40] = 1
    ids[16:40, 20:44] = 2
    ids[18:23, 28:35] = 0
    ids[30:36, 48:52] = 3
    ids[36:42, 52:58] = 3
    ids[40:44, 0:10] = 4
    return ids


CLASSES = {1: 1, 2: 3, 3: 2, 4: 1}


def predict(tile: Tile) -> TilePrediction:
    """A perfect model's prediction for a tile, instances numbered 1..N in the tile."""
    col0, row0, col1, row1 = tile.box
    window = truth_ids()[row0:row1, col0:col1]
    ids = np.unique(window[window > 0])
    lookup = np.zeros(truth_ids().max() + 1, dtype=np.uint32)
    lookup[ids] = np.arange(1, len(ids) + 1, dtype=np.uint32)
    return TilePrediction(
        labels=lookup[window],
        class_ids=np.array([CLASSES[int(i)] for i in ids], dtype=np.int64),
        scores=np.array([0.6 + int(i) / 10 for i in ids], dtype=np.float32),
    )


def results(tiles: tuple[Tile, ...]) -> list[tuple[TilePieces, np.ndarray]]:
    """What segment_batch saves: the pieces and labels of tiles that have instances."""
    predictions = [(tile, predict(tile)) for tile in tiles]
    return [(cut_pieces(t, p), p.labels) for t, p in predictions if p.count]


def assert_same_pieces(loaded: TilePieces, saved: TilePieces) -> None:
    assert loaded.tile == saved.tile
    for name in ("class_ids", "scores", "core_px"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(saved, name))
        assert getattr(loaded, name).dtype == getattr(saved, name).dtype
    assert loaded.pieces.dtype == object
    np.testing.assert_array_equal(shapely.is_missing(loaded.pieces), saved.core_px == 0)
    np.testing.assert_array_equal(shapely.is_missing(saved.pieces), saved.core_px == 0)
    present = saved.core_px > 0
    assert shapely.equals_exact(loaded.pieces[present], saved.pieces[present], tolerance=0).all()


def test_a_batch_round_trips(tmp_path: Path) -> None:
    saved = results(TILES)
    path = tmp_path / "batch.npz"

    save_batch(path, saved)

    loaded = load_pieces(path, TILES)
    assert len(loaded) == len(saved)
    for back, (pieces, labels) in zip(loaded, saved, strict=True):
        assert_same_pieces(back, pieces)
        with closing(LabelArchives(keep=1)) as archives:
            back_labels = archives.labels(path, pieces.tile)
        np.testing.assert_array_equal(back_labels, labels)
        assert back_labels.dtype == np.uint8  # the smallest type that holds these few labels


@pytest.mark.parametrize(
    ("largest", "dtype"), [(0, np.uint8), (255, np.uint8), (256, np.uint16), (70_000, np.uint32)]
)
def test_label_arrays_are_saved_in_the_smallest_type_that_holds_them(
    tmp_path: Path, largest: int, dtype: type
) -> None:
    (pieces, labels), *_ = results(TILES)
    labels = labels.astype(np.uint32)
    labels[0, 0] = largest
    path = tmp_path / "batch.npz"

    save_batch(path, [(pieces, labels)])

    with closing(LabelArchives(keep=1)) as archives:
        back = archives.labels(path, pieces.tile)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, labels)


def test_multipolygons_holes_and_instances_outside_the_core_round_trip(tmp_path: Path) -> None:
    kinds = {shapely.get_type_id(g) for pieces, _ in results(TILES) for g in pieces.pieces if g}
    with_hole = [
        pieces
        for pieces, _ in results(TILES)
        if any(shapely.get_num_interior_rings(g) for g in pieces.pieces if g)
    ]
    # A tile that sees an instance in its overlap only: the instance has no piece there.
    coreless = [pieces for pieces, _ in results(TILES) if (pieces.core_px == 0).any()]
    nothing_in_core = [pieces for pieces, _ in results(TILES) if not pieces.core_px.any()]
    assert kinds == {3, 6}
    assert with_hole
    assert coreless
    assert nothing_in_core
    path = tmp_path / "batch.npz"

    save_batch(path, [(p, predict(p.tile).labels) for p in [*with_hole, *coreless]])

    for back, pieces in zip(load_pieces(path, TILES), [*with_hole, *coreless], strict=True):
        assert_same_pieces(back, pieces)


def test_an_empty_batch_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "empty.npz"

    save_batch(path, [])

    assert load_pieces(path, TILES) == []


def test_saving_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "batch.npz"
    path.write_bytes(b"an older attempt")

    save_batch(path, results(TILES[:3]))

    assert [p.name for p in tmp_path.iterdir()] == ["batch.npz"]
    assert [p.tile.index for p in load_pieces(path, TILES)] == [0, 1, 2]


def test_batch_files_hold_no_pickles(tmp_path: Path) -> None:
    path = tmp_path / "batch.npz"
    save_batch(path, results(TILES))

    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}

    assert all(array.dtype != object for array in arrays.values())
    assert arrays["tiles"].tolist() == [pieces.tile.index for pieces, _ in results(TILES)]


def test_stitching_reads_each_batch_file_once_it_is_ready_in_plan_order(tmp_path: Path) -> None:
    # Each file is written only when stitching waits for it, as a worker would finish it.
    batches = {
        tmp_path / f"{start}.npz": TILES[start : start + 2] for start in range(0, len(TILES), 3)
    }
    waited: list[Path] = []

    def ready(path: Path) -> None:
        waited.append(path)
        save_batch(path, results(batches[path]))

    lazily = stitch_saved(TILES, list(batches), ready)

    assert waited == list(batches)
    expected = stitch_saved(TILES, list(batches))
    assert shapely.to_wkb(lazily.geometry).tolist() == shapely.to_wkb(expected.geometry).tolist()
    assert np.array_equal(lazily.class_id, expected.class_id)
    assert np.array_equal(lazily.score, expected.score)


@pytest.mark.parametrize("batch_size", [1, 4, len(TILES)])
def test_stitching_saved_batches_equals_stitching_in_memory(
    tmp_path: Path, batch_size: int
) -> None:
    files = []
    for start in range(0, len(TILES), batch_size):
        files.append(tmp_path / f"{start}.npz")
        save_batch(files[-1], results(TILES[start : start + batch_size]))
    in_memory = results(TILES)
    labels = {pieces.tile.index: labels for pieces, labels in in_memory}

    saved = stitch_saved(TILES, files)

    expected = stitch_objects(
        [pieces for pieces, _ in in_memory],
        match_overlaps(TILES, lambda tile: labels.get(tile.index)),
    )
    assert len(saved) == len(expected) == 4
    assert shapely.equals_exact(saved.geometry, expected.geometry, tolerance=0).all()
    assert np.array_equal(saved.class_id, expected.class_id)
    assert np.array_equal(saved.score, expected.score)
    assert np.array_equal(saved.pixels, expected.pixels)
    assert saved.pixels.tolist() == [int((truth_ids() == i).sum()) for i in (1, 2, 3, 4)]
