"""Uploads and Xet downloads through replicas: the time of a 1 GiB ``upload_folder``, then of
a ``snapshot_download`` of it, through one replica, and through three replicas sharing one
Redis behind Debian's nginx doing round robin.

    python -m benchmarks.replicas [--rounds 3] [--size-gib 1]
    python -m benchmarks --cases replicas          (part of `make bench`)

Everything on 127.0.0.1: a fresh registry, Debian's redis-server, nginx configured by the
block docs/gateway.md prints (modelpack.testing.replicas takes it from the page), and
huggingface_hub with hf_xet (the client's default: Xet) in a process of its own with an
empty HF_HOME.  Each round uploads a model of its own (other bytes: nothing deduplicated
across rounds) into a new repository; the time is ``upload_folder`` alone, measured in the
client; then another client with an empty HF_HOME downloads it (through Xet: hf_xet is
installed), timed the same way.  The section ``## Uploads and downloads through replicas`` of docs/benchmarks.md is rewritten.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

from benchmarks import models
from benchmarks.report import replace_section
from benchmarks.runner import stop
from modelpack.testing.registry import RegistryServer, free_port
from modelpack.testing.replicas import Balancer, RedisServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
HEADING = "## Uploads and downloads through replicas"
CLIENT = """
import json, sys, time
from huggingface_hub import HfApi
repo, folder = sys.argv[1], sys.argv[2]
api = HfApi()
api.create_repo(repo)
started = time.monotonic()
api.upload_folder(repo_id=repo, folder_path=folder)
print(json.dumps({"seconds": time.monotonic() - started}))
"""
DOWNLOAD = """
import json, sys, time
from huggingface_hub import snapshot_download
started = time.monotonic()
snapshot_download(sys.argv[1])
print(json.dumps({"seconds": time.monotonic() - started}))
"""
UPLOAD, XET_DOWNLOAD = "upload_folder", "snapshot_download (Xet)"


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MODELPACK_", "HF_", "HUGGING"))}  # fmt: skip
    env.update(MODELPACK_CONFIG=str(home / "no-config.toml"), DOCKER_CONFIG=str(home / "none"),
               NO_PROXY="127.0.0.1,localhost", **extra)  # fmt: skip
    return env


class Replica:
    """``modelpack serve`` in front of ``registry`` on 127.0.0.1, with ``args``, until
    ``stop()``."""

    def __init__(self, work: Path, registry: str, redis: str | None, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        env = _clean_env(work, **({"MODELPACK_GATEWAY_REDIS": redis} if redis else {}))
        command = [PY, "-m", "modelpack", "serve", "--registry", registry, "--plain-http",
                   "--port", str(self.port), "--cache", str(work / "cache"), *args]  # fmt: skip
        self.log = open(work / "gateway.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                        env=env, cwd=ROOT)  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"a replica exited: see {work / 'gateway.log'}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise SystemExit("a replica did not start within 60 s")

    def stop(self) -> None:
        stop(self.process)
        self.log.close()


def _client(script: str, endpoint: str, home: Path, *args: str) -> float:
    """Seconds the client measured, in a process of its own with an empty HF_HOME."""
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = _clean_env(home, HF_ENDPOINT=endpoint, HF_HOME=str(home),
                     HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1")  # fmt: skip
    result = subprocess.run([PY, "-c", script, *args], env=env, capture_output=True,
                            text=True, timeout=3600)  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"the client through {endpoint} failed: {result.stderr[-2000:]}")
    return float(json.loads(result.stdout.strip().splitlines()[-1])["seconds"])


def _reconstructions(replicas: list[Replica]) -> int:
    """Xet reconstructions the replicas answered (the download went through Xet)."""
    return sum(
        (r.work / "gateway.log").read_text(errors="replace").count("/xet-read/v1/reconstructions/")
        for r in replicas
    )


def run(work: Path, rounds: int, size: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per round for each setup and step."""
    times: dict[str, dict[str, list[float]]] = {
        setup: {UPLOAD: [], XET_DOWNLOAD: []}
        for setup in ("one replica", "three replicas, Redis, nginx")
    }
    shutil.rmtree(work / "replicas-registry", ignore_errors=True)  # a fresh registry each run
    registry = RegistryServer(workdir=work / "replicas-registry")
    redis = RedisServer(work / "replicas-redis")
    registry.start()
    redis.start()
    try:
        for round_ in range(rounds):
            model = models.large_model(work / f"replicas-model-{round_}", size, files=4,
                                       seed=100 + round_)  # fmt: skip
            for setup in times:
                base = work / f"replicas-{round_}-{setup.split()[0]}"
                shutil.rmtree(base, ignore_errors=True)
                three = setup.startswith("three")
                replicas = [Replica(base / f"replica-{n}", f"{registry.host}/bench",
                                    redis.url if three else None)
                            for n in range(3 if three else 1)]  # fmt: skip
                balancer = None
                try:
                    endpoint = replicas[0].url
                    if three:
                        upstreams = [r.url.removeprefix("http://") for r in replicas]
                        balancer = Balancer(base / "nginx", upstreams).start()
                        endpoint = balancer.url
                    repo = f"org/up-{round_}-{'three' if three else 'one'}"
                    seconds = _client(CLIENT, endpoint, base / "hf", repo, str(model))
                    times[setup][UPLOAD].append(seconds)
                    down = _client(DOWNLOAD, endpoint, base / "hf-down", repo)
                    if not _reconstructions(replicas):
                        raise SystemExit(f"the download through {endpoint} did not use Xet")
                    times[setup][XET_DOWNLOAD].append(down)
                    print(f"  round {round_ + 1}: {setup}: upload {seconds:.1f} s, "
                          f"download {down:.1f} s", flush=True)  # fmt: skip
                finally:
                    if balancer is not None:
                        balancer.stop()
                    for replica in replicas:
                        replica.stop()
                shutil.rmtree(base, ignore_errors=True)
            shutil.rmtree(model, ignore_errors=True)
    finally:
        redis.stop()
        registry.stop()
    return times


