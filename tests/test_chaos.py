"""Chaos: the search SIGKILLed at random moments (calibration, mid-trial, right after a trial ends)
and resumed each time reaches its target exactly, losing and duplicating nothing.

Runs benchmarks/chaos.py as a user would (a subprocess, 3 kills, target 4 trials) and checks what
the storage holds by opening the study itself; the script's JSON report gives the study's address
and what the study held right after each kill. 3.5-4 minutes on the 2 shared cores (load 5-10).
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from nas.search.study import is_evaluated

ROOT = Path(__file__).resolve().parents[1]
TARGET = 4


def same_values(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))


def test_sigkill_at_calibration_mid_trial_and_after_a_trial_loses_and_duplicates_nothing(tmp_path):
    report_file = tmp_path / "chaos.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "chaos.py"), "--kills", "3", "--trials", str(TARGET),
           "--seed", "0", "--workdir", str(tmp_path / "run"), "--json", str(report_file), "--quick-calibration"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert report_file.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert proc.returncode == 0 and report["ok"], proc.stdout[-4000:] + proc.stderr[-2000:]

    kills = report["kills"]
    assert [k["kind"] for k in kills][0] == "calibration"
    assert {k["kind"] for k in kills} == {"calibration", "mid-trial", "after-trial"}
    assert all(k["hit"] for k in kills), [(k["kind"], k["hit"]) for k in kills]
    calibration = kills[0]
    assert calibration["at_kill"]["trials"] == 0  # killed while calibrating: no trial yet
    mid = next(k for k in kills if k["kind"] == "mid-trial")
    assert mid["trial"] in mid["running"]  # cut off while handed to Ray
    after = next(k for k in kills if k["kind"] == "after-trial")
    assert after["at_kill"]["evaluated"] > after["before"]["evaluated"]
    assert report["runs"][-1]["rc"] == 0 and all(r["rc"] == -9 for r in report["runs"][:-1])

    # the storage itself, read afresh
    study = optuna.load_study(study_name=report["study"], storage=report["storage"])
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    done = [t for t in trials if is_evaluated(t)]
    assert len(done) == TARGET
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert report["final"]["max_evaluated_seen"] <= TARGET  # never over the target while it ran

    fails = [t for t in trials if t.state == TrialState.FAIL]
    assert fails  # the mid-trial kill cut one off at least
    for t in fails:
        assert "interrupted" in t.user_attrs.get("fail_reason", ""), (t.number, t.user_attrs.get("fail_reason"))

    for k in kills:  # nothing lost: every finished trial seen after a kill is still there, unchanged
        for old in k["snapshot"]:
            now = by_number.get(old["number"])
            assert now is not None, f"trial {old['number']} (finished at kill {k['index']}) is gone"
            assert now.state.name == old["state"] and now.params == old["params"], (old, now)
            assert same_values(now.values, old["values"]), (old, now.values)
        for number in k["running"]:  # cut off by the kill: FAIL (interrupted), re-run by the next run
            assert by_number[number].state == TrialState.FAIL, (k["index"], number)

    # nothing duplicated: each interrupted trial queued again exactly once, with its params; no two
    # evaluated trials re-run the same one, nor descend from the same original
    reruns = {}
    for t in trials:
        if "rerun_of" in t.user_attrs:
            reruns.setdefault(t.user_attrs["rerun_of"], []).append(t)
    for t in fails:
        again = reruns.get(t.number, [])
        assert len(again) == 1, (t.number, [r.number for r in again])
        assert t.params.items() <= again[0].params.items()
    shared = [t.user_attrs["rerun_of"] for t in done if "rerun_of" in t.user_attrs]
    assert len(shared) == len(set(shared)), shared

    def original(t):
        while "rerun_of" in t.user_attrs:
            t = by_number[t.user_attrs["rerun_of"]]
        return t.number

    lineage = [original(t) for t in done]
    assert len(lineage) == len(set(lineage)), lineage
