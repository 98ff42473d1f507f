"""Turn a model directory into a ModelPack artifact in a local store.

One layer per file.  Raw layers (the default) are the file's own bytes: the
file is read once to hash it and then linked or cloned into the store, so
no weight byte is written twice when source and store share a filesystem.
Tar layers are written in one pass that hashes the uncompressed tar (the
diffID) and the blob at the same time.  Everything that could vary between
two machines (tar mtimes, owners, createdAt) is pinned, and with
SOURCE_DATE_EPOCH set the manifest digest depends on file contents alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, BinaryIO

import zstandard

from ..errors import UsageError
from ..oci.digests import CHUNK_SIZE, sha256_bytes
from ..oci.spec import (
    ANNOTATION_FILE_METADATA,
    ANNOTATION_FILEPATH,
    ANNOTATION_MEDIATYPE_UNTESTED,
    ANNOTATION_PICKLE_SCAN,
    ANNOTATION_TITLE,
    MEDIA_TYPE_MODEL_CONFIG,
    Descriptor,
    FileMetadata,
    LayerFormat,
    LayerKind,
    Manifest,
    MediaTypes,
    ModelConfig,
    convert_manifest,
    layer_media_type,
    parse_layer_media_type,
)
from ..oci.target import ReadOnlyTarget, push_bytes
from ..progress import NullProgress, Progress, ReportingReader
from ..schemas import MODEL_CONFIG, validate
from ..storage._fsutil import Placement
from ..storage.store import BlobWriter, LayoutStore
from .metadata import derive_metadata, rfc3339, source_date_epoch
from .pickles import PickleScan, scan_files
from .source import ModelSource, SourceFile, classify

GZIP_LEVEL = 6
ZSTD_LEVEL = 3


class Compression(StrEnum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


def layer_format_for(layer_format: str, compress: str) -> LayerFormat:
    """Map the CLI's ``--layer-format`` / ``--compress`` pair to one layer format."""
    try:
        compression = Compression(compress)
    except ValueError:
        raise UsageError(f"--compress must be none, gzip or zstd, not {compress!r}") from None
    if layer_format == "raw":
        if compression is not Compression.NONE:
            raise UsageError(
                "--compress needs --layer-format tar (raw layers are never compressed)"
            )
        return LayerFormat.RAW
    if layer_format == "tar":
        return {
            Compression.NONE: LayerFormat.TAR,
            Compression.GZIP: LayerFormat.TAR_GZIP,
            Compression.ZSTD: LayerFormat.TAR_ZSTD,
        }[compression]
    raise UsageError(f"--layer-format must be raw or tar, not {layer_format!r}")


@dataclass(frozen=True)
class PlannedLayer:
    file: SourceFile
    kind: LayerKind
    untested: bool
    media_type: str

    @property
    def layer_format(self) -> LayerFormat:
        parsed = parse_layer_media_type(self.media_type)
        assert parsed is not None  # planned from layer_media_type()
        return parsed[1]


@dataclass
class BuiltLayer:
    plan: PlannedLayer
    descriptor: Descriptor
    diff_id: str
    placement: Placement | None  # None: written by us (tar) or already present


@dataclass
class BuildResult:
    """What ``build()`` made: the manifest and its digest, the derived model config and one
    entry per layer; with ``push=True``, ``pushed`` holds the push's ``TransferResult``."""

    reference: str
    manifest_descriptor: Descriptor
    manifest: Manifest
    config: ModelConfig
    layers: list[BuiltLayer] = field(default_factory=list)
    # e.g. a README whose front matter was ignored
    warnings: list[str] = field(default_factory=list)
    pushed: Any = None  # a TransferResult, when built with push=True
    pickle_scans: dict[str, PickleScan] = field(default_factory=dict)  # by path

    @property
    def digest(self) -> str:
        return self.manifest_descriptor.digest

    def to_dict(self) -> dict[str, Any]:
        layers = []
        for layer in self.layers:
            entry: dict[str, Any] = {
                "path": layer.plan.file.relpath,
                "mediaType": layer.descriptor.media_type,
                "digest": layer.descriptor.digest,
                "size": layer.descriptor.size,
                "untested": layer.plan.untested,
            }
            if layer.placement is not None:
                entry["placement"] = layer.placement.value
            if (scan := self.pickle_scans.get(layer.plan.file.relpath)) is not None:
                entry["pickleScan"] = scan.to_dict()
            layers.append(entry)
        return {
            "reference": self.reference,
            "digest": self.digest,
            "mediaType": self.manifest.media_type,
            "artifactType": self.manifest.artifact_type,
            "size": sum(layer.descriptor.size for layer in self.layers),
            "config": self.config.to_dict(),
            "layers": layers,
            "warnings": list(self.warnings),
        } | ({"push": self.pushed.to_dict()} if self.pushed is not None else {})


