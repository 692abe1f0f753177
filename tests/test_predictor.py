"""Latency predictor: block table, cache reuse per target, calibration, ranking against measurement."""
import json

import pytest

import evaluators.latency.local as local_module
import evaluators.latency.predictor as predictor_module
from evaluators.latency import Target
from evaluators.latency import timing as timing_module
from evaluators.latency.blocks import CANARY_KEY
from evaluators.latency.timing import Canary
from evaluators.latency.predictor import LatencyPredictor, arch_blocks, fit_calibration
from nas.models.zoo import pan_neck, stage_backbone

IMGSZ = 64
QUICK = dict(rounds=1, warmup=2, runs=5, min_time_s=0.0)


def plain_arch(width: int, head_width: int) -> dict:
    """The smallest detector the graph allows: five strided convs and the head."""
    backbone = [[-1, 1, "ConvBNAct", [width, 3, 2]]] + [[-1, 1, "ConvBNAct", [width, 3, 2]] for _ in range(4)]
    return {"nc": 2, "imgsz": IMGSZ, "backbone": backbone, "head": [[[2, 3, 4], 1, "Detect", ["nc", head_width]]]}


SMALL, LARGE = plain_arch(8, 8), plain_arch(96, 96)


def ghost_arch(depth: int = 1, branches: int = 0) -> dict:
    stage = dict(expansion=2, kernel=3, stride=2, se=0.0, ratio=2, dfc=0, branches=branches, scale=True)
    stages = [dict(stage, width=8, depth=1), dict(stage, width=16, depth=depth, dfc=3),
              dict(stage, width=24, depth=1, se=0.25), dict(stage, width=32, depth=1)]
    backbone, taps = stage_backbone(8, stages, 48)
    return {"nc": 2, "imgsz": IMGSZ, "backbone": backbone,
            "head": pan_neck(taps, len(backbone), (16, 16, 16), 1, 16, branches=branches)}


@pytest.fixture(scope="module")
def target():
    return Target.resolve("cpu", "onnxruntime", 1, IMGSZ)


@pytest.fixture(scope="module")
def warm_dir(tmp_path_factory, target):
    """A cache folder whose table already holds SMALL and LARGE (measured once for the module)."""
    folder = tmp_path_factory.mktemp("latency")
    LatencyPredictor(target, folder, QUICK, max_wait_s=0).warm([SMALL, LARGE])
    return folder


def copy_cache(src, dst, target):
    name = f"latency-{target.key()}.json"
    (dst / name).write_text((src / name).read_text())


# --- blocks ---------------------------------------------------------------------------------------

