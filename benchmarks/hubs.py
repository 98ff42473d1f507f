"""`make bench-hubs`: `modelpack serve` and MatrixHub side by side, one run on this machine
(issue 32), written to the section "MatrixHub side by side" of docs/benchmarks.md.

    python -m benchmarks --cases hubs [--workdir DIR]          (root)
    python -m benchmarks.hubs [--skip cluster,...] [--variant=OPTIONS] [--no-write] [--from-json]

The same upstream for both hubs: a second ``modelpack serve`` in front of a second registry
plays the public hub, warmed first.  MatrixHub's proxy projects mirror their upstream with git
and its LFS batch API, which ``modelpack serve`` did not speak when this benchmark was written
(its git over HTTP came later), so MatrixHub reaches that gateway through benchmarks/gitface.py,
whose LFS downloads are the gateway's own resolve URLs.  The clients are huggingface_hub with hf_xet as pip installs it, one process
each, started before the clock and released together; every download is checked against
the model's sha256s afterwards.  The run re-executes itself in a network namespace of its own
(``unshare --net``): everything listens on that namespace's 127.0.0.1, and iptables rules
there count the bytes on each server's port (TCP/IP headers included).  A hub's CPU and peak
memory are those of its processes from /proc: the gateway and its registry; MatrixHub and
its MariaDB.  The 8-node row runs in namespaces as `make bench-cluster` does (cluster.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from benchmarks import models
from benchmarks.cluster import Cluster, Host
from benchmarks.cluster_bench import HF_NODE, digests, fresh_nodes, publish, run_nodes
from benchmarks.gitface import GitFace
from benchmarks.replicas import Replica, _clean_env
from benchmarks.report import load_run, replace_section, save_run, section_options
from benchmarks.runner import stop, tree_cpu, tree_rss
from modelpack.testing.fetched import minilm
from modelpack.testing.matrixhub import MatrixHubServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
HEADING = "## MatrixHub side by side"
RESULTS = HERE / "hubs-results.json"
NETNS_ENV = "MODELPACK_BENCH_HUBS_NETNS"
STEPS = ("downloads", "uploads", "search", "cluster")
CLIENTS = 8
STEP_TIMEOUT = 1800.0  # seconds a client's step may take
SEARCHED = 200
CHANGED = 16 * models.MIB  # the second commit rewrites this much of one 256 MiB shard

# One huggingface_hub process: each step waits for the parent's go (a line on stdin), so
# many clients start together and the parent reads its counters between steps; each step
# answers one JSON line with its own time.
CLIENT = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from huggingface_hub import HfApi, snapshot_download
api = HfApi()
def populate(names):
    def one(name):
        api.create_repo(name, exist_ok=True)
        api.upload_file(path_or_fileobj=b"# " + name.encode(), path_in_repo="README.md", repo_id=name)
    pool = ThreadPoolExecutor(4)
    try:
        for n, made in enumerate([pool.submit(one, name) for name in names]):
            try:
                made.result(timeout=120)
            except TimeoutError:
                raise TimeoutError(f"no answer for 120 s, repository {n + 1} of {len(names)}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return len(names)
def search(term):
    return len(list(api.list_models(search=term)))
def upload(args):
    repo, folder = args
    api.create_repo(repo, exist_ok=True)
    return api.upload_folder(repo_id=repo, folder_path=folder).oid
def upload_file(args):
    repo, path, name = args
    return api.upload_file(path_or_fileobj=path, path_in_repo=name, repo_id=repo).oid
DO = {"download": snapshot_download, "populate": populate, "search": search,
      "upload": upload, "upload_file": upload_file}
for name, arg in json.loads(sys.argv[1]):
    print("ready", flush=True)
    if not sys.stdin.readline():
        break
    started = time.time()
    try:
        answer = {"ok": DO[name](arg)}
    except Exception as exc:
        answer = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
    print(json.dumps({**answer, "seconds": time.time() - started, "done": time.time()}), flush=True)
"""


@dataclass
class Row:
    """One measured cell: ``what`` was done through ``hub``; ``sent`` is the bytes of
    ``sent_by`` (the upstream, or the client)."""

    what: str
    hub: str
    seconds: float | None  # None: failed (``note`` says how)
    sent: int | None = None
    sent_by: str = ""
    cpu: float | None = None
    rss: int | None = None
    note: str = ""