def write(
    path: Path, times: dict[str, dict[str, list[float]]], size: int, load: float | None = None
) -> None:
    lines = [
        HEADING,
        "",
        f"`python -m benchmarks.replicas` ({datetime.now(UTC):%Y-%m-%d}, part of `make bench`): "
        f"`upload_folder` of a {size / 1024**3:g} GiB model (4 safetensors shards of random "
        "bytes and config files) with huggingface_hub and hf_xet (Xet, the client's default), "
        "into a new repository each round, a new model each round, then `snapshot_download` of "
        "it by another client with an empty cache (through Xet, hf_xet's reconstructions and "
        "xorb ranges); the registry, the gateways, Redis, nginx and the client all on this "
        "2-core machine"
        + (f", 1-minute load average {load:.1f} at the start (other jobs)." if load else "."),
        "",
        "| setup | step | rounds | median s | min s | MB/s (median) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for setup, steps in times.items():
        for step, values in steps.items():
            median = statistics.median(values)
            lines.append(f"| {setup} | {step} | {len(values)} | {median:.1f} | "
                         f"{min(values):.1f} | {size / median / 1e6:.0f} |")  # fmt: skip
    lines += [
        "",
        "One replica: `modelpack serve` alone, no `--redis`, the client straight at it. Three "
        "replicas: each with the same `--redis`, behind nginx round robin with the "
        'configuration in docs/gateway.md ("Running several replicas"): the xorbs of one '
        "upload land on all three, and each replica that receives a xorb also pushes it to the "
        "registry as a blob (any replica may be the one that gets the shard and puts the files "
        "together, fetching the xorbs it lacks from the registry). That second write of every "
        "byte, and the fetches, are what three replicas cost here; on one machine they share "
        "its two cores, so this measures overhead, not scale-out. The download through three "
        "replicas: a reconstruction or a xorb range may reach a replica that never received "
        "that xorb, which then fetches it whole from the registry blob its record names and "
        "keeps it (docs/gateway.md, Xet).",
        "",
    ]
    replace_section(path, HEADING, "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-gib", type=float, default=1)
    parser.add_argument("--workdir", default=str(HERE / ".work"))
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    size = int(args.size_gib * 1024 * models.MIB)
    load = os.getloadavg()[0]
    times = run(work, args.rounds, size)
    write(Path(args.output), times, size, load)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
