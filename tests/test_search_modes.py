"""Every search mode the README advertises, run as a user runs it (the CLI, under Ray), checked
by what the storage holds: samplers, objectives, pruning on and off, both latency modes, what
--trials counts, resumes that cannot mix searches, and study names."""
import itertools

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from nas.cli import main
from nas.search import pruning
from nas.search.study import evaluated, measurements
from tests.searching import FAST, SPACE, load


def search(*args) -> list[str]:
    return ["search", str(SPACE), "--budget", "1s", *args, *FAST]


def test_random_sampler_without_pruning_trains_every_epoch(in_tmp, ray_cluster):
    assert main(search("--sampler", "random", "--no-prune", "--trials", "2", "--study", "rnd")) == 0
    study = load("rnd")
    assert study.user_attrs["identity"]["sampler"] == "random" and study.user_attrs["identity"]["pruner"] == "none"
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for t in study.trials:
        assert t.user_attrs["epochs_run"] == 2 and len(t.user_attrs["curve"]) == 2
        assert set(t.intermediate_values) == {1, 2} and t.value == t.user_attrs["map"]


@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_pareto_objective_runs_to_the_end_and_exports_its_front(in_tmp, ray_cluster, sampler):
    name = f"pareto-{sampler}"
    assert main(search("--objective", "pareto", "--sampler", sampler, "--trials", "2", "--study", name)) == 0
    study = load(name)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.user_attrs["identity"]["pruner"] == "none"  # Optuna cannot prune multi-objective trials
    assert len(evaluated(study)) == 2
    for t in study.trials:
        assert t.state == TrialState.COMPLETE and t.values[1] == pytest.approx(t.user_attrs["latency_ms"], abs=1e-3)
        assert t.intermediate_values == {} and len(t.user_attrs["curve"]) == 2  # the curve is kept all the same
    assert main(["export", name, "--pareto", "front"]) == 0
    assert (in_tmp / "front" / "pareto.png").is_file() and list((in_tmp / "front").glob("*.yaml"))


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


class AlwaysPruneBeforeTheLastEpoch(pruning._KeepsLastEpoch, AlwaysPrune):
    """The project's last-epoch rule around a pruner that always wants to prune."""


def always_prune(kind: str, epochs: int):
    p = AlwaysPruneBeforeTheLastEpoch()
    p.epochs = epochs
    return p


def test_pruned_trials_stop_early_under_ray_and_count_as_evaluated(in_tmp, ray_cluster, monkeypatch):
    import nas.search.driver as driver

    monkeypatch.setattr(driver, "make_pruner", always_prune)
    args = search("--trials", "2", "--study", "pruned")
    args[args.index("--epochs") + 1] = "3"
    assert main(args) == 0
    study = load("pruned")
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2 and len(evaluated(study)) == 2
    for t in study.trials:  # stopped by Tune after epoch 1 of 3: the worker did not train on
        assert t.user_attrs["epochs_run"] == 1 and t.user_attrs["curve"] == [t.user_attrs["map"]]
        assert list(t.intermediate_values) == [1]


def test_the_last_epoch_is_never_pruned():
    """A pruner asked at the last epoch would relabel a finished trial; every kind refuses to."""
    for kind in ("median", "sha", "hyperband"):
        study = optuna.create_study(direction="maximize", pruner=pruning.make_pruner(kind, 2))
        for value in (0.5, 0.6, 0.7, 0.8):  # good trials set the bar
            t = study.ask()
            t.report(value, 1), t.report(value, 2)
            study.tell(t, value)
        poor = study.ask()
        poor.report(0.0, 1)
        poor.report(0.0, 2)
        assert not poor.should_prune(), kind
    assert isinstance(pruning.make_pruner("hyperband", 3), optuna.pruners.HyperbandPruner)  # samplers check the type
    assert isinstance(pruning.make_pruner("none", 3), optuna.pruners.NopPruner)


def test_predicted_latency_calibrates_then_predicts_every_candidate(in_tmp, ray_cluster, monkeypatch, capsys):
    import evaluators.latency.local as local_module
    import evaluators.latency.predictor as predictor_module
    from evaluators.latency import measure_latency
    from nas.models import build_model
    from nas.search import latency as latency_module

    quick = dict(rounds=1, warmup=2, runs=5, min_time_s=0.0)  # the timing discipline is tested elsewhere
    time_blocks = local_module.time_blocks
    monkeypatch.setattr(local_module, "time_blocks", lambda keys, target: time_blocks(keys, target, **quick))
    monkeypatch.setattr(predictor_module.LatencyPredictor, "wait_quiet", lambda self: False)
    monkeypatch.setattr(predictor_module.LatencyPredictor, "measure", lambda self, arch: measure_latency(
        build_model(arch), arch["imgsz"], threads=1, warmup=2, runs=5, min_time_s=0.0).median_ms)
    monkeypatch.setattr(latency_module, "CALIBRATION_ARCHS", 2)
    args = search("--trials", "2", "--study", "pred", "--latency-cache", "tables", "--latency-threads", "1")
    args[args.index("--latency") + 1] = "predicted"
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "calibrating the latency predictor" in err
    study = load("pred")
    assert len(evaluated(study)) == 2 and list((in_tmp / "tables").glob("*.json"))
    # the end of the search measured the feasible winners whole, beside their prediction
    measured = measurements(study)
    assert sorted(measured) == sorted(t.number for t in evaluated(study))
    assert all(m["latency_measured_ms"] > 0 and m["target"]["threads"] == 1 for m in measured.values())
    assert err.count("whole on the target") == 2
    assert main(["export", "pred", "-o", "best.yaml"]) == 0
    meta = yaml.safe_load(open("best.yaml"))["meta"]
    assert meta["latency_measured_ms"] == measured[meta["trial"]]["latency_measured_ms"]
    for t in study.trials:
        assert t.user_attrs["latency_source"] == "table" and t.user_attrs["latency_ms"] > 0
        assert t.user_attrs["target"]["threads"] == 1


