"""Architecture YAML: builds through the registry, round-trips, and refuses malformed files clearly."""
import copy
import json
from pathlib import Path

import pytest
import torch

from nas.cli import main
from nas.errors import UserError
from nas.models import build_model, dump_arch, load_arch, save_arch

REFERENCE = sorted(Path("spaces/reference").glob("*.yaml"))


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def tiny_arch() -> dict:
    return load_arch("spaces/reference/ghostnet_v1_yolo.yaml")


def test_reference_architectures_exist():
    assert {p.name for p in REFERENCE} >= {"ghostnet_v1_yolo.yaml", "ghostnet_v2_yolo.yaml", "ghostnet_v3_yolo.yaml"}


@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: p.stem)
def test_yaml_model_yaml_round_trip(path, tmp_path):
    model = build_model(path)
    text = dump_arch(model.arch)
    # The file is canonical: same rows and keys as the dump, comments aside.
    body = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("#")) + "\n"
    assert text == body
    save_arch(model.arch, tmp_path / "again.yaml")
    again = build_model(tmp_path / "again.yaml")
    assert again.arch == model.arch
    assert n_params(again) == n_params(model)
    assert dump_arch(again.arch) == text


def test_same_dict_builds_same_model():
    arch = tiny_arch()
    a, b = build_model(copy.deepcopy(arch)), build_model(copy.deepcopy(arch))
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]


def test_meta_is_ignored_when_building_and_kept_when_writing():
    arch = tiny_arch()
    arch["meta"] = {"study": "s", "trial": 3, "map": 0.25}
    model = build_model(arch)
    assert n_params(model) == n_params(build_model(tiny_arch()))
    assert "meta:" in dump_arch(arch) and load_arch(arch)["meta"]["trial"] == 3


def _broken(edit):
    arch = tiny_arch()
    edit(arch)
    return arch


MALFORMED = {
    "unknown module": (lambda a: a["head"][1].__setitem__(2, "os.system"), "head row 1", "unknown module 'os.system'"),
    "too many args": (lambda a: a["backbone"][0][3].extend([1, 2]), "backbone row 0 (ConvBNAct)", "too many args"),
    "missing arg": (lambda a: a["backbone"][1].__setitem__(3, [16]), "backbone row 1 (GhostBottleneck)",
                    "missing arg 1 'mid'"),
    "wrong arg type": (lambda a: a["backbone"][1][3].__setitem__(2, "3"), "backbone row 1 (GhostBottleneck)",
                       "arg 2 'k' must be int"),
    "bool is not int": (lambda a: a["backbone"][0][3].__setitem__(0, True), "backbone row 0", "'c_out' must be int"),
    "even kernel": (lambda a: a["backbone"][1][3].__setitem__(2, 4), "backbone row 1", "odd positive"),
    "bad from index": (lambda a: a["head"][2].__setitem__(0, [-1, 40]), "head row 2 (Concat)",
                       "'from' 40 does not name an earlier row"),
    "from not a list": (lambda a: a["head"][2].__setitem__(0, 5), "head row 2 (Concat)", "'from' must be a list"),
    "channel mismatch": (lambda a: a["backbone"].insert(1, [-1, 1, "nn.BatchNorm2d", [32]]),
                         "backbone row 1 (nn.BatchNorm2d)", "channel mismatch"),
    "stride mismatch": (lambda a: a["head"][2].__setitem__(0, [-1, 5]), "head row 2 (Concat)",
                        "cannot concat features of strides"),
    "row shape": (lambda a: a["head"].__setitem__(0, [-1, 1, "ConvBNAct"]), "head row 0", "[from, repeats, module, args]"),
    "repeats": (lambda a: a["head"][1].__setitem__(1, 2), "head row 1 (nn.Upsample)", "repeats must be 1"),
    "unknown top key": (lambda a: a.__setitem__("anchors", 3), "architecture", "unknown key(s) ['anchors']"),
    "nc type": (lambda a: a.__setitem__("nc", "80"), "architecture", "'nc' must be a positive int"),
    "no detect": (lambda a: a["head"].pop(), "architecture", "must be Detect"),
    "detect nc": (lambda a: a["head"][-1][3].__setitem__(0, 3), "head row 13 (Detect)", "differs from the top-level nc"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_architectures_name_row_and_key(case):
    edit, where, what = MALFORMED[case]
    with pytest.raises(UserError) as e:
        load_arch(_broken(edit))
    assert where in str(e.value) and what in str(e.value), str(e.value)


def test_python_tags_are_refused(tmp_path):
    bad = tmp_path / "evil.yaml"
    bad.write_text("nc: !!python/object/apply:os.system ['echo pwned']\nimgsz: 320\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_arch(bad)


def test_cli_reports_malformed_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    arch = _broken(MALFORMED["unknown module"][0])
    bad.write_text(dump_arch(arch))
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown module" in err and "Traceback" not in err


def test_info_json_and_leaves_no_hooks(capsys):
    assert main(["info", "spaces/reference/ghostnet_v3_yolo.yaml", "--imgsz", "128", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    model = build_model("spaces/reference/ghostnet_v3_yolo.yaml")
    assert out["params"] == n_params(model) and out["imgsz"] == 128 and out["flops"] > 0
    assert out["deploy_params"] < out["params"]  # V3 branches fused for deployment
    assert len(out["layers"]) == len(model.layers)


def test_complexity_leaves_no_hooks_or_buffers():
    from evaluators.complexity import complexity, per_layer

    model = build_model("spaces/reference/ghostnet_v2_yolo.yaml")
    buffers_before = {k for k, _ in model.named_buffers()}
    complexity(model, 64)
    per_layer(model, 64)
    assert {k for k, _ in model.named_buffers()} == buffers_before
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert not any(hasattr(m, "total_ops") for m in model.modules())
    model(torch.zeros(2, 3, 64, 64))  # still runs normally
