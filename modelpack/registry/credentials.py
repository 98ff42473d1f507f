"""Find credentials for a registry host the way docker, oras and skopeo do.

Order: MODELPACK_USERNAME / MODELPACK_PASSWORD (CI), then the docker config
(``$DOCKER_CONFIG/config.json``, default ``~/.docker/config.json``): a
per-host ``credHelpers`` entry, inline ``auths`` entries, then ``credsStore``.
Helpers get the host on stdin, never in argv.

The environment's pair is for one registry, as ``docker/login-action``'s
``registry`` input is: the host ``MODELPACK_REGISTRY`` names, else the registry
the command is about (``command_registry``: the reference pulled or pushed, the
destination of a copy between two registries).  Never a mirror or any other
host, unless MODELPACK_REGISTRY names it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AuthenticationError, UsageError
from ..storage._fsutil import atomic_write_bytes

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
# A helper is named by a plain word (docker-credential-<word> on PATH): never a path, so a
# config.json someone else wrote cannot make us run a program of its choosing.
_HELPER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)  # OAuth2 refresh token

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def docker_config_path() -> Path:
    directory = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(directory) / "config.json"


def read_docker_config(path: Path | None = None) -> dict:
    path = path or docker_config_path()
    try:
        document = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read docker config {path}: {exc}") from exc
    return document if isinstance(document, dict) else {}


def host_keys(host: str) -> list[str]:
    """The spellings docker config files use for one registry host."""
    if host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        return [DOCKER_HUB_KEY, "docker.io", "index.docker.io", "registry-1.docker.io"]
    return [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]


def _helper_program(helper: object) -> str:
    """``docker-credential-<helper>``, for a helper name that is a plain word; else UsageError."""
    if not isinstance(helper, str) or not _HELPER_NAME.fullmatch(helper):
        raise UsageError(
            f"credential helper name {str(helper)[:80]!r} in {docker_config_path()} is not a plain"
            " word; refusing to run it",
            hint="a helper is named like 'pass' or 'ecr-login' (docker-credential-NAME on PATH)",
        )
    return f"docker-credential-{helper}"


def _from_helper(helper: str, host: str) -> Credentials | None:
    program = _helper_program(helper)
    try:
        result = subprocess.run(
            [program, "get"],
            input=host.encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    try:
        payload = json.loads(result.stdout)
    except ValueError:
        return None
    username, secret = payload.get("Username", ""), payload.get("Secret", "")
    if not secret:
        return None
    if username == "<token>":
        return Credentials(username="", password="", identity_token=secret)
    return Credentials(username=username, password=secret)


def _from_auth_entry(entry: dict) -> Credentials | None:
    if token := entry.get("identitytoken"):
        return Credentials(username=entry.get("username", ""), password="", identity_token=token)
    if encoded := entry.get("auth"):
        try:
            decoded = base64.b64decode(encoded).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        username, sep, password = decoded.partition(":")
        if sep:
            return Credentials(username=username, password=password)
    if entry.get("username") and entry.get("password"):
        return Credentials(username=entry["username"], password=entry["password"])
    return None


def registry_key(text: str) -> str:
    """One spelling per registry: lower case, no scheme or trailing ``/v1/``, Docker
    Hub's aliases as ``docker.io``; UsageError for anything that is not HOST[:PORT]."""
    host = text.strip().lower().split("://", 1)[-1].rstrip("/")
    host = host.removesuffix("/v1").removesuffix("/v2")
    if not host or "/" in host or any(c.isspace() for c in host):
        raise UsageError(
            f"MODELPACK_REGISTRY={text!r} is not HOST[:PORT]",
            hint="name the one registry MODELPACK_USERNAME/PASSWORD are for, as `docker login HOST`",
        )
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io") else host


def environment_registry(command_registry: str) -> str:
    """The registry MODELPACK_USERNAME/PASSWORD are for in a command about ``command_registry``."""
    return registry_key(os.environ.get("MODELPACK_REGISTRY") or command_registry)


