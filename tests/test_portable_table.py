"""Portable latency tables (keyed by the device, not the host; --latency-table) and the block model
that predicts the blocks a table lacks."""
import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch

import evaluators.latency.local as local_module
from evaluators.latency import Target
from evaluators.latency.block_model import BlockModel, block_cost
from evaluators.latency.blocks import arch_blocks, block_key, build_block
from evaluators.latency.predictor import LatencyPredictor
from nas.cli import main
from nas.errors import UserError
from nas.models.zoo import pan_neck, stage_backbone
from nas.search.latency import LatencyOracle
from nas.space import load_space

IMGSZ = 64
QUICK = dict(rounds=1, warmup=2, runs=5, min_time_s=0.0)
SPACE = str(Path(__file__).resolve().parents[1] / "spaces" / "ghost_yolo.yaml")


def ghost_arch(width: int = 16, head: int = 16) -> dict:
    stage = dict(expansion=2, kernel=3, stride=2, se=0.0, ratio=2, dfc=0, branches=0, scale=True)
    stages = [dict(stage, width=8, depth=1), dict(stage, width=width, depth=2, dfc=3),
              dict(stage, width=24, depth=1, se=0.25), dict(stage, width=32, depth=1)]
    backbone, taps = stage_backbone(8, stages, 48)
    return {"nc": 2, "imgsz": IMGSZ, "backbone": backbone, "head": pan_neck(taps, len(backbone), (head,) * 3, 1, head)}


KNOWN, UNSEEN = ghost_arch(16, 16), ghost_arch(20, 24)  # UNSEEN shares some blocks with KNOWN, not all


@pytest.fixture(scope="module")
def target():
    return Target.resolve("cpu", "onnxruntime", 1, IMGSZ)


@pytest.fixture(scope="module")
def table_file(tmp_path_factory, target):
    """A table holding KNOWN's blocks, calibrated for scope "s", as a device would export it."""
    path = tmp_path_factory.mktemp("device") / "device.json"
    predictor = LatencyPredictor(target, path=path, timing=QUICK, max_wait_s=0, scope="s")
    raw = [predictor.block_sum(KNOWN), predictor.block_sum(ghost_arch(16, 16) | {"nc": 3})]
    predictor.calibrate([KNOWN, ghost_arch(16, 16) | {"nc": 3}], [1.2 * raw[0] + 0.1, 1.2 * raw[1] + 0.1])
    return path


def no_timing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("something was timed")
    monkeypatch.setattr(local_module, "time_blocks", refuse)
    monkeypatch.setattr(local_module, "block_runner", refuse)
    monkeypatch.setattr(local_module.LocalBackend, "measure", refuse)


def rewrite_target(src, dst, **changes):
    data = json.loads(src.read_text())
    data["target"] = dict(data["target"], **changes)
    dst.write_text(json.dumps(data))
    return dst


# --- the key: the device, not the host ------------------------------------------------------------

def test_the_key_names_the_device_not_the_host(target):
    other_host = dataclasses.replace(target, hostname="elsewhere")
    assert other_host.key() == target.key() and other_host.identity() == target.identity()
    assert dataclasses.replace(target, processor="Another CPU").key() != target.key()
    assert dataclasses.replace(target, onnxruntime_version="0.1").key() != target.key()
    # torch's version times nothing in onnxruntime; it does in the torch backend
    assert dataclasses.replace(target, torch_version="0.1").key() == target.key()
    torch_target = dataclasses.replace(target, backend="torch", onnxruntime_version="")
    assert dataclasses.replace(torch_target, torch_version="0.1").key() != torch_target.key()
    assert Target.from_dict(dict(target.to_dict(), future_field=1)) == target


# --- portable tables ---------------------------------------------------------------------------------

def test_a_table_from_another_host_predicts_identically_without_timing(table_file, target, tmp_path, monkeypatch):
    here = LatencyPredictor(target, path=table_file, timing=QUICK, max_wait_s=0, scope="s")
    expected = here.predict_with_source(KNOWN)
    assert expected[1] == "table" and here.calibrated
    copied = rewrite_target(table_file, tmp_path / "copied.json", hostname="another-host")  # a teammate's copy
    no_timing(monkeypatch)
    there = LatencyPredictor(dataclasses.replace(target, hostname="another-host"), path=copied, scope="s")
    assert there.predict_with_source(KNOWN) == expected and there.measured == 0
    assert there.table == here.table and there.calibration == here.calibration
    # the cache folder finds it by name from any host: the key has no hostname
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"latency-{target.key()}.json").write_text(copied.read_text())
    assert LatencyPredictor(target, cache, scope="s").predict(KNOWN) == expected[0]


def test_a_table_of_another_target_is_refused_naming_both(table_file, target, tmp_path):
    two_threads = dataclasses.replace(target, threads=2)
    with pytest.raises(UserError) as e:
        LatencyPredictor(two_threads, path=table_file)
    message = str(e.value)
    assert "\n" not in message and target.key() in message and two_threads.key() in message
    foreign = rewrite_target(table_file, tmp_path / "foreign.json", processor="Another CPU")
    with pytest.raises(UserError, match="Another CPU"):
        LatencyPredictor(target, path=foreign)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(dict(json.loads(table_file.read_text()), format=1)))
    with pytest.raises(UserError, match="another format"):
        LatencyPredictor(target, path=old)
    assert json.loads(old.read_text())["format"] == 1  # a named file is refused, never rebuilt


