"""The device server (`nas device serve`) and the remote latency target: a real server process on
this machine, pinned to one core and naming itself "Test Device", stands in for the device a
detector ships to. Requests go over loopback only; every wait is bounded."""
import base64
import http.client
import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas.errors import UserError
from tests.helpers import tiny_arch
from tests.searching import FAST, SPACE, load

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "ray", "optuna")
PROCESSOR = "Test Device (loopback)"
QUICK_BLOCKS = dict(rounds=1, warmup=2, runs=5, min_time_s=0.0)  # the discipline is tested in test_latency
QUICK_MODEL = dict(warmup=2, runs=5, min_time_s=0.0)


def _pin_to_one_core():
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


class Server:
    def __init__(self, folder: Path):
        self.token_file = folder / "device.token"
        self.log = open(folder / "server.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "evaluators.latency.server", "--port", "0", "--threads", "1",
             "--token-file", str(self.token_file), "--processor", PROCESSOR, "--max-mb", "8"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, preexec_fn=_pin_to_one_core)
        out, deadline = b"", time.monotonic() + 60
        while b"\ntoken:" not in out or not out.endswith(b"\n"):  # printed after "listening on"
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self.proc.stdout.fileno(), 4096) if ready else b""
            if not chunk:
                self.stop()
                raise RuntimeError(f"the device server did not start: {out.decode()!r}")
            out += chunk
        self.lines = lines = out.decode().splitlines()
        self.url = next(w for w in lines[0].split() if w.startswith("http://"))
        self.port = int(self.url.rsplit(":", 1)[1])
        self.token = self.token_file.read_text().strip()

    def request(self, method, path, body=None, token="right", headers=None):
        """(status, JSON reply) of a raw request."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"Bearer {self.token if token == 'right' else token}"
        try:
            conn.request(method, path, body=body, headers=headers)
            reply = conn.getresponse()
            return reply.status, json.loads(reply.read())
        finally:
            conn.close()

    def stats(self) -> dict:
        return self.request("GET", "/stats")[1]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdout.close()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("device"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def canary_model():
    from evaluators.latency.blocks import CANARY_KEY, block_onnx
    from evaluators.latency.remote import wire_model

    return wire_model(*block_onnx(CANARY_KEY))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


# --- the server ----------------------------------------------------------------------------------

def test_the_server_imports_neither_torch_nor_ray_nor_optuna(server):
    code = ("import json, sys\n"
            "import evaluators.latency.server as s\n"
            "s.TimingService(1)\n"  # numpy and onnxruntime load here
            "from nas.cli import main\n"
            "assert main(['device', 'serve', '--help']) == 0\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    maps = Path(f"/proc/{server.proc.pid}/maps")
    if maps.exists():  # the running server has no libtorch either
        assert "libtorch" not in maps.read_text()


def test_identity_tokens_and_bad_requests_leave_the_server_serving(server, canary_model):
    assert "token: new, written to" in server.lines[1]  # the token was generated and written (0600)
    assert (server.token_file.stat().st_mode & 0o777) == 0o600
    assert server.request("GET", "/health", token=None) == (200, {"ok": True, "protocol": 1})
    status, info = server.request("GET", "/identity")
    assert status == 200 and info["protocol"] == 1 and info["threads"] == 1 and info["processor"] == PROCESSOR
    assert info["onnxruntime_version"] and info["provider"] == "CPUExecutionProvider" and info["hostname"]
    assert info["max_bytes"] == 8 << 20 and "python" in info and "machine" in info
    before = info["stats"]

    for token in (None, "wrong", server.token + "x"):
        status, reply = server.request("GET", "/identity", token=token)
        assert status == 401 and "token refused" in reply["error"] and "\n" not in reply["error"]
    assert server.request("POST", "/time", b"{}", token="wrong")[0] == 401

    status, reply = server.request("POST", "/time", b'{"mode": "blocks", "models": {')
    assert status == 400 and reply["error"].startswith("malformed JSON") and "\n" not in reply["error"]
    status, reply = server.request("POST", "/time", json.dumps({"models": {"a": {"onnx": "%%%", "inputs": {}}}}))
    assert status == 400 and "base64" in reply["error"]
    status, reply = server.request("POST", "/time", json.dumps({"mode": "blocks", "models": {"a": canary_model},
                                                                "timing": {"rounds": 10 ** 6}}))
    assert status == 400 and "rounds must be in" in reply["error"]

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)  # 1 TB announced, nothing sent
    conn.putrequest("POST", "/time")
    conn.putheader("Authorization", f"Bearer {server.token}")
    conn.putheader("Content-Length", str(10 ** 12))
    conn.endheaders()
    reply = conn.getresponse()
    assert reply.status == 413 and "limit" in json.loads(reply.read())["error"]
    conn.close()
    assert server.request("GET", "/nowhere")[0] == 404 and server.request("GET", "/time")[0] == 405

    garbage = {"onnx": base64.b64encode(b"not an onnx model").decode(), "inputs": {"x0": {"shape": [1, 3]}}}
    status, reply = server.request("POST", "/time", json.dumps(
        {"mode": "blocks", "models": {"garbage": garbage, "canary": canary_model}, "timing": QUICK_BLOCKS}))
    assert status == 200
    assert set(reply["results"]["garbage"]) == {"error"} and "\n" not in reply["results"]["garbage"]["error"]
    assert reply["results"]["canary"]["ms"] > 0  # the other model of the request is timed all the same
    status, reply = server.request("POST", "/time", json.dumps(
        {"mode": "models", "models": {"garbage": garbage, "canary": canary_model}, "timing": QUICK_MODEL}))
    assert status == 200 and "error" in reply["results"]["garbage"]
    assert reply["results"]["canary"]["p10_ms"] <= reply["results"]["canary"]["ms"] <= reply["results"]["canary"]["p90_ms"]

    after = server.stats()  # still serving, and it counted what it saw
    assert after["refused"] - before["refused"] == 4 and after["bad_requests"] - before["bad_requests"] >= 4
    assert after["model_errors"] - before["model_errors"] == 2
    assert after["blocks_timed"] - before["blocks_timed"] == 1 and after["models_timed"] - before["models_timed"] == 1


# --- the client ----------------------------------------------------------------------------------

def test_remote_backend_times_on_the_device_and_fails_in_one_line(server):
    from evaluators.latency.blocks import arch_blocks
    from evaluators.latency.remote import Device, RemoteBackend, read_token

    device = Device(server.url, read_token(server.token_file))
    target = device.target(64)
    assert (target.device, target.backend, target.threads, target.processor) == ("cpu", "onnxruntime", 1, PROCESSOR)
    backend = RemoteBackend(device, imgsz=64)
    keys = [k for k, _ in arch_blocks(tiny_arch(), 64)][:3]
    before = server.stats()
    ms = backend.time_blocks(keys, **QUICK_BLOCKS)
    assert set(ms) == set(keys) and all(v > 0 for v in ms.values())
    assert server.stats()["blocks_timed"] - before["blocks_timed"] == len(keys)
    backend.canary.wait(0.5)  # the canary goes up once, then is checked there
    assert backend.canary.record_ms > 0 and backend.canary.last_ms > 0 and isinstance(backend.canary.quiet(), bool)

    from nas.search.latency import LatencyOracle

    oracle = LatencyOracle("measured", "cpu", None, None, "unused", target_url=server.url,
                           token_file=str(server.token_file))
    ms, source, where = oracle(tiny_arch())  # measured mode: the whole model, timed there
    assert ms > 0 and source == "measured" and where == target.to_dict()
    with pytest.raises(UserError, match="drop --latency-device"):
        LatencyOracle("measured", "cuda", None, None, "unused", target_url=server.url, token_file=str(server.token_file))

    with pytest.raises(UserError, match=r"token refused \(401\).*NAS_DEVICE_TOKEN"):
        Device(server.url, "wrong")
    with pytest.raises(UserError, match="connection refused"):
        Device(f"http://127.0.0.1:{_free_port()}", "x")
    with pytest.raises(UserError, match="give the device server's URL"):
        Device("ftp://127.0.0.1:1", "x")


def test_nas_latency_on_the_target(server, tmp_path, capsys, nas_main):
    from nas.models.arch import save_arch

    arch = tmp_path / "tiny.yaml"
    save_arch(tiny_arch(), arch)
    before = server.stats()
    assert nas_main(["latency", str(arch), "--target", server.url, "--token-file", str(server.token_file),
                     "--runs", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["latency_ms"] > 0 and out["device_url"] == server.url
    assert out["target"]["threads"] == 1 and out["target"]["processor"] == PROCESSOR and out["target"]["imgsz"] == 64
    assert server.stats()["models_timed"] - before["models_timed"] == 1

    wrong = tmp_path / "wrong.token"
    wrong.write_text("wrong\n")
    assert nas_main(["latency", str(arch), "--target", server.url, "--token-file", str(wrong)]) == 2
    assert "token refused (401)" in _one_line_error(capsys)
    assert nas_main(["latency", str(arch), "--target", server.url, "--token-file", str(arch)]) == 2
    assert "not a token" in _one_line_error(capsys)  # a file that holds something else


# --- the search ----------------------------------------------------------------------------------

def _search(name: str, *latency) -> list[str]:
    args = ["search", str(SPACE), "--budget", "1s", "--trials", "2", "--study", name, "--latency-cache", "tables",
            *latency, *FAST]
    args[args.index("--latency") + 1] = "predicted"
    return args


def test_a_search_against_the_device_keys_its_table_by_the_device(server, in_tmp, ray_cluster, monkeypatch,
                                                                  nas_main):
    from evaluators.latency import Target
    from evaluators.latency.predictor import LatencyPredictor
    from evaluators.latency.remote import Device, RemoteBackend
    from nas.search import latency as latency_module
    from nas.search.study import evaluated

    time_blocks = RemoteBackend.time_blocks
    monkeypatch.setattr(RemoteBackend, "time_blocks", lambda self, keys, **_: time_blocks(self, keys, **QUICK_BLOCKS))
    monkeypatch.setattr(LatencyPredictor, "wait_quiet", lambda self: False)
    monkeypatch.setattr(LatencyPredictor, "measure", lambda self, arch, **_: self.backend.measure(arch, **QUICK_MODEL))
    monkeypatch.setattr(latency_module, "CALIBRATION_ARCHS", 2)
    before = server.stats()
    assert nas_main(_search("remote", "--latency-target", server.url,
                            "--latency-token-file", str(server.token_file))) == 0

    device = Device(server.url, server.token).target(64)
    tables = sorted(p.name for p in (in_tmp / "tables").glob("latency-*.json"))
    assert tables == [f"latency-{device.key()}.json"]  # the device's, not this machine's:
    assert Target.resolve(imgsz=64).key() != device.key() and "-1t-" in tables[0]
    assert json.loads((in_tmp / "tables" / tables[0]).read_text())["target"]["processor"] == PROCESSOR
    study = load("remote")
    assert study.user_attrs["identity"]["latency_target"] == server.url
    assert len(evaluated(study)) == 2
    for t in study.trials:
        assert t.user_attrs["latency_source"] == "table" and t.user_attrs["latency_ms"] > 0
        assert t.user_attrs["target"] == device.to_dict()
    after = server.stats()  # the device did the timing: the blocks, and the calibration's whole models
    assert after["blocks_timed"] - before["blocks_timed"] >= 5
    assert after["models_timed"] - before["models_timed"] >= 2 * 2


@pytest.mark.parametrize("case", ["unreachable", "wrong token"])
def test_a_search_whose_device_cannot_be_asked_stops_before_any_trial(server, in_tmp, capsys, nas_main, case):
    url, token = (f"http://127.0.0.1:{_free_port()}", server.token_file) if case == "unreachable" else \
        (server.url, in_tmp / "wrong.token")
    (in_tmp / "wrong.token").write_text("wrong\n")
    capsys.readouterr()
    assert nas_main(_search("nodevice", "--latency-target", url, "--latency-token-file", str(token))) == 2
    err = _one_line_error(capsys)
    assert f"latency target {url}" in err
    assert ("connection refused" if case == "unreachable" else "token refused (401)") in err
    assert load("nodevice").trials == []
