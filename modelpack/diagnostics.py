"""`modelpack doctor`: what is wrong with this machine's set-up, and what to do about it.

Each check looks at one thing a pull or push depends on (the local store,
the node cache, the config file, credentials, the registry's reachability,
TLS and authentication) and says what it found and, when it is not right,
the one step that fixes it.  Checks never change anything and never print a
secret.
"""

from __future__ import annotations

import enum
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import ModelpackError
from .settings import Settings

if TYPE_CHECKING:
    from .registry.credentials import Credentials


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict[str, str]:
        out = {"name": self.name, "status": self.status.value, "detail": self.detail}
        if self.fix:
            out["fix"] = self.fix
        return out


LOW_SPACE = 10 * 1024**3  # below this a typical model will not fit


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def check_home(settings: Settings) -> Check:
    home = settings.home
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check(
            "home",
            Status.FAIL,
            f"{home} is not writable ({exc.strerror or exc})",
            "set MODELPACK_HOME or --home to a writable directory",
        )
    free = shutil.disk_usage(home).free
    if free < LOW_SPACE:
        return Check(
            "home",
            Status.WARN,
            f"{home}: only {_gb(free)} free",
            "free space (`modelpack prune`, `modelpack cache prune --max-size ...`) "
            "or move MODELPACK_HOME to a bigger disk",
        )
    return Check("home", Status.OK, f"{home} (writable, {_gb(free)} free)")


def check_store(settings: Settings) -> Check:
    from .storage.store import node_store

    try:
        store = node_store(settings)
        refs = store.refs()
        changed = store.changed_blobs()
    except ModelpackError as exc:
        return Check("store", Status.FAIL, str(exc), exc.hint)
    summary = f"{settings.store_dir}: {len(refs)} tagged artifact{'' if len(refs) == 1 else 's'}"
    if changed:
        more = f" ({len(changed) - 1} more blob(s) changed too)" if len(changed) > 1 else ""
        return Check(
            "store", Status.FAIL, f"{summary}; {changed[0].message}{more}", changed[0].hint
        )
    return Check("store", Status.OK, summary)


def check_cache(settings: Settings) -> Check:
    from .display import human_size
    from .storage.cache import NodeCache

    try:
        entries = NodeCache(settings).entries()
    except (ModelpackError, OSError) as exc:
        return Check("node cache", Status.FAIL, str(exc), "remove the cache index and pull again")
    size = sum(e.size for e in entries)
    return Check(
        "node cache", Status.OK, f"{settings.models_dir}: {len(entries)} models, {human_size(size)}"
    )


def check_interrupted(settings: Settings) -> Check:
    from .display import human_size
    from .storage.interrupted import InterruptedPulls
    from .storage.store import LayoutStore

    stale = InterruptedPulls(settings.home).stale()
    store = LayoutStore(settings.store_dir, create=False)  # the node cache's partial downloads
    ingest, partial = store.ingest_dir, store.partial_bytes()
    if not stale and not partial:
        return Check("interrupted pulls", Status.OK, "none")
    found = [f"{p.staging} ({human_size(p.size)})" for p in stale]
    if partial:
        found.append(f"{ingest} ({human_size(partial)})")
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    size = sum(p.size for p in stale) + partial
    return Check(
        "interrupted pulls",
        Status.WARN,
        f"{human_size(size)} of downloads kept: {', '.join(found[:3])}{more}",
        "run the same pull again to resume it, or `modelpack prune` to remove what was kept",
    )


def check_config(settings: Settings) -> Check:
    path = settings.config_file
    if not path.exists():
        return Check("config", Status.OK, f"{path} (none; defaults and environment apply)")
    try:
        settings.registry_options("example.invalid")  # parses the whole file
    except ModelpackError as exc:
        return Check("config", Status.FAIL, str(exc), f"fix or remove {path}")
    return Check("config", Status.OK, str(path))


