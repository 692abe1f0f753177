"""PostgreSQL as the study storage, through `nas` as a user runs it: a search, status and export; a
driver SIGKILLed and resumed; the driver lock refusing a driver of another machine until its heartbeat
is older than the TTL.

Needs a server: $NAS_TEST_POSTGRES (`eval "$(.ci/postgres start)"` starts a throw-away one; .ci/run
does). Without it the tests skip, saying so, except in CI (CI=true), where they fail. The module
works in a database of its own, created here and dropped at the end, so reruns never collide.
"""
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from nas.cli import main
from nas.models import build_model, load_arch
from nas.search.lock import DriverLock, db_now, lock_table, open_engine
from nas.search.study import evaluated, is_evaluated

from tests.helpers import require_postgres
from tests.searching import FAST, SPACE

SEARCH = ["--budget", "50ms", "--workers", "1", "--cpus-per-trial", "1", *FAST]


@pytest.fixture(scope="module")
def pg():
    """A fresh database on the test server, dropped afterwards: its URL."""
    admin_url = sa.make_url(require_postgres())
    name = f"ghost_nas_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def lock_rows(url: str) -> dict:
    engine = open_engine(url)
    try:
        with engine.connect() as c:
            return {r.study_name: r for r in c.execute(sa.select(lock_table))}
    finally:
        engine.dispose()


def test_search_then_status_and_export_against_postgres(pg, tmp_path, monkeypatch, ray_cluster, capsys):
    monkeypatch.chdir(tmp_path)
    name = "pg-search"
    assert main(["search", str(SPACE), "--trials", "2", "--study", name, "--storage", pg, *SEARCH]) == 0

    study = optuna.load_study(study_name=name, storage=pg)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and len(evaluated(study)) == 2 and len(study.trials) == 2
    for t in done:
        assert t.user_attrs["trained"] is True and t.user_attrs["latency_ms"] > 0
        assert t.user_attrs["latency_source"] == "measured" and build_model(t.user_attrs["arch"])
    identity = study.user_attrs["identity"]
    assert identity["budget_ms"] == 50.0 and identity["epochs"] == 2 and identity["imgsz"] == 64
    assert study.user_attrs["config"]["storage"] == pg and study.user_attrs["space_hash"] == identity["space_hash"]
    assert name not in lock_rows(pg)  # released
    assert (tmp_path / "studies" / name / "ray").is_dir()  # Ray's files in the study folder, as with SQLite
    assert not (tmp_path / "studies" / name / "study.db").exists()

    capsys.readouterr()
    assert main(["status", name, "--storage", pg]) == 0
    assert "evaluated 2/2" in capsys.readouterr().out
    assert main(["export", name, "--storage", pg, "-o", "best.yaml"]) == 0
    arch = load_arch("best.yaml")
    assert arch["meta"]["study"] == name and arch["meta"]["trial"] in {t.number for t in done}
    assert sum(p.numel() for p in build_model(arch).parameters()) == arch["meta"]["params"]


def test_sigkill_mid_trial_then_resume_against_postgres(pg, tmp_path, monkeypatch, ray_cluster, capsys):
    monkeypatch.chdir(tmp_path)
    name, target = "pg-chaos", 1  # the killed trial, re-run: 1 evaluated
    cmd = [sys.executable, "-m", "nas", "search", str(SPACE), "--trials", str(target), "--study", name,
           "--storage", pg, *SEARCH]
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    running, deadline = None, time.time() + 150
    while running is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name=name, storage=pg)
        except KeyError:
            continue
        running = next((t for t in study.trials if t.state == TrialState.RUNNING and t.user_attrs.get("trained")),
                       None)  # handed to Ray
    held = lock_rows(pg).get(name)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its Ray processes
    proc.wait()
    assert running is not None, log.read_text()[-3000:]
    assert held is not None and held.pid == proc.pid  # the killed driver's lock is left behind

    capsys.readouterr()
    assert main(["resume", name, "--storage", pg]) == 0  # taken over at once: same host, pid gone
    err = capsys.readouterr().err
    assert f"from pid {proc.pid}" in err and "re-running trial" in err

    study = optuna.load_study(study_name=name, storage=pg)
    trials = study.trials
    assert len([t for t in trials if is_evaluated(t)]) == target
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    killed = trials[running.number]
    assert killed.state == TrialState.FAIL and "interrupted" in killed.user_attrs["fail_reason"]
    reruns = [t for t in trials if t.user_attrs.get("rerun_of") == running.number]
    assert len(reruns) == 1 and reruns[0].params == running.params and is_evaluated(reruns[0])
    assert name not in lock_rows(pg)


def test_a_driver_of_another_machine_is_refused_until_its_heartbeat_expires(pg, tmp_path, monkeypatch,
                                                                            ray_cluster, capsys):
    monkeypatch.chdir(tmp_path)
    name = "pg-locked"
    engine = open_engine(pg)

    def plant(age_s):
        with engine.begin() as c:
            now = db_now(c)
            c.execute(sa.delete(lock_table).where(lock_table.c.study_name == name))
            c.execute(sa.insert(lock_table).values(study_name=name, holder="theirs", host="other-host", pid=777,
                                                   acquired=now - age_s, heartbeat=now - age_s))

    args = ["search", str(SPACE), "--trials", "1", "--study", name, "--storage", pg, *SEARCH]
    plant(age_s=3)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("nas search: error:"), err
    assert "pid 777 on other-host" in err and "heartbeat 3 s ago" in err and "expires in 57 s" in err
    with pytest.raises(KeyError):  # refused before the study was opened
        optuna.load_study(study_name=name, storage=pg)

    plant(age_s=61)  # the TTL is 60 s: that driver is presumed dead
    assert main(args) == 0
    assert "took over the driver lock" in capsys.readouterr().err
    assert len(evaluated(optuna.load_study(study_name=name, storage=pg))) == 1
    assert name not in lock_rows(pg)
    engine.dispose()


def test_acquisition_is_atomic_on_postgres(pg):
    open_engine(pg).dispose()
    barrier, results = threading.Barrier(8), {}

    def race(i):
        lock = DriverLock(pg, "pg-race", host=f"host-{i}")
        barrier.wait()
        try:
            results[i] = lock.acquire()
        except Exception as e:  # noqa: BLE001 - a refusal is a UserError; anything else fails below
            results[i] = e

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results.values() if isinstance(r, DriverLock)]
    assert len(won) == 1, results
    assert all("another driver" in str(r) for r in results.values() if r is not won[0]), results
    assert lock_rows(pg)["pg-race"].holder == won[0].holder
    won[0].release()
    assert "pg-race" not in lock_rows(pg)
