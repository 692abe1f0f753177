"""GPU check: the CUDA paths, end to end, in a few minutes (AMP training, CUDA latency, a search).

    .venv/bin/python benchmarks/gpu_check.py [--device cuda] [--out DIR] [--quick]

Three steps, each timed and printed as one PASS/FAIL line with its figures:
  1. train: proxy training of --arch (default the GhostNetV2 baseline, nc 4) on synthetic data with
     `train(..., device, amp=True)`: the loss is finite, images/s, peak GPU memory, and on CUDA that
     autocast really ran the training forward in float16 (a hook on the first conv sees its dtype).
  2. latency: `measure_latency(model, imgsz, device, backend="torch")` of the same architecture
     (synchronised on CUDA): median and spread (p10, p90, std).
  3. search: `nas search SPACE --trials 2 --device DEVICE --gpus-per-trial 1 --latency measured
     --latency-device DEVICE --latency-backend torch ...` in DIR/search, then the storage is read:
     2 evaluated trials, latency measured on the device. On CUDA a trial whose Ray worker saw no GPU
     fails (train() refuses cuda without CUDA), so 2 trained trials mean the workers trained on it.

A JSON summary goes to DIR/gpu_check.json (DIR defaults to a new temporary folder). Exit status 0
only if all three pass; 1 if one fails; 2 (one line) if --device cuda is asked for and CUDA is not
available. `--device cpu` runs the same steps on the CPU (AMP off, CPU latency, no GPU per trial),
which is how tests/test_gpu_check.py runs it; `--quick` shrinks sizes for that.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/gpu_check.py` from anywhere
    sys.path.insert(0, str(ROOT))

STUDY = "gpu-check"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--out", type=Path, default=None, help="folder for the summary and the search (default: a temp dir)")
    ap.add_argument("--arch", default=str(ROOT / "spaces/reference/ghostnet_v2_yolo.yaml"),
                    help="architecture of steps 1 and 2 (its nc is set to the data's, 4)")
    ap.add_argument("--space", default=str(ROOT / "spaces/ghost_yolo.yaml"), help="search space of step 3")
    ap.add_argument("--imgsz", type=int, default=None, help="training and latency size (default 160; quick 64)")
    ap.add_argument("--images", type=int, default=None, help="synthetic training images (default 64; quick 16)")
    ap.add_argument("--batch", type=int, default=None, help="default 16; quick 8")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of step 1 (default 2; quick 1)")
    ap.add_argument("--search-timeout", type=float, default=420.0, help="seconds allowed to step 3 (default 420)")
    ap.add_argument("--quick", action="store_true", help="small sizes, fewer latency runs (the CPU test)")
    args = ap.parse_args(argv)
    q = args.quick
    args.imgsz = args.imgsz or (64 if q else 160)
    args.images = args.images or (16 if q else 64)
    args.batch = args.batch or (8 if q else 16)
    args.epochs = args.epochs or (1 if q else 2)
    args.val = max(4, args.images // 4)
    args.data = f"synthetic:n={args.images},val={args.val},nc=4,size={args.imgsz}"
    args.latency_timing = dict(warmup=3, runs=10, min_time_s=0.0) if q else dict(warmup=20, runs=200, min_time_s=2.0)
    return args


def finite(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


# -- step 1: AMP proxy training ------------------------------------------------------------------------

def step_train(args) -> dict:
    import torch
    from torch import nn

    from evaluators.train import train
    from nas.models import build_model, load_arch

    cuda = args.device == "cuda"
    torch.manual_seed(0)
    model = build_model({**load_arch(args.arch), "nc": 4})
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    train_dtypes: set[str] = set()
    # the EMA copy (made inside train) inherits the hook; it runs in eval mode and is not counted
    conv.register_forward_hook(lambda m, i, o: train_dtypes.add(str(o.dtype).replace("torch.", "")) if m.training else None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = train(model, args.data, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, device=args.device,
                   amp=True, val_every=args.epochs)
    if cuda:
        torch.cuda.synchronize()
    loss = float(result.history[-1]["loss"])
    rate = max(float(h["images_per_s"]) for h in result.history)
    out = {"arch": Path(args.arch).name, "imgsz": args.imgsz, "images": args.images, "batch": args.batch,
           "epochs": args.epochs, "loss": loss, "images_per_s": rate, "map": float(result.final["map"]),
           "train_forward_dtypes": sorted(train_dtypes), "amp": cuda}
    ok = finite(loss, rate) and rate > 0 and train_dtypes
    if cuda:
        out["peak_gpu_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
        ok = ok and train_dtypes == {"float16"} and out["peak_gpu_mem_mib"] > 0
        amp = f"autocast {'/'.join(sorted(train_dtypes))}"
        mem = f"peak GPU memory {out['peak_gpu_mem_mib']:.0f} MiB"
    else:
        out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ok = ok and train_dtypes == {"float32"}  # AMP is CUDA only: the CPU must stay in float32
        amp = f"AMP off on cpu ({'/'.join(sorted(train_dtypes))})"
        mem = f"peak RSS {out['peak_rss_mib']:.0f} MiB"
    out["passed"] = bool(ok)
    out["line"] = (f"{out['arch']} nc 4 @{args.imgsz}, {args.epochs} epoch(s) of {args.images} images: "
                   f"loss {loss:.3f} ({'finite' if finite(loss) else 'NOT finite'}), {rate:.1f} img/s, {amp}, {mem}")
    return out


# -- step 2: latency on the device ---------------------------------------------------------------------

def step_latency(args) -> dict:
    from evaluators.latency import measure_latency
    from nas.models import build_model, load_arch

    model = build_model({**load_arch(args.arch), "nc": 4})
    r = measure_latency(model, args.imgsz, args.device, "torch", **args.latency_timing)
    out = {"median_ms": r.median_ms, "p10_ms": r.p10_ms, "p90_ms": r.p90_ms, "std_ms": r.std_ms, "runs": r.runs,
           "target": r.target.to_dict(), "target_key": r.target.key()}
    out["passed"] = bool(finite(r.median_ms, r.p10_ms, r.p90_ms, r.std_ms) and r.median_ms > 0
                         and r.target.device == args.device and r.target.backend == "torch")
    out["line"] = (f"{Path(args.arch).name} @{args.imgsz}, {args.device}/torch on {r.target.processor}: "
                   f"median {r.median_ms:.3f} ms (p10 {r.p10_ms:.3f}, p90 {r.p90_ms:.3f}, std {r.std_ms:.3f}; "
                   f"{r.runs} runs)")
    return out


# -- step 3: a two-trial search through the CLI --------------------------------------------------------

def search_command(args) -> list[str]:
    return [sys.executable, "-m", "nas", "search", str(Path(args.space).resolve()), "--budget", "1s",
            "--trials", "2", "--workers", "1", "--device", args.device,
            "--gpus-per-trial", "1" if args.device == "cuda" else "0",
            "--epochs", "1", "--imgsz", str(args.imgsz), "--batch", str(args.batch), "--data", args.data,
            "--latency", "measured", "--latency-device", args.device, "--latency-backend", "torch",
            "--study", STUDY]


def step_search(args, out_dir: Path) -> dict:
    import optuna

    from nas.search.study import evaluated

    folder = out_dir / "search"
    shutil.rmtree(folder, ignore_errors=True)  # a fresh study, never a resumed one
    folder.mkdir(parents=True)
    cmd = search_command(args)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = folder / "search.log"
    with log.open("wb") as f:
        try:
            rc = subprocess.run(cmd, cwd=folder, env=env, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, timeout=args.search_timeout).returncode
        except subprocess.TimeoutExpired:
            rc = None
    out = {"command": " ".join(cmd[1:]), "cwd": str(folder), "log": str(log), "returncode": rc}
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        why = f"timed out after {args.search_timeout:.0f} s" if rc is None else f"exit status {rc}"
        out.update(passed=False, line=f"nas search {why}: {tail[0][:200]} (log: {log})")
        return out
    storage = f"sqlite:///{folder / 'studies' / STUDY / 'study.db'}"
    study = optuna.load_study(study_name=STUDY, storage=storage)
    done = evaluated(study)
    trials = [{"number": t.number, "state": t.state.name, "map": t.user_attrs.get("map"),
               "latency_ms": t.user_attrs.get("latency_ms"), "latency_source": t.user_attrs.get("latency_source"),
               "latency_device": t.user_attrs.get("target", {}).get("device"),
               "train_s": t.user_attrs.get("train_s"), "trained": t.user_attrs.get("trained")} for t in done]
    failed = [t.user_attrs.get("fail_reason", "?") for t in study.trials if t.state.name == "FAIL"]
    ok = (len(done) == 2 and all(t["trained"] and t["latency_source"] == "measured"
                                 and t["latency_device"] == args.device and finite(t["latency_ms"], t["map"])
                                 for t in trials))
    out.update(storage=storage, evaluated=len(done), trials=trials, failed=failed, passed=bool(ok))
    lat = ", ".join(f"#{t['number']} {t['latency_ms']:.2f} ms mAP {t['map']:.4f}" for t in trials
                    if finite(t["latency_ms"], t["map"]))
    out["line"] = (f"nas search --device {args.device}: {len(done)}/2 evaluated, {len(failed)} failed"
                   + (f" (first: {failed[0][:120]})" if failed else "") + (f"; {lat}" if lat else ""))
    return out


# -- main -----------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: error: --device cuda asked for, but PyTorch sees no CUDA device here (torch "
              f"{torch.__version__}, built with CUDA {torch.version.cuda or 'no'}); use --device cpu to run "
              f"the same steps on the CPU", file=sys.stderr)
        return 2
    out_dir = (args.out or Path(tempfile.mkdtemp(prefix="gpu_check-"))).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else None
    print(f"gpu check on {args.device}{f' ({gpu})' if gpu else ''}, torch {torch.__version__}, out {out_dir}",
          flush=True)

    steps = [("train", step_train, ()), ("latency", step_latency, ()), ("search", step_search, (out_dir,))]
    summary = {"device": args.device, "gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
               "quick": args.quick, "data": args.data, "out": str(out_dir), "steps": {}}
    for i, (name, fn, extra) in enumerate(steps, 1):
        start = time.perf_counter()
        try:
            result = fn(args, *extra)
        except Exception as e:  # a failed step is reported and the next one still runs
            first = (str(e).strip().splitlines() or [""])[0]
            result = {"passed": False, "line": f"{type(e).__name__}: {first}"[:300],
                      "traceback": traceback.format_exc()}
        result["seconds"] = time.perf_counter() - start
        summary["steps"][name] = result
        print(f"[{i}/3] {'PASS' if result['passed'] else 'FAIL'} {name:8s} {result['line']}  "
              f"({result['seconds']:.1f} s)", flush=True)
    summary["passed"] = all(s["passed"] for s in summary["steps"].values())
    path = out_dir / "gpu_check.json"
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"{'PASS' if summary['passed'] else 'FAIL'}: summary in {path}", flush=True)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
