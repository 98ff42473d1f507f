"""`make bench`: build, push, pull, re-push and re-pull, modelpack beside skopeo, oras-py and
modelpack-client, alternating, several rounds, on this machine; writes docs/benchmarks.md.
Case a's push and pull also go through Harbor (a project of one Harbor started for the run).

    python -m benchmarks [--rounds 3] [--cases a,b] [--size-gib 20] [--registry HOST:PORT]
    python -m benchmarks --harbor none                       # without the Harbor rows
    python -m benchmarks --cases gateway [--gateway-gib 2]   # modelpack serve alone, printed only
    python -m benchmarks --cases speed      # the gateway beside nginx (benchmarks/gateway_speed.py)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import gateway, gateway_speed, harbor, hubs, models, replicas, report
from benchmarks.harbor import HarborTarget
from benchmarks.runner import Measurement, measure
from modelpack.testing.harbor import VERSIONS as HARBOR_VERSIONS
from modelpack.testing.harbor import harbor_dir
from modelpack.testing.peers import PEER_PACKAGES, peer_command, peer_version, peers_python
from modelpack.testing.registry import RegistryServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PEERS_VENV = HERE / ".peers-venv"
PY = sys.executable


def version_of(command: list[str]) -> str:
    try:
        return (
            subprocess.run(command, capture_output=True, text=True, timeout=30)
            .stdout.strip()
            .splitlines()[0]
        )
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


@dataclass
class Case:
    name: str  # "a", "b", "c"
    label: str
    model: Path
    size: int
    only_ours: bool = False  # case c: memory must not grow with size; peers are not the point


@dataclass
class Context:
    work: Path
    rounds: int
    external: str | None  # --registry
    peers_python: Path | None
    tools: set[str]
    results: list[Measurement]
    harbor_version: str | None = None  # case a through Harbor too (--harbor)
    harbor_idle: float | None = None  # share of a core Harbor used, idle, once set up
    servers: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # host: pids

    def watch(self, host: str) -> dict[str, list[int]] | None:
        """The server processes behind ``host`` whose CPU a measurement records, if local."""
        return self.servers.get(host)

    def env(self, home: Path) -> dict[str, str]:
        return {
            "MODELPACK_HOME": str(home),
            "NO_PROXY": "127.0.0.1,localhost",
            "MODELPACK_PLAIN_HTTP": "1",
        }

    def mp(self, *args: str) -> list[str]:
        return [PY, "-m", "modelpack", *args, "-q"]

    def peer(self, tool: str, operation: str, reference: str, path: Path) -> list[str]:
        assert self.peers_python is not None
        return peer_command(self.peers_python, tool, operation, reference, path)


@contextmanager
def registry(ctx: Context) -> Iterator[str]:
    """A fresh, empty registry (no blob to skip or mount), or the external one."""
    if ctx.external:
        yield ctx.external
        return
    server = RegistryServer(workdir=Path(tempfile.mkdtemp(prefix="bench-registry-", dir=ctx.work)))
    server.start()
    if server._process is not None:
        ctx.servers[server.host] = {"registry": [server._process.pid]}
    try:
        yield server.host
    finally:
        ctx.servers.pop(server.host, None)
        server.cleanup()


@contextmanager
def destination(ctx: Context, target: HarborTarget | None, name: str) -> Iterator[str]:
    """Where one push goes, as REGISTRY/NAMESPACE: a fresh, empty registry (or the external
    one), or a fresh project ``name`` of the run's Harbor."""
    if target is None:
        with registry(ctx) as host:
            yield f"{host}/bench"
    else:
        yield f"{target.host}/{target.project(name)}"


def through(operation: str, target: HarborTarget | None) -> str:
    """The operation's name in the results: ``push``, or ``push (Harbor)`` through Harbor."""
    return operation if target is None else f"{operation} (Harbor)"


def record(ctx: Context, m: Measurement) -> Measurement:
    ctx.results.append(m)
    status = f"{m.seconds:7.2f} s  {m.peak_rss_mb:7.1f} MB" if m.ok else f"FAILED: {m.error}"
    print(f"  {m.case} {m.operation:<9} {m.tool:<17} {status}", flush=True)
    return m