def test_blocks_cover_every_row_and_split_repeats():
    one, three = arch_blocks(ghost_arch(depth=1), IMGSZ), arch_blocks(ghost_arch(depth=3), IMGSZ)
    assert len(one) == len(ghost_arch()["backbone"]) + len(ghost_arch()["head"])
    assert all(n == 1 for _, n in one)
    # The depth-3 stage is its first block (also in the depth-1 stage) plus 2 x a stride-1 repeat.
    extra = [(k, n) for k, n in three if k not in dict(one)]
    assert len(three) == len(one) + 1 and len(extra) == 1 and extra[0][1] == 2
    name, args, c_ins, sizes, repeats = json.loads(extra[0][0])
    assert (name, args["stride"], c_ins, sizes, repeats) == ("GhostBottleneck", 1, [16], [IMGSZ // 8], 1)
    # Multi-input rows see each input at its own resolution.
    detect = json.loads(one[-1][0])
    assert detect[0] == "Detect" and detect[3] == [IMGSZ // 8, IMGSZ // 16, IMGSZ // 32]


def test_reparameterization_branches_share_the_deploy_blocks():
    assert arch_blocks(ghost_arch(branches=3), IMGSZ) == arch_blocks(ghost_arch(branches=0), IMGSZ)


# --- prediction and the cache ---------------------------------------------------------------------

def test_ranks_a_small_and_a_much_larger_detector_like_measurement(warm_dir, target):
    predictor = LatencyPredictor(target, warm_dir, QUICK, max_wait_s=0)
    small, large = predictor.predict(SMALL), predictor.predict(LARGE)
    measured = [predictor.measure(a, warmup=3, runs=20, min_time_s=0.1) for a in (SMALL, LARGE)]
    assert measured[0] < measured[1]
    assert 0 < small < large


def test_cache_is_written_and_reused_without_measuring(tmp_path, target):
    first = LatencyPredictor(target, tmp_path, QUICK, max_wait_s=0)
    assert not first.path.exists() and first.path.parent == tmp_path
    expected = first.predict(ghost_arch(depth=2))
    assert first.measured == len({k for k, _ in arch_blocks(ghost_arch(depth=2), IMGSZ)})
    assert first.path.name == f"latency-{target.key()}.json" and first.path.exists()

    second = LatencyPredictor(target, tmp_path, QUICK, max_wait_s=0)
    assert second.predict(ghost_arch(depth=2)) == expected
    assert second.measured == 0
    # A deeper stage only adds repeats of blocks already there; new branches fuse away.
    assert second.warm([ghost_arch(depth=4, branches=2)]) == 0 and second.measured == 0


def test_prediction_of_a_known_architecture_measures_nothing(warm_dir, target, monkeypatch):
    predictor = LatencyPredictor(target, warm_dir, QUICK, max_wait_s=0)

    def refuse(*args, **kwargs):
        raise AssertionError("a block was measured")

    monkeypatch.setattr(local_module, "block_runner", refuse)
    assert predictor.predict(SMALL) > 0 and predictor.predict(LARGE) > 0
    assert predictor.measured == 0


def test_a_candidate_the_block_model_puts_far_over_the_screen_is_not_timed(warm_dir, tmp_path, target,
                                                                           monkeypatch):
    copy_cache(warm_dir, tmp_path, target)
    predictor = LatencyPredictor(target, tmp_path, QUICK, max_wait_s=0)
    medium = plain_arch(48, 48)  # its blocks are in no table yet
    refused = []
    monkeypatch.setattr(local_module, "time_blocks", lambda keys, target, **kw: refused.append(keys) or {})
    ms, source = predictor.predict_with_source(medium, screen_above=1e-6)
    assert source == "table+model" and ms > 0 and not refused and predictor.measured == 0
    # under the screen, the new blocks are timed as always (here: refused, so the model fills in)
    predictor.predict_with_source(medium, screen_above=1e6)
    assert refused and set(refused[0]) == {k for k, _ in predictor.blocks(medium)} - set(predictor.table)


def test_another_target_gets_its_own_table(warm_dir, target):
    other = Target.resolve("cpu", "onnxruntime", 2, IMGSZ)
    a, b = LatencyPredictor(target, warm_dir, QUICK, max_wait_s=0), LatencyPredictor(other, warm_dir, QUICK, max_wait_s=0)
    assert a.path != b.path and a.table and not b.table


def test_corrupted_or_foreign_cache_is_rebuilt_with_a_warning(warm_dir, tmp_path, target):
    predictor = LatencyPredictor(target, tmp_path, QUICK, max_wait_s=0)
    predictor.path.write_text('{"format": 1, "blocks": {')  # a write cut short
    with pytest.warns(UserWarning, match="ignored"):
        predictor = LatencyPredictor(target, tmp_path, QUICK, max_wait_s=0)
    assert predictor.table == {}
    assert predictor.predict(SMALL) > 0 and predictor.measured > 0
    assert json.loads(predictor.path.read_text())["format"] == predictor_module.FORMAT

    copy_cache(warm_dir, tmp_path, target)  # a table of another format version
    data = json.loads(predictor.path.read_text())
    predictor.path.write_text(json.dumps(dict(data, format=-1)))
    with pytest.warns(UserWarning, match="another format"):
        assert LatencyPredictor(target, tmp_path, QUICK, max_wait_s=0).table == {}


# --- calibration ----------------------------------------------------------------------------------

def test_calibration_is_applied_and_saved(warm_dir, tmp_path, target):
    copy_cache(warm_dir, tmp_path, target)
    predictor = LatencyPredictor(target, tmp_path, QUICK, max_wait_s=0)
    assert not predictor.calibrated
    raw = [predictor.predict(SMALL), predictor.predict(LARGE)]  # uncalibrated: the block sums
    assert raw == [predictor.block_sum(SMALL), predictor.block_sum(LARGE)]

    fit = predictor.calibrate([SMALL, LARGE], [2 * raw[0] + 0.5, 2 * raw[1] + 0.5])
    assert predictor.calibrated and fit.n == 2
    assert fit.a == pytest.approx(2) and fit.b == pytest.approx(0.5) and fit.error < 1e-9
    assert predictor.predict(SMALL) == pytest.approx(2 * raw[0] + 0.5)

    reloaded = LatencyPredictor(target, tmp_path, QUICK, max_wait_s=0)
    assert reloaded.calibration == fit and reloaded.predict(LARGE) == pytest.approx(2 * raw[1] + 0.5)
    assert reloaded.measured == 0


def test_each_scope_keeps_its_own_calibration_over_a_shared_table(warm_dir, tmp_path, target):
    # two search spaces on one machine: blocks are shared, each space is calibrated on its own
    copy_cache(warm_dir, tmp_path, target)
    first = LatencyPredictor(target, tmp_path, QUICK, max_wait_s=0, scope="space-a")
    raw = [first.block_sum(SMALL), first.block_sum(LARGE)]
    fit_a = first.calibrate([SMALL, LARGE], [2 * raw[0], 2 * raw[1]])

    second = LatencyPredictor(target, tmp_path, QUICK, max_wait_s=0, scope="space-b")
    assert not second.calibrated and second.predict(SMALL) == pytest.approx(raw[0])
    assert second.measured == 0  # the blocks were already known
    fit_b = second.calibrate([SMALL, LARGE], [3 * raw[0] + 1, 3 * raw[1] + 1])

    # saving space-b's fit kept space-a's, including in an instance loaded before it was written
    assert LatencyPredictor(target, tmp_path, QUICK, max_wait_s=0, scope="space-a").calibration == fit_a
    first.calibrate([SMALL, LARGE], [2 * raw[0], 2 * raw[1]])
    assert LatencyPredictor(target, tmp_path, QUICK, max_wait_s=0, scope="space-b").calibration == fit_b


def test_calibrate_measures_the_whole_models_when_not_given_them(warm_dir, tmp_path, target, monkeypatch):
    copy_cache(warm_dir, tmp_path, target)
    predictor = LatencyPredictor(target, tmp_path, QUICK, max_wait_s=0)
    measured = []

    def measure(arch):  # the first pass is disturbed (twice as slow); the second is the truth
        measured.append(arch)
        return (6 if len(measured) <= 2 else 3) * predictor.block_sum(arch)

    monkeypatch.setattr(predictor, "measure", measure)
    fit = predictor.calibrate([SMALL, LARGE])
    assert measured == [SMALL, LARGE, SMALL, LARGE]  # two passes, spread in time
    assert fit.a == pytest.approx(3) and fit.b == pytest.approx(0, abs=1e-9)  # each kept its fastest


def test_fit_calibration_minimises_relative_error():
    fit = fit_calibration([1.0, 2.0, 4.0], [3.0, 5.0, 9.0])  # exactly 2 s + 1
    assert (fit.a, fit.b) == (pytest.approx(2), pytest.approx(1)) and fit.worst < 1e-9
    single = fit_calibration([4.0], [6.0])  # one point: a scale, no offset
    assert (single.a, single.b, single.n) == (pytest.approx(1.5), 0.0, 1)
    with pytest.raises(ValueError, match="as many"):
        fit_calibration([1.0, 2.0], [1.0])


def test_a_negative_intercept_never_predicts_a_small_model_below_zero():
    fit = fit_calibration([4.0, 8.0], [2.0, 6.0])  # exactly s - 2: one session, not one per block
    assert (fit.a, fit.b) == (pytest.approx(1), pytest.approx(-2)) and fit.floor == pytest.approx(0.5)
    assert fit.apply(8.0) == pytest.approx(6.0)  # inside the calibration: the fitted line
    assert fit.apply(1.0) == pytest.approx(0.5)  # below it: never under the smallest ratio measured


# -- waiting for a quiet machine (the canary) ---------------------------------------------------------

def test_canary_is_quiet_near_its_record_and_busy_far_above_it(target):
    canary = Canary(local_module.block_runner(CANARY_KEY, target))
    assert canary.quiet() and 0 < canary.record_ms < 50  # the first reading sets the record
    canary.record_ms /= 3  # as if it once ran 3x faster: now the machine reads busy
    assert not canary.quiet()


def test_a_batch_spoiled_by_other_work_is_timed_again_keeping_the_fastest(tmp_path, target, monkeypatch):
    predictor = LatencyPredictor(target, tmp_path, QUICK)
    readings = iter([True, False, True, True])  # quiet before, busy after the first timing, then quiet
    monkeypatch.setattr(predictor.canary, "quiet", lambda: next(readings))
    timings = iter([5.0, 2.0])
    calls = []

    def time_blocks(keys, target, **timing):
        calls.append(list(keys))
        ms = next(timings)
        return dict.fromkeys(keys, ms)

    monkeypatch.setattr(local_module, "time_blocks", time_blocks)
    predictor.warm([SMALL])
    assert len(calls) == 2 and calls[0] == calls[1]
    assert set(predictor.table.values()) == {2.0}
    saved = json.loads(predictor.path.read_text())
    assert saved["canary_ms"] is None or saved["canary_ms"] > 0


def test_a_machine_that_stays_busy_is_waited_for_once_then_timed_as_it_is(tmp_path, target, monkeypatch):
    predictor = LatencyPredictor(target, tmp_path, QUICK, max_wait_s=0.01)
    waits = []
    monkeypatch.setattr(predictor.canary, "wait", lambda max_wait_s: waits.append(max_wait_s) or False)
    predictor.canary.last_ms = 2.0  # its last reading: twice its record
    predictor.canary.record_ms = 1.0
    with pytest.warns(UserWarning, match="stays busy"):
        assert predictor.wait_quiet() is False
    assert predictor.wait_quiet() is False and len(waits) == 1  # no second wait within 10 minutes
    predictor.expect_quiet()  # what kept it busy is over (the end of a search): waited for again
    predictor.canary.last_ms = 1.0
    monkeypatch.setattr(predictor.canary, "wait", lambda max_wait_s: waits.append(max_wait_s) or True)
    assert predictor.wait_quiet() is True and len(waits) == 2


def test_the_canary_wait_polls_fast_first_then_backs_off(target, monkeypatch):
    canary = Canary(local_module.block_runner(CANARY_KEY, target), record_ms=1.0)
    readings = iter([2.0] * 6 + [1.05])  # busy for a while, then quiet (within 10% of its record)
    monkeypatch.setattr(canary, "time", lambda: next(readings))
    pauses = []
    monkeypatch.setattr(timing_module.time, "sleep", pauses.append)
    monkeypatch.setattr(timing_module, "others_cpu_share", lambda window_s: 0.9)  # another process is busy
    assert canary.wait(max_wait_s=60, poll_s=1.0, first_poll_s=0.1) is True
    assert pauses == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0] and canary.last_ms == 1.05 and canary.slow_idle == 0


def test_a_slow_canary_with_nothing_else_running_is_not_waited_for(tmp_path, target, monkeypatch):
    canary = Canary(local_module.block_runner(CANARY_KEY, target), record_ms=1.0)
    monkeypatch.setattr(canary, "time", lambda: 1.3)  # 30% over its record, steadily
    monkeypatch.setattr(timing_module, "others_cpu_share", lambda window_s: 0.02)
    assert canary.wait(max_wait_s=60) is False and canary.slow_idle == pytest.approx(0.3)

    predictor = LatencyPredictor(target, tmp_path, QUICK, max_wait_s=30)
    monkeypatch.setattr(predictor, "canary", canary)
    with pytest.warns(UserWarning, match="30% slower than its best with nothing else running"):
        assert predictor.wait_quiet() is False
    assert predictor.busy_until == 0.0  # not a busy machine: checked again next time, warned once
    assert predictor.wait_quiet() is False


def test_others_cpu_share_reads_this_machine():
    share = timing_module.others_cpu_share(0.05)
    assert share is None or 0.0 <= share <= 1.0


def test_the_canary_record_is_kept_with_the_table(tmp_path, target):
    first = LatencyPredictor(target, tmp_path, QUICK)
    first.warm([SMALL])
    record = first.canary.record_ms
    assert 0 < record < float("inf")
    assert LatencyPredictor(target, tmp_path, QUICK).canary.record_ms == pytest.approx(record)
