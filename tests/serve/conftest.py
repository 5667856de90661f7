"""Servers for the serve tests: `halinfer serve` subprocesses on 127.0.0.1, one per
configuration (session-scoped), on tiny random models; every wait is bounded."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

for mod in ("fastapi", "uvicorn", "prometheus_client", "httpx"):
    pytest.importorskip(mod, reason=f"the serve tests need {mod} (pip install -e '.[dev,serve]')")

import httpx  # noqa: E402

import halinfer  # noqa: E402
from halinfer.testing.tiny import save_tiny_model  # noqa: E402

API_KEY = "test-key"
START_TIMEOUT_S = 120
# Engine settings shared by the servers and the offline LLM they are compared with.
ENGINE = dict(device="cpu", dtype="float32", num_kv_blocks=1024, block_size=16)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(halinfer.__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m halinfer.cli serve MODEL ...` on a free port; stop() sends SIGTERM."""

    def __init__(self, model: str | None, *args: str, log_path: str, engine: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        eng = {**ENGINE, **(engine or {})}
        cmd = [sys.executable, "-m", "halinfer.cli", "serve", *([model] if model else []),
               "--host", "127.0.0.1", "--port", str(self.port), *args]
        for k, v in eng.items():
            cmd += [f"--{k.replace('_', '-')}", str(v)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p),
                   PYTHONUNBUFFERED="1")
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server not ready within {timeout}s:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return save_tiny_model("llama", str(tmp_path_factory.mktemp("serve_llama")), seed=3)


@pytest.fixture(scope="session")
def start_server(tmp_path_factory):
    """start_server(model, *args, engine={...}) -> a ready ServerProcess, stopped at session end."""
    started = []

    def start(model, *args, engine=None):
        log = str(tmp_path_factory.mktemp("serve_log") / "server.log")
        s = ServerProcess(model, *args, log_path=log, engine=engine)
        started.append(s)
        return s.wait_ready()

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def server(start_server, tiny_model):
    """The main server: an API key, room for 64 concurrent sequences."""
    return start_server(tiny_model, "--api-key", API_KEY, "--served-model-name", "tiny",
                        engine={"max_num_seqs": 64})


@pytest.fixture(scope="session")
def client(server):
    """httpx client of the main server, with the API key."""
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def offline(tiny_model):
    """LLM on the same model and settings, for token-for-token comparisons."""
    from halinfer import LLM

    return LLM(tiny_model, **ENGINE)


def metric(text: str, name: str, labels: str = "") -> float:
    """A sample's value from Prometheus text (0 when absent, as for a counter never moved)."""
    key = name + (("{" + labels + "}") if labels else "")
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return 0.0
