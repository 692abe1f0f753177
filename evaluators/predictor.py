"""Predicted latency: a per-block lookup table measured on the target, calibrated on whole models.

Measuring one candidate costs seconds (export, session, timing); a search checks thousands. The
predictor splits an architecture into blocks, measures each distinct block once on the target
(exported alone, batch 1, same backend and threads) and adds their latencies up. The sum misses
what only a whole graph has (operator fusion across block boundaries, one session instead of many,
memory traffic), so `calibrate()` fits `measured = a * sum + b` on a few whole-model measurements.

The table lives in `<cache_dir>/latency-<target.key()>.json` (the key names the machine and library
versions, so one folder serves every target); blocks unknown to it are measured lazily. Several
searches share it: each block is measured once per target. The calibration depends on which
architectures it was fitted on, so the file keeps one per `scope` (the search space's hash).

    predictor = LatencyPredictor(Target.resolve(imgsz=320), "studies/latency")
    predictor.calibrate(some_archs)          # measures their blocks and the whole models (seconds each)
    predictor.predict(arch)                  # ms; well under a millisecond once its blocks are known

A block is a row of the architecture; a row of n chained copies (a stage of depth n) is its first
copy plus n - 1 times its repeat copy, so stages of every depth share the same few entries.
Re-parameterization branches fuse away in the deploy graph, so blocks that differ only in their
branch count share an entry too.
"""
from __future__ import annotations

import functools
import io
import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from nas.models.arch import load_arch
from nas.models.graph import build_model, plan
from nas.models.registry import REGISTRY

from .latency import Target, measure_latency, time_calls
from .onnx_export import DEFAULT_OPSET, deploy_copy, ort_session

FORMAT = 3  # bump when keys, timings or the file's layout change: older tables are then rebuilt

BATCH = 32  # blocks timed between two saves of the table

# Args with no effect on the deploy graph: branches and their scale branch fuse into one conv.
_DEPLOY_NEUTRAL = {"branches": 0, "scale": True}


@dataclass(frozen=True)
class Calibration:
    """`predicted = a * block_sum + b`, fitted on `n` whole-model measurements; `error` is the
    mean absolute relative error of the fit on them, `worst` the largest."""

    n: int = 0
    a: float = 1.0
    b: float = 0.0
    error: float = float("nan")
    worst: float = float("nan")

    def to_dict(self) -> dict:
        return {"n": self.n, "a": self.a, "b": self.b, "error": self.error, "worst": self.worst}


def block_key(name: str, args: dict, c_ins: list[int], sizes: list[int], repeats: int) -> str:
    """The table key of one block: what it is and the square input size(s) it sees."""
    args = {k: _DEPLOY_NEUTRAL.get(k, v) for k, v in args.items()}
    return json.dumps([name, args, c_ins, sizes, repeats], separators=(",", ":"))


