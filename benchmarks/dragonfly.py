"""A real Dragonfly cluster, wherever the caller puts each part: MariaDB, Redis, manager,
scheduler, a seed peer and dfdaemons, each its own process with its own log.

One place for the launch order and the configuration found by running it (docs/registries.md,
"Settings that matter"), used by the tests (everything on 127.0.0.1,
tests/support/dragonfly.py) and by case (d) of benchmarks/cluster_bench.py (the control plane
and the seed peer on hosts of their own, a dfdaemon in every node's network namespace). A
``Site`` says where a process runs: the address it listens on and advertises, how it is
started there, how a port is checked from there.

The manager and scheduler are Go (d7y.io/dragonfly/v2, pinned in
scripts/peers/dragonfly-pins.txt); the seed peer and dfdaemons are the Rust client (crate
dragonfly-client, pinned in scripts/peers/build-dragonfly.sh), the only peer the Go module
proxy here lets us build (it refuses every v2.1.x, the last release line with a Go dfdaemon).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "scripts" / "peers" / "build-dragonfly.sh"
PEERS_DIR = Path(os.environ.get("MODELPACK_PEERS_DIR", Path.home() / ".cache" / "modelpack-peers"))
BIN = PEERS_DIR / "bin"
# The scheduler adds announced seed peers to its ring once a minute (SeedPeerRefreshInterval,
# not configurable in v2.5.0): until then nothing can be preheated and no seed peer is
# triggered for a node's task.
SEED_PEER_REFRESH = 62.0
DFDAEMON_PORTS = ("upload", "tcp", "quic", "proxy", "health", "metrics", "stats")


def build() -> Path:
    """Build (or, warm, only confirm the cache of) manager, scheduler and dfdaemon with
    scripts/peers/build-dragonfly.sh; their bin dir.  RuntimeError with the script's output."""
    done = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=7200)
    if done.returncode != 0:
        raise RuntimeError(f"build-dragonfly.sh failed:\n{done.stdout}\n{done.stderr}")
    return BIN


@dataclass
class Site:
    """Where processes run: ``ip`` (listened on and advertised), ``popen(argv, **kwargs)``
    starts one there, ``port_open(port)`` checks ``ip:port`` from there, ``free_port()``."""

    ip: str
    popen: Callable[..., subprocess.Popen]
    port_open: Callable[[int], bool]
    free_port: Callable[[], int]


def _local_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def local_site() -> Site:
    """This machine's loopback: ports picked free at start."""
    return Site(
        "127.0.0.1",
        lambda argv, **kw: subprocess.Popen(argv, start_new_session=True, **kw),
        _local_port_open,
        _local_free_port,
    )


def port_range(start: int) -> Callable[[], int]:
    """Ports counted up from ``start``: for a host (namespace) with nothing else listening."""
    return itertools.count(start).__next__


PORT_PROBE = (
    "import socket,sys\n"
    "s=socket.socket(); s.settimeout(0.5)\n"
    "sys.exit(s.connect_ex((sys.argv[1], int(sys.argv[2]))))\n"
)


def namespace_site(cluster, host) -> Site:  # noqa: ANN001 - benchmarks.cluster's Cluster, Host
    """Processes in ``host``'s network namespace (benchmarks/cluster.py), on its bridge address."""
    return Site(
        host.ip,
        lambda argv, **kwargs: cluster.spawn(host, argv, **kwargs),
        lambda port: (
            cluster.run(host, [sys.executable, "-c", PORT_PROBE, host.ip, str(port)]).returncode
            == 0
        ),
        port_range(40000),
    )


PORT_ATTEMPTS = 3  # dfdaemon started again on new ports when one was taken meanwhile


def wait_until(check, what: str, timeout: float = 120.0, logs: tuple[Path, ...] = ()) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}:\n{tail(p)}" for p in logs)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s\n{tails}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


@dataclass
class Peer:
    """One Rust dfdaemon (a seed peer when ``seed``): its address, proxy port and logs."""

    name: str
    ip: str
    proxy_port: int
    log_dir: Path
    storage_dir: Path
    seed: bool = False

    @property
    def proxy(self) -> str:
        return f"http://{self.ip}:{self.proxy_port}"

    @property
    def host_id(self) -> str:
        """The Rust client's host id (ip-hostname, "-seed" for a seed peer): two peers with
        the same id are one host to the scheduler, never each other's parents."""
        return f"{self.ip}-{self.name}" + ("-seed" if self.seed else "")

    def log_text(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.rglob("*")) if p.is_file()
        )


