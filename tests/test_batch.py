"""Tests for geoseg.tasks.batch: one batch of tiles read, segmented, cut and saved on a worker."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import shapely

import geoseg.tasks.batch
import geoseg.tasks.inference
from geoseg.errors import RasterError
from geoseg.tasks.batch import segment_batch
from geoseg.tasks.inference import TilePrediction, predict_tiles
from geoseg.tasks.partials import load_pieces, stitch_saved
from geoseg.tasks.tiling import Tile, plan_tiles
from geoseg.tasks.vectorize import polygonize_labels
from tests.conftest import MakeRaster
from tests.oracle_model import write_oracle_model

NODATA = 65535
SIZE = 48
TILE, OVERLAP = 16, 4  # 4 x 4 tiles; the first column of tiles (cols 0-15) is all nodata


def truth_ids() -> np.ndarray:
    """Instance ids of a 48 x 48 scene (class id * 1000 + n), 0 = background."""
    ids = np.zeros((SIZE, SIZE), dtype=np.uint16)
    ids[4:10, 18:40] = 1001  # a lawn across two tile borders
    ids[28:44, 26:46] = 3001  # a building with a courtyard
    ids[33:38, 31:38] = 0
    ids[20:24, 2:30] = 2001  # a bridge half under nodata
    return ids


def nodata_mask() -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[:, :16] = True
    return mask


@pytest.fixture
def scene(make_raster: MakeRaster) -> Path:
    image = np.ones((SIZE, SIZE), dtype=np.uint16)
    image[nodata_mask()] = NODATA
    return make_raster(np.stack([image, truth_ids()]), nodata=NODATA)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_oracle_model(tmp_path_factory.mktemp("model") / "oracle.pt"))


@pytest.fixture
def model_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Number of tiles in each call segment_batch makes to the model."""
    calls: list[int] = []

    def spy(
        model: object, spec: object, pixels: Sequence[np.ndarray], *args: object
    ) -> list[TilePrediction]:
        calls.append(len(pixels))
        return predict_tiles(model, spec, pixels, *args)

    monkeypatch.setattr(geoseg.tasks.inference, "predict_tiles", spy)
    return calls


def visible_ids(tile: Tile) -> set[int]:
    """The truth ids with at least one valid pixel in a tile's window."""
    rows = slice(tile.row_off, tile.row_off + tile.height)
    cols = slice(tile.col_off, tile.col_off + tile.width)
    window = truth_ids()[rows, cols][~nodata_mask()[rows, cols]]
    return set(np.unique(window[window > 0]).tolist())


def test_nodata_tiles_are_skipped_and_the_report_lists_tiles_with_instances(
    scene: Path, oracle: str, model_calls: list[int], tmp_path: Path
) -> None:
    tiles = plan_tiles(SIZE, SIZE, TILE, OVERLAP)

    report = segment_batch(str(scene), tiles, oracle, 0.5, tmp_path / "b.npz", device="cpu")

    assert report.path == tmp_path / "b.npz"
    assert report.tiles_skipped == 4
    assert model_calls == [len(tiles) - 4]
    expected = [tile for tile in tiles if visible_ids(tile)]
    assert report.tiles_with_instances == tuple(tile.index for tile in expected)
    assert report.instances == sum(len(visible_ids(tile)) for tile in expected)
    assert [p.tile.index for p in load_pieces(report.path, tiles)] == list(
        report.tiles_with_instances
    )


def test_a_task_runs_the_model_one_model_batch_at_a_time_with_the_same_result(
    scene: Path, oracle: str, model_calls: list[int], tmp_path: Path
) -> None:
    tiles = plan_tiles(SIZE, SIZE, TILE, OVERLAP)
    whole = segment_batch(str(scene), tiles, oracle, 0.5, tmp_path / "a.npz", "cpu")
    model_calls.clear()

    batched = segment_batch(str(scene), tiles, oracle, 0.5, tmp_path / "b.npz", "cpu", batch_size=3)

    assert max(model_calls) <= 3
    assert sum(model_calls) == len(tiles) - whole.tiles_skipped
    assert (batched.tiles_with_instances, batched.tiles_skipped, batched.instances) == (
        whole.tiles_with_instances,
        whole.tiles_skipped,
        whole.instances,
    )
    assert load_pieces(batched.path, tiles) == load_pieces(whole.path, tiles)


def test_a_batch_of_nodata_tiles_never_runs_the_model(
    scene: Path, oracle: str, model_calls: list[int], tmp_path: Path
) -> None:
    tiles = plan_tiles(SIZE, SIZE, TILE, OVERLAP)
    first_column = tuple(tile for tile in tiles if tile.col_off == 0)

    report = segment_batch(str(scene), first_column, oracle, 0.5, tmp_path / "b.npz", "cpu")

    assert model_calls == []
    assert (report.tiles_skipped, report.tiles_with_instances, report.instances) == (4, (), 0)
    assert load_pieces(report.path, tiles) == []


