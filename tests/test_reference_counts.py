"""The reference trunks reproduce the official GhostNet V1/V2/V3 parameter and conv-MAC counts."""
import pytest
import torch
import torch.nn as nn

from nas.models import ghostnet_trunk, reparameterize

from .official_ghostnet import official_trunk


def params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv_macs(m: nn.Module, imgsz: int = 320) -> int:
    """Multiply-accumulates of every Conv2d (no bias, no BN), batch 1: the SPEC's definition."""
    total = 0

    def hook(conv, _, out):
        nonlocal total
        total += out.numel() * conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]

    handles = [c.register_forward_hook(hook) for c in m.modules() if isinstance(c, nn.Conv2d)]
    with torch.no_grad():
        m.eval()(torch.zeros(1, 3, imgsz, imgsz))
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("version, n_params, macs", [
    (1, 2_671_428, 281_382_144),
    (2, 3_645_828, 338_564_544),
    (3, 5_617_948, 822_401_344),
])
def test_reference_counts_at_width_1(version, n_params, macs):
    trunk = ghostnet_trunk(version, 1.0)
    assert params(trunk) == n_params
    assert conv_macs(trunk) == macs


def test_v3_fuses_to_v2_cost():
    trunk = reparameterize(ghostnet_trunk(3, 1.0))
    assert params(trunk) == 3_636_508
    assert conv_macs(trunk) == 338_564_544
    v2 = ghostnet_trunk(2, 1.0)
    # After fusion the graph is V2's: the same convs (now biased), no BN left where branches were.
    shapes = lambda m: [(c.weight.shape, c.stride, c.groups) for c in m.modules() if isinstance(c, nn.Conv2d)]  # noqa
    assert shapes(trunk) == shapes(v2)


@pytest.mark.parametrize("width", [0.5, 0.75, 1.3, 1.6])
@pytest.mark.parametrize("version", [1, 2])
def test_counts_match_official_code_at_other_widths(version, width):
    ours, official = ghostnet_trunk(version, width), official_trunk(width, attn=version == 2)
    assert params(ours) == params(official)
    conv_shapes = lambda m: sorted(tuple(c.weight.shape) + (c.groups,) for c in m.modules() if isinstance(c, nn.Conv2d))  # noqa
    assert conv_shapes(ours) == conv_shapes(official)


def test_v3_at_other_width_fuses_to_v2_shapes():
    v3, v2 = reparameterize(ghostnet_trunk(3, 0.5)), ghostnet_trunk(2, 0.5)
    assert conv_macs(v3, 64) == conv_macs(v2, 64)
