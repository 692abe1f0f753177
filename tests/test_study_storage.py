"""Opening a study's storage while another process opens it for the first time.

Optuna creates its schema on first open, without a lock: two processes opening a new SQLite file
at the same moment collide ("table studies already exists", or the schema version stamped twice).
A driver starting while `nas status` or a dashboard polls must not fail on that."""
import multiprocessing

from nas.errors import UserError
from nas.search.study import _storage


def _open(url, barrier, results):
    barrier.wait()
    try:
        _storage(url)
        results.put("ok")
    except UserError as e:
        results.put(str(e))


def test_two_processes_opening_a_new_study_storage_at_once_both_succeed(tmp_path):
    ctx = multiprocessing.get_context("fork")  # optuna is imported already: the race is on the open alone
    results = ctx.Queue()
    rounds = 10  # without the retry, about 2 opens in 5 failed on 2 cores
    for i in range(rounds):
        url = f"sqlite:///{tmp_path / f'study-{i}.db'}"
        barrier = ctx.Barrier(2)
        procs = [ctx.Process(target=_open, args=(url, barrier, results)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    outcomes = [results.get(timeout=5) for _ in range(2 * rounds)]
    assert outcomes == ["ok"] * (2 * rounds), [o for o in outcomes if o != "ok"]