def measure_transfer(ctx: Context, operation: str, case: Case, args: list[str], home: Path,
                     target: HarborTarget | None = None, host: str = "",
                     project: str | None = None) -> None:  # fmt: skip
    """Time a modelpack push or pull (``args``) and record the bytes its --json reports;
    with ``host``, the CPU of the registry behind it too; with ``target``, the credentials
    for Harbor (``project``'s robot for a push)."""
    env = ctx.env(home) | (target.modelpack_env(project) if target else {})
    m = record(
        ctx,
        measure("modelpack", operation, case.name, ctx.mp(*args, "--json"), env=env,
                servers=ctx.watch(host)),
    )  # fmt: skip
    if m.ok:
        m.extra["bytes"] = json.loads(m.extra["stdout"])["bytesTransferred"]


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def prepare(ctx: Context, case: Case) -> tuple[Path, Path]:
    """Build once into a store (not measured) and export an OCI layout for skopeo."""
    home = fresh(ctx.work / f"home-{case.name}")
    ref = f"bench.local/{case.name}:v1"
    subprocess.run(
        ctx.mp("build", str(case.model), "-t", ref), env={**os.environ, **ctx.env(home)}, check=True
    )
    layout = fresh(ctx.work / f"layout-{case.name}")
    if "skopeo" in ctx.tools:  # a second copy of the model on disk: only when skopeo needs it
        subprocess.run(
            ctx.mp("copy", f"store:{ref}", f"oci:{layout}:v1"),
            env={**os.environ, **ctx.env(home)},
            check=True,
        )
    return home, layout


def bench_build(ctx: Context, case: Case) -> None:
    files = [str(p) for p in models.model_files(case.model)]
    home = ctx.work / f"build-home-{case.name}"
    record(
        ctx,
        measure(
            "modelpack",
            "build",
            case.name,
            ctx.mp("build", str(case.model), "-t", f"bench.local/{case.name}:b"),
            env=ctx.env(fresh(home)),
        ),
    )
    record(ctx, measure("sha256sum", "build", case.name, ["sha256sum", *files]))
    hash_all = "import hashlib,sys\nfor p in sys.argv[1:]:\n h=hashlib.sha256()\n with open(p,'rb') as f:\n  while c:=f.read(1<<20): h.update(c)"
    record(ctx, measure("python hashlib", "build", case.name, [PY, "-c", hash_all, *files]))
    target = fresh(ctx.work / f"cp-{case.name}")
    record(ctx, measure("cp", "build", case.name, ["cp", "-r", str(case.model), str(target)]))
    shutil.rmtree(target, ignore_errors=True)
    if case.name != "b":
        # build --push: straight to the registry, the weights never copied locally.
        with registry(ctx) as host:
            home = fresh(ctx.work / f"direct-home-{case.name}")
            m = record(
                ctx,
                measure(
                    "modelpack",
                    "build+push",
                    case.name,
                    ctx.mp(
                        "build",
                        str(case.model),
                        "-t",
                        f"{host}/bench/direct-{case.name}:v1",
                        "--push",
                    ),
                    env=ctx.env(home),
                ),
            )
            m.extra["store_bytes"] = sum(
                p.stat().st_size for p in (home / "store" / "blobs").rglob("*") if p.is_file()
            )


def bench_push(ctx: Context, case: Case, home: Path, layout: Path, round_: int,
               target: HarborTarget | None = None) -> None:  # fmt: skip
    """Each tool pushes to a fresh registry, or with ``target`` to a fresh project of Harbor."""
    repo = f"{case.name}-r{round_}"
    operation = through("push", target)
    if "modelpack" in ctx.tools:
        with destination(ctx, target, f"{repo}-mp") as where:
            ref = f"{where}/{repo}-mp:v1"
            subprocess.run(
                ctx.mp("tag", f"bench.local/{case.name}:v1", ref),
                env={**os.environ, **ctx.env(home)},
                check=True,
            )
            (home / "blob-locations.sqlite").unlink(missing_ok=True)  # no mount from earlier rounds
            measure_transfer(ctx, operation, case, ["push", ref], home, target, host_of(ref),
                             project_of(where, target))  # fmt: skip
    if "skopeo" in ctx.tools:
        with destination(ctx, target, f"{repo}-sk") as where:
            skopeo_home = fresh(ctx.work / "skopeo-home")
            record(
                ctx,
                measure(
                    "skopeo",
                    operation,
                    case.name,
                    [
                        "skopeo",
                        "copy",
                        "-q",
                        *(target.skopeo_args(project_of(where, target)) if target else []),
                        "--dest-tls-verify=false",
                        f"oci:{layout}:v1",
                        f"docker://{where}/{repo}-sk:v1",
                    ],
                    env={"HOME": str(skopeo_home)},
                    servers=ctx.watch(host_of(where)),
                ),
            )
    for peer in ("oras", "modelpack-client"):
        if peer in ctx.tools and ctx.peers_python:
            with destination(ctx, target, f"{repo}-{peer}") as where:
                record(
                    ctx,
                    measure(
                        peer,
                        operation,
                        case.name,
                        ctx.peer(peer, "push", f"{where}/{repo}-{peer}:v1", case.model),
                        env=target.peer_env(project_of(where, target)) if target else None,
                        servers=ctx.watch(host_of(where)),
                    ),
                )


