"""`make bench-cluster`: 8 nodes pull the same model at once, many ways, on one machine.

    python -m benchmarks.cluster_bench [--nodes 8] [--size-gib 1] [--shards 4] [--no-write]

(a) every node straight from the registry; (b) through a CNCF distribution pull-through
mirror (a second docker-registry with ``proxy: remoteurl``, the nodes' MODELPACK_MIRRORS);
(c) through ``modelpack serve`` as the cluster's shared cache, the nodes as huggingface_hub
clients (``snapshot_download``); (d) through a real Dragonfly (benchmarks/dragonfly.py: the
control plane and a seed peer on hosts of their own, a dfdaemon in every node); (h) the seed
pipeline: Harbor's P2P preheat policy to that Dragonfly (benchmarks/harbor_preheat.py), the
model pushed to Harbor and preheated, then every node through its dfdaemon, the origin
being Harbor's registry. Measured: the origin registry's egress (its access log and
its link's byte counter), the time until every node has a verified model, the worst node.
Root only (benchmarks/cluster.py makes the namespaces). Writes the section "Many nodes at
once" of docs/benchmarks.md and docs/benchmarks-cluster.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import dragonfly, models, nginx
from benchmarks.cluster import (
    NOT_ROOT,
    REGISTRY_PORT,
    Cluster,
    Host,
    Link,
    NotRoot,
    NsRegistry,
    require_root,
)
from benchmarks.harbor_preheat import RENDERS, Netns, NsHarbor, build_harbor
from benchmarks.report import replace_section

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
HEADING = "## Many nodes at once"
IMAGE = ROOT / "docs" / "benchmarks-cluster.png"
RESULTS = Path(__file__).with_name("cluster-results.json")
PY = sys.executable
REPO = "bench/model"
GATEWAY_PORT = 8080
CASES = ("a", "b", "b2", "b3", "c", "d", "h")
# The Harbor of case (h): the latest release (its model processor reads the cnai names)
HARBOR_VERSION = os.environ.get("MODELPACK_BENCH_HARBOR_VERSION", "v2.15.2")

# A node as a Hugging Face client: download, then check every file's sha256 (huggingface_hub
# checks sizes, not digests), so "done" means a verified model as for `modelpack pull`.
HF_NODE = """
import hashlib, json, sys
from pathlib import Path
from huggingface_hub import snapshot_download
path = Path(snapshot_download(sys.argv[1], revision=sys.argv[2]))
expected = json.loads(sys.argv[3])
got = {}
for name in expected:
    h = hashlib.sha256()
    with open(path / name, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    got[name] = h.hexdigest()
sys.exit(0 if got == expected else 3)
"""


@dataclass
class Result:
    case: str
    label: str
    node_seconds: list[float]
    all_done: float
    origin_bytes: int  # response bytes in the origin registry's access log
    origin_wire: int  # bytes the origin's link sent (headers and retransmits included)
    by_client: dict[str, int]  # origin response bytes by client address
    failures: int
    notes: list[str] = field(default_factory=list)


@dataclass
class Run:
    """One run's settings and results: what the doc section is written from (and saved as
    benchmarks/cluster-results.json, so the section can be written again without root)."""

    nodes: int
    size_gib: float
    shards: int
    registry_rate: str
    node_rate: str
    rtt_emulated: bool
    one_copy: int
    machine: dict[str, str]
    date: str
    results: list[Result]

    @classmethod
    def load(cls, path: Path) -> Run:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["results"] = [Result(**r) for r in data["results"]]
        return cls(**data)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")


def rate_bits(rate: str) -> float:
    """tc's rate units (kbit, mbit, gbit; bit) as bits per second."""
    m = re.fullmatch(r"([\d.]+)\s*([kmg]?)bit", rate.lower())
    if not m:
        raise ValueError(f"rate {rate!r}: expected e.g. 1gbit")
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]