@dataclass
class Run:
    date: str
    machine: dict[str, str]
    versions: dict[str, str]
    load: dict[str, float]
    rows: list[Row]
    left_out: list[str] = field(default_factory=list)

    @classmethod
    def load_json(cls, path: Path) -> Run:
        return load_run(cls, Row, path)

    def save(self, path: Path) -> None:
        save_run(self, path)


# -- what the machine and the servers do ---------------------------------------------------


def parse_counters(listing: str) -> dict[str, int]:
    """Bytes by ``dpt:PORT`` / ``spt:PORT`` from ``iptables -L OUTPUT -v -x -n``."""
    out: dict[str, int] = {}
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[0].isdigit() and fields[-1].startswith(("dpt:", "spt:")):
            out[fields[-1]] = out.get(fields[-1], 0) + int(fields[1])
    return out


class Counters:
    """Bytes sent on this namespace's loopback to and from a port: iptables rules with no
    target only count (this namespace is the run's own)."""

    def watch(self, port: int) -> None:
        for match in ("--dport", "--sport"):
            subprocess.run(["iptables", "-A", "OUTPUT", "-o", "lo", "-p", "tcp", match, str(port)],
                           check=True)  # fmt: skip

    def read(self) -> dict[str, int]:
        listing = subprocess.run(["iptables", "-L", "OUTPUT", "-v", "-x", "-n"],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        return parse_counters(listing)


def busy_ticks(stat: str) -> tuple[int, int]:
    """(busy, all) clock ticks of every core from /proc/stat's first line."""
    ticks = [int(x) for x in stat.splitlines()[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


class Load(threading.Thread):
    """The machine while the run goes on: the 1-minute load average every 5 s, the cores
    busy, and how many of them this run's own processes kept busy (the rest: other jobs)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stopped = threading.Event()
        self.started_at = time.monotonic()
        self.ticks = busy_ticks(Path("/proc/stat").read_text())
        self.ours = tree_cpu([os.getpid()])

    def run(self) -> None:
        while not self.stopped.wait(5.0):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        self.stopped.set()
        wall = time.monotonic() - self.started_at
        busy, total = busy_ticks(Path("/proc/stat").read_text())
        cores = os.cpu_count() or 1
        busy_cores = (busy - self.ticks[0]) / max(total - self.ticks[1], 1) * cores
        ours = (tree_cpu([os.getpid()]) - self.ours) / wall
        loads = self.samples or [os.getloadavg()[0]]
        return {"minutes": round(wall / 60, 1), "load_min": min(loads),
                "load_median": statistics.median(loads), "load_max": max(loads),
                "busy_cores": round(busy_cores, 2), "ours_cores": round(ours, 2),
                "others_cores": round(max(busy_cores - ours, 0.0), 2)}  # fmt: skip


@contextmanager
def watching(pids: list[int]) -> Iterator[dict[str, float]]:
    """CPU seconds the processes ``pids`` (and descendants) spent, and their peak resident
    bytes (sampled every 0.1 s), over the block: ``cpu`` and ``rss`` once it ends."""
    found: dict[str, float] = {"rss": float(tree_rss(pids))}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            found["rss"] = max(found["rss"], tree_rss(pids))

    sampler = threading.Thread(target=sample, daemon=True)
    before = tree_cpu(pids)
    sampler.start()
    try:
        yield found
    finally:
        stop.set()
        sampler.join()
        found["cpu"] = tree_cpu(pids) - before


# -- hubs and their clients ----------------------------------------------------------------


@dataclass
class Hub:
    name: str
    url: str
    token: str
    pids: list[int]  # its processes: what its CPU and memory are measured on
    proxy: str  # the namespace the upstream's org/NAME has here (MatrixHub: a proxy project)
    port: int


class Client:
    """One huggingface_hub process against ``hub`` running ``steps`` ([op, argument]) one
    at a time, each when told to (:func:`together`)."""

    def __init__(self, hub: Hub, steps: list[list[object]], home: Path, **env: str) -> None:
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        self.home = home
        env = _clean_env(home, HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_TOKEN=hub.token,
                         HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1",
                         HF_HUB_DOWNLOAD_TIMEOUT="600", HF_HUB_ETAG_TIMEOUT="600", **env)  # fmt: skip
        with open(home / "client.log", "wb") as log:
            self.process = subprocess.Popen([PY, "-c", CLIENT, json.dumps(steps)], env=env,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=log, text=True)  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put("")

    def line(self, timeout: float = STEP_TIMEOUT) -> str:
        """The client's next line; "" when it gave none within ``timeout`` s (killed then)."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.process.kill()
            return ""
        if not line:
            raise RuntimeError(f"a client exited: {(self.home / 'client.log').read_text()[-2000:]}")
        return line

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # it may have been killed
            if self.process.stdin:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.home, ignore_errors=True)


def together(clients: list[Client], hub: Hub, counters: Counters, keys: list[str],
             timeout: float = STEP_TIMEOUT) -> tuple[list[dict], float, int, dict[str, float]]:  # fmt: skip
    """The next step of every client at once: (their answers, seconds until the last is
    done, bytes counted on ``keys`` (``spt:PORT``: sent by that server, ``dpt:PORT``: sent
    to it), the hub's CPU seconds and peak memory).  A client that does not answer within
    ``timeout`` s is killed, its answer an error."""
    for client in clients:
        if (line := client.line().strip()) != "ready":
            raise RuntimeError(f"a client said {line!r}")
    before = counters.read()
    with watching(hub.pids) as spent:
        started = time.time()
        for client in clients:
            client.go()
        answers = [json.loads(line) if (line := client.line(timeout)) else
                   {"error": f"no answer within {timeout:.0f} s", "done": time.time()}
                   for client in clients]  # fmt: skip
    after = counters.read()
    sent = sum(after.get(k, 0) - before.get(k, 0) for k in keys)
    return answers, max(a["done"] for a in answers) - started, sent, spent


def row(what: str, hub: Hub, measured: tuple[list[dict], float, int, dict[str, float]],
        sent_by: str, note: str = "") -> Row:  # fmt: skip
    answers, seconds, sent, spent = measured
    failed = [a["error"] for a in answers if "error" in a]
    done = Row(what, hub.name, None if failed else seconds, sent, sent_by, spent["cpu"],
               int(spent["rss"]), "; ".join([*failed[:1], *([note] if note else [])]))  # fmt: skip
    shown = f"{seconds:.2f} s" if done.seconds is not None else f"FAILED ({done.note})"
    print(f"  {hub.name}: {what}: {shown}, {sent / 1e6:,.1f} MB from the {sent_by}, "
          f"CPU {spent['cpu']:.2f} s, peak {spent['rss'] / 1e6:,.0f} MB", flush=True)  # fmt: skip
    return done


# -- the servers -------------------------------------------------------------------------


@dataclass
class Upstream:
    url: str
    keys: list[str]  # the counters of what it sends: the gateway's and its git face's
    git: GitFace
    expected: dict[str, dict[str, str]]  # org/NAME -> file -> sha256


@contextmanager
def registry(work: Path) -> Iterator[tuple[str, int]]:
    from modelpack.testing.registry import RegistryServer

    server = RegistryServer(workdir=work).start()
    try:
        assert server._process is not None
        yield server.host, server._process.pid
    finally:
        server.cleanup()


@contextmanager
def upstream(work: Path, sources: dict[str, Path], counters: Counters) -> Iterator[Upstream]:
    """The public hub: ``modelpack serve`` in front of a registry holding ``sources``
    (org/NAME -> folder), warmed (each file read through it once), and its git face."""
    with registry(work / "upstream-registry") as (host, _):
        env = {**os.environ, "MODELPACK_HOME": str(work / "push-home"), "MODELPACK_PLAIN_HTTP": "1"}
        for repo, folder in sources.items():
            subprocess.run([PY, "-m", "modelpack", "build", str(folder), "-t",
                            f"{host}/up/{repo}:main", "--push", "-q"], env=env, check=True)  # fmt: skip
        shutil.rmtree(work / "push-home", ignore_errors=True)
        gateway = Replica(work / "upstream", f"{host}/up", None)
        face = GitFace(gateway.url, work / "upstream-git")
        expected: dict[str, dict[str, str]] = {}
        try:
            for repo, folder in sources.items():  # what it serves (build leaves out dotfiles)
                face.add(repo, warm=True)
                every = digests(folder)
                expected[repo] = {path: every[path] for path in face.files[repo]}
            face.serve()
            ports = [gateway.port, face.server.server_address[1]]
            for port in ports:
                counters.watch(port)
            yield Upstream(gateway.url, [f"spt:{p}" for p in ports], face, expected)
        finally:
            face.close()
            gateway.stop()
            for folder in ("upstream", "upstream-git"):
                shutil.rmtree(work / folder, ignore_errors=True)


@contextmanager
def ours(work: Path, up: Upstream | None, counters: Counters, *args: str) -> Iterator[Hub]:
    """``modelpack serve`` (with ``args``) and a registry of its own, importing from ``up``."""
    with registry(work / "ours-registry") as (host, registry_pid):
        extra = ("--upstream", up.url, "--upstream-allow", "*") if up else ()
        gateway = Replica(work / "ours", f"{host}/hub", None, *extra, *args)
        counters.watch(gateway.port)
        try:
            yield Hub(" ".join(["modelpack serve", *args]), gateway.url, "bench:bench",
                      [gateway.process.pid, registry_pid], "org", gateway.port)  # fmt: skip
        finally:
            gateway.stop()
            shutil.rmtree(work / "ours", ignore_errors=True)


def add_proxy(server: MatrixHubServer, git_url: str) -> None:
    """A proxy project ``proxy`` whose registry is ``git_url`` and organization ``org``."""
    document = {"name": "upstream", "type": "REGISTRY_TYPE_HUGGINGFACE", "url": git_url}
    created = server.api("POST", "/registries", json=document).json()["registry"]
    server.api("POST", "/projects", json={"name": "proxy", "type": "PROJECT_TYPE_PUBLIC",
                                          "registry_id": created["id"], "organization": "org"})  # fmt: skip


@contextmanager
def matrixhub(work: Path, up: Upstream | None, counters: Counters) -> Iterator[Hub]:
    """MatrixHub with its MariaDB, a project ``bench`` and, with ``up``, the proxy project."""
    server = MatrixHubServer(workdir=work / "matrixhub")
    try:
        server.start()
        server.create_project("bench")
        if up:
            add_proxy(server, up.git.url)
        counters.watch(server.port)
        yield Hub("MatrixHub", server.url, server.access_token("bench"),
                  [p.pid for _, p in server._processes], "proxy", server.port)  # fmt: skip
    finally:
        server.cleanup()


# -- the rows ------------------------------------------------------------------------------


def label(folder: Path) -> str:
    return f"{folder.name} ({models.model_bytes(folder) / 1e6:,.0f} MB)"


def download(hub: Hub, up: Upstream, work: Path, counters: Counters, repo: str, what: str,
             clients: int = 1) -> Row:  # fmt: skip
    """``clients`` snapshot_downloads of the upstream's ``repo`` through ``hub`` at once,
    each into an empty HF_HOME, checked against the upstream's sha256s after the clock."""
    name = f"{hub.proxy}/{repo.split('/')[1]}"
    running = [Client(hub, [["download", name]], work / f"client-{n}") for n in range(clients)]
    try:
        measured = together(running, hub, counters, up.keys)
        for answer in measured[0]:
            if "ok" in answer and digests(Path(answer["ok"])) != up.expected[repo]:
                answer["error"] = "the downloaded files differ from the upstream's"
    finally:
        for client in running:
            client.close()
    return row(what, hub, measured, "upstream")


def downloads(work: Path, counters: Counters, sources: dict[str, Path],
              variant: tuple[str, ...]) -> list[Row]:  # fmt: skip
    """Through each hub's proxy: every model cold then warm (one client), then the first
    model warm to CLIENTS clients at once; with ``variant``, the first model's rows through
    ``modelpack serve VARIANT`` too.  Generated models are deleted once the upstream has them."""
    names = {repo: label(folder) for repo, folder in sources.items()}
    small = next(iter(sources))
    rows: list[Row] = []
    with upstream(work, sources, counters) as up:
        for folder in sources.values():
            if folder.is_relative_to(work):
                shutil.rmtree(folder)
        starters = [lambda: ours(work, up, counters), lambda: matrixhub(work, up, counters)]
        if variant:
            starters.append(lambda: ours(work, up, counters, *variant))
        for index, start in enumerate(starters):
            repos = list(names) if index < 2 else [small]
            with start() as hub:
                for kind in ("first (cold: through the proxy)", "warm"):
                    for repo in repos:
                        what = f"{kind} download, 1 client: {names[repo]}"
                        rows.append(download(hub, up, work, counters, repo, what))
                what = f"warm download, {CLIENTS} clients at once: {names[small]}"
                rows.append(download(hub, up, work, counters, small, what, CLIENTS))
    return rows


def rewrite(path: Path, size: int, seed: int) -> None:
    """``size`` new random bytes in the middle of ``path`` (a fine-tune that touched part of it)."""
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(random.Random(seed).randbytes(size))


def uploads(work: Path, counters: Counters, hub: Hub) -> list[Row]:
    """``upload_folder`` of 1 GiB through LFS and through Xet, each followed by a commit of
    one shard with CHANGED bytes of it rewritten: the client's bytes and time."""
    rows: list[Row] = []
    sent = [f"dpt:{hub.port}"]
    for path, seed in (("LFS", 11), ("Xet", 12)):
        folder = work / f"upload-{path.lower()}"
        shutil.rmtree(folder, ignore_errors=True)
        models.large_model(folder, 1024 * models.MIB, files=4, seed=seed)
        shard = sorted(folder.glob("*.safetensors"))[1]
        repo = f"bench/upload-{path.lower()}"
        steps = [["upload", [repo, str(folder)]], ["upload_file", [repo, str(shard), shard.name]]]
        client = Client(
            hub, steps, work / "uploader", **({"HF_HUB_DISABLE_XET": "1"} if path == "LFS" else {})
        )
        try:
            what = f"upload_folder through {path}: {label(folder)}, 4 shards"
            rows.append(row(what, hub, together([client], hub, counters, sent), "client"))
            rewrite(shard, CHANGED, seed + 1000)  # bytes the model does not hold
            what = (f"second commit through {path}: one shard, {CHANGED // models.MIB} MiB of "
                    f"its {shard.stat().st_size // models.MIB} MiB rewritten")  # fmt: skip
            rows.append(row(what, hub, together([client], hub, counters, sent), "client"))
        finally:
            client.close()
            shutil.rmtree(folder)
    return rows


def search(work: Path, counters: Counters, hub: Hub) -> list[Row]:
    """SEARCHED repositories made (create_repo and a README each, not measured), then
    ``list_models(search=...)`` twice from a new client: time and the hub's bytes."""
    names = [f"bench/search-model-{n:03d}" for n in range(SEARCHED)]
    filler = Client(hub, [["populate", names]], work / "populate")
    try:
        made = together([filler], hub, counters, [])[0][0]
    finally:
        filler.close()
    note = "" if "ok" in made else f"making the {SEARCHED} repositories: {made['error']}"
    rows: list[Row] = []
    searcher = Client(hub, [["search", "model-1"]] * 2, work / "search")
    try:
        for when in ("first", "again (cached)"):
            measured = together([searcher], hub, counters, [f"spt:{hub.port}"], timeout=60)
            found = measured[0][0].get("ok")
            what = f"list_models(search='model-1') over {SEARCHED} repositories, {when}"
            rows.append(row(what, hub, measured, "hub", note or f"{found} found"))
            if found is None:
                break
    finally:
        searcher.close()
    return rows


# A MatrixHub in a cluster host's namespace: its admin sets the proxy up and makes a token.
PROXIED = """
import sys
from benchmarks.hubs import add_proxy
from modelpack.testing.matrixhub import MatrixHubServer
server = MatrixHubServer(port=int(sys.argv[1]), admin_password=sys.argv[2])
add_proxy(server, sys.argv[3])
print(server.access_token("bench"))
"""


def cluster_rows(work: Path, gib: float) -> list[Row]:
    """CLIENTS nodes (network namespaces, benchmarks/cluster.py) snapshot_download one model
    through each hub at once, its proxy cold, as `make bench-cluster` (c) does: the upstream
    (registry, gateway, git face) on the origin host behind its 1gbit uplink, the hub on the
    cache host.  Time until every node has a verified model; the origin link's bytes."""
    model = models.large_model(work / "cluster", int(gib * 1024) * models.MIB, seed=9)
    expected, what = digests(model), f"{CLIENTS} nodes at once, cold, {label(model)}"
    cluster = Cluster(nodes=CLIENTS, extra=("cache",)).up()
    rows: list[Row] = []
    try:
        origin, cache = cluster.hosts["registry"], cluster.hosts["cache"]
        registry = cluster.start_registry()
        publish(cluster, model, f"{registry.address}/up/org/cluster:main")
        up_url, processes = f"http://{origin.ip}:8080", []

        def serve(host: Host, *args: str) -> str:
            url = f"http://{host.ip}:8080"
            argv = [PY, "-m", "modelpack", "serve", "--bind", host.ip, "--port", "8080",
                    "--plain-http", "--cache", str(cluster.home(host) / "gateway"), *args]  # fmt: skip
            with open(cluster.home(host).parent / "gateway.log", "ab") as log:
                processes.append(cluster.spawn(host, argv, stdout=log, stderr=log))
            cluster.wait_http(host, f"{url}/healthz", timeout=60)
            return url

        serve(origin, "--registry", f"{registry.address}/up")
        face = cluster.spawn(origin, [PY, "-m", "benchmarks.gitface", up_url, "org/cluster",
                                      "--bind", origin.ip, "--port", "8081", "--warm"],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
        processes.append(face)
        assert face.stdout is not None and face.stdout.readline().startswith("GITFACE_URL=")
        for kind in ("modelpack serve", "MatrixHub"):
            fresh_nodes(cluster)
            started = len(processes)
            if kind == "MatrixHub":
                hub = matrixhub_at(cluster, cache, f"http://{origin.ip}:8081", processes)
            else:
                store = cluster.start_registry("cache")
                url = serve(cache, "--registry", f"{store.address}/hub", "--upstream", up_url,
                            "--upstream-allow", "*")  # fmt: skip
                processes.append(store.process)
                hub = Hub(kind, url, "bench:bench", [p.pid for p in processes[started:]], "org",
                          8080)  # fmt: skip
            env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": hub.token, "HF_HUB_DISABLE_TELEMETRY": "1",
                   "HF_HUB_DOWNLOAD_TIMEOUT": "600", "HF_HUB_ETAG_TIMEOUT": "600"}  # fmt: skip
            argv = [PY, "-c", HF_NODE, f"{hub.proxy}/cluster", "main", json.dumps(expected)]
            wire = cluster.tx_bytes("registry")
            with watching(hub.pids) as spent:
                nodes, seconds, failed = run_nodes(
                    cluster, {h.role: (argv, cluster.env(h, **env)) for h in cluster.node_hosts}
                )
            note = f"median node {statistics.median(nodes):.1f} s, worst {max(nodes):.1f} s"
            if failed:
                note = f"{failed} of {CLIENTS} nodes failed, the others done in {seconds:.1f} s ({note})"
            measured = ([{"error": note}] if failed else [], seconds,
                        cluster.tx_bytes("registry") - wire, spent)  # fmt: skip
            rows.append(row(what, hub, measured, "upstream's link", "" if failed else note))
            while len(processes) > started:
                stop(processes.pop())
    finally:
        cluster.down()
        shutil.rmtree(model, ignore_errors=True)
    return rows


def matrixhub_at(cluster: Cluster, host: Host, git_url: str,
                 processes: list[subprocess.Popen]) -> Hub:  # fmt: skip
    """MatrixHub on ``host`` (benchmarks.cluster): its launcher in the host's namespace
    (MatrixHub listens on 127.0.0.1 there, so the host's address is forwarded to it with
    iptables' DNAT, in the kernel), the proxy of ``git_url`` and a token."""
    launcher = cluster.spawn(host, [PY, "-m", "modelpack.testing.matrixhub", "--port", "8080"],
                             stdout=subprocess.PIPE, text=True,
                             env=cluster.env(host, TMPDIR=str(cluster.home(host))))  # fmt: skip
    processes.append(launcher)
    told: dict[str, str] = {}
    while "MATRIXHUB_ADMIN_PASSWORD" not in told:  # its lines once it answers
        assert launcher.stdout is not None
        if not (line := launcher.stdout.readline()):
            raise RuntimeError("MatrixHub did not start in its namespace")
        key, _, value = line.strip().partition("=")
        told[key] = value
    for argv in (["sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"],
                 ["iptables", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "-d", host.ip,
                  "--dport", "8080", "-j", "DNAT", "--to-destination", "127.0.0.1:8080"]):  # fmt: skip
        cluster.run(host, argv, check=True)
    token = cluster.run(host, [PY, "-c", PROXIED, "8080", told["MATRIXHUB_ADMIN_PASSWORD"], git_url],
                        capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    return Hub("MatrixHub", f"http://{host.ip}:8080", token, [launcher.pid], "proxy", 8080)


# -- the page ------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    from benchmarks.__main__ import version_of
    from modelpack.testing.matrixhub import mariadb_bin, matrixhub_dir

    share = matrixhub_dir() / "share"
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    return {
        "modelpack serve": f"{version('modelpack-oci')} (commit {commit or 'unknown'})",
        "MatrixHub": f"{(share / 'VERSION').read_text().strip()} (commit "
        f"{(share / 'COMMIT').read_text().strip()[:12]}, built from ../shared/peer-src)",
        "MariaDB": version_of([mariadb_bin("mariadbd"), "--version"]),
        "registry": version_of(["docker-registry", "--version"]),
        "huggingface_hub": version("huggingface_hub"),
        "hf_xet": version("hf_xet"),
        "git (the git face)": version_of(["git", "--version"]),
    }


OURS, THEIRS = "modelpack serve", "MatrixHub"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e3:,.1f} kB" if n < 1e6 else f"{n / 1e6:,.1f} MB"


def _pair(rows: dict[str, Row], show: Callable[[Row], str]) -> str:
    return " / ".join(show(rows[h]) if h in rows else "-" for h in (OURS, THEIRS))


def table(rows: list[Row]) -> list[str]:
    """One line per operation, ours beside MatrixHub (a variant of ours in the notes)."""
    grouped: dict[str, dict[str, Row]] = {}
    for r in rows:
        grouped.setdefault(r.what, {})[r.hub] = r
    lines = [
        f"| what | time: {OURS} / {THEIRS} | bytes | hub CPU | hub peak memory | notes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for what, by_hub in grouped.items():
        sent_by = next(iter(by_hub.values())).sent_by
        notes = [
            f"{hub}: {r.note[:200]}"
            for hub, r in by_hub.items()
            if r.note and hub in (OURS, THEIRS)
        ]
        notes += [f"`{hub}`: " + (f"{r.seconds:.2f} s, CPU {r.cpu or 0:.2f} s" if r.seconds is not None
                                  else f"failed ({r.note[:120]})")
                  for hub, r in by_hub.items() if hub not in (OURS, THEIRS)]  # fmt: skip
        lines.append(
            f"| {what} | {_pair(by_hub, lambda r: 'failed' if r.seconds is None else f'{r.seconds:.2f} s')} "
            f"| {_pair(by_hub, lambda r: _size(r.sent))} from the {sent_by} "
            f"| {_pair(by_hub, lambda r: f'{r.cpu or 0:.2f} s')} "
            f"| {_pair(by_hub, lambda r: f'{(r.rss or 0) / 1e6:,.0f} MB')} | {'; '.join(notes)} |"
        )
    return lines


def section(run: Run) -> str:
    """The page's section, from a run's rows (and benchmarks/hubs-notes.md, the analysis)."""
    load = run.load
    lines = [
        HEADING,
        "",
        f"Written by `make bench-hubs` (`python -m benchmarks --cases hubs`) on {run.date}, one "
        "run, both hubs and their clients on this machine. "
        + __doc__.split("\n\n")[2].replace("\n", " ").strip(),
        "",
        "Versions: " + "; ".join(f"{k} {v}" for k, v in run.versions.items()) + ".",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in run.machine.items()) + ".",
        "",
        f"Load during the run ({load['minutes']:g} minutes): 1-minute load average "
        f"{load['load_min']:.1f} to {load['load_max']:.1f} (median {load['load_median']:.1f}); "
        f"{load['busy_cores']:.2f} of {run.machine.get('cpu', '?').split(' x ')[0]} cores busy on "
        f"average, {load['ours_cores']:.2f} of them this run's processes and "
        f"{load['others_cores']:.2f} other jobs'.",
        "",
        *table(run.rows),
    ]
    ahead = [f"{w} ({m:.2f} s against {o:.2f} s)" for w, o, m in compare(run.rows) if m < o]
    lines += ["", f"{THEIRS} was ahead on: " + ("; ".join(ahead) if ahead else "no row") + "."]
    if run.left_out:
        lines += ["", "Left out of this run: " + "; ".join(run.left_out) + "."]
    notes = HERE / "hubs-notes.md"
    if notes.exists():
        lines += ["", notes.read_text(encoding="utf-8").strip()]
    return "\n".join(lines) + "\n"


def compare(rows: list[Row]) -> list[tuple[str, float, float]]:
    """(what, ours s, MatrixHub s) of every row both hubs finished."""
    times: dict[str, dict[str, float]] = {}
    for r in rows:
        if r.seconds is not None:
            times.setdefault(r.what, {})[r.hub] = r.seconds
    return [(what, t[OURS], t[THEIRS]) for what, t in times.items() if {OURS, THEIRS} <= t.keys()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hubs",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--workdir", default=str(HERE / ".work" / "hubs"))
    parser.add_argument("--big-gib", type=float, default=2.0, help="the synthetic model's size")
    parser.add_argument("--cluster-gib", type=float, default=0.5, help="the 8-node row's model")
    parser.add_argument("--skip", default="", help=f"steps left out, of {','.join(STEPS)}")
    parser.add_argument("--variant", default="--auth-cache-ttl 0",
                        help="MiniLM's download rows through `modelpack serve OPTIONS` too "
                        "('' for none)")  # fmt: skip
    section_options(parser, RESULTS)
    args = parser.parse_args(argv)
    if args.from_json:
        replace_section(Path(args.output), HEADING, section(Run.load_json(RESULTS)))
        return 0
    if os.geteuid() != 0:
        print("benchmarks.hubs: needs root (a network namespace, iptables)", file=sys.stderr)
        return 2
    if os.environ.get(NETNS_ENV) != "1":  # again, in a network namespace of its own
        argv = sys.argv[1:] if argv is None else argv
        os.execvpe("unshare", ["unshare", "--net", "--", PY, "-m", "benchmarks.hubs", *argv],
                   {**os.environ, NETNS_ENV: "1"})  # fmt: skip
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # servers stopped on the way out
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    load, counters, rows = Load(), Counters(), []
    load.start()
    if "downloads" not in skip:
        big = models.large_model(work / "synthetic", int(args.big_gib * 1024) * models.MIB, seed=7)
        sources = {"org/minilm": minilm(), "org/synthetic": big}
        rows += downloads(work, counters, sources, tuple(args.variant.split()))
    for start in (lambda: ours(work, None, counters), lambda: matrixhub(work, None, counters)):
        if not {"uploads", "search"} <= skip:
            with start() as hub:
                rows += [] if "uploads" in skip else uploads(work, counters, hub)
                rows += [] if "search" in skip else search(work, counters, hub)
    if "cluster" not in skip:
        rows += cluster_rows(work, args.cluster_gib)
    from benchmarks.__main__ import machine

    info = {k: v for k, v in machine().items() if k not in ("skopeo", "registry")}
    info["work folder"] = subprocess.run(["df", "--output=fstype", str(work)], capture_output=True,
                                         text=True).stdout.split()[-1]  # fmt: skip
    run = Run(time.strftime("%Y-%m-%d"), info, versions(), load.summary(), rows,
              [f"the {s} rows (--skip)" for s in STEPS if s in skip])  # fmt: skip
    print(section(run))
    if not args.no_write:
        run.save(RESULTS)
        replace_section(Path(args.output), HEADING, section(run))
        print(f"wrote {args.output}")
    return 0 if all(r.seconds is not None or r.hub == "MatrixHub" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
