"""The public functions: one per CLI command, composed from the modules below.

Every function takes ``settings`` (a :class:`~modelpack.settings.Settings`)
and, for the common cases, the same options as keywords (``home``; for those
that talk to a registry also ``plain_http``, ``insecure``, ``ca_file``,
``concurrency``, ``retries``), falling back to environment variables.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import transfer
from .diagnostics import Check, run_checks
from .dircheck import DirectoryReport, verify_directory
from .display import progress_display
from .endpoints import Endpoint, open_endpoint
from .errors import FileNotFoundInSourceError, IntegrityError, ReferenceNotFoundError, UsageError
from .images import ImageResult, make_image
from .inspection import Inspection, inspect_endpoint
from .model.build import BuildResult, build_artifact, layer_format_for
from .model.metadata import derive_metadata
from .model.overrides import apply_assignments, modelfile_assignments, parse_assignment
from .model.source import classify, open_source
from .model.source.modelfile import apply_modelfile, read_modelfile, render_modelfile
from .oci.reference import DEFAULT_REGISTRY, Reference, parse_reference
from .oci.spec import ANNOTATION_HF_COMMIT, ANNOTATION_HF_REPO_ID, Descriptor, MediaTypes
from .progress import Progress
from .registry.client import RegistryRepository, connect, open_repository
from .registry.credentials import Credentials, erase_credentials, store_credentials
from .settings import Settings, parse_size
from .signing.cosign import SignatureCheck, require_signature, sign_manifest
from .signing.keys import KeyPair, generate_key_pair, load_private_key, load_public_key
from .signing.openssf import attach_bundle, sign_tree
from .storage._fsutil import atomic_write_bytes
from .storage.cache import CacheEntry, NodeCache
from .storage.hfcache import default_hf_cache
from .storage.interrupted import InterruptedPull, InterruptedPulls
from .storage.store import LayoutStore, node_store
from .transfer import TransferResult

PathLike = str | os.PathLike[str]


def _settings(
    settings: Settings | None,
    home: PathLike | None = None,
    plain_http: bool | None = None,
    insecure: bool | None = None,
    ca_file: PathLike | None = None,
    concurrency: int | None = None,
    retries: int | None = None,
) -> Settings:
    """``settings`` (else the environment's) with every keyword the caller passed.

    Each public function lists these keywords itself, so that an IDE completes
    them and ``inspect.signature`` shows them; this is the one place they meet.
    """
    return (settings or Settings()).with_overrides(
        home=home,
        plain_http=plain_http,
        insecure=insecure,
        ca_file=None if ca_file is None else os.fspath(ca_file),
        concurrency=concurrency,
        retries=retries,
    )


ProgressOption = Progress | bool | None


@contextlib.contextmanager
def _progress(progress: ProgressOption, verb: str) -> Iterator[Progress | None]:
    """``True``: bars on a terminal, log lines elsewhere; a Progress: used as is."""
    if progress is True:
        with progress_display(verb) as display:
            yield display
    else:
        yield progress or None


def open_store(settings: Settings) -> LayoutStore:
    return node_store(settings)


def _store_key(reference: str | Reference) -> tuple[Reference, str]:
    ref = reference if isinstance(reference, Reference) else parse_reference(reference)
    return ref, str(ref)


# -- build ------------------------------------------------------------------


def build(
    source: PathLike,
    tag: str,
    *,
    exclude: Iterable[str] = (),
    include: Iterable[str] = (),
    modelfile: PathLike | None = None,
    set_fields: Iterable[str] = (),
    layer_format: str = "raw",
    compress: str = "none",
    hf_repo_id: str | None = None,
    hf_revision: str | None = None,
    media_types: str | None = None,
    push: bool = False,
    allow_unsafe_pickle: bool = False,
    settings: Settings | None = None,
    progress: ProgressOption = None,
    home: PathLike | None = None,
    plain_http: bool | None = None,
    insecure: bool | None = None,
    ca_file: PathLike | None = None,
    concurrency: int | None = None,
    retries: int | None = None,
) -> BuildResult:
    """Package a model as a ModelPack artifact in the local store, tagged ``tag``.

    ``source`` is a directory (an HF cache snapshot too), ``hf://ORG/NAME[@REV]``
    or ``modelscope://ORG/NAME[@REV]``.  ``include`` / ``exclude`` globs pick
    files (and narrow hf:// downloads).  ``modelfile`` (modctl's format)
    decides which files go in and their kinds instead of automatic detection.
    ``set_fields`` are ``config.quantization=awq``-style overrides of the
    derived config.  ``hf_repo_id`` / ``hf_revision`` are recorded so that
    ``pull(..., hf_cache=True)`` lays the model out under that hub repo id.
    ``media_types`` is ``"cncf"`` (the spec's names) or ``"cnai"`` (the names released
    Harbor renders; doc layers are then tar); by default the tag's registry's
    ``media_types`` from the registries config, else cncf.  ``push`` sends it straight to the registry (``result.pushed``): weights
    stream from the source files, the local store keeps no copy of them.
    Pickle-based files (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl`` ...) that would run
    code when loaded raise ``modelpack.errors.UnsafePickleError`` (exit 5) unless
    ``allow_unsafe_pickle``; every scan is recorded on its layer (``inspect`` shows it).
    """
    settings = _settings(settings, home, plain_http, insecure, ca_file, concurrency, retries)
    ref, key = _store_key(tag)
    if ref.digest:
        raise UsageError(f"build -t takes a tag, not a digest: {tag}")
    fmt = layer_format_for(layer_format, compress)
    family = _media_types(media_types or settings.registry_options(ref.registry).media_types)
    assignments = [parse_assignment(text) for text in set_fields]
    model_source = open_source(os.fspath(source), exclude, include, cache_root=settings.home)
    kind_overrides = None
    if modelfile is not None:
        parsed = read_modelfile(modelfile)
        model_source.files, kind_overrides = apply_modelfile(parsed, model_source.files)
        assignments = modelfile_assignments(parsed.values) + assignments
    if hf_repo_id:
        model_source.annotations[ANNOTATION_HF_REPO_ID] = hf_repo_id
    if hf_revision:
        model_source.annotations[ANNOTATION_HF_COMMIT] = hf_revision
    store = open_store(settings)
    with _progress(progress, "build") as shown:
        result = build_artifact(
            model_source,
            store,
            key,
            layer_format=fmt,
            kind_overrides=kind_overrides,
            config_overrides=(lambda config: apply_assignments(config, assignments))
            if assignments
            else None,
            concurrency=settings.concurrency,
            progress=shown,
            keep_raw=not push,
            media_types=family,
            allow_unsafe_pickle=allow_unsafe_pickle,
        )
    if ref.registry == DEFAULT_REGISTRY and not str(tag).startswith(
        ("docker.io/", "index.docker.io/")
    ):
        result.warnings.append(
            f"{tag} names no registry host, so it is {key} on Docker Hub; "
            "write HOST/NAME:TAG (e.g. 127.0.0.1:5000/team/bert:v1) for another registry"
        )
    if push:
        with _progress(progress, "push") as shown, store.using():
            result.pushed = transfer.push_built(result, store, settings, shown)
    return result


def _media_types(value: str | None) -> MediaTypes:
    try:
        return MediaTypes(value or "cncf")
    except ValueError:
        raise UsageError(f"--media-types must be cncf or cnai, not {value!r}") from None


def generate_modelfile(
    directory: PathLike,
    *,
    exclude: Iterable[str] = (),
    output: PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a Modelfile for ``directory`` that modctl and modelpack both build from."""
    source = open_source(os.fspath(directory), exclude)
    kinds = {f.relpath: classify(f.relpath, f.size).kind for f in source.files}
    derived = derive_metadata(source.files, kinds, name=source.name)
    values = {
        command: value
        for command, value in {
            "NAME": derived.descriptor.name,
            "ARCH": derived.config.architecture,
            "FAMILY": derived.descriptor.family,
            "FORMAT": derived.config.format,
            "PARAMSIZE": derived.config.param_size,
            "PRECISION": derived.config.precision,
            "QUANTIZATION": derived.config.quantization,
        }.items()
        if value
    }
    target = Path(output) if output is not None else Path(directory) / "Modelfile"
    if target.exists() and not overwrite:
        raise UsageError(f"{target} already exists", hint="pass --force to replace it")
    atomic_write_bytes(target, render_modelfile(values, kinds).encode("utf-8"))
    return target


# -- push / pull / copy -----------------------------------------------------------


def push(
    reference: str,
    *,
    settings: Settings | None = None,
    progress: ProgressOption = None,
    home: PathLike | None = None,
    plain_http: bool | None = None,
    insecure: bool | None = None,
    ca_file: PathLike | None = None,
    concurrency: int | None = None,
    retries: int | None = None,
) -> TransferResult:
    """Upload a locally built artifact (and its signatures) to the registry its reference names."""
    with _progress(progress, "push") as shown:
        return transfer.push(
            reference,
            _settings(settings, home, plain_http, insecure, ca_file, concurrency, retries),
            shown,
        )


def pull_model(
    reference: str,
    output_dir: PathLike | None = None,
    *,
    include: Iterable[str] = (),
    hf_cache: bool | PathLike = False,
    hf_repo_id: str | None = None,
    hf_revision: str | None = None,
    hf_trust_annotations: bool = False,
    verify_key: PathLike | None = None,
    model_signature: bool = False,
    force: bool = False,
    allow_oci_artifact: bool = False,
    settings: Settings | None = None,
    progress: ProgressOption = None,
    home: PathLike | None = None,
    plain_http: bool | None = None,
    insecure: bool | None = None,
    ca_file: PathLike | None = None,
    concurrency: int | None = None,
    retries: int | None = None,
) -> TransferResult:
    """Download a model, verified, and say where it is.

    With ``output_dir`` the files land there exactly as in the source
    repository.  Without it they go to the node cache (MODELPACK_HOME): one
    copy per node, safe for many concurrent callers, resumed after a crash,
    and ``path`` is the model's directory there.  ``include`` globs fetch only
    matching files.  ``hf_cache`` (True for the default HF cache, or a path)
    also lays the model out as the Hugging Face hub cache does and ``path`` is
    the snapshot; its repo id comes from the reference unless ``hf_repo_id``
    names one or ``hf_trust_annotations`` takes the repo id and commit the
    artifact recorded at build; ``hf_revision`` adds a revision name.
    ``verify_key`` (a public key) refuses a model without a valid signature by
    it before any file is written; ``model_signature`` also writes its OpenSSF
    model signature as ``output_dir/model.sig``.  A file already in
    ``output_dir`` with other bytes is refused (DestinationConflictError)
    unless ``force``.  An artifact whose config is not a ModelPack config is
    refused unless ``allow_oci_artifact`` (its titled files are written then;
    container images never).  Mirrors configured for the registry are tried first.
    """
    settings = _settings(settings, home, plain_http, insecure, ca_file, concurrency, retries)
    request = None
    if hf_cache is not False:
        cache_dir = default_hf_cache() if hf_cache is True else Path(hf_cache).expanduser()
        request = transfer.HFCacheRequest(cache_dir, hf_repo_id, hf_revision, hf_trust_annotations)
    with _progress(progress, "pull") as shown:
        return transfer.pull(
            reference,
            output_dir,
            settings,
            include=include,
            progress=shown,
            hf_cache=request,
            verify_key=verify_key,
            model_signature=model_signature,
            force=force,
            allow_oci_artifact=allow_oci_artifact,
        )


def pull(
    reference: str,
    output_dir: PathLike | None = None,
    *,
    include: Iterable[str] = (),
    hf_cache: bool | PathLike = False,
    hf_repo_id: str | None = None,
    hf_revision: str | None = None,
    hf_trust_annotations: bool = False,
    verify_key: PathLike | None = None,
    model_signature: bool = False,
    force: bool = False,
    allow_oci_artifact: bool = False,
    settings: Settings | None = None,
    progress: ProgressOption = None,
    home: PathLike | None = None,
    plain_http: bool | None = None,
    insecure: bool | None = None,
    ca_file: PathLike | None = None,
    concurrency: int | None = None,
    retries: int | None = None,
) -> Path:
    """Download a model and return the directory holding its files.

    The keywords are ``pull_model()``'s; for example
    ``modelpack.pull("reg/ns/model:v1")`` in every worker of a training job
    downloads once per node and returns the same cached directory to all.
    """
    settings = _settings(settings, home, plain_http, insecure, ca_file, concurrency, retries)
    result = pull_model(
        reference,
        output_dir,
        include=include,
        hf_cache=hf_cache,
        hf_repo_id=hf_repo_id,
        hf_revision=hf_revision,
        hf_trust_annotations=hf_trust_annotations,
        verify_key=verify_key,
        model_signature=model_signature,
        force=force,
        allow_oci_artifact=allow_oci_artifact,
        settings=settings,
        progress=progress,
    )
    assert result.path is not None
    return result.path


def copy(
    source: str,
    destination: str,
    *,
    media_types: str | None = None,
    settings: Settings | None = None,
    progress: ProgressOption = None,
    home: PathLike | None = None,
    plain_http: bool | None = None,
    insecure: bool | None = None,
    ca_file: PathLike | None = None,
    concurrency: int | None = None,
    retries: int | None = None,
) -> TransferResult:
    """Copy an artifact with its signatures and other referrers between registries,
    ``oci:DIR[:TAG]`` layouts and the local store (``store:REF``).

    ``media_types`` (``"cncf"`` or ``"cnai"``; by default the destination registry's
    ``media_types`` setting) converts a model to the other family's names on the way: the
    blobs are the same, the manifest and its digest are new, and signatures (which name
    the old digest) are not copied (``result.converted_from`` is the old digest).
    """
    family = None if media_types is None else _media_types(media_types).value
    with _progress(progress, "copy") as shown:
        return transfer.copy(
            source,
            destination,
            _settings(settings, home, plain_http, insecure, ca_file, concurrency, retries),
            shown,
            media_types=family,
        )


def image(
    source: str,
    image_ref: str,
    *,
    modelcar: bool = False,
    platform: str | None = None,
    busybox: PathLike | None = None,
    convert_raw: bool = False,
    modelcar_layout: str | None = None,
    settings: Settings | None = None,
    progress: ProgressOption = None,
    home: PathLike | None = None,
    plain_http: bool | None = None,
    insecure: bool | None = None,
    ca_file: PathLike | None = None,
    concurrency: int | None = None,
    retries: int | None = None,
) -> ImageResult:
    """Push ``image_ref``, an OCI image of the model ``source`` for Kubernetes image volumes
    (files at the image root) or, with ``modelcar``, a KServe modelcar (also under
    ``/models``, with a static busybox: ``busybox``, default ``/bin/busybox``).

    The model's tar layers are the image's layers (no layer byte added); raw layers are
    refused (UsageError) unless ``convert_raw``, which adds a tar copy of each (their size
    once more in the registry); ``build(layer_format="tar")`` avoids the copy. ``platform``
    (``OS/ARCH[/VARIANT]``) defaults to linux and the busybox's architecture (amd64 without).
    ``modelcar_layout``: ``"links"`` (the default: ``/models`` holds symlinks into the model's
    layers, no byte added, read by KServe's modelcar sidecar only) or ``"files"`` (``/models``
    holds a copy of each file and the model's layers are left out: the model's size again in
    the registry, and KServe's storage initializer, ``oci+fetch://`` and ``oci+native://``
    read it too).
    """
    with _progress(progress, "copy") as shown:
        return make_image(
            source,
            image_ref,
            _settings(settings, home, plain_http, insecure, ca_file, concurrency, retries),
            modelcar=modelcar,
            platform=platform,
            busybox=busybox,
            convert_raw=convert_raw,
            modelcar_layout=modelcar_layout,
            progress=shown,
        )


def login(
    host: str,
    username: str,
    password: str,
    *,
    settings: Settings | None = None,
    home: PathLike | None = None,
    plain_http: bool | None = None,
    insecure: bool | None = None,
    ca_file: PathLike | None = None,
    concurrency: int | None = None,
    retries: int | None = None,
) -> str:
    """Check credentials against ``host`` and store them as ``docker login`` does."""
    settings = _settings(settings, home, plain_http, insecure, ca_file, concurrency, retries)
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


def doctor(
    host: str | None = None,
    *,
    settings: Settings | None = None,
    home: PathLike | None = None,
    plain_http: bool | None = None,
    insecure: bool | None = None,
    ca_file: PathLike | None = None,
    concurrency: int | None = None,
    retries: int | None = None,
) -> list[Check]:
    """Check the store, node cache, config and (with ``host``) the registry's
    reachability, TLS and authentication; each failed check says how to fix it."""
    return run_checks(
        _settings(settings, home, plain_http, insecure, ca_file, concurrency, retries), host
    )


# -- inspect / local store management ---------------------------------------------


def list_tags(
    repository: str,
    *,
    include_companions: bool = False,
    settings: Settings | None = None,
    home: PathLike | None = None,
    plain_http: bool | None = None,
    insecure: bool | None = None,
    ca_file: PathLike | None = None,
    concurrency: int | None = None,
    retries: int | None = None,
) -> list[str]:
    """The tags of ``repository`` (``HOST/NAME``) in its registry, as ``crane ls`` and
    ``oras repo tags`` list them; the ``sha256-<hex>.sig``-style tags that hold signatures
    and referrer indexes only with ``include_companions``."""
    settings = _settings(settings, home, plain_http, insecure, ca_file, concurrency, retries)
    ref = parse_reference(repository)
    if ref.digest:
        raise UsageError(f"tags takes a repository, not a digest: {repository}")
    repository = open_repository(ref, settings)
    return repository.list_tags() if include_companions else repository.user_tags()


def inspect(
    reference: str,
    *,
    remote: bool = False,
    settings: Settings | None = None,
    home: PathLike | None = None,
    plain_http: bool | None = None,
    insecure: bool | None = None,
    ca_file: PathLike | None = None,
    concurrency: int | None = None,
    retries: int | None = None,
) -> Inspection:
    """Manifest, model config, referrers and signatures of an artifact in the local
    store or, with ``remote``, the registry (through its mirrors); layers are not read."""
    settings = _settings(settings, home, plain_http, insecure, ca_file, concurrency, retries)
    if remote:
        return inspect_endpoint(open_endpoint(reference, settings, reading=True), "remote")
    _, key = _store_key(reference)
    inspection = inspect_endpoint(open_endpoint(f"store:{key}", settings, reading=True), "local")
    inspection.reference = key
    return inspection


@dataclass
class LocalModel:
    """One tagged artifact in the local store, as ``modelpack ls`` lists it."""

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


def list_models(
    *,
    settings: Settings | None = None,
    home: PathLike | None = None,
) -> list[LocalModel]:
    """Every tagged artifact in the local store."""
    settings = _settings(settings, home)
    store = open_store(settings)
    models = []
    for stored in store.refs():
        endpoint = Endpoint(store, stored.name, stored.name)
        try:
            inspection = inspect_endpoint(endpoint, "local", attached=False)
        except (ReferenceNotFoundError, IntegrityError, UsageError):
            continue
        cfg, docker = inspection.config, inspection.docker_config
        models.append(
            LocalModel(
                reference=stored.name,
                digest=stored.descriptor.digest,
                size=inspection.size,
                created=cfg.descriptor.created_at if cfg else docker and docker.created,
                name=cfg.descriptor.name if cfg else None,
                format=cfg.config.format if cfg else docker and docker.format,
                param_size=cfg.config.param_size if cfg else docker and docker.parameters,
            )
        )
    return models


def tag(
    source: str,
    target: str,
    *,
    settings: Settings | None = None,
    home: PathLike | None = None,
) -> Descriptor:
    """Give a stored artifact another name (no bytes are copied)."""
    settings = _settings(settings, home)
    store = open_store(settings)
    src_ref, src_key = _store_key(source)
    dst_ref, dst_key = _store_key(target)
    if dst_ref.digest:
        raise UsageError(f"tag target must be a tag, not a digest: {target}")
    desc = store.resolve(src_ref.digest or src_key)
    store.tag(desc, dst_key)
    return desc


def remove(
    reference: str,
    *,
    settings: Settings | None = None,
    home: PathLike | None = None,
) -> Descriptor:
    """Untag an artifact in the local store; ``prune`` frees the bytes."""
    settings = _settings(settings, home)
    _, key = _store_key(reference)
    return open_store(settings).untag(key)


@dataclass
class PruneResult:
    """What ``prune()`` removed from the local store and the node cache, which staging
    directories of interrupted pulls it cleared, and how many bytes that freed."""

    blobs_removed: int
    models_removed: int
    bytes_freed: int
    interrupted_removed: list[InterruptedPull] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "blobsRemoved": self.blobs_removed,
            "modelsRemoved": self.models_removed,
            "interruptedPullsRemoved": [p.to_dict() for p in self.interrupted_removed],
            "bytesFreed": self.bytes_freed,
        }


def prune(
    *,
    settings: Settings | None = None,
    home: PathLike | None = None,
) -> PruneResult:
    """Delete blobs and model trees that no tag in the local store refers to, and the
    downloads interrupted pulls into ``-o DIR`` kept for resuming (not a running pull's)."""
    settings = _settings(settings, home)
    cache = NodeCache(settings)
    blobs, freed = cache.store.prune()
    models, tree_bytes = cache.prune_untagged()
    staging = InterruptedPulls(settings.home).clear()
    return PruneResult(blobs, models, freed + tree_bytes + sum(p.size for p in staging), staging)


# -- node cache -------------------------------------------------------------------


def cache_list(
    *,
    settings: Settings | None = None,
    home: PathLike | None = None,
) -> list[CacheEntry]:
    """Model trees in the node cache, most recently used first."""
    return NodeCache(_settings(settings, home)).entries()


@dataclass
class CachePruneResult:
    """What ``cache_prune()`` evicted, what it kept because it is in use, and the size after."""

    removed: list[CacheEntry]
    in_use: list[CacheEntry]
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed": [e.to_dict() for e in self.removed],
            "inUse": [e.to_dict() for e in self.in_use],
            "size": self.size,
        }


