"""ONNX export of the deploy graph, parity with PyTorch, and `nas onnx` (weights loading and its errors)."""
import argparse

import onnx
import pytest
import torch
import torch.nn as nn

from evaluators.onnx_export import OnnxParityError, check_onnx, deploy_copy, export_onnx
from nas.errors import UserError
from nas.models import RepConv, build_model, save_arch

from .helpers import randomize_bn, tiny_arch

IMGSZ = 64
NC = 3








@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_bn(build_model(tiny_arch(nc=NC)), spread=0.2)


def _anchors(imgsz: int) -> int:
    return sum((imgsz // s) ** 2 for s in (8, 16, 32))


@pytest.fixture(scope="module")
def exported(model):
    return export_onnx(model, None)


def test_export_is_the_fused_graph_with_decoded_outputs_and_matches_pytorch(model, exported):
    graph = onnx.load_from_string(exported).graph
    shapes = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output}
    assert shapes == {"boxes": [1, _anchors(IMGSZ), 4], "scores": [1, _anchors(IMGSZ), NC]}
    assert [i.name for i in graph.input] == ["images"]
    ops = [n.op_type for n in graph.node]
    deployed_convs = sum(isinstance(m, nn.Conv2d) for m in deploy_copy(model).modules())
    assert "BatchNormalization" not in ops and ops.count("Conv") == deployed_convs
    assert not {"Shape", "Gather", "Identity"} & set(ops)  # static shape arithmetic was folded away
    assert deployed_convs < sum(isinstance(m, nn.Conv2d) for m in model.modules())  # branches were fused
    # parity against the un-fused model: checks re-parameterization and export together
    assert check_onnx(model, exported, IMGSZ) < 1e-4
    assert model.training and all(m.fused is None for m in model.modules() if isinstance(m, RepConv))


def test_export_raw_maps_to_a_file_at_another_size(model, tmp_path):
    size = 96
    path = export_onnx(model, tmp_path / "raw.onnx", size, decode=False)
    assert path.is_file()
    outputs = onnx.load(str(path)).graph.output
    assert [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in outputs] == \
        [[1, 4 * 16 + NC, size // s, size // s] for s in (8, 16, 32)]
    assert check_onnx(model, path, size, decode=False) < 1e-4


def test_check_onnx_catches_a_graph_that_does_not_match(exported):
    other = randomize_bn(build_model(tiny_arch(nc=NC)), seed=1, spread=0.2)
    with pytest.raises(OnnxParityError, match="differs"):
        check_onnx(other, exported, IMGSZ)


# --- nas onnx --------------------------------------------------------------------------------------

def _cli(argv):
    from nas.cli import onnx as onnx_cli
    parser = argparse.ArgumentParser()
    onnx_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["onnx", *argv])
    return args.run(args)


@pytest.fixture
def arch_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    save_arch(tiny_arch(nc=NC), path)
    return path


def test_cli_onnx_exports_the_given_weights(arch_file, tmp_path, capsys):
    torch.manual_seed(1)
    trained = randomize_bn(build_model(arch_file), seed=2).eval()
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "tiny.onnx"
    assert _cli([str(arch_file), "--weights", str(tmp_path / "w.pt"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "MB" in printed and "max |onnxruntime - torch|" in printed
    assert check_onnx(trained, out, IMGSZ) < 1e-4  # the file holds these weights, not random ones


def test_load_weights_accepts_a_checkpoint_dict(arch_file, tmp_path):
    from nas.cli.onnx import load_weights
    source = randomize_bn(build_model(arch_file), seed=3)
    torch.save({"model": source.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    target = build_model(arch_file)
    load_weights(target, tmp_path / "ckpt.pt")
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "not found"),
    (lambda p: p.write_text("not a torch file"), "cannot read weights"),
    (lambda p: torch.save([torch.zeros(1)], p), "not a state dict"),
    (lambda p: torch.save(nn.Linear(2, 2), p), "cannot read weights"),  # pickled module: weights_only refuses
    (lambda p: torch.save(build_model(tiny_arch(width=24, nc=NC)).state_dict(), p), r"wrong shape \d+ \("),
    (lambda p: torch.save({"extra.weight": torch.zeros(1), **build_model(tiny_arch(nc=NC)).state_dict()}, p),
     r"unexpected 1 \(extra.weight\)"),
    (lambda p: torch.save(dict(list(build_model(tiny_arch(nc=NC)).state_dict().items())[1:]), p), r"missing 1 \("),
])
def test_cli_onnx_weights_errors_are_one_clear_line(arch_file, tmp_path, make, message):
    weights = tmp_path / "w.pt"
    make(weights)
    with pytest.raises(UserError, match=message) as err:
        _cli([str(arch_file), "--weights", str(weights), "-o", str(tmp_path / "m.onnx")])
    assert "\n" not in str(err.value)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("argv, message", [
    (["missing.yaml"], "not found"), (["{arch}", "--imgsz", "16"], "at least 32"),
    (["{arch}", "-o", "{tmp}/no/such/dir/m.onnx"], "does not exist"), (["{arch}", "--opset", "25"], "between"),
])
def test_cli_onnx_user_errors(arch_file, tmp_path, argv, message):
    with pytest.raises(UserError, match=message):
        _cli([a.format(arch=arch_file, tmp=tmp_path) for a in argv])
