"""The remote backend: blocks and whole models are exported here and timed on the device a detector
ships to, where `nas device serve` runs (server.py, whose docstring is the protocol). Tables and
budgets are then the device's: its `Target` names the device's processor, onnxruntime and host.

    device = Device("http://jetson.local:8765", read_token(token_file))   # one request: its identity
    device.target(320)                            # the device's Target (tables are keyed by it)
    backend = RemoteBackend(device, imgsz=320)    # what a LatencyPredictor times through, like LocalBackend
    backend.time_blocks(keys), backend.measure(arch), backend.canary.wait()

Every failure (unreachable, refused token, timeout, a model the device cannot run) is one line:
a `UserError` naming the URL.
"""
from __future__ import annotations

import base64
import http.client
import json
import math
import os
import socket
import urllib.parse
from pathlib import Path

from nas.errors import UserError

from .server import PROTOCOL, TOKEN_ENV
from .target import Target
from .timing import CANARY_MAX_WAIT_S

CONNECT_TIMEOUT_S = 15.0  # identity, canary upload: a device that takes longer is not there
TIMING_TIMEOUT_S = 900.0  # a batch of blocks or a whole model, beyond any canary wait
BATCH_FILL = 0.8          # of the device's --max-mb per request (base64 and JSON around the models)
CUDA_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class DeviceError(UserError):
    """The device answered with an error (`status`), or could not be asked."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def read_token(token_file: str | os.PathLike | None = None) -> str | None:
    """The device's token: the file's content, else $NAS_DEVICE_TOKEN, else None."""
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise UserError(f"token file {token_file}: {e.strerror or e}")
        where = f"token file {token_file}"
    else:
        token, where = os.environ.get(TOKEN_ENV, "").strip(), TOKEN_ENV
        if not token:
            return None
    if not token or not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise UserError(f"{where}: not a token (one word of printable ASCII expected)")
    return token


def normalize_url(url: str) -> str:
    """`http://host:port` (a bare `host:port` gets http://), without a trailing slash; UserError if not a URL."""
    url = str(url).strip()
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    try:
        _ = parts.port  # raises on a bad port
    except ValueError:
        raise UserError(f"latency target {url}: bad port")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise UserError(f"latency target {url!r}: give the device server's URL, e.g. http://192.168.1.20:8765")
    return url.rstrip("/")


class Device:
    """A device server, asked for its identity at once (so a wrong URL or token fails here)."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = CONNECT_TIMEOUT_S):
        self.url, self.token, self.timeout_s = normalize_url(url), token, timeout_s
        parts = urllib.parse.urlsplit(self.url)
        self._https, self._host, self._path = parts.scheme == "https", parts.hostname, parts.path.rstrip("/")
        self._port = parts.port or (443 if self._https else 80)
        self.info: dict = {}
        self.info = self.identity()

    def identity(self) -> dict:
        info = self.request("GET", "/identity")
        needed = {"protocol": int, "processor": str, "onnxruntime_version": str, "provider": str,
                  "threads": int, "hostname": str, "max_bytes": int}
        if not all(isinstance(info.get(k), t) for k, t in needed.items()):
            raise DeviceError(f"latency target {self.url}: not a ghost-nas device server (its identity lacks "
                              f"{', '.join(k for k, t in needed.items() if not isinstance(info.get(k), t))})")
        if info["protocol"] != PROTOCOL:
            raise DeviceError(f"latency target {self.url}: the server speaks protocol {info['protocol']}, this "
                              f"search {PROTOCOL}: install the same ghost-nas version on both")
        return info

    def target(self, imgsz: int = 320, threads: int | None = None) -> Target:
        """The device's Target: onnxruntime with its provider, `threads` (default: the server's)."""
        threads = self.info["threads"] if threads is None else int(threads)
        if threads < 1:
            raise UserError(f"threads must be at least 1, got {threads}")
        provider = self.info["provider"]
        processor = self.info["processor"] + ("" if provider == "CPUExecutionProvider" else f" ({provider})")
        return Target("cuda" if provider in CUDA_PROVIDERS else "cpu", "onnxruntime", threads, int(imgsz),
                      "", self.info["onnxruntime_version"], processor, self.info["hostname"])

    def request(self, method: str, path: str, body: dict | None = None, timeout_s: float | None = None) -> dict:
        """The JSON reply of one request; a DeviceError (one line, naming the URL) otherwise."""
        where = f"latency target {self.url}"
        data = None if body is None else json.dumps(body).encode()
        limit = self.info.get("max_bytes")
        if data is not None and limit and len(data) > limit:
            raise DeviceError(f"{where}: a request of {len(data) / 2**20:.1f} MiB is over the device's limit of "
                              f"{limit / 2**20:.1f} MiB (its --max-mb)", 413)
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        connection = (http.client.HTTPSConnection if self._https else http.client.HTTPConnection)(
            self._host, self._port, timeout=timeout_s)
        try:
            connection.request(method, self._path + path, body=data, headers=headers)
            reply = connection.getresponse()
            status, raw = reply.status, reply.read(64 << 20)
        except ConnectionRefusedError:
            raise DeviceError(f"{where}: connection refused (is `nas device serve` running there, on this port?)")
        except socket.gaierror:
            raise DeviceError(f"{where}: unknown host {self._host!r}")
        except TimeoutError:
            raise DeviceError(f"{where}: no answer within {timeout_s:.0f} s")
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            raise DeviceError(f"{where}: the connection was closed mid-request (a request over the device's "
                              f"--max-mb, or not a device server?)")
        except http.client.HTTPException as e:
            raise DeviceError(f"{where}: not a ghost-nas device server (bad HTTP reply: {type(e).__name__})")
        except OSError as e:
            raise DeviceError(f"{where}: {e.strerror or e}")
        finally:
            connection.close()
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            payload = None
        if not isinstance(payload, dict):
            raise DeviceError(f"{where}: not a ghost-nas device server (HTTP {status}, the reply is not a JSON object)",
                              status)
        if status == 401:
            raise DeviceError(f"{where}: token refused (401): give the device's token with --token-file "
                              f"(--latency-token-file for nas search) or {TOKEN_ENV}", 401)
        if status >= 400:
            message = " ".join(str(payload.get("error", "")).split())[:300] or "no reason given"
            raise DeviceError(f"{where}: the device refused the request ({status}): {message}", status)
        return payload


class RemoteBackend:
    """Times on a device server (same calls as local.LocalBackend): blocks and whole models are
    exported here and sent; the device times them with timing.py's discipline."""

    def __init__(self, device: Device | str, token: str | None = None, imgsz: int = 320, threads: int | None = None):
        self.device = device if isinstance(device, Device) else Device(device, token)
        self.target = self.device.target(imgsz, threads)
        self.canary = RemoteCanary(self)
        self._exports: dict[str, dict] = {}  # the last batches' blocks, as sent (a batch may be timed again)
        self._models: dict[str, dict] = {}   # whole models, as sent

    def time_blocks(self, keys: list[str], rounds: int = 3, warmup: int = 3, runs: int = 5,
                    min_time_s: float = 0.01) -> dict[str, float]:
        """Latency (ms) of each block alone on the device (timing.time_interleaved there)."""
        keys = list(dict.fromkeys(keys))
        if len(self._exports) > 256:
            self._exports.clear()
        models = {k: self._block(k) for k in keys}
        timing = {"rounds": rounds, "warmup": warmup, "runs": runs, "min_time_s": min_time_s}
        results = {}
        for batch in self._batches(models):
            reply = self.device.request("POST", "/time", {"mode": "blocks", "models": batch, "timing": timing,
                                                          "threads": self.target.threads}, TIMING_TIMEOUT_S)
            results.update(reply.get("results") or {})
        return {k: self._ms(results.get(k), f"block {k}")["ms"] for k in keys}

    def measure(self, arch: dict, **timing) -> float:
        """Measured latency (ms, median) of the whole detector on the device."""
        return self.measure_result(arch, **timing).median_ms

    def measure_result(self, arch, warmup: int = 10, runs: int = 50, min_time_s: float = 1.0,
                       max_runs: int = 2000, passes: int = 1):
        """The whole detector's deploy graph (with decode, as `nas onnx` ships it) timed on the device:
        a LatencyResult of its best pass (smallest median), with the device's Target."""
        from nas.models import build_model

        from ..onnx_export import export_onnx
        from .measure import LatencyResult

        imgsz = self.target.imgsz
        key = json.dumps(arch, sort_keys=True) if isinstance(arch, dict) else None
        model = self._models.get(key) if key else None
        if model is None:  # exported once however often it is timed (calibration times each twice)
            detector = arch if hasattr(arch, "forward") else build_model(arch)  # a Detector, a dict or a YAML path
            model = {"onnx": base64.b64encode(export_onnx(detector, None, imgsz)).decode(),
                     "inputs": {"images": {"shape": [1, 3, imgsz, imgsz], "dtype": "float32"}}}
            if key:
                if len(self._models) >= 32:
                    self._models.clear()
                self._models[key] = model
        timing = {"warmup": warmup, "runs": runs, "min_time_s": min_time_s, "max_runs": max_runs, "passes": passes}
        reply = self.device.request("POST", "/time", {"mode": "models", "models": {"model": model}, "timing": timing,
                                                      "threads": self.target.threads}, TIMING_TIMEOUT_S)
        r = self._ms((reply.get("results") or {}).get("model"), "the model")
        try:
            return LatencyResult(float(r["ms"]), float(r["mean_ms"]), float(r["p10_ms"]), float(r["p90_ms"]),
                                 float(r["std_ms"]), int(r["runs"]), self.target)
        except (KeyError, TypeError, ValueError):
            raise DeviceError(f"latency target {self.device.url}: malformed timing reply")

    # -- helpers --------------------------------------------------------------------------------

    def _block(self, key: str) -> dict:
        if key not in self._exports:
            from .blocks import block_onnx

            onnx_bytes, feeds = block_onnx(key)
            self._exports[key] = wire_model(onnx_bytes, feeds)
        return self._exports[key]

    def _batches(self, models: dict):
        """The models in requests that fit the device's --max-mb."""
        limit = self.device.info["max_bytes"] * BATCH_FILL
        batch, size = {}, 0
        for k, m in models.items():
            n = len(m["onnx"]) + len(k) + 200
            if batch and size + n > limit:
                yield batch
                batch, size = {}, 0
            batch[k], size = m, size + n
        if batch:
            yield batch

    def _ms(self, result, what: str) -> dict:
        if isinstance(result, dict) and "error" in result:
            raise DeviceError(f"latency target {self.device.url}: the device could not run {what[:120]}: "
                              f"{str(result['error'])[:300]}")
        if not isinstance(result, dict) or not isinstance(result.get("ms"), (int, float)) \
                or not math.isfinite(result["ms"]) or result["ms"] <= 0:
            raise DeviceError(f"latency target {self.device.url}: no timing of {what[:120]} in the reply")
        return result