def check_registry(host: str, settings: Settings) -> list[Check]:
    """Reachability, TLS and authentication of ``host``, as a pull would meet them."""
    from .registry.challenge import parse_challenges
    from .registry.client import connect
    from .registry.credentials import find_credentials_with_source

    credentials, source = find_credentials_with_source(host)
    checks = [Check("credentials", Status.OK, f"{host}: {source}")]
    options = settings.registry_options(host)
    once = settings.with_overrides(retries=1)  # a diagnosis, not a transfer: no backoff
    client = connect(host, once, credentials=credentials, options=options)
    try:
        response = client.transport.send("GET", "/v2/")
    except ModelpackError as exc:
        return [*checks, Check("registry", Status.FAIL, f"{host}: {exc.message}", exc.hint)]
    with response:
        status, header = response.status_code, response.headers.get("WWW-Authenticate", "")
        scheme = client.transport.base_url.split("://", 1)[0]
    tls = "plain HTTP" if scheme == "http" else "TLS verified"
    if scheme == "https" and options.insecure:
        tls = "TLS NOT verified (--insecure)"
    if status not in (200, 401):
        return [
            *checks,
            Check(
                "registry",
                Status.FAIL,
                f"{host} answered /v2/ with HTTP {status} ({tls})",
                "is this an OCI registry? check the host and port",
            ),  # fmt: skip
        ]
    checks.append(Check("registry", Status.OK, f"{host} answers the distribution API ({tls})"))
    harbor = check_harbor(client.transport, host, options.media_types, credentials)
    if harbor is not None:
        checks.append(harbor)
    if options.mirrors:
        checks.append(Check("mirrors", Status.OK, ", ".join(options.mirrors)))
    if status == 200:
        checks.append(Check("auth", Status.OK, "no authentication required"))
        return checks
    offered = ", ".join(sorted({c.scheme.capitalize() for c in parse_challenges(header)}))
    try:
        client.auth.check_login()
    except ModelpackError as exc:
        fix = exc.hint or f"run `modelpack login {host}`"
        if credentials is None:
            fix = f"run `modelpack login {host}` or set MODELPACK_USERNAME/MODELPACK_PASSWORD"
        return [*checks, Check("auth", Status.FAIL, f"{offered}: {exc.message}", fix)]
    who = f"as {credentials.username}" if credentials and credentials.username else "anonymously"
    checks.append(Check("auth", Status.OK, f"{offered}: accepted {who}"))
    return checks


# Released Harbor renders a model (README, LICENSE, files) only with the pre-CNCF names;
# its main branch reads the CNCF ones from 2026 on (docs/registries.md).
HARBOR_CNCF_FROM = (2, 16)


def _version_tuple(text: str) -> tuple[int, ...] | None:
    match = re.match(r"v?(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_harbor(
    transport: Any, host: str, media_types: str | None, credentials: Credentials | None = None
) -> Check | None:
    """A Harbor says so at /api/v2.0/systeminfo, and which version it is to a logged-in
    user only (anonymously it leaves ``harbor_version`` out); which names it renders."""
    headers = {}
    if credentials is not None and credentials.username and credentials.password:
        headers["Authorization"] = credentials.basic_header()  # the registry's own origin
    try:
        response = transport.send("GET", "/api/v2.0/systeminfo", retry=False, headers=headers)
    except ModelpackError:
        return None
    with response:
        if response.status_code != 200 or len(response.content) > 64 * 1024:
            return None
        try:
            info = response.json()
            version = str(info.get("harbor_version") or "")
            harbor = "auth_mode" in info
        except (ValueError, AttributeError):
            return None
    if not version:
        if not harbor:
            return None
        return Check(
            "harbor",
            Status.WARN,
            f"{host} is a Harbor; it tells its version, and so which media types it renders "
            "(cnai up to v2.15, cncf after), to a logged-in user only",
            f"run `modelpack login {host}` (or set MODELPACK_USERNAME/PASSWORD) and doctor again",
        )
    parsed = _version_tuple(version)
    wants = "cncf" if parsed is not None and parsed >= HARBOR_CNCF_FROM else "cnai"
    detail = f"Harbor {version} renders models written with {wants} media types"
    if (media_types or "cncf") == wants:
        return Check("harbor", Status.OK, f"{detail}; this registry gets {wants}")
    return Check(
        "harbor",
        Status.WARN,
        f"{detail}; artifacts pushed here get {media_types or 'cncf'} (shown as plain files)",
        f'set media_types = "{wants}" under [registries."{host}"] in the registries config '
        f"(or pass --media-types {wants} to build and copy)",
    )


def run_checks(settings: Settings, host: str | None = None) -> list[Check]:
    checks = [
        Check(
            "modelpack",
            Status.OK,
            f"{__version__} on Python {sys.version.split()[0]} ({sys.executable})",
        ),
        check_config(settings),
        check_home(settings),
    ]
    if checks[-1].status is not Status.FAIL:
        checks += [check_store(settings), check_cache(settings), check_interrupted(settings)]
    if host:
        checks += check_registry(host, settings)
    return checks
