"""Start a real Harbor on 127.0.0.1 for tests and for trying modelpack against Harbor.

Harbor's core, jobservice and registryctl are built from source snapshots by
``scripts/peers/build-harbor.sh`` into the peers cache (``MODELPACK_PEERS_DIR``, default
``~/.cache/modelpack-peers``); the parts Harbor runs beside them are Debian's: PostgreSQL
(a private cluster in a temporary folder), Redis and distribution (``docker-registry``) as
Harbor's registry.  Core serves the API and ``/v2/`` on one port and proxies ``/v2/`` to
the registry with the registry credential (htpasswd), as Harbor's own installer sets it up.

``python -m modelpack.testing.harbor [--version v2.15.2|main] [--port N]`` prints
``HARBOR_URL=...`` and ``HARBOR_ADMIN_PASSWORD=...`` once Harbor answers and stops
everything on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import requests

from ._supervised import Supervised, peers_dir, run_until_signalled, wait_port
from .registry import free_port, registry_binary, write_htpasswd

VERSIONS = ("v2.15.2", "main")
ADMIN = "admin"


def harbor_dir(version: str) -> Path:
    """Where build-harbor.sh put ``version`` (a symlink to its current build)."""
    return peers_dir() / f"harbor-{version}"


def postgres_bin(name: str) -> str:
    """A PostgreSQL program: Debian's /usr/lib/postgresql/N/bin (newest N), else on PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if candidates:
        return str(candidates[-1])
    if found := shutil.which(name):
        return found
    raise RuntimeError(
        f"PostgreSQL's {name} not found: install Debian's postgresql "
        "(scripts/install-system-deps.sh)"
    )


def created_id(response: requests.Response) -> int:
    """The id of what a Harbor API POST created: the last part of its ``Location``."""
    return int(response.headers["Location"].rstrip("/").rsplit("/", 1)[1])