@dataclass
class Dragonfly:
    """``control`` runs MariaDB, Redis, manager and scheduler, ``seed_site`` the seed peer,
    ``peer_sites`` one dfdaemon each (name, site); the dfdaemons mirror ``registry_url``."""

    bin_dir: Path
    workdir: Path
    registry_url: str  # the registry dfdaemons mirror (registryMirror.addr)
    control: Site
    seed_site: Site
    peer_sites: list[tuple[str, Site]]
    scheduler_log_level: str = "info"
    # How often the scheduler looks for a parent (every ~0.5 s) before it sends a peer back to
    # the registry; v2.5.0's default is 4.  A busy seed peer starts a blob later than that.
    retry_back_to_source_limit: int = 4
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    processes: list[Process] = field(default_factory=list)
    peers: list[Peer] = field(default_factory=list)
    manager_port: int = 0
    manager_grpc: int = 0
    started: float = 0.0  # when the scheduler came up (time.monotonic)

    @property
    def manager_url(self) -> str:
        return f"http://{self.control.ip}:{self.manager_port}"

    def _spawn(
        self, site: Site, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> Process:
        log = self.workdir / f"{name}.out"
        with log.open("ab") as handle:
            popen = site.popen(
                argv, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def _wait_port(self, site: Site, port: int, process: Process, timeout: float = 120.0) -> None:
        wait_until(lambda: site.port_open(port), process.name, timeout, logs=(process.log,))

    # -- the stores -------------------------------------------------------------

    def _mariadb(self) -> int:
        site = self.control
        data = self.workdir / "mariadb"
        sock = self.workdir / "mariadb.sock"
        port = site.free_port()
        # A tmpdir of its own: two installs at once sharing /tmp collide on their temporary
        # tables ("Unknown table 'mysql.tmp_user_sys'"), which failed a CI run.
        tmp = self.workdir / "mariadb-tmp"
        tmp.mkdir(exist_ok=True)
        installed = subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={data}", f"--tmpdir={tmp}",
             "--user=root", "--skip-test-db", "--auth-root-authentication-method=normal"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if installed.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {installed.stdout}{installed.stderr}")
        mariadb = self._spawn(
            site, "mariadb",
            ["mariadbd", "--no-defaults", f"--datadir={data}", f"--tmpdir={tmp}", f"--socket={sock}",
             f"--port={port}", f"--bind-address={site.ip}", "--user=root",
             "--skip-name-resolve", "--innodb-buffer-pool-size=64M"],
        )  # fmt: skip
        self._wait_port(site, port, mariadb)
        sql = (
            "CREATE DATABASE manager CHARACTER SET utf8mb4;"
            f"CREATE USER 'dragonfly'@'{site.ip}' IDENTIFIED BY 'dragonfly';"
            f"GRANT ALL ON manager.* TO 'dragonfly'@'{site.ip}';"
        )
        # The unix socket is a file: reachable from any network namespace.
        subprocess.run(
            ["mariadb", "--no-defaults", f"--socket={sock}", "-uroot", "-e", sql],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return port

    def _redis(self) -> int:
        site = self.control
        port = site.free_port()
        redis = self._spawn(
            site, "redis",
            ["redis-server", "--port", str(port), "--bind", site.ip, "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir),
             # Clients from other addresses (namespaces) than loopback, without a password.
             "--protected-mode", "no"],
        )  # fmt: skip
        self._wait_port(site, port, redis)
        return port

    # -- the Go servers ---------------------------------------------------------

    def _manager(self, mysql_port: int, redis_port: int) -> None:
        site, ip = self.control, self.control.ip
        self.manager_port = site.free_port()
        self.manager_grpc = site.free_port()
        config = self.workdir / "manager.yaml"
        config.write_text(f"""\
server:
  grpc:
    advertiseIP: {ip}
    listenIP: {ip}
    port: {{start: {self.manager_grpc}, end: {self.manager_grpc}}}
  rest:
    addr: {ip}:{self.manager_port}
  logDir: {self.workdir}/manager-log
  cacheDir: {self.workdir}/manager-cache
  pluginDir: {self.workdir}/manager-plugins
auth:
  jwt: {{realm: Dragonfly, key: {secrets.token_hex(16)}, timeout: 48h, maxRefresh: 48h}}
database:
  type: mysql
  mysql: {{user: dragonfly, password: dragonfly, host: {ip}, port: {mysql_port},
          dbname: manager, migrate: true}}
  redis:
    addrs: ["{ip}:{redis_port}"]
    db: 0
    brokerDB: 1
    backendDB: 2
cache:
  redis: {{ttl: 1s}}
  local: {{size: 1000, ttl: 1s}}
job:
  preheat:
    registryTimeout: 1m
metrics:
  enable: false
console: true
pprofPort: -1
""")
        manager = self._spawn(
            site, "manager",
            [str(self.bin_dir / "df-manager"), "--config", str(config), "--console"],
            env={"DRAGONFLY_PAT": self.token},
        )  # fmt: skip
        self._wait_port(site, self.manager_port, manager, timeout=180)
        self._wait_port(site, self.manager_grpc, manager, timeout=180)

    def _scheduler(self, redis_port: int) -> None:
        site, ip = self.control, self.control.ip
        port = site.free_port()
        config = self.workdir / "scheduler.yaml"
        config.write_text(f"""\
server:
  advertiseIP: {ip}
  listenIP: {ip}
  advertisePort: {port}
  port: {port}
  host: df-scheduler
  logLevel: {self.scheduler_log_level}
  logDir: {self.workdir}/scheduler-log
  cacheDir: {self.workdir}/scheduler-cache
  pluginDir: {self.workdir}/scheduler-plugins
  dataDir: {self.workdir}/scheduler-data
database:
  redis:
    addrs: ["{ip}:{redis_port}"]
    brokerDB: 1
    backendDB: 2
dynConfig:
  refreshInterval: 2s
manager:
  addr: {ip}:{self.manager_grpc}
  schedulerClusterID: 1
  keepAlive: {{interval: 2s}}
scheduler:
  retryBackToSourceLimit: {self.retry_back_to_source_limit}
  retryLimit: {self.retry_back_to_source_limit + 5}
  retryInterval: 500ms
job:
  enable: true
metrics:
  enable: false
console: true
pprofPort: -1
""")
        scheduler = self._spawn(
            site, "scheduler",
            [str(self.bin_dir / "df-scheduler"), "--config", str(config), "--console"],
        )  # fmt: skip
        self._wait_port(site, port, scheduler)
        # A dfdaemon that finds no active scheduler at the manager exits: wait for it.
        self._wait_keepalive("SCHEDULER_SOURCE", scheduler)

    def _wait_announced(self, peer: Peer, process: Process) -> None:
        """Until the scheduler knows ``peer`` (seed peers too: v2.5's manager keeps no list of
        Rust seed peers, the scheduler learns them from this announcement)."""
        scheduler_log = self.workdir / "scheduler.out"
        wanted = f'"hostID": "{peer.host_id}"'

        def announced() -> bool:
            return any(
                "announce new host" in line and wanted in line
                for line in scheduler_log.read_text(errors="replace").splitlines()
            )

        wait_until(announced, f"{peer.name} known to the scheduler", logs=(process.log,))

    def _wait_keepalive(self, source: str, process: Process) -> None:
        """Until the manager has marked a ``source`` (scheduler, seed peer) active."""
        manager_log = self.workdir / "manager.out"

        def active() -> bool:
            return any(
                "keepalive for the first time" in line and source in line
                for line in manager_log.read_text(errors="replace").splitlines()
            )

        wait_until(active, f"{process.name} known to the manager", logs=(process.log, manager_log))

    # -- the Rust peers ---------------------------------------------------------

    def dfdaemon_config(self, name: str, site: Site, ports: dict[str, int], *, seed: bool) -> str:
        """One dfdaemon's YAML.  Host id = ip + hostname: every peer needs its own pair."""
        base = self.workdir / name
        ip = site.ip
        seed_block = "seedPeer:\n  enable: true\n  type: super\n  clusterID: 1\n" if seed else ""
        return f"""\
host:
  hostname: {name}
  ip: {ip}
server:
  pluginDir: {base}/plugins
  cacheDir: {base}/cache
download:
  server:
    socketPath: {base}/dfdaemon.sock
upload:
  server:
    ip: {ip}
    port: {ports["upload"]}
manager:
  addr: http://{self.control.ip}:{self.manager_grpc}
scheduler:
  announceInterval: 5s
  scheduleTimeout: 30s
{seed_block}dynconfig:
  refreshInterval: 2s
storage:
  server:
    ip: {ip}
    tcpPort: {ports["tcp"]}
    quicPort: {ports["quic"]}
  dir: {base}/storage
  keep: false
proxy:
  server:
    ip: {ip}
    port: {ports["proxy"]}
  rules:
    - regex: 'blobs/sha256.*'
      schedulingPolicy: always
  registryMirror:
    addr: {self.registry_url}
    enableTaskIDBasedBlobDigest: false
health:
  server:
    ip: {ip}
    port: {ports["health"]}
metrics:
  server:
    ip: {ip}
    port: {ports["metrics"]}
stats:
  server:
    ip: {ip}
    port: {ports["stats"]}
"""

    def _peer(self, name: str, site: Site, *, seed: bool) -> Peer:
        base = self.workdir / name
        base.mkdir(parents=True)
        config = base / "dfdaemon.yaml"
        log_dir = base / "log"
        for attempt in range(PORT_ATTEMPTS):
            ports = {k: site.free_port() for k in DFDAEMON_PORTS}
            config.write_text(self.dfdaemon_config(name, site, ports, seed=seed))
            process = self._spawn(
                site, name,
                [str(self.bin_dir / "dfdaemon"), "--config", str(config), "--log-dir", str(log_dir)],
            )  # fmt: skip
            up = (lambda p=process, port=ports["proxy"]:  # noqa: E731 - bound per attempt
                  p.popen.poll() is not None or site.port_open(port))  # fmt: skip
            wait_until(up, name, logs=(process.log,))
            if process.popen.poll() is None:
                break
            # Another server took one of its ports between free_port() and dfdaemon's bind
            # (tests run beside each other): new ports.  Anything else is a failure.
            self.processes.remove(process)
            if attempt + 1 == PORT_ATTEMPTS or "Address already in use" not in tail(process.log):
                raise RuntimeError(
                    f"{name} exited {process.popen.returncode}:\n{tail(process.log)}"
                )
        peer = Peer(name, site.ip, ports["proxy"], log_dir, base / "storage", seed)
        self._wait_announced(peer, process)
        return peer

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> Dragonfly:
        """Everything, in order; on any failure (or Ctrl-C) what started is stopped again."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            mysql_port = self._mariadb()
            redis_port = self._redis()
            self._manager(mysql_port, redis_port)
            self._scheduler(redis_port)
            self.started = time.monotonic()
            self.peers.append(self._peer("df-seed", self.seed_site, seed=True))
            for name, site in self.peer_sites:
                self.peers.append(self._peer(name, site, seed=False))
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for_seed_peer(self) -> float:
        """Until the scheduler's first seed-peer refresh after it started (preheat needs a seed
        peer in its ring, and so does triggering one for a node's task); the seconds waited."""
        remaining = self.started + SEED_PEER_REFRESH - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        return max(remaining, 0.0)

    @property
    def seed(self) -> Peer:
        return next(p for p in self.peers if p.seed)

    @property
    def nodes(self) -> list[Peer]:
        return [p for p in self.peers if not p.seed]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}:\n{tail(p.log, 30)}" for p in self.processes)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


# -- what a registry's access log says dfdaemons fetched -------------------------------------

# One request in distribution's access log: method, path, status, bytes written, user agent.
ACCESS = re.compile(r'"(GET|HEAD) (/v2/\S+) HTTP/[\d.]+" (\d{3}) (\d+) "[^"]*" "([^"]*)"')


def blob_gets(log: str, repository: str) -> list[tuple[str, int]]:
    """(digest, bytes sent) of each blob GET of ``repository`` in a distribution access log,
    in order.  dfdaemon first probes a blob with ``Range: bytes=0-0`` (1 byte)."""
    prefix = f"/v2/{repository}/blobs/"
    return [
        (path[len(prefix) :], int(written))
        for method, path, _status, written, _agent in ACCESS.findall(log)
        if method == "GET" and path.startswith(prefix)
    ]


def bytes_sent(requests: list[tuple[str, int]]) -> Counter:
    """digest -> bytes of it the registry sent, the 1-byte probes left out."""
    sent: Counter = Counter()
    for digest, written in requests:
        if written > 1:
            sent[digest] += written
    return sent


def probes(requests: list[tuple[str, int]]) -> int:
    """How many of ``requests`` were dfdaemon's one-byte probes."""
    return sum(1 for _digest, written in requests if written == 1)
