"""Training steps, the loss, checkpoints and resuming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.functional import binary_cross_entropy_with_logits as cross_entropy

from geoseg.errors import ModelError, OptionsError
from geoseg.models.datasets import LabelledImage
from geoseg.models.targets import instance_targets
from geoseg.models.training import (
    TrainingConfig,
    TrainingSource,
    load_checkpoint,
    make_batch,
    network_from_checkpoint,
    segmentation_loss,
    split_validation,
    standardise,
    train,
    train_step,
    unlabelled_classes,
)
from geoseg.models.unet import UNet

CLASSES = {1: "lawn", 2: "bridge", 3: "building"}


def _image() -> LabelledImage:
    rng = np.random.default_rng(0)
    image = rng.integers(60, 90, (3, 64, 64)).astype(np.uint8)
    instances = np.zeros((64, 64), np.int32)
    for index, (r, c) in enumerate([(5, 5), (5, 30), (35, 12), (40, 40)], start=1):
        instances[r : r + 14, c : c + 14] = index
        image[:, r : r + 14, c : c + 14] = np.array([200, 80, 60], np.uint8)[:, None, None]
    return LabelledImage(image, instances, np.full(4, 3, np.int64), np.ones((64, 64), bool))


def _config(**changes: object) -> TrainingConfig:
    values: dict[str, object] = {
        "classes": CLASSES,
        "tile_px": 32,
        "batch_size": 2,
        "iterations": 4,
        "widths": (8, 16),
        "precision": "fp32",
        "warmup_iterations": 1,
    }
    values.update(changes)
    return TrainingConfig(**values)  # type: ignore[arg-type]


def test_steps_reduce_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    config = _config()
    source = TrainingSource((_image(),), (3,))
    batch = make_batch([source], config, np.random.default_rng(1))
    # Only the building channels count: the source labels nothing else.
    _, weights = batch.targets(config)
    assert weights[:, :6].sum() == 0
    assert weights[:, 6:].sum() > 0
    from geoseg.models.unet import UNet

    net = UNet(3, 3, (8, 16))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    losses = [train_step(net, optimizer, batch, config, torch.device("cpu")) for _ in range(12)]
    assert losses[-1] < 0.8 * losses[0]


def test_every_batch_holds_an_object_of_each_labelled_class() -> None:
    buildings = _image()
    instances = buildings.instances.copy()
    instances[58:62, 58:62] = 5
    one_bridge = LabelledImage(
        buildings.image, instances, np.array([3, 3, 3, 3, 2]), buildings.valid
    )
    sources = [
        TrainingSource((buildings,), (3,), weight=9.0),
        TrainingSource((one_bridge,), (2, 3)),
    ]
    rng = np.random.default_rng(0)

    for _ in range(20):
        batch = make_batch(sources, _config(tile_px=16), rng)
        found = {
            int(c)
            for crop, classes in zip(batch.instances.long(), batch.classes, strict=True)
            for c in classes[crop[crop > 0]]
        }
        assert found == {2, 3}


def test_targets_are_made_from_the_batch_where_it_is_used() -> None:
    config = _config()
    batch = make_batch([TrainingSource((_image(),), (3,))], config, np.random.default_rng(1))
    assert batch.instances.dtype == torch.int32

    targets, weights = batch.to(torch.device("cpu")).targets(config)

    expected = instance_targets(batch.instances.long(), batch.classes, 3)
    assert torch.equal(targets, expected)
    assert targets.dtype == weights.dtype == torch.float32
    assert torch.equal(weights[:, 6:], batch.valid[:, None].float().expand(-1, 3, -1, -1))


def test_wider_target_widths_thicken_boundaries_and_contacts() -> None:
    image = _image()
    instances = np.zeros_like(image.instances)
    instances[10:50, 8:28], instances[10:50, 33:53] = 1, 2  # 5 px apart
    source = TrainingSource(
        (LabelledImage(image.image, instances, image.classes[:2], image.valid),), (3,)
    )
    batch = make_batch([source], _config(tile_px=64), np.random.default_rng(3), augment=False)

    narrow, _ = batch.targets(_config(tile_px=64))
    wide, _ = batch.targets(_config(tile_px=64, boundary_px=2, contact_px=4))

    assert torch.equal(wide[:, 6], narrow[:, 6])  # bodies are unchanged
    for channel in (7, 8):  # building boundary, building contact
        assert wide[:, channel].sum() > narrow[:, channel].sum()
        assert bool((wide[:, channel] >= narrow[:, channel]).all())


@pytest.mark.parametrize("name", ["boundary_px", "contact_px"])
def test_target_widths_must_be_positive(name: str) -> None:
    with pytest.raises(OptionsError, match=name):
        _config(**{name: 0})


def test_classes_no_source_labels_are_named() -> None:
    buildings = TrainingSource((_image(),), (3,))
    scenes = TrainingSource((_image(),), (1, 2, 3))

    assert unlabelled_classes([buildings], CLASSES) == {1: "lawn", 2: "bridge"}
    assert unlabelled_classes([buildings, scenes], CLASSES) == {}


def test_loss_ignores_unlabelled_channels() -> None:
    logits = torch.zeros(1, 3, 4, 4)
    targets = torch.zeros(1, 3, 4, 4)
    weights = torch.zeros(1, 3, 4, 4)
    weights[:, 0] = 1
    base = segmentation_loss(logits, targets, weights)
    logits[:, 1:] = 50.0  # confidently wrong, but where nothing is labelled
    assert torch.equal(segmentation_loss(logits, targets, weights), base)


def test_dice_leaves_out_channels_with_no_object_in_the_batch() -> None:
    logits = torch.full((2, 3, 4, 4), -2.0)
    targets = torch.zeros(2, 3, 4, 4)
    weights = torch.ones(2, 3, 4, 4)
    expected = cross_entropy(logits, targets)
    assert torch.allclose(segmentation_loss(logits, targets, weights), expected)

    targets[0, 0, :2] = 1.0
    probabilities = torch.sigmoid(logits[:, 0])
    overlap = (probabilities * targets[:, 0]).sum()
    dice = 1 - (2 * overlap + 1) / (probabilities.sum() + targets[:, 0].sum() + 1)
    expected = cross_entropy(logits, targets) + dice
    assert torch.allclose(segmentation_loss(logits, targets, weights), expected)


def test_frozen_batchnorm_keeps_the_initial_norms_while_the_convolutions_train() -> None:
    source = TrainingSource((_image(),), (3,))

    def trained(freeze: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        initial = UNet(3, 3, (8, 16))
        before = {name: tensor.clone() for name, tensor in initial.state_dict().items()}
        net, _ = train([source], _config(iterations=3, freeze_batchnorm=freeze), initial=initial)
        return before, net.state_dict()

    before, after = trained(freeze=True)
    norms = [name for name in before if ".norm." in name and "num_batches" not in name]
    convolutions = [name for name in before if ".conv." in name]
    assert norms
    assert convolutions
    assert all(torch.equal(after[name], before[name]) for name in norms)
    assert all(not torch.equal(after[name], before[name]) for name in convolutions)
    before, after = trained(freeze=False)
    assert all(not torch.equal(after[name], before[name]) for name in norms)


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    source = TrainingSource((_image(),), (3,))
    checkpoint = tmp_path / "run.ckpt"
    net, result = train([source], _config(iterations=3), checkpoint=checkpoint)
    assert result.iterations == 3
    document = torch.load(checkpoint, weights_only=True)  # plain tensors and values only
    assert document["iteration"] == 3
    assert document["optimizer"]["state"]
    restored = network_from_checkpoint(load_checkpoint(checkpoint)).eval()
    for name, tensor in net.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[name], tensor)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(restored(x), net(x))


def test_resume_continues_where_it_stopped(tmp_path: Path) -> None:
    source = TrainingSource((_image(),), (3,))
    straight, _ = train(
        [source], _config(iterations=4, checkpoint_every=2), checkpoint=tmp_path / "a.ckpt"
    )
    # A run that ends at 2 of 4 iterations, as if interrupted, then resumed.
    checkpoint = tmp_path / "b.ckpt"
    train(
        [source], _config(iterations=4, checkpoint_every=2, max_minutes=1e-9), checkpoint=checkpoint
    )
    document = load_checkpoint(checkpoint)
    assert document["iteration"] < 4
    document["total"] = 4
    torch.save(document, checkpoint)
    resumed, result = train(
        [source], _config(iterations=4, checkpoint_every=2), checkpoint=checkpoint, resume=True
    )
    assert result.iterations == 4 - document["iteration"]
    for name, tensor in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor)


def test_pickled_or_corrupt_checkpoints_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    torch.save({"format": 1, "hook": _Evil()}, bad)
    with pytest.raises(ModelError, match="not a readable geoseg checkpoint"):
        load_checkpoint(bad)
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(ModelError, match=r"junk\.ckpt"):
        load_checkpoint(tmp_path / "junk.ckpt")


class _Evil:
    pass


def test_split_validation_by_rows() -> None:
    train_part, held = split_validation([_image()], 0.25)
    assert train_part[0].instances.shape == (48, 64)
    assert held[0].instances.shape == (16, 64)
    assert held[0].classes.tolist() == [3, 3]  # the two instances reaching the bottom rows
    assert int(held[0].instances.max()) == 2


def test_batches_made_by_loader_workers_give_the_same_run() -> None:
    source = TrainingSource((_image(),), (3,))
    serial, _ = train([source], _config(iterations=3))
    parallel, result = train([source], _config(iterations=3), loader_workers=2)
    assert result.iterations == 3
    for name, tensor in serial.state_dict().items():
        torch.testing.assert_close(parallel.state_dict()[name], tensor)


def test_batches_carry_8_bit_crops_and_apply_their_colour_changes_where_used() -> None:
    source = TrainingSource((_image(),), (3,))
    plain = make_batch([source], _config(tile_px=64), np.random.default_rng(0), augment=False)
    assert plain.images.dtype == torch.uint8
    # a whole-image crop without augmentation is the source's pixels, standardised
    torch.testing.assert_close(plain.images[0], torch.from_numpy(_image().image))
    expected = standardise(torch.from_numpy(_image().image)[None].float() / 255.0)
    torch.testing.assert_close(plain.network_input()[:1], expected)
    varied = make_batch([source], _config(tile_px=64), np.random.default_rng(0))
    inputs = varied.network_input()
    torch.testing.assert_close(varied.network_input(), inputs)  # the same input every time
    torch.testing.assert_close(varied.to(torch.device("cpu")).network_input(), inputs)
    assert not torch.allclose(inputs, standardise(varied.images.float() / 255.0))