def test_over_budget_candidates_are_recorded_but_do_not_count(in_tmp, ray_cluster, monkeypatch, capsys):
    from nas.search.latency import LatencyOracle

    calls = itertools.count()  # every other candidate is over the 50 ms budget
    monkeypatch.setattr(LatencyOracle, "__call__", lambda self, arch: (
        (500.0 if next(calls) % 2 else 5.0), "measured", {"device": "cpu", "backend": "fake"}))
    args = ["search", str(SPACE), "--budget", "50ms", "--trials", "2", "--study", "half", *FAST]
    assert main(args) == 0
    study = load("half")
    trained = [t for t in study.trials if t.user_attrs["trained"]]
    over = [t for t in study.trials if not t.user_attrs["trained"]]
    assert len(trained) == 2 and len(over) == 1 and len(study.trials) == 3
    assert all(t.state == TrialState.COMPLETE and t.constraints["latency"] > 0 for t in over)
    capsys.readouterr()
    assert main(["status", "half"]) == 0
    assert "evaluated 2/2 (2 trained, 0 pruned)  over budget 1 (not counted)" in capsys.readouterr().out


def test_a_resumed_study_is_the_same_search(in_tmp, ray_cluster, capsys):
    base = ["search", str(SPACE), "--budget", "1us", "--trials", "1", "--max-over-budget", "1", *FAST]
    assert main(base) == 1  # nothing fits a microsecond: one candidate, then a clear stop
    stored = load("tiny_space-1us").user_attrs
    assert stored["identity"]["epochs"] == 2 and stored["identity"]["lr"] == 0.01
    changed = {"--epochs": ("3", "--epochs 2, not 3"), "--lr": ("0.1", "--lr 0.01, not 0.1"),
               "--batch": ("4", "--batch 8, not 4"), "--imgsz": ("96", "--imgsz 64, not 96"),
               "--data": ("synthetic:n=32,val=8,size=64", "--data synthetic:n=16,val=8,size=64, not synthetic:n=32"),
               "--latency": ("predicted", "--latency measured, not predicted"),
               "--seed": ("1", "--seed 0, not 1"), "--pruner": ("sha", "--pruner median, not sha")}
    for flag, (value, message) in changed.items():
        args = list(base)
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
        capsys.readouterr()
        assert main(args) == 2, flag
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "--study NEW_NAME" in err, err
    assert len(load("tiny_space-1us").trials) == 1  # refused before anything was sampled
    assert main(["resume", "tiny_space-1us", "--trials", "2"]) == 1  # nas resume takes it all from storage
    assert len(load("tiny_space-1us").trials) == 2


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "x" * 129])
def test_study_names_stay_inside_the_studies_folder(in_tmp, capsys, name):
    for command in (["search", str(SPACE), "--budget", "15ms", "--study", name], ["status", name],
                    ["resume", name], ["export", name, "-o", "x.yaml"]):
        assert main(command) == 2
        assert "study name" in capsys.readouterr().err
    assert not list(in_tmp.parent.glob("escape*")) and not (in_tmp / "studies").exists()


def test_a_single_coco_json_is_validated_on_held_out_images_and_the_split_is_recorded(in_tmp, ray_cluster, capsys):
    from tests.test_splits import write_coco

    coco = write_coco(in_tmp / "data" / "all.json", in_tmp / "data", [f"im{i}.png" for i in range(10)])
    args = search("--trials", "1", "--study", "coco")
    args[args.index("--data") + 1] = "data/all.json"
    assert main(args) == 0
    assert "validating on held out 20% of train (2 of 10 images" in capsys.readouterr().err
    study = load("coco")
    split = study.user_attrs["data_split"]
    assert split["held_out"]["n_val"] == 2 and split["held_out"]["n_train"] == 8
    assert study.user_attrs["identity"]["data"] == str(coco.resolve())  # absolute: workers run elsewhere
    assert len(evaluated(study)) == 1