def environment_credentials(host: str, command_registry: str | None = None) -> Credentials | None:
    """MODELPACK_USERNAME/PASSWORD when ``host`` is the registry they are for."""
    username = os.environ.get("MODELPACK_USERNAME")
    password = os.environ.get("MODELPACK_PASSWORD")
    if not username or password is None:
        return None
    if registry_key(host) != environment_registry(command_registry or host):
        return None
    return Credentials(username=username, password=password)


def find_credentials(host: str, command_registry: str | None = None) -> Credentials | None:
    return find_credentials_with_source(host, command_registry)[0]


def find_credentials_with_source(
    host: str, command_registry: str | None = None
) -> tuple[Credentials | None, str]:
    """The credentials for ``host`` and where they came from (for `modelpack doctor`);
    ``command_registry`` (default ``host``) is the registry the command is about."""
    if found := environment_credentials(host, command_registry):
        return found, "MODELPACK_USERNAME/PASSWORD"
    found, source = stored_credentials(host)
    if found is None and os.environ.get("MODELPACK_USERNAME"):
        source += f"; MODELPACK_USERNAME is for {environment_registry(command_registry or host)}"
    return found, source


def stored_credentials(host: str) -> tuple[Credentials | None, str]:
    """What ``docker login HOST`` stored: credHelpers, auths, credsStore."""
    config = read_docker_config()
    keys = host_keys(host)
    helpers = config.get("credHelpers") or {}
    for key in keys:
        if key in helpers:
            return _from_helper(helpers[key], key), f"docker-credential-{helpers[key]}"
    auths = config.get("auths") or {}
    for key in keys:
        if isinstance(auths.get(key), dict) and (found := _from_auth_entry(auths[key])):
            return found, str(docker_config_path())
    if store := config.get("credsStore"):
        for key in keys[:2]:
            if found := _from_helper(store, key):
                return found, f"docker-credential-{store}"
    return None, "none (anonymous)"


def _helper_for(config: dict, key: str) -> str | None:
    return (config.get("credHelpers") or {}).get(key) or config.get("credsStore")


def _run_helper(helper: str, action: str, payload: str) -> None:
    """Run ``docker-credential-<helper> <action>`` with the secret on stdin, never argv."""
    program = _helper_program(helper)
    try:
        result = subprocess.run(
            [program, action],
            input=payload.encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
    except FileNotFoundError:
        raise UsageError(
            f"credential helper docker-credential-{helper} is not on PATH",
            hint=f"install it or remove it from {docker_config_path()}",
        ) from None
    if result.returncode != 0:
        raise AuthenticationError(
            f"credential helper docker-credential-{helper} {action} failed: "
            + result.stdout.decode(errors="replace").strip()[:200]
        )


def _write_docker_config(config: dict) -> Path:
    path = docker_config_path()
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    atomic_write_bytes(path, (json.dumps(config, indent="\t") + "\n").encode(), mode=0o600)
    return path


def store_credentials(host: str, credentials: Credentials) -> str:
    """Save credentials as ``docker login`` does; return where they went."""
    config = read_docker_config()
    key = host_keys(host)[0]
    auths = config.setdefault("auths", {})
    if helper := _helper_for(config, key):
        username = "<token>" if credentials.identity_token else credentials.username
        secret = credentials.identity_token or credentials.password
        _run_helper(
            helper, "store", json.dumps({"ServerURL": key, "Username": username, "Secret": secret})
        )
        auths[key] = {}
        _write_docker_config(config)
        return f"docker-credential-{helper}"
    entry = {
        "auth": base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
    }
    if credentials.identity_token:
        entry["identitytoken"] = credentials.identity_token
    auths[key] = entry
    return str(_write_docker_config(config))


def erase_credentials(host: str) -> bool:
    """Forget stored credentials for ``host``; False if there were none."""
    config = read_docker_config()
    auths = config.get("auths") or {}
    found = False
    for key in host_keys(host):
        if key in auths:
            if helper := _helper_for(config, key):
                _run_helper(helper, "erase", key)
            del auths[key]
            found = True
    if found:
        _write_docker_config(config)
    return found
