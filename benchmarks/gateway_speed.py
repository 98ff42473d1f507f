"""The gateway beside nginx: cached 1 MiB downloads under load, with and without the
authorization cache, and the cold first byte.

    python -m benchmarks.gateway_speed [--rounds 2] [--seconds 10] [--connections 64]
    python -m benchmarks --cases speed      # the same, as part of `make bench`

One registry holding a one-file model (about 1 MiB), and on the same machine, at the
same time: ``modelpack serve --auth-cache-ttl 0`` (every request asks the registry),
``modelpack serve`` (the registry's answers kept, the default), ``modelpack serve
--workers 2 --redis URL`` (two processes, one Redis from Debian beside them), the same behind
Debian's nginx with ``--accel-redirect`` (nginx configured by docs/gateway.md's "Downloads sent
by nginx" block, sending the cached file itself), the gateway's server
sending the file and doing nothing else (benchmarks/sendfile_only.py: the ceiling of one
gunicorn process), and Debian's nginx serving the same file from disk (sendfile, as
Debian's default configuration has it).
wrk runs against each in turn, ``--rounds`` alternating rounds; then each gateway is
started again on an empty node cache and asked HEAD + GET of the file as
huggingface_hub asks: the cold first byte.  The section ``## The gateway beside nginx``
of docs/benchmarks.md is rewritten with the numbers.  Needs wrk and nginx
(scripts/install-system-deps.sh installs both).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks import models, nginx
from benchmarks.gateway import FILE, Served, get, registry_with_model, serving
from benchmarks.report import replace_section
from modelpack.testing.registry import free_port
from modelpack.testing.replicas import HANDOFF_SECTION, Balancer, RedisServer

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## The gateway beside nginx"
GOAL_RATIO = 0.5  # of nginx's requests per second
GOAL_P99_MS = 50.0
WITHOUT, WITH, NGINX = "gateway, no authorization cache", "gateway (default)", "nginx, from disk"
WORKERS = "gateway, 2 worker processes (--workers 2, --redis)"
HANDOFF = "gateway behind nginx (--accel-redirect, --workers 2)"
LANE = "gateway behind nginx, download lane (--lane-port, --workers 2)"
FRONTED = (HANDOFF, LANE)
WORKER_COUNT = 2
ACCEL_PREFIX = "/_modelpack_cache/"
CEILING = "sendfile only, on the gateway's server"
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
WARMUP_SECONDS = 1  # of the same load before each measured run, not counted


@dataclass
class Load:
    """One wrk run: requests per second and latency percentiles in milliseconds."""

    rps: float
    p50: float
    p99: float
    errors: str = ""


@dataclass
class Results:
    runs: dict[str, list[Load]] = field(default_factory=dict)
    cold: dict[str, list[float]] = field(default_factory=dict)  # seconds to the first byte


def milliseconds(text: str) -> float:
    """wrk's ``152.30ms`` / ``980.00us`` / ``1.20s`` in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> Load:
    """The numbers of ``wrk --latency``'s report."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and p50 and p99):
        raise RuntimeError(f"wrk said no numbers:\n{out[-2000:]}")
    errors = re.findall(r"Socket errors:.*|Non-2xx or 3xx responses:.*", out)
    return Load(float(rps.group(1)), milliseconds(p50.group(1)), milliseconds(p99.group(1)),
                "; ".join(e.strip() for e in errors))  # fmt: skip


def wrk(url: str, seconds: int, connections: int, threads: int = 2) -> Load:
    """``connections`` keep-alive connections GETting ``url`` for ``seconds``."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: scripts/install-system-deps.sh (apt-get install wrk)")
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
         "--timeout", "10s", url],
        capture_output=True, text=True, timeout=seconds + 60, check=False,
    )  # fmt: skip
    return parse_wrk(result.stdout)


class LocalServer:
    """A server process on 127.0.0.1, ``command(port)``, from the first answer until exit."""

    def __init__(self, name: str, work: Path, command: Callable[[int], list[str]]) -> None:
        self.name, self.work, self.command = name, work, command
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LocalServer:
        self.work.mkdir(parents=True, exist_ok=True)
        with open(self.work / f"{self.name}.log", "ab") as log:
            self.process = subprocess.Popen(self.command(self.port), stdout=log,
                                            stderr=subprocess.STDOUT, cwd=ROOT)  # fmt: skip
        deadline = time.monotonic() + 30
        while _status(self.url + "/-/ready") == 0:  # any answer: the file stays unasked
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} did not start; see {self.work}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)


def static_nginx(work: Path, root: Path) -> LocalServer:
    """Debian's nginx serving ``root`` from disk (sendfile on)."""

    def command(port: int) -> list[str]:
        conf = nginx.write_conf(work, nginx.static_files(f"127.0.0.1:{port}", root))
        return [nginx.binary(), "-c", str(conf), "-p", str(work)]

    return LocalServer("nginx", work, command)


def sendfile_only(work: Path, path: Path) -> LocalServer:
    """benchmarks/sendfile_only.py: the gateway's server sending ``path`` and nothing else."""
    return LocalServer("sendfile-only", work, lambda port: [
        sys.executable, "-m", "benchmarks.sendfile_only", str(path), str(port)])  # fmt: skip


