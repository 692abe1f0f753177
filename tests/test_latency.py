"""Cost evaluators: latency measurement (both backends), targets, complexity counts, `nas latency`."""
import argparse
import copy
import json
import time

import pytest
import torch

from evaluators.complexity import complexity, per_layer
from evaluators.latency import LatencyResult, Target, measure_latency, physical_cores, time_calls
from nas.errors import UserError
from nas.models import RepConv, build_model, reparameterize, save_arch

from .helpers import tiny_arch

IMGSZ = 64





@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_arch()).train()


QUICK = dict(warmup=2, runs=5, min_time_s=0.0)


# --- targets ---------------------------------------------------------------------------------------

def test_target_defaults_record_the_environment():
    t = Target.resolve("cpu", imgsz=IMGSZ)
    assert (t.device, t.backend, t.threads, t.imgsz) == ("cpu", "onnxruntime", physical_cores(), IMGSZ)
    assert t.torch_version == torch.__version__.split("+")[0]
    assert t.onnxruntime_version and t.processor and t.hostname
    assert Target.resolve("cpu", "torch", 1, IMGSZ).onnxruntime_version == ""
    assert t.to_dict()["backend"] == "onnxruntime"


def test_target_key_is_stable_and_tells_targets_apart():
    a = Target.resolve("cpu", "onnxruntime", 1, 320)
    assert a.key() == Target.resolve("cpu", "onnxruntime", 1, 320).key()
    assert a.key().startswith("cpu-onnxruntime-1t-320-")
    others = {Target.resolve("cpu", "torch", 1, 320).key(), Target.resolve("cpu", "onnxruntime", 2, 320).key(),
              Target.resolve("cpu", "onnxruntime", 1, 256).key()}
    assert a.key() not in others and len(others) == 3


@pytest.mark.parametrize("kwargs, message", [
    (dict(device="tpu"), "unknown device"), (dict(backend="tensorrt"), "unknown latency backend"),
    (dict(threads=0), "at least 1"), (dict(imgsz=0), "positive"),
])
def test_target_refuses_bad_choices(kwargs, message):
    with pytest.raises(UserError, match=message):
        Target.resolve(**kwargs)


def test_cuda_without_cuda_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA"):
        Target.resolve("cuda")


# --- timing ----------------------------------------------------------------------------------------

def test_time_calls_runs_at_least_runs_and_min_time_but_stops_at_max_runs():
    calls = []
    assert len(time_calls(lambda: calls.append(1), warmup=3, runs=7, min_time_s=0.0)) == 7
    assert len(calls) == 10  # warm-up calls are made but not timed
    times = time_calls(lambda: time.sleep(0.002), warmup=0, runs=1, min_time_s=0.05)
    assert sum(times) >= 45 and len(times) >= 10
    assert len(time_calls(lambda: None, warmup=0, runs=1, min_time_s=60.0, max_runs=25)) == 25


def test_latency_result_statistics():
    r = LatencyResult.from_times([1.0, 2.0, 3.0, 4.0, 100.0], Target())
    assert r.median_ms == 3.0 and r.mean_ms == 22.0 and r.runs == 5
    assert r.p10_ms < r.median_ms < r.p90_ms
    assert r.to_dict()["target"]["device"] == "cpu"


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_measure_latency_gives_sane_figures_and_leaves_the_model_alone(model, backend):
    threads_before = torch.get_num_threads()
    r = measure_latency(model, IMGSZ, "cpu", backend, threads=1, **QUICK)
    assert 0 < r.p10_ms <= r.median_ms <= r.p90_ms and r.std_ms >= 0 and r.runs >= 5
    assert r.mean_ms > 0
    assert (r.target.backend, r.target.threads, r.target.imgsz) == (backend, 1, IMGSZ)
    assert torch.get_num_threads() == threads_before  # the torch backend restores the thread count
    # the deploy graph was a copy: the model keeps its branches and its training mode
    assert model.training and all(m.fused is None for m in model.modules() if isinstance(m, RepConv))
    assert json.loads(json.dumps(r.to_dict()))["target"]["backend"] == backend


def test_measure_latency_times_a_single_block_with_input_shape():
    block = torch.nn.Conv2d(8, 8, 3, padding=1)
    r = measure_latency(block, IMGSZ, input_shape=(1, 8, 16, 16), **QUICK)
    assert r.median_ms > 0 and r.target.backend == "onnxruntime"