def wire_model(onnx_bytes: bytes, feeds: dict) -> dict:
    """A model as the protocol sends it: base64 ONNX and its inputs' shapes and dtypes."""
    return {"onnx": base64.b64encode(onnx_bytes).decode(),
            "inputs": {name: {"shape": [int(d) for d in x.shape], "dtype": str(x.dtype)} for name, x in feeds.items()}}


class RemoteCanary:
    """timing.Canary's calls, answered by the device: the reference block runs there. `record_ms`
    is the table's (sent with every check, so a restarted server keeps the standard)."""

    def __init__(self, backend: RemoteBackend):
        self.backend = backend
        self.record_ms, self.last_ms = math.inf, math.nan
        self._sent = False

    def quiet(self) -> bool:
        return self._check(0.0)

    def wait(self, max_wait_s: float = CANARY_MAX_WAIT_S, poll_s: float = 2.0, first_poll_s: float = 0.1) -> bool:
        """True once the canary runs within tolerance of its record on the device, False after `max_wait_s`."""
        return self._check(max(0.0, float(max_wait_s)))

    def time(self) -> float:
        self._check(0.0)
        return self.last_ms

    def _check(self, wait_s: float) -> bool:
        device = self.backend.device
        body = {"wait_s": min(wait_s, 600.0), "threads": self.backend.target.threads,
                "record_ms": self.record_ms if math.isfinite(self.record_ms) else None}
        for attempt in range(2):
            if not self._sent:
                from .blocks import CANARY_KEY, block_onnx

                device.request("POST", "/canary", wire_model(*block_onnx(CANARY_KEY)))
                self._sent = True
            try:
                reply = device.request("POST", "/quiet", body, CONNECT_TIMEOUT_S + body["wait_s"] + 60)
                break
            except DeviceError as e:
                if e.status != 409 or attempt:  # 409: a restarted server has no canary yet
                    raise
                self._sent = False
        if isinstance(reply.get("canary_ms"), (int, float)):
            self.last_ms = float(reply["canary_ms"])
        if isinstance(reply.get("record_ms"), (int, float)):
            self.record_ms = min(self.record_ms, float(reply["record_ms"]))
        return bool(reply.get("quiet"))
