"""A real two-node Ray cluster on this machine (`ray start --head` and `ray start --address`, each
with one CPU, token authentication on as Ray 2.60 does by default), searched from another process
with --address, as a user runs it: trials run on both nodes and say so in the storage; a node
lost mid-trial fails that trial with its reason and the search ends on the head; a driver
without the token is told what to set; a node without the data fails its trial with the path."""
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.search.study import evaluated
from tests.searching import FAST, SPACE, load_when_written

RAY = str(Path(sys.executable).parent / "ray")
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[int]:
    """pid and every process under it (Ray's workers leave their process group, not their parent)."""
    tree, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(tree.get(p, []))
    return out


def _kill_tree(proc: subprocess.Popen) -> None:
    for pid in _descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


class Cluster:
    """A head and one more node, each a `ray start --block` process group of this test's own."""

    def __init__(self):
        self.port = _free_port()
        self.temp = tempfile.mkdtemp(prefix="rayc", dir="/tmp")  # short: Ray's socket paths have a limit
        self.token = secrets.token_hex(32)
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                    "RAY_USAGE_STATS_ENABLED": "0"}
        self.address = f"127.0.0.1:{self.port}"
        self.head = self._start("head", "--head", "--port", str(self.port), "--temp-dir", self.temp,
                                "--include-dashboard", "false")
        self.node = self._start("node", "--address", self.address)

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        log = Path(self.temp) / f"{name}.log"
        proc = subprocess.Popen([RAY, "start", "--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
                                 "--disable-usage-stats", *args], env=self.env, stdout=log.open("w"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 90
        while "block forever" not in log.read_text():
            if proc.poll() is not None or time.time() > deadline:
                self.stop()
                pytest.fail(f"ray start ({name}) did not come up:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        return proc

    def on_node(self, pid: int) -> bool:
        """Whether the worker process `pid` runs on the second node (not the head)."""
        return pid in _descendants(self.node.pid)

    def stop(self) -> None:
        for proc in (getattr(self, "node", None), getattr(self, "head", None)):
            if proc is not None and proc.poll() is None:
                _kill_tree(proc)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    yield c
    c.stop()


def _search(cluster: Cluster, workdir: Path, name: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "nas", "search", str(SPACE), "--budget", "1s", "--study", name,
           "--address", cluster.address, *FAST, *args]  # args last: they override FAST's
    return subprocess.Popen(cmd, cwd=workdir, env={**(env or cluster.env), "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _load(workdir: Path, name: str) -> optuna.Study | None:
    return load_when_written(workdir / "studies" / name / "study.db", name)


def test_a_driver_without_the_token_is_told_what_to_set(cluster, tmp_path):
    env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token of this machine's either
    search = _search(cluster, tmp_path, "no-token", "--trials", "1", env=env)
    out, err = search.communicate(timeout=120)
    assert search.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"nas search: error: cannot join the Ray cluster at {cluster.address}: ")
    assert "RAY_AUTH_MODE=token" in lines[0]
    assert _load(tmp_path, "no-token") is None or not _load(tmp_path, "no-token").trials


def test_a_node_without_the_data_fails_its_trials_with_the_path(cluster, tmp_path):
    from tests.test_splits import write_coco

    data = tmp_path / "data"
    pair = f"{write_coco(data / 'train.json', data / 'images', [f't{i}.png' for i in range(4)])}," \
           f"{write_coco(data / 'val.json', data / 'images', ['v0.png', 'v1.png'])}"
    search = _search(cluster, tmp_path, "no-data", "--trials", "2", "--max-failures", "2", "--data", pair)
    try:
        # the driver reads the data before it creates the study; the nodes look for it afterwards
        deadline = time.time() + 120
        while _load(tmp_path, "no-data") is None and search.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        shutil.rmtree(data)
        out, err = search.communicate(timeout=180)
    finally:
        if search.poll() is None:
            search.kill()
    assert search.returncode == 1, err[-3000:]  # 2 failures in a row stop it: no hang
    study = _load(tmp_path, "no-data")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    for t in study.trials:
        node = t.user_attrs["worker"]["node"]
        assert t.user_attrs["fail_reason"].startswith(f"FileNotFoundError: the data is not on node {node}: ")
        assert str(data / "train.json") in t.user_attrs["fail_reason"]


def test_a_trial_no_node_can_hold_is_refused_instead_of_waiting_forever(cluster, tmp_path):
    search = _search(cluster, tmp_path, "too-big", "--trials", "1", "--cpus-per-trial", "2")
    out, err = search.communicate(timeout=120)
    assert search.returncode == 2, err[-2000:]
    assert err.strip().splitlines() == [
        f"nas search: error: no node of the Ray cluster at {cluster.address} can hold a trial of 2 CPUs and 0 GPUs "
        f"(the largest has 1 CPUs, 0 GPUs): lower --cpus-per-trial / --gpus-per-trial, or add a larger node"]
    assert not _load(tmp_path, "too-big").trials


def test_trials_run_on_both_nodes_and_a_node_lost_mid_trial_fails_only_its_trial(cluster, tmp_path):
    # last in this file: it leaves the cluster with its head alone
    search = _search(cluster, tmp_path, "two-nodes", "--trials", "4", "--workers", "2", "--epochs", "3")
    killed = None
    deadline = time.time() + 300
    try:
        while killed is None and search.poll() is None and time.time() < deadline:
            time.sleep(0.2)
            study = _load(tmp_path, "two-nodes")
            if study is None:
                continue
            trials = study.get_trials(deepcopy=False)
            node_done = any(t.state == TrialState.COMPLETE and cluster.on_node(t.user_attrs.get("worker", {})
                                                                               .get("pid", -1)) for t in trials)
            # one trial trained on the second node already; now lose that node under a running one that
            # has not told its first epoch yet: one further on may finish before the kill lands on a busy host
            running = [t for t in trials if t.state == TrialState.RUNNING and "worker" in t.user_attrs
                       and not t.user_attrs.get("curve") and cluster.on_node(t.user_attrs["worker"]["pid"])]
            if node_done and running:
                killed = running[0].number
                _kill_tree(cluster.node)
        out, err = search.communicate(timeout=max(10, deadline - time.time()))
    finally:
        if search.poll() is None:
            search.kill()
    assert killed is not None, f"no trial ran on the second node:\n{err[-3000:]}"
    assert search.returncode == 0, err[-3000:]
    assert "Traceback" not in err

    study = _load(tmp_path, "two-nodes")
    trials = {t.number: t for t in study.trials}
    lost = trials[killed]
    assert lost.state == TrialState.FAIL
    assert "node was lost" in lost.user_attrs["fail_reason"]
    assert len(evaluated(study)) == 4  # the search went on, on the head, to its target
    nodes = {t.user_attrs["worker"]["node_id"] for t in study.trials if "worker" in t.user_attrs}
    assert len(nodes) == 2  # two Ray nodes, as recorded with the trials
    after = [t for t in study.trials if t.number > killed and "worker" in t.user_attrs]
    assert after and all(t.user_attrs["worker"]["node_id"] != lost.user_attrs["worker"]["node_id"] for t in after)
