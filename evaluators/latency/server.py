"""The device server: runs on the device a detector ships to and times the ONNX models a search
elsewhere sends it, with the discipline of the local tables (timing.py), so that `--budget 15ms`
means 15 ms there.

    nas device serve --port 8765 --threads 4        # or: python -m evaluators.latency.server ...

Imports only the standard library, numpy, onnxruntime and the torch-free modules timing, ort and
target: a phone, a Jetson or a Raspberry Pi needs neither torch nor the search. One request at a
time (http.server.HTTPServer, single-threaded on purpose): two timings at once would spoil both.

Protocol 1: JSON over HTTP/1.0. Every request but GET /health carries `Authorization: Bearer TOKEN`
(401 otherwise). A model is `{"onnx": base64 of the ONNX bytes, "inputs": {name: {"shape": [1, 3,
320, 320], "dtype": "float32"}}}`; the server makes the inputs itself (fixed seed, uniform 0..1).

    GET  /health    {"ok": true, "protocol": 1}
    GET  /identity  the device (processor, physical_cores, onnxruntime_version, provider, threads,
                    hostname, machine, system, python, server, version, protocol, max_bytes) and
                    "stats" (requests, blocks_timed, models_timed, model_errors, canary_checks, ...)
    GET  /stats     the stats alone
    POST /canary    a model: the quiet-machine reference block (timing.Canary), kept in memory
    POST /quiet     {"wait_s": 0..600, "record_ms": R|null, "threads": N} -> {"quiet", "waited_s",
                    "canary_ms", "record_ms"}: waits (up to wait_s) until the canary runs within 10%
                    of its record (the server's, or the client's table record if lower); 409 before
                    any POST /canary
    POST /time      {"mode": "blocks"|"models", "models": {name: model}, "threads": N, "timing": {..},
                    "wait_s": S, "record_ms": R} -> {"results": {name: {"ms": ..} | {"error": "one
                    line"}}, "canary": {as /quiet} | null, "elapsed_s"}
                    blocks: timing.time_interleaved (timing: rounds, warmup, runs, min_time_s);
                    models: the median of timing.time_calls, best of `passes` (timing: warmup, runs,
                    min_time_s, max_runs, passes), with "mean_ms", "p10_ms", "p90_ms", "std_ms", "runs"
Errors are `{"error": "one line"}`: 400 malformed JSON or fields, 401 token, 404, 405, 409, 411 no
Content-Length, 413 over --max-mb (the body is not read), 500 (the server's log has the rest). A
model that fails to load or run is that model's error; the others are still timed.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import math
import os
import platform
import secrets
import socket
import sys
import time
import traceback
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

from nas.errors import UserError

from .target import cpu_name, physical_cores

PROTOCOL = 1
SERVER = "ghost-nas device server"
DEFAULT_PORT = 8765
DEFAULT_MAX_MB = 64
TOKEN_ENV = "NAS_DEVICE_TOKEN"

MAX_MODELS = 256            # per request
MAX_INPUTS = 16             # per model
MAX_ELEMENTS = 1 << 26      # per input (256 MiB of float32)
MAX_WAIT_S = 600.0
MAX_THREADS = 1024
DTYPES = ("float32", "float16", "float64", "int64", "int32", "uint8", "bool")
# (default, smallest, largest) of each timing knob: bounded, so one request cannot hold the device for hours
BLOCK_TIMING = {"rounds": (3, 1, 20), "warmup": (3, 0, 1000), "runs": (5, 1, 10000), "min_time_s": (0.01, 0.0, 10.0)}
MODEL_TIMING = {"warmup": (10, 0, 1000), "runs": (50, 1, 10000), "min_time_s": (1.0, 0.0, 60.0),
                "max_runs": (2000, 1, 100000), "passes": (1, 1, 10)}


def processor_name() -> str:
    """The CPU model; where /proc/cpuinfo names none (many ARM boards: only "aarch64"), the board's
    model from the device tree, so that a Raspberry Pi and a Jetson do not share a table."""
    name = cpu_name()
    if name in ("", "unknown", platform.machine(), platform.processor()):
        for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
            try:
                model = Path(path).read_text(errors="replace").strip("\x00 \n")
            except OSError:
                continue
            if model:
                return f"{model} ({name})" if name else model
    return name


def version() -> str:
    try:
        from importlib.metadata import version as dist_version
        return dist_version("ghost-nas")
    except Exception:  # copied files, no installed distribution
        return "unknown"


class BadRequest(ValueError):
    """A malformed request: 400 with this one-line message."""


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- the timing service (no HTTP) -------------------------------------------------------------------

class TimingService:
    """What the device does: identity, the canary, timing. numpy and onnxruntime load here."""

    def __init__(self, threads: int | None = None, provider: str = "CPUExecutionProvider",
                 max_bytes: int = DEFAULT_MAX_MB << 20, processor: str | None = None):
        try:
            import onnxruntime
        except ImportError:
            raise UserError("the device server needs onnxruntime and numpy: pip install numpy onnxruntime")
        available = onnxruntime.get_available_providers()
        if provider not in available:
            raise UserError(f"execution provider {provider!r} is not available here: use one of {', '.join(available)}")
        threads = physical_cores() if threads is None else int(threads)
        if not 1 <= threads <= MAX_THREADS:
            raise UserError(f"--threads must be 1..{MAX_THREADS}, got {threads}")
        self.ort_version, self.available = onnxruntime.__version__, available
        self.threads, self.provider, self.max_bytes = threads, provider, int(max_bytes)
        self.processor = " ".join(str(processor).split())[:200] if processor else processor_name()
        self.canary_model: tuple[bytes, dict] | None = None
        self.canary_records: dict[int, float] = {}  # threads -> the canary's best (ms)
        self.started = time.time()
        self.stats = dict(requests=0, refused=0, bad_requests=0, blocks_timed=0, models_timed=0,
                          model_errors=0, canary_checks=0)

    def identity(self) -> dict:
        return {"server": SERVER, "version": version(), "protocol": PROTOCOL,
                "processor": self.processor, "physical_cores": physical_cores(),
                "onnxruntime_version": self.ort_version, "provider": self.provider,
                "providers_available": self.available, "threads": self.threads,
                "hostname": socket.gethostname(), "machine": platform.machine(), "system": platform.system(),
                "python": platform.python_version(), "max_bytes": self.max_bytes,
                "canary": self.canary_model is not None, "stats": self.stats_now()}

    def stats_now(self) -> dict:
        return {**self.stats, "uptime_s": round(time.time() - self.started, 1)}

    # -- requests -------------------------------------------------------------------------------

    def set_canary(self, body: dict) -> dict:
        model = parse_model(body, "canary")
        if self.canary_model is None or self.canary_model[0] != model[0]:
            self.canary_records = {}  # another reference block: its records start over
        self.canary_model = model
        return {"ok": True}

    def quiet(self, body: dict) -> dict:
        return self._wait(_number(body, "wait_s", 0.0, 0.0, MAX_WAIT_S), _record(body), self._threads(body))

    def time(self, body: dict) -> dict:
        start = time.perf_counter()
        mode = body.get("mode", "blocks")
        if mode not in ("blocks", "models"):
            raise BadRequest(f"mode must be 'blocks' or 'models', got {str(mode)[:40]!r}")
        models = body.get("models")
        if not isinstance(models, dict) or not models:
            raise BadRequest("models must be a non-empty object {name: model}")
        if len(models) > MAX_MODELS:
            raise BadRequest(f"at most {MAX_MODELS} models per request, got {len(models)}")
        parsed = {str(name): parse_model(m, f"models[{str(name)[:60]!r}]") for name, m in models.items()}
        timing = body.get("timing", {})
        if not isinstance(timing, dict):
            raise BadRequest("timing must be an object")
        knobs = BLOCK_TIMING if mode == "blocks" else MODEL_TIMING
        unknown = set(timing) - set(knobs)
        if unknown:
            raise BadRequest(f"unknown timing field(s) for {mode}: {', '.join(sorted(unknown))[:100]}")
        timing = {k: _number(timing, k, *spec, integer=k != "min_time_s") for k, spec in knobs.items()}
        threads = self._threads(body)
        wait_s = _number(body, "wait_s", 0.0, 0.0, MAX_WAIT_S)
        canary = self._wait(wait_s, _record(body), threads) if wait_s > 0 else None
        if mode == "blocks":
            results = self._time_blocks(parsed, threads, timing)
        else:
            results = self._time_models(parsed, threads, timing)
        return {"results": results, "canary": canary, "elapsed_s": round(time.perf_counter() - start, 3)}

    # -- timing ---------------------------------------------------------------------------------

    def _opener(self, model: tuple[bytes, dict], threads: int):
        from .ort import session_opener
        onnx_bytes, specs = model
        return session_opener(onnx_bytes, make_feeds(specs), threads, [self.provider])

    def _guarded(self, name: str, model, threads: int, errors: dict):
        """An opener that records a model's failure to load or run instead of raising, and then
        stands in as a no-op (its figure is dropped), so that the other models are still timed."""
        try:
            opener = self._opener(model, threads)
        except Exception as e:  # inputs that cannot be made
            errors[name] = one_line(e)
            opener = None

        def open_runner():
            if name in errors:
                return _noop
            try:
                run = opener()
                run()  # one call more of warm-up; a model that cannot run fails here
                return run
            except Exception as e:
                errors[name] = one_line(e)
                return _noop
        return open_runner

    def _time_blocks(self, models: dict, threads: int, timing: dict) -> dict:
        from .timing import time_interleaved
        errors: dict[str, str] = {}
        openers = {name: self._guarded(name, m, threads, errors) for name, m in models.items()}
        try:
            best = time_interleaved(openers, **timing)
        except Exception as e:  # a run that failed after its first call: none of the batch is trusted
            best = {}
            for name in models:
                errors.setdefault(name, one_line(e))
        results = {name: ({"error": errors[name]} if name in errors else {"ms": best[name]}) for name in models}
        self.stats["blocks_timed"] += len(models) - len(errors)
        self.stats["model_errors"] += len(errors)
        return results

    def _time_models(self, models: dict, threads: int, timing: dict) -> dict:
        import numpy as np

        from .timing import time_calls
        passes = timing.pop("passes")
        best: dict[str, list[float]] = {}
        errors: dict[str, str] = {}
        for _ in range(passes):
            for name, m in models.items():
                if name in errors:
                    continue
                try:
                    run = self._opener(m, threads)()
                    times = time_calls(run, **timing)
                    del run
                except Exception as e:
                    errors[name] = one_line(e)
                    continue
                if name not in best or np.median(times) < np.median(best[name]):
                    best[name] = times
        results = {}
        for name in models:
            if name in errors:
                results[name] = {"error": errors[name]}
                continue
            t = np.asarray(best[name], dtype=np.float64)
            p10, median, p90 = np.percentile(t, [10, 50, 90])
            results[name] = {"ms": float(median), "mean_ms": float(t.mean()), "p10_ms": float(p10),
                             "p90_ms": float(p90), "std_ms": float(t.std()), "runs": int(t.size)}
        self.stats["models_timed"] += len(models) - len(errors)
        self.stats["model_errors"] += len(errors)
        return results

    def _wait(self, wait_s: float, record_ms: float | None, threads: int) -> dict:
        from .timing import Canary
        if self.canary_model is None:
            raise HTTPError(409, "no canary yet: POST /canary first")
        record = min(self.canary_records.get(threads, math.inf), record_ms if record_ms else math.inf)
        canary = Canary(self._opener(self.canary_model, threads), record)
        start = time.perf_counter()
        try:
            quiet = canary.wait(wait_s)
        except Exception as e:
            raise BadRequest(f"the canary model does not run: {one_line(e)}")
        self.stats["canary_checks"] += 1
        if math.isfinite(canary.record_ms):
            self.canary_records[threads] = canary.record_ms
        return {"quiet": bool(quiet), "waited_s": round(time.perf_counter() - start, 3),
                "canary_ms": _finite(canary.last_ms), "record_ms": _finite(canary.record_ms)}

    def _threads(self, body: dict) -> int:
        return int(_number(body, "threads", self.threads, 1, MAX_THREADS, integer=True))


def _noop():
    return None


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _record(body: dict) -> float | None:
    if body.get("record_ms") is None:
        return None
    return _number(body, "record_ms", None, 0.0, 1e9)


def _number(body: dict, key: str, default, lo: float, hi: float, integer: bool = False):
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"{key} must be a number, got {str(value)[:40]!r}")
    if integer and value != int(value):
        raise BadRequest(f"{key} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise BadRequest(f"{key} must be in {lo:g}..{hi:g}, got {value!r}")
    return int(value) if integer else float(value)


def parse_model(m, where: str) -> tuple[bytes, dict]:
    """(ONNX bytes, {input name: (shape, dtype)}) of a model in a request; BadRequest if malformed."""
    if not isinstance(m, dict):
        raise BadRequest(f"{where} must be an object with 'onnx' and 'inputs'")
    if not isinstance(m.get("onnx"), str) or not m["onnx"]:
        raise BadRequest(f"{where}.onnx must be the model's bytes in base64")
    try:
        onnx_bytes = base64.b64decode(m["onnx"], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}.onnx is not valid base64")
    inputs = m.get("inputs")
    if not isinstance(inputs, dict) or not 1 <= len(inputs) <= MAX_INPUTS:
        raise BadRequest(f"{where}.inputs must be an object of 1..{MAX_INPUTS} inputs "
                         "{name: {\"shape\": [...], \"dtype\": \"float32\"}}")
    specs = {}
    for name, spec in inputs.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("shape"), list):
            raise BadRequest(f"{where}.inputs[{str(name)[:60]!r}] must be {{\"shape\": [...], \"dtype\": ...}}")
        shape = spec["shape"]
        if len(shape) > 8 or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 1 << 20
                                     for d in shape):
            raise BadRequest(f"{where}.inputs[{str(name)[:60]!r}].shape must be at most 8 positive integers")
        if math.prod(shape) > MAX_ELEMENTS:
            raise BadRequest(f"{where}.inputs[{str(name)[:60]!r}] has over {MAX_ELEMENTS} elements")
        dtype = spec.get("dtype", "float32")
        if dtype not in DTYPES:
            raise BadRequest(f"{where}.inputs[{str(name)[:60]!r}].dtype must be one of {', '.join(DTYPES)}")
        specs[str(name)] = (tuple(shape), dtype)
    return onnx_bytes, specs


def make_feeds(specs: dict) -> dict:
    """The inputs of a model, always the same: uniform 0..1 from seed 0 (integers and booleans: zeros)."""
    import numpy as np
    rng = np.random.default_rng(0)
    return {name: (rng.random(shape, dtype=np.float64).astype(dtype) if dtype.startswith("float")
                   else np.zeros(shape, dtype=dtype)) for name, (shape, dtype) in specs.items()}


# -- HTTP -------------------------------------------------------------------------------------------

_PATHS = ("/health", "/identity", "/stats", "/canary", "/quiet", "/time")


class Handler(BaseHTTPRequestHandler):
    server_version = "ghost-nas-device/1"
    timeout = 60  # a client that stalls mid-request frees the server after this long
    service: TimingService
    token: str

    def do_GET(self):
        self._handle({"/health": None, "/identity": self.service.identity, "/stats": self.service.stats_now},
                     body=False)

    def do_POST(self):
        self._handle({"/canary": self.service.set_canary, "/quiet": self.service.quiet,
                      "/time": self.service.time}, body=True)

    def do_PUT(self):
        self._reply(405, {"error": f"method {self.command} not allowed"})

    do_DELETE = do_PATCH = do_PUT

    def _handle(self, routes: dict, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/health" and not body:
                return self._reply(200, {"ok": True, "protocol": PROTOCOL})
            self.service.stats["requests"] += 1
            if not self._authorised():
                self.service.stats["refused"] += 1
                raise HTTPError(401, "token refused: give the device's token (Authorization: Bearer TOKEN)")
            if path not in routes:
                raise HTTPError(405 if path in _PATHS else 404, f"no {self.command} {path[:80]}")
            if body:
                return self._reply(200, routes[path](self._read_json()))
            return self._reply(200, routes[path]())
        except HTTPError as e:
            if e.status in (400, 411, 413):
                self.service.stats["bad_requests"] += 1
            self._reply(e.status, {"error": str(e)})
        except BadRequest as e:
            self.service.stats["bad_requests"] += 1
            self._reply(400, {"error": str(e)})
        except Exception as e:  # a bug: the client gets one line, the server's log the traceback
            traceback.print_exc(file=sys.stderr)
            self._reply(500, {"error": f"internal error ({type(e).__name__}); see the server's log"})

    def _authorised(self) -> bool:
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        value = value.strip() if scheme.lower() == "bearer" else ""
        return hmac.compare_digest(value.encode("utf-8", "replace"), self.token.encode())

    def _read_json(self) -> dict:
        length = self.headers.get("Content-Length")
        if length is None:
            raise HTTPError(411, "Content-Length required")
        try:
            length = int(length)
        except ValueError:
            raise HTTPError(400, "Content-Length is not a number")
        if length < 0:
            raise HTTPError(400, "Content-Length is negative")
        if length > self.service.max_bytes:  # refused unread
            raise HTTPError(413, f"request of {length} bytes is over this server's limit of "
                                 f"{self.service.max_bytes} bytes (--max-mb)")
        data = self.rfile.read(length)
        if len(data) < length:
            raise HTTPError(400, f"body ended after {len(data)} of {length} bytes")
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise HTTPError(400, f"malformed JSON: {one_line(e, 200)}")
        if not isinstance(body, dict):
            raise HTTPError(400, "the body must be a JSON object")
        return body

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload, allow_nan=False).encode()
        self.close_connection = True  # one request per connection; an unread body is never read
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client went away
            pass

    def log_message(self, format, *args):  # one line per request on stderr, without the client's junk
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {self.address_string()} {format % args}"[:300] + "\n")


class DeviceServer(HTTPServer):
    allow_reuse_address = True

    def handle_error(self, request, client_address):  # a broken connection: one line, keep serving
        e = sys.exc_info()[1]
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {client_address[0]} connection error: {one_line(e)}\n")


def read_token(token_file: str | os.PathLike | None) -> tuple[str, str]:
    """(token, where it came from). A --token-file that exists is read; one that does not is created
    (0600) with a new token; without one, NAS_DEVICE_TOKEN's, else a new one, printed."""
    if token_file is None:
        if os.environ.get(TOKEN_ENV, "").strip():
            return os.environ[TOKEN_ENV].strip(), f"from {TOKEN_ENV}"
        return secrets.token_urlsafe(24), "new"
    path = Path(token_file)
    try:
        if path.exists():
            token = path.read_text().strip()
            if not token or any(c.isspace() for c in token):
                raise UserError(f"--token-file {path}: empty, or not one word")
            return token, f"read from {path}"
        token = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    except OSError as e:
        raise UserError(f"--token-file {path}: {e.strerror or one_line(e)}")
    return token, f"new, written to {path}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes the "
                        "server to the network, guarded by its token only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks a free one")
    p.add_argument("--threads", type=int, default=None,
                   help="onnxruntime intra-op threads (default: all physical cores); a search may ask for others")
    p.add_argument("--provider", default="CPUExecutionProvider", help="onnxruntime execution provider")
    p.add_argument("--processor", default=None, metavar="NAME",
                   help="name the device's processor (default: from /proc/cpuinfo or the device tree); it keys "
                        "the search's latency tables, so give boards the system cannot tell apart their own names")
    p.add_argument("--token-file", default=None, metavar="F",
                   help=f"read the token from F (created with a new token if missing); default: ${TOKEN_ENV}, "
                        "else a new token, printed")
    p.add_argument("--max-mb", type=float, default=DEFAULT_MAX_MB, metavar="M",
                   help=f"largest request accepted, MiB (default {DEFAULT_MAX_MB})")


def serve(args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0..65535, got {args.port}")
    if not args.max_mb > 0:
        raise UserError(f"--max-mb must be positive, got {args.max_mb}")
    service = TimingService(args.threads, args.provider, int(args.max_mb * (1 << 20)), args.processor)
    token, where = read_token(args.token_file)
    handler = type("BoundHandler", (Handler,), {"service": service, "token": token})
    try:
        server = DeviceServer((args.host, args.port), handler)
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {one_line(e)}")
    host, port = server.server_address[:2]
    print(f"{SERVER} (protocol {PROTOCOL}) listening on http://{host}:{port}  "
          f"[{service.threads} thread{'s' * (service.threads != 1)}, {service.provider}, "
          f"onnxruntime {service.ort_version}, {service.processor}]", file=out)
    print(f"token: {token}" if where == "new" else f"token: {where}", file=out)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this port and has the token can "
              "make this machine run models", file=out)
    out.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=out)
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluators.latency.server",
                                description="Time ONNX models on this machine for a ghost-nas search elsewhere.")
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return serve(args)
    except UserError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
