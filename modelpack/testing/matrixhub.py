"""Start a real MatrixHub on 127.0.0.1, to compare ``modelpack serve`` with it.

MatrixHub (matrixhub-ai/matrixhub) is a private Hugging Face hub that keeps models in git
repositories and LFS objects on disk, with MySQL beside them.  ``scripts/peers/build-matrixhub.sh``
builds it from the source snapshot in ``../shared/peer-src`` into the peers cache
(``MODELPACK_PEERS_DIR``, default ``~/.cache/modelpack-peers``); this starts it with Debian's
MariaDB (a private data directory, reached only through a unix socket in a private folder).

``python -m modelpack.testing.matrixhub [--port N]`` prints ``MATRIXHUB_URL=...``,
``MATRIXHUB_ADMIN_USER=admin`` and ``MATRIXHUB_ADMIN_PASSWORD=...`` once MatrixHub answers
(the password is a fresh one: the launcher changes the default ``changeme`` before it prints
anything) and stops everything it started on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import requests

from ._supervised import Supervised, peers_dir, run_until_signalled, tail, wait_port
from .registry import free_port

ADMIN = "admin"
DEFAULT_PASSWORD = "changeme"  # what MatrixHub's first migration gives its admin
API = "/api/v1alpha1"


def matrixhub_dir() -> Path:
    """Where build-matrixhub.sh put MatrixHub (a symlink to its current build)."""
    return peers_dir() / "matrixhub"


def mariadb_bin(name: str) -> str:
    """A MariaDB program: on PATH, else Debian's /usr/sbin or /usr/bin."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        f"MariaDB's {name} not found: install Debian's mariadb-server (scripts/install-system-deps.sh)"
    )


