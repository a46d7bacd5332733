"""The compact U-Net: output layout, size, batch-norm folding and reduced precision."""

from __future__ import annotations

import pytest
import torch

from geoseg.models.unet import UNet, count_parameters, fuse_batchnorm


def test_output_has_body_boundary_contact_per_class() -> None:
    net = UNet(3, 3, (8, 16, 32)).eval()
    out = net(torch.zeros(2, 3, 48, 64))
    assert out.shape == (2, 9, 48, 64)


def test_default_network_is_compact() -> None:
    params = count_parameters(UNet())
    assert 1_500_000 < params < 4_000_000
    # 4 bytes per float32 weight: far below the 25 MB ceiling for shipped weights.
    assert params * 4 < 25e6


def test_fused_network_computes_the_same_function() -> None:
    torch.manual_seed(0)
    net = UNet(3, 2, (8, 16, 32))
    net.train()
    for _ in range(3):  # move the running statistics away from their defaults
        net(torch.randn(4, 3, 32, 32) * 2 + 1)
    net.eval()
    x = torch.randn(1, 3, 32, 32)
    fused = fuse_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    torch.testing.assert_close(fused(x), net(x), atol=1e-4, rtol=1e-4)


def test_scripted_network_runs_in_bfloat16() -> None:
    torch.manual_seed(0)
    fused = fuse_batchnorm(UNet(3, 1, (8, 16)))
    scripted = torch.jit.script(fused)
    x = torch.randn(1, 3, 16, 16)
    low = scripted(x.bfloat16())
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), scripted(x), atol=0.1, rtol=0.05)


def test_rejects_single_level() -> None:
    with pytest.raises(ValueError, match="two levels"):
        UNet(3, 1, (8,))