def plan_layers(
    source: ModelSource,
    layer_format: LayerFormat,
    kind_overrides: dict[str, LayerKind] | None = None,
    *,
    tar_docs: bool = False,
) -> list[PlannedLayer]:
    """Classify every file; ``kind_overrides`` (from a Modelfile) wins over detection.
    ``tar_docs`` makes doc layers tar even in a raw build (Harbor renders README and
    LICENSE only from tar doc layers)."""
    overrides = kind_overrides or {}
    planned = []
    for f in source.files:
        if f.relpath in overrides:
            kind, untested = overrides[f.relpath], False
        else:
            found = classify(f.relpath, f.size)
            kind, untested = found.kind, found.untested
        fmt = (
            LayerFormat.TAR
            if tar_docs and kind is LayerKind.DOC and not layer_format.is_tar
            else layer_format
        )
        planned.append(PlannedLayer(f, kind, untested, layer_media_type(kind, fmt)))
    return planned


def _normalized_mode(mode: int) -> int:
    return 0o755 if mode & 0o111 else 0o644


def _layer_annotations(plan: PlannedLayer, mtime: float) -> dict[str, str]:
    f = plan.file
    metadata = FileMetadata(
        name=f.relpath.rsplit("/", 1)[-1],
        mode=_normalized_mode(f.mode),
        uid=0,
        gid=0,
        size=f.size,
        mtime=rfc3339(mtime),
        typeflag=0,
    )
    annotations = {
        ANNOTATION_FILEPATH: f.relpath,
        ANNOTATION_FILE_METADATA: metadata.to_json(),
        ANNOTATION_TITLE: f.relpath,
    }
    if plan.untested:
        annotations[ANNOTATION_MEDIATYPE_UNTESTED] = "true"
    return annotations


def layer_annotations(plan: PlannedLayer, mtime: float) -> dict[str, str]:
    """The annotations ``build`` gives a layer (path, file metadata, title): for layers
    made elsewhere from bytes already in a registry (the gateway's hub commits)."""
    return _layer_annotations(plan, mtime)


class _HashingSink:
    """A write-only file object that hashes what passes and forwards it."""

    def __init__(self, downstream: BlobWriter | BinaryIO) -> None:
        self._downstream = downstream
        self.hasher = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self._downstream.write(data)
        return len(data)

    def flush(self) -> None:
        pass


def _copy_with_progress(
    src: BinaryIO, write: Callable[[bytes], object], on_bytes: Callable[[int], None]
) -> int:
    total = 0
    while chunk := src.read(CHUNK_SIZE):
        write(chunk)
        on_bytes(len(chunk))
        total += len(chunk)
    return total


def _tar_member(plan: PlannedLayer, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name=plan.file.relpath)
    info.size = plan.file.size
    info.mode = _normalized_mode(plan.file.mode)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _parent_directories(relpath: str, mtime: int) -> list[tarfile.TarInfo]:
    """Directory entries for ``a/`` and ``a/b/`` before ``a/b/c``: KitOps' unpack (v1.15)
    creates no parent folders itself, and tar/oras/modctl readers all accept them."""
    parts = relpath.split("/")[:-1]
    entries = []
    for depth in range(1, len(parts) + 1):
        info = tarfile.TarInfo(name="/".join(parts[:depth]))
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        info.mtime = mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        entries.append(info)
    return entries