@dataclass
class MatrixHubServer(Supervised):
    """A running MatrixHub and its MariaDB; ``url`` is what clients use as ``HF_ENDPOINT``."""

    port: int = field(default_factory=free_port)
    admin_password: str = field(default_factory=lambda: "Mh1" + secrets.token_hex(10), repr=False)
    build: Path = field(init=False, repr=False)  # the build start() runs
    _folder_prefix: ClassVar[str] = "modelpack-matrixhub-"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def version(self) -> str:
        return (self.build / "share" / "VERSION").read_text().strip()

    @property
    def has_ui(self) -> bool:
        return (self.build / "share" / "ui" / "index.html").is_file()

    # -- start and stop ----------------------------------------------------------

    def start(self, timeout: float = 180.0) -> Self:
        """MariaDB, then MatrixHub (it runs its migrations), then its admin password changed;
        returns once the API answers."""
        build = matrixhub_dir()
        if not (build / "bin" / "matrixhub").exists():
            raise RuntimeError(
                f"MatrixHub is not built in {build}: run scripts/peers/build-matrixhub.sh"
            )
        self.build = build.resolve()
        self.logs.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # the database's socket is in it
        try:
            dsn = self._start_mariadb(secrets.token_hex(16))
            self._start_matrixhub(dsn, timeout)
            self._wait_ready(timeout)
            self._set_admin_password()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_mariadb(self, password: str) -> str:
        """A private server: its own data directory and tmpdir (two installs at once sharing
        /tmp collide on their temporary tables), no TCP at all, a unix socket in the private
        work folder; a database and a user for MatrixHub.  Returns MatrixHub's DSN."""
        data, tmp, sock = self.root / "mariadb", self.root / "mariadb-tmp", self.root / "mysql.sock"
        tmp.mkdir()
        user = f"--user={pwd.getpwuid(os.geteuid()).pw_name}"  # root, or whoever runs this
        installed = subprocess.run(
            [mariadb_bin("mariadb-install-db"), "--no-defaults", f"--datadir={data}",
             f"--tmpdir={tmp}", user, "--skip-test-db",
             "--auth-root-authentication-method=normal"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if installed.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {installed.stdout}{installed.stderr}")
        process = self._spawn(
            "mariadb",
            [mariadb_bin("mariadbd"), "--no-defaults", f"--datadir={data}", f"--tmpdir={tmp}",
             f"--socket={sock}", "--skip-networking", user, "--skip-name-resolve",
             "--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=2",
             f"--pid-file={self.root / 'mariadb.pid'}"],
        )  # fmt: skip
        sql = (
            "CREATE DATABASE matrixhub CHARACTER SET utf8mb4;"
            f"CREATE USER 'matrixhub'@'localhost' IDENTIFIED BY '{password}';"
            "GRANT ALL ON matrixhub.* TO 'matrixhub'@'localhost';"
        )
        deadline = time.monotonic() + 60
        while True:  # the socket appears before the server accepts: retry while it starts
            if process.poll() is not None:
                raise RuntimeError(f"mariadbd exited: {tail(self.logs / 'mariadb.log')}")
            created = subprocess.run(
                [mariadb_bin("mariadb"), "--no-defaults", f"--socket={sock}", "-uroot", "-e", sql],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            if created.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot create MatrixHub's database: {created.stderr.strip()}")
            time.sleep(0.2)
        return (
            f"matrixhub:{password}@unix({sock})/matrixhub"
            "?charset=utf8mb4&multiStatements=true&parseTime=true"
        )

    def _start_matrixhub(self, dsn: str, timeout: float) -> None:
        """Its config as deploy/ and config/config.yaml of its source have it, on our paths;
        the DSN in the environment variable MatrixHub reads (not in argv)."""
        config = self.root / "config.yaml"
        ui = self.build / "share" / "ui"
        config.write_text(
            "debug: false\n"
            f"migrationPath: {self.build / 'share' / 'migrations'}\n"
            f"dataDir: {self.root / 'data'}\n"
            "log:\n  level: info\n"
            "database:\n  driver: mysql\n  accessType: readwrite\n  maxOpenConns: 100\n"
            "  maxIdleConns: 10\n  connMaxLifetimeSeconds: 3600\n  connMaxIdleSeconds: 1800\n"
            "  migrate: true\n"
            f"apiServer:\n  port: {self.port}\n  hostURL: {self.url}\n  externalURL: {self.url}\n"
            "jobServer:\n  enabled: true\n  shutdownGrace: 10s\n"
            f"ui:\n  staticDir: '{ui if self.has_ui else ''}'\n"
        )
        process = self._spawn(
            "matrixhub",
            [str(self.build / "bin" / "matrixhub"), "apiserver", "-c", str(config)],
            env={"MATRIXHUB_DATABASE_DSN": dsn, "HOME": str(self.root)},
            cwd=self.root,
        )
        wait_port(self.port, process, "MatrixHub", self.logs / "matrixhub.log", timeout)

    def _wait_ready(self, timeout: float) -> None:
        def answers() -> bool:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200

        self._wait_answer("matrixhub", answers, f"MatrixHub on {self.url}", timeout)

    def _set_admin_password(self) -> None:
        """Its first migration gives ``admin`` the password ``changeme``: changed at once."""
        session = self.login(ADMIN, DEFAULT_PASSWORD)
        self.api(
            "POST", "/current-user/reset-password", session=session,
            json={"old_password": DEFAULT_PASSWORD, "new_password": self.admin_password},
        )  # fmt: skip

    # -- MatrixHub's REST API, as an administrator sets a project up ------------

    def login(self, username: str = ADMIN, password: str | None = None) -> requests.Session:
        """A session holding MatrixHub's session cookie (``token``)."""
        session = requests.Session()
        self.api(
            "POST", "/login", session=session,
            json={"username": username, "password": password or self.admin_password},
        )  # fmt: skip
        return session

    def api(
        self,
        method: str,
        path: str,
        *,
        session: requests.Session | None = None,
        expect: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> requests.Response:
        """One call to ``/api/v1alpha1`` (as admin unless ``session``); RuntimeError on
        another status."""
        session = session or self.login()
        response = session.request(method, f"{self.url}{API}{path}", timeout=60, **kwargs)
        if response.status_code not in expect:
            raise RuntimeError(
                f"MatrixHub {method} {path}: {response.status_code} {response.text[:500]}"
            )
        return response

    def create_project(self, name: str, *, public: bool = True) -> None:
        kind = "PROJECT_TYPE_PUBLIC" if public else "PROJECT_TYPE_PRIVATE"
        self.api("POST", "/projects", json={"name": name, "type": kind})

    def create_model(self, project: str, name: str) -> None:
        """An empty model repository ``project/name`` (its git repository with a first commit)."""
        self.api("POST", "/models", json={"project": project, "name": name})

    def create_dataset(self, project: str, name: str) -> None:
        """An empty dataset repository ``project/name``, as ``create_model`` for models."""
        self.api("POST", "/datasets", json={"project": project, "name": name})

    def access_token(self, name: str, expire_at: int | None = None) -> str:
        """A personal access token of the admin (``mh_...``): ``HF_TOKEN`` for the hub's
        clients (MatrixHub takes it as git's Basic password too); ``expire_at`` in Unix
        seconds, none by default."""
        document = {"name": name, "expire_at": str(expire_at) if expire_at else ""}
        return self.api("POST", "/current-user/access-tokens", json=document).json()["token"]


def main() -> None:
    """``python -m modelpack.testing.matrixhub``: run a MatrixHub until SIGTERM or Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description="Run a local MatrixHub (built from source).")
    parser.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)"
    )
    args = parser.parse_args()
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: not a TCP port")

    def ready(server: MatrixHubServer) -> list[str]:
        ui = ("with its UI" if server.has_ui else "without its UI (built without it: "
              "scripts/peers/build-matrixhub.sh builds it unless MODELPACK_MATRIXHUB_UI=0)")  # fmt: skip
        return [
            f"MATRIXHUB_URL={server.url}",
            f"MATRIXHUB_ADMIN_USER={ADMIN}",
            f"MATRIXHUB_ADMIN_PASSWORD={server.admin_password}",
            f"MatrixHub {server.version} {ui} (logs in {server.logs}); Ctrl-C stops it",
        ]

    run_until_signalled(lambda: MatrixHubServer(port=args.port or free_port()), ready)


if __name__ == "__main__":
    main()