def arch_blocks(arch: dict, imgsz: int) -> list[tuple[str, int]]:
    """(block key, how many times it runs) for every row of `arch` at input size `imgsz`."""
    layers = plan(arch)
    padded = imgsz + (-imgsz % 32)  # the Detector pads its input to a multiple of 32
    blocks = []
    for layer in layers:
        sizes = tuple(padded if s == -1 else int(padded // layers[s].stride) for s in layer.sources)
        blocks += _row_blocks(layer.name, tuple(layer.args.items()), tuple(layer.c_ins), sizes, layer.repeats,
                              layer.c_out, int(padded // layer.stride))
    return blocks


@functools.lru_cache(maxsize=1 << 16)
def _row_blocks(name, args, c_ins, sizes, repeats, c_out, out_size) -> tuple[tuple[str, int], ...]:
    """The blocks of one planned row; cached because writing keys costs more than planning."""
    args = dict(args)
    if REGISTRY[name].repeats == "chain" and repeats > 1:
        rest = dict(args, stride=1) if "stride" in args else args
        return ((block_key(name, args, list(c_ins), list(sizes), 1), 1),
                (block_key(name, rest, [c_out], [out_size], 1), repeats - 1))
    return ((block_key(name, args, list(c_ins), list(sizes), repeats), 1),)


class _Block(nn.Module):
    """One block with plain tensor inputs, for export and timing: multi-input rows take a list;
    the detection head is timed with its decode, as whole detectors are."""

    def __init__(self, module: nn.Module, multi_input: bool):
        super().__init__()
        self.module, self.multi_input = module, multi_input

    def forward(self, *xs: torch.Tensor):
        out = self.module(list(xs) if self.multi_input else xs[0])
        if hasattr(self.module, "decode"):
            out = self.module.decode(out)
        return tuple(out) if isinstance(out, (list, tuple)) else out


def build_block(key: str) -> tuple[nn.Module, list[torch.Tensor]]:
    """The deploy-graph module of a block key and random inputs of its shapes."""
    name, args, c_ins, sizes, repeats = json.loads(key)
    spec = REGISTRY[name]
    module = _Block(deploy_copy(spec.build(c_ins, repeats, args)), spec.multi_input)
    g = torch.Generator().manual_seed(0)
    inputs = [torch.rand((1, c, s, s), generator=g) for c, s in zip(c_ins, sizes)]
    return module.eval(), inputs


def block_runner(key: str, target: Target) -> Callable[[], Callable[[], object]]:
    """A factory of calls that run the block once on `target` (its deploy graph). In onnxruntime the
    block is exported alone, once, and each factory call opens a fresh session on it."""
    module, inputs = build_block(key)
    if target.backend == "onnxruntime":
        buffer = io.BytesIO()
        names = [f"x{i}" for i in range(len(inputs))]
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # exporter deprecation and tracer notes, as in onnx_export
            torch.onnx.export(module, tuple(inputs), buffer, dynamo=False, opset_version=DEFAULT_OPSET,
                              do_constant_folding=True, input_names=names)
        providers = ["CUDAExecutionProvider"] if target.device == "cuda" else ["CPUExecutionProvider"]
        feed = {n: x.numpy() for n, x in zip(names, inputs)}

        def open_session():
            session = ort_session(buffer.getvalue(), target.threads, providers)
            return lambda: session.run(None, feed)
        return open_session
    module, inputs = module.to(target.device), [x.to(target.device) for x in inputs]

    def run():
        with torch.inference_mode():
            return module(*inputs)
    return lambda: run


def time_blocks(keys: list[str], target: Target, rounds: int = 3, warmup: int = 3, runs: int = 5,
                min_time_s: float = 0.01) -> dict[str, float]:
    """Latency (ms) of each block alone on `target`: the smallest median of `rounds` bursts of at
    least `runs` calls and `min_time_s` seconds each (blocks take 0.01 .. 20 ms). A search times
    each new candidate's unknown blocks before deciding on it, so bursts are short: halving them
    (from 5 + 10 calls and 20 ms) built the table in 131 instead of 160 ms per block at unchanged
    accuracy (benchmarks/bench_predictor.py).

    The bursts of all blocks take turns, so that each block's bursts are spread over the seconds
    the batch takes and a passing burst of other work on the machine spoils one of them, not all
    (noise only ever adds time, hence the minimum). Each burst opens its own session and is the
    only live one: after a run, an idle onnxruntime session's pool threads keep spinning, and with
    another block's session alive they would take the cores of the block being timed (at 2 threads
    on 2 cores that inflated block sums by 15-50%).
    """
    sync = torch.cuda.synchronize if target.device == "cuda" else (lambda: None)
    previous = torch.get_num_threads()
    if target.backend == "torch":
        torch.set_num_threads(target.threads)
    try:
        openers = {key: block_runner(key, target) for key in keys}
        best = dict.fromkeys(keys, float("inf"))
        for _ in range(max(1, rounds)):
            for key, open_runner in openers.items():
                run = open_runner()
                times = time_calls(run, warmup, runs, min_time_s, max_runs=1000, sync=sync)
                best[key] = min(best[key], float(np.median(times)))
                del run  # closes the session (joining its threads) before the next one opens
        return best
    finally:
        torch.set_num_threads(previous)


# The canary: a fixed small block (3x3 conv 32 -> 32 at 40x40, about 0.1-0.3 ms) timed before and
# after each batch of blocks and compared with the fastest it ever ran on the target (kept in the
# table file). Minimum-of-bursts timing protects against short disturbances only; on a shared
# machine another process can slow everything by 30-50% for minutes (one whole measurement pass
# of the benchmark was), and the canary is how the table notices and waits instead of caching it.
CANARY_KEY = block_key("ConvBNAct", {"c_out": 32, "k": 3, "stride": 1}, [32], [40], 1)
CANARY_TOLERANCE = 0.10  # slower than its record by more than this: the machine is busy
CANARY_MAX_WAIT_S = 30.0  # then give up waiting, time anyway and say so,
CANARY_GIVE_UP_S = 600.0  # and do not wait again for this long (a machine that stays busy)


class Canary:
    """Is the machine as quiet as it has been? `record_ms`: the canary's best time so far."""

    def __init__(self, target: Target, record_ms: float = float("inf")):
        self.target, self.record_ms = target, record_ms
        self.last_ms = float("nan")
        self._open = None

    def time(self) -> float:
        """The canary's latency now (ms): the smallest of 3 short burst medians."""
        if self._open is None:
            self._open = block_runner(CANARY_KEY, self.target)
        run = self._open()
        best = min(float(np.median(time_calls(run, 3, 10, 0.005))) for _ in range(3))
        del run  # its session must not spin beside what is timed next
        return best

    def quiet(self) -> bool:
        self.last_ms = ms = self.time()
        self.record_ms = min(self.record_ms, ms)
        return ms <= self.record_ms * (1 + CANARY_TOLERANCE)

    def wait(self, max_wait_s: float = CANARY_MAX_WAIT_S, poll_s: float = 2.0, first_poll_s: float = 0.1) -> bool:
        """Return once the canary runs within tolerance of its record (True), or after `max_wait_s` (False).
        Polls back off from `first_poll_s` to `poll_s`: most disturbances are the tail of a trial
        that has just ended and pass within a fraction of a second (a fixed 2 s poll cost the
        search's latency check 2 s every few candidates)."""
        deadline, pause = time.monotonic() + max_wait_s, first_poll_s
        while not self.quiet():
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(2 * pause, poll_s)
        return True


def fit_calibration(block_sums, measured_ms) -> Calibration:
    """Least squares on relative errors: minimise sum(((a*s + b) - m) / m)^2, because the budget
    check and the accuracy goal are both relative (+-10%). One point fits a scale only."""
    s, m = np.asarray(block_sums, dtype=np.float64), np.asarray(measured_ms, dtype=np.float64)
    if s.shape != m.shape or s.size == 0:
        raise ValueError(f"calibration needs as many measurements as architectures (>= 1), got "
                         f"{m.size} for {s.size}")
    if np.any(m <= 0) or np.any(s <= 0):
        raise ValueError("calibration latencies must be positive")
    r = s / m
    if s.size == 1 or np.ptp(s) == 0:
        a, b = float(r.sum() / (r * r).sum()), 0.0
    else:
        design = np.stack((r, 1.0 / m), 1)  # rows scaled by 1/m: relative residuals
        (a, b), *_ = np.linalg.lstsq(design, np.ones_like(m), rcond=None)
        a, b = float(a), float(b)
        if a <= 0:  # nonsense from a degenerate set: fall back to a pure scale
            a, b = float(r.sum() / (r * r).sum()), 0.0
    rel = np.abs((a * s + b) / m - 1)
    return Calibration(int(s.size), a, b, float(rel.mean()), float(rel.max()))


class LatencyPredictor:
    """Predicted deploy-graph latency (ms) of architectures on one `Target`.

    `measured` counts the blocks this instance timed (a warm cache leaves it at 0). `scope` names
    the family of architectures its calibration is fitted on and used for (the search space's
    hash): a table shared by several spaces keeps one calibration per scope.
    """

    def __init__(self, target: Target, cache_dir: str | os.PathLike, timing: dict | None = None,
                 max_wait_s: float = CANARY_MAX_WAIT_S, scope: str = ""):
        self.target, self.scope = target, scope
        self.path = Path(cache_dir) / f"latency-{target.key()}.json"
        self.timing = dict(timing or {})  # overrides of time_blocks' defaults
        self.table: dict[str, float] = {}
        self.calibration = Calibration()
        self.calibrations: dict[str, dict] = {}  # every scope's, as on disk
        self.measured = 0
        self.measure_seconds = 0.0  # time spent building the table in this instance
        self.waited_seconds = 0.0   # time spent waiting for a quiet machine
        self.canary = Canary(target)
        self.max_wait_s, self.busy_until = max_wait_s, 0.0
        self._load()

    @property
    def calibrated(self) -> bool:
        return self.calibration.n > 0

    # -- prediction -----------------------------------------------------------------------------

    def blocks(self, arch: dict) -> list[tuple[str, int]]:
        """(block key, count) for every row of `arch` at the target's input size."""
        return arch_blocks(arch, self.target.imgsz)

    def block_sum(self, arch: dict) -> float:
        """Uncalibrated: the sum of the block latencies (ms), measuring unknown blocks first."""
        blocks = self.blocks(arch)
        self._measure([k for k, _ in blocks if k not in self.table])
        return sum(self.table[k] * n for k, n in blocks)

    def predict(self, arch: dict | str | os.PathLike) -> float:
        """Predicted latency (ms) of `arch` (a dict or an architecture YAML) at the target's input size."""
        if not isinstance(arch, dict):
            arch = load_arch(arch)
        c = self.calibration
        return c.a * self.block_sum(arch) + c.b

    def warm(self, archs) -> int:
        """Measure every block of `archs` not in the table yet; returns how many were measured."""
        missing = {k: None for arch in archs for k, _ in self.blocks(arch) if k not in self.table}
        self._measure(list(missing))
        return len(missing)

    def measure(self, arch: dict, **timing) -> float:
        """Measured latency (ms, median) of the whole detector on this target, on a quiet machine when
        it can be had (`timing`: see measure_latency)."""
        self.wait_quiet()
        t = self.target
        return measure_latency(build_model(arch), t.imgsz, t.device, t.backend, t.threads, **timing).median_ms

    def calibrate(self, archs, measured_ms=None, passes: int = 2) -> Calibration:
        """Fit `a * block_sum + b` to whole-model latencies on this target and save it with the table.
        Without `measured_ms` they are measured here: `passes` passes over all the architectures,
        each keeping its smallest median, so that a passing burst of other work on the machine does
        not become part of every later prediction. About 10-20 architectures spanning the space suffice."""
        archs = list(archs)
        self.warm(archs)
        if measured_ms is None:
            measured_ms = np.min([[self.measure(a) for a in archs] for _ in range(max(1, passes))], axis=0)
        self.calibration = fit_calibration([self.block_sum(a) for a in archs], list(measured_ms))
        self._save()
        return self.calibration

    # -- the table on disk ----------------------------------------------------------------------

    def wait_quiet(self) -> bool:
        """Wait until the machine is as quiet as the table has seen it (True). A machine still busy
        after `max_wait_s` is timed as it is (False; a warning says so) and not waited for again
        for 10 minutes, so a machine that stays busy (a trial training beside the driver) costs
        a search little."""
        if self.max_wait_s <= 0 or time.monotonic() < self.busy_until:
            return False
        start = time.perf_counter()
        quiet = self.canary.wait(self.max_wait_s)
        self.waited_seconds += time.perf_counter() - start
        if quiet:
            return True
        self.busy_until = time.monotonic() + CANARY_GIVE_UP_S
        slower = self.canary.last_ms / self.canary.record_ms - 1
        warnings.warn(f"the machine stays busy (a reference block runs {slower:.0%} slower than its best): "
                      f"latencies measured in the next {CANARY_GIVE_UP_S / 60:.0f} minutes may be inflated",
                      stacklevel=3)
        return False

    def _measure(self, keys: list[str]) -> None:
        if not keys:
            return
        start = time.perf_counter()
        keys = list(dict.fromkeys(keys))
        for i in range(0, len(keys), BATCH):
            batch = keys[i:i + BATCH]
            for _ in range(3):  # a batch spoiled by a burst of other work (the canary says so) is timed again
                quiet = self.wait_quiet()
                for k, ms in time_blocks(batch, self.target, **self.timing).items():
                    self.table[k] = min(self.table.get(k, float("inf")), ms)
                if not quiet or self.canary.quiet():
                    break
            self.measured += len(batch)
            self._save()
        self.measure_seconds += time.perf_counter() - start

    def _read(self, quiet: bool = False) -> dict | None:
        """The cache file's content, or None when missing, unreadable, of another format or target."""
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text())
            ok = (isinstance(data, dict) and data.get("format") == FORMAT
                  and data.get("target") == self.target.to_dict() and isinstance(data.get("blocks"), dict)
                  and isinstance(data.get("calibrations"), dict))
            if ok:
                return data
            reason = "another format or target"
        except (OSError, ValueError) as e:
            reason = f"unreadable: {e}"
        if not quiet:
            warnings.warn(f"latency table {self.path} ignored ({reason}); it will be rebuilt", stacklevel=3)
        return None

    def _load(self) -> None:
        data = self._read()
        if data is None:
            return
        self.table = {k: float(v) for k, v in data["blocks"].items()}
        if data.get("canary_ms"):
            self.canary.record_ms = float(data["canary_ms"])
        self.calibrations = dict(data["calibrations"])
        c = self.calibrations.get(self.scope)
        if c:
            self.calibration = Calibration(int(c["n"]), float(c["a"]), float(c["b"]),
                                           float(c["error"]), float(c["worst"]))

    def _save(self) -> None:
        """Write atomically (temp file + rename), keeping the blocks and other scopes' calibrations
        that another process added meanwhile."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        on_disk = self._read(quiet=True)
        if on_disk:
            for k, v in on_disk["blocks"].items():
                self.table.setdefault(k, float(v))
            self.canary.record_ms = min(self.canary.record_ms, float(on_disk.get("canary_ms") or "inf"))
            self.calibrations = {**self.calibrations, **on_disk["calibrations"]}  # other scopes: the newest
        if self.calibrated:
            self.calibrations[self.scope] = self.calibration.to_dict()
        data = {"format": FORMAT, "target": self.target.to_dict(), "calibrations": self.calibrations,
                "canary_ms": self.canary.record_ms if math.isfinite(self.canary.record_ms) else None,
                "blocks": self.table}
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=0)
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise
