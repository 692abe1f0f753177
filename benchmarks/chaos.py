"""Chaos test of the search: SIGKILL the driver at random moments, resume, check nothing is lost.

    python benchmarks/chaos.py --kills 5 --trials 8 --seed 0

Runs `nas search` on a tiny space (tests/data/tiny_space.yaml, 64 px, fast proxy training) in a
fresh folder (--workdir, default a new temporary one; `studies/` is created there) with a fresh,
empty latency cache, so that the first run has to calibrate the latency predictor. The driver is
started in a session of its own and killed with SIGKILL on its whole process group (it and its Ray
processes) at `--kills` moments, after each of which the same command is run again (it resumes the
study); the run after the last kill must reach the target. The moments, drawn from `--seed`:

- calibration: the driver has printed "calibrating" and no trial exists yet (always the first kill).
  Drawn again once the table is calibrated, the driver no longer calibrates: the kill then lands
  in its start-up (imports, study recovery, Ray start) before it starts a new trial ("startup");
- mid-trial: a trial is RUNNING, handed to Ray (user attribute trained=True), and a random fraction
  (0.1-0.9) of the expected trial time has passed since it was (expected: the median wall time of
  the trials evaluated so far, lowered to any shorter trial seen go by);
- after-trial: 0.0-1.0 s after the number of evaluated trials grows.

Every kill is logged (kind, time, trial counts at the kill and after the next run) and the study is
read after each kill (the driver dead, so the read is exact). Invariants, checked at the end on a
fresh read of the study (evaluated = PRUNED, or COMPLETE with trained=True):
- the last run exits 0 and the study holds exactly --trials evaluated trials, none RUNNING or WAITING;
- every FAIL trial's fail_reason says "interrupted", every trial left RUNNING by a kill ended FAIL;
- nothing lost: each COMPLETE/PRUNED trial seen after a kill is still there with the same number,
  state, values and params;
- nothing duplicated: each interrupted trial is queued again exactly once with the same params
  (rerun_of), no two evaluated trials share a rerun_of or descend from the same original trial, and
  the count of evaluated trials never exceeded the target while polling (every 0.1 s).
Exit status: 0 all held, 1 an invariant failed, 3 the harness could not place a planned kill
(moment missed, or a run timed out). `--json OUT` writes the whole report, snapshots included
(tests/test_chaos.py reads it).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SPACE = ROOT / "tests" / "data" / "tiny_space.yaml"
# 128 images (32 steps a trial): on a quiet machine 16 images trained in a fraction of a second, too
# short for the watcher (polling every POLL_S) to see a trial RUNNING and cut it off mid-trial.
FAST = ["--workers", "1", "--cpus-per-trial", "1", "--data", "synthetic:n=128,val=8,size=64", "--epochs", "2",
        "--imgsz", "64", "--batch", "8"]
KINDS = ("calibration", "mid-trial", "after-trial")
POLL_S = 0.1
# --quick-calibration: the same `nas search`, in a driver whose latency table is built the way
# tests/test_search.py builds it for the oracle: 2 calibration architectures instead of 8, short
# timing bursts, each architecture exported and timed once (ONNX export with its optimizer is most
# of a calibration), no waiting for a quiet machine. The calibration moment is the same (the driver
# calibrates, no trial exists yet), only shorter, for the test's sake; the benchmark runs the real one.
QUICK = """import sys
import evaluators.latency.local as B
import evaluators.latency.predictor as P
import nas.search.latency as L
from evaluators.latency import measure_latency
from nas.models import build_model
for module, name in ((L, "CALIBRATION_ARCHS"), (B, "time_blocks"), (P.LatencyPredictor, "wait_quiet"),
                     (P.LatencyPredictor, "measure")):
    if not hasattr(module, name):
        sys.exit(f"chaos --quick-calibration: {module.__name__}.{name} is gone: update benchmarks/chaos.py")
quick = dict(warmup=2, runs=5, min_time_s=0.0)
time_blocks = B.time_blocks
B.time_blocks = lambda keys, target, **kw: time_blocks(keys, target, **{**kw, "rounds": 1, **quick})
P.LatencyPredictor.wait_quiet = lambda self: False
measured = {}  # calibration measures each architecture in 2 passes: export and time it once


