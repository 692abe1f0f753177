"""Zero-cost scores (evaluators.zero_cost): finite, deterministic for a seed, side-effect free, and
they rank a real network above a narrow one and above a degenerate one."""
import math

import pytest
import torch

from evaluators.zero_cost import SCORE_FUNCTIONS, naswot, synflow, training_free_scores, zico
from nas.models import build_model

from .helpers import tiny_arch

IMGSZ, BATCH = 64, 8
SCORES = list(SCORE_FUNCTIONS.items())


def _model(width: int = 32, seed: int = 0, zero_stem: bool = False):
    torch.manual_seed(seed)
    model = build_model(tiny_arch(width=width))
    if zero_stem:
        with torch.no_grad():
            model.layers[0].conv.weight.zero_()
    return model


@pytest.fixture(scope="module")
def wide():
    return _model(32)


@pytest.fixture(scope="module")
def ranked():
    """Each score of the wide network, the same backbone with a width-4 neck and head, and the wide
    network with a zeroed stem conv."""
    models = {"wide": _model(32), "narrow": _model(4), "blind": _model(32, zero_stem=True)}
    return {name: {s: f(m, IMGSZ, BATCH, 0) for s, f in SCORES} for name, m in models.items()}


@pytest.mark.parametrize("name, score", SCORES, ids=[n for n, _ in SCORES])
def test_score_is_finite_deterministic_and_leaves_the_model_alone(wide, name, score):
    for mode in ("train", "eval"):
        model = wide.train(mode == "train")
        before = {k: v.clone() for k, v in model.state_dict().items()}
        modes = [m.training for m in model.modules()]
        first, again = score(model, IMGSZ, BATCH, 0), score(model, IMGSZ, BATCH, 0)
        assert math.isfinite(first) and first == again, (first, again)
        after = model.state_dict()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
        assert [m.training for m in model.modules()] == modes
        assert all(p.grad is None for p in model.parameters())
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_data_dependent_scores_follow_the_seed(wide):
    assert naswot(wide, IMGSZ, BATCH, 1) != naswot(wide, IMGSZ, BATCH, 0)
    assert zico(wide, IMGSZ, BATCH, 1) != zico(wide, IMGSZ, BATCH, 0)
    assert synflow(wide, IMGSZ, BATCH, 1) == synflow(wide, IMGSZ, BATCH, 0)  # data-free: one all-ones image


@pytest.mark.parametrize("name", SCORE_FUNCTIONS)
def test_wider_network_ranks_above_a_narrow_one(ranked, name):
    """Width 32 vs width 4 in the neck and head, same backbone and seed: every score grows with
    capacity (more units to tell images apart, more weighted paths, more layers with a steady
    gradient), so the narrow network must rank below. The NASWOT gap is the smallest (~3 of ~84:
    the backbone's units dominate the kernel) but it is systematic across seeds."""
    assert ranked["wide"][name] > ranked["narrow"][name], ranked


@pytest.mark.parametrize("name", SCORE_FUNCTIONS)
def test_degenerate_network_ranks_last(ranked, name):
    """The degenerate network is the wide one with its stem conv zeroed: every path from the image
    crosses it, so the network cannot see its input. That is the failure each score is designed
    to detect: NASWOT sees identical activation codes for every image (a rank-1 kernel, score
    log(1 + B * units)), SynFlow sees no synaptic flow (score 0: layer collapse, the case it was
    invented for), ZiCo sees no gradient anywhere (score 0)."""
    assert ranked["blind"][name] < ranked["narrow"][name] < ranked["wide"][name], ranked
    assert ranked["blind"][name] < 0.2 * ranked["wide"][name]


def test_training_free_scores_of_an_arch(wide):
    arch = tiny_arch(width=32)
    rng = torch.get_rng_state()
    scores = training_free_scores(arch, IMGSZ, seed=0)
    assert torch.equal(torch.get_rng_state(), rng)  # built with its own generator state
    assert set(scores) == {"naswot", "synflow", "zico", "macs", "params"}
    assert all(math.isfinite(v) for v in scores.values())
    # Seed 0 builds the same weights as `wide` (torch.manual_seed(0)), so the scores agree.
    assert scores["synflow"] == synflow(wide, IMGSZ, BATCH, 0) and scores["naswot"] == naswot(wide, IMGSZ, BATCH, 0)
    # macs / params are the deploy graph's (re-param branches fused).
    assert scores["params"] < sum(p.numel() for p in wide.parameters())
    assert training_free_scores(arch, IMGSZ, seed=0, scores=("synflow",)) == {
        "synflow": scores["synflow"], "macs": scores["macs"], "params": scores["params"]}


def test_bad_arguments_are_refused(wide):
    with pytest.raises(ValueError, match="multiple of 32"):
        naswot(wide, 50, BATCH, 0)
    with pytest.raises(ValueError, match="at least 4 images"):
        zico(wide, IMGSZ, 2, 0)
    with pytest.raises(ValueError, match="unknown score"):
        training_free_scores(wide, IMGSZ, scores=("grasp",))
