"""The public functions: one per CLI command, composed from the modules below.

Every function takes ``settings`` (a :class:`~modelpack.settings.Settings`)
or the same options as keywords (``home``, ``plain_http``, ``insecure``,
``ca_file``, ``concurrency``), falling back to environment variables.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import transfer
from .build import BuildResult, build_artifact, layer_format_for
from .endpoints import Endpoint, open_endpoint
from .errors import IntegrityError, ReferenceNotFoundError, UsageError
from .fsutil import remove_tree
from .inspection import Inspection, inspect_endpoint
from .progress import Progress
from .reference import Reference, parse_reference
from .registry import connect
from .registry.credentials import Credentials, erase_credentials, store_credentials
from .settings import Settings
from .source import open_source
from .spec import (
    Descriptor,
)
from .store import LayoutStore
from .transfer import TransferResult, model_lock

_OPTION_NAMES = {
    "home",
    "plain_http",
    "insecure",
    "ca_file",
    "concurrency",
    "config_file",
    "retries",
}


def resolve_settings(settings: Settings | None = None, **options: Any) -> Settings:
    unknown = set(options) - _OPTION_NAMES
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    return (settings or Settings()).with_overrides(**options)


def open_store(settings: Settings) -> LayoutStore:
    return LayoutStore(settings.store_dir)


def _store_key(reference: str | Reference) -> tuple[Reference, str]:
    ref = reference if isinstance(reference, Reference) else parse_reference(reference)
    return ref, str(ref)


# -- build ------------------------------------------------------------------


def build(
    source: str | os.PathLike[str],
    tag: str,
    *,
    exclude: Iterable[str] = (),
    layer_format: str = "raw",
    compress: str = "none",
    settings: Settings | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> BuildResult:
    """Package a model directory as a ModelPack artifact in the local store, tagged ``tag``."""
    settings = resolve_settings(settings, **options)
    ref, key = _store_key(tag)
    if ref.digest:
        raise UsageError(f"build -t takes a tag, not a digest: {tag}")
    fmt = layer_format_for(layer_format, compress)
    model_source = open_source(os.fspath(source), exclude)
    return build_artifact(
        model_source,
        open_store(settings),
        key,
        layer_format=fmt,
        concurrency=settings.concurrency,
        progress=progress,
    )


# -- push / pull / copy -----------------------------------------------------------


def push(
    reference: str,
    *,
    settings: Settings | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> TransferResult:
    """Upload a locally built artifact (and its signatures) to the registry its reference names."""
    return transfer.push(reference, resolve_settings(settings, **options), progress)


def pull_model(
    reference: str,
    output_dir: str | os.PathLike[str] | None = None,
    *,
    include: Iterable[str] = (),
    settings: Settings | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> TransferResult:
    """Download a model; with ``output_dir`` its files land there exactly as in the
    source repository, otherwise in the local store and a model tree under
    MODELPACK_HOME whose path is returned.  Mirrors configured for the
    registry are tried first."""
    settings = resolve_settings(settings, **options)
    return transfer.pull(reference, output_dir, settings, include=include, progress=progress)


def pull(reference: str, output_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> Path:
    """Download a model and return the directory holding its files."""
    result = pull_model(reference, output_dir, **kwargs)
    assert result.path is not None
    return result.path


def copy(
    source: str,
    destination: str,
    *,
    settings: Settings | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> TransferResult:
    """Copy an artifact with its signatures and other referrers between registries,
    ``oci:DIR[:TAG]`` layouts and the local store (``store:REF``)."""
    return transfer.copy(source, destination, resolve_settings(settings, **options), progress)


def login(
    host: str,
    username: str,
    password: str,
    *,
    settings: Settings | None = None,
    **options: Any,
) -> str:
    """Check credentials against ``host`` and store them as ``docker login`` does."""
    settings = resolve_settings(settings, **options)
    registry = host.removeprefix("https://").removeprefix("http://").rstrip("/")
    credentials = Credentials(username=username, password=password)
    client = connect(registry, settings, credentials=credentials)
    identity = client.auth.check_login()
    if identity:
        credentials = Credentials(username=username, password="", identity_token=identity)
    return store_credentials(registry, credentials)


def logout(host: str) -> bool:
    """Forget stored credentials for ``host``; False if there were none."""
    return erase_credentials(host.removeprefix("https://").removeprefix("http://").rstrip("/"))


# -- inspect / local store management ---------------------------------------------


def inspect(
    reference: str, *, remote: bool = False, settings: Settings | None = None, **options: Any
) -> Inspection:
    """Manifest, model config, referrers and signatures of an artifact in the local
    store or, with ``remote``, the registry (through its mirrors); layers are not read."""
    settings = resolve_settings(settings, **options)
    if remote:
        return inspect_endpoint(open_endpoint(reference, settings, reading=True), "remote")
    _, key = _store_key(reference)
    return inspect_endpoint(open_endpoint(f"store:{key}", settings, reading=True), "local")


@dataclass
class LocalModel:
    reference: str
    digest: str
    size: int
    created: str | None
    name: str | None
    format: str | None
    param_size: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "size": self.size,
            "created": self.created,
            "name": self.name,
            "format": self.format,
            "paramSize": self.param_size,
        }


def list_models(*, settings: Settings | None = None, **options: Any) -> list[LocalModel]:
    """Every tagged artifact in the local store."""
    settings = resolve_settings(settings, **options)
    store = open_store(settings)
    models = []
    for stored in store.refs():
        endpoint = Endpoint(store, stored.name, stored.name)
        try:
            inspection = inspect_endpoint(endpoint, "local", attached=False)
        except (ReferenceNotFoundError, IntegrityError, UsageError):
            continue
        cfg = inspection.config
        models.append(
            LocalModel(
                reference=stored.name,
                digest=stored.descriptor.digest,
                size=inspection.size,
                created=cfg.descriptor.created_at if cfg else None,
                name=cfg.descriptor.name if cfg else None,
                format=cfg.config.format if cfg else None,
                param_size=cfg.config.param_size if cfg else None,
            )
        )
    return models


def tag(
    source: str, target: str, *, settings: Settings | None = None, **options: Any
) -> Descriptor:
    """Give a stored artifact another name (no bytes are copied)."""
    settings = resolve_settings(settings, **options)
    store = open_store(settings)
    src_ref, src_key = _store_key(source)
    dst_ref, dst_key = _store_key(target)
    if dst_ref.digest:
        raise UsageError(f"tag target must be a tag, not a digest: {target}")
    desc = store.resolve(src_ref.digest or src_key)
    store.tag(desc, dst_key)
    return desc


def remove(reference: str, *, settings: Settings | None = None, **options: Any) -> Descriptor:
    """Untag an artifact in the local store; ``prune`` frees the bytes."""
    settings = resolve_settings(settings, **options)
    _, key = _store_key(reference)
    return open_store(settings).untag(key)


@dataclass
class PruneResult:
    blobs_removed: int
    models_removed: int
    bytes_freed: int

    def to_dict(self) -> dict[str, int]:
        return {
            "blobsRemoved": self.blobs_removed,
            "modelsRemoved": self.models_removed,
            "bytesFreed": self.bytes_freed,
        }


def prune(*, settings: Settings | None = None, **options: Any) -> PruneResult:
    """Delete blobs and model trees that no tag in the local store refers to."""
    settings = resolve_settings(settings, **options)
    store = open_store(settings)
    blobs, freed = store.prune()
    tagged = {r.descriptor.digest for r in store.refs()}
    models = 0
    for alg_dir in settings.models_dir.glob("sha*"):
        for tree in alg_dir.iterdir():
            digest = f"{alg_dir.name}:{tree.name}"
            if digest in tagged or not tree.is_dir():
                continue
            with model_lock(settings, digest):
                freed += sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
                remove_tree(tree)
                models += 1
    return PruneResult(blobs, models, freed)
