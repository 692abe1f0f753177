"""GhostNetV3 re-parameterization: the fused deploy graph computes what the training graph did."""
import pytest
import torch
import torch.nn as nn

from nas.models import GhostBottleneck, RepConv, build_model, ghostnet_trunk, reparameterize

from .helpers import randomize_bn


def max_fused_diff(model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        before = model(x)
        reparameterize(model)
        after = model(x)
    return (before - after).abs().max().item()


@pytest.mark.parametrize("branches", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("ratio, dfc", [(2, 0), (3, 5)])
def test_bottleneck_fusion_is_exact(branches, scale, stride, ratio, dfc):
    torch.manual_seed(branches * 10 + stride)
    m = randomize_bn(GhostBottleneck(16, 32, 16 if stride == 1 else 24, 5, stride, 0.25, ratio, dfc, branches, scale)).eval()
    assert max_fused_diff(m, torch.randn(2, 16, 19, 22)) < 1e-4
    assert not any(isinstance(x, RepConv) and x.fused is None for x in m.modules())


@pytest.mark.parametrize("k, stride, groups, identity", [(3, 1, 8, True), (3, 2, 8, False), (1, 1, 1, False),
                                                          (5, 1, 4, True), (3, 1, 1, True)])
def test_repconv_fusion_is_exact(k, stride, groups, identity):
    m = randomize_bn(RepConv(8, 8, k, stride, groups, branches=3, scale=True, identity=identity), seed=k).eval()
    assert (m.skip is not None) == (identity and stride == 1)
    assert max_fused_diff(m, torch.randn(1, 8, 15, 15)) < 1e-5
    assert isinstance(m.fused, nn.Conv2d) and m.fused.bias is not None
    assert not any(isinstance(x, nn.BatchNorm2d) for x in m.modules())


def test_repconv_channel_multiplier_has_no_identity():
    m = RepConv(8, 16, 3, 1, groups=8, branches=2, identity=True)  # ratio 3 cheap op: 8 -> 16
    assert m.skip is None


def test_trunk_fusion_is_exact_in_float32():
    torch.manual_seed(0)
    trunk = randomize_bn(ghostnet_trunk(3, 0.5)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = trunk(x)
        after = reparameterize(trunk)(x)
    assert max((a - b).abs().max().item() for a, b in zip(before, after)) < 1e-4


@pytest.mark.parametrize("source", ["trunk", "spaces/reference/ghostnet_v3_yolo.yaml"])
def test_fusion_is_exact_up_to_rounding(source):
    # float64 separates "fusion is exact" from float32 rounding, which grows with depth.
    torch.manual_seed(1)
    model = ghostnet_trunk(3, 0.5) if source == "trunk" else build_model(source)
    model = randomize_bn(model.double(), seed=1).eval()
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
        after = reparameterize(model)(x)
    assert max((a - b).abs().max().item() for a, b in zip(before, after)) < 1e-9


def test_reparameterize_is_idempotent_and_returns_model():
    m = ghostnet_trunk(3, 0.25)
    assert reparameterize(m) is m
    n = sum(p.numel() for p in m.parameters())
    reparameterize(m)
    assert sum(p.numel() for p in m.parameters()) == n