# --- complexity ------------------------------------------------------------------------------------

def _hooks_and_thop_buffers(m: torch.nn.Module):
    hooks = sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.modules())
    buffers = [n for n, _ in m.named_buffers() if n.endswith(("total_ops", "total_params"))]
    return hooks, buffers


def test_complexity_counts_without_leaving_hooks_or_buffers(model):
    keys = list(model.state_dict())
    c = complexity(model, IMGSZ)
    assert c["params"] == sum(p.numel() for p in model.parameters())
    assert c["macs"] > 0 and c["flops"] == 2 * c["macs"] and c["imgsz"] == IMGSZ
    rows = per_layer(model, IMGSZ)
    assert _hooks_and_thop_buffers(model) == (0, [])
    assert list(model.state_dict()) == keys and model.training
    # every module of a Detector is in a row, so the rows add up to the whole
    assert sum(r["macs"] for r in rows) == c["macs"]
    assert sum(r["params"] for r in rows) == c["params"]
    assert [r["type"] for r in rows][-1] == "Detect" and rows[-1]["from"] == model.layers[-1].f
    assert rows[0]["shape"] == [1, 8, IMGSZ // 2, IMGSZ // 2]
    assert rows[-1]["shape"] == [[1, 4 * 16 + 3, IMGSZ // s, IMGSZ // s] for s in (8, 16, 32)]


def test_complexity_of_deploy_graph_drops_the_branches(model):
    train, deploy = complexity(model, IMGSZ), complexity(model, IMGSZ, deploy=True)
    assert deploy["params"] < train["params"] and deploy["macs"] < train["macs"]


def test_complexity_in_place_counts_the_same_without_copying(model):
    # the search driver counts its throw-away model in place: training graph first, then deploy
    train, deploy = complexity(model, IMGSZ), complexity(model, IMGSZ, deploy=True)
    spare = copy.deepcopy(model)
    assert complexity(spare, IMGSZ, in_place=True) == train
    assert complexity(spare, IMGSZ, deploy=True, in_place=True) == deploy
    assert complexity(spare, IMGSZ) == deploy  # it was fused in place


def _conv_macs(m: torch.nn.Module, imgsz: int) -> int:
    """Conv multiply-accumulates counted by hand (SPEC's definition: no bias, no BN)."""
    total = 0

    def hook(conv, _, out):
        nonlocal total
        total += out.numel() * conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]

    handles = [c.register_forward_hook(hook) for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    with torch.no_grad():
        m.eval()(torch.zeros(1, 3, imgsz, imgsz))
    for h in handles:
        h.remove()
    return total


def test_complexity_macs_are_conv_macs_in_both_graphs(model):
    # The network has BN, nearest upsampling, DFC pooling and SE: none of them may add to "macs".
    # (tests/test_reference_counts.py ties this definition to SPEC's GhostNet figures.)
    assert complexity(model, IMGSZ)["macs"] == _conv_macs(copy.deepcopy(model), IMGSZ)
    fused = reparameterize(copy.deepcopy(model))
    assert complexity(model, IMGSZ, deploy=True)["macs"] == _conv_macs(fused, IMGSZ)


# --- nas latency -----------------------------------------------------------------------------------

def _cli(argv):
    from nas.cli import latency
    parser = argparse.ArgumentParser()
    latency.add_parser(parser.add_subparsers())
    args = parser.parse_args(["latency", *argv])
    return args.run(args)


def test_cli_latency_json(tmp_path, capsys):
    arch = tmp_path / "tiny.yaml"
    save_arch(tiny_arch(), arch)
    assert _cli([str(arch), "--runs", "3", "--threads", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    assert out["latency_ms"] == out["median_ms"] > 0
    assert out["target"]["backend"] == "onnxruntime" and out["target"]["imgsz"] == IMGSZ
    assert out["params"] > 0 and out["flops"] == 2 * out["macs"]


@pytest.mark.parametrize("argv, message", [
    (["missing.yaml"], "not found"), (["{arch}", "--imgsz", "0"], "at least 32"),
    (["{arch}", "--runs", "0"], "at least 1"), (["{arch}", "--threads", "0"], "at least 1"),
])
def test_cli_latency_user_errors(tmp_path, argv, message):
    arch = tmp_path / "tiny.yaml"
    save_arch(tiny_arch(), arch)
    with pytest.raises(UserError, match=message):
        _cli([a.format(arch=arch) for a in argv])
