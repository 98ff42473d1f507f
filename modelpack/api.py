"""The public functions: one per CLI command, composed from the modules below.

Every function takes ``settings`` (a :class:`~modelpack.settings.Settings`)
or the same options as keywords (``home``, ``plain_http``, ``insecure``,
``ca_file``, ``concurrency``), falling back to environment variables.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .build import BuildResult, build_artifact, layer_format_for
from .copy import CopyStats, copy_graph
from .errors import IntegrityError, ReferenceNotFoundError, UsageError
from .fsutil import remove_tree
from .locks import file_lock
from .progress import Progress
from .reference import Reference, parse_reference
from .registry import open_repository
from .settings import Settings
from .source import open_source
from .spec import (
    INDEX_MEDIA_TYPES,
    MODEL_CONFIG_MEDIA_TYPES,
    Descriptor,
    Manifest,
    ModelConfig,
)
from .store import LayoutStore
from .target import Target, fetch_bytes
from .unpack import DirectoryTarget

_OPTION_NAMES = {"home", "plain_http", "insecure", "ca_file", "concurrency", "config_file"}


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


# -- push / pull -------------------------------------------------------------


@dataclass
class TransferResult:
    reference: str
    digest: str
    stats: CopyStats
    path: Path | None = None
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "reference": self.reference,
            "digest": self.digest,
            **self.stats.to_dict(),
        }
        if self.path is not None:
            out["path"] = str(self.path)
            out["files"] = sorted(self.files)
        return out


def push(
    reference: str,
    *,
    settings: Settings | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> TransferResult:
    """Upload a locally built artifact to the registry its reference names."""
    settings = resolve_settings(settings, **options)
    ref, key = _store_key(reference)
    store = open_store(settings)
    repository = open_repository(ref, settings)
    result = copy_graph(
        store,
        key,
        repository,
        ref.tag if not ref.digest else None,
        concurrency=settings.concurrency,
        progress=progress,
    )
    return TransferResult(str(ref), result.descriptor.digest, result.stats)


def _include_filter(patterns: list[str]):  # noqa: ANN202
    if not patterns:
        return None

    def keep(desc: Descriptor) -> bool:
        path = desc.filepath or desc.annotations.get("org.opencontainers.image.title") or ""
        name = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(name, p) for p in patterns)

    return keep


def _refuse_index(target: Target, reference: str, what: str) -> Descriptor:
    root = target.resolve(reference)
    if root.media_type in INDEX_MEDIA_TYPES:
        raise UsageError(
            f"{what} is an image index, not a model manifest",
            hint="pull one of its manifests by digest",
        )
    return root


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
    MODELPACK_HOME whose path is returned."""
    settings = resolve_settings(settings, **options)
    ref = parse_reference(reference)
    repository = open_repository(ref, settings)
    patterns = list(include)
    if output_dir is not None:
        root = _refuse_index(repository, ref.target, str(ref))
        with DirectoryTarget(output_dir) as directory:
            result = copy_graph(
                repository,
                root.digest,
                directory,
                None,
                concurrency=settings.concurrency,
                progress=progress,
                layer_filter=_include_filter(patterns),
            )
        return TransferResult(
            str(ref), root.digest, result.stats, Path(output_dir), directory.files
        )
    if patterns:
        raise UsageError("--include needs -o DIR (partial pulls are written to a directory)")
    store = open_store(settings)
    key = str(ref)
    root = _refuse_index(repository, ref.target, key)
    with store.using():
        result = copy_graph(
            repository, root.digest, store, key, concurrency=settings.concurrency, progress=progress
        )
        path, files = materialize(store, root, settings)
    return TransferResult(key, root.digest, result.stats, path, files)


def pull(reference: str, output_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> Path:
    """Download a model and return the directory holding its files."""
    result = pull_model(reference, output_dir, **kwargs)
    assert result.path is not None
    return result.path


def model_dir(settings: Settings, digest: str) -> Path:
    alg, _, hexpart = digest.partition(":")
    return settings.models_dir / alg / hexpart


def materialize(store: LayoutStore, root: Descriptor, settings: Settings) -> tuple[Path, list[str]]:
    """The model tree of a stored manifest under MODELPACK_HOME/models, made once."""
    destination = model_dir(settings, root.digest)
    with file_lock(settings.models_dir / ".locks" / f"{root.digest.replace(':', '-')}.lock"):
        if destination.is_dir():
            files = sorted(
                str(p.relative_to(destination)) for p in destination.rglob("*") if p.is_file()
            )
            return destination, files
        with DirectoryTarget(destination, link_from=store) as directory:
            copy_graph(store, root.digest, directory, None, concurrency=settings.concurrency)
        return destination, directory.files


# -- inspect / local store management ---------------------------------------------


@dataclass
class Inspection:
    reference: str
    descriptor: Descriptor
    manifest: Manifest
    config: ModelConfig | None
    location: str  # "local" or "remote"

    def to_dict(self) -> dict[str, Any]:
        layers = []
        for layer in self.manifest.layers:
            entry: dict[str, Any] = {
                "mediaType": layer.media_type,
                "digest": layer.digest,
                "size": layer.size,
            }
            if layer.filepath:
                entry["path"] = layer.filepath
            layers.append(entry)
        return {
            "reference": self.reference,
            "location": self.location,
            "digest": self.descriptor.digest,
            "mediaType": self.descriptor.media_type,
            "artifactType": self.manifest.artifact_type,
            "size": sum(layer.size for layer in self.manifest.layers),
            "manifest": self.manifest.to_dict(),
            "config": self.config.to_dict() if self.config else None,
            "layers": layers,
        }


def _inspect_target(target: Target, reference: str, label: str, location: str) -> Inspection:
    root = _refuse_index(target, reference, label)
    manifest = Manifest.from_dict(json.loads(fetch_bytes(target, root)))
    config = None
    if manifest.config.media_type in MODEL_CONFIG_MEDIA_TYPES:
        try:
            config = ModelConfig.from_dict(json.loads(fetch_bytes(target, manifest.config)))
        except (ValueError, AttributeError) as exc:
            raise IntegrityError(f"{label}: model config is not valid JSON ({exc})") from exc
    return Inspection(label, root, manifest, config, location)


def inspect(
    reference: str, *, remote: bool = False, settings: Settings | None = None, **options: Any
) -> Inspection:
    """Manifest and model config of an artifact in the local store or, with ``remote``, the registry."""
    settings = resolve_settings(settings, **options)
    ref, key = _store_key(reference)
    if remote:
        return _inspect_target(open_repository(ref, settings), ref.target, key, "remote")
    return _inspect_target(open_store(settings), ref.digest or key, key, "local")


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
        try:
            inspection = _inspect_target(store, stored.name, stored.name, "local")
        except (ReferenceNotFoundError, IntegrityError, UsageError):
            continue
        cfg = inspection.config
        models.append(
            LocalModel(
                reference=stored.name,
                digest=stored.descriptor.digest,
                size=sum(layer.size for layer in inspection.manifest.layers),
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
            with file_lock(settings.models_dir / ".locks" / f"{digest.replace(':', '-')}.lock"):
                freed += sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
                remove_tree(tree)
                models += 1
    return PruneResult(blobs, models, freed)