def wait_until_ended(
    read: Callable[[], dict], field_name: str, ended: tuple[str, ...], what: str, timeout: float
) -> dict:
    """Poll ``read`` every half second until its ``field_name`` is one of ``ended`` (Harbor's
    executions, jobs and runs end asynchronously); the last document.  RuntimeError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        document = read()
        if document.get(field_name) in ended:
            return document
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not finish within {timeout:.0f}s")


@dataclass
class HarborServer(Supervised):
    """A running Harbor; ``host`` is what goes into references (127.0.0.1:PORT).

    ``ip`` is the address core listens on and that every URL Harbor hands out names
    (``EXT_ENDPOINT``, the token realm, preheat URLs): 127.0.0.1 by default; a network
    namespace's own address when Harbor runs in one for peers that refuse loopback
    (Dragonfly's manager, benchmarks/harbor_preheat.py).  The other parts stay on 127.0.0.1.
    """

    version: str = "v2.15.2"
    port: int = field(default_factory=free_port)
    ip: str = "127.0.0.1"
    admin_password: str = field(default_factory=lambda: "Mp1" + secrets.token_hex(10), repr=False)
    # Garbage collection spares blobs touched within this many hours (core's
    # GC_TIME_WINDOW_HOURS; the API cannot set it). Harbor's default, 2, would spare all a
    # test just pushed; 0 is for a Harbor nobody pushes to while it collects.
    gc_time_window_hours: int = 0
    _folder_prefix: ClassVar[str] = "modelpack-harbor-"
    _stop_signals: ClassVar[dict[str, signal.Signals]] = {"postgres": signal.SIGINT}  # fast

    @property
    def host(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    # -- start and stop ----------------------------------------------------------

    def start(self, timeout: float = 180.0) -> Self:
        """Start every part in order and return once core answers the API and ``/v2/``."""
        build = harbor_dir(self.version)
        if not (build / "bin" / "harbor_core").exists():
            raise RuntimeError(
                f"Harbor {self.version} is not built in {build}: run "
                f"MODELPACK_HARBOR_VERSIONS={self.version} scripts/peers/build-harbor.sh"
            )
        self.build = build.resolve()
        self.logs.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)  # PostgreSQL runs as its own user below it
        secret = {k: secrets.token_hex(16) for k in ("db", "redis", "registry", "core", "job")}
        self._secrets = secret
        try:
            db_port = self._start_postgres(secret["db"])
            redis_port = self._start_redis(secret["redis"])
            registry_port = self._start_registry(secret["registry"])
            ctl_port = self._start_registryctl(secret)
            job_port = free_port()
            env = self._core_env(secret, db_port, redis_port, registry_port, ctl_port, job_port)
            self._start_core(env, timeout)
            self._start_jobservice(env, job_port, redis_port)
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_postgres(self, password: str) -> int:
        """A private cluster: initdb with a password (Harbor's key=value connection string
        breaks on an empty one), listening on 127.0.0.1 only."""
        data, port = self.root / "postgres", free_port()
        data.mkdir()
        (self.root / "pgpass").write_text(password + "\n")
        as_user: dict[str, Any] = {}
        if os.geteuid() == 0:  # initdb and postgres refuse root
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root needs the 'postgres' user") from None
            for path in (data, self.root / "pgpass"):
                os.chown(path, user.pw_uid, user.pw_gid)
            as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        initdb = subprocess.run(
            [postgres_bin("initdb"), "-D", str(data), "-U", "harbor", "-A", "scram-sha-256",
             f"--pwfile={self.root / 'pgpass'}", "-E", "UTF8", "--locale=C", "--no-sync"],
            capture_output=True, text=True, timeout=120, **as_user,
        )  # fmt: skip
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stderr.strip()[-500:]}")
        process = self._spawn(
            "postgres",
            [postgres_bin("postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
             "-k", str(data), "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off"],
            **as_user,
        )  # fmt: skip
        wait_port(port, process, "PostgreSQL", self.logs / "postgres.log", 60)
        for _ in range(100):  # listening is not yet accepting: retry while it starts up
            created = subprocess.run(
                [postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "harbor",
                 "registry"],
                env={**os.environ, "PGPASSWORD": password}, capture_output=True, text=True,
                timeout=30,
            )  # fmt: skip
            if created.returncode == 0:
                return port
            time.sleep(0.2)
        raise RuntimeError(f"cannot create Harbor's database: {created.stderr.strip()}")

    def _start_redis(self, password: str) -> int:
        port = free_port()
        (self.root / "redis").mkdir()
        conf = self.root / "redis.conf"  # the password in a file, not in argv
        conf.write_text(
            f'bind 127.0.0.1\nport {port}\nrequirepass {password}\nsave ""\n'
            f"appendonly no\ndir {self.root / 'redis'}\n"
        )
        redis = shutil.which("redis-server")
        if redis is None:
            raise RuntimeError("redis-server not found: install Debian's redis-server")
        process = self._spawn("redis", [redis, str(conf)])
        wait_port(port, process, "Redis", self.logs / "redis.log", 30)
        return port

    def _start_registry(self, password: str) -> int:
        """Debian's distribution behind core, with the basic auth core's proxy sends."""
        binary = registry_binary()
        if binary is None:
            raise RuntimeError("docker-registry not found: install Debian's docker-registry")
        port = free_port()
        htpasswd = write_htpasswd(
            self.root / "registry.htpasswd", {"harbor_registry_user": password}
        )
        config = self.root / "registry.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n  fields:\n    service: registry\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {self.root / 'registry'}\n"
            "  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            f"http:\n  addr: 127.0.0.1:{port}\n  secret: {secrets.token_hex(16)}\n"
            f"auth:\n  htpasswd:\n    realm: harbor-registry-basic-realm\n    path: {htpasswd}\n"
            "validation:\n  disabled: true\n"
        )
        process = self._spawn("registry", [binary, "serve", str(config)])
        wait_port(port, process, "registry", self.logs / "registry.log", 30)
        return port

    def _start_registryctl(self, secret: dict[str, str]) -> int:
        port = free_port()
        config = self.root / "registryctl.yml"
        config.write_text(
            f'protocol: "http"\nport: {port}\nlog_level: info\n'
            f'registry_config: "{self.root / "registry.yml"}"\n'
        )
        env = {"CORE_SECRET": secret["core"], "JOBSERVICE_SECRET": secret["job"]}
        process = self._spawn(
            "registryctl", [str(self.build / "bin/harbor_registryctl"), "-c", str(config)], env=env
        )
        wait_port(port, process, "registryctl", self.logs / "registryctl.log", 30)
        return port

    def _core_env(
        self,
        secret: dict[str, str],
        db_port: int,
        redis_port: int,
        registry_port: int,
        ctl_port: int,
        job_port: int,
    ) -> dict[str, str]:
        core_dir = self.root / "core"
        core_dir.mkdir()
        # core listens on every interface unless its app.conf names the address
        (core_dir / "app.conf").write_text(
            "appname = Harbor\nrunmode = prod\nenablegzip = true\n\n"
            f"[prod]\nhttpaddr = {self.ip}\nhttpport = {self.port}\n"
        )
        (core_dir / "key").write_text(secrets.token_hex(8))  # 16 characters: AES-128
        (core_dir / "private_key.pem").write_bytes(_pkcs1_rsa_key())
        redis = f"redis://:{secret['redis']}@127.0.0.1:{redis_port}"
        return {
            "CONFIG_PATH": str(core_dir / "app.conf"),
            "KEY_PATH": str(core_dir / "key"),
            "TOKEN_PRIVATE_KEY_PATH": str(core_dir / "private_key.pem"),
            "POSTGRES_MIGRATION_SCRIPTS_PATH": str(self.build / "share/migrations/postgresql"),
            "_REDIS_URL_CORE": f"{redis}/0?idle_timeout_seconds=30",
            "_REDIS_URL_REG": f"{redis}/1?idle_timeout_seconds=30",
            "JOB_SERVICE_POOL_REDIS_URL": f"{redis}/2",
            "LOG_LEVEL": "info",
            "EXT_ENDPOINT": self.url,
            "CORE_URL": self.url,
            "CORE_LOCAL_URL": self.url,
            "TOKEN_SERVICE_URL": f"{self.url}/service/token",
            "DATABASE_TYPE": "postgresql",
            "POSTGRESQL_HOST": "127.0.0.1",
            "POSTGRESQL_PORT": str(db_port),
            "POSTGRESQL_USERNAME": "harbor",
            "POSTGRESQL_PASSWORD": secret["db"],
            "POSTGRESQL_DATABASE": "registry",
            "POSTGRESQL_SSLMODE": "disable",
            "POSTGRESQL_MAX_IDLE_CONNS": "20",
            "POSTGRESQL_MAX_OPEN_CONNS": "100",
            "REGISTRY_URL": f"http://127.0.0.1:{registry_port}",
            "REGISTRY_CONTROLLER_URL": f"http://127.0.0.1:{ctl_port}",
            "REGISTRY_CREDENTIAL_USERNAME": "harbor_registry_user",
            "REGISTRY_CREDENTIAL_PASSWORD": secret["registry"],
            "REGISTRY_STORAGE_PROVIDER_NAME": "filesystem",
            "PORTAL_URL": f"http://127.0.0.1:{free_port()}",  # no portal: nothing listens
            "JOBSERVICE_URL": f"http://127.0.0.1:{job_port}",
            "HARBOR_ADMIN_PASSWORD": self.admin_password,
            "CORE_SECRET": secret["core"],
            "JOBSERVICE_SECRET": secret["job"],
            "CSRF_KEY": secrets.token_hex(16),  # 32 characters
            "WITH_TRIVY": "false",
            "READ_ONLY": "false",
            "MAX_JOB_WORKERS": "4",
            "ROBOT_SCANNER_NAME_PREFIX": secrets.token_hex(4),
            "PERMITTED_REGISTRY_TYPES_FOR_PROXY_CACHE": "docker-hub,harbor,docker-registry",
            "REPLICATION_ADAPTER_WHITELIST": "docker-hub,docker-registry,harbor",
            "NO_PROXY": f"127.0.0.1,localhost,{self.ip}",
            "GC_TIME_WINDOW_HOURS": str(self.gc_time_window_hours),
            # how often core folds finished tasks into their execution's status (GC, retention,
            # replication): Harbor's 30 s default, every 2 s here, the same asynchronous way
            "EXECUTION_STATUS_REFRESH_INTERVAL_SECONDS": "2",
        }

    def _start_core(self, env: dict[str, str], timeout: float) -> None:
        process = self._spawn(
            "core", [str(self.build / "bin/harbor_core")], env=env, cwd=self.root / "core"
        )
        wait_port(self.port, process, "Harbor core", self.logs / "core.log", timeout, self.ip)

    def _start_jobservice(self, env: dict[str, str], port: int, redis_port: int) -> None:
        """After core: jobservice reads its configuration from core's API at start."""
        config, jobs = self.root / "jobservice.yml", self.root / "jobs"
        jobs.mkdir(exist_ok=True)
        config.write_text(
            f'protocol: "http"\nport: {port}\n'
            "worker_pool:\n  workers: 4\n  backend: redis\n  redis_pool:\n"
            f"    redis_url: {env['JOB_SERVICE_POOL_REDIS_URL']}\n"
            '    namespace: "harbor_job_service_namespace"\n    idle_timeout_second: 3600\n'
            # FILE as Harbor's deployment has it: the API serves a job's log (GC, retention)
            # from it; STD_OUTPUT alone has none to serve
            "job_loggers:\n  - name: STD_OUTPUT\n    level: INFO\n"
            f"  - name: FILE\n    level: INFO\n    settings:\n      base_dir: {jobs}\n"
            f"    sweeper:\n      duration: 1\n      settings:\n        work_dir: {jobs}\n"
            "loggers:\n  - name: STD_OUTPUT\n    level: INFO\n"
            "reaper:\n  max_update_hours: 24\n  max_dangling_hours: 168\n"
        )
        # Not core's EXT_ENDPOINT: with it, the replication adapter in a job takes itself for
        # core and calls this Harbor at http://127.0.0.1:8080 (Harbor's deployment has core there)
        env = {k: v for k, v in env.items() if k != "EXT_ENDPOINT"}
        process = self._spawn(
            "jobservice", [str(self.build / "bin/harbor_jobservice"), "-c", str(config)], env=env
        )
        wait_port(port, process, "Harbor jobservice", self.logs / "jobservice.log", 60)

    def _wait_ready(self, timeout: float) -> None:
        def answers() -> bool:
            info = requests.get(f"{self.url}/api/v2.0/systeminfo", timeout=2)
            v2 = requests.get(f"{self.url}/v2/", timeout=2)
            return info.status_code == 200 and v2.status_code == 401

        self._wait_answer("core", answers, f"Harbor core on {self.url}", timeout)

    # -- Harbor's REST API, as an administrator sets a project up ---------------

    def api(
        self,
        method: str,
        path: str,
        *,
        auth: tuple[str, str] | None = None,
        expect: tuple[int, ...] = (200, 201),
        **kwargs: Any,
    ) -> requests.Response:
        """One call to ``/api/v2.0`` (as admin unless ``auth``); RuntimeError on another status."""
        response = requests.request(
            method,
            f"{self.url}/api/v2.0{path}",
            auth=auth or (ADMIN, self.admin_password),
            timeout=60,
            **kwargs,
        )
        if response.status_code not in expect:
            raise RuntimeError(
                f"Harbor {method} {path}: {response.status_code} {response.text[:500]}"
            )
        return response

    def create_project(
        self, name: str, *, public: bool = False, registry_id: int | None = None
    ) -> None:
        """A project; with ``registry_id`` (an endpoint, create_registry) a proxy cache of it."""
        document: dict[str, Any] = {
            "project_name": name,
            "metadata": {"public": str(public).lower()},
        }
        if registry_id is not None:
            document["registry_id"] = registry_id
        self.api("POST", "/projects", json=document)

    def create_registry(self, name: str, url: str, kind: str = "docker-registry") -> int:
        """A registry endpoint (Administration -> Registries), anonymous; returns its id."""
        created = self.api(
            "POST", "/registries", json={"name": name, "type": kind, "url": url, "insecure": True}
        )
        return created_id(created)

    def replicate(
        self, name: str, registry_id: int, repository: str, namespace: str, timeout: float = 120
    ) -> dict:
        """A push-based replication rule (``repository`` of this Harbor, to ``namespace`` at
        the endpoint, manual trigger), run once through the API; returns the finished
        execution (``status`` Succeed, Failed or Stopped) or raises on the timeout."""
        created = self.api(
            "POST",
            "/replication/policies",
            json={
                "name": name,
                "dest_registry": {"id": registry_id},
                "dest_namespace": namespace,
                "dest_namespace_replace_count": 1,
                "filters": [{"type": "name", "value": repository}],
                "trigger": {"type": "manual"},
                "enabled": True,
                "override": True,
            },
        )
        policy = created_id(created)
        started = self.api("POST", "/replication/executions", json={"policy_id": policy})
        execution = created_id(started)
        return wait_until_ended(
            lambda: self.api("GET", f"/replication/executions/{execution}").json(),
            "status", ("Succeed", "Failed", "Stopped"), f"replication {name}", timeout,
        )  # fmt: skip

    def create_user(self, name: str, password: str) -> None:
        self.api(
            "POST",
            "/users",
            json={"username": name, "password": password, "email": f"{name}@example.com",
                  "realname": name},
        )  # fmt: skip

    def add_member(self, project: str, user: str, role: str = "developer") -> None:
        """Roles as Harbor numbers them: projectAdmin 1, developer 2, guest 3, maintainer 4."""
        roles = {"projectAdmin": 1, "developer": 2, "guest": 3, "maintainer": 4, "limitedGuest": 5}
        self.api(
            "POST",
            f"/projects/{project}/members",
            json={"role_id": roles[role], "member_user": {"username": user}},
        )

    def create_robot(self, project: str, name: str, actions: tuple[str, ...]) -> tuple[str, str]:
        """A project robot account allowed ``actions`` on repositories ("pull", "push");
        returns its name as Harbor gives it (``robot$project+name``) and its secret."""
        access = [{"resource": "repository", "action": action} for action in actions]
        document = self.api(
            "POST",
            "/robots",
            json={
                "name": name,
                "level": "project",
                "duration": -1,
                "permissions": [{"kind": "project", "namespace": project, "access": access}],
            },
        ).json()
        return document["name"], document["secret"]

    def protect_tags(self, project: str, pattern: str) -> None:
        """A tag immutability rule: tags matching ``pattern`` (doublestar) in every
        repository of ``project`` cannot be pushed again or deleted."""
        self.api(
            "POST",
            f"/projects/{project}/immutabletagrules",
            json={
                "disabled": False,
                "action": "immutable",
                "template": "immutable_template",
                "tag_selectors": [
                    {"kind": "doublestar", "decoration": "matches", "pattern": pattern}
                ],
                "scope_selectors": {
                    "repository": [
                        {"kind": "doublestar", "decoration": "repoMatches", "pattern": "**"}
                    ]
                },
            },
        )

    def set_quota(self, project: str, storage: int) -> None:
        """The project's storage quota in bytes (-1: none)."""
        project_id = self.api("GET", f"/projects/{project}").json()["project_id"]
        quotas = self.api(
            "GET", "/quotas", params={"reference": "project", "reference_id": project_id}
        ).json()
        self.api("PUT", f"/quotas/{quotas[0]['id']}", json={"hard": {"storage": storage}})

    def create_retention(self, project: str, pattern: str) -> int:
        """A tag retention policy on ``project`` with one rule, Harbor's ``always``
        template: in every repository keep the artifacts with a tag matching ``pattern``
        (doublestar); the rest, untagged ones too, go when it runs. No schedule
        (run_retention runs it); returns its id."""
        project_id = self.api("GET", f"/projects/{project}").json()["project_id"]
        created = self.api(
            "POST",
            "/retentions",
            json={
                "algorithm": "or",
                "rules": [
                    {
                        "disabled": False,
                        "action": "retain",
                        "template": "always",
                        "params": {},
                        "tag_selectors": [
                            {
                                "kind": "doublestar",
                                "decoration": "matches",
                                "pattern": pattern,
                                "extras": '{"untagged":false}',
                            }
                        ],
                        "scope_selectors": {
                            "repository": [
                                {"kind": "doublestar", "decoration": "repoMatches", "pattern": "**"}
                            ]
                        },
                    }
                ],
                "trigger": {"kind": "Schedule", "settings": {"cron": ""}, "references": {}},
                "scope": {"level": "project", "ref": project_id},
            },
        )
        return created_id(created)

    def run_retention(
        self, policy: int, *, dry_run: bool = False, timeout: float = 120
    ) -> tuple[dict, list[dict]]:
        """Run a retention policy once; returns the finished execution (``status`` Success,
        Error or Stopped) and its tasks, one per repository with ``total`` and ``retained``."""
        started = self.api("POST", f"/retentions/{policy}/executions", json={"dry_run": dry_run})
        execution = created_id(started)

        def read() -> dict:
            listed = self.api("GET", f"/retentions/{policy}/executions").json()
            (document,) = [e for e in listed if e["id"] == execution]
            return document

        document = wait_until_ended(read, "status", ("Success", "Error", "Stopped"),
                                    f"retention {policy}", timeout)  # fmt: skip
        tasks = self.api("GET", f"/retentions/{policy}/executions/{execution}/tasks")
        return document, tasks.json()

    def garbage_collect(self, *, delete_untagged: bool = True, timeout: float = 300) -> dict:
        """Run garbage collection now (schedule type ``Manual``) and wait for it; returns
        the finished run (``job_status`` Success, Error or Stopped; its ``id`` for gc_log).
        Blobs touched within ``gc_time_window_hours`` are spared."""
        started = self.api(
            "POST",
            "/system/gc/schedule",
            json={"schedule": {"type": "Manual"},
                  "parameters": {"delete_untagged": delete_untagged, "workers": 1}},
        )  # fmt: skip
        run = created_id(started)
        return wait_until_ended(
            lambda: self.api("GET", f"/system/gc/{run}").json(),
            "job_status", ("Success", "Error", "Stopped"), f"garbage collection {run}", timeout,
        )  # fmt: skip

    def gc_log(self, run: int) -> str:
        """The job log of a garbage collection run (jobservice's FILE logger)."""
        return self.api("GET", f"/system/gc/{run}/log").text


def _pkcs1_rsa_key() -> bytes:
    """The token signing key in the PEM form core reads: PKCS#1 (BEGIN RSA PRIVATE KEY)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def main() -> None:
    """``python -m modelpack.testing.harbor``: run a Harbor until SIGTERM or Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(description="Run a local Harbor (built from source).")
    parser.add_argument("--version", choices=VERSIONS, default=VERSIONS[0])
    parser.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)"
    )
    args = parser.parse_args()
    run_until_signalled(
        lambda: HarborServer(version=args.version, port=args.port or free_port()),
        lambda server: [
            f"HARBOR_URL={server.url}",
            f"HARBOR_ADMIN_PASSWORD={server.admin_password}",
            f"Harbor {args.version} (logs in {server.logs}); Ctrl-C stops it",
        ],
    )


if __name__ == "__main__":
    main()
