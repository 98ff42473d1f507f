"""A real Dragonfly cluster on 127.0.0.1 for tests: MariaDB, Redis, manager, scheduler,
a seed peer and dfdaemons, each its own process with its own log.

The manager and scheduler are Go (d7y.io/dragonfly/v2, pinned in
scripts/peers/dragonfly-pins.txt); the seed peer and dfdaemons are the Rust client
(crate dragonfly-client, pinned in scripts/peers/build-dragonfly.sh), the only
peer the Go module proxy here lets us build (it refuses every v2.1.x, the last
release line with a Go dfdaemon).  Everything listens on 127.0.0.1, on ports
picked free at start.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "peers" / "build-dragonfly.sh"
PEERS_DIR = Path(os.environ.get("MODELPACK_PEERS_DIR", Path.home() / ".cache" / "modelpack-peers"))
BIN = PEERS_DIR / "bin"


def build_dragonfly() -> Path:
    """Build (or confirm the cache of) manager, scheduler and dfdaemon; their bin dir."""
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=7200)
    assert result.returncode == 0, f"build-dragonfly.sh failed:\n{result.stdout}\n{result.stderr}"
    return BIN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, what: str, timeout: float = 120.0, logs: tuple[Path, ...] = ()) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}:\n{tail(p)}" for p in logs)
    raise AssertionError(f"{what} not ready after {timeout:.0f} s\n{tails}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


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
    """One Rust dfdaemon (a seed peer when ``seed``): its proxy port and its logs."""

    name: str
    proxy_port: int
    log_dir: Path
    storage_dir: Path
    seed: bool = False

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def log_text(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.rglob("*")) if p.is_file()
        )


@dataclass
class DragonflyCluster:
    bin_dir: Path
    workdir: Path
    registry_url: str  # the registry dfdaemons mirror (registryMirror.addr)
    peer_count: int = 2
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    processes: list[Process] = field(default_factory=list)
    peers: list[Peer] = field(default_factory=list)
    manager_port: int = 0
    started: float = 0.0  # when the scheduler came up (time.monotonic)

    @property
    def manager_url(self) -> str:
        return f"http://127.0.0.1:{self.manager_port}"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        log = self.workdir / f"{name}.out"
        handle = log.open("ab")
        popen = subprocess.Popen(
            argv,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        handle.close()
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    # -- the stores -------------------------------------------------------------

    def _mariadb(self) -> int:
        data = self.workdir / "mariadb"
        sock = self.workdir / "mariadb.sock"
        port = free_port()
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
             "--skip-test-db", "--auth-root-authentication-method=normal"],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        mariadb = self._spawn(
            "mariadb",
            ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={sock}",
             f"--port={port}", "--bind-address=127.0.0.1", "--user=root",
             "--skip-name-resolve", "--innodb-buffer-pool-size=64M"],
        )  # fmt: skip
        wait_until(lambda: port_open(port), "MariaDB", logs=(mariadb.log,))
        sql = (
            "CREATE DATABASE manager CHARACTER SET utf8mb4;"
            "CREATE USER 'dragonfly'@'127.0.0.1' IDENTIFIED BY 'dragonfly';"
            "GRANT ALL ON manager.* TO 'dragonfly'@'127.0.0.1';"
        )
        subprocess.run(
            ["mariadb", "--no-defaults", f"--socket={sock}", "-uroot", "-e", sql],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return port

    def _redis(self) -> int:
        port = free_port()
        redis = self._spawn(
            "redis",
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
        )  # fmt: skip
        wait_until(lambda: port_open(port), "Redis", logs=(redis.log,))
        return port

    # -- the Go servers ---------------------------------------------------------

    def _manager(self, mysql_port: int, redis_port: int) -> int:
        self.manager_port = free_port()
        grpc_port = free_port()
        config = self.workdir / "manager.yaml"
        config.write_text(f"""\
server:
  grpc:
    advertiseIP: 127.0.0.1
    listenIP: 127.0.0.1
    port: {{start: {grpc_port}, end: {grpc_port}}}
  rest:
    addr: 127.0.0.1:{self.manager_port}
  logDir: {self.workdir}/manager-log
  cacheDir: {self.workdir}/manager-cache
  pluginDir: {self.workdir}/manager-plugins
auth:
  jwt: {{realm: Dragonfly, key: {secrets.token_hex(16)}, timeout: 48h, maxRefresh: 48h}}
