"""The timing discipline, shared by every backend and by the device server: warm up, time bursts,
keep the fastest, and wait for a quiet machine first. Only the standard library and numpy, so that
a device runs the very same code.

    time_calls(fn)                          # ms per call, after a warm-up
    time_interleaved({key: opener})         # each key's best burst median, bursts taking turns
    Canary(opener).wait()                   # until a reference block runs as fast as it ever did,
                                            # or it is the machine itself that runs slower
"""
from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

# An opener returns a fresh callable that runs the model once (e.g. a new onnxruntime session):
# only one is alive at a time while timing (see time_interleaved).
Opener = Callable[[], Callable[[], object]]


def time_calls(fn: Callable[[], object], warmup: int = 10, runs: int = 50, min_time_s: float = 1.0,
               max_runs: int = 2000, sync: Callable[[], None] = lambda: None) -> list[float]:
    """Call `fn` `warmup` times, then time it (ms per call) until at least `runs` calls and
    `min_time_s` seconds, but no more than `max_runs` calls. `sync` runs around each timed call
    (torch.cuda.synchronize on CUDA, where calls return before the work is done)."""
    for _ in range(warmup):
        fn()
    sync()
    times, start = [], time.perf_counter()
    while len(times) < max(1, runs) or (time.perf_counter() - start < min_time_s and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def time_interleaved(openers: dict[str, Opener], rounds: int = 3, warmup: int = 3, runs: int = 5,
                     min_time_s: float = 0.01, sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Latency (ms) of each model: the smallest median of `rounds` bursts of at least `runs` calls
    and `min_time_s` seconds each (blocks take 0.01 .. 20 ms). Bursts are short: a search times each
    new candidate's unknown blocks before deciding on it, and halving them (from 5 + 10 calls and
    20 ms) built the table in 131 instead of 160 ms per block at unchanged accuracy.

    The bursts of all models take turns, so that each model's bursts are spread over the seconds
    the batch takes and a passing burst of other work on the machine spoils one of them, not all
    (noise only ever adds time, hence the minimum). Each burst opens its own runner and is the only
    live one: after a run, an idle onnxruntime session's pool threads keep spinning, and with
    another session alive they would take the cores of the model being timed (at 2 threads on 2
    cores that inflated block sums by 15-50%).
    """
    best = dict.fromkeys(openers, float("inf"))
    for _ in range(max(1, rounds)):
        for key, open_runner in openers.items():
            run = open_runner()
            times = time_calls(run, warmup, runs, min_time_s, max_runs=1000, sync=sync)
            best[key] = min(best[key], float(np.median(times)))
            del run  # closes the session (joining its threads) before the next one opens
    return best


# The canary: a fixed small block (3x3 conv 32 -> 32 at 40x40, about 0.1-0.3 ms) timed before and
# after each batch of blocks and compared with the fastest it ever ran on the target (kept in the
# table file). Minimum-of-bursts timing protects against short disturbances only; on a shared
# machine another process can slow everything by 30-50% for minutes, and the canary is how the
# table notices and waits instead of caching it.
CANARY_TOLERANCE = 0.10  # slower than its record by more than this: the machine is busy
CANARY_MAX_WAIT_S = 30.0  # then give up waiting, time anyway and say so,
CANARY_GIVE_UP_S = 600.0  # and do not wait again for this long (a machine that stays busy)


def others_cpu_share(window_s: float = 0.25) -> float | None:
    """The share of this machine's CPUs (0..1) that other processes used over the next `window_s`
    seconds, this one idle meanwhile; None where /proc/stat cannot be read (not Linux)."""
    def busy() -> int | None:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:8]]
        except (OSError, ValueError):
            return None
        return v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq (jiffies)
    start = busy()
    if start is None:
        return None
    time.sleep(window_s)
    end = busy()
    ticks = os.sysconf("SC_CLK_TCK") * window_s * (os.cpu_count() or 1)
    return max(0.0, min(1.0, (end - start) / ticks))


# Below this share of the CPUs used by other processes, a slow canary is the machine itself (a shared
# host taking cycles, a clock that changed), not work one could wait out. Measured on an idle 2-vCPU
# VM: the canary ran 11-64% over its record for seconds at a time, with nothing else running.
OTHERS_IDLE = 0.10


class Canary:
    """Is the machine as quiet as it has been? `record_ms`: the canary's best time so far.
    `slow_idle`: after a wait, how much slower than its record the canary ran while nothing else
    ran on the machine (0 when it was quiet, or slowed by other processes)."""

    def __init__(self, opener: Opener, record_ms: float = float("inf")):
        self.opener, self.record_ms = opener, record_ms
        self.last_ms = float("nan")
        self.slow_idle = 0.0

    def time(self) -> float:
        """The canary's latency now (ms): the smallest of 3 short burst medians."""
        run = self.opener()
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
        self.slow_idle = 0.0
        while not self.quiet():
            others = others_cpu_share(min(pause, 0.25))
            if others is not None and others < OTHERS_IDLE:
                # nothing here to wait for: the machine itself runs slower (see OTHERS_IDLE)
                self.slow_idle = self.last_ms / self.record_ms - 1
                return False
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(2 * pause, poll_s)
        return True