class LayerBuilder:
    """Writes one planned layer into the store; used from worker threads.

    With ``keep_raw=False`` raw layers are only hashed: the bytes stay in the
    source files and a push streams them from there (``build --push``).
    """

    def __init__(
        self,
        store: LayoutStore,
        progress: Progress,
        keep_raw: bool = True,
        pickle_scans: dict[str, PickleScan] | None = None,
    ) -> None:
        self.store = store
        self.progress = progress
        self.keep_raw = keep_raw
        self.epoch = source_date_epoch()
        self.pickle_scans = pickle_scans or {}

    def build(self, plan: PlannedLayer) -> BuiltLayer:
        key = plan.file.relpath
        self.progress.start(key, plan.file.relpath, plan.file.size)

        def advance(n: int) -> None:
            self.progress.advance(key, n)

        if plan.layer_format is LayerFormat.RAW:
            digest, size, placement = self._raw(plan, advance)
            diff_id = digest
        else:
            digest, size, diff_id = self._tar(plan, advance)
            placement = None
        mtime = self.epoch if self.epoch is not None else plan.file.mtime
        annotations = _layer_annotations(plan, mtime)
        if (scan := self.pickle_scans.get(key)) is not None:
            annotations[ANNOTATION_PICKLE_SCAN] = scan.annotation()
        descriptor = Descriptor(
            media_type=plan.media_type,
            digest=digest,
            size=size,
            annotations=annotations,
        )
        self.progress.finish(key, note=placement.value if placement else "")
        return BuiltLayer(plan, descriptor, diff_id, placement)

    def _raw(
        self, plan: PlannedLayer, advance: Callable[[int], None]
    ) -> tuple[str, int, Placement | None]:
        f = plan.file
        if not self.keep_raw or self.store.shares_filesystem_with(f.path):
            # One read to hash, then a link or clone (or nothing): no weight byte rewritten.
            hasher = hashlib.sha256()
            with open(f.path, "rb") as src:
                size = _copy_with_progress(src, hasher.update, advance)
            digest = "sha256:" + hasher.hexdigest()
            if not self.keep_raw:
                return digest, size, None
            return digest, size, self.store.ingest_file(f.path, digest, size)
        # Another filesystem: copy and hash in the same pass.
        with self.store.writer() as writer, open(f.path, "rb") as src:
            _copy_with_progress(src, writer.write, advance)
            return writer.commit(), writer.size, Placement.COPY

    def _tar(self, plan: PlannedLayer, advance: Callable[[int], None]) -> tuple[str, int, str]:
        mtime = self.epoch if self.epoch is not None else 0
        with self.store.writer() as writer:
            compressor: BinaryIO | None = None
            if plan.layer_format is LayerFormat.TAR_GZIP:
                compressor = gzip.GzipFile(
                    filename="", mode="wb", fileobj=writer, compresslevel=GZIP_LEVEL, mtime=0
                )
            elif plan.layer_format is LayerFormat.TAR_ZSTD:
                compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(
                    writer, closefd=False
                )
            tar_sink = _HashingSink(compressor if compressor is not None else writer)
            with (
                tarfile.open(
                    fileobj=tar_sink,
                    mode="w|",
                    format=tarfile.PAX_FORMAT,
                    bufsize=CHUNK_SIZE,
                    copybufsize=CHUNK_SIZE,
                ) as tar,
                open(plan.file.path, "rb") as src,
            ):
                for directory in _parent_directories(plan.file.relpath, mtime):
                    tar.addfile(directory)
                tar.addfile(_tar_member(plan, mtime), ReportingReader(src, advance))
            if compressor is not None:
                compressor.close()
            digest = writer.commit()
            return digest, writer.size, "sha256:" + tar_sink.hasher.hexdigest()