database:
  type: mysql
  mysql: {{user: dragonfly, password: dragonfly, host: 127.0.0.1, port: {mysql_port},
          dbname: manager, migrate: true}}
  redis:
    addrs: ["127.0.0.1:{redis_port}"]
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
            "manager",
            [str(self.bin_dir / "df-manager"), "--config", str(config), "--console"],
            env={"DRAGONFLY_PAT": self.token},
        )
        wait_until(
            lambda: requests.get(f"{self.manager_url}/healthy", timeout=2).ok,
            "Dragonfly manager",
            timeout=180,
            logs=(manager.log,),
        )
        return grpc_port

    def _scheduler(self, manager_grpc: int, redis_port: int) -> int:
        port = free_port()
        config = self.workdir / "scheduler.yaml"
        config.write_text(f"""\
server:
  advertiseIP: 127.0.0.1
  listenIP: 127.0.0.1
  advertisePort: {port}
  port: {port}
  host: df-scheduler
  logDir: {self.workdir}/scheduler-log
  cacheDir: {self.workdir}/scheduler-cache
  pluginDir: {self.workdir}/scheduler-plugins
  dataDir: {self.workdir}/scheduler-data
database:
  redis:
    addrs: ["127.0.0.1:{redis_port}"]
    brokerDB: 1
    backendDB: 2
dynConfig:
  refreshInterval: 2s
manager:
  addr: 127.0.0.1:{manager_grpc}
  schedulerClusterID: 1
  keepAlive: {{interval: 2s}}
job:
  enable: true
metrics:
  enable: false
console: true
pprofPort: -1
""")
        scheduler = self._spawn(
            "scheduler", [str(self.bin_dir / "df-scheduler"), "--config", str(config), "--console"]
        )
        wait_until(lambda: port_open(port), "Dragonfly scheduler", logs=(scheduler.log,))
        # A dfdaemon that finds no active scheduler at the manager exits: wait for it.
        self._wait_keepalive("SCHEDULER_SOURCE", scheduler)
        return port

    def _wait_announced(self, hostname: str, process: Process) -> None:
        """Until the scheduler knows the peer ``hostname`` (seed peers too: v2.5's manager
        keeps no list of Rust seed peers, the scheduler learns them from this announcement)."""
        scheduler_log = self.workdir / "scheduler.out"

        def announced() -> bool:
            return any(
                "announce new host" in line and f'"hostID": "127.0.0.1-{hostname}' in line
                for line in scheduler_log.read_text(errors="replace").splitlines()
            )

        wait_until(announced, f"{hostname} known to the scheduler", logs=(process.log,))

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

    def _peer(self, name: str, manager_grpc: int, *, seed: bool) -> Peer:
        base = self.workdir / name
        ports = {
            k: free_port() for k in ("upload", "tcp", "quic", "proxy", "health", "metrics", "stats")
        }
        seed_block = "seedPeer:\n  enable: true\n  type: super\n  clusterID: 1\n" if seed else ""
        config = base / "dfdaemon.yaml"
        base.mkdir(parents=True)
        config.write_text(f"""\
host:
  hostname: {name}
  ip: 127.0.0.1
server:
  pluginDir: {base}/plugins
  cacheDir: {base}/cache
download:
  server:
    socketPath: {base}/dfdaemon.sock
upload:
  server:
    ip: 127.0.0.1
    port: {ports["upload"]}
manager:
  addr: http://127.0.0.1:{manager_grpc}
scheduler:
  announceInterval: 5s
  scheduleTimeout: 30s
{seed_block}dynconfig:
  refreshInterval: 2s
storage:
  server:
    ip: 127.0.0.1
    tcpPort: {ports["tcp"]}
    quicPort: {ports["quic"]}
  dir: {base}/storage
  keep: false
proxy:
  server:
    ip: 127.0.0.1
    port: {ports["proxy"]}
  rules:
    - regex: 'blobs/sha256.*'
      schedulingPolicy: always
  registryMirror:
    addr: {self.registry_url}
    enableTaskIDBasedBlobDigest: false
health:
  server:
    ip: 127.0.0.1
    port: {ports["health"]}
metrics:
  server:
    ip: 127.0.0.1
    port: {ports["metrics"]}
stats:
  server:
    ip: 127.0.0.1
    port: {ports["stats"]}
""")
        log_dir = base / "log"
        process = self._spawn(
            name,
            [str(self.bin_dir / "dfdaemon"), "--config", str(config), "--log-dir", str(log_dir)],
        )
        wait_until(lambda: port_open(ports["proxy"]), f"dfdaemon {name}", logs=(process.log,))
        self._wait_announced(name, process)
        return Peer(name, ports["proxy"], log_dir, base / "storage", seed)

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> DragonflyCluster:
        try:
            mysql_port = self._mariadb()
            redis_port = self._redis()
            manager_grpc = self._manager(mysql_port, redis_port)
            self._scheduler(manager_grpc, redis_port)
            self.started = time.monotonic()
            self.peers.append(self._peer("df-seed", manager_grpc, seed=True))
            for n in range(self.peer_count):
                self.peers.append(self._peer(f"df-peer-{n}", manager_grpc, seed=False))
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for_seed_peer(self) -> None:
        """The scheduler adds announced seed peers to its ring once a minute
        (SeedPeerRefreshInterval, not configurable in v2.5.0); preheat needs one there."""
        remaining = self.started + 62 - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)

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