def host_of(reference: str) -> str:
    return reference.split("/", 1)[0]


def project_of(where: str, target: HarborTarget | None) -> str | None:
    """The Harbor project of a push destination (REGISTRY/PROJECT), None without Harbor."""
    return where.split("/", 1)[1] if target else None


def bench_pull(ctx: Context, case: Case, host: str, round_: int,
               target: HarborTarget | None = None) -> None:  # fmt: skip
    """Each tool pulls ``host``/bench (Harbor's project ``bench`` with ``target``)."""
    ref = f"{host}/bench/{case.name}:v1"
    out = ctx.work / f"pull-out-{case.name}"
    operation = through("pull", target)
    if "modelpack" in ctx.tools:
        pull_home = fresh(ctx.work / "pull-home")
        measure_transfer(
            ctx, operation, case, ["pull", ref, "-o", str(fresh(out))], pull_home, target, host
        )
    if "skopeo" in ctx.tools:
        record(
            ctx,
            measure(
                "skopeo",
                operation,
                case.name,
                [
                    "skopeo",
                    "copy",
                    "-q",
                    *(target.skopeo_args() if target else []),
                    "--src-tls-verify=false",
                    f"docker://{ref}",
                    f"oci:{fresh(out)}:v1",
                ],
                env={"HOME": str(fresh(ctx.work / "skopeo-home"))},
                servers=ctx.watch(host),
            ),
        )
    for peer, peer_ref in (
        ("oras", f"{host}/bench/{case.name}-oras:v1"),
        ("modelpack-client", ref),
    ):
        if peer in ctx.tools and ctx.peers_python:
            record(
                ctx,
                measure(
                    peer,
                    operation,
                    case.name,
                    ctx.peer(peer, "pull", peer_ref, fresh(out)),
                    env=target.peer_env() if target else None,
                    servers=ctx.watch(host),
                ),
            )
    shutil.rmtree(out, ignore_errors=True)


def bench_unchanged(
    ctx: Context, case: Case, home: Path, host: str, layout: Path, round_: int
) -> None:
    """Re-push and re-pull of a model the other side already has."""
    ref = f"{host}/bench/{case.name}:v1"
    measure_transfer(ctx, "re-push", case, ["push", ref], home)
    node = ctx.work / f"node-{case.name}"
    if not (node / "models").exists():
        subprocess.run(ctx.mp("pull", ref), env={**os.environ, **ctx.env(node)}, check=True)
    measure_transfer(ctx, "re-pull", case, ["pull", ref], node)
    if "skopeo" in ctx.tools and (case.name != "b" or round_ == 0):  # ~5 min each for b
        record(
            ctx,
            measure(
                "skopeo",
                "re-push",
                case.name,
                [
                    "skopeo",
                    "copy",
                    "-q",
                    "--dest-tls-verify=false",
                    f"oci:{layout}:v1",
                    f"docker://{ref}",
                ],
                env={"HOME": str(ctx.work / "skopeo-home")},
            ),
        )


