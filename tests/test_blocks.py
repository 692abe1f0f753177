"""Every Ghost block runs and gives the expected shapes at even and odd input sizes."""
import pytest
import torch

from nas.models import (DFCAttention, GhostBottleneck, GhostCSP, GhostModule, GhostModuleV2, GhostModuleV3,
                        RepConv, build_model, ghost_module, ghostnet_trunk, make_divisible)
from nas.models.head import Detect

SIZES = [(32, 32), (33, 27), (17, 40)]


def out_size(n, stride):
    return (n - 1) // stride + 1 if stride == 2 else n


@pytest.mark.parametrize("v, expected", [(16, 16), (15, 16), (6, 8), (1, 4), (21.6, 20), (37, 36), (18.2, 20), (5, 8)])
def test_make_divisible(v, expected):
    assert make_divisible(v, 4) == expected


@pytest.mark.parametrize("h, w", SIZES)
@pytest.mark.parametrize("ratio", [2, 3, 4])
def test_ghost_module_v1_slices_to_c_out(h, w, ratio):
    m = GhostModule(8, 13, ratio=ratio)
    y = m(torch.randn(2, 8, h, w))
    assert y.shape == (2, 13, h, w)
    assert m.cheap[0].groups == m.primary[0].out_channels  # one depthwise group per primary channel


def test_ghost_module_act_flag():
    m = GhostModule(4, 8, act=False).eval()
    assert (m(torch.randn(1, 4, 8, 8)) < 0).any()  # no ReLU: negative outputs survive
    m = GhostModule(4, 8, act=True).eval()
    assert (m(torch.randn(1, 4, 8, 8)) >= 0).all()


@pytest.mark.parametrize("h, w", SIZES)
@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_dfc_attention_gate_matches_output_size(h, w, kernel):
    attn = DFCAttention(8, 12, kernel=kernel)
    g = attn(torch.randn(1, 8, h, w), (h, w))
    assert g.shape == (1, 12, h, w) and (g > 0).all() and (g < 1).all()


@pytest.mark.parametrize("h, w", SIZES)
@pytest.mark.parametrize("branches", [0, 1, 3])
def test_ghost_module_v2_and_v3(h, w, branches):
    m = ghost_module(8, 16, dfc=5, branches=branches)
    assert isinstance(m, GhostModuleV2)
    assert isinstance(m.ghost, GhostModuleV3 if branches else GhostModule)
    assert m(torch.randn(1, 8, h, w)).shape == (1, 16, h, w)


@pytest.mark.parametrize("h, w", SIZES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("se, dfc, branches", [(0.0, 0, 0), (0.25, 5, 0), (0.25, 3, 3), (0.0, 0, 2)])
def test_bottleneck_shapes(h, w, stride, se, dfc, branches):
    m = GhostBottleneck(12, 24, 20, 3, stride, se, 2, dfc, branches)
    y = m(torch.randn(2, 12, h, w))
    assert y.shape == (2, 20, out_size(h, stride), out_size(w, stride))


def test_bottleneck_identity_shortcut_only_when_shapes_match():
    assert isinstance(GhostBottleneck(16, 32, 16, 3, 1).shortcut, torch.nn.Identity)
    assert not isinstance(GhostBottleneck(16, 32, 24, 3, 1).shortcut, torch.nn.Identity)
    assert not isinstance(GhostBottleneck(16, 32, 16, 3, 2).shortcut, torch.nn.Identity)


@pytest.mark.parametrize("h, w", SIZES)
def test_repconv_and_csp_shapes(h, w):
    assert RepConv(8, 8, 3, 2, groups=8, branches=2)(torch.randn(1, 8, h, w)).shape == \
        (1, 8, out_size(h, 2), out_size(w, 2))
    assert GhostCSP(10, 16, n=2, dfc=5, branches=1)(torch.randn(1, 10, h, w)).shape == (1, 16, h, w)


def test_detect_head_outputs_and_bias_init():
    head = Detect([8, 16, 32], nc=3, width=16)
    feats = [torch.randn(2, c, s, s) for c, s in ((8, 8), (16, 4), (32, 2))]
    raw = head(feats)
    assert [r.shape for r in raw] == [(2, 64 + 3, s, s) for s in (8, 4, 2)]
    assert torch.allclose(head.box[0][-1].bias, torch.ones(64))
    assert head.cls[0][-1].bias[0].item() == pytest.approx(torch.log(torch.tensor(5 / 3 / 80 ** 2)).item())


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("h, w", [(64, 64), (65, 47)])
def test_trunk_taps(version, h, w):
    p3, p4, p5 = ghostnet_trunk(version, 0.5).eval()(torch.randn(1, 3, h, w))
    assert (p3.shape[1], p4.shape[1], p5.shape[1]) == (20, 56, 480)
    for p, s in ((p3, 8), (p4, 16), (p5, 32)):
        assert p.shape[2] == -(-h // s) and p.shape[3] == -(-w // s)


@pytest.mark.parametrize("h, w", [(64, 64), (96, 64), (70, 45)])
def test_detector_any_input_size_and_decode(h, w):
    model = build_model("spaces/reference/ghostnet_v1_yolo.yaml").eval()
    with torch.no_grad():
        raw = model(torch.rand(1, 3, h, w))
        boxes, scores = model.decode(raw)
    anchors = sum(r.shape[2] * r.shape[3] for r in raw)
    assert boxes.shape == (1, anchors, 4) and scores.shape == (1, anchors, 80)
    assert (boxes[..., 2:] >= boxes[..., :2]).all()  # x2 >= x1, y2 >= y1
    assert ((scores >= 0) & (scores <= 1)).all()


def test_decode_is_the_expected_distance_around_cell_centres():
    model = build_model("spaces/reference/ghostnet_v1_yolo.yaml")
    raw = [torch.zeros(1, 64 + 80, s, s) for s in (4, 2, 1)]
    raw[0][0, 0 * 16 + 3, 0, 0] = 50.0  # left side of the first P3 cell: all mass on bin 3
    boxes, _ = model.decode(raw)
    uniform = sum(range(16)) / 16  # 7.5 bins: the expectation of a flat softmax
    centre = 0.5 * 8
    assert boxes[0, 0, 0].item() == pytest.approx(centre - 3 * 8, abs=1e-3)
    assert boxes[0, 0, 2].item() == pytest.approx(centre + uniform * 8, abs=1e-3)
    assert boxes[0, -1, 0].item() == pytest.approx(0.5 * 32 - uniform * 32, abs=1e-3)
