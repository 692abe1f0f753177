"""Faults injected into Ray workers by the failure tests; the project never imports this.

`install()` is Ray's worker_process_setup_hook: it runs in every worker process and wraps
`evaluators.train.train`. Calls are numbered across all workers (a counter file beside the plan);
the plan, a JSON {"call number": fault}, says which call fails and how:
  "exception"  RuntimeError          "oom"   torch.OutOfMemoryError (as CUDA raises it)
  "stall"      writes its pid to PLAN.pid, then sleeps (for a test to SIGKILL the worker)
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

PLAN_ENV = "NAS_TEST_FAULT_PLAN"


def install() -> None:
    plan_path = os.environ.get(PLAN_ENV)
    if not plan_path:
        return
    import evaluators.train as train_module

    real_train = train_module.train

    def train(*args, **kwargs):
        plan = Path(plan_path)
        number = _next_call(plan.with_suffix(".count"))
        fault = json.loads(plan.read_text()).get(str(number)) if plan.exists() else None
        if fault == "exception":
            raise RuntimeError(f"injected fault in training call {number}")
        if fault == "oom":
            import torch
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        if fault == "stall":
            plan.with_suffix(".pid").write_text(str(os.getpid()))
            time.sleep(300)
        return real_train(*args, **kwargs)

    train_module.train = train


def _next_call(counter: Path) -> int:
    with open(counter, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        number = int(f.read() or 0) + 1
        f.seek(0), f.truncate(), f.write(str(number))
        return number
