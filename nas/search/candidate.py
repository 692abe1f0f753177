"""One candidate's proxy training, run inside a Ray worker.

The worker never touches the Optuna storage: it reports per-epoch mAP through `tune.report`
and ends with a final report (or a `failed` report with the reason). The driver's searcher
turns those reports into Optuna calls.
"""
from __future__ import annotations

import os
import time
import traceback


def run_candidate(config: dict) -> None:
    """Ray Tune function trainable. config: {"arch", "fidelity", "threads"}."""
    import ray
    import torch
    from ray import tune

    from evaluators.train import train
    from nas.models import build_model

    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    fid = config["fidelity"]
    start = time.perf_counter()
    # recorded with the trial: the node's IP, and its id (several nodes may share one machine)
    where = {"node": ray.util.get_node_ip_address(), "node_id": ray.get_runtime_context().get_node_id(),
             "pid": os.getpid()}

    def report_epoch(epoch: int, metrics: dict) -> None:
        # train_s on every report: a trial stopped by the pruner ends with its last epoch's report
        tune.report({"epoch": epoch + 1, "map": _num(metrics.get("map")), "map50": _num(metrics.get("map50")),
                     "loss": _num(metrics.get("loss")), "final": False, "train_s": time.perf_counter() - start,
                     **where})

    # A report before training: the driver records where the trial runs (node, pid) at once
    tune.report({"epoch": 0, "map": float("nan"), "final": False, "train_s": 0.0, **where})
    try:
        missing = missing_data(fid["data"])
        if missing:  # a node of a cluster without the data: say so, at once
            raise FileNotFoundError(f"the data is not on node {where['node']}: {missing} does not exist there "
                                    f"(every node needs the data at the same path, e.g. on shared storage)")
        torch.manual_seed(fid["seed"])
        model = build_model(config["arch"])
        result = train(model, data=fid["data"], epochs=fid["epochs"], imgsz=fid["imgsz"], batch=fid["batch"],
                       device=fid["device"], lr=fid["lr"], workers=fid["workers"], seed=fid["seed"],
                       callback=report_epoch)
        tune.report({"epoch": result.epochs_run, "map": _num(result.final.get("map")),
                     "map50": _num(result.final.get("map50")), "final": True, "epochs_run": result.epochs_run,
                     "train_s": time.perf_counter() - start})
    except Exception as e:  # noqa: BLE001 - any failure becomes a FAIL trial with its reason
        # "map" too: Tune refuses a result without the searcher's metric, and would end the search
        tune.report({"failed": True, "reason": failure_reason(e), "traceback": traceback.format_exc()[-2000:],
                     "final": True, "map": float("nan"), **where})


def missing_data(spec: str) -> str | None:
    """The first path of a --data spec (absolute, made so by the driver) that this machine lacks."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return None
    return next((part for part in spec.split(",") if not os.path.exists(part)), None)


def failure_reason(e: BaseException) -> str:
    """One line for the study: the exception, with out-of-memory errors (CPU or CUDA) said plainly."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    reason = f"{type(e).__name__}: {text}" if text else type(e).__name__
    if isinstance(e, MemoryError) or "out of memory" in str(e).lower() or "can't allocate memory" in str(e).lower():
        reason = f"out of memory: {reason}"
    return reason[:500]


def _num(v) -> float:
    return float("nan") if v is None else float(v)
