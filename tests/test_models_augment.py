"""Training crops: where they are cut, and their colour changes, drawn with the crop and applied
batched where the batch is used."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.models.augment import (
    NO_AUGMENTATION,
    Augmentation,
    draw_colour,
    jitter_colours,
    sample_crop,
)
from geoseg.models.datasets import LabelledImage


def _images() -> torch.Tensor:
    return torch.rand((2, 3, 8, 8), generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2


def test_without_augmentation_the_colours_are_unchanged() -> None:
    colour = draw_colour(np.random.default_rng(0), NO_AUGMENTATION, 3)
    assert colour.tolist() == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    images = _images()
    torch.testing.assert_close(jitter_colours(images, torch.stack([colour, colour])), images)


def test_each_crop_gets_its_own_changes() -> None:
    images = _images()
    identity = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    brighter = [1.2, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    flatter = [1.0, 0.5, 1.0, 0.0, 1.0, 1.0, 1.0]
    greyer = [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    redder = [1.0, 1.0, 1.0, 0.0, 1.1, 1.0, 1.0]
    for change, expected in [
        (brighter, images[1] * 1.2),
        (flatter, (images[1] - images[1].mean()) * 0.5 + images[1].mean()),
        (greyer, images[1].mean(dim=0, keepdim=True).expand(3, 8, 8)),
        (redder, images[1] * torch.tensor([1.1, 1.0, 1.0])[:, None, None]),
    ]:
        out = jitter_colours(images, torch.tensor([identity, change]))
        torch.testing.assert_close(out[0], images[0])
        torch.testing.assert_close(out[1], expected.clamp(0, 1))


def test_noise_follows_its_generator_and_stays_in_range() -> None:
    images = _images()
    noisy = torch.tensor([[1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0]] * 2)
    first = jitter_colours(images, noisy, torch.Generator().manual_seed(3))
    again = jitter_colours(images, noisy, torch.Generator().manual_seed(3))
    other = jitter_colours(images, noisy, torch.Generator().manual_seed(4))
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, other)
    assert float(first.min()) >= 0.0
    assert float(first.max()) <= 1.0


def test_drawn_changes_stay_within_the_augmentation_limits() -> None:
    augmentation = Augmentation(brightness=0.1, contrast=0.2, saturation=0.3, channel_gain=0.05)
    rng = np.random.default_rng(1)
    colours = torch.stack([draw_colour(rng, augmentation, 3) for _ in range(200)])
    limits = torch.tensor([0.1, 0.2, 0.3, 0.0, 0.05, 0.05, 0.05])
    offsets = (colours - torch.tensor([1.0, 1.0, 1.0, augmentation.noise, 1.0, 1.0, 1.0])).abs()
    assert bool((offsets <= limits + 1e-6).all())
    assert bool((offsets[:, [0, 1, 2, 4]].amax(dim=0) > limits[[0, 1, 2, 4]] / 2).all())


@settings(max_examples=80, deadline=None)
@given(
    height=st.integers(1, 90),
    width=st.integers(1, 90),
    size=st.integers(8, 48),
    zoom=st.floats(1.0, 2.0),
    data=st.data(),
)
def test_a_crop_around_a_pixel_holds_it(
    height: int, width: int, size: int, zoom: float, data: st.DataObject
) -> None:
    row, col = data.draw(st.integers(0, height - 1)), data.draw(st.integers(0, width - 1))
    instances = np.zeros((height, width), np.int32)
    instances[row, col] = 1
    image = LabelledImage(
        np.zeros((3, height, width), np.uint8),
        instances,
        np.array([2]),
        np.ones_like(instances, bool),
    )
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))

    crop = sample_crop(image, size, rng, Augmentation(zoom=(1.0, zoom)), around=(row, col))

    assert crop.instances.shape == (size, size)
    assert bool((crop.instances == 1).any())