def test_saved_batches_stitch_into_the_true_objects(
    scene: Path, oracle: str, tmp_path: Path
) -> None:
    tiles = plan_tiles(SIZE, SIZE, TILE, OVERLAP)
    files = [
        segment_batch(str(scene), tiles[i : i + 5], oracle, 0.5, tmp_path / f"{i}.npz", "cpu").path
        for i in range(0, len(tiles), 5)
    ]

    objects = stitch_saved(tiles, files)

    ids = truth_ids()
    ids[nodata_mask()] = 0
    truth = polygonize_labels(ids, 0, 0)
    assert list(zip(objects.class_id.tolist(), objects.pixels.tolist(), strict=True)) == [
        (1, 6 * 22),
        (2, 4 * 14),
        (3, 16 * 20 - 5 * 7),
    ]
    for geometry, score, truth_id in zip(
        objects.geometry, objects.score, [1001, 2001, 3001], strict=True
    ):
        assert shapely.equals(geometry, truth[truth_id])
        assert score == pytest.approx(1 - (truth_id % 1000) / 2000)


def test_a_score_threshold_drops_instances(scene: Path, oracle: str, tmp_path: Path) -> None:
    tiles = plan_tiles(SIZE, SIZE, TILE, OVERLAP)

    # Every oracle score is 1 - n / 2000 with n = 1 here: 0.9995.
    report = segment_batch(str(scene), tiles, oracle, 0.9999, tmp_path / "b.npz", "cpu")

    assert (report.tiles_with_instances, report.instances) == ((), 0)


def test_unreadable_pixels_fail_the_batch_with_a_raster_error(
    make_raster: MakeRaster, oracle: str, tmp_path: Path
) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (2, SIZE, SIZE), dtype=np.uint8)
    path = make_raster(pixels, name="damaged.tif")
    data = bytearray(path.read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)
    path.write_bytes(bytes(data))

    with pytest.raises(RasterError, match=r"^damaged\.tif: pixels of window"):
        segment_batch(
            str(path), plan_tiles(SIZE, SIZE, TILE, OVERLAP), oracle, 0.5, tmp_path / "b.npz", "cpu"
        )

    assert not (tmp_path / "b.npz").exists()


def test_tiles_resampled_for_the_model_map_back_onto_the_raster_grid(
    make_raster: MakeRaster, oracle: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ids = truth_ids()
    ids[33:38, 31:38] = 3001
    ids[32:38, 30:38] = 0  # a courtyard on whole 2 x 2 blocks, so averaging keeps every id
    image = np.ones((SIZE, SIZE), dtype=np.uint16)
    image[nodata_mask()] = NODATA
    scene = make_raster(np.stack([image, ids]), nodata=NODATA)
    seen: list[tuple[int, ...]] = []

    def spy(
        model: object, spec: object, pixels: Sequence[np.ndarray], *args: object
    ) -> list[TilePrediction]:
        seen.extend(p.shape for p in pixels)
        return predict_tiles(model, spec, pixels, *args)

    monkeypatch.setattr(geoseg.tasks.inference, "predict_tiles", spy)
    tiles = plan_tiles(SIZE, SIZE, TILE, OVERLAP)

    half = segment_batch(str(scene), tiles, oracle, 0.5, tmp_path / "h.npz", "cpu", scale=0.5)
    full = segment_batch(str(scene), tiles, oracle, 0.5, tmp_path / "f.npz", "cpu")

    assert set(seen[: len(tiles) - 4]) == {(2, 8, 8)}
    half_objects, full_objects = (stitch_saved(tiles, [report.path]) for report in (half, full))
    assert np.array_equal(half_objects.class_id, full_objects.class_id)
    assert np.array_equal(half_objects.pixels, full_objects.pixels)
    assert shapely.equals(half_objects.geometry, full_objects.geometry).all()


def test_a_task_holds_its_tiles_label_arrays_compacted_until_it_saves_them(
    scene: Path, oracle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held: list[np.dtype] = []

    def save(path: Path, results: list[tuple[object, np.ndarray]]) -> None:
        held.extend(labels.dtype for _, labels in results)

    monkeypatch.setattr(geoseg.tasks.batch, "save_batch", save)
    tiles = plan_tiles(SIZE, SIZE, TILE, OVERLAP)
    segment_batch(str(scene), tiles, oracle, 0.5, tmp_path / "b.npz", "cpu", batch_size=2)
    assert held
    assert set(held) == {np.dtype(np.uint8)}  # a few instances per tile, not uint32
