"""Replicas of ``modelpack serve`` as an operator runs them, for our tests and benchmarks:
Debian's redis-server as the one shared service, and Debian's nginx as a plain round-robin
balancer whose configuration is the one docs/gateway.md ("Running several replicas") prints,
taken from the page verbatim with only the addresses put in."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .registry import free_port

DOCS = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"  # in a checkout


def _wait_port(port: int, process: subprocess.Popen, what: str, log: Path) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within 30 s")


@dataclass
class RedisServer:
    """Debian's redis-server on 127.0.0.1, a free port, a password (from a file, not argv)
    and nothing saved to disk."""

    workdir: Path
    password: str = "replica-s3cret"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: scripts/install-system-deps.sh installs it")
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "redis.conf"
        conf.write_text(
            f"bind 127.0.0.1\nport {self.port}\nrequirepass {self.password}\n"
            f'save ""\nappendonly no\ndir {self.workdir}\nprotected-mode yes\n',
            encoding="utf-8",
        )
        log = self.workdir / "redis.log"
        with open(log, "ab") as out:
            self.process = subprocess.Popen([binary, str(conf)], stdout=out, stderr=out)
        _wait_port(self.port, self.process, "redis-server", log)
        return self

    def client(self):  # noqa: ANN201 - redis.Redis
        import redis

        return redis.Redis.from_url(self.url)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


REPLICAS_SECTION = "## Running several replicas"
HANDOFF_SECTION = "### Downloads sent by nginx"


def docs_nginx_config(section: str = REPLICAS_SECTION, docs: Path = DOCS) -> str:
    """The one nginx block of docs/gateway.md's ``section`` (a heading line), as printed."""
    text = docs.read_text(encoding="utf-8")
    body = text.split(f"\n{section}\n", 1)[1]
    body = re.split(r"\n#{2,3} ", body, maxsplit=1)[0]
    blocks = re.findall(r"```nginx\n(.*?)```", body, re.S)
    if len(blocks) != 1:
        raise ValueError(f"{docs}: {section!r} must have one nginx block")
    return blocks[0]


@dataclass
class Balancer:
    """nginx in front of ``upstreams`` (host:port), configured by the docs' block of
    ``section``: the ``server`` lines of its first upstream become these addresses (those
    of ``modelpack_lane``, if it has one, ``lanes``, its backup the first of
    ``upstreams``), ``listen`` this port, the docs' home
    (``/var/lib/modelpack``) in an ``alias`` the gateway's ``home``."""

    workdir: Path
    upstreams: list[str]
    lanes: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    section: str = REPLICAS_SECTION
    home: Path | None = None
    worker_processes: int = 1
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        site = docs_nginx_config(self.section)
        lines, done, group = [], set(), None
        for line in site.splitlines():
            if named := re.match(r"^\s*upstream\s+(\S+)\s*\{", line):
                group = named.group(1)
            match = re.match(r"^(\s*)server\s+\S+:\d+(.*)$", line)
            if match and group == "modelpack_lane" and "backup" in match.group(2):
                lines.append(f"{match.group(1)}server {self.upstreams[0]}{match.group(2)}")
                continue  # the lane's backup: the gateway's threads
            if match:
                servers = self.lanes if group == "modelpack_lane" else self.upstreams
                if group not in done:
                    if not servers:
                        raise ValueError(f"the docs' upstream {group} needs addresses: lanes=")
                    indent, rest = match.groups()
                    lines += [f"{indent}server {u}{rest}" for u in servers]
                    done.add(group)
                continue
            line = re.sub(r"^(\s*)listen\s+\d+;", rf"\g<1>listen 127.0.0.1:{self.port};", line)
            if self.home is not None:  # the docs' home, /var/lib/modelpack, is this one
                line = re.sub(r"^(\s*alias\s+)/var/lib/modelpack/", rf"\g<1>{self.home.resolve()}/",
                              line)  # fmt: skip
            lines.append(line)
        if not done:
            raise ValueError("the docs' upstream block names no server")
        work = self.workdir
        return (
            f"daemon off;\nworker_processes {self.worker_processes};\npid {work}/nginx.pid;\n"
            f"error_log {work}/error.log warn;\nevents {{ worker_connections 512; }}\n"
            f"http {{\n  access_log {work}/access.log;\n"
            f"  client_body_temp_path {work}/body;\n  proxy_temp_path {work}/proxy;\n"
            f"  fastcgi_temp_path {work}/fastcgi;\n  uwsgi_temp_path {work}/uwsgi;\n"
            f"  scgi_temp_path {work}/scgi;\n" + "\n".join(lines) + "\n}\n"
        )

    def start(self) -> Balancer:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise RuntimeError("nginx not found: scripts/install-system-deps.sh installs it")
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "nginx.conf"
        conf.write_text(self.config(), encoding="utf-8")
        prefix = ["-g", "user root;"] if os.geteuid() == 0 else []
        log = self.workdir / "stderr.log"
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [binary, "-p", str(self.workdir), "-c", str(conf), *prefix],
                stdout=out, stderr=out,
            )  # fmt: skip
        _wait_port(self.port, self.process, "nginx", log)
        return self

    def access_log(self) -> str:
        path = self.workdir / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a gunicorn master's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def await_workers(pid: int, count: int, timeout: float = 30) -> list[int]:
    """The ``count`` workers of gunicorn master ``pid``, once all are forked: its health
    check answers as soon as the first worker does, before the others exist."""
    deadline = time.monotonic() + timeout
    while len(found := children(pid)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pid} has {len(found)} workers after {timeout} s, not {count}")
        time.sleep(0.05)
    return found


def kill_replica(process: subprocess.Popen) -> None:
    """SIGKILL a replica: its gunicorn master and workers at once, as a node that dies."""
    for pid in [*children(process.pid), process.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=20)