@contextmanager
def harbor_for(ctx: Context, case: Case, home: Path) -> Iterator[HarborTarget | None]:
    """The run's Harbor for case a (None for the other cases, with --harbor none, or when
    it is not built), its project ``bench`` holding what the pulls fetch."""
    if case.name != "a" or not ctx.harbor_version:
        yield None
        return
    if not harbor.built(ctx.harbor_version):
        print(f"  Harbor {ctx.harbor_version} is not built: no Harbor rows (run "
              f"MODELPACK_HARBOR_VERSIONS={ctx.harbor_version} scripts/peers/build-harbor.sh)",
              flush=True)  # fmt: skip
        yield None
        return
    stack, target = ExitStack(), None
    try:
        target = stack.enter_context(harbor.running(ctx.work, ctx.harbor_version))
        ctx.servers[target.host] = target.groups()
        ref = f"{target.host}/{target.project('bench')}/{case.name}:v1"
        env = {**os.environ, **ctx.env(home), **target.modelpack_env()}
        subprocess.run(ctx.mp("tag", f"bench.local/{case.name}:v1", ref), env=env, check=True)
        subprocess.run(ctx.mp("push", ref), env=env, check=True)
        if "oras" in ctx.tools and ctx.peers_python:
            subprocess.run(
                ctx.peer("oras", "push", f"{target.host}/bench/{case.name}-oras:v1", case.model),
                env={**os.environ, **target.peer_env()},
                check=True,
                capture_output=True,
            )
        ctx.harbor_idle = target.idle_cpu()
    except (RuntimeError, subprocess.CalledProcessError) as exc:  # the other rows still run
        if target is not None:
            ctx.servers.pop(target.host, None)
        stack.close()
        print(f"  Harbor {ctx.harbor_version} failed, no Harbor rows: {exc}", flush=True)
        yield None
        return
    print(f"  Harbor idle: {ctx.harbor_idle:.1%} of a core", flush=True)
    with stack:
        try:
            yield target
        finally:
            ctx.servers.pop(target.host, None)


