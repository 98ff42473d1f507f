"""Where modelpack keeps things and how it talks to each registry.

Precedence, highest first: explicit arguments (CLI flags / keyword
arguments), environment variables, the per-registry TOML file, defaults.
Library callers get the same behaviour as the CLI without passing anything.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError

_TRUE = {"1", "true", "yes", "on"}


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def default_home() -> Path:
    if home := os.environ.get("MODELPACK_HOME"):
        return Path(home).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "modelpack"


def default_config_file() -> Path:
    if path := os.environ.get("MODELPACK_CONFIG"):
        return Path(path).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "modelpack" / "config.toml"


def default_concurrency() -> int:
    """Parallel blob transfers: enough to fill a link on 2 cores, capped for 16+."""
    if value := os.environ.get("MODELPACK_CONCURRENCY"):
        try:
            number = int(value)
        except ValueError:
            raise UsageError(f"MODELPACK_CONCURRENCY={value!r} is not a number") from None
        if number < 1:
            raise UsageError("MODELPACK_CONCURRENCY must be at least 1")
        return number
    return min(8, max(4, os.cpu_count() or 1))


RANGED_MIN = 256 * 1024**2  # blobs this big are fetched as parallel ranges by default
PIECE_SIZE = 32 * 1024**2  # one Range request; also what a killed pull refetches at most


def default_ranged_min() -> int | None:
    """MODELPACK_RANGED_MIN: the blob size from which a download is split into ranges
    (``off`` or ``0``: never)."""
    value = os.environ.get("MODELPACK_RANGED_MIN", "").strip()
    if value.lower() in {"off", "0", "no", "false"}:
        return None
    return parse_size(value, "MODELPACK_RANGED_MIN") if value else RANGED_MIN


def default_piece_size() -> int:
    """MODELPACK_RANGED_PIECE: bytes per Range request of a ranged download."""
    value = os.environ.get("MODELPACK_RANGED_PIECE", "").strip()
    size = parse_size(value, "MODELPACK_RANGED_PIECE") if value else PIECE_SIZE
    if size < 1:
        raise UsageError("MODELPACK_RANGED_PIECE must be at least 1 byte")
    return size


def is_loopback_host(host: str) -> bool:
    """True for localhost / 127.0.0.0/8 / ::1, with or without a port."""
    name = host
    if name.startswith("["):
        name = name[1 : name.find("]")]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3}  # fmt: skip


def parse_size(value: str | int, what: str = "size") -> int:
    """``64MiB`` / ``1G`` / ``500000`` -> bytes."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise UsageError(f"{what} {value!r} is not a size like 64MiB or 1GB")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]


MEDIA_TYPE_FAMILIES = ("cncf", "cnai")


def _media_types(value: Any, host: str) -> str | None:
    if value is None:
        return None
    if value not in MEDIA_TYPE_FAMILIES:
        raise UsageError(
            f"media_types = {value!r} for {host} in the registries config is not cncf or cnai"
        )
    return str(value)


def parse_mirrors_env(text: str) -> dict[str, tuple[str, ...]]:
    """``host=url1,url2;host2=url3`` (MODELPACK_MIRRORS) -> {host: (url1, url2)}."""
    mirrors: dict[str, tuple[str, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        host, sep, urls = part.partition("=")
        if not sep or not host.strip():
            raise UsageError(f"MODELPACK_MIRRORS entry {part!r} is not HOST=URL[,URL...]")
        mirrors[host.strip()] = tuple(u.strip() for u in urls.split(",") if u.strip())
    return mirrors


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach one registry host."""

    plain_http: bool = False
    insecure: bool = False
    ca_file: str | None = None
    mirrors: tuple[str, ...] = ()
    chunk_size: int | None = None  # None: automatic; 0: never chunk uploads
    # "cnai" or "cncf": the ModelPack names artifacts get on their way to this registry
    # (build -t, push, copy); None keeps what they have.  Released Harbor reads "cnai".
    media_types: str | None = None


@dataclass
class Settings:
    """Everything that is not per-call: paths, transport defaults, per-host options."""

    home: Path = field(default_factory=default_home)
    plain_http: bool = field(default_factory=lambda: env_flag("MODELPACK_PLAIN_HTTP"))
    insecure: bool = field(default_factory=lambda: env_flag("MODELPACK_INSECURE"))
    ca_file: str | None = field(default_factory=lambda: os.environ.get("MODELPACK_CA_FILE"))
    concurrency: int = field(default_factory=default_concurrency)
    config_file: Path = field(default_factory=default_config_file)
    # Attempts per request and per blob transfer (connection resets, 5xx, 429).
    retries: int = field(
        default_factory=lambda: max(1, int(os.environ.get("MODELPACK_RETRIES") or 4))
    )
    # Parallel ranged downloads of one big blob (None: off) and the size of each range.
    ranged_min: int | None = field(default_factory=default_ranged_min)
    piece_size: int = field(default_factory=default_piece_size)
    # Ranges through a registry mirror too: only when MODELPACK_RANGED_MIN is set. A mirror is
    # near and uncapped, and a P2P one (dfdaemon) makes each range a peer of its own.
    ranged_through_mirrors: bool = field(
        default_factory=lambda: bool(os.environ.get("MODELPACK_RANGED_MIN", "").strip())
    )
    _registry_table: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Accept str paths from library callers: Settings(home="/data/modelpack").
        self.home = Path(self.home).expanduser()
        self.config_file = Path(self.config_file).expanduser()

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    def _registries(self) -> dict[str, Any]:
        if self._registry_table is None:
            self._registry_table = _load_registry_table(self.config_file)
        return self._registry_table

    def registry_options(self, host: str) -> RegistryOptions:
        entry = self._registries().get(host, {})
        env_mirrors = parse_mirrors_env(os.environ.get("MODELPACK_MIRRORS", ""))
        chunk = os.environ.get("MODELPACK_CHUNK_SIZE") or entry.get("chunk_size")
        return RegistryOptions(
            plain_http=self.plain_http or bool(entry.get("plain_http", False)),
            insecure=self.insecure or bool(entry.get("insecure", False)),
            ca_file=self.ca_file or entry.get("ca_file"),
            mirrors=env_mirrors.get(host) or tuple(entry.get("mirrors", ())),
            chunk_size=None if chunk is None else parse_size(chunk, "chunk_size"),
            media_types=_media_types(entry.get("media_types"), host),
        )

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy where every non-None keyword replaces the current value."""
        values = {k: v for k, v in overrides.items() if v is not None}
        if "home" in values:
            values["home"] = Path(values["home"]).expanduser()
        current = {
            "home": self.home,
            "plain_http": self.plain_http,
            "insecure": self.insecure,
            "ca_file": self.ca_file,
            "concurrency": self.concurrency,
            "config_file": self.config_file,
            "retries": self.retries,
            "ranged_min": self.ranged_min,
            "piece_size": self.piece_size,
            "ranged_through_mirrors": self.ranged_through_mirrors,
        }
        current.update(values)
        if current["concurrency"] < 1:
            raise UsageError("concurrency must be at least 1")
        return Settings(**current, _registry_table=self._registry_table)


def _load_registry_table(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from exc
    registries = document.get("registries", {})
    if not isinstance(registries, dict):
        raise UsageError(f"config file {path}: [registries] must be a table")
    return registries
