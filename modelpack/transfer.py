"""Moving artifacts: push, pull and copy, each one graph copy between endpoints.

What is decided here and nowhere else: which endpoint is the source and
which the destination, which repositories a blob may be mounted from, which
locks a local store is held under, and where blobs were seen (for later
mounts).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .blobinfo import BlobLocations
from .copy import CopyOptions, CopyResult, CopyStats, copy_graph
from .endpoints import Endpoint, open_endpoint, registry_repository
from .errors import UsageError
from .locks import file_lock
from .progress import Progress
from .reference import parse_reference
from .registry import RegistryRepository
from .settings import Settings
from .spec import INDEX_MEDIA_TYPES, Descriptor
from .store import LayoutStore
from .unpack import DirectoryTarget


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


def blob_locations(settings: Settings) -> BlobLocations:
    return BlobLocations(settings.home / "blob-locations.sqlite")


def _mount_sources(
    settings: Settings, dst: RegistryRepository, preferred: list[str]
) -> Callable[[Descriptor], list[str]]:
    known = blob_locations(settings)

    def sources(desc: Descriptor) -> list[str]:
        candidates = preferred + known.repositories(desc.digest, dst.registry, exclude=dst.name)
        return list(dict.fromkeys(c for c in candidates if c != dst.name))

    return sources


def _remember(settings: Settings, endpoint: Endpoint, result: CopyResult) -> None:
    repository = registry_repository(endpoint)
    if repository is not None and result.digests:
        blob_locations(settings).record(repository.registry, repository.name, result.digests)


def _holding(endpoint: Endpoint) -> contextlib.AbstractContextManager[None]:
    """A store being written must not be pruned meanwhile."""
    if isinstance(endpoint.target, LayoutStore):
        return endpoint.target.using()
    return contextlib.nullcontext()


def _copy(
    src: Endpoint,
    dst: Endpoint,
    settings: Settings,
    progress: Progress | None,
    *,
    layer_filter: Callable[[Descriptor], bool] | None = None,
    with_referrers: bool = True,
) -> CopyResult:
    options = CopyOptions(
        concurrency=settings.concurrency,
        layer_filter=layer_filter,
        src_tag_reference=src.tag_reference,
        dst_tag_reference=dst.tag_reference,
        with_referrers=with_referrers,
        transfer_attempts=settings.retries,
    )
    if progress is not None:
        options.progress = progress
    src_repo, dst_repo = registry_repository(src), registry_repository(dst)
    if dst_repo is not None:
        same_registry = src_repo is not None and src_repo.registry == dst_repo.registry
        options.mount_sources = _mount_sources(
            settings, dst_repo, [src_repo.name] if same_registry and src_repo else []
        )
    with _holding(dst):
        result = copy_graph(src.target, src.reference, dst.target, dst.tag, options)
    _remember(settings, src, result)
    _remember(settings, dst, result)
    return result


def push(reference: str, settings: Settings, progress: Progress | None = None) -> TransferResult:
    src = open_endpoint(f"store:{reference}", settings, reading=True)
    dst = open_endpoint(reference, settings, reading=False)
    result = _copy(src, dst, settings, progress)
    return TransferResult(dst.display, result.descriptor.digest, result.stats)


def copy(
    source: str, destination: str, settings: Settings, progress: Progress | None = None
) -> TransferResult:
    src = open_endpoint(source, settings, reading=True)
    dst = open_endpoint(destination, settings, reading=False)
    result = _copy(src, dst, settings, progress)
    return TransferResult(dst.display, result.descriptor.digest, result.stats)


def _include_filter(patterns: list[str]) -> Callable[[Descriptor], bool] | None:
    if not patterns:
        return None

    def keep(desc: Descriptor) -> bool:
        path = desc.filepath or desc.annotations.get("org.opencontainers.image.title") or ""
        name = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(name, p) for p in patterns)

    return keep


def _refuse_index(endpoint: Endpoint) -> Descriptor:
    root = endpoint.resolved or endpoint.target.resolve(endpoint.reference)
    if root.media_type in INDEX_MEDIA_TYPES:
        raise UsageError(
            f"{endpoint.display} is an image index, not a model manifest",
            hint="pull one of its manifests by digest",
        )
    return root


def pull(
    reference: str,
    output_dir: str | os.PathLike[str] | None,
    settings: Settings,
    *,
    include: Iterable[str] = (),
    progress: Progress | None = None,
) -> TransferResult:
    src = open_endpoint(reference, settings, reading=True)
    root = _refuse_index(src)
    patterns = list(include)
    if output_dir is not None:
        with DirectoryTarget(output_dir) as directory:
            target = Endpoint(directory, "", str(output_dir), tag_reference=lambda tag: "")
            result = _copy(
                src,
                target,
                settings,
                progress,
                layer_filter=_include_filter(patterns),
                with_referrers=False,
            )
        return TransferResult(
            src.display, root.digest, result.stats, Path(output_dir), directory.files
        )
    if patterns:
        raise UsageError("--include needs -o DIR (partial pulls are written to a directory)")
    key = str(parse_reference(reference.removeprefix("docker://")))
    store = open_endpoint(f"store:{key}", settings, reading=False)
    result = _copy(src, store, settings, progress)
    path, files = materialize(store.target, root, settings)  # type: ignore[arg-type]
    return TransferResult(src.display, root.digest, result.stats, path, files)


def model_dir(settings: Settings, digest: str) -> Path:
    alg, _, hexpart = digest.partition(":")
    return settings.models_dir / alg / hexpart


def model_lock(settings: Settings, digest: str) -> contextlib.AbstractContextManager[None]:
    return file_lock(settings.models_dir / ".locks" / f"{digest.replace(':', '-')}.lock")


def materialize(store: LayoutStore, root: Descriptor, settings: Settings) -> tuple[Path, list[str]]:
    """The model tree of a stored manifest under MODELPACK_HOME/models, made once."""
    destination = model_dir(settings, root.digest)
    with store.using(), model_lock(settings, root.digest):
        if destination.is_dir():
            files = sorted(
                str(p.relative_to(destination)) for p in destination.rglob("*") if p.is_file()
            )
            return destination, files
        with DirectoryTarget(destination, link_from=store) as directory:
            copy_graph(
                store, root.digest, directory, None, CopyOptions(concurrency=settings.concurrency)
            )
        return destination, directory.files