def cache_prune(
    max_size: int | str,
    *,
    settings: Settings | None = None,
    home: PathLike | None = None,
) -> CachePruneResult:
    """Evict least recently used models until the cache fits ``max_size`` (``"200G"``);
    a model being pulled or held with ``use_model()`` is never removed."""
    limit = parse_size(max_size, "--max-size")
    removed, busy, size = NodeCache(_settings(settings, home)).prune(limit)
    return CachePruneResult(removed, busy, size)


def cache_remove(
    reference: str,
    *,
    settings: Settings | None = None,
    home: PathLike | None = None,
) -> list[CacheEntry]:
    """Remove a model from the node cache (its tree, tag and blobs nothing else uses)."""
    _, key = _store_key(reference)
    removed = NodeCache(_settings(settings, home)).remove(key)
    if not removed:
        raise ReferenceNotFoundError(
            f"{key} is not in the node cache", hint="`modelpack cache ls` lists it"
        )
    return removed


@contextlib.contextmanager
def use_model(
    reference: str,
    *,
    include: Iterable[str] = (),
    verify_key: PathLike | None = None,
    settings: Settings | None = None,
    progress: ProgressOption = None,
    home: PathLike | None = None,
    plain_http: bool | None = None,
    insecure: bool | None = None,
    ca_file: PathLike | None = None,
    concurrency: int | None = None,
    retries: int | None = None,
) -> Iterator[Path]:
    """Pull (if needed) into the node cache and hold a model for the ``with`` body:
    ``cache prune`` will not remove it meanwhile.

        with modelpack.use_model("reg/ns/model:v1") as path:
            train(path)
    """
    settings = _settings(settings, home, plain_http, insecure, ca_file, concurrency, retries)
    cache = NodeCache(settings)
    while True:
        result = pull_model(
            reference, include=include, verify_key=verify_key, settings=settings, progress=progress
        )
        assert result.path is not None
        with cache.use(result.digest, include):
            if cache.ready(result.digest, include):  # not pruned or changed since the pull
                yield result.path
                return