def _status(url: str) -> int:
    """The status of a GET of ``url``; 0 when nothing answers."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
    try:
        connection.request("GET", parts.path)
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()


def cold_first_byte(served: Served) -> float:
    """Seconds from a HEAD of a file no one asked for to the first byte of its GET, as
    huggingface_hub asks (the HEAD starts the pull-through)."""
    started = time.monotonic()
    status, *_ = get(served, served.path, "HEAD")
    if status != 200:
        raise RuntimeError(f"HEAD answered {status}")
    head = time.monotonic() - started
    status, ttfb, _, count = get(served, served.path)
    if status != 200 or count != served.size:
        raise RuntimeError(f"GET answered {status} with {count} bytes")
    return head + ttfb


def first_byte(url: str) -> float:
    """Seconds to the first body byte of one GET of ``url``."""
    parts = urlsplit(url)
    started = time.monotonic()
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request("GET", parts.path)
        response = connection.getresponse()
        if response.status != 200 or not response.read(1):
            raise RuntimeError(f"{url} answered {response.status}")
        return time.monotonic() - started
    finally:
        connection.close()


def cached_tree(served: Served, timeout: float = 60.0) -> None:
    """Until the model's whole tree is in the node cache (the first GET pulls its file,
    a background pull the rest): the load is measured on what a warm gateway does."""
    markers = served.cache / "models" / ".complete"
    deadline = time.monotonic() + timeout
    while not (markers.is_dir() and any(markers.glob("*.json"))):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the model never became a tree in {served.cache}")
        time.sleep(0.1)


def run(work: Path, rounds: int, seconds: int, connections: int) -> Results:
    results = Results()
    redis = RedisServer(work / "redis").start()
    workers = ("--workers", str(WORKER_COUNT), "--redis", redis.url)
    modes = {
        WITHOUT: ("--auth-cache-ttl", "0"),
        WITH: (),
        WORKERS: workers,
        HANDOFF: (*workers, "--trusted-proxy", "127.0.0.1", "--accel-redirect", ACCEL_PREFIX),
    }
    modes[LANE] = (*modes[HANDOFF], "--lane-port", str(free_port()))
    try:
        with registry_with_model(work, models.MIB) as (host, size):
            _cold(work, host, size, rounds, modes, results)
            _loaded(work, host, size, rounds, seconds, connections, modes, results)
    finally:
        redis.stop()
    return results


def _cold(work: Path, host: str, size: int, rounds: int, modes: dict, results: Results) -> None:
    """Each gateway, a fresh one on an empty node cache per round: its cold first byte."""
    for round_ in range(rounds):
        for n, (name, args) in enumerate(modes.items()):
            folder = work / f"cold-{round_}-{n}"
            folder.mkdir(parents=True)
            with serving(host, folder, size, *args) as served, fronted(name, served, args) as asked:
                results.cold.setdefault(name, []).append(cold_first_byte(asked))


def _loaded(work: Path, host: str, size: int, rounds: int, seconds: int, connections: int,
            modes: dict, results: Results) -> None:  # fmt: skip
    """wrk against every row in turn, ``rounds`` times."""
    model_dir = work / f"gateway-model-{models.MIB}"
    for folder in (
        work / "without",
        work / "with",
        work / "workers",
        work / "handoff",
        work / "lane",
    ):
        folder.mkdir(parents=True, exist_ok=True)
    with (
        serving(host, work / "without", size, *modes[WITHOUT]) as without,
        serving(host, work / "with", size, *modes[WITH]) as with_,
        serving(host, work / "workers", size, *modes[WORKERS]) as workers,
        serving(host, work / "handoff", size, *modes[HANDOFF]) as handed,
        fronted(HANDOFF, handed, modes[HANDOFF]) as handoff,
        serving(host, work / "lane", size, *modes[LANE]) as laned,
        fronted(LANE, laned, modes[LANE]) as lane,
        static_nginx(work / "nginx", model_dir) as static,
        sendfile_only(work / "ceiling", model_dir / FILE) as ceiling,
    ):
        targets = {WITHOUT: without.url + without.path, WITH: with_.url + with_.path,
                   WORKERS: workers.url + workers.path, HANDOFF: handoff.url + handoff.path,
                   LANE: lane.url + lane.path,
                   CEILING: f"{ceiling.url}/{FILE}", NGINX: f"{static.url}/{FILE}"}  # fmt: skip
        results.cold.setdefault(NGINX, []).append(first_byte(targets[NGINX]))
        for served in (without, with_, workers, handoff, lane):  # into each node cache: warm
            status, _, _, count = get(served, served.path)
            assert status == 200 and count == size, (status, count)
            cached_tree(served)
        for round_ in range(rounds):
            for name, url in targets.items():
                # As a server in use: the lane's processes first see a download here, and
                # a kept answer ends while the other rows run (a first request's cost is
                # the cold first byte's and the no-cache row's).
                wrk(url, WARMUP_SECONDS, connections)
                load = wrk(url, seconds, connections)
                results.runs.setdefault(name, []).append(load)
                print(f"  round {round_ + 1} {name:<52} {load.rps:8.0f} req/s  p50 "
                      f"{load.p50:7.1f} ms  p99 {load.p99:7.1f} ms {load.errors}", flush=True)  # fmt: skip


@contextmanager
def fronted(name: str, served: Served, args: tuple[str, ...]) -> Iterator[Served]:
    """``served`` as clients reach it: through nginx (docs/gateway.md's block, as many
    worker processes as the nginx row's) for the FRONTED rows, else directly.  Without a
    ``--lane-port`` in ``args`` the block's lane is the gateway's own port."""
    if name not in FRONTED:
        yield served
        return
    front = served.cache.parent / "front"
    address = served.url.removeprefix("http://")
    lane = f"127.0.0.1:{args[args.index('--lane-port') + 1]}" if "--lane-port" in args else address
    balancer = Balancer(front, [address], section=HANDOFF_SECTION, home=served.cache,
                        lanes=[lane], worker_processes=2).start()  # fmt: skip
    try:
        yield replace(served, url=balancer.url)
    finally:
        balancer.stop()


def _span(values: list[float], fmt: str) -> str:
    """``a / b`` of each round's value."""
    return " / ".join(fmt.format(v) for v in values)


def section(results: Results, args: argparse.Namespace, machine: str) -> str:
    nginx_rps = statistics.median(load.rps for load in results.runs[NGINX])
    lines = [
        HEADING,
        "",
        f"Written by `make bench` (`python -m benchmarks.gateway_speed --rounds {args.rounds} "
        f"--seconds {args.seconds} --connections {args.connections}`) on "
        f"{datetime.now(UTC).strftime('%Y-%m-%d')}, {machine}. One registry, three gateways, the "
        "gateway's server alone and nginx on 127.0.0.1, on the same cores as wrk; each row "
        "is wrk with "
        f"{args.connections} keep-alive connections for {args.seconds} s GETting the same "
        f"cached {models.MIB // 1024} KiB safetensors file, after {WARMUP_SECONDS} s of the "
        "same load not counted (each round's number, rounds alternating between the rows). *Sendfile only* is a WSGI app that does "
        "nothing but send that file, on the gateway's own server (one gunicorn process, its "
        "gthread worker, 64 threads): the most that server can answer on this machine. The "
        "cold first byte is a fresh gateway on an empty node cache asked HEAD then GET, as "
        "huggingface_hub asks (nginx: the first GET after it started).",
        "",
        "| | requests/s | of nginx | p50 ms | p99 ms | cold first byte |",
        "|---|---|---|---|---|---|",
    ]
    for name in (WITHOUT, WITH, WORKERS, HANDOFF, LANE, CEILING, NGINX):
        if name not in results.runs:
            continue
        runs = results.runs[name]
        rps = [load.rps for load in runs]
        ratio = statistics.median(rps) / nginx_rps if nginx_rps else 0.0
        cold = results.cold.get(name)
        lines.append(
            f"| {name} | {_span(rps, '{:.0f}')} | {ratio:.2f}x | "
            f"{_span([load.p50 for load in runs], '{:.1f}')} | "
            f"{_span([load.p99 for load in runs], '{:.1f}')} | "
            f"{_span(cold, '{:.3f} s') if cold else '-'} |"
        )
    goals = [
        goal_line(results, name, nginx_rps)
        for name in (WITH, WORKERS, HANDOFF, LANE)
        if name in results.runs
    ]
    lines += ["", *goals]
    notes = Path(__file__).with_name("SPEED_NOTES.md")
    if notes.exists():
        lines += ["", notes.read_text(encoding="utf-8").strip()]
    return "\n".join(lines) + "\n"


def goal_line(results: Results, name: str, nginx_rps: float) -> str:
    """Whether the row ``name`` (with the authorization cache) meets the goal."""
    rps = statistics.median(load.rps for load in results.runs[name])
    p99 = max(load.p99 for load in results.runs[name])
    ratio = rps / nginx_rps if nginx_rps else 0.0
    met = ratio >= GOAL_RATIO and p99 < GOAL_P99_MS
    return (
        f"Goal: at least {GOAL_RATIO:g}x nginx's requests per second and p99 under "
        f"{GOAL_P99_MS:g} ms with the authorization cache; {name}: {ratio:.2f}x, p99 at most "
        f"{p99:.1f} ms: **{'met' if met else 'not met'}**."
    )


def machine() -> str:
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores, load average {load:.1f} at the start"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workdir", default=str(Path(__file__).resolve().parent / ".work"))
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds < 1 or args.connections < 1:
        raise SystemExit("--rounds, --seconds and --connections must be at least 1")
    about = machine()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="speed-", dir=args.workdir) as tmp:
        results = run(Path(tmp), args.rounds, args.seconds, args.connections)
    text = section(results, args, about)
    replace_section(Path(args.output), HEADING, text)
    print(text)


if __name__ == "__main__":
    main()
