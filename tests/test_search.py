"""The search: Optuna ask/tell under Ray Tune, the latency constraint, resume, status and export."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.cli import main
from nas.models import build_model, dump_arch, load_arch
from nas.search.config import SearchConfig
from nas.search.searcher import OptunaSearcher, PruneStopper
from nas.search.study import evaluated, recover_interrupted
from ray.tune.search import Searcher

from tests.helpers import tiny_arch
from tests.searching import FAST, SPACE, load_when_written, storage

REQUIRED_ATTRS = {"arch", "latency_ms", "latency_source", "target", "params", "flops", "budget_ms", "trained",
                  "latency_s", "latency_blocks", "latency_wait_s", "driver_s"}
TRAINED_ATTRS = {"map", "map50", "epochs_run", "wall_s", "train_s", "curve", "worker"}


# -- the searcher alone (no Ray): what it tells Optuna ------------------------------------------------

class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def searcher_for(latencies, trials=3, pruner=None, max_failures=5):
    study = optuna.create_study(direction="maximize", pruner=pruner or optuna.pruners.NopPruner())
    cfg = SearchConfig(space=str(SPACE), budget_ms=10.0, study="unit", storage="", trials=trials,
                       max_failures=max_failures)
    it = iter(latencies)

    def make(trial):
        latency = next(it)
        trial.set_user_attr("latency_ms", latency)
        trial.set_constraint("latency", latency - cfg.budget_ms)
        return {"arch": {"n": trial.number}, "latency_ms": latency, "fidelity": {}, "threads": 1}

    return study, OptunaSearcher(study, cfg, make)


# -- the latency check: one table per machine, shared by studies --------------------------------------

def test_latency_oracle_calibrates_once_per_space_and_shares_blocks_between_studies(tmp_path, monkeypatch):
    import evaluators.latency.local as local_module
    import evaluators.latency.predictor as predictor_module
    from evaluators.latency import measure_latency
    from nas.search import latency as latency_module
    from nas.search.latency import LatencyOracle
    from nas.space import load_space

    quick = dict(rounds=1, warmup=2, runs=5, min_time_s=0.0)
    time_blocks = local_module.time_blocks
    monkeypatch.setattr(local_module, "time_blocks", lambda keys, target: time_blocks(keys, target, **quick))
    monkeypatch.setattr(predictor_module.LatencyPredictor, "wait_quiet", lambda self: False)
    monkeypatch.setattr(predictor_module.LatencyPredictor, "measure", lambda self, arch: measure_latency(
        build_model(arch), 64, threads=1, warmup=2, runs=5, min_time_s=0.0).median_ms)
    monkeypatch.setattr(latency_module, "CALIBRATION_ARCHS", 2)
    cfg = SearchConfig(space=str(SPACE), budget_ms=10.0, study="a", storage="")
    assert cfg.latency_folder == Path("studies") / "latency"  # not the study's own folder
    space, logs = load_space(SPACE), []
    oracle = LatencyOracle("predicted", "cpu", None, 1, tmp_path, space, nc=2, log=logs.append)
    oracle.prepare(64)
    assert any("calibrating" in line for line in logs) and oracle.predictors[64].calibrated

    arch = space.random_arch(7, 2)
    latency, source, target = oracle(arch)
    assert source == "table" and latency > 0 and target["imgsz"] == 64 and target["threads"] == 1
    measured = oracle.blocks_measured
    assert oracle(arch)[0] == latency and oracle.blocks_measured == measured  # known now: nothing timed again

    logs.clear()  # another study on the same machine and space: no calibration, no block timed twice
    other = LatencyOracle("predicted", "cpu", None, 1, tmp_path, space, nc=2, log=logs.append)
    other.prepare(64)
    assert not logs and other(arch)[0] == pytest.approx(latency) and other.blocks_measured == 0


def test_over_budget_candidates_are_recorded_at_once_but_not_counted():
    study, s = searcher_for([12.0, 30.0, 5.0, 7.0, 50.0, 3.0], trials=2)
    config = s.suggest("a")
    assert config["arch"] == {"n": 2}  # trials 0 and 1 were over the 10 ms budget
    states = {t.number: (t.state, t.user_attrs.get("trained")) for t in study.trials}
    assert states[0] == (TrialState.COMPLETE, False) and states[1] == (TrialState.COMPLETE, False)
    assert all(v > 0 for t in study.trials[:2] for v in t.constraints.values())
    assert s.suggest("b")["arch"] == {"n": 3}  # over-budget ones do not count: 0 evaluated, 1 running
    assert s.suggest("c") is None  # 2 running cover the target of 2: wait
    s.on_trial_complete("a", {"map": 0.4, "map50": 0.6, "epochs_run": 2, "final": True})
    assert study.trials[2].state == TrialState.COMPLETE and study.trials[2].value == 0.4
    s.on_trial_complete("b", {"map": 0.3, "map50": 0.5, "epochs_run": 2, "final": True})
    assert s.suggest("d") == Searcher.FINISHED
    assert len(evaluated(study)) == 2 and len(study.trials) == 4


def test_a_run_of_over_budget_candidates_stops_with_a_looser_budget_suggested():
    study, s = searcher_for([40.0, 25.0, 31.0, 5.0], trials=2)
    s.cfg.max_over_budget = 3
    assert s.suggest("a") == Searcher.FINISHED
    assert "3 candidates in a row were over the 10 ms budget" in s.stop_reason
    assert "the fastest took 25.00 ms" in s.stop_reason and "--budget 32ms" in s.stop_reason
    assert len(study.trials) == 3 and not evaluated(study)


def test_the_table_build_reports_each_phase_then_an_eta_at_most_every_few_seconds(monkeypatch):
    from nas.search import latency as latency_module

    clock, lines = iter([0.0, 4.0, 12.0, 20.0, 30.0, 31.0, 40.0]), []
    monkeypatch.setattr(latency_module.time, "perf_counter", lambda: next(clock))
    progress = latency_module.TableProgress(lines.append, every_s=10.0)
    for phase, done, total in [("blocks", 0, 40), ("blocks", 10, 40), ("blocks", 20, 40), ("blocks", 30, 40),
                               ("blocks", 40, 40), ("models", 0, 16), ("models", 4, 16)]:
        progress(phase, done, total)
    assert lines == ["latency table: timing the blocks of the calibration architectures (40)",
                     "latency table: blocks 20/40, about 12 s left",  # 4 s after the last line: none
                     "latency table: blocks 40/40, 30 s",
                     "latency table: measuring the calibration architectures whole (16)"]


def test_a_warning_during_a_search_is_one_line(tmp_path):
    import warnings

    from rich.console import Console

    from nas.search.driver import _warnings_as_lines

    log = tmp_path / "log"
    with open(log, "w") as f, _warnings_as_lines(Console(file=f, width=300)):
        warnings.warn("the machine runs 26% slower than its best", UserWarning)
    assert log.read_text() == "warning: the machine runs 26% slower than its best\n"


def _trained(study, imgsz: int, mAP: float, predicted: float, budget: float) -> None:
    """A candidate trained to the end with its predicted latency, as the searcher tells it."""
    trial = study.ask()
    for key, value in {"arch": tiny_arch(imgsz=imgsz), "latency_ms": predicted, "trained": True}.items():
        trial.set_user_attr(key, value)
    trial.set_constraint("latency", predicted - budget)
    study.tell(trial, mAP)


def test_the_winner_is_measured_whole_and_one_over_budget_is_passed_over(tmp_path):
    from rich.console import Console

    from nas.search.driver import measure_winners
    from nas.search.export import trial_arch
    from nas.search.study import best_feasible, measurements

    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp_path / 's.db'}")
    study.set_user_attr("budget_ms", 10.0)
    for imgsz, mAP, predicted in [(64, 0.3, 9.5), (96, 0.2, 9.0), (128, 0.1, 8.0), (160, 0.4, 12.0)]:
        _trained(study, imgsz, mAP, predicted, budget=10.0)
    whole = {64: 10.8, 96: 9.4, 128: 8.1}  # trial 0, the predicted winner, measures over the budget

    class Oracle:
        asked, can_measure = [], True
        can_measure = True  # the target is here (not a portable table's absent device)
        quiet_expected = 0

        def expect_quiet(self):
            Oracle.quiet_expected += 1

        def measure_whole(self, arch):
            self.asked.append(arch["imgsz"])
            return whole[arch["imgsz"]], {"device": "cpu", "threads": 1}

    cfg = SearchConfig(space=str(SPACE), budget_ms=10.0, study="w", storage="", measure_best=2)
    out = Console(file=open(tmp_path / "log", "w"), width=200)
    measure_winners(study, Oracle(), cfg, out)
    assert Oracle.quiet_expected == 1  # the trials are over: it waits for a quiet machine before measuring
    # in rank order, until 2 are measured and one fits (trial 3 was over budget); trial 0 measures over
    # budget on every pass: it is measured 1 + OVER_BUDGET_REMEASURES times before it is passed over
    assert Oracle.asked == [64, 64, 64, 96]
    assert {n: m["latency_measured_ms"] for n, m in measurements(study).items()} == {0: 10.8, 1: 9.4}
    assert best_feasible(study).number == 1  # the next one that fits
    assert trial_arch(study, best_feasible(study))["meta"]["latency_measured_ms"] == 9.4
    log = (tmp_path / "log").read_text()
    assert "trial #0 whole on the target: 10.80 ms (predicted 9.50 ms): OVER the 10 ms budget" in log
    measure_winners(study, Oracle(), cfg, out)  # a resume measures nothing twice
    assert Oracle.asked == [64, 64, 64, 96]


def test_a_search_resumed_with_more_trials_measures_its_new_winner(tmp_path):
    """Three candidates measured by the first run must not stand for the top of a longer one."""
    from rich.console import Console

    from nas.search.driver import measure_winners
    from nas.search.study import best_feasible, measurements, next_to_measure

    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp_path / 's.db'}")
    study.set_user_attr("budget_ms", 10.0)

    for imgsz, mAP in [(64, 0.3), (96, 0.2)]:
        _trained(study, imgsz, mAP, 9.0, budget=10.0)
    whole = {64: 9.1, 96: 9.2, 128: 10.6, 160: 9.6}

    class Oracle:
        can_measure, asked = True, []

        def expect_quiet(self):
            pass

        def measure_whole(self, arch):
            Oracle.asked.append(arch["imgsz"])
            return whole[arch["imgsz"]], {"device": "cpu", "threads": 1}

    cfg = SearchConfig(space=str(SPACE), budget_ms=10.0, study="w", storage="", measure_best=2)
    out = Console(file=open(tmp_path / "log", "w"), width=200)
    measure_winners(study, Oracle(), cfg, out)
    assert Oracle.asked == [64, 96] and next_to_measure(study, 2, 10.0) is None
    _trained(study, 128, 0.5, 9.8, budget=10.0)  # the resumed search's new leader: it measures over the budget
    _trained(study, 160, 0.4, 9.7, budget=10.0)  # and its runner-up, which fits
    assert next_to_measure(study, 2, 10.0).number == 2
    measure_winners(study, Oracle(), cfg, out)
    # the new top two by rank (the first over budget on each of its passes); the old winner fits and was
    # measured before, so nothing further
    assert Oracle.asked == [64, 96, 128, 128, 128, 160]
    assert {n: m["latency_measured_ms"] for n, m in measurements(study).items()} == {0: 9.1, 1: 9.2, 2: 10.6,
                                                                                      3: 9.6}
    assert best_feasible(study).number == 3


def test_a_winner_read_over_budget_in_a_burst_of_other_work_is_measured_again_before_it_is_passed_over(tmp_path):
    from rich.console import Console

    from nas.search.driver import measure_winners
    from nas.search.study import best_feasible, measurements

    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp_path / 's.db'}")
    study.set_user_attr("budget_ms", 15.0)
    trial = study.ask()
    for key, value in {"arch": tiny_arch(), "latency_ms": 13.54, "trained": True}.items():
        trial.set_user_attr(key, value)
    trial.set_constraint("latency", 13.54 - 15.0)
    study.tell(trial, 0.42)
    passes = iter([22.76, 13.9, 13.1])  # a busy first pass, then the machine is quiet again

    class Oracle:
        can_measure, asked = True, 0

        def expect_quiet(self):
            pass

        def measure_whole(self, arch):
            Oracle.asked += 1
            return next(passes), {"device": "cpu", "threads": 2}

    cfg = SearchConfig(space=str(SPACE), budget_ms=15.0, study="w", storage="", measure_best=1)
    measure_winners(study, Oracle(), cfg, Console(file=open(tmp_path / "log", "w"), width=200))
    assert Oracle.asked == 2  # it fitted on the second pass: no third
    assert measurements(study)[0]["latency_measured_ms"] == 13.9
    assert best_feasible(study).number == 0
    assert "13.90 ms (predicted 13.54 ms): fits" in (tmp_path / "log").read_text()


def test_pruned_trials_are_pruned_not_complete():
    study, s = searcher_for([1.0, 2.0], trials=1, pruner=AlwaysPrune())
    s.suggest("a")
    stopper = PruneStopper(s)
    result = {"epoch": 1, "map": 0.01, "final": False, "train_s": 4.5, "node": "10.0.0.7", "node_id": "ab12",
              "pid": 4242}
    assert stopper("a", result) is True
    s.on_trial_complete("a", result)
    t = study.trials[0]
    assert t.state == TrialState.PRUNED and t.intermediate_values == {1: 0.01}
    assert t.user_attrs["train_s"] == 4.5  # its time in the worker still counts as trial time
    assert t.user_attrs["curve"] == [0.01] and t.user_attrs["worker"] == {"node": "10.0.0.7", "node_id": "ab12", "pid": 4242}
    assert len(evaluated(study)) == 1  # a pruned trial was evaluated: it counts


def test_multi_objective_trials_keep_their_curve_and_are_never_pruned():
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=AlwaysPrune())
    cfg = SearchConfig(space=str(SPACE), budget_ms=10.0, study="unit", storage="", trials=1, objective="pareto")

    def make(trial):
        trial.set_user_attr("latency_ms", 4.0)
        return {"arch": {}, "latency_ms": 4.0, "fidelity": {}, "threads": 1}

    s = OptunaSearcher(study, cfg, make)
    s.suggest("a")
    for epoch, mAP in ((1, 0.1), (2, 0.2)):  # Optuna's trial.report raises for multi-objective studies
        assert PruneStopper(s)("a", {"epoch": epoch, "map": mAP, "final": False}) is False
    s.on_trial_complete("a", {"map": 0.25, "map50": 0.4, "epochs_run": 2, "final": True})
    t = study.trials[0]
    assert t.state == TrialState.COMPLETE and t.values == [0.25, 4.0]
    assert t.user_attrs["curve"] == [0.1, 0.2] and t.intermediate_values == {}


def test_failures_are_recorded_and_a_run_of_them_stops_the_search():
    study, s = searcher_for([1.0] * 5, trials=5, max_failures=2)
    s.suggest("a")
    s.on_trial_complete("a", {"failed": True, "reason": "NonFiniteLoss: loss is nan at epoch 1", "map": math.nan})
    s.suggest("b")
    s.on_trial_complete("b", error=True)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert "nan" in study.trials[0].user_attrs["fail_reason"]
    assert "worker died" in study.trials[1].user_attrs["fail_reason"]
    assert s.stop_reason.startswith("2 trials failed in a row") and s.suggest("c") == Searcher.FINISHED
    assert not evaluated(study)


def test_a_success_resets_the_run_of_failures():
    study, s = searcher_for([1.0] * 5, trials=5, max_failures=2)
    for trial_id, result in (("a", {"failed": True, "reason": "RuntimeError: x"}), ("b", {"map": 0.2, "final": True}),
                             ("c", {"failed": True, "reason": "RuntimeError: y"})):
        s.suggest(trial_id)
        s.on_trial_complete(trial_id, result)
    assert s.stop_reason is None and s.failures_in_a_row == 1


def test_recover_interrupted_requeues_the_same_params():
    study = optuna.create_study()
    t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    assert recover_interrupted(study) == [t.number]
    assert study.trials[0].state == TrialState.FAIL
    again = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    assert again.params == t.params and again.user_attrs["rerun_of"] == t.number


def test_recovery_killed_between_queueing_and_failing_queues_once():
    study = optuna.create_study()
    t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.enqueue_trial(t.params, user_attrs={"rerun_of": t.number})  # a driver died right after this
    assert recover_interrupted(study) == [t.number]
    waiting = [w for w in study.trials if w.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].user_attrs["rerun_of"] == t.number


# -- the whole search on Ray ------------------------------------------------------------------------

def test_search_with_two_workers_then_status_and_export(tmp_path, monkeypatch, ray_cluster, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["search", str(SPACE), "--budget", "50ms", "--trials", "4", "--workers", "2", "--cpus-per-trial", "1"]
    assert main(args + FAST) == 0
    study = optuna.load_study(study_name="tiny_space-50ms", storage=storage("tiny_space-50ms"))
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 4 and len(study.trials) == 4
    for t in done:
        assert REQUIRED_ATTRS | TRAINED_ATTRS <= set(t.user_attrs), t.user_attrs.keys()
        assert t.user_attrs["trained"] and t.user_attrs["latency_source"] == "measured"
        assert t.user_attrs["target"]["backend"] == "onnxruntime" and t.user_attrs["latency_ms"] > 0
        assert build_model(t.user_attrs["arch"])  # the stored architecture builds
        assert 0 < t.user_attrs["latency_s"] <= t.user_attrs["driver_s"]  # measured latency: export + timing
        assert 0 < t.user_attrs["train_s"] <= t.user_attrs["wall_s"]

    capsys.readouterr()
    assert main(["status", "tiny_space-50ms"]) == 0
    assert "evaluated 4/4" in capsys.readouterr().out

    assert main(["export", "tiny_space-50ms", "-o", "best.yaml", "--pareto", "front"]) == 0
    arch = load_arch("best.yaml")
    meta = arch["meta"]
    assert {"study", "trial", "map", "map50", "latency_ms", "target", "budget_ms", "params", "flops",
            "space_hash"} <= set(meta)
    assert sum(p.numel() for p in build_model(arch).parameters()) == meta["params"]
    assert dump_arch(arch) == Path("best.yaml").read_text()  # round-trips
    assert (tmp_path / "front" / "pareto.png").stat().st_size > 0
    assert main(["info", "best.yaml", "--json"]) == 0


def test_a_budget_nothing_fits_stops_with_one_line(tmp_path, monkeypatch, ray_cluster, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["search", str(SPACE), "--budget", "1us", "--trials", "3", "--max-over-budget", "3", *FAST]
    assert main(args) == 1
    err = capsys.readouterr().err
    stop = [line for line in err.splitlines() if line.startswith("search stopped:")]
    assert len(stop) == 1 and "3 candidates in a row were over the 0.001 ms budget" in stop[0]
    assert "try --budget" in stop[0] and "Traceback" not in err
    study = optuna.load_study(study_name="tiny_space-1us", storage=storage("tiny_space-1us"))
    assert len(study.trials) == 3 and not evaluated(study)
    for t in study.trials:
        assert t.state == TrialState.COMPLETE and t.user_attrs["trained"] is False
        assert t.constraints["latency"] > 0 and "epochs_run" not in t.user_attrs
    assert main(["export", "tiny_space-1us", "-o", "best.yaml"]) == 2
    assert "no feasible trial" in capsys.readouterr().err
    # nas resume restores the stored settings (budget, space, fidelity); --trials raises the target
    assert main(["resume", "tiny_space-1us", "--trials", "5"]) == 1
    study = optuna.load_study(study_name="tiny_space-1us", storage=storage("tiny_space-1us"))
    assert len(study.trials) == 6 and not any(t.user_attrs["trained"] for t in study.trials)
    assert {t.user_attrs["budget_ms"] for t in study.trials} == {0.001}
    assert study.user_attrs["config"]["trials"] == 5


def test_resume_after_sigkill_reaches_the_target_exactly(tmp_path):
    name, target = "tiny_space-50ms", 5
    cmd = [sys.executable, "-m", "nas", "search", str(SPACE), "--budget", "50ms", "--trials", str(target),
           "--workers", "1", "--cpus-per-trial", "1", *FAST]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = tmp_path / "studies" / name / "study.db"
    deadline = time.time() + 240
    before = []
    while time.time() < deadline and proc.poll() is None:
        time.sleep(1)
        study = load_when_written(db, name)
        if study is not None:
            states = [t.state for t in study.trials]
            if states.count(TrialState.COMPLETE) >= 2 and TrialState.RUNNING in states:
                before = [(t.number, t.value, t.params) for t in study.trials if t.state == TrialState.COMPLETE]
                break
    assert before, "the search never reached 2 finished trials with one running"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray processes die mid-trial
    proc.wait()

    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == target
    kept = {(t.number, t.value, json.dumps(t.params, sort_keys=True)) for t in study.trials}
    assert {(n, v, json.dumps(p, sort_keys=True)) for n, v, p in before} <= kept  # nothing lost
    killed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert killed and all("interrupted" in t.user_attrs["fail_reason"] for t in killed)
    reruns = [t for t in study.trials if "rerun_of" in t.user_attrs]
    assert {t.user_attrs["rerun_of"] for t in reruns} == {t.number for t in killed}
    for t in reruns:  # re-run with the same parameters
        assert t.params == study.trials[t.user_attrs["rerun_of"]].params
    assert "re-running trial" in rerun.stderr


@pytest.mark.parametrize("args, message", [
    (["--budget", "15"], "in what unit"),
    (["--budget=-3ms"], "budget"),
    (["--budget", "15ms", "--sampler", "grid"], "invalid choice"),
    (["--budget", "15ms", "--trials", "0"], "--trials must be at least 1"),
    (["--budget", "15ms", "--data", "missing.yaml"], "missing.yaml"),
])
def test_bad_flags_give_one_line_and_status_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["search", str(SPACE), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_bad_space_file_and_unknown_study(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("imgsz: 64\nstem: 8\nstages: []\nlast: 32\nneck: {width: 16, depth: 1}\nhead: {width: 16}\n")
    assert main(["search", str(bad), "--budget", "15ms"]) == 2
    assert "stages" in capsys.readouterr().err
    assert main(["status", "nothing-here"]) == 2
    assert main(["export", "nothing-here", "-o", "x.yaml"]) == 2
    assert main(["resume", "nothing-here"]) == 2


def test_pruner_judges_only_against_trials_that_reported_a_curve():
    from nas.search.pruning import make_pruner

    study = optuna.create_study(direction="maximize", pruner=make_pruner("median", 3))
    for _ in range(5):  # over-budget candidates: COMPLETE, but never trained
        study.tell(study.ask(), 0.0)
    for value in (0.1, 0.2):
        t = study.ask()
        t.report(value, 1), t.report(value, 2)
        study.tell(t, value)
    poor = study.ask()
    poor.report(0.0, 1), poor.report(0.0, 2)
    assert not poor.should_prune()  # two curves are too few to judge
    t = study.ask()
    t.report(0.3, 1), t.report(0.3, 2)
    study.tell(t, 0.3)
    poor = study.ask()
    poor.report(0.0, 1)
    assert not poor.should_prune()  # warm-up: the first epoch is never judged
    poor.report(0.0, 2)
    assert poor.should_prune()


def test_the_median_pruner_judges_only_past_half_the_proxy():
    from nas.search.pruning import make_pruner, median_warmup

    assert [median_warmup(e) for e in (2, 3, 4, 10)] == [2, 2, 3, 6]
    study = optuna.create_study(direction="maximize", pruner=make_pruner("median", 10))  # 160 steps
    for value in (0.1, 0.2, 0.3):
        t = study.ask()
        for epoch in range(1, 11):
            t.report(value * epoch, epoch)
        study.tell(t, value * 10)
    poor = study.ask()
    for epoch in range(1, 6):
        poor.report(0.0, epoch)
        assert not poor.should_prune(), epoch  # epochs 1-5: too early to judge
    poor.report(0.0, 6)
    assert poor.should_prune()