def verify_dir(
    reference: str,
    directory: PathLike,
    *,
    settings: Settings | None = None,
    home: PathLike | None = None,
    plain_http: bool | None = None,
    insecure: bool | None = None,
    ca_file: PathLike | None = None,
    concurrency: int | None = None,
    retries: int | None = None,
) -> DirectoryReport:
    """Re-hash an unpacked model against REF's manifest (local store first, else the
    registry); IntegrityError names the files that are missing or differ."""
    settings = _settings(settings, home, plain_http, insecure, ca_file, concurrency, retries)
    _, key = _store_key(reference)
    try:
        endpoint = open_endpoint(f"store:{key}", settings, reading=True)
        endpoint.target.resolve(endpoint.reference)
    except ReferenceNotFoundError:
        endpoint = open_endpoint(reference, settings, reading=True)
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundInSourceError(f"{path} is not a directory")
    report = verify_directory(endpoint, path)
    if not report.ok:
        problems = [f"{p} (differs)" for p in report.different] + [
            f"{p} (missing)" for p in report.missing
        ]
        shown = ", ".join(problems[:5]) + (
            f" and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise IntegrityError(f"{path} does not match {key}: {shown}")
    return report


# -- signing ----------------------------------------------------------------------


def keygen(
    prefix: PathLike = "modelpack",
    *,
    password: str | None = None,
    algorithm: str = "ecdsa-p256",
    overwrite: bool = False,
) -> KeyPair:
    """Write PREFIX.key and PREFIX.pub; the private key is encrypted when ``password`` is given."""
    return generate_key_pair(prefix, password, algorithm=algorithm, overwrite=overwrite)


@dataclass
class SignResult:
    reference: str
    digest: str
    key_id: str
    model_signature: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "keyId": self.key_id,
            "modelSignature": self.model_signature,
        }