def run_case(ctx: Context, case: Case) -> None:
    print(f"case {case.name}: {case.label}", flush=True)
    if case.only_ours:
        ctx = Context(ctx.work, 1, ctx.external, None, {"modelpack"}, ctx.results)
    home, layout = prepare(ctx, case)
    with registry(ctx) as pull_host, harbor_for(ctx, case, home) as target:
        # The pull registry holds our artifact (and oras-py's, for its own pull).
        ref = f"{pull_host}/bench/{case.name}:v1"
        subprocess.run(
            ctx.mp("tag", f"bench.local/{case.name}:v1", ref),
            env={**os.environ, **ctx.env(home)},
            check=True,
        )
        subprocess.run(ctx.mp("push", ref), env={**os.environ, **ctx.env(home)}, check=True)
        if "oras" in ctx.tools and ctx.peers_python:
            subprocess.run(
                ctx.peer("oras", "push", f"{pull_host}/bench/{case.name}-oras:v1", case.model),
                check=True,
                capture_output=True,
            )
        for round_ in range(ctx.rounds):
            print(f" round {round_ + 1}/{ctx.rounds}", flush=True)
            bench_build(ctx, case)
            bench_push(ctx, case, home, layout, round_)
            if target:
                bench_push(ctx, case, home, layout, round_, target)
            bench_pull(ctx, case, pull_host, round_)
            if target:
                bench_pull(ctx, case, target.host, round_, target)
            if not case.only_ours:  # (the node cache would hold a third copy of case c)
                bench_unchanged(ctx, case, home, pull_host, layout, round_)
    for leftover in ("layout-", "home-", "node-", "build-home-", "direct-home-"):
        shutil.rmtree(ctx.work / f"{leftover}{case.name}", ignore_errors=True)


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    mem = next(
        (
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        "0",
    )
    return {
        "cpu": f"{os.cpu_count()} x {cpu}",
        "memory": f"{int(mem) / 1024 / 1024:.0f} GiB",
        "python": sys.version.split()[0],
        "registry": version_of(["docker-registry", "--version"]),
        "skopeo": version_of(["skopeo", "--version"]),
        "filesystem": subprocess.run(["df", "-T", str(ROOT)], capture_output=True, text=True)
        .stdout.splitlines()[-1]
        .split()[1],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--cases",
        default="a,b,replicas,speed",
        help="a: 4 x 512 MiB, b: 2,000 small files, c: --size-gib, "
        "gateway: one file through modelpack serve (benchmarks/gateway.py), "
        "replicas: a 1 GiB upload_folder and its Xet download through one replica and three (benchmarks/replicas.py), "
        "speed: cached downloads through modelpack serve beside nginx, written to its own "
        "section (benchmarks/gateway_speed.py), "
        "hubs: modelpack serve and MatrixHub side by side (benchmarks/hubs.py, root; alone)",
    )
    parser.add_argument("--gateway-gib", type=float, default=2, help="the gateway case's file")
    parser.add_argument(
        "--size-gib", type=float, default=0, help="also case c: a model of this size (4 shards)"
    )
    parser.add_argument("--tools", default="modelpack,skopeo,oras,modelpack-client")
    parser.add_argument(
        "--registry", help="HOST:PORT of an existing registry instead of local ones"
    )
    parser.add_argument(
        "--harbor",
        default=HARBOR_VERSIONS[0],
        help="case a's push and pull through this Harbor too (built by "
        "scripts/peers/build-harbor.sh; 'none': not)",
    )
    parser.add_argument("--workdir", default=str(HERE / ".work"))
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    args, rest = parser.parse_known_args(argv)
    if args.cases == "hubs":  # its own options (python -m benchmarks.hubs --help)
        raise SystemExit(
            hubs.main(["--output", args.output, "--workdir", f"{args.workdir}/hubs", *rest])
        )
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tools = set(args.tools.split(","))
    wanted = set(args.cases.split(","))
    if "speed" in wanted:  # its own section of the page, two alternating rounds
        gateway_speed.main(["--workdir", str(work), "--output", args.output])
        wanted.discard("speed")
        if not wanted:
            return
    peer_cases = wanted - {"gateway", "replicas"}
    peers = (
        peers_python(PEERS_VENV) if peer_cases and tools & {"oras", "modelpack-client"} else None
    )
    load_before = os.getloadavg()[0]
    ctx = Context(work, args.rounds, args.registry, peers, tools, [],
                  None if args.harbor == "none" else args.harbor)  # fmt: skip
    cases: list[Case] = []
    if "a" in wanted:
        cases.append(
            Case(
                "a",
                "4 x 512 MiB safetensors + config/tokenizer",
                models.large_model(work / "model-a", 4 * 512 * models.MIB),
                0,
            )
        )
    if "b" in wanted:
        cases.append(
            Case(
                "b",
                f"{models.SMALL_FILES:,} files of 4-64 KiB",
                models.many_files_model(work / "model-b"),
                0,
            )
        )
    if args.size_gib or "c" in wanted:
        size = int((args.size_gib or 20) * 1024 * models.MIB)
        cases.append(
            Case(
                "c",
                f"{size / 1024**3:.0f} GiB in 4 shards",
                models.large_model(work / f"model-c-{size}", size, seed=3),
                0,
                only_ours=True,
            )
        )
    if "replicas" in wanted:
        print("case replicas: a 1 GiB upload_folder and snapshot_download (Xet) through one "
              "replica and three", flush=True)  # fmt: skip
        size = 1024 * models.MIB
        load = os.getloadavg()[0]
        replicas.write(Path(args.output), replicas.run(work, args.rounds, size), size, load)
        if not cases and "gateway" not in wanted:
            return  # its own section is written; nothing else to report
    if "gateway" in wanted:
        print(
            f"case gateway: one {args.gateway_gib:g} GiB file through modelpack serve", flush=True
        )
        size = int(args.gateway_gib * 1024 * models.MIB)
        ctx.results += gateway.run(work, args.rounds, size)
        if not cases:
            return  # the gateway case alone is printed, not written to docs/benchmarks.md
    for case in cases:
        case.size = models.model_bytes(case.model)
        run_case(ctx, case)
        if case.only_ours:  # a 20 GiB model is not worth keeping between runs
            shutil.rmtree(case.model, ignore_errors=True)
    versions = {name: peer_version(peers, name) if peers else "" for name in PEER_PACKAGES}
    measured = any(m.operation.endswith("(Harbor)") for m in ctx.results)
    about_harbor = (
        {"harbor": f"{ctx.harbor_version} ({harbor_dir(ctx.harbor_version).resolve().name})"}
        if measured and ctx.harbor_version
        else {}
    )
    report.write(
        Path(args.output),
        ctx.results,
        cases,
        machine()
        | about_harbor
        | {f"{k} (PyPI)": v for k, v in versions.items()}
        | {"load average (1 min) at start, at end": f"{load_before:.2f}, {os.getloadavg()[0]:.2f}"},
        args,
        harbor_idle=ctx.harbor_idle,
    )
    report.print_table(ctx.results)


if __name__ == "__main__":
    main()