def digests(model: Path) -> dict[str, str]:
    out = {}
    for path in sorted(model.rglob("*")):
        if path.is_file() and path.name != ".complete":
            out[str(path.relative_to(model))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def bytes_by_client(log: str) -> dict[str, int]:
    """Response bytes per client address from a distribution access log (combined format)."""
    out: dict[str, int] = defaultdict(int)
    for m in re.finditer(r'^(\S+) - \S+ \[[^]]+\] "[^"]*" \d{3} (\d+) ', log, re.M):
        out[m.group(1)] += int(m.group(2))
    return dict(out)


def fresh_nodes(cluster: Cluster) -> None:
    for host in cluster.node_hosts:
        shutil.rmtree(cluster.home(host).parent, ignore_errors=True)
        cluster.home(host).mkdir(parents=True)


def run_nodes(
    cluster: Cluster, commands: dict[str, tuple[list[str], dict[str, str]]]
) -> tuple[list[float], float, int]:
    """Start every node's command at once; each node's seconds, the time until all are done,
    and how many failed."""
    times: dict[str, float] = {}
    codes: dict[str, int] = {}
    start = time.monotonic()
    procs = {
        role: cluster.spawn(cluster.hosts[role], argv, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(cluster.home(cluster.hosts[role]).parent / "node.log", "wb"))  # noqa: SIM115
        for role, (argv, env) in commands.items()
    }  # fmt: skip

    def wait(role: str, proc: subprocess.Popen) -> None:
        codes[role] = proc.wait()
        times[role] = time.monotonic() - start

    threads = [threading.Thread(target=wait, args=item) for item in procs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for role, code in codes.items():
        if code != 0:
            log = (cluster.home(cluster.hosts[role]).parent / "node.log").read_text(
                errors="replace"
            )
            print(f"  {role} failed ({code}): {log[-800:]}", file=sys.stderr)
    return (
        [times[r] for r in sorted(times)],
        time.monotonic() - start,
        sum(c != 0 for c in codes.values()),
    )


def measure(
    cluster: Cluster,
    origin: NsRegistry,
    case: str,
    label: str,
    commands: dict[str, tuple[list[str], dict[str, str]]],
    warmup: dict[str, tuple[list[str], dict[str, str]]] | None = None,
) -> Result:
    """Run ``warmup`` (if any, counted in the egress, not in the times), then every node at once."""
    print(f"case {case}: {label}", flush=True)
    log_before = len(origin.access_log())
    wire_before = cluster.tx_bytes("registry")
    notes = []
    if warmup:
        seconds, _, failed = run_nodes(cluster, warmup)
        notes.append(
            f"the warm-up pull took {max(seconds):.1f} s" + (" and failed" if failed else "")
        )
        fresh_nodes(cluster)
    node_seconds, all_done, failures = run_nodes(cluster, commands)
    time.sleep(1.0)  # the access log line of the last response
    log = origin.access_log()[log_before:]
    by_client = bytes_by_client(log)
    result = Result(case, label, node_seconds, all_done, sum(by_client.values()),
                    cluster.tx_bytes("registry") - wire_before, by_client, failures, notes)  # fmt: skip
    print(f"  all done {all_done:.1f} s, worst node {max(node_seconds):.1f} s, "
          f"origin egress {result.origin_bytes / 2**30:.2f} GiB, failures {failures}", flush=True)  # fmt: skip
    return result


def pull_commands(
    cluster: Cluster, ref: str, **env: str
) -> dict[str, tuple[list[str], dict[str, str]]]:
    argv = [PY, "-m", "modelpack", "pull", ref, "-q"]
    return {h.role: (argv, cluster.env(h, **env)) for h in cluster.node_hosts}


def case_a(cluster: Cluster, origin: NsRegistry, ref: str) -> Result:
    fresh_nodes(cluster)
    return measure(cluster, origin, "a", "straight from the registry", pull_commands(cluster, ref))


def case_b(cluster: Cluster, origin: NsRegistry, ref: str, warm: bool = False) -> Result:
    """The mirror cold (every node's first request at once) or, ``warm``, after one node
    pulled alone: what distribution's proxy does with concurrent first requests."""
    fresh_nodes(cluster)
    shutil.rmtree(cluster.workdir / "mirror" / "registry", ignore_errors=True)
    mirror = cluster.start_registry("mirror", proxy_of=origin.address)
    try:
        mirrors = f"{origin.address}=http://{mirror.address}"
        commands = pull_commands(cluster, ref, MODELPACK_MIRRORS=mirrors)
        if warm:
            label = "through the mirror, warmed by one node first"
            result = measure(cluster, origin, "b2", label, commands, warmup={"n0": commands["n0"]})
        else:
            label = "through a distribution pull-through mirror"
            result = measure(cluster, origin, "b", label, commands)
        served = sum(bytes_by_client(mirror.access_log()).values())
        result.notes.append(f"the mirror sent the nodes {served / 2**30:.2f} GiB")
        return result
    finally:
        mirror.stop()


def case_b3(cluster: Cluster, origin: NsRegistry, ref: str) -> Result:
    """A pull-through mirror that does coalesce: Debian's nginx caching blobs with
    ``proxy_cache_lock`` on the mirror host (benchmarks/nginx.py), cold."""
    fresh_nodes(cluster)
    host = cluster.hosts["mirror"]
    work = cluster.workdir / "mirror" / "nginx"
    shutil.rmtree(work, ignore_errors=True)
    listen = f"{host.ip}:{REGISTRY_PORT}"
    conf = nginx.write_conf(work, nginx.blob_cache(work, listen, origin.address))
    log = open(work / "nginx.out", "wb")  # noqa: SIM115
    process = cluster.spawn(host, [nginx.binary(), "-c", str(conf), "-p", str(work)],
                            stdout=log, stderr=log)  # fmt: skip
    try:
        cluster.wait_http(host, f"http://{listen}/v2/")
        commands = pull_commands(
            cluster, ref, MODELPACK_MIRRORS=f"{origin.address}=http://{listen}"
        )
        label = "through a caching nginx mirror (proxy_cache_lock)"
        result = measure(cluster, origin, "b3", label, commands)
        served = sum(bytes_by_client((work / "nginx-access.log").read_text()).values())
        result.notes.append(f"the mirror sent the nodes {served / 2**30:.2f} GiB")
        return result
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def case_c(cluster: Cluster, origin: NsRegistry, expected: dict[str, str]) -> Result:
    fresh_nodes(cluster)
    host = cluster.hosts["cache"]
    shutil.rmtree(cluster.home(host), ignore_errors=True)
    log = open(cluster.home(host).parent / "gateway.log", "wb")  # noqa: SIM115
    gateway = cluster.spawn(host, [PY, "-m", "modelpack", "serve", "--registry", origin.address,
                                   "--bind", host.ip, "--port", str(GATEWAY_PORT),
                                   "--cache", str(cluster.home(host)), "--plain-http"],
                            stdout=log, stderr=log)  # fmt: skip
    endpoint = f"http://{host.ip}:{GATEWAY_PORT}"
    try:
        cluster.wait_http(host, f"{endpoint}/healthz", timeout=60)
        commands = {
            h.role: ([PY, "-c", HF_NODE, REPO, "v1", json.dumps(expected)],
                     cluster.env(h, HF_ENDPOINT=endpoint, HF_HUB_DOWNLOAD_TIMEOUT="300",
                                 HF_HUB_ETAG_TIMEOUT="300", HF_HUB_DISABLE_TELEMETRY="1"))
            for h in cluster.node_hosts
        }  # fmt: skip
        return measure(
            cluster, origin, "c", "through `modelpack serve` (huggingface_hub clients)", commands
        )
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
        log.close()


# modelpack's parallel Range requests (blobs of 256 MiB and more) are off through a mirror by
# default, dfdaemon included: there each range would be a peer of its own at the scheduler, on
# the same host as the node's other ranges, holding only its pieces; measured 2026-12-01 with
# them on (1 GiB, 4 shards of 256 MiB): 5.40 copies from the origin, the nodes sent back to
# source ("scheduling exceeded RetryBackToSourceLimit").  MODELPACK_BENCH_DF_RANGED_MIN (e.g.
# 256MiB) turns them on through the mirror to measure that again.
DF_RANGED_MIN = os.environ.get("MODELPACK_BENCH_DF_RANGED_MIN")
# The scheduler's tries to find a parent before it sends a node to the registry (v2.5.0: 4,
# about 2 s): 2026-12-01, with 4, six of eight nodes fetched one 256 MiB blob themselves
# (2.50 copies; "scheduling exceeded RetryBackToSourceLimit 4" within 3 s of the seed peer
# being triggered, the machine at load 26); with 40, 1.00 copies.
DF_RETRY_BACK_TO_SOURCE = int(os.environ.get("MODELPACK_BENCH_DF_RETRIES", "40"))
namespace_site = dragonfly.namespace_site


def _dragonfly_on(cluster: Cluster, workdir: Path, origin_url: str) -> dragonfly.Dragonfly:
    """Dragonfly in the cluster: its control plane and seed peer on their hosts, a dfdaemon
    on every node, ``origin_url`` the registry they fetch from (cases d and h)."""
    nodes = [(f"df-{h.role}", namespace_site(cluster, h)) for h in cluster.node_hosts]
    return dragonfly.Dragonfly(
        dragonfly.build(), workdir, origin_url,
        control=namespace_site(cluster, cluster.hosts["dragonfly"]),
        seed_site=namespace_site(cluster, cluster.hosts["seed"]), peer_sites=nodes,
        scheduler_log_level=os.environ.get("MODELPACK_BENCH_DF_LOG", "info"),
        retry_back_to_source_limit=DF_RETRY_BACK_TO_SOURCE,
    )  # fmt: skip


def case_d(cluster: Cluster, origin: NsRegistry, ref: str) -> Result:
    """A Rust dfdaemon in every node (each its own ip, so its own host id), the control plane
    on the dragonfly host, the seed peer on the seed host; every node pulls through its own
    dfdaemon as registry mirror.  Start-up, and the scheduler's first seed-peer refresh, are
    waited for before the clock starts."""
    fresh_nodes(cluster)
    workdir = cluster.workdir / "dragonfly-d"
    shutil.rmtree(workdir, ignore_errors=True)
    df = _dragonfly_on(cluster, workdir, f"http://{origin.address}")
    try:
        begun = time.monotonic()
        df.start()
        waited = df.wait_for_seed_peer()
        ready = time.monotonic() - begun
        commands = {
            h.role: (
                [PY, "-m", "modelpack", "pull", ref, "-q"],
                cluster.env(
                    h,
                    MODELPACK_MIRRORS=f"{origin.address}={peer.proxy}",
                    **({"MODELPACK_RANGED_MIN": DF_RANGED_MIN} if DF_RANGED_MIN else {}),
                ),
            )
            for h, peer in zip(cluster.node_hosts, df.nodes, strict=True)
        }
        mark = len(origin.access_log())
        label = "through Dragonfly (a dfdaemon on every node)"
        result = measure(cluster, origin, "d", label, commands)
        probes = len(re.findall(r'HTTP/1\.[01]" 206 1 ', origin.access_log()[mark:]))
        seed_bytes = result.by_client.get(df.seed.ip, 0)
        log = (workdir / "scheduler.out").read_text(errors="replace")
        parents = scheduled_parents(log, df.peers)
        result.notes += [
            f"the seed peer ({df.seed.ip}) fetched {seed_bytes / 2**30:.2f} GiB of it, the "
            f"nodes' dfdaemons {result.origin_bytes - seed_bytes} bytes; the scheduler offered "
            f"{len(parents)} distinct parents ({', '.join(sorted(parents))})",
            f"Dragonfly took {ready:.0f} s to be ready before the clock started (MariaDB, Redis, "
            f"manager, scheduler, {len(df.peers)} dfdaemons announced, then {waited:.0f} s more "
            "for the scheduler's first seed-peer refresh)",
            f"the origin's egress includes {probes} one-byte `Range: bytes=0-0` probes "
            "(dfdaemon asks each blob's length before it asks the scheduler)",
        ]
        return result
    finally:
        df.stop()
        keep = os.environ.get("MODELPACK_BENCH_DF_LOGS")  # a directory to keep the logs in
        if keep and workdir.is_dir():
            shutil.copytree(workdir, keep, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("mariadb", "storage", "*.sock"))  # fmt: skip
        df.cleanup()


def case_h(cluster: Cluster, model: Path) -> Result:
    """The seed pipeline: Harbor on the harbor host (its uplink shaped as the registry's) with
    a P2P preheat policy to Dragonfly (control plane, seed peer and node dfdaemons as in (d),
    mirroring Harbor).  The model is pushed to Harbor, the policy runs (its manual trigger:
    Harbor's event-based trigger skips artifacts that are not images, and a model is type
    CNAI), Harbor's jobservice asks the manager to preheat, the seed peer fetches every blob
    from Harbor; when the execution has succeeded, every node pulls through its own dfdaemon
    at once.  Origin egress: the access log of Harbor's registry, preheat included."""
    fresh_nodes(cluster)
    workdir = cluster.workdir / "dragonfly-h"
    shutil.rmtree(workdir, ignore_errors=True)
    host = cluster.hosts["harbor"]
    harbor = NsHarbor(HARBOR_VERSION, host.ip, Netns(host.ns)).start()
    df = _dragonfly_on(cluster, workdir, harbor.url)
    try:
        begun = time.monotonic()
        df.start()
        project = "bench"
        harbor.create_project(project, public=True)
        provider = harbor.create_dragonfly_instance("dragonfly", df.manager_url, df.token)
        harbor.create_policy(project, "seed", provider, trigger="manual")
        ref = f"{harbor.host}/{project}/model:v1"
        n0 = cluster.hosts["n0"]
        publisher = cluster.workdir / "harbor-publisher"
        user, password = harbor.admin
        env = cluster.env(n0, MODELPACK_HOME=str(publisher), MODELPACK_USERNAME=user,
                          MODELPACK_PASSWORD=password)  # fmt: skip
        subprocess.run([PY, "-m", "modelpack", "build", str(model), "-t", ref, "-q",
                        "--media-types", RENDERS[HARBOR_VERSION]], env=env, check=True)  # fmt: skip
        cluster.run(n0, [PY, "-m", "modelpack", "push", ref, "-q"], env=env, check=True)
        waited = df.wait_for_seed_peer()
        ready = time.monotonic() - begun
        print("case h: Harbor preheat policy to Dragonfly, then every node through its dfdaemon",
              flush=True)  # fmt: skip
        log_before = len(harbor.registry_log())
        wire_before = cluster.tx_bytes("harbor")
        started = time.monotonic()
        execution = harbor.execute(project, "seed")
        ended = harbor.wait_execution(project, "seed", execution, timeout=1800)
        preheat = time.monotonic() - started
        if ended["status"] != "Success":
            raise RuntimeError(
                f"Harbor's preheat execution ended {ended['status']}: "
                + harbor.task_logs(project, "seed", execution)[-2000:]
            )
        preheat_bytes = sum(bytes_by_client(harbor.registry_log()[log_before:]).values())
        commands = {
            h.role: ([PY, "-m", "modelpack", "pull", ref, "-q"],
                     cluster.env(h, MODELPACK_MIRRORS=f"{harbor.host}={peer.proxy}"))
            for h, peer in zip(cluster.node_hosts, df.nodes, strict=True)
        }  # fmt: skip
        node_seconds, all_done, failures = run_nodes(cluster, commands)
        time.sleep(1.0)  # the access log line of the last response
        log = harbor.registry_log()[log_before:]
        by_client = bytes_by_client(log)
        label = "Harbor preheat policy to Dragonfly, then through the dfdaemons"
        result = Result("h", label, node_seconds, all_done, sum(by_client.values()),
                        cluster.tx_bytes("harbor") - wire_before, by_client, failures)  # fmt: skip
        requests = re.findall(r'"GET /v2/\S+/blobs/\S+ HTTP/1\.[01]" 20[06] (\d+) ', log)
        result.notes += [
            f"Harbor {HARBOR_VERSION}'s preheat execution took {preheat:.1f} s before the nodes "
            f"started (Harbor's job asks the manager every 10 s); every node ready "
            f"{preheat + all_done:.1f} s after the preheat began",
            f"the seed peer's preheat fetched {preheat_bytes / 2**30:.2f} GiB from Harbor's "
            f"registry, the nodes' dfdaemons {result.origin_bytes - preheat_bytes} bytes after it",
            "Harbor's registry sees core (127.0.0.1) as its only client",
            f"Dragonfly and Harbor took {ready:.0f} s to be ready and the model to be pushed "
            f"(then {waited:.0f} s more for the scheduler's first seed-peer refresh)",
            f"the origin's egress includes {dragonfly.probes([('', int(n)) for n in requests])} one-byte "
            "`Range: bytes=0-0` probes",
        ]
        print(f"  preheat {preheat:.1f} s, then all done {all_done:.1f} s, worst node "
              f"{max(node_seconds):.1f} s, origin egress {result.origin_bytes / 2**30:.2f} GiB, "
              f"failures {failures}", flush=True)  # fmt: skip
        return result
    finally:
        df.stop()
        keep = os.environ.get("MODELPACK_BENCH_DF_LOGS")
        if keep and workdir.is_dir():
            shutil.copytree(workdir, keep, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("mariadb", "storage", "*.sock"))  # fmt: skip
            shutil.copytree(harbor.server.logs, Path(keep) / "harbor", dirs_exist_ok=True)
        df.cleanup()
        harbor.stop()


def scheduled_parents(scheduler_log: str, peers: list[dragonfly.Peer]) -> set[str]:
    """The names of the dfdaemons the scheduler offered as parents (its ``filter candidate
    parents is []string{"PEER-ID", ...}`` lines; a peer id starts with its ip-hostname)."""
    offered = re.findall(r"filter candidate parents is \[\]string\{([^}]*)\}", scheduler_log)
    ids = {peer for listed in offered for peer in re.findall(r'"([^"]+)"', listed)}
    return {p.name for p in peers if any(i.startswith(f"{p.ip}-{p.name}-") for i in ids)}


def publish(cluster: Cluster, model: Path, ref: str) -> None:
    """Build on this machine into n0's store, push from n0's namespace over its link."""
    n0: Host = cluster.hosts["n0"]
    env = cluster.env(n0)
    subprocess.run(
        [PY, "-m", "modelpack", "build", str(model), "-t", ref, "-q"], env=env, check=True
    )
    cluster.run(n0, [PY, "-m", "modelpack", "push", ref, "-q"], env=env, check=True)


def chart(results: list[Result], one_copy: int, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    names = [f"({r.case})" for r in results]
    x = range(len(results))
    left.bar([i - 0.2 for i in x], [r.all_done for r in results], width=0.4, color="#2a7ae2",
             label="every node done")  # fmt: skip
    left.bar([i + 0.2 for i in x], [statistics.median(r.node_seconds) for r in results],
             width=0.4, color="#9ec5f0", label="median node")  # fmt: skip
    for i, r in enumerate(results):
        left.annotate(f"{r.all_done:.0f}", (i - 0.2, r.all_done), xytext=(0, 2),
                      textcoords="offset points", ha="center", fontsize=10)  # fmt: skip
    left.set_xticks(list(x), names)
    left.set_ylabel("seconds")
    left.set_title("time (lower is faster)")
    left.legend(frameon=False, fontsize=9)
    copies = [r.origin_bytes / one_copy for r in results]
    right.bar(list(x), copies, color="#e8912d", width=0.6)
    right.axhline(1.0, color="#5f5f5f", linestyle="--", linewidth=1)
    for i, c in enumerate(copies):
        right.annotate(f"{c:.2f}", (i, c), xytext=(0, 2), textcoords="offset points",
                       ha="center", fontsize=10)  # fmt: skip
    right.set_xticks(list(x), names)
    right.set_ylabel("model copies")
    right.set_title("origin registry egress")
    for ax in (left, right):
        ax.spines[["top", "right"]].set_visible(False)
        ax.margins(y=0.15)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def section(run: Run, image: Path | None) -> str:
    results, one_copy = run.results, run.one_copy
    dragonfly_run = any(r.case == "d" for r in results)
    harbor_run = any(r.case == "h" for r in results)
    rtt = ("" if run.rtt_emulated else
           " **Round trip times are not emulated**: this machine's kernel is built without "
           "`sch_netem` (`CONFIG_NET_SCH_NETEM` is not set), so tc shapes the rate (htb) only; "
           "the links add no delay.")  # fmt: skip
    lines = [
        HEADING,
        "",
        f"Written by `make bench-cluster` (`python -m benchmarks.cluster_bench --nodes {run.nodes} "
        f"--size-gib {run.size_gib:g} --shards {run.shards}`) on {run.date}, one "
        f"round. {run.nodes} node hosts, the registry, a mirror host and a cache host"
        + (" (and for (d) a Dragonfly host and a seed-peer host)" if dragonfly_run else "")
        + (" (and for (h) a Harbor host)" if harbor_run else "")
        + " are network "
        "namespaces on one bridge (benchmarks/cluster.py), each with its own MODELPACK_HOME; all "
        f"{run.nodes} nodes start pulling the same model ({run.shards} safetensors shards, "
        f"{one_copy / 2**30:.2f} GiB) at the same moment. Links: the registry's uplink "
        f"{run.registry_rate}, every other host {run.node_rate} (tc htb on both ends of each veth)."
        + rtt,
        "",
        "- **(a)** every node runs `modelpack pull` against the registry.",
        "- **(b)** a second Debian docker-registry in proxy mode (`proxy: remoteurl:` the registry) "
        "on the mirror host, the nodes' `MODELPACK_MIRRORS` pointing at it; a fresh, empty mirror.",
        "- **(b2)** the same, a fresh mirror warmed by one node's pull first (its time is left "
        "out, its origin bytes are counted), then all nodes at once.",
    ]
    if any(r.case == "b3" for r in run.results):
        lines.append(
            "- **(b3)** Debian's nginx on the mirror host as the nodes' mirror instead, caching "
            "blobs (`proxy_cache` keyed by the blob's URL, `proxy_cache_lock`: concurrent first "
            "requests for a blob wait for one fetch) and passing manifests through "
            "(benchmarks/nginx.py); a fresh, empty cache."
        )
    lines += [
        "- **(c)** `modelpack serve --registry REGISTRY` on the cache host (empty node cache), the "
        "nodes as Hugging Face clients (`snapshot_download` with `HF_ENDPOINT`, hf_xet installed), "
        "each then checking every file's sha256. The gateway speaks the hub API only (no `/v2/`), "
        "so `modelpack pull` cannot use it as a mirror; the hub clients are how nodes use it.",
    ]
    if dragonfly_run:
        lines.append(
            "- **(d)** Dragonfly (manager and scheduler v2.5.0, MariaDB, Redis on the Dragonfly "
            "host; a Rust dfdaemon 1.5.10 seed peer on the seed host; a Rust dfdaemon in every "
            "node's namespace on the node's own address, so every node is its own host to the "
            "scheduler), configured as in docs/registries.md (`schedulingPolicy: always`, "
            "`enableTaskIDBasedBlobDigest: false`, the scheduler's `retryBackToSourceLimit` 40 "
            "instead of 4); each node runs `modelpack pull` with `MODELPACK_MIRRORS` pointing at "
            "its own dfdaemon (registry-mirror mode; through a mirror modelpack sends one request "
            "per blob, and dfdaemon fetches its pieces in parallel itself), empty caches "
            "everywhere. The clock starts once every dfdaemon has announced itself to the "
            "scheduler and the scheduler's first seed-peer refresh (once a minute, v2.5.0) has "
            "passed; that start-up is not in the times. The origin's egress includes dfdaemon's "
            "one-byte `Range: bytes=0-0` probe of each blob from each dfdaemon."
        )
    if any(r.case == "h" for r in results):
        lines.append(
            "- **(h)** the seed pipeline: Harbor (v2.15.2 by default, built from source, its "
            "registry a Debian docker-registry behind core) on a host of its own with the "
            "registry's uplink, a P2P preheat policy to the Dragonfly of (d) (provider "
            "instance: the manager's URL and a personal access token), the dfdaemons mirroring "
            "Harbor. The model is pushed to Harbor, the policy is executed (its manual trigger: "
            "Harbor's event-based trigger skips artifacts that are not images), Harbor's "
            "jobservice asks the manager for the preheat and the seed peer fetches every blob "
            "from Harbor; once the execution has succeeded all nodes pull at once through their "
            "own dfdaemon. The times are the nodes' (the preheat's is in the notes); the origin "
            "is Harbor's registry, its egress counted from the preheat on."
        )
    lines += [
        "",
        "Origin egress is the response bytes in the registry's access log (the wire column is its "
        "link's transmit counter, TCP/IP headers included); one copy is the sum of the model's "
        "blobs. A node is done when its process exits with a verified model.",
        "",
        "The cluster itself is `python -m benchmarks.cluster up|run|down` (root only; exit 2 "
        "with one line otherwise): `up --nodes N` makes the hosts and a registry and keeps them "
        "until Ctrl-C or SIGTERM, `run --nodes N -- CMD` runs CMD in every node at once "
        "(`{registry}` is the registry's HOST:PORT), `down` removes what a killed run left (its "
        "namespaces carry the maker's pid: `mpk-PID-N-*`; `--prefix` for one run). The bridge "
        "sits in a namespace of its own and addresses (10.213.0.0/24) exist only inside the "
        "namespaces: nothing touches the machine's interfaces, routes or sysctls. Tested in "
        "tests/integration/test_cluster.py (8 namespaces made and removed, a SIGKILLed run "
        "cleaned afterwards, SIGTERM, the refusal as an unprivileged user, a pull across a "
        "shaped link).",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in run.machine.items()) + ".",
        "",
    ]
    if image is not None:
        lines += [f"[![many nodes]({image.name})]({image.name})", ""]
    lines += [
        "The uplink floor is the origin egress at the uplink's rate: the least time that many bytes "
        "take through it. Every host shares this machine's cores and disk, so where a case takes "
        "much longer than its floor the time goes there (each node writes and hashes its own copy; "
        "in (c) the nodes also hash every file after the download).",
        "",
        "| case | every node done | median node | worst node | origin egress | copies | wire | uplink floor | failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    uplink = rate_bits(run.registry_rate) / 8
    for r in results:
        lines.append(
            f"| ({r.case}) {r.label} | {r.all_done:.1f} s | {statistics.median(r.node_seconds):.1f} s | "
            f"{max(r.node_seconds):.1f} s | {r.origin_bytes / 2**30:.2f} GiB | "
            f"{r.origin_bytes / one_copy:.2f} | {r.origin_wire / 2**30:.2f} GiB | "
            f"{r.origin_wire / uplink:.1f} s | {r.failures} |"
        )
    lines.append("")
    for r in results:
        clients = ", ".join(f"{ip} {b / 2**30:.2f} GiB" for ip, b in sorted(r.by_client.items()))
        lines.append(f"- ({r.case}): origin bytes by client: {clients}" +
                     "".join(f"; {n}" for n in r.notes) + ".")  # fmt: skip
    for paragraph in why(results, one_copy):
        lines += ["", paragraph]
    return "\n".join(lines) + "\n"


def why(results: list[Result], one_copy: int) -> list[str]:
    """The measured reason when a shared cache let the origin send more than 1.1 copies."""
    found = {r.case: r.origin_bytes / one_copy for r in results}
    out = []
    if found.get("b", 0) > 1.1:
        out.append(
            f"**Why the mirror cost {found['b']:.2f} copies, not one.** Distribution's proxy "
            "(`registry/proxy/proxyblobstore.go`, 2.8) deduplicates nothing for concurrent "
            "readers: the first request for a blob starts a background fetch into its storage "
            "*and* streams a second fetch from the origin to the client; every request that "
            "arrives while that blob is in flight streams its own fetch from the origin. With "
            "all nodes asking at once that is 1 + N copies of every blob (here 1 + "
            f"{len(results[0].node_seconds)}). Only requests after the blob is stored are served "
            "locally"
            + (
                f": warmed by one node first (b2), the origin sent {found['b2']:.2f} copies "
                "(that node's stream and the stored copy), the other nodes none."
                if "b2" in found
                else "."
            )
        )
    if "b3" in found:
        verb = "did what distribution's proxy does not" if found["b3"] <= 1.1 else "did not help"
        out.append(
            f"A mirror that coalesces concurrent first requests {verb}: the caching nginx (b3) "
            f"cost {found['b3']:.2f} copies, the nodes waiting on its cache lock while it fetched "
            "each blob once. A pull-through mirror is then within one copy, but that mirror is "
            "an HTTP cache, not a registry: it holds blobs by URL and forwards everything else."
        )
    if found.get("c", 0) > 1.1:
        out.append(f"`modelpack serve` cost {found['c']:.2f} copies: not one pull per blob.")
    elif "c" in found:
        out.append(
            f"`modelpack serve` pulls each blob once however many clients ask at once (the node "
            f"cache's single flight), so the origin sent {found['c']:.2f} copies."
        )
    if "d" in found:
        verb = "fetched each blob once" if found["d"] <= 1.1 else "did not fetch each blob once"
        out.append(
            f"Dragonfly {verb}: the origin sent {found['d']:.2f} copies (the seed peer's bytes "
            "and the nodes' are in the notes). The first dfdaemon asking for a blob makes the "
            "scheduler trigger the seed peer, which fetches it from the registry in pieces; the "
            "nodes wait for parents (up to 40 tries, the benchmark's `retryBackToSourceLimit`) "
            "and get the pieces from the seed peer and from each other (the parents the "
            "scheduler offered are in the notes), so a node's time includes the seed peer's "
            "fetch through the uplink. A node the scheduler gave up on fetches from the "
            "registry itself: that is what more than one copy means here."
        )
    if "h" in found:
        verb = "within one copy" if found["h"] <= 1.1 else "more than one copy"
        out.append(
            f"Harbor's preheat to Dragonfly (h) cost {found['h']:.2f} copies at Harbor's registry, "
            f"{verb}: the seed peer fetched the model when the policy ran, before any node asked, "
            "and the nodes got the weights from the seed peer and each other. Blobs of one piece "
            "(4 MiB or less: configs, tokenizer files) are fetched from Harbor again by the first "
            "node that asks: the v2.5.0 seed peer does not register them at the scheduler on a "
            "preheat (docs/registries.md)."
        )
    return out


def write_section(text: str, doc: Path = DOC) -> None:
    replace_section(doc, HEADING, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--registry-rate", default="1gbit")
    parser.add_argument("--node-rate", default="10gbit")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--no-write", action="store_true", help="print only; docs/ untouched")
    parser.add_argument(
        "--from-json",
        action="store_true",
        help=f"write the doc section and chart again from {RESULTS.name} (no root, no run)",
    )
    args = parser.parse_args(argv)
    if unknown := set(args.cases.split(",")) - set(CASES):
        parser.error(
            f"unknown case(s) {', '.join(sorted(unknown))}: choose from {', '.join(CASES)}"
        )
    if args.from_json:
        publish_run(Run.load(RESULTS))
        return 0
    try:
        require_root()
    except NotRoot:
        print(NOT_ROOT, file=sys.stderr)
        return 2
    run = measure_all(args)
    print(section(run, None))
    if not args.no_write:
        run.save(RESULTS)
        publish_run(run)
    return 0 if all(r.failures == 0 for r in run.results) else 1


def publish_run(run: Run) -> None:
    drawn = chart(run.results, run.one_copy, IMAGE)
    write_section(section(run, IMAGE if drawn else None))
    print(f"wrote {DOC}" + (f" and {IMAGE}" if drawn else ""))


def measure_all(args: argparse.Namespace) -> Run:
    from benchmarks.__main__ import machine

    cache = Path(
        os.environ.get("MODELPACK_BENCH_CACHE", Path.home() / ".cache" / "modelpack-bench")
    )
    model = models.large_model(
        cache / f"cluster-{args.size_gib:g}g-{args.shards}",
        int(args.size_gib * 2**30),
        files=args.shards,
    )
    expected = digests(model)
    if "h" in args.cases.split(","):  # before any case runs: a missing Harbor fails at once
        build_harbor(HARBOR_VERSION)
    cluster = Cluster(nodes=args.nodes, extra=("mirror", "cache", "dragonfly", "seed", "harbor"),
                      registry_link=Link(args.registry_rate, 20.0),
                      node_link=Link(args.node_rate, 1.0), extra_link=Link(args.node_rate, 1.0),
                      role_links={"harbor": Link(args.registry_rate, 20.0)}).up()  # fmt: skip
    try:
        origin = cluster.start_registry()
        ref = f"{origin.address}/{REPO}:v1"
        publish(cluster, model, ref)
        results = []
        for case in args.cases.split(","):
            if case == "a":
                results.append(case_a(cluster, origin, ref))
            elif case == "b":
                results.append(case_b(cluster, origin, ref))
            elif case == "b2":
                results.append(case_b(cluster, origin, ref, warm=True))
            elif case == "b3":
                results.append(case_b3(cluster, origin, ref))
            elif case == "c":
                results.append(case_c(cluster, origin, expected))
            elif case == "d":
                results.append(case_d(cluster, origin, ref))
            elif case == "h":
                results.append(case_h(cluster, model))
    finally:
        cluster.down()
    info = machine()
    info.pop("skopeo", None)
    return Run(
        nodes=args.nodes,
        size_gib=args.size_gib,
        shards=args.shards,
        registry_rate=args.registry_rate,
        node_rate=args.node_rate,
        rtt_emulated=bool(cluster.delay),
        one_copy=sum(Path(model, name).stat().st_size for name in expected),
        machine=info,
        date=time.strftime("%Y-%m-%d"),
        results=results,
    )


if __name__ == "__main__":
    raise SystemExit(main())