def sign(
    reference: str,
    key: PathLike,
    *,
    password: str | None = None,
    model_signing: bool = False,
    settings: Settings | None = None,
    home: PathLike | None = None,
    plain_http: bool | None = None,
    insecure: bool | None = None,
    ca_file: PathLike | None = None,
    concurrency: int | None = None,
    retries: int | None = None,
) -> SignResult:
    """Sign the artifact REF names in its registry, cosign-compatibly (the
    ``sha256-<hex>.sig`` tag and an OCI referrer); with ``model_signing`` also
    attach an OpenSSF model signature of its files."""
    settings = _settings(settings, home, plain_http, insecure, ca_file, concurrency, retries)
    private = load_private_key(key, password)
    ref = parse_reference(reference)
    repository = open_repository(ref, settings)
    subject = repository.resolve(ref.target)
    key_name = sign_manifest(repository, subject, private)
    if model_signing:
        tree = transfer.pull(f"{ref.name}@{subject.digest}", None, settings).path
        assert tree is not None
        attach_bundle(repository, subject, sign_tree(tree, key, password))
    return SignResult(str(ref), subject.digest, key_name, model_signing)


def verify(
    reference: str,
    key: PathLike,
    *,
    settings: Settings | None = None,
    home: PathLike | None = None,
    plain_http: bool | None = None,
    insecure: bool | None = None,
    ca_file: PathLike | None = None,
    concurrency: int | None = None,
    retries: int | None = None,
) -> SignatureCheck:
    """Check that REF's current manifest carries a valid signature by ``key``
    (the public key); IntegrityError (exit 5) otherwise."""
    settings = _settings(settings, home, plain_http, insecure, ca_file, concurrency, retries)
    public = load_public_key(key)
    endpoint = open_endpoint(reference, settings, reading=True)
    repository = endpoint.target
    assert isinstance(repository, RegistryRepository) and endpoint.resolved is not None
    return require_signature(repository, endpoint.resolved, public, endpoint.display)