def build_artifact(
    source: ModelSource,
    store: LayoutStore,
    reference: str,
    *,
    layer_format: LayerFormat = LayerFormat.RAW,
    kind_overrides: dict[str, LayerKind] | None = None,
    config_overrides: Callable[[ModelConfig], None] | None = None,
    concurrency: int = 4,
    progress: Progress | None = None,
    keep_raw: bool = True,
    media_types: MediaTypes = MediaTypes.CNCF,
    allow_unsafe_pickle: bool = False,
) -> BuildResult:
    """Write layers, config and manifest of ``source`` into ``store`` and tag it.

    ``keep_raw=False`` (for a build that goes straight to a registry) leaves raw
    layers in the source files and does not tag the store, whose copy of the
    artifact is then incomplete; :class:`BuiltArtifact` serves it for a push.
    Pickle-based files are scanned first (model/pickles.py): one that would run code
    when loaded raises :class:`UnsafePickleError` before a layer is written, unless
    ``allow_unsafe_pickle``; each scan is recorded on its layer.
    """
    progress = progress or NullProgress()
    scans = scan_files(((f.relpath, f.path) for f in source.files), allow=allow_unsafe_pickle)
    plans = plan_layers(
        source, layer_format, kind_overrides, tar_docs=media_types is MediaTypes.CNAI
    )
    kinds = {p.file.relpath: p.kind for p in plans}
    derived = derive_metadata(source.files, kinds, name=source.name, hub=source.hub)
    if source.source_url:
        derived.descriptor.source_url = source.source_url
    if source.revision:
        derived.descriptor.revision = source.revision

    builder = LayerBuilder(store, progress, keep_raw, scans)
    with store.using():
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            built = list(pool.map(builder.build, plans))

        config = ModelConfig(
            descriptor=derived.descriptor,
            config=derived.config,
            diff_ids=[layer.diff_id for layer in built],
        )
        if config_overrides is not None:
            config_overrides(config)
        validate(config.to_dict(), MODEL_CONFIG, "model config")
        config_bytes = config.to_bytes()
        config_desc = Descriptor(
            media_type=MEDIA_TYPE_MODEL_CONFIG,
            digest=sha256_bytes(config_bytes),
            size=len(config_bytes),
        )
        push_bytes(store, config_desc, config_bytes)

        manifest = convert_manifest(
            Manifest(
                config=config_desc,
                layers=tuple(layer.descriptor for layer in built),
                annotations=dict(source.annotations),
            ),
            media_types,
        )
        built = [
            dataclasses.replace(layer, descriptor=desc)
            for layer, desc in zip(built, manifest.layers, strict=True)
        ]
        manifest_bytes = manifest.to_bytes()
        manifest_desc = Descriptor(
            media_type=manifest.media_type,
            digest=sha256_bytes(manifest_bytes),
            size=len(manifest_bytes),
            artifact_type=manifest.artifact_type,
        )
        push_bytes(store, manifest_desc, manifest_bytes, reference=reference if keep_raw else None)
    warnings = list(derived.warnings)
    warnings += [
        f"{scan.path}: a pickle that runs code when loaded, kept by --allow-unsafe-pickle "
        f"({scan.summary()})"
        for scan in scans.values()
        if scan.refused
    ]
    if not any(plan.kind is LayerKind.WEIGHT for plan in plans):
        warnings.append(
            "no weight files (safetensors, GGUF, .bin, .pt, .onnx ...) in the model: "
            "its config says nothing of format or size; mark weights with a Modelfile "
            "(MODEL path) if detection missed them"
        )
    return BuildResult(reference, manifest_desc, manifest, config, built, warnings, None, scans)


class BuiltArtifact(ReadOnlyTarget):
    """A just-built artifact as a read-only Target: config and manifest from the
    store, raw layers straight from the source files (verified while sent)."""

    def __init__(self, store: LayoutStore, result: BuildResult) -> None:
        self.store = store
        self.files = {
            layer.descriptor.digest: layer.plan.file.path
            for layer in result.layers
            if not store.exists(layer.descriptor)
        }

    def describe(self) -> str:
        return "the model being built"

    def resolve(self, reference: str) -> Descriptor:
        return self.store.resolve(reference)

    def exists(self, desc: Descriptor) -> bool:
        return desc.digest in self.files or self.store.exists(desc)

    @contextlib.contextmanager
    def fetch(self, desc: Descriptor) -> Iterator[BinaryIO]:
        if desc.digest not in self.files:
            with self.store.fetch(desc) as stream:
                yield stream
            return
        with open(self.files[desc.digest], "rb") as stream:
            yield stream
