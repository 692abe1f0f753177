"""optuna-dashboard reads a ghost-nas study as the search leaves it: names, trials, states, user attributes.

A real two-trial search through the CLI makes the study; the dashboard is then started as the README
says (`optuna-dashboard sqlite:///studies/NAME/study.db`, from the search's folder) on a free
loopback port, and the study is read back through its JSON API (/api/studies, /api/studies/<id>).
"""
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from optuna.trial import TrialState

from nas.cli import main
from tests.searching import FAST, SPACE, load, storage

if importlib.util.find_spec("optuna_dashboard") is None:  # SKIP without it, FAIL in CI (it is in the test extra)
    _missing = "optuna-dashboard is not installed (pip install -e '.[test]' or '.[dashboard]')"
    if os.environ.get("CI") == "true":
        raise ImportError(f"{_missing} (CI=true: it must be there)")
    pytest.skip(_missing, allow_module_level=True)

NAME = "dash"
START_TIMEOUT_S = 30.0
# A loopback request must never go through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory) -> Path:
    """A folder holding studies/dash/study.db, made by a real 2-trial search."""
    folder = tmp_path_factory.mktemp("dashboard")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        args = ["search", str(SPACE), "--budget", "1s", "--study", NAME, "--trials", "2", "--workers", "1", *FAST]
        assert main(args) == 0
    return folder


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10.0):
    with _OPENER.open(url, timeout=timeout) as r:
        assert r.status == 200, url
        return json.loads(r.read())


@pytest.fixture(scope="module")
def dashboard(search_dir):
    """Base URL of an optuna-dashboard serving the study; the server is always stopped afterwards."""
    exe = Path(sys.executable).with_name("optuna-dashboard")
    assert exe.is_file(), f"no optuna-dashboard console script next to {sys.executable}"
    port = _free_port()
    log = (search_dir / "dashboard.log").open("wb")
    proc = subprocess.Popen([str(exe), storage(NAME), "--host", "127.0.0.1", "--port", str(port)],
                            cwd=search_dir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"optuna-dashboard exited with {proc.returncode}:\n"
                            + (search_dir / "dashboard.log").read_text(errors="replace")[-2000:])
            try:
                _get(f"{base}/api/meta", timeout=2.0)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"optuna-dashboard did not answer on {base} within {START_TIMEOUT_S:.0f} s:\n"
                                + (search_dir / "dashboard.log").read_text(errors="replace")[-2000:])
                time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _attrs(serialized: list[dict]) -> dict[str, str]:
    return {a["key"]: a["value"] for a in serialized}


def test_dashboard_lists_the_study_with_its_trials_and_user_attributes(search_dir, dashboard, monkeypatch):
    monkeypatch.chdir(search_dir)
    study = load(NAME)
    assert len(study.trials) == 2

    summaries = _get(f"{dashboard}/api/studies")["study_summaries"]
    listed = {s["study_name"]: s for s in summaries}
    assert NAME in listed, listed.keys()
    summary = listed[NAME]
    assert summary["directions"] == ["maximize"]
    study_attrs = _attrs(summary["user_attrs"])
    assert float(study_attrs["budget_ms"]) == study.user_attrs["budget_ms"] == 1000.0
    assert json.loads(study_attrs["identity"]) == study.user_attrs["identity"]  # the search's definition

    detail = _get(f"{dashboard}/api/studies/{summary['study_id']}")
    assert detail["name"] == NAME
    served = {t["number"]: t for t in detail["trials"]}
    assert sorted(served) == [t.number for t in study.trials]
    for t in study.trials:
        s = served[t.number]
        assert s["state"] == t.state.name.capitalize()  # "Complete", "Pruned", ...
        attrs = _attrs(s["user_attrs"])
        assert set(t.user_attrs) == set(attrs)
        assert float(attrs["latency_ms"]) == pytest.approx(t.user_attrs["latency_ms"])
        assert attrs["trained"] == str(t.user_attrs["trained"])
        assert attrs["latency_source"] == "measured"
        # dicts come back as JSON (the dashboard cuts values at 1024 characters)
        assert attrs["arch"] == json.dumps(t.user_attrs["arch"])[:1024]
        if t.state == TrialState.COMPLETE and t.user_attrs["trained"]:
            assert json.loads(attrs["worker"]) == t.user_attrs["worker"]
            assert float(attrs["map"]) == pytest.approx(t.user_attrs["map"])
            assert s["values"] == pytest.approx(t.values)
        assert t.intermediate_values
        # the per-epoch mAP the pruner sees, as the dashboard plots it
        assert {v["step"]: v["value"] for v in s["intermediate_values"]} == pytest.approx(t.intermediate_values)
    # the union of user attribute keys is what the dashboard's trial table offers as columns
    columns = {c["key"] for c in detail["union_user_attrs"]}
    assert {"latency_ms", "arch", "trained", "worker", "map"} <= columns
