"""The gateway case: time to first byte and total time of one large file through
``modelpack serve``, cold (not in the node cache: pulled through) and warm.

    python -m benchmarks --cases gateway [--rounds 3] [--gateway-gib 2]

Everything on 127.0.0.1: a fresh local registry, a gateway process per cold
round (an empty cache), one plain HTTP client.  ``gateway_load.py`` uses
:func:`serving` for its load runs.
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks import models
from benchmarks.runner import Measurement, stop
from modelpack.testing.registry import RegistryServer, free_port

PY = sys.executable
FILE = "model-00001-of-00001.safetensors"


@dataclass
class Served:
    url: str  # http://127.0.0.1:PORT
    path: str  # /org/bench/resolve/v1/FILE
    size: int
    process: subprocess.Popen
    cache: Path


def _env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MODELPACK_HOME": str(home),
        "MODELPACK_PLAIN_HTTP": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }


@contextmanager
def registry_with_model(work: Path, size: int) -> Iterator[tuple[str, int]]:
    """A fresh registry holding ``bench/org/bench:v1``: one safetensors file of about
    ``size`` bytes; yields (host, the file's exact size)."""
    model = models.large_model(work / f"gateway-model-{size}", size, files=1, seed=5)
    server = RegistryServer(workdir=work / "gateway-registry")
    server.start()
    try:
        home = work / "gateway-push-home"
        shutil.rmtree(home, ignore_errors=True)
        ref = f"{server.host}/bench/org/bench:v1"
        subprocess.run([PY, "-m", "modelpack", "build", str(model), "-t", ref, "--push", "-q"],
                       env=_env(home), check=True)  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)
        yield server.host, (model / FILE).stat().st_size
    finally:
        server.cleanup()


@contextmanager
def serving(host: str, work: Path, size: int, *args: str) -> Iterator[Served]:
    """``modelpack serve`` in front of ``host/bench`` with an empty cache, until exit."""
    cache = work / "gateway-cache"
    shutil.rmtree(cache, ignore_errors=True)
    port = free_port()
    command = [PY, "-m", "modelpack", "serve", "--registry", f"{host}/bench", "--plain-http",
               "--bind", "127.0.0.1", "--port", str(port), "--cache", str(cache), *args]  # fmt: skip
    log = open(work / "gateway.log", "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=_env(cache))
    served = Served(f"http://127.0.0.1:{port}", f"/org/bench/resolve/v1/{FILE}", size, process,
                    cache)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while get(served, "/healthz")[0] != 200:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"gateway did not start; see {work / 'gateway.log'}")
            time.sleep(0.1)
        yield served
    finally:
        stop(process)
        log.close()
        shutil.rmtree(cache, ignore_errors=True)


def get(served: Served, path: str, method: str = "GET") -> tuple[int, float, float, int]:
    """(status, seconds to the first body byte, seconds in all, bytes); status 0: no answer."""
    port = int(served.url.rsplit(":", 1)[1])
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        first = response.read(1)
        ttfb = time.monotonic() - started
        count = len(first)
        while chunk := response.read(1 << 20):
            count += len(chunk)
        return response.status, ttfb, time.monotonic() - started, count
    except OSError:
        return 0, 0.0, 0.0, 0
    finally:
        connection.close()


def run(work: Path, rounds: int, size: int) -> list[Measurement]:
    """Cold and warm GETs of the file, ``rounds`` times each."""
    results: list[Measurement] = []
    label = f"{size / 1024**3:.0f} GiB file"
    with registry_with_model(work, size) as (host, size):
        for round_ in range(rounds):
            with serving(host, work, size) as served:
                get(served, served.path, "HEAD")  # as huggingface_hub does before a download
                for kind in ("cold", "warm"):
                    status, ttfb, total, count = get(served, served.path)
                    ok = status == 200 and count == size
                    m = Measurement("modelpack serve", f"GET {kind}", "gateway", total, 0.0, 0.0,
                                    ok, "" if ok else f"status {status}, {count} bytes",
                                    {"ttfb": ttfb, "bytes": count, "label": label})  # fmt: skip
                    results.append(m)
                    print(f"  gateway round {round_ + 1} {kind}: first byte {ttfb:6.2f} s, "
                          f"all {total:6.2f} s, {count / total / 1024**2 if total else 0:7.1f} MiB/s"
                          + ("" if ok else f"  FAILED: {m.error}"), flush=True)  # fmt: skip
    return results
