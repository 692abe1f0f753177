"""Where the trials run: a Ray cluster of this machine's own, or one the user started.

    started = connect(cfg)   # True when this process started Ray (and must shut it down)
    node_lost(node_id)       # after a trial's worker died: was it its whole node?
"""
from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager

from nas.errors import UserError

from .config import SearchConfig

# Ray >= 2.5x turns token authentication on for `ray start --head`; a driver that joins without
# RAY_AUTH_MODE=token is refused at every retry (about 20 s), with no word of it in the exception.
AUTH_REFUSED = ("InvalidAuthToken", "Authentication token is missing or incorrect",
                "Token authentication is enabled")


def connect(cfg: SearchConfig) -> bool:
    """Join cfg.address, or start a local Ray sized for cfg.workers. Returns whether Ray was
    started here. A cluster that cannot be joined is one line (UserError), with the cause when
    Ray's log says it (token authentication)."""
    import ray

    if ray.is_initialized():
        size_trials(cfg)
        return False
    if not cfg.address:
        cfg.cpus_per_trial = cfg.cpus_per_trial or max(1.0, float((os.cpu_count() or 1) // cfg.workers))
        ray.init(num_cpus=max(1, int(cfg.workers * cfg.cpus_per_trial)),
                 num_gpus=int(cfg.workers * cfg.gpus_per_trial) or None, include_dashboard=False,
                 logging_level=logging.ERROR, log_to_driver=False)
        return True
    problem = None
    with _native_stderr() as said:
        try:
            ray.init(address=cfg.address, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            problem = _join_error(cfg.address, str(e), said())
    if problem:
        raise UserError(problem)
    try:
        size_trials(cfg)
    except UserError:
        ray.shutdown()
        raise
    return True


def size_trials(cfg: SearchConfig) -> None:
    """Give cfg.cpus_per_trial its default from the cluster's nodes (its cores / workers, at most
    one node's: a trial runs on one node), and refuse a trial no node can hold: Tune would wait
    for it forever, without a word."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    cpus = max((r.get("CPU", 0.0) for r in nodes), default=0.0)
    gpus = max((r.get("GPU", 0.0) for r in nodes), default=0.0)
    if cfg.cpus_per_trial is None:
        total = sum(r.get("CPU", 0.0) for r in nodes)
        cfg.cpus_per_trial = float(max(1, min(int(cpus), int(total) // cfg.workers)))
    if not any(r.get("CPU", 0.0) >= cfg.cpus_per_trial and r.get("GPU", 0.0) >= cfg.gpus_per_trial for r in nodes):
        where = f"the Ray cluster at {cfg.address}" if cfg.address else "this Ray instance"
        raise UserError(f"no node of {where} can hold a trial of {cfg.cpus_per_trial:g} CPUs and "
                        f"{cfg.gpus_per_trial:g} GPUs (the largest has {cpus:g} CPUs, {gpus:g} GPUs): "
                        f"lower --cpus-per-trial / --gpus-per-trial, or add a larger node")


def _join_error(address: str, error: str, log: str) -> str:
    line = f"cannot join the Ray cluster at {address}: {error.strip().splitlines()[0] if error.strip() else 'refused'}"
    if any(mark in log or mark in error for mark in AUTH_REFUSED):
        mode = os.environ.get("RAY_AUTH_MODE")
        if mode != "token":
            return (f"{line} (the cluster uses Ray's token authentication: export RAY_AUTH_MODE=token here, "
                    f"with the head's token in ~/.ray/auth_token or RAY_AUTH_TOKEN)")
        return f"{line} (wrong token: use the head's, from its ~/.ray/auth_token or RAY_AUTH_TOKEN)"
    return f"{line} (is `ray start --head` running there, and is the port reachable from here?)"


@contextmanager
def _native_stderr():
    """Ray's C++ client writes its retries to file descriptor 2 (twenty lines while it is refused):
    keep them off the terminal, and let the caller read them to say why joining failed."""
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: _read(sink)
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _read(sink) -> str:
    sink.flush()
    sink.seek(0)
    return sink.read().decode(errors="replace")


def node_lost(node_id: str | None) -> bool:
    """Whether the Ray node `node_id` is gone (dead or unknown to the cluster)."""
    import ray

    if not node_id or not ray.is_initialized():
        return False
    try:
        return not any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes())
    except Exception:  # noqa: BLE001 - a cluster that cannot be asked tells us nothing
        return False