def test_search_flags_that_contradict_the_table_exit_2_with_one_line(table_file, target, tmp_path, monkeypatch,
                                                                       capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["search", SPACE, "--budget", "1s", "--latency-table", str(table_file), "--latency-threads", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert target.key() in err and dataclasses.replace(target, threads=2).key() in err
    # and the space's input size (320) is not the table's (64): refused when the predictor opens
    oracle = LatencyOracle("predicted", "cpu", None, None, tmp_path, table=str(table_file), log=lambda *a: None)
    with pytest.raises(UserError, match=f"{target.key()}.*cpu-onnxruntime-1t-320-"):
        oracle.prepare(320)


def test_a_search_on_the_tables_device_times_what_it_lacks_into_it(table_file, target, tmp_path, monkeypatch):
    path = tmp_path / "mine.json"
    path.write_text(table_file.read_text())
    quick = local_module.time_blocks
    monkeypatch.setattr(local_module, "time_blocks", lambda keys, target: quick(keys, target, **QUICK))
    monkeypatch.setattr(LatencyPredictor, "wait_quiet", lambda self: False)
    oracle = LatencyOracle("predicted", "cpu", None, None, tmp_path, table=str(path), log=lambda *a: None)
    assert oracle.target(IMGSZ) == dataclasses.replace(target, imgsz=IMGSZ)  # the table's, threads included
    ms, source, _ = oracle(UNSEEN)
    assert source == "table" and ms > 0 and oracle.blocks_measured > 0 and oracle.can_measure
    assert set(dict(arch_blocks(UNSEEN, IMGSZ))) <= set(json.loads(path.read_text())["blocks"])


def test_a_search_away_from_the_tables_device_uses_the_block_model(table_file, target, tmp_path, monkeypatch):
    foreign = rewrite_target(table_file, tmp_path / "jetson.json", processor="Some ARM board", hostname="jetson")
    before = foreign.read_text()
    no_timing(monkeypatch)
    logs = []
    oracle = LatencyOracle("predicted", "cpu", None, None, tmp_path, space=load_space(SPACE), table=str(foreign),
                           log=logs.append)
    with pytest.warns(UserWarning, match="no calibration for this space"):
        oracle.prepare(IMGSZ)  # no calibration attempted: the table's for scope "s" stands in
    assert any("block model" in line for line in logs) and not oracle.can_measure
    _, source, described = oracle(KNOWN)
    assert source == "table" and described["processor"] == "Some ARM board"
    unseen, source, _ = oracle(UNSEEN)
    assert source == "table+model" and unseen > 0 and oracle.blocks_measured == 0
    assert foreign.read_text() == before  # nothing measured here, nothing modelled, enters the file


# --- the block model ---------------------------------------------------------------------------------

def space_keys(n: int, imgsz: int = 320) -> list[str]:
    space = load_space(SPACE)
    return sorted({k for i in range(n) for k, _ in arch_blocks(space.random_arch(i, 80), imgsz)})


def test_block_cost_counts_the_macs_of_the_built_block():
    rng = random.Random(0)
    for key in rng.sample(space_keys(6, IMGSZ), 12):
        module, inputs = build_block(key)
        macs, grouped = {True: 0, False: 0}, [0]  # grouped: MACs of grouped convs with a multiplier

        def count(conv, args, out, macs=macs, grouped=grouped):
            k = conv.kernel_size[0] * conv.kernel_size[1]
            macs[conv.groups == 1] += out.numel() * conv.in_channels // conv.groups * k
            if 1 < conv.groups != conv.out_channels:
                grouped[0] += out.numel() * conv.in_channels // conv.groups * k
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.register_forward_hook(count)
        with torch.no_grad():
            module(*inputs)
        kxk, pointwise, dw, *_ = block_cost(key)
        assert (kxk + pointwise, dw) == (macs[True], macs[False] - grouped[0]), key


def test_the_model_fits_latency_that_is_a_function_of_macs_and_is_deterministic():
    keys = space_keys(30)

    def truth(key):  # 20 us per op-ish overhead, a dense and a (slower per MAC) depthwise rate
        kxk, pointwise, dw, cols, groups, _, ops = block_cost(key)
        return 0.02 + (kxk + pointwise) / 20e9 * 1e3 + (dw + cols) / 2e9 * 1e3 + groups * 2e-5 + ops * 0.004

    train, test = keys[::2], keys[1::2]
    model = BlockModel.fit({k: truth(k) for k in train})
    errors = [abs(model.predict(k) / truth(k) - 1) for k in test]
    assert max(errors) < 0.03
    shuffled = dict(random.Random(1).sample(sorted({k: truth(k) for k in train}.items()), len(train)))
    assert BlockModel.fit(shuffled).coefs == model.coefs  # the same table, any order: the same model


def test_the_model_ranks_a_wider_block_above_a_narrower_one(table_file, target):
    model = LatencyPredictor(target, path=table_file).block_model  # fitted on blocks timed for real
    args = dict(mid=48, k=3, stride=1, se=0.0, ratio=2, dfc=0, branches=0, scale=True)
    narrow = block_key("GhostBottleneck", dict(args, c_out=24), [24], [16], 1)
    wide = block_key("GhostBottleneck", dict(args, c_out=96, mid=192), [96], [16], 1)
    assert model.predict(wide) > model.predict(narrow) > 0


def test_unseen_model_predicts_an_arch_with_unseen_blocks_without_timing(table_file, target, monkeypatch):
    before = table_file.read_text()
    predictor = LatencyPredictor(target, path=table_file, scope="s", unseen="model")
    monkeypatch.setattr(predictor.backend, "time_blocks", lambda *a, **k: pytest.fail("a block was timed"))
    assert predictor.predict_with_source(KNOWN)[1] == "table"
    ms, source = predictor.predict_with_source(UNSEEN)
    assert source == "table+model" and ms > 0 and predictor.measured == 0
    lacking = set(dict(arch_blocks(UNSEEN, IMGSZ))) - set(predictor.table)
    assert lacking and lacking == set(predictor.modelled)
    assert table_file.read_text() == before
    with pytest.raises(ValueError, match="unseen"):
        LatencyPredictor(target, path=table_file, unseen="guess")


def test_nas_latency_table_writes_a_calibrated_table_and_refuses_another_target(tmp_path, monkeypatch, capsys):
    from evaluators.latency import predictor as predictor_module
    from nas.search import latency as latency_module

    monkeypatch.setattr(local_module, "time_blocks", lambda keys, target: {k: 0.01 * (1 + len(k) % 7) for k in keys})
    monkeypatch.setattr(predictor_module.LatencyPredictor, "wait_quiet", lambda self: False)
    monkeypatch.setattr(predictor_module.LatencyPredictor, "measure", lambda self, arch: 2 * self.block_sum(arch))
    monkeypatch.setattr(latency_module, "CALIBRATION_ARCHS", 2)
    out = tmp_path / "device.json"
    flags = ["latency-table", SPACE, "-o", str(out), "--archs", "2", "--imgsz", str(IMGSZ)]
    assert main(flags + ["--threads", "1"]) == 0
    data = json.loads(out.read_text())
    assert data["target"]["threads"] == 1 and data["target"]["imgsz"] == IMGSZ and len(data["blocks"]) > 20
    assert data["calibrations"][load_space(SPACE).hash]["a"] == pytest.approx(2)  # the search's scope
    assert "--latency-table" in capsys.readouterr().out

    assert main(flags + ["--threads", "2"]) == 2  # the file is another target's: refused, left alone
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cpu-onnxruntime-1t-64-" in err and "cpu-onnxruntime-2t-64-" in err
    assert json.loads(out.read_text()) == data


def test_a_search_with_a_table_from_elsewhere_records_where_each_latency_came_from(tmp_path, monkeypatch, capsys):
    """The whole path a user takes: `nas latency-table` on the device, `nas search --latency-table`
    on another machine (under Ray): nothing timed here, trials say table or table+model, and the
    winners are not measured whole at the end (the device is not here)."""
    import logging

    import ray

    from evaluators.latency import predictor as predictor_module
    from nas.search import latency as latency_module
    from nas.search.study import measurements
    from tests.searching import FAST
    from tests.searching import SPACE as TINY
    from tests.searching import load

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(local_module, "time_blocks", lambda keys, target: {k: 0.01 * (1 + len(k) % 7) for k in keys})
    monkeypatch.setattr(predictor_module.LatencyPredictor, "wait_quiet", lambda self: False)
    monkeypatch.setattr(predictor_module.LatencyPredictor, "measure", lambda self, arch: 2 * self.block_sum(arch))
    monkeypatch.setattr(latency_module, "CALIBRATION_ARCHS", 2)
    assert main(["latency-table", str(TINY), "-o", "dev.json", "--archs", "1", "--threads", "1"]) == 0
    rewrite_target(tmp_path / "dev.json", tmp_path / "dev.json", processor="Some ARM board")
    no_timing(monkeypatch)
    capsys.readouterr()

    args = ["search", str(TINY), "--budget", "1s", "--trials", "3", "--study", "away", "--latency-table", "dev.json",
            *FAST]
    args[args.index("--latency") + 1] = "predicted"
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        assert main(args) == 0
    finally:
        ray.shutdown()
    printed = capsys.readouterr()
    out = " ".join((printed.out + printed.err).split())  # the console wraps long lines
    assert "predicted by the block model" in out
    study = load("away")
    sources = [t.user_attrs["latency_source"] for t in study.trials]
    assert set(sources) <= {"table", "table+model"} and "table+model" in sources
    assert all(t.user_attrs["target"]["processor"] == "Some ARM board" for t in study.trials)
    assert not measurements(study)