def measure(self, arch, **kw):
    key = repr(arch)
    if key not in measured:
        t = self.target
        measured[key] = measure_latency(build_model(arch), t.imgsz, t.device, t.backend, t.threads, **quick).median_ms
    return measured[key]


P.LatencyPredictor.measure = measure
L.CALIBRATION_ARCHS = 2
from nas.cli import main
sys.exit(main())
"""
FINISHED = ("COMPLETE", "PRUNED")


# -- the plan -----------------------------------------------------------------------------------------

def plan_kills(kills: int, rng: random.Random) -> list[str]:
    """The first kill during calibration; the rest drawn from the three kinds, with mid-trial and
    after-trial at least once each (calibration already is)."""
    if kills <= 0:
        return []
    rest = kills - 1
    must = ["mid-trial", "after-trial"][:rest]
    drawn = must + [rng.choice(KINDS) for _ in range(rest - len(must))]
    rng.shuffle(drawn)
    return ["calibration", *drawn]


# -- the study, read -------------------------------------------------------------------------------------

def is_evaluated(t: dict) -> bool:
    return t["state"] == "PRUNED" or (t["state"] == "COMPLETE" and t["user_attrs"].get("trained") is True)


def trial_record(t) -> dict:
    """A FrozenTrial as plain JSON-able data (what the invariants compare)."""
    return {"number": t.number, "state": t.state.name, "values": list(t.values) if t.values is not None else None,
            "params": dict(t.params), "intermediate": {str(k): v for k, v in t.intermediate_values.items()},
            "user_attrs": {k: t.user_attrs[k] for k in ("trained", "rerun_of", "fail_reason", "wall_s", "train_s")
                           if k in t.user_attrs}}


def read_study(db: Path, name: str) -> list[dict] | None:
    """All trials of the study as records, or None while there is no study (yet) or the database is
    locked. For reads with no driver alive (before a run, after a kill): a read-write connection,
    which rolls back a transaction the kill cut off (a hot journal) before reading; it creates no
    table (skip_table_creation). Beside a live driver, Watch reads through a read-only one."""
    import optuna
    import sqlalchemy.exc

    if not db.exists():
        return None
    try:
        storage = optuna.storages.RDBStorage(f"sqlite:///{db}", skip_table_creation=True,
                                             skip_compatibility_check=True)
        try:
            study = optuna.load_study(study_name=name, storage=storage)
            return [trial_record(t) for t in study.get_trials(deepcopy=False)]
        finally:
            storage.engine.dispose()
    except KeyError:
        return None  # the study is not created yet
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.DatabaseError, optuna.exceptions.StorageInternalError):
        return None  # database is locked / tables not created yet: read again at the next poll


class Watch:
    """Polls the study every POLL_S seconds through one read-only storage, kept while it works."""

    def __init__(self, db: Path, name: str):
        self.db, self.name = db, name
        self.study = self.storage = None
        self.max_evaluated = 0

    def trials(self) -> list[dict] | None:
        import optuna
        import sqlalchemy.exc

        try:
            if self.study is None:
                if not self.db.exists():
                    return None
                self.storage = optuna.storages.RDBStorage(f"sqlite:///file:{self.db}?mode=ro&uri=true",
                                                          skip_table_creation=True, skip_compatibility_check=True)
                self.study = optuna.load_study(study_name=self.name, storage=self.storage)
            trials = [trial_record(t) for t in self.study.get_trials(deepcopy=False)]
        except KeyError:
            self.close()
            return None
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.DatabaseError, optuna.exceptions.StorageInternalError):
            self.close()  # locked, or a hot journal a read-only connection cannot roll back: start afresh
            return None
        self.max_evaluated = max(self.max_evaluated, sum(map(is_evaluated, trials)))
        return trials

    def close(self) -> None:
        if self.storage is not None:
            self.storage.engine.dispose()
        self.study = self.storage = None


def counts(trials: list[dict] | None) -> dict:
    trials = trials or []
    c = {"trials": len(trials), "evaluated": sum(map(is_evaluated, trials))}
    for state in ("COMPLETE", "PRUNED", "RUNNING", "WAITING", "FAIL"):
        c[state.lower()] = sum(t["state"] == state for t in trials)
    return c


def cache_calibrated(folder: Path) -> bool:
    """Does the latency cache hold a calibration already (then the driver does not calibrate)?"""
    for f in folder.glob("latency-*.json"):
        try:
            if json.loads(f.read_text()).get("calibrations"):
                return True
        except (OSError, ValueError):
            pass
    return False


# -- processes -------------------------------------------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return [raw[:raw.rindex(")") + 1], *raw[raw.rindex(")") + 2:].split()]  # comm may hold spaces


def process_tree(root: int) -> dict[int, str]:
    """pid -> command line of `root`, its descendants and every process of its session."""
    parents, session = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))):
            parents[int(entry.name)] = int(st[2])  # fields after comm: state, ppid, pgrp, session
            session[int(entry.name)] = int(st[4])
    keep = {p for p, s in session.items() if s == root} | {root}
    grew = True
    while grew:
        more = {p for p, pp in parents.items() if pp in keep} - keep
        keep |= more
        grew = bool(more)
    out = {}
    for p in keep:
        try:
            out[p] = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
        except OSError:
            pass
    return out


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[1] != "Z"


class Run:
    """One `nas search` invocation: its own session, stderr read line by line (timestamped)."""

    def __init__(self, cmd: list[str], cwd: Path, logs: Path, index: int, t0: float):
        self.index, self.t0, self.lines = index, t0, []
        self.calibrating_at = self.ready_at = None
        self.out = open(logs / f"run{index}.out", "w")
        self.err = open(logs / f"run{index}.err", "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=subprocess.PIPE, text=True, errors="replace")
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            now = time.monotonic()
            self.lines.append(line)
            self.err.write(f"[{now - self.t0:8.2f}] {line}")
            self.err.flush()
            if "calibrating" in line and self.calibrating_at is None:
                self.calibrating_at = now
            if "latency predictor ready" in line and self.ready_at is None:
                self.ready_at = now

    def finish(self) -> None:
        self.reader.join(timeout=10)
        self.out.close()
        self.err.close()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def kill(self, orphan_wait: float = 10.0) -> dict:
        """SIGKILL the whole process group. Processes of the driver's tree that were not in it (Ray
        starts its workers in process groups of their own) are given `orphan_wait` seconds to notice
        and exit by themselves, then killed: both are reported."""
        tree = process_tree(self.proc.pid)
        at = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        outside = {p: cmd for p, cmd in tree.items() if p != self.proc.pid and alive(p)}
        gone: dict[int, float] = {}
        while len(gone) < len(outside) and time.monotonic() < at + orphan_wait:
            time.sleep(0.1)
            gone.update({p: time.monotonic() - at for p in outside if p not in gone and not alive(p)})
        escaped = []
        for p, cmd in outside.items():
            if p in gone:
                escaped.append({"pid": p, "cmd": cmd, "exited_after_s": round(gone[p], 1)})
            else:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                escaped.append({"pid": p, "cmd": cmd, "killed_after_s": round(time.monotonic() - at, 1)})
        self.finish()
        return {"at": at, "processes": len(tree), "escaped": escaped}


# -- the moments ----------------------------------------------------------------------------------------

class Missed(Exception):
    """The driver ended (or timed out) before the planned moment came."""


def wait_moment(kind: str, run: Run, watch: Watch, rng: random.Random, history: dict, before: list[dict],
                timeout: float) -> dict:
    """Block until the moment `kind` of `run` has come; returns what triggered it (for the log).
    Raises Missed if the driver exits first or `timeout` passes."""
    deadline = run.started + timeout
    started_numbers = {t["number"] for t in before if t["state"] != "WAITING"}
    evaluated0 = sum(map(is_evaluated, before))
    info: dict = {}
    if kind == "calibration":
        delay = rng.uniform(0.0, history["calibration_delay_max"])
        info = {"delay_s": round(delay, 2)}
    elif kind == "startup":
        delay = rng.uniform(1.0, max(1.5, 0.8 * history["startup_s"]))
        info = {"delay_s": round(delay, 2)}
    elif kind == "mid-trial":
        fraction = rng.uniform(0.1, 0.9)
        info = {"fraction": round(fraction, 2)}
        first_seen: dict[int, float] = {}
    else:
        delay = rng.uniform(0.0, 1.0)
        info = {"delay_s": round(delay, 2)}
        grew_at = None
    while True:
        now = time.monotonic()
        if run.proc.poll() is not None:
            raise Missed(f"the driver exited (status {run.proc.returncode}) before the {kind} moment")
        if now > deadline:
            raise Missed(f"no {kind} moment within {timeout:.0f} s")
        trials = watch.trials()
        if trials is not None:
            new = [t for t in trials if t["state"] != "WAITING" and t["number"] not in started_numbers]
            if new and "first_trial_s" not in history["run"]:
                history["run"]["first_trial_s"] = now - run.started
        if kind == "calibration":
            if run.calibrating_at is not None and now >= run.calibrating_at + delay:
                return {**info, "since_line_s": round(now - run.calibrating_at, 2)}
        elif kind == "startup":
            if now >= run.started + delay:
                return info
        elif kind == "mid-trial" and trials is not None:
            expected = history["trial_s"]
            for t in trials:  # started by this run: one a previous kill left RUNNING is not running now
                if (t["state"] == "RUNNING" and t["user_attrs"].get("trained") is True
                        and t["number"] not in started_numbers):
                    first_seen.setdefault(t["number"], now)
            for number, seen in list(first_seen.items()):
                t = next((x for x in trials if x["number"] == number), None)
                if t is None or t["state"] != "RUNNING":  # it ended first: expect shorter trials
                    history["trial_s"] = min(history["trial_s"], max(0.3, now - seen))
                    del first_seen[number]
                elif now - seen >= fraction * expected:
                    return {**info, "trial": number, "expected_s": round(expected, 2),
                            "elapsed_s": round(now - seen, 2)}
        elif kind == "after-trial" and trials is not None:
            n = sum(map(is_evaluated, trials))
            if grew_at is None and n > evaluated0:
                grew_at = now
                info["evaluated_then"] = n
            if grew_at is not None and now >= grew_at + delay:
                return {**info, "since_growth_s": round(now - grew_at, 2)}
        time.sleep(POLL_S)


def judge_hit(kind: str, run: Run, killed: dict, trigger: dict, before: list[dict], after: list[dict] | None) -> bool:
    """Did the kill land in its moment? Judged on the study as the kill left it."""
    after = after or []
    started_numbers = {t["number"] for t in before if t["state"] != "WAITING"}
    new = [t for t in after if t["state"] != "WAITING" and t["number"] not in started_numbers]
    if kind == "calibration":
        return (run.calibrating_at is not None and (run.ready_at is None or run.ready_at > killed["at"])
                and not after)
    if kind == "startup":
        return not new
    if kind == "mid-trial":
        t = next((x for x in after if x["number"] == trigger.get("trial")), None)
        return (t is not None and t["number"] not in started_numbers and t["state"] == "RUNNING"
                and t["user_attrs"].get("trained") is True)
    return sum(map(is_evaluated, after)) > sum(map(is_evaluated, before))


# -- the invariants ---------------------------------------------------------------------------------------

def same_record(a: dict, b: dict) -> bool:
    def norm(v):
        return None if v is None else [("nan" if isinstance(x, float) and math.isnan(x) else x) for x in v]
    return (a["state"] == b["state"] and norm(a["values"]) == norm(b["values"]) and a["params"] == b["params"])


def check(final: list[dict], kills: list[dict], target: int, max_evaluated: int, last_rc: int | None) -> dict:
    """Every invariant, on the final read of the study; `problems` lists what failed."""
    problems = []
    by_number = {t["number"]: t for t in final}
    evaluated = [t for t in final if is_evaluated(t)]
    if last_rc != 0:
        problems.append(f"the last run exited with status {last_rc}, not 0")
    if len(evaluated) != target:
        problems.append(f"{len(evaluated)} evaluated trials, target {target}")
    if max_evaluated > target:
        problems.append(f"{max_evaluated} evaluated trials seen while polling, over the target {target}")
    for state in ("RUNNING", "WAITING"):
        left = [t["number"] for t in final if t["state"] == state]
        if left:
            problems.append(f"trial(s) {left} left {state}")
    fails = [t for t in final if t["state"] == "FAIL"]
    for t in fails:
        if "interrupted" not in str(t["user_attrs"].get("fail_reason", "")):
            problems.append(f"trial {t['number']} FAIL not interrupted: {t['user_attrs'].get('fail_reason')!r}")
    lost = {}  # number -> the first kill after which it was seen finished
    for k in kills:
        for old in k["snapshot"]:
            if old["state"] not in FINISHED or old["number"] in lost:
                continue
            now = by_number.get(old["number"])
            if now is None or not same_record(old, now):
                lost[old["number"]] = {"kill": k["index"], "before": old, "after": now}
        for number in k["running"]:
            now = by_number.get(number)
            if now is None or now["state"] != "FAIL":
                problems.append(f"trial {number}, RUNNING at kill {k['index']}, ended "
                                f"{now and now['state']} instead of FAIL (interrupted)")
    lost = list(lost.values())
    for x in lost:
        problems.append(f"trial {x['before']['number']} (after kill {x['kill']}) lost or changed: "
                        f"{x['before']} -> {x['after']}")
    duplicates = []
    reruns: dict[int, list[int]] = {}
    for t in final:
        if "rerun_of" in t["user_attrs"]:
            reruns.setdefault(t["user_attrs"]["rerun_of"], []).append(t["number"])
    for t in fails:
        got = reruns.get(t["number"], [])
        if len(got) != 1:
            problems.append(f"interrupted trial {t['number']} queued again {len(got)} times (trials {got}), not once")
    for old, news in reruns.items():
        orig = by_number.get(old)
        for n in news:
            if orig is None or not orig["params"].items() <= by_number[n]["params"].items():
                problems.append(f"trial {n} (rerun_of {old}) has other params than it: "
                                f"{orig and orig['params']} -> {by_number[n]['params']}")

    def root(t: dict) -> int:
        seen = set()
        while "rerun_of" in t["user_attrs"] and t["number"] not in seen:
            seen.add(t["number"])
            t = by_number.get(t["user_attrs"]["rerun_of"], {"number": t["user_attrs"]["rerun_of"], "user_attrs": {}})
        return t["number"]

    shared: dict[int, list[int]] = {}
    for t in evaluated:
        if "rerun_of" in t["user_attrs"]:
            shared.setdefault(t["user_attrs"]["rerun_of"], []).append(t["number"])
    for old, news in shared.items():
        if len(news) > 1:
            duplicates.append({"rerun_of": old, "evaluated": news})
    lineage: dict[int, list[int]] = {}
    for t in evaluated:
        lineage.setdefault(root(t), []).append(t["number"])
    for r, numbers in lineage.items():
        if len(numbers) > 1:
            duplicates.append({"original": r, "evaluated": numbers})
    for d in duplicates:
        problems.append(f"duplicated evaluation: {d}")
    return {"evaluated": len(evaluated), "target": target, "max_evaluated_seen": max_evaluated,
            "running": sum(t["state"] == "RUNNING" for t in final),
            "waiting": sum(t["state"] == "WAITING" for t in final),
            "fail": [{"number": t["number"], "reason": t["user_attrs"].get("fail_reason")} for t in fails],
            "lost": lost, "duplicates": duplicates, "problems": problems}


# -- the scenario -------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=5, help="SIGKILLs over the search (default 5)")
    ap.add_argument("--trials", type=int, default=8, help="the search's target, --trials (default 8)")
    ap.add_argument("--seed", type=int, default=0, help="draws the kill moments; also the search's --seed")
    ap.add_argument("--workdir", help="folder to run in (created; must be empty); default a new temporary one")
    ap.add_argument("--space", default=str(SPACE), help="search space (default tests/data/tiny_space.yaml)")
    ap.add_argument("--budget", default="1s", help="latency budget: generous, so every candidate is trained")
    ap.add_argument("--trial-guess", type=float, default=10.0,
                    help="expected seconds per trial before any is evaluated (default 10)")
    ap.add_argument("--calibration-delay", type=float, default=4.0,
                    help="a calibration kill comes 0..this many seconds after the 'calibrating' line (default 4)")
    ap.add_argument("--run-timeout", type=float, default=900.0, help="seconds one run may take (default 900)")
    ap.add_argument("--orphan-wait", type=float, default=10.0,
                    help="seconds a process of the driver that escaped the group kill may take to exit by "
                         "itself before it is killed (default 10)")
    ap.add_argument("--quick-calibration", action="store_true",
                    help="shorter calibration in the driver (2 architectures, no wait for a quiet machine): "
                         "for the test; the benchmark runs the real one")
    ap.add_argument("--json", metavar="OUT", help="write the report (kills, snapshots, checks) as JSON")
    args = ap.parse_args(argv)
    if args.kills < 1 or args.trials < 1 or args.kills > args.trials:
        ap.error("need 1 <= --kills <= --trials (an after-trial kill needs a trial to end)")

    rng = random.Random(args.seed)
    plan = plan_kills(args.kills, rng)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="nas-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        ap.error(f"--workdir {work} is not empty")
    logs, cache = work / "logs", work / "latency"
    logs.mkdir()
    space = str(Path(args.space).resolve())
    from evaluators.budget import format_budget, parse_budget

    study = f"{Path(space).stem}-{format_budget(parse_budget(args.budget))}"
    db = work / "studies" / study / "study.db"
    launch = ["-c", QUICK] if args.quick_calibration else ["-m", "nas"]
    cmd = [sys.executable, *launch, "search", space, "--budget", args.budget, "--trials", str(args.trials),
           "--seed", str(args.seed), *FAST, "--latency", "predicted", "--latency-cache", str(cache)]
    print(f"chaos: {args.kills} kills {plan}, target {args.trials} trials, seed {args.seed}, in {work}")
    print("command (cwd there): " + ("python -c QUICK " if args.quick_calibration else "python -m nas ")
          + " ".join(cmd[3:]), flush=True)

    t0 = time.monotonic()
    history = {"trial_s": args.trial_guess, "startup_s": 8.0, "calibration_delay_max": args.calibration_delay}
    kills, runs = [], []
    watch = Watch(db, study)
    harness_error = None
    last_rc = None
    for index in range(len(plan) + 1):
        before = read_study(db, study) or []
        run = Run(cmd, work, logs, index + 1, t0)
        history["run"] = {}
        calibrates = not cache_calibrated(cache)
        record = {"run": index + 1, "started_s": round(run.started - t0, 2), "counts_at_start": counts(before)}
        runs.append(record)
        if index == len(plan):  # the last run: let it finish, still polling (the target is never exceeded)
            while run.proc.poll() is None and time.monotonic() < run.started + args.run_timeout:
                watch.trials()
                time.sleep(POLL_S)
            if run.proc.poll() is None:
                run.kill(args.orphan_wait)
                harness_error = f"the last run did not finish within {args.run_timeout:.0f} s"
            else:
                run.finish()
            watch.close()
            last_rc = run.proc.returncode
            record.update(rc=last_rc, wall_s=round(time.monotonic() - run.started, 2),
                          resumed=("re-running trial" in run.stderr), calibrated=run.calibrating_at is not None)
            print(f"[{time.monotonic() - t0:7.1f} s] run {index + 1} (the last) exited {last_rc} after "
                  f"{record['wall_s']:.1f} s", flush=True)
            if kills:
                kills[-1]["after_next_run"] = counts(read_study(db, study))
            break
        planned = plan[index]
        kind = planned if planned != "calibration" or calibrates else "startup"
        try:
            trigger = wait_moment(kind, run, watch, rng, history, before, args.run_timeout)
        except Missed as e:
            if run.proc.poll() is None:
                run.kill(args.orphan_wait)
            run.finish()
            harness_error = f"kill {index + 1} ({kind}): {e}"
            record.update(rc=run.proc.returncode, wall_s=round(time.monotonic() - run.started, 2))
            print(f"[{time.monotonic() - t0:7.1f} s] {harness_error}", flush=True)
            last_rc = run.proc.returncode
            break
        killed = run.kill(args.orphan_wait)
        watch.close()
        after = read_study(db, study)
        hit = judge_hit(kind, run, killed, trigger, before, after)
        if kills:
            kills[-1]["after_next_run"] = counts(after)  # what the run after the previous kill did
        kill = {"index": index + 1, "planned": planned, "kind": kind, "hit": hit,
                "t_s": round(killed["at"] - t0, 2), "run_s": round(killed["at"] - run.started, 2), **trigger,
                "before": counts(before), "at_kill": counts(after), "processes": killed["processes"],
                "escaped": killed["escaped"],
                "running": [t["number"] for t in after or [] if t["state"] == "RUNNING"],
                "snapshot": [t for t in after or [] if t["state"] in FINISHED]}
        kills.append(kill)
        record.update(rc=run.proc.returncode, wall_s=round(killed["at"] - run.started, 2),
                      resumed=("re-running trial" in run.stderr), calibrated=run.calibrating_at is not None)
        if run.calibrating_at is not None and run.ready_at is not None:
            history["calibration_s"] = run.ready_at - run.calibrating_at
        if "first_trial_s" in history["run"] and run.calibrating_at is None:
            history["startup_s"] = history["run"]["first_trial_s"]
        done = [t for t in after or [] if is_evaluated(t) and "wall_s" in t["user_attrs"]]
        if done:
            history["trial_s"] = min(history["trial_s"], statistics.median(t["user_attrs"]["wall_s"] for t in done))
        a = kill["at_kill"]
        detail = ", ".join(f"{k} {v}" for k, v in trigger.items())
        print(f"[{kill['t_s']:7.1f} s] kill {index + 1}/{len(plan)} {kind}{'' if hit else ' (MISSED its moment)'} "
              f"at {kill['run_s']:.1f} s into run {index + 1} ({detail}): evaluated {kill['before']['evaluated']} -> "
              f"{a['evaluated']}, running {a['running']}, failed {a['fail']}, waiting {a['waiting']}; "
              f"{killed['processes']} processes killed"
              + "".join(f"; outside the group: {e['cmd'][:40]} ("
                        + (f"exited by itself after {e['exited_after_s']} s)" if "exited_after_s" in e
                           else f"still alive after {e['killed_after_s']} s: killed)") for e in killed["escaped"]),
              flush=True)
        if not hit:
            harness_error = harness_error or f"kill {index + 1} missed its {kind} moment"

    final = read_study(db, study) or []
    result = check(final, kills, args.trials, watch.max_evaluated, last_rc)
    problems = result["problems"]
    wall = time.monotonic() - t0
    kinds_hit = {k["kind"] for k in kills if k["hit"]}
    for required in sorted(set(plan)):
        if required not in kinds_hit and not harness_error:
            harness_error = f"no kill landed in the {required} moment"
    escaped = sum(len(k["escaped"]) for k in kills)
    report = {"ok": not problems and not harness_error, "study": study, "storage": f"sqlite:///{db}",
              "workdir": str(work), "command": cmd, "seed": args.seed, "target": args.trials, "plan": plan,
              "kills": kills, "runs": runs, "final": result, "final_trials": final, "harness_error": harness_error,
              "quick_calibration": args.quick_calibration, "escaped_processes": escaped,
              "calibration_s": history.get("calibration_s"), "wall_s": round(wall, 1)}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))

    hits = sum(1 for k in kills if k["hit"])
    print("\n== chaos report ==")
    lost_at = {x["kill"] for x in result["lost"]}
    survived = sum(k["index"] not in lost_at for k in kills) if last_rc == 0 else 0
    print(f"kills survived:      {survived}/{len(plan)} "
          f"({', '.join(k['kind'] for k in kills)}; {hits} in their planned moment)")
    print(f"trials lost:         {len(result['lost'])}")
    print(f"duplicates:          {len(result['duplicates'])}")
    print(f"evaluated / target:  {result['evaluated']}/{args.trials} (max seen while polling "
          f"{result['max_evaluated_seen']}); running {result['running']}, waiting {result['waiting']}")
    reasons = sorted({str(f['reason']) for f in result["fail"]})
    print(f"FAIL trials:         {len(result['fail'])} {[f['number'] for f in result['fail']]}"
          + (f", reasons: {reasons}" if reasons else ""))
    lingered = [e for k in kills for e in k["escaped"]]
    print(f"outside the group:   {escaped} process(es) survived the group kill"
          + (f": {sum('exited_after_s' in e for e in lingered)} exited by themselves (max "
             f"{max([e['exited_after_s'] for e in lingered if 'exited_after_s' in e], default=0)} s), "
             f"{sum('killed_after_s' in e for e in lingered)} killed after {args.orphan_wait:g} s" if lingered else ""))
    if history.get("calibration_s"):
        print(f"calibration:         {history['calibration_s']:.1f} s")
    print(f"last run exit:       {last_rc}")
    print(f"total wall time:     {wall:.1f} s")
    for p in problems:
        print(f"INVARIANT FAILED: {p}")
    if harness_error:
        print(f"HARNESS: {harness_error}")
    print("OK" if report["ok"] else "FAILED", f"(logs in {logs})")
    return 1 if problems else 3 if harness_error else 0


if __name__ == "__main__":
    sys.exit(main())
