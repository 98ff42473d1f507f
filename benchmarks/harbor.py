"""Harbor as a registry target of `make bench`: one Harbor for the run (modelpack.testing.harbor,
built by scripts/peers/build-harbor.sh), a fresh project per push, and one docker config that
every tool reads its credentials from, as `docker login` writes it.

Harbor's core answers ``/v2/`` itself (token auth, its database) and proxies every request to
its distribution; the rows it adds are the same pushes and pulls as against a plain
distribution, so the difference is what that hop costs.
"""

from __future__ import annotations

import base64
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.runner import tree_cpu
from modelpack.testing.harbor import ADMIN, HarborServer, harbor_dir

# What Harbor runs as, by what the report says of its CPU: core (the API, token service and
# the /v2/ proxy), its distribution, and the rest (PostgreSQL, Redis, jobservice, registryctl).
GROUPS = {"core": "core", "registry": "registry"}


@dataclass
class HarborTarget:
    server: HarborServer
    home: Path  # HOME of the Python peers: .docker/config.json holds the credentials
    projects: dict[str, Path] = field(default_factory=dict)  # name: the HOME of its robot

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def version(self) -> str:
        return self.server.version

    @property
    def docker_config(self) -> Path:
        return self.home / ".docker" / "config.json"

    def groups(self) -> dict[str, list[int]]:
        """The pids whose CPU (with their children's) the report gives for each part."""
        out: dict[str, list[int]] = {"core": [], "registry": [], "other": []}
        for name, process in self.server._processes:
            out[GROUPS.get(name, "other")].append(process.pid)
        return out

    def project(self, name: str) -> str:
        """A private project ``name``, made on first use: a fresh project per push, so no
        blob is already there to skip (Harbor answers a blob HEAD from its database, per
        project). Its pushes use a robot account of that project only (pull and push, as
        a CI robot has it): with the admin, skopeo mounted the blobs from an earlier
        round's project, known from its blob-info cache (/var/lib/containers/cache for
        root), instead of uploading them."""
        if name not in self.projects:
            self.server.create_project(name)
            robot, secret = self.server.create_robot(name, "bench", ("pull", "push"))
            home = self.home.parent / f"robot-{name}"
            home.joinpath(".docker").mkdir(parents=True)
            config = home / ".docker" / "config.json"
            config.write_text(json.dumps(docker_config(self.host, robot, secret)))
            config.chmod(0o600)
            self.projects[name] = home
        return name

    def _home(self, project: str | None) -> Path:
        """The HOME whose docker config a push to ``project`` uses (the admin's without)."""
        return self.projects[project] if project else self.home

    def modelpack_env(self, project: str | None = None) -> dict[str, str]:
        return {"DOCKER_CONFIG": str(self._home(project) / ".docker")}

    def peer_env(self, project: str | None = None) -> dict[str, str]:
        return {"HOME": str(self._home(project))}

    def skopeo_args(self, project: str | None = None) -> list[str]:
        return ["--authfile", str(self._home(project) / ".docker" / "config.json")]

    def idle_cpu(self, seconds: float = 10.0) -> float:
        """Share of one core Harbor's processes use while nobody talks to it."""
        pids = [pid for group in self.groups().values() for pid in group]
        before = tree_cpu(pids)
        time.sleep(seconds)
        return (tree_cpu(pids) - before) / seconds


def docker_config(host: str, username: str, password: str) -> dict:
    """A docker config with one ``auths`` entry, as `docker login HOST` writes it."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"auths": {host: {"auth": token}}}


def built(version: str) -> bool:
    return (harbor_dir(version) / "bin" / "harbor_core").exists()


@contextmanager
def running(work: Path, version: str) -> Iterator[HarborTarget]:
    """A Harbor ``version`` on 127.0.0.1 with the admin's credentials in a docker config, for
    as long as the block runs."""
    server = HarborServer(
        version=version, workdir=Path(tempfile.mkdtemp(prefix="harbor-", dir=work))
    )
    started = time.monotonic()
    server.start()
    try:
        print(f"  Harbor {version} on {server.host} in {time.monotonic() - started:.0f} s")
        home = server.root / "client-home"
        home.joinpath(".docker").mkdir(parents=True)
        target = HarborTarget(server, home)
        target.docker_config.write_text(
            json.dumps(docker_config(server.host, ADMIN, server.admin_password))
        )
        target.docker_config.chmod(0o600)
        yield target
    finally:
        server.cleanup()
