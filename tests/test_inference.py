"""predict_tiles: normalization, contract checks and turning detections into label maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from geoseg.errors import ModelError, OptionsError, RasterError
from geoseg.models.contract import ModelSpec, load_model, package_model
from geoseg.tasks import inference
from geoseg.tasks.inference import (
    TilePrediction,
    configure_torch_threads,
    predict_tiles,
    resize_prediction,
)
from tests.oracle_model import OracleModel, write_oracle_model

CPU = torch.device("cpu")
Model = tuple[torch.jit.ScriptModule, ModelSpec]


class FixedModel(torch.nn.Module):
    """Returns the same detections for every image, minus the key named by ``drop``."""

    def __init__(
        self,
        masks: torch.Tensor,
        scores: torch.Tensor,
        labels: torch.Tensor,
        drop: str = "",
        as_torchvision: bool = False,
    ) -> None:
        super().__init__()
        self.register_buffer("masks", masks)
        self.register_buffer("scores", scores)
        self.register_buffer("labels", labels)
        self.register_buffer("boxes", torch.zeros(len(scores), 4))
        self.drop = drop
        self.as_torchvision = as_torchvision

    def forward(
        self, images: list[torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
        detections: list[dict[str, torch.Tensor]] = []
        for _ in images:
            detection = {
                "boxes": self.boxes,
                "labels": self.labels,
                "scores": self.scores,
                "masks": self.masks,
            }
            if self.drop != "":
                detection.pop(self.drop)
            detections.append(detection)
        # The tuple is what a scripted torchvision detector returns: (losses, detections).
        return {}, detections


class ListOnly(torch.nn.Module):
    def __init__(self, inner: FixedModel) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return self.inner(images)[1]


class Broken(torch.nn.Module):
    def forward(self, images: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        if images[0].shape[0] > 5:
            raise ValueError("too many bands")
        return {"masks": images[0]}


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return load_model(write_oracle_model(tmp_path_factory.mktemp("m") / "oracle.pt"), CPU)


def fixed(
    tmp_path: Path,
    masks: np.ndarray,
    scores: list[float],
    labels: list[int] | None = None,
    *,
    drop: str = "",
    wrap: bool = True,
) -> Model:
    n = len(scores)
    module = FixedModel(
        torch.as_tensor(masks, dtype=torch.float32),
        torch.tensor(scores, dtype=torch.float32),
        torch.tensor([1] * n if labels is None else labels, dtype=torch.int64),
        drop=drop,
    )
    path = tmp_path / "fixed.pt"
    package_model(
        ListOnly(module) if wrap else module, path, classes={1: "a", 2: "b"}, bands=(1,), scale=1
    )
    return load_model(path, CPU)


def tile(ids: np.ndarray) -> np.ndarray:
    """Oracle input: a noise band and the id band."""
    noise = np.random.default_rng(0).normal(size=ids.shape).astype(np.float32)
    return np.stack([noise, ids.astype(np.float32)])


def expected(ids: np.ndarray, threshold: float = 0.0) -> TilePrediction:
    """The oracle's answer computed independently: one instance per id, in ascending id order."""
    values = np.unique(ids[ids > 0])
    # float32 arithmetic, as in the model, so that scores at the threshold compare the same way.
    scores = np.float32(1) - (values % 1000).astype(np.float32) / np.float32(2000)
    values, scores = values[scores >= threshold], scores[scores >= threshold]
    labels = np.zeros(ids.shape, dtype=np.uint32)
    for k, v in enumerate(values, start=1):
        labels[ids == v] = k
    return TilePrediction(labels, (values // 1000).astype(np.int64), scores)


def assert_same(actual: TilePrediction, wanted: TilePrediction) -> None:
    np.testing.assert_array_equal(actual.labels, wanted.labels)
    np.testing.assert_array_equal(actual.class_ids, wanted.class_ids)
    np.testing.assert_array_equal(actual.scores, wanted.scores)
    assert actual.labels.dtype == np.uint32


def test_oracle_is_exact_on_a_batch_of_differently_sized_tiles(oracle: Model) -> None:
    a = np.zeros((40, 50), dtype=np.int64)
    a[2:10, 3:30] = 1005
    a[10:11, 0:50] = 2001  # one pixel wide, touching 1005
    a[20:40, 40:50] = 3999
    a[30, 5] = 1001  # a single pixel
    b = np.zeros((17, 9), dtype=np.int64)
    b[::2, ::2] = 2000  # disconnected pixels of one instance
    c = np.zeros((8, 8), dtype=np.int64)
    got = predict_tiles(*oracle, [tile(a), tile(b), tile(c)], [a >= 0, b >= 0, c >= 0], 0.0, CPU)
    for prediction, ids in zip(got, (a, b, c), strict=True):
        assert_same(prediction, expected(ids))
    assert got[0].count == 4
    assert got[2].count == 0


@settings(max_examples=25, deadline=None)
@given(
    ids=hnp.arrays(
        np.int64,
        st.tuples(st.integers(1, 24), st.integers(1, 24)),
        elements=st.sampled_from([0, 0, 1000, 1003, 2500, 3999, 3001]),
    ),
    threshold=st.sampled_from([0.0, 0.75, 0.9995, 1.0]),
)
def test_oracle_round_trip_property(oracle: Model, ids: np.ndarray, threshold: float) -> None:
    (got,) = predict_tiles(*oracle, [tile(ids)], [np.ones(ids.shape, bool)], threshold, CPU)
    assert_same(got, expected(ids, threshold))


def test_score_threshold_drops_and_relabels(oracle: Model) -> None:
    ids = np.zeros((10, 40), dtype=np.int64)
    for n, v in enumerate([1000, 1400, 1100, 2999, 3200]):  # scores 1.0, .8, .95, .5005, .9
        ids[:, n * 8 : n * 8 + 5] = v
    (got,) = predict_tiles(*oracle, [tile(ids)], [ids >= 0], 0.9, CPU)
    np.testing.assert_array_equal(got.class_ids, [1, 1, 3])
    np.testing.assert_allclose(got.scores, [1.0, 0.95, 0.9])
    assert set(np.unique(got.labels)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(got.labels[0, ::8], [1, 0, 2, 0, 3])


def test_nodata_is_cleared_and_never_detected(oracle: Model) -> None:
    ids = np.zeros((20, 20), dtype=np.int64)
    ids[0:10, 0:10] = 1001  # half under nodata
    ids[15:20, 15:20] = 2002  # entirely under nodata
    ids[0:5, 15:20] = 3003
    valid = np.ones(ids.shape, bool)
    valid[5:20, :] = False
    pixels = tile(ids)
    pixels[1, 12:, :10] = 1999  # a fill value under nodata must not become an instance
    pixels[0, 18, 0] = np.nan  # nor may a non-finite value elsewhere upset anything
    (got,) = predict_tiles(*oracle, [pixels], [valid], 0.0, CPU)
    np.testing.assert_array_equal(got.class_ids, [1, 3])
    assert not got.labels[~valid].any()
    np.testing.assert_array_equal(got.labels == 1, (ids == 1001) & valid)


def test_the_callers_pixels_and_masks_are_left_as_they_were(oracle: Model) -> None:
    ids = np.zeros((12, 12), dtype=np.int64)
    ids[2:9, 2:9] = 1001
    pixels = tile(ids)
    pixels[0, 3, 3] = np.nan
    valid = np.ones(ids.shape, bool)
    valid[:, 10:] = False
    before = pixels.copy(), valid.copy()

    (got,) = predict_tiles(*oracle, [pixels], [valid], 0.0, CPU)

    assert got.labels[3, 3] == 0
    np.testing.assert_array_equal(pixels, before[0])
    np.testing.assert_array_equal(valid, before[1])


def test_flipped_and_strided_views_are_read_like_copies(oracle: Model) -> None:
    ids = np.zeros((10, 12), dtype=np.int64)
    ids[1:6, 2:9] = 1001
    ids[7:9, 0:4] = 2002
    pixels, valid = tile(ids), ids < 2002
    views = pixels[:, ::-1, ::2], valid[::-1, ::2]

    (got,) = predict_tiles(*oracle, [views[0]], [views[1]], 0.0, CPU)
    (wanted,) = predict_tiles(*oracle, [views[0].copy()], [views[1].copy()], 0.0, CPU)

    assert_same(got, wanted)
    assert got.count == 1


def test_non_finite_values_count_as_nodata(oracle: Model) -> None:
    ids = np.full((4, 4), 1001, dtype=np.int64)
    pixels = tile(ids)
    pixels[0, 0, 0] = np.inf
    (got,) = predict_tiles(*oracle, [pixels], [np.ones((4, 4), bool)], 0.0, CPU)
    assert got.labels[0, 0] == 0
    assert (got.labels.ravel()[1:] == 1).all()


def test_normalization_is_scale_then_mean_and_std(tmp_path: Path) -> None:
    path = tmp_path / "scaled.pt"
    package_model(
        OracleModel(),
        path,
        classes={1: "a"},
        bands=(1, 2),
        scale=0.5,
        mean=(0.0, 10.0),
        std=(1.0, 0.5),
    )
    model = load_model(path, CPU)
    raw = np.full((6, 6), 20.0, dtype=np.float32)  # (20 * 0.5 - 10) / 0.5 = 0: background
    raw[1:3, 1:3] = 1021.0  # (1021 * 0.5 - 10) / 0.5 = 1001
    pixels = np.stack([np.zeros_like(raw), raw])
    (got,) = predict_tiles(*model, [pixels], [np.ones(raw.shape, bool)], 0.0, CPU)
    np.testing.assert_array_equal(got.labels, (raw == 1021).astype(np.uint32))
    np.testing.assert_allclose(got.scores, [1 - 1 / 2000])


def test_overlaps_go_to_the_highest_score_and_ties_to_the_earlier(tmp_path: Path) -> None:
    masks = np.zeros((5, 1, 4, 6), dtype=np.float32)
    masks[0, 0, :, 0:4] = 0.9  # score .6, mostly beaten by the next two
    masks[1, 0, :, 2:5] = 0.7  # score .8
    masks[2, 0, :, 3:6] = 0.51  # score .8 too: the earlier (1) keeps column 3 and 4
    masks[3, 0, 1:3, 2:5] = 1.0  # score .7, entirely beneath 1: left with no pixels
    masks[4, 0, 0, 0] = 0.5  # exactly 0.5 is not inside the mask: no pixels
    scores = [0.6, 0.8, 0.8, 0.7, 0.99]
    (got,) = predict_tiles(
        *fixed(tmp_path, masks, scores, [2, 1, 2, 1, 1]),
        [np.zeros((1, 4, 6), np.float32)],
        [np.ones((4, 6), bool)],
        0.0,
        CPU,
    )
    np.testing.assert_array_equal(got.labels, np.array([[1, 1, 2, 2, 2, 3]] * 4, np.uint32))
    np.testing.assert_array_equal(got.class_ids, [2, 1, 2])
    np.testing.assert_allclose(got.scores, [0.6, 0.8, 0.8])


def test_scripted_torchvision_tuple_output_is_accepted(tmp_path: Path) -> None:
    masks = np.ones((1, 1, 3, 3), dtype=np.float32)
    model = fixed(tmp_path, masks, [0.9], wrap=False)
    (got,) = predict_tiles(
        *model, [np.zeros((1, 3, 3), np.float32)], [np.ones((3, 3), bool)], 0.5, CPU
    )
    assert got.count == 1
    assert (got.labels == 1).all()


@pytest.mark.parametrize(
    ("masks_shape", "scores", "labels", "drop", "message"),
    [
        ((1, 3, 3), [0.9], [1], "", r"'masks' has shape \[1, 3, 3\], expected \[1, 1, 3, 3\]"),
        (
            (1, 1, 3, 4),
            [0.9],
            [1],
            "",
            r"expected \[1, 1, 3, 3\] as \[N, ...\] for an input of 3x3",
        ),
        ((2, 1, 3, 3), [0.9], [1], "", r"'masks' has shape \[2, 1, 3, 3\]"),
        ((1, 1, 3, 3), [float("nan")], [1], "", "'scores' must be finite"),
        ((1, 1, 3, 3), [0.9], [9], "", r"label 9 is not among the model's classes \[1, 2\]"),
        ((1, 1, 3, 3), [0.9], [1], "masks", "output lacks the tensor 'masks'"),
        ((1, 1, 3, 3), [0.9], [1], "scores", "output lacks the tensor 'scores'"),
    ],
)
def test_contract_violations(
    tmp_path: Path,
    masks_shape: tuple[int, ...],
    scores: list[float],
    labels: list[int],
    drop: str,
    message: str,
) -> None:
    model = fixed(tmp_path, np.ones(masks_shape, np.float32), scores, labels, drop=drop)
    with pytest.raises(ModelError, match=message) as caught:
        predict_tiles(*model, [np.zeros((1, 3, 3), np.float32)], [np.ones((3, 3), bool)], 0.5, CPU)
    assert str(caught.value).startswith("model 'fixed', image 0: ")


def test_output_that_is_not_a_list_and_model_failures(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    package_model(Broken(), path, classes={1: "a"}, bands=tuple(range(1, 7)), scale=1)
    model, spec = load_model(path, CPU)
    with pytest.raises(ModelError, match=r"model 'broken' failed: .*too many bands"):
        predict_tiles(
            model, spec, [np.zeros((6, 2, 2), np.float32)], [np.ones((2, 2), bool)], 0.5, CPU
        )
    small = ModelSpec(**{**spec.__dict__, "bands": (1,)})
    with pytest.raises(ModelError, match=r"must return a list of 1 dicts .*got dict"):
        predict_tiles(
            model, small, [np.zeros((1, 2, 2), np.float32)], [np.ones((2, 2), bool)], 0.5, CPU
        )


def test_input_checks(oracle: Model) -> None:
    pixels, valid = np.zeros((2, 3, 3), np.float32), np.ones((3, 3), bool)
    assert predict_tiles(*oracle, [], [], 0.5, CPU) == []
    with pytest.raises(OptionsError, match="between 0 and 1"):
        predict_tiles(*oracle, [pixels], [valid], 1.5, CPU)
    with pytest.raises(RasterError, match="model 'oracle' reads 2 bands"):
        predict_tiles(*oracle, [pixels[:1]], [valid], 0.5, CPU)
    with pytest.raises(RasterError, match="validity mask"):
        predict_tiles(*oracle, [pixels], [valid[:2]], 0.5, CPU)
    with pytest.raises(RasterError, match="1 tiles of pixels but 2 validity masks"):
        predict_tiles(*oracle, [pixels], [valid, valid], 0.5, CPU)


def test_tile_prediction_is_validated() -> None:
    labels = np.array([[0, 1], [2, 2]], dtype=np.uint32)
    ok = TilePrediction(labels, np.array([1, 2], np.int64), np.array([0.9, 0.8], np.float32))
    assert ok.count == 2
    with pytest.raises(ValueError, match="more instances"):
        TilePrediction(labels, np.array([1], np.int64), np.array([0.9], np.float32))
    with pytest.raises(ValueError, match="uint32"):
        TilePrediction(labels.astype(np.int32), ok.class_ids, ok.scores)


def test_configure_torch_threads() -> None:
    before = torch.get_num_threads()
    try:
        configure_torch_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(OptionsError, match="at least 1"):
        configure_torch_threads(0)


def prediction(labels: np.ndarray, count: int) -> TilePrediction:
    return TilePrediction(
        labels.astype(np.uint32),
        np.arange(1, count + 1, dtype=np.int64),
        np.linspace(0.9, 0.6, count).astype(np.float32),
    )


def test_resize_prediction_to_twice_the_size_repeats_each_pixel() -> None:
    small = prediction(np.array([[0, 1], [2, 2]]), 2)

    big = resize_prediction(small, (4, 4))

    assert np.array_equal(big.labels, np.kron(small.labels, np.ones((2, 2), dtype=np.uint32)))
    assert np.array_equal(big.class_ids, small.class_ids)


def test_resize_prediction_drops_and_renumbers_instances_left_without_pixels() -> None:
    labels = np.zeros((8, 8), dtype=np.uint32)
    labels[0, 0] = 1  # one pixel: gone at half size (pixel 0 takes the centre 1, 1 of its block)
    labels[4:8, 4:8] = 2
    labels[0:4, 4:8] = 3

    half = resize_prediction(prediction(labels, 3), (4, 4))

    assert half.count == 2
    assert np.array_equal(half.class_ids, [2, 3])
    assert set(np.unique(half.labels).tolist()) == {0, 1, 2}
    assert (half.labels[2:, 2:] == 1).all()
    assert (half.labels[:2, 2:] == 2).all()


@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    out_h=st.integers(1, 40),
    out_w=st.integers(1, 40),
    seed=st.integers(0, 1000),
)
def test_resize_prediction_keeps_a_valid_prediction(
    height: int, width: int, out_h: int, out_w: int, seed: int
) -> None:
    labels = np.random.default_rng(seed).integers(0, 4, (height, width))
    count = int(labels.max())
    resized = resize_prediction(prediction(labels, count), (out_h, out_w))

    assert resized.labels.shape == (out_h, out_w)
    present = set(np.unique(resized.labels).tolist()) - {0}
    assert present == set(range(1, resized.count + 1))


class MemoryBound(torch.nn.Module):
    """The oracle on a device that holds at most ``limit`` tiles per forward pass."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.inner = OracleModel()
        self.limit = limit

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        if len(images) > self.limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(images)


def memory_bound(tmp_path: Path, limit: int) -> Model:
    path = tmp_path / f"bound{limit}.pt"
    package_model(MemoryBound(limit), path, classes={1: "a", 2: "b"}, bands=(1, 2), scale=1)
    return load_model(path, CPU)


def test_a_batch_too_big_for_memory_is_split_until_it_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inference, "_TILES_THAT_FIT", {})
    ids = [np.full((4, 5), 1000 + k, dtype=np.int64) for k in range(7)]
    got = predict_tiles(
        *memory_bound(tmp_path, 2), [tile(i) for i in ids], [np.ones((4, 5), bool)] * 7, 0.0, CPU
    )
    for actual, wanted in zip(got, ids, strict=True):
        assert_same(actual, expected(wanted))
    assert inference._TILES_THAT_FIT == {"cpu": 1}


def test_a_single_tile_too_big_for_memory_names_the_model_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inference, "_TILES_THAT_FIT", {})
    with pytest.raises(
        ModelError,
        match=r"^model 'bound0' ran out of memory on cpu with a single "
        r"tile of 4x5 pixels; use a smaller --tile-size$",
    ):
        predict_tiles(
            *memory_bound(tmp_path, 0),
            [tile(np.ones((4, 5), np.int64))] * 3,
            [np.ones((4, 5), bool)] * 3,
            0.5,
            CPU,
        )


class LabelMapModel(torch.nn.Module):
    """Returns the same detections for every image, their pixels as one label map."""

    def __init__(self, label_map: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("label_map", label_map)
        self.register_buffer("scores", scores)
        self.register_buffer("labels", labels)
        self.register_buffer("boxes", torch.zeros(len(scores), 4))

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [
            {
                "boxes": self.boxes,
                "labels": self.labels,
                "scores": self.scores,
                "label_map": self.label_map,
            }
            for _ in images
        ]


def label_map_model(
    tmp_path: Path, label_map: np.ndarray, scores: list[float], labels: list[int] | None = None
) -> Model:
    n = len(scores)
    module = LabelMapModel(
        torch.as_tensor(label_map),
        torch.tensor(scores, dtype=torch.float32),
        torch.tensor([1] * n if labels is None else labels, dtype=torch.int64),
    )
    path = tmp_path / "label_map.pt"
    package_model(module, path, classes={1: "a", 2: "b"}, bands=(1,), scale=1)
    return load_model(path, CPU)


@settings(max_examples=30, deadline=None)
@given(
    owners=hnp.arrays(np.int64, (6, 7), elements=st.integers(0, 4)),
    scores=st.lists(st.sampled_from([0.2, 0.5, 0.7, 0.9]), min_size=4, max_size=4),
    valid=hnp.arrays(np.bool_, (6, 7)),
)
def test_a_label_map_resolves_like_the_same_masks(
    tmp_path_factory: pytest.TempPathFactory,
    owners: np.ndarray,
    scores: list[float],
    valid: np.ndarray,
) -> None:
    folder = tmp_path_factory.mktemp("lm")
    masks = np.stack([owners == k for k in range(1, 5)])[:, None].astype(np.float32)
    classes = [1, 2, 1, 2]
    pixels = [np.zeros((1, 6, 7), np.float32)]
    by_map = predict_tiles(
        *label_map_model(folder, owners, scores, classes), pixels, [valid], 0.5, CPU
    )
    by_masks = predict_tiles(*fixed(folder, masks, scores, classes), pixels, [valid], 0.5, CPU)
    assert_same(by_map[0], by_masks[0])


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.uint64, np.int64]
)
def test_label_maps_of_every_integer_type_resolve_alike(tmp_path: Path, dtype: type) -> None:
    owners = np.array([[0, 1, 1, 2], [3, 3, 0, 2], [3, 0, 0, 0]])
    valid = np.ones(owners.shape, bool)
    valid[0, 1] = False
    pixels = [np.zeros((1, *owners.shape), np.float32)]
    model = label_map_model(tmp_path, owners.astype(dtype), [0.9, 0.3, 0.8])

    (got,) = predict_tiles(*model, pixels, [valid], 0.5, CPU)

    np.testing.assert_array_equal(got.labels, [[0, 0, 1, 0], [2, 2, 0, 0], [2, 0, 0, 0]])
    np.testing.assert_array_equal(got.scores, np.float32([0.9, 0.8]))


@pytest.mark.parametrize(
    ("label_map", "message"),
    [
        (np.zeros((3, 3), np.float32), "'label_map' must be integers, got torch.float32"),
        (np.full((3, 3), 2, np.int64), r"'label_map' values must lie in 0\.\.1"),
        (np.full((3, 3), -1, np.int64), r"'label_map' values must lie in 0\.\.1"),
        (np.zeros((3, 4), np.int64), r"'label_map' has shape \[3, 4\], expected \[3, 3\]"),
    ],
)
def test_label_map_contract_violations(tmp_path: Path, label_map: np.ndarray, message: str) -> None:
    model = label_map_model(tmp_path, label_map, [0.9])
    with pytest.raises(ModelError, match=message) as caught:
        predict_tiles(*model, [np.zeros((1, 3, 3), np.float32)], [np.ones((3, 3), bool)], 0.5, CPU)
    assert str(caught.value).startswith("model 'label_map', image 0: ")
