"""The built-in greenery model: finds green things, ignores grey, red and blue-green ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.models.contract import ModelSpec, load_model, read_model_spec
from geoseg.models.greenery import build, main
from geoseg.models.shipped import GREENERY_MODEL, shipped_model_path
from geoseg.tasks.inference import TilePrediction, predict_tiles

CPU = torch.device("cpu")
GREY, LAWN, TREE = (128, 128, 128), (90, 116, 86), (61, 75, 64)
ROOF, WATER = (150, 80, 70), (48, 71, 75)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.jit.ScriptModule, ModelSpec]:
    return load_model(build(tmp_path_factory.mktemp("m") / "greenery.pt").path, CPU)


def image(height: int = 120, width: int = 160) -> np.ndarray:
    """A grey RGB scene, float32 ``[3, h, w]`` with 8-bit values, plus a little noise."""
    noise = np.random.default_rng(3).normal(0, 3, (3, height, width))
    return (np.array(GREY, np.float32)[:, None, None] + noise).astype(np.float32)


def paint(pixels: np.ndarray, where: np.ndarray, colour: tuple[int, int, int]) -> None:
    pixels[:, where] = np.array(colour, np.float32)[:, None]


def disk(shape: tuple[int, int], row: int, col: int, radius: int) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - row) ** 2 + (cols - col) ** 2 <= radius**2


def segment(model: tuple[torch.jit.ScriptModule, ModelSpec], pixels: np.ndarray) -> TilePrediction:
    valid = np.ones(pixels.shape[1:], bool)
    return predict_tiles(*model, [pixels], [valid], 0.5, CPU)[0]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_finds_green_blobs_and_not_roofs_or_water(
    built: tuple[torch.jit.ScriptModule, ModelSpec],
) -> None:
    pixels = image()
    crown = disk((120, 160), 35, 40, 18)
    lawn = np.zeros((120, 160), bool)
    lawn[70:110, 80:150] = True
    roof = np.zeros_like(lawn)
    roof[10:50, 90:150] = True
    water = np.zeros_like(lawn)
    water[80:115, 5:60] = True
    for where, colour in ((crown, TREE), (lawn, LAWN), (roof, ROOF), (water, WATER)):
        paint(pixels, where, colour)
    got = segment(built, pixels)
    assert got.count == 2
    np.testing.assert_array_equal(got.class_ids, [1, 1])
    assert all(0.5 < s < 1 for s in got.scores)
    found = [got.labels == k for k in (1, 2)]
    best = {
        name: max(iou(mask, f) for f in found) for name, mask in (("crown", crown), ("lawn", lawn))
    }
    assert min(best.values()) > 0.85, best  # smoothing shaves a pixel or two off dark edges
    assert not got.labels[roof | water].any()
    # The lawn is greener than the shaded crown, so it scores higher and comes first.
    assert iou(found[0], lawn) > 0.9


def test_finds_nothing_in_grey_or_tiny_specks(
    built: tuple[torch.jit.ScriptModule, ModelSpec],
) -> None:
    pixels = image()
    assert segment(built, pixels).count == 0
    paint(pixels, disk((120, 160), 60, 80, 3), LAWN)  # about 29 px: below the 64 px minimum
    assert segment(built, pixels).count == 0


def test_touching_blobs_are_one_instance_and_separate_ones_are_not(
    built: tuple[torch.jit.ScriptModule, ModelSpec],
) -> None:
    pixels = image()
    paint(pixels, disk((120, 160), 40, 40, 15) | disk((120, 160), 40, 68, 15), LAWN)
    paint(pixels, disk((120, 160), 95, 130, 15), LAWN)
    assert segment(built, pixels).count == 2


def test_nodata_is_background(built: tuple[torch.jit.ScriptModule, ModelSpec]) -> None:
    pixels = image()
    paint(pixels, np.ones((120, 160), bool), LAWN)
    valid = np.ones((120, 160), bool)
    valid[:, :80] = False
    (got,) = predict_tiles(*built, [pixels], [valid], 0.5, CPU)
    assert got.count == 1
    assert not got.labels[:, :80].any()
    assert got.labels[:, 82:].all()


def test_shipped_model_matches_build(
    built: tuple[torch.jit.ScriptModule, ModelSpec],
) -> None:
    shipped = read_model_spec(shipped_model_path(GREENERY_MODEL))
    fresh = built[1]
    fields = ("name", "classes", "bands", "scale", "mean", "std", "tile_size", "overlap")
    assert {f: getattr(shipped, f) for f in fields} == {f: getattr(fresh, f) for f in fields}
    assert (shipped.classes, shipped.bands, shipped.tile_size, shipped.overlap) == (
        {1: "vegetation"},
        (1, 2, 3),
        512,
        64,
    )
    pixels = image()
    paint(pixels, disk((120, 160), 60, 80, 30), TREE)
    paint(pixels, disk((120, 160), 20, 20, 12), LAWN)
    ours, theirs = (
        segment(built, pixels),
        segment(load_model(shipped_model_path(GREENERY_MODEL), CPU), pixels),
    )
    assert ours.count == 2
    np.testing.assert_array_equal(ours.labels, theirs.labels)
    np.testing.assert_array_equal(ours.scores, theirs.scores)


def test_module_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = tmp_path / "g.pt"
    assert main([str(out)]) == 0
    assert read_model_spec(out).name == "greenery"
    assert str(out) in capsys.readouterr().out
