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

from .endpoints import Endpoint, open_endpoint, registry_of, registry_repository
from .errors import IntegrityError, UsageError
from .inspection import Inspection, inspect_endpoint
from .model.build import BuildResult, BuiltArtifact
from .oci.copy import CopyOptions, CopyResult, CopyStats, copy_graph
from .oci.modelrunner import layer_path
from .oci.pieces import RangedPolicy
from .oci.reference import parse_reference
from .oci.spec import (
    INDEX_MEDIA_TYPES,
    Descriptor,
    LayerFormat,
    MediaTypes,
    layer_format_of,
    rewrite_manifest_bytes,
)
from .progress import Progress
from .registry.client import RegistryRepository
from .settings import Settings
from .signing.cosign import require_signature
from .signing.keys import load_public_key
from .signing.openssf import SIGNATURE_FILENAME, fetch_bundle
from .storage.blobinfo import BlobLocations
from .storage.cache import NodeCache
from .storage.hfcache import hf_mapping, write_hf_cache
from .storage.interrupted import InterruptedPulls
from .storage.store import LayoutStore
from .storage.unpack import DirectoryTarget, interrupted, planned_files


@dataclass
class TransferResult:
    """What a push, pull or copy did: the reference and manifest digest, blob and byte counts
    in ``stats``; for a pull, ``path`` (the model directory) and the ``files`` written."""

    reference: str
    digest: str
    stats: CopyStats
    path: Path | None = None
    files: list[str] = field(default_factory=list)
    # The source digest when the artifact was converted to other media types on the way
    # (its signatures sign that digest, so they were not copied).
    converted_from: str | None = None
    # For a pull: the bytes of the model's files (its layers), as build and inspect count.
    size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "reference": self.reference,
            "digest": self.digest,
            **self.stats.to_dict(),
        }
        if self.converted_from is not None:
            out["convertedFrom"] = self.converted_from
        if self.path is not None:
            out["path"] = str(self.path)
            out["files"] = sorted(self.files)
        if self.size is not None:
            out["size"] = self.size
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
    media_types: str | None = None,
) -> CopyResult:
    dst_repo = registry_repository(dst)
    family = media_types or (
        settings.registry_options(dst_repo.registry).media_types if dst_repo else None
    )
    options = CopyOptions(
        rewrite_root=None
        if family is None
        else lambda data: rewrite_manifest_bytes(data, MediaTypes(family), f"{src.display}"),
        concurrency=settings.concurrency,
        layer_filter=layer_filter,
        src_tag_reference=src.tag_reference,
        dst_tag_reference=dst.tag_reference,
        with_referrers=with_referrers,
        transfer_attempts=settings.retries,
        ranged=_ranged_policy(src, settings),
    )
    if progress is not None:
        options.progress = progress
    src_repo = registry_repository(src)
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


def _ranged_policy(src: Endpoint, settings: Settings) -> RangedPolicy:
    """Ranges from the registry itself (object stores behind it cap each connection); from a
    mirror one request per blob unless MODELPACK_RANGED_MIN asks otherwise."""
    policy = RangedPolicy.of(settings)
    repository = registry_repository(src)
    if repository is not None and repository.mirror_of and not settings.ranged_through_mirrors:
        return RangedPolicy(None, policy.piece_size)
    return policy


def push(reference: str, settings: Settings, progress: Progress | None = None) -> TransferResult:
    src = open_endpoint(f"store:{reference}", settings, reading=True)
    dst = open_endpoint(reference, settings, reading=False)
    return _transfer_result(dst, _copy(src, dst, settings, progress))


def _transfer_result(dst: Endpoint, result: CopyResult) -> TransferResult:
    original = result.rewritten_from
    return TransferResult(
        dst.display,
        result.descriptor.digest,
        result.stats,
        converted_from=original.digest if original is not None else None,
    )


def push_built(
    result: BuildResult, store: LayoutStore, settings: Settings, progress: Progress | None = None
) -> TransferResult:
    """Push what ``build_artifact(keep_raw=False)`` made: weights stream from the sources."""
    source = Endpoint(BuiltArtifact(store, result), result.digest, result.reference)
    return push_from(source, result.reference, settings, progress)


def push_from(
    source: Endpoint, destination: str, settings: Settings, progress: Progress | None = None
) -> TransferResult:
    """Push what a read-only Target holds (a model being built, an image being written) to
    the registry reference ``destination``, without referrers."""
    dst = open_endpoint(destination, settings, reading=False)
    return _transfer_result(dst, _copy(source, dst, settings, progress, with_referrers=False))


def copy(
    source: str,
    destination: str,
    settings: Settings,
    progress: Progress | None = None,
    *,
    media_types: str | None = None,
) -> TransferResult:
    """``media_types`` ("cncf"/"cnai") converts a model's names on the way (a new digest)."""
    # Between two registries the command is about the one it writes to: the
    # environment's credentials go there, the source gets what `docker login` stored.
    src = open_endpoint(source, settings, reading=True, command_registry=registry_of(destination))
    dst = open_endpoint(destination, settings, reading=False)
    return _transfer_result(dst, _copy(src, dst, settings, progress, media_types=media_types))


def _include_filter(
    patterns: list[str], names: dict[str, str]
) -> Callable[[Descriptor], bool] | None:
    """``--include``: the layers whose path (or ``names``' for one naming none) matches."""
    if not patterns:
        return None

    def keep(desc: Descriptor) -> bool:
        path = layer_path(desc, names) or ""
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


# Container image configs: an image is not a model, with or without allow_oci_artifact.
IMAGE_CONFIG_MEDIA_TYPES = (
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
)


