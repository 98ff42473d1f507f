"""Run ``modelpack serve`` as a user would (its own process), and huggingface_hub against it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from modelpack.testing.registry import free_port

# One client process runs a list of operations; each prints a result or the error's class.
HF_CLIENT = """
import json, sys
from huggingface_hub import hf_hub_download, snapshot_download
results = []
for op in json.loads(sys.argv[1]):
    try:
        if op[0] == "snapshot":
            results.append({"path": snapshot_download(op[1], revision=op[2])})
        else:
            results.append({"path": hf_hub_download(op[1], op[2], revision=op[3])})
    except Exception as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        results.append({"error": type(exc).__name__, "status": status, "message": str(exc)[:300]})
print(json.dumps(results))
"""

# For client code: ``attempt(call)`` is {"ok": result} or the error's class, status and message.
CATCH = """
def attempt(call):
    try:
        return {"ok": call()}
    except Exception as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return {"error": type(exc).__name__, "status": status, "message": str(exc)[:600]}
"""


def clean_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a process that sees no credentials or config of the user's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MODELPACK_", "HF_", "HUGGING"))
        and k.lower() not in ("http_proxy", "https_proxy")
    }
    env.update(
        DOCKER_CONFIG=str(tmp / "no-docker-config"),
        MODELPACK_CONFIG=str(tmp / "no-config.toml"),
        MODELPACK_RETRIES="2",
        NO_PROXY="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


@dataclass
class Gateway:
    registry: str  # HOST/NAMESPACE
    workdir: Path
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # on top of a clean environment
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cache(self) -> Path:
        return self.workdir / "cache"

    @property
    def log_path(self) -> Path:
        return self.workdir / "gateway.log"

    def start(self, timeout: float = 30.0) -> Gateway:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "modelpack", "serve", "--registry", self.registry,
            "--bind", "127.0.0.1", "--port", str(self.port), "--cache", str(self.cache),
            "--plain-http", *self.args,
        ]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(self.workdir, **self.env),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log()[-2000:]}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway did not answer within {timeout}s: {self.log()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        """The log once ``pattern`` is in it: a request's line is written after its body."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, log := self.log()):
            assert time.monotonic() < deadline, f"{pattern!r} not in the gateway log:\n{log}"
            time.sleep(0.05)
        return log

    def answered(self, pattern: str) -> list[str]:
        """The requests (``METHOD /path``) matching ``pattern`` this gateway has answered.
        A request is logged after its answer, so a marker request is made and waited for
        first: every request answered before it is in the log by then."""
        marker = f"/marker-{time.monotonic_ns()}"
        requests.get(f"{self.url}{marker}", timeout=10)
        log = self.wait_for_log(re.escape(f" GET {marker} "))
        lines = re.findall(r"^\S+ \S+ gateway: \S+ ((?:GET|HEAD|POST|PUT) \S+) \d{3} ", log, re.M)
        return [line for line in lines if re.fullmatch(pattern, line)]

    def metrics(self) -> dict[str, float]:
        """``name{labels}`` -> value, from /metrics."""
        text = requests.get(f"{self.url}/metrics", timeout=10).text
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until no pull into the node cache is running (background prefetches too)."""
        deadline = time.monotonic() + timeout
        while self.metrics()["modelpack_gateway_pulls_in_flight"] > 0:
            assert time.monotonic() < deadline, "pulls still running"
            time.sleep(0.05)

    def hf(self, ops: list[list[str]], hf_home: Path, token: str | None = None) -> list[dict]:
        """Run huggingface_hub with only HF_ENDPOINT (and HF_TOKEN) pointing it here."""
        return self.client(HF_CLIENT, ops, hf_home, token)

    def client(  # noqa: ANN201
        self,
        code: str,
        argument,  # noqa: ANN001
        hf_home: Path,
        token: str | None = None,
        env_extra: dict[str, str] | None = None,
    ):
        """Run ``code`` as a hub client process (``sys.argv[1]`` is ``argument`` as JSON);
        its last line of output is JSON, returned."""
        return hub_client(self.url, code, argument, hf_home, token, env_extra)


def hub_env(url: str, hf_home: Path, token: str | None = None, **extra: str) -> dict[str, str]:
    """A clean environment with huggingface_hub pointed at the hub at ``url`` only (and
    ``HF_TOKEN``), its cache under ``hf_home``."""
    env = clean_env(
        hf_home,
        HF_ENDPOINT=url,
        HF_HOME=str(hf_home),
        HF_HUB_CACHE=str(hf_home / "hub"),
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        **extra,
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def hub_client(  # noqa: ANN201
    url: str,
    code: str,
    argument,  # noqa: ANN001
    hf_home: Path,
    token: str | None = None,
    env_extra: dict[str, str] | None = None,
):
    """Run ``code`` as a client process of the hub at ``url`` (``sys.argv[1]`` is ``argument``
    as JSON); its last line of output is JSON, returned."""
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(argument)],
        env=hub_env(url, hf_home, token, **(env_extra or {})),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def blob_gets(registry_log: str, repository: str) -> dict[str, int]:
    """digest -> how many GETs of that blob the registry's access log shows."""
    counts: dict[str, int] = {}
    for digest in re.findall(
        rf"GET /v2/{re.escape(repository)}/blobs/(sha256:[0-9a-f]{{64}})", registry_log
    ):
        counts[digest] = counts.get(digest, 0) + 1
    return counts
