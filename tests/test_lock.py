"""The driver lock (nas.search.lock) on SQLite: one driver per study, kept in the study's storage.
Cheap (no search, no Ray): runs on every machine; tests/test_postgres.py runs it through `nas search`."""
import subprocess
import threading
import time

import pytest
import sqlalchemy as sa

from nas.errors import UserError
from nas.search.lock import DriverLock, db_now, driver_lock, lock_table, open_engine, this_host


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'db' / 'study.db'}"


def rows(url):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return {r.study_name: r for r in c.execute(sa.select(lock_table))}
    finally:
        engine.dispose()


def plant(url, study="s", host="other-host", pid=4242, age_s=0.0):
    """A lock row as another driver would have left it, its heartbeat `age_s` old."""
    engine = open_engine(url)
    with engine.begin() as c:
        now = db_now(c)
        c.execute(sa.delete(lock_table).where(lock_table.c.study_name == study))
        c.execute(sa.insert(lock_table).values(study_name=study, holder="theirs", host=host, pid=pid,
                                               acquired=now - age_s, heartbeat=now - age_s))
    engine.dispose()


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_acquire_records_the_holder_and_release_deletes_it(url, tmp_path):
    with driver_lock(url, "s", tmp_path / "folder") as lock:
        assert (tmp_path / "folder").is_dir()  # the study's folder, as before
        row = rows(url)["s"]
        assert (row.host, row.pid, row.holder) == (this_host(), lock.pid, lock.holder)
        assert lock._thread.daemon and lock._thread.is_alive()
        thread = lock._thread
    assert "s" not in rows(url) and not thread.is_alive()


def test_a_live_holder_on_another_machine_is_refused_with_one_line(url):
    plant(url, age_s=5)
    with pytest.raises(UserError) as e:
        DriverLock(url, "s", ttl_s=60).acquire()
    msg = str(e.value)
    assert "\n" not in msg and "pid 4242 on other-host" in msg and "heartbeat 5 s ago" in msg
    assert "expires in 55 s" in msg and "nas resume s" in msg
    assert rows(url)["s"].holder == "theirs"  # untouched
    with driver_lock(url, "another-study"):  # a lock is per study
        pass


def test_an_expired_holder_is_taken_over(url):
    plant(url, age_s=61)
    with driver_lock(url, "s", ttl_s=60) as lock:
        assert rows(url)["s"].holder == lock.holder
        assert lock.previous.host == "other-host" and "no heartbeat for over 60 s" in lock.describe_previous()


def test_a_dead_driver_on_this_machine_is_taken_over_at_once(url):
    plant(url, host=this_host(), pid=dead_pid(), age_s=0)  # killed a moment ago: heartbeat fresh
    with driver_lock(url, "s") as lock:
        assert rows(url)["s"].holder == lock.holder and "(gone)" in lock.describe_previous()


def test_a_live_driver_on_this_machine_is_refused(url):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        plant(url, host=this_host(), pid=sleeper.pid)
        with pytest.raises(UserError, match=f"pid {sleeper.pid} on {this_host()}"):
            DriverLock(url, "s").acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with driver_lock(url, "s"):  # now it is dead
        pass


def test_a_second_lock_in_the_same_process_is_refused(url):
    with driver_lock(url, "s"):
        with pytest.raises(UserError, match="another driver"):
            DriverLock(url, "s").acquire()


def test_acquisition_is_atomic_one_of_many_racing_drivers_wins(url):
    open_engine(url).dispose()  # the table exists: the race is on the row
    barrier, results = threading.Barrier(8), {}

    def race(i):
        lock = DriverLock(url, "s", host=f"host-{i}")
        barrier.wait()
        try:
            results[i] = lock.acquire()
        except UserError as e:
            results[i] = e

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results.values() if isinstance(r, DriverLock)]
    assert len(won) == 1 and len(results) == 8, results
    assert rows(url)["s"].holder == won[0].holder
    won[0].release()


def test_the_heartbeat_advances_and_stops_at_release(url):
    with driver_lock(url, "s", ttl_s=2, heartbeat_s=0.1):
        first = rows(url)["s"].heartbeat
        time.sleep(0.5)
        assert rows(url)["s"].heartbeat > first
    assert not [t for t in threading.enumerate() if t.name == "driver-lock-s"]


def test_released_on_errors_and_ctrl_c(url):
    for exc in (UserError("bad"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with driver_lock(url, "s"):
                raise exc
        assert "s" not in rows(url)


def test_storage_down_warns_and_the_search_goes_on(url):
    warnings = []
    with driver_lock(url, "s", ttl_s=2, heartbeat_s=0.05, warn=warnings.append) as lock:
        with lock.engine.begin() as c:
            c.execute(sa.text(f"DROP TABLE {lock_table.name}"))  # the heartbeat's UPDATE fails
        time.sleep(0.3)
        assert lock._thread.is_alive()
    assert any("cannot write the driver lock's heartbeat" in w for w in warnings), warnings
    assert len([w for w in warnings if "heartbeat" in w]) == 1  # said once, not every beat


def test_a_lock_taken_over_after_its_ttl_warns_its_old_holder(url):
    warnings = []
    with driver_lock(url, "s", ttl_s=1, heartbeat_s=0.05, warn=warnings.append):
        plant(url, age_s=0)  # another driver took the study (as if this one had stalled past the TTL)
        time.sleep(0.3)
        assert rows(url)["s"].holder == "theirs"
    assert any("another driver took the lock" in w for w in warnings), warnings
    assert rows(url)["s"].holder == "theirs"  # its release does not delete the new holder's row


def test_a_bad_storage_url_is_one_line(tmp_path):
    for bad in ("nonsense", "nosuchdb://x/y"):
        with pytest.raises(UserError, match="cannot open storage") as e:
            DriverLock(bad, "s").acquire()
        assert "\n" not in str(e.value)


def test_an_unreachable_postgres_storage_is_one_line_and_status_2(tmp_path, monkeypatch, capsys):
    from nas.cli import main
    from tests.searching import FAST, SPACE

    monkeypatch.chdir(tmp_path)
    bad = "postgresql+psycopg2://postgres@127.0.0.1:1/x"  # nothing listens on port 1
    for argv in (["search", str(SPACE), "--budget", "50ms", "--storage", bad, *FAST],
                 ["resume", "s", "--storage", bad], ["status", "s", "--storage", bad]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "cannot open storage" in err and "127.0.0.1" in err, err
