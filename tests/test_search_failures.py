"""Failures are trials, not crashes: an exception, an out-of-memory error, a diverging loss and a
worker killed mid-trial each end their trial as FAIL with the reason in the storage, and the
search goes on; a run of failures stops it with one line; a resume never re-runs a trial that
failed on its own. Faults are injected into the Ray workers by tests/faults.py."""
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from nas.cli import main
from nas.search.study import evaluated
from tests import faults
from tests.searching import FAST, SPACE, load


@pytest.fixture(scope="module")
def fault_plan(tmp_path_factory):
    """A Ray cluster whose workers run tests/faults.py; a test writes the plan before searching."""
    import ray

    plan = tmp_path_factory.mktemp("faults") / "plan.json"
    repo = str(Path(faults.__file__).resolve().parents[1])  # so that workers can import tests.faults
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
             runtime_env={"env_vars": {faults.PLAN_ENV: str(plan), "PYTHONPATH": repo},
                          "worker_process_setup_hook": "tests.faults.install"})
    yield plan
    ray.shutdown()


@pytest.fixture
def plan(fault_plan, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for leftover in (fault_plan, fault_plan.with_suffix(".count"), fault_plan.with_suffix(".pid")):
        leftover.unlink(missing_ok=True)

    def write(faults_by_call: dict) -> None:
        fault_plan.write_text(json.dumps({str(k): v for k, v in faults_by_call.items()}))
    write.path = fault_plan
    return write


def search(name: str, *args) -> list[str]:
    return ["search", str(SPACE), "--budget", "1s", "--study", name, "--workers", "1", *args, *FAST]


def test_an_exception_and_an_out_of_memory_fail_their_trials_and_the_search_goes_on(plan, capsys):
    plan({2: "exception", 3: "oom"})
    assert main(search("faulty", "--trials", "2")) == 0
    study = load("faulty")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL,
                                                TrialState.COMPLETE]
    reasons = [t.user_attrs["fail_reason"] for t in study.trials if t.state == TrialState.FAIL]
    assert reasons[0] == "RuntimeError: injected fault in training call 2"
    assert reasons[1].startswith("out of memory: OutOfMemoryError: CUDA out of memory")
    assert len(evaluated(study)) == 2 and "Traceback" not in capsys.readouterr().err

    # a resume with a higher target never re-runs a trial that failed on its own
    assert main(["resume", "faulty", "--trials", "3"]) == 0
    study = load("faulty")
    assert len(study.trials) == 5 and study.trials[4].state == TrialState.COMPLETE
    assert not any("rerun_of" in t.user_attrs for t in study.trials)


def test_a_diverging_loss_fails_and_a_run_of_failures_stops_the_search(plan, capsys):
    plan({})
    assert main(search("diverging", "--trials", "3", "--lr", "1e8", "--max-failures", "2")) == 1
    err = capsys.readouterr().err
    stop = [line for line in err.splitlines() if line.startswith("search stopped:")]
    assert len(stop) == 1 and "2 trials failed in a row" in stop[0] and "Traceback" not in err
    study = load("diverging")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    assert all("NonFiniteLoss" in t.user_attrs["fail_reason"] for t in study.trials)


def test_a_worker_killed_mid_trial_fails_that_trial_only(plan, capsys):
    plan({2: "stall"})
    pid_file = plan.path.with_suffix(".pid")

    def kill_the_stalled_worker():
        deadline = time.time() + 120
        while time.time() < deadline and not pid_file.exists():
            time.sleep(0.2)
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)

    killer = threading.Thread(target=kill_the_stalled_worker, daemon=True)
    killer.start()
    assert main(search("killed", "--trials", "2")) == 0
    killer.join(timeout=1)
    study = load("killed")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    dead = study.trials[1]
    assert "worker died" in dead.user_attrs["fail_reason"]
    assert dead.user_attrs["worker"]["pid"] == int(pid_file.read_text())  # recorded as the trial started
    assert not any("rerun_of" in t.user_attrs for t in study.trials)
    assert "Traceback" not in capsys.readouterr().err  # Ray's own report of the dead actor stays in its files
