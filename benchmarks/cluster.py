"""A test cluster on one machine: N hosts as network namespaces on one bridge, shaped links.

    python -m benchmarks.cluster up [--nodes 8] [--detach]   # until Ctrl-C (or left up)
    python -m benchmarks.cluster run [--nodes 8] -- CMD...    # CMD in every node at once
    python -m benchmarks.cluster down [--prefix mpk-123-] [--stale]

Why namespaces: the benchmarks of many nodes need separate network stacks (one link per host
with its own bandwidth and delay, byte counters per link) without machines or containers.
Everything lives inside namespaces named ``mpk-<pid>-*``: the bridge sits in a namespace of its
own (``...-sw``), each host's veth end is ``eth0`` in the host's namespace, addresses come from
10.213.0.0/24 and exist only there. Nothing is added to the machine's own interfaces, routes or
sysctls. Deleting the namespaces (after killing the processes in them) removes everything,
which is why ``down`` can clean a run that was killed with SIGKILL: the names carry the pid.
Needs root (iproute2, tc).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from modelpack.testing.registry import RegistryServer, registry_binary

ROOT_PREFIX = "mpk-"
SUBNET = "10.213.0"  # /24, only inside the namespaces
REGISTRY_PORT = 5000
NOT_ROOT = "benchmarks.cluster: needs root (network namespaces, veth, tc); run it as root"


class ClusterError(RuntimeError):
    """A step of making or using the cluster failed (with the command's own message)."""


class NotRoot(ClusterError):
    """The caller is not root: nothing was created."""


def require_root() -> None:
    if os.geteuid() != 0:
        raise NotRoot(NOT_ROOT)


def sh(*argv: str, check: bool = True) -> str:
    """Run one iproute2/tc command; a failure is a ClusterError with its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise ClusterError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


@dataclass(frozen=True)
class Link:
    """One host's link to the bridge: ``rate`` (tc units, e.g. 1gbit) each way, and the round
    trip time it adds (half of it as netem delay on each direction)."""

    rate: str = "10gbit"
    rtt_ms: float = 1.0


@dataclass
class Host:
    role: str  # "registry", "n0", ...
    ns: str
    ip: str
    link: Link

    @property
    def bridge_port(self) -> str:
        return f"v-{self.role}"[:15]


def namespaces(prefix: str = ROOT_PREFIX) -> list[str]:
    """The network namespaces whose names start with ``prefix``."""
    out = sh("ip", "netns", "list", check=False)
    return sorted(n for line in out.splitlines() if (n := line.split()[0]).startswith(prefix))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_prefixes() -> list[str]:
    """Prefixes of runs whose making process is gone (killed, crashed)."""
    found = set()
    for name in namespaces():
        if (m := re.match(rf"{ROOT_PREFIX}(\d+)-", name)) and not _alive(int(m.group(1))):
            found.add(m.group(0))
    return sorted(found)


def workdir_for(prefix: str) -> Path:
    return Path(tempfile.gettempdir()) / f"{prefix}work"


def _new_prefix() -> str:
    """``mpk-<pid>-<n>-``: the pid finds a killed run's leftovers, n keeps a process's runs apart."""
    return f"{ROOT_PREFIX}{os.getpid()}-{next(_runs)}-"


_runs = itertools.count()


def cleanup(prefix: str) -> list[str]:
    """Kill every process in the namespaces of ``prefix``, delete them (their veths and the
    bridge go with them) and the run's work directory. Returns the namespaces removed."""
    if not prefix.startswith(ROOT_PREFIX) or prefix == ROOT_PREFIX:
        raise ClusterError(f"refusing to clean {prefix!r}: not one run's prefix")
    removed = namespaces(prefix)
    for _ in range(50):
        pids = [
            int(p) for ns in removed for p in sh("ip", "netns", "pids", ns, check=False).split()
        ]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for ns in removed:
        sh("ip", "netns", "delete", ns, check=False)
    for work in Path(tempfile.gettempdir()).glob(f"{prefix}*work"):
        shutil.rmtree(work, ignore_errors=True)
    return removed


@dataclass
class NsRegistry:
    """Debian's docker-registry (CNCF distribution) serving inside a host's namespace."""

    host: Host
    server: RegistryServer  # only its config and log: the process is ours
    process: subprocess.Popen

    @property
    def address(self) -> str:
        return f"{self.host.ip}:{REGISTRY_PORT}"

    def access_log(self) -> str:
        return self.server.access_log()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Cluster:
    """``nodes`` node hosts (n0..), a ``registry`` host and ``extra`` hosts (e.g. a mirror),
    one bridge; ``up()`` makes them, ``down()`` (also at exit and on SIGTERM/SIGINT) removes them."""

    nodes: int = 8
    extra: tuple[str, ...] = ()
    registry_link: Link = field(default_factory=lambda: Link("1gbit", 20.0))
    node_link: Link = field(default_factory=Link)
    extra_link: Link = field(default_factory=Link)
    # Links of particular extra hosts (e.g. an origin Harbor shaped like the registry's uplink)
    role_links: dict[str, Link] = field(default_factory=dict)
    prefix: str = field(default_factory=_new_prefix)
    hosts: dict[str, Host] = field(default_factory=dict)
    delay: bool | None = None  # the links' round trip applied (netem); None: found out at up()
    _up: bool = False
    _handlers: dict[int, object] = field(default_factory=dict)

    @property
    def workdir(self) -> Path:
        return workdir_for(self.prefix)

    @property
    def switch(self) -> str:
        return f"{self.prefix}sw"

    @property
    def node_hosts(self) -> list[Host]:
        return [self.hosts[f"n{i}"] for i in range(self.nodes)]

    def home(self, host: Host) -> Path:
        """The host's own MODELPACK_HOME (and HF cache beside it)."""
        return self.workdir / host.role / "home"

    def up(self) -> Cluster:
        require_root()
        if self.nodes + len(self.extra) > 200:
            raise ClusterError("at most 200 hosts fit in 10.213.0.0/24 here")
        atexit.register(self.down)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                self._handlers[sig] = signal.signal(sig, self._on_signal)
        self._up = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        sh("ip", "netns", "add", self.switch)
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        plan = [("registry", self.registry_link)]
        plan += [(role, self.role_links.get(role, self.extra_link)) for role in self.extra]
        plan += [(f"n{i}", self.node_link) for i in range(self.nodes)]
        for index, (role, link) in enumerate(plan):
            self._add_host(Host(role, f"{self.prefix}{role}", f"{SUBNET}.{index + 2}", link))
        return self

    def _add_host(self, host: Host) -> None:
        sh("ip", "netns", "add", host.ns)
        sh("ip", "link", "add", "eth0", "netns", host.ns, "type", "veth",
           "peer", "name", host.bridge_port, "netns", self.switch)  # fmt: skip
        sh("ip", "-n", self.switch, "link", "set", host.bridge_port, "master", "br0", "up")
        sh("ip", "-n", host.ns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        sh("ip", "-n", host.ns, "link", "set", "lo", "up")
        sh("ip", "-n", host.ns, "link", "set", "eth0", "up")
        # Both directions: the host's egress (eth0) and its ingress (the bridge port's egress).
        if self.delay is None:
            self.delay = netem_available(host.ns, "eth0")
        shape(host.ns, "eth0", host.link, self.delay)
        shape(self.switch, host.bridge_port, host.link, self.delay)
        self.hosts[host.role] = host
        self.home(host).mkdir(parents=True, exist_ok=True)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.down()
        raise SystemExit(128 + signum)

    def down(self) -> None:
        if self._up:
            self._up = False
            cleanup(self.prefix)
        while self._handlers:
            sig, handler = self._handlers.popitem()
            signal.signal(sig, handler)  # type: ignore[arg-type]

    # -- using it --------------------------------------------------------------------------

    def env(self, host: Host, **extra: str) -> dict[str, str]:
        """A node's environment: its own MODELPACK_HOME and HF cache, no proxies, no user config."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MODELPACK_", "HF_", "HUGGING"))
            and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
        }
        home = self.home(host)
        env.update(
            MODELPACK_HOME=str(home),
            MODELPACK_CONFIG=str(home.parent / "no-config.toml"),
            DOCKER_CONFIG=str(home.parent / "no-docker-config"),
            MODELPACK_PLAIN_HTTP="1",
            HF_HOME=str(home.parent / "hf"),
            PYTHONPATH=str(Path(__file__).resolve().parent.parent),
        )
        env.update(extra)
        return env

    def spawn(self, host: Host, argv: list[str], **kwargs: object) -> subprocess.Popen:
        """A process in ``host``'s namespace (``ip netns exec`` execs it: the pid is its own)."""
        kwargs.setdefault("env", self.env(host))
        return subprocess.Popen(["ip", "netns", "exec", host.ns, *argv], **kwargs)  # type: ignore[call-overload]

    def run(self, host: Host, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        kwargs.setdefault("env", self.env(host))
        return subprocess.run(["ip", "netns", "exec", host.ns, *argv], **kwargs)  # type: ignore[call-overload]

    def wait_http(self, host: Host, url: str, timeout: float = 30.0) -> None:
        """Until ``url`` answers (any status) as seen from ``host``."""
        probe = (
            "import sys,time,urllib.request,urllib.error\n"
            f"end=time.monotonic()+{timeout}\n"
            "while time.monotonic()<end:\n"
            "    try: urllib.request.urlopen(sys.argv[1], timeout=1); sys.exit(0)\n"
            "    except urllib.error.HTTPError: sys.exit(0)\n"
            "    except Exception: time.sleep(0.05)\n"
            "sys.exit(1)\n"
        )
        done = self.run(host, [sys.executable, "-c", probe, url])
        if done.returncode != 0:
            raise ClusterError(f"{url} did not answer from {host.role} within {timeout}s")

    def start_registry(self, role: str = "registry", proxy_of: str | None = None) -> NsRegistry:
        """A fresh registry on ``role``'s address, port 5000, with its access log; with
        ``proxy_of`` (HOST:PORT) a pull-through cache of that registry (``proxy: remoteurl``)."""
        host = self.hosts[role]
        binary = registry_binary()
        if binary is None:
            raise ClusterError("no docker-registry binary: apt-get install docker-registry")
        workdir = self.workdir / role / "registry"
        workdir.mkdir(parents=True, exist_ok=True)
        extra = f"proxy:\n  remoteurl: http://{proxy_of}\n" if proxy_of else ""
        server = RegistryServer(workdir=workdir, port=REGISTRY_PORT, extra_config=extra)
        config = workdir / "config.yml"
        config.write_text(server.config_yaml(addr=f"{host.ip}:{REGISTRY_PORT}"), encoding="utf-8")
        log = open(server.log_path, "ab")  # noqa: SIM115 - owned by the process
        process = self.spawn(host, [binary, "serve", str(config)], stdout=log, stderr=log)
        log.close()
        registry = NsRegistry(host, server, process)
        try:
            self.wait_http(host, f"http://{registry.address}/v2/")
        except ClusterError:
            registry.stop()
            raise ClusterError(
                f"registry on {role} did not start: {registry.access_log()[-500:]}"
            ) from None
        return registry

    def tx_bytes(self, role: str) -> int:
        """Bytes ``role`` has sent on its link (its eth0's counter, headers included)."""
        out = sh("ip", "-n", self.hosts[role].ns, "-s", "-j", "link", "show", "dev", "eth0")
        return int(json.loads(out)[0]["stats64"]["tx"]["bytes"])

    def describe(self) -> dict[str, object]:
        return {
            "prefix": self.prefix,
            "rtt_emulated": bool(self.delay),
            "workdir": str(self.workdir),
            "hosts": {
                h.role: {
                    "namespace": h.ns,
                    "ip": h.ip,
                    "rate": h.link.rate,
                    "rtt_ms": h.link.rtt_ms,
                }
                for h in self.hosts.values()
            },
        }


def shape(ns: str, dev: str, link: Link, delay: bool) -> None:
    """htb for the rate; with ``delay``, netem under it for half the round trip (this
    direction's share), else a plain FIFO (kernels built without sch_netem)."""
    sh("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "10")
    sh("tc", "-n", ns, "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb",
       "rate", link.rate, "ceil", link.rate, "quantum", "60000")  # fmt: skip
    leaf = ["netem", "delay", f"{link.rtt_ms / 2:g}ms"] if delay and link.rtt_ms else ["pfifo"]
    sh("tc", "-n", ns, "qdisc", "add", "dev", dev, "parent", "1:10", "handle", "10:", *leaf,
       "limit", "100000")  # fmt: skip


def netem_available(ns: str, dev: str) -> bool:
    """Whether this kernel has sch_netem (a delay); some VM kernels ship without it."""
    ok = subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "netem", "delay", "1ms"],
                        capture_output=True).returncode == 0  # fmt: skip
    if ok:
        sh("tc", "-n", ns, "qdisc", "del", "dev", dev, "root")
    return ok


def access_log_bytes(log: str, since: int = 0) -> int:
    """Bytes a distribution registry wrote in responses, from its access log (combined format:
    ``"GET /v2/... HTTP/1.1" 200 SIZE``) after character ``since``."""
    return sum(int(m.group(1)) for m in re.finditer(r'HTTP/1\.[01]" \d{3} (\d+) ', log[since:]))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "run"):
        p = sub.add_parser(name)
        p.add_argument("--nodes", type=int, default=8)
        p.add_argument("--registry-rate", default="1gbit")
        p.add_argument("--registry-rtt-ms", type=float, default=20.0)
        p.add_argument("--node-rate", default="10gbit")
        p.add_argument("--node-rtt-ms", type=float, default=1.0)
    sub.choices["up"].add_argument("--detach", action="store_true", help="leave it up and exit")
    sub.choices["run"].add_argument("cmd", nargs=argparse.REMAINDER,
                                    help="run in every node; {registry} is the registry's HOST:PORT")  # fmt: skip
    down = sub.add_parser("down")
    down.add_argument("--prefix", help="one run's prefix (mpk-PID-); default: every stale run")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        require_root()
        if args.command == "down":
            prefixes = [args.prefix] if args.prefix else stale_prefixes()
            for prefix in prefixes:
                print(f"{prefix}: removed {len(cleanup(prefix))} namespaces")
            return 0
        cluster = Cluster(nodes=args.nodes, registry_link=Link(args.registry_rate, args.registry_rtt_ms),
                          node_link=Link(args.node_rate, args.node_rtt_ms))  # fmt: skip
        cluster.up()
        registry = cluster.start_registry()
        info = {**cluster.describe(), "registry": registry.address}
        if args.command == "up":
            print(json.dumps(info), flush=True)
            if args.detach:
                cluster._up = False  # leave everything: `down --prefix` removes it
                return 0
            signal.pause()
            return 0
        cmd = [part.replace("{registry}", registry.address) for part in args.cmd if part != "--"]
        procs = [cluster.spawn(h, cmd) for h in cluster.node_hosts]
        return max(p.wait() for p in procs)
    except NotRoot as exc:
        print(exc, file=sys.stderr)
        return 2
    except ClusterError as exc:
        print(f"benchmarks.cluster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
