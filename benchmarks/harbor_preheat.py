"""Harbor's P2P preheat pointed at a real Dragonfly, every part on a host of its own.

Used by tests/integration/test_harbor_preheat.py and by case (h) of
benchmarks/cluster_bench.py.  The parts: a Harbor (``modelpack.testing.harbor``: core,
jobservice, registryctl, PostgreSQL, Redis, distribution) in the ``harbor`` host's network
namespace; Dragonfly (benchmarks/dragonfly.py) with its control plane on ``dragonfly``, its
seed peer on ``seed`` and a dfdaemon on every node; the nodes pull through their own dfdaemon.

Why namespaces and not 127.0.0.1: Harbor's Dragonfly driver asks the manager for a preheat
of type ``image`` with the manifest's URL on Harbor's external endpoint
(``src/pkg/p2p/preheat/provider/dragonfly.go``, ``src/controller/p2p/preheat/enforcer.go``),
and the v2.5.0 manager fetches that manifest through a dialer that refuses every address
that is not global unicast (``pkg/net/http/http.go``: ``ip 127.0.0.1 is invalid``).  So
Harbor's URL must be an address like 10.213.0.x: the namespace's own.

The calls this process makes to Harbor (its API, its start and stop) run in a thread that
has joined the harbor host's namespace (``Netns``); Harbor's processes are forked from that
thread, so they live in the namespace too (and, as ``PR_SET_PDEATHSIG`` follows the thread
that forked them, the thread stays until Harbor is stopped).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from modelpack.testing.harbor import ADMIN, HarborServer, created_id, wait_until_ended

T = TypeVar("T")
BUILD_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "peers" / "build-harbor.sh"
CLONE_NEWNET = 0x40000000
HARBOR_PORT = 8080
# The ModelPack names each Harbor version shows as a model (tests/support/harbor.py).
RENDERS = {"v2.15.2": "cnai", "main": "cncf"}
PIECE = 4 << 20  # dfdaemon 1.5's smallest piece: a blob up to this size is one piece
DONE = ("Success", "Error", "Stopped")


def build_harbor(version: str) -> None:
    """Build ``version`` with scripts/peers/build-harbor.sh if the peers cache lacks it (warm,
    the script only checks); RuntimeError with its output."""
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        env={**os.environ, "MODELPACK_HARBOR_VERSIONS": version},
        capture_output=True,
        text=True,
        timeout=3 * 3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"build-harbor.sh {version} failed:\n{done.stdout}\n{done.stderr}")


def _join_netns(ns: str) -> None:
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({ns}): {os.strerror(errno)}")
    finally:
        os.close(fd)


class Netns:
    """One thread in network namespace ``ns``: ``call(fn, ...)`` runs ``fn`` there (its
    sockets, and the processes it forks, belong to the namespace)."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self._pool = ThreadPoolExecutor(
            max_workers=1, initializer=_join_netns, initargs=(ns,), thread_name_prefix="netns"
        )

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@dataclass
class NsHarbor:
    """A Harbor running in a namespace, at ``http://IP:8080``, driven from this process; or,
    with ``netns`` None (``running``), a Harbor already running on this machine's network."""

    version: str
    ip: str
    netns: Netns | None = None
    server: HarborServer = field(init=False)

    @classmethod
    def running(cls, server: HarborServer) -> NsHarbor:
        """The preheat helpers for a Harbor started elsewhere (e.g. on 127.0.0.1)."""
        made = cls(server.version, server.ip)
        made.server = server
        return made

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.netns is None:
            return fn(*args, **kwargs)
        return self.netns.call(fn, *args, **kwargs)

    def start(self) -> NsHarbor:
        self.server = HarborServer(version=self.version, port=HARBOR_PORT, ip=self.ip)
        self._call(self.server.start)
        return self

    def stop(self) -> None:
        """Stop every part from the thread that started them, then let the thread go."""
        try:
            self._call(self.server.cleanup)
        finally:
            if self.netns is not None:
                self.netns.close()

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def admin(self) -> tuple[str, str]:
        return (ADMIN, self.server.admin_password)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """``HarborServer.api`` from inside the namespace; the response."""
        return self._call(self.server.api, method, path, **kwargs)

    def create_project(self, name: str, *, public: bool = False) -> None:
        self._call(self.server.create_project, name, public=public)

    def create_robot(self, project: str, name: str, actions: tuple[str, ...]) -> tuple[str, str]:
        return self._call(self.server.create_robot, project, name, actions)

    def registry_log(self) -> str:
        """Harbor's distribution's log: its access lines (core is its only client)."""
        path = self.server.logs / "registry.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self, name: str) -> str:
        path = self.server.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- P2P preheat, as an administrator sets it up (Administration > Distributions,
    #    then the project's P2P Preheat tab) -----------------------------------------------

    def create_dragonfly_instance(self, name: str, manager_url: str, token: str) -> int:
        """A provider instance of vendor ``dragonfly`` at the manager, authenticated with a
        manager personal access token (auth mode OAUTH: ``Authorization: Bearer TOKEN``)."""
        self.api(
            "POST",
            "/p2p/preheat/instances",
            json={
                "name": name,
                "endpoint": manager_url,
                "vendor": "dragonfly",
                "auth_mode": "OAUTH",
                "auth_info": {"token": token},
                "enabled": True,
                "insecure": True,
            },
        )
        return int(self.api("GET", f"/p2p/preheat/instances/{name}").json()["id"])

    def create_policy(
        self,
        project: str,
        name: str,
        provider_id: int,
        trigger: str = "manual",
        repository: str = "**",
        tag: str = "**",
        scope: str = "single_seed_peer",
    ) -> None:
        """A preheat policy on ``project``: every artifact whose repository and tag match,
        to the provider; ``trigger`` manual, scheduled (needs a cron) or event_based."""
        self.api(
            "POST",
            f"/projects/{project}/preheat/policies",
            json={
                "name": name,
                "provider_id": provider_id,
                "filters": json.dumps(
                    [{"type": "repository", "value": repository}, {"type": "tag", "value": tag}]
                ),
                "trigger": json.dumps({"type": trigger, "trigger_setting": {}}),
                "enabled": True,
                "extra_attrs": json.dumps({"scope": scope}),
            },
        )

    def executions(self, project: str, policy: str) -> list[dict]:
        return self.api("GET", f"/projects/{project}/preheat/policies/{policy}/executions").json()

    def execute(self, project: str, policy: str) -> int:
        """Run a policy now (the console's EXECUTE button); the execution id.  The API wants
        the policy in the body (and reads only the name in the path), as the console sends it."""
        path = f"/projects/{project}/preheat/policies/{policy}"
        started = self.api("POST", path, json=self.api("GET", path).json())
        return created_id(started)

    def wait_execution(
        self, project: str, policy: str, execution: int, timeout: float = 600
    ) -> dict:
        """Until the execution ends (``status`` Success, Error or Stopped); its document."""
        path = f"/projects/{project}/preheat/policies/{policy}/executions/{execution}"
        return wait_until_ended(lambda: self.api("GET", path).json(), "status", DONE,
                                f"preheat execution {execution}", timeout)  # fmt: skip

    def task_logs(self, project: str, policy: str, execution: int) -> str:
        """The tasks of an execution and what the jobs logged.  Our jobservice logs jobs to
        its standard output only (no file or database job logger), so Harbor's task log API
        answers 500 here: the job lines come from jobservice's log file."""
        path = f"/projects/{project}/preheat/policies/{policy}/executions/{execution}/tasks"
        tasks = self.api("GET", path).json()
        lines = [line for line in self.log("jobservice").splitlines() if "/p2p/preheat/" in line
                 or "|" in line]  # fmt: skip
        return json.dumps(tasks, indent=1) + "\n" + "\n".join(lines[-200:])