def inspect_model(src: Endpoint, allow_oci_artifact: bool = False) -> Inspection:
    """The manifest and model config of what is pulled (a config that is not JSON raises here);
    what is not a model (ModelPack's, or Docker Model Runner's own format) is refused before a
    byte is written."""
    inspection = inspect_endpoint(src, "remote", attached=False)
    found = inspection.manifest.config.media_type
    if inspection.is_model:
        return inspection
    if found in IMAGE_CONFIG_MEDIA_TYPES:
        raise IntegrityError(
            f"{src.display} is a container image (config {found}), not a model",
            hint="pull images with docker, podman or skopeo",
        )
    if not allow_oci_artifact:
        raise IntegrityError(
            f"{src.display} is not a ModelPack model: its config is {found}",
            hint="pass --allow-oci-artifact to write a generic OCI artifact's titled files anyway",
        )
    return inspection


@dataclass
class HFCacheRequest:
    """Also lay the model out in a Hugging Face hub cache (``pull --hf-cache``).

    The repo id comes from the reference and the commit from the manifest digest unless
    ``repo_id`` is given or ``trust_annotations`` lets the artifact's recorded ones count.
    """

    cache_dir: Path
    repo_id: str | None = None
    revision: str | None = None
    trust_annotations: bool = False


def pull(
    reference: str,
    output_dir: str | os.PathLike[str] | None,
    settings: Settings,
    *,
    include: Iterable[str] = (),
    progress: Progress | None = None,
    hf_cache: HFCacheRequest | None = None,
    verify_key: str | os.PathLike[str] | None = None,
    model_signature: bool = False,
    force: bool = False,
    allow_oci_artifact: bool = False,
) -> TransferResult:
    """``force`` replaces files of ``output_dir`` that hold other bytes (else refused);
    ``allow_oci_artifact`` writes the titled files of an artifact that is not a model."""
    src = open_endpoint(reference, settings, reading=True)
    root = _refuse_index(src)
    inspection = inspect_model(src, allow_oci_artifact)
    repository = registry_repository(src)
    if verify_key is not None:
        # Before anything is written: the signature must name exactly this digest,
        # and everything below is pulled by that digest.
        if repository is None:
            raise UsageError("--verify-key needs a registry reference")
        require_signature(repository, root, load_public_key(verify_key), src.display)
    bundle = None
    if model_signature:
        if output_dir is None or repository is None:
            raise UsageError(
                "--model-signature writes DIR/model.sig: it needs -o DIR and a registry reference"
            )
        bundle = fetch_bundle(repository, root)
    patterns = list(include)
    layer_filter = _include_filter(patterns, inspection.layer_names)
    layers = [
        layer for layer in inspection.manifest.layers if not layer_filter or layer_filter(layer)
    ]
    if output_dir is not None:
        if hf_cache is not None:
            raise UsageError("--hf-cache and -o are alternatives: the HF layout lives in the cache")
        journal = InterruptedPulls(settings.home)
        with DirectoryTarget(output_dir, force=force, journal=journal) as directory:
            directory.plan(inspection.manifest)
            directory.check_planned(layers)
            target = Endpoint(directory, "", str(output_dir), tag_reference=lambda tag: "")
            result = _copy(
                src, target, settings, progress, layer_filter=layer_filter, with_referrers=False
            )
            if bundle is not None:
                directory.add_file(SIGNATURE_FILENAME, bundle)
        return TransferResult(
            src.display,
            root.digest,
            result.stats,
            Path(output_dir),
            directory.files,
            size=sum(layer.size for layer in layers),
        )
    planned_files(layers, inspection.layer_names)  # every path checked before a byte is fetched
    key = str(parse_reference(reference.removeprefix("docker://")))
    result, path, files = pull_to_node_cache(
        src, root, key, settings, progress, patterns=patterns, layer_filter=layer_filter
    )
    if hf_cache is not None:
        path = _write_hf_cache(src, inspection, path, files, hf_cache)
    size = sum(layer.size for layer in layers)
    return TransferResult(src.display, root.digest, result.stats, path, files, size=size)


def pull_to_node_cache(
    src: Endpoint,
    root: Descriptor,
    key: str,
    settings: Settings,
    progress: Progress | None = None,
    *,
    patterns: list[str] | None = None,
    layer_filter: Callable[[Descriptor], bool] | None = None,
) -> tuple[CopyResult, Path, list[str]]:
    """Registry -> local store (as ``store:KEY``) -> the model tree in the node cache.

    ``src`` is an opened registry endpoint (``modelpack serve`` opens it with each
    client's own credentials); returns the copy result, the tree and its files.
    """
    patterns = patterns or []
    store = open_endpoint(f"store:{key}", settings, reading=False)
    try:
        result = _copy(src, store, settings, progress, layer_filter=layer_filter)
    except KeyboardInterrupt as exc:
        assert isinstance(store.target, LayoutStore)
        raise interrupted(store.target.partial_bytes(), store.target.ingest_dir) from exc
    path, files = NodeCache(settings).materialize(
        root,
        key,
        source=src.target if patterns else None,
        patterns=patterns,
        layer_filter=layer_filter,
    )
    return result, path, files


def _write_hf_cache(
    src: Endpoint, inspection: Inspection, tree: Path, files: list[str], request: HFCacheRequest
) -> Path:
    assert src.registry_ref is not None
    mapping = hf_mapping(
        src.registry_ref,
        inspection.manifest,
        inspection.config,
        repo_id=request.repo_id,
        revision=request.revision,
        trust_annotations=request.trust_annotations,
    )
    known = {
        path: layer.digest.split(":", 1)[1]
        for layer in inspection.manifest.layers
        if (path := layer_path(layer, inspection.layer_names))
        and layer_format_of(layer.media_type) is LayerFormat.RAW
        and layer.digest.startswith("sha256:")
    }
    return write_hf_cache(tree, files, mapping, request.cache_dir, known)
