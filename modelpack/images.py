"""``modelpack image``: an OCI image of a model in the registry, from the model's own blobs.

The model's tar layers become the image's layers as they are (no byte uploaded for them);
only the image config, for a modelcar the busybox base, and the manifest are new (with
``--convert-raw`` also a tar copy of each raw layer, made in the local store). A modelcar
with ``--modelcar-layout files`` lists none of the model's layers: a tar of each file under
``models/`` instead, made in the local store like those copies. The image
names the model as its ``subject``, so it is one of the model's referrers (``inspect`` lists
it, ``copy`` takes it along). How it is put together: ``model/image.py``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import transfer
from .display import human_size
from .endpoints import Endpoint, open_endpoint, registry_of, registry_repository
from .errors import UsageError
from .model.build import BuiltLayer, LayerBuilder, PlannedLayer
from .model.image import (
    DEFAULT_BUSYBOX,
    IMAGE_LAYER_MEDIA_TYPES,
    KIND_MODELCAR,
    KIND_VOLUME,
    LAYOUT_FILES,
    LAYOUT_LINKS,
    MODELCAR_LAYOUTS,
    MODELCAR_ROOT,
    Blob,
    ImageArtifact,
    Platform,
    file_layer_path,
    modelcar_base,
    plan_image,
    raw_layers,
)
from .model.source.classify import classify
from .model.source.local import SourceFile
from .oci.reference import parse_reference
from .oci.spec import (
    ANNOTATION_TITLE,
    Descriptor,
    LayerFormat,
    Manifest,
    layer_media_type,
    parse_layer_media_type,
)
from .progress import NullProgress, Progress
from .settings import Settings
from .storage.store import node_store
from .storage.unpack import safe_relpath


@dataclass
class ImageResult:
    reference: str
    digest: str
    model: str  # name@digest of the model it shows
    kind: str  # "volume" or "modelcar"
    layout: str | None  # a modelcar's: "links" or "files"
    root: str  # where the model's files are in the image's filesystem
    platform: str
    layers_reused: int
    bytes_reused: int
    layers_converted: int  # tar copies the image lists: of raw layers, or of every file (files)
    bytes_added: int  # new blobs and the manifest (what the image costs the registry, at most)
    bytes_uploaded: int  # of those, what was not there yet
    model_copied: bool  # the model's blobs were copied into the image's repository first

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "model": self.model,
            "kind": self.kind,
            "layout": self.layout,
            "root": self.root,
            "platform": self.platform,
            "layersReused": self.layers_reused,
            "bytesReused": self.bytes_reused,
            "layersConverted": self.layers_converted,
            "bytesAdded": self.bytes_added,
            "bytesUploaded": self.bytes_uploaded,
            "modelCopied": self.model_copied,
        }


def _refuse_raw(display: str, raw: list[Descriptor]) -> None:
    size = human_size(sum(layer.size for layer in raw))
    raise UsageError(
        f"{display} has {len(raw)} raw layer{'s' if len(raw) != 1 else ''} ({size}): container "
        "runtimes mount only tar layers",
        hint=f"pass --convert-raw to add a tar copy of them ({size} more in the registry), or "
        "rebuild it with `modelpack build --layer-format tar` (modctl's default), whose image "
        "reuses every layer: 0 bytes more",
    )


def _tar_copies(
    source: str, manifest: Manifest, raw: list[Descriptor], settings: Settings,
    progress: Progress | None,
) -> dict[int, Descriptor]:  # fmt: skip
    """Pull the model into the node cache (verified), then write each raw file as the tar
    `build --layer-format tar` would make of it, into the local store."""
    tree = transfer.pull(source, None, settings, progress=progress).path
    assert tree is not None
    plans: dict[int, PlannedLayer] = {}
    for index, layer in enumerate(manifest.layers):
        if layer not in raw:
            continue
        parsed = parse_layer_media_type(layer.media_type)
        if parsed is None or not layer.filepath:
            raise UsageError(
                f"layer {layer.digest} is not a ModelPack file layer: no tar copy of it"
            )
        relpath = safe_relpath(layer.filepath, f"layer {layer.digest}").as_posix()
        path = tree / relpath
        stat = path.stat()
        file = SourceFile(relpath, path, stat.st_size, stat.st_mode & 0o777, stat.st_mtime)
        plans[index] = PlannedLayer(file, parsed[0], False,
                                    layer_media_type(parsed[0], LayerFormat.TAR))  # fmt: skip
    built = _build_tars(list(plans.values()), settings, progress)
    return {index: layer.descriptor for index, layer in zip(plans, built, strict=True)}


def _file_layers(source: str, settings: Settings, progress: Progress | None) -> list[Descriptor]:
    """Pull the model into the node cache (verified), then write each of its files as the
    tar `build --layer-format tar` makes, but at ``models/PATH``, into the local store: a
    ``files`` modelcar's layers, uncompressed (KServe's storage initializer reads no zstd)."""
    tree = transfer.pull(source, None, settings, progress=progress).path
    assert tree is not None
    plans = []
    for path in sorted(tree.rglob("*"), key=lambda p: p.relative_to(tree).as_posix()):
        relpath = path.relative_to(tree).as_posix()
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise UsageError(f"{relpath} in the model's tree is not a regular file or folder")
        if path.is_dir():
            if not any(path.iterdir()):
                raise UsageError(
                    f"the model has an empty folder {relpath}/: a files modelcar holds files",
                    hint="use --modelcar-layout links, which links folders too",
                )
            continue
        stat = path.stat()
        file = SourceFile(file_layer_path(relpath), path, stat.st_size, stat.st_mode & 0o777,
                          stat.st_mtime)  # fmt: skip
        kind = classify(relpath, stat.st_size).kind
        plans.append(PlannedLayer(file, kind, False, layer_media_type(kind, LayerFormat.TAR)))
    if not plans:
        raise UsageError("the model has no files: a files modelcar would hold nothing")
    media_type = IMAGE_LAYER_MEDIA_TYPES[LayerFormat.TAR]
    built = _build_tars(plans, settings, progress)
    return [
        Descriptor(
            media_type,
            b.descriptor.digest,
            b.descriptor.size,
            {ANNOTATION_TITLE: b.plan.file.relpath},
        )
        for b in built
    ]


def _build_tars(
    plans: list[PlannedLayer], settings: Settings, progress: Progress | None
) -> list[BuiltLayer]:
    builder = LayerBuilder(node_store(settings), progress or NullProgress())
    with ThreadPoolExecutor(max_workers=settings.concurrency) as pool:
        return list(pool.map(builder.build, plans))


def make_image(
    source: str,
    image_ref: str,
    settings: Settings,
    *,
    modelcar: bool = False,
    platform: str | None = None,
    busybox: str | Path | None = None,
    convert_raw: bool = False,
    modelcar_layout: str | None = None,
    progress: Progress | None = None,
) -> ImageResult:
    """Push IMAGE_REF, an image of the model SOURCE (a registry reference, ``store:REF`` or
    ``oci:DIR[:TAG]``). A model in another repository (or not in a registry) is copied to
    IMAGE_REF's repository first, by digest: across repositories of one registry a mount.
    ``convert_raw`` writes a tar copy of each raw layer (pulled into the node cache first).
    ``modelcar_layout`` (with ``modelcar``): ``links`` (default) or ``files``, a tar of each
    file under ``models/`` instead of the model's layers (any layer format; pulled first)."""
    layout = _layout(modelcar, modelcar_layout, convert_raw)
    if registry_of(image_ref) is None:
        raise UsageError(
            f"{image_ref}: IMAGE_REF is a registry reference (runtimes pull images from one)",
            hint="write it to a registry, then `modelpack copy IMAGE_REF oci:DIR:TAG` for a layout",
        )
    dst_ref = parse_reference(image_ref.removeprefix("docker://"))
    if dst_ref.digest or not dst_ref.tag:
        raise UsageError(
            f"{image_ref}: the image needs a tag", hint=f"e.g. {dst_ref.name}:v1-image"
        )
    src = open_endpoint(source, settings, reading=True, command_registry=dst_ref.registry)
    model = transfer.inspect_model(src)
    if model.config is None:  # Docker Model Runner's own format: no ModelPack config to carry
        raise UsageError(
            f"{src.display} is a Docker Model Runner model, not a ModelPack one: "
            "`modelpack image` makes images of ModelPack models",
            hint="package it with `docker model package --format cncf`, or pull its files",
        )
    raw = raw_layers(model.manifest) if layout != LAYOUT_FILES else []
    if raw and not convert_raw:
        _refuse_raw(src.display, raw)
    base, platforms = _base_and_platforms(modelcar, busybox, platform)
    pinned = _pinned(source, model.descriptor.digest)
    src_repo = registry_repository(src)
    copied = not (src_repo and dst_ref.registry == src_repo.registry
                  and src_repo.name == dst_ref.repository)  # fmt: skip
    store = node_store(settings)
    with store.using():  # the tar copies stay in the store until they are pushed
        copies = _tar_copies(pinned, model.manifest, raw, settings, progress) if raw else {}
        files = _file_layers(pinned, settings, progress) if layout == LAYOUT_FILES else None
        # The model is (or is copied) where the image is: its subject must be there.
        plan = plan_image(model.descriptor, model.manifest, model.config,
                          model_name=dst_ref.name, platforms=platforms, base=base,
                          tar_copies=copies, file_layers=files)  # fmt: skip
        if copied:
            transfer.copy(pinned, f"{dst_ref.name}@{model.descriptor.digest}", settings, progress)
        image = Endpoint(ImageArtifact(plan, [store, src.target]), plan.descriptor.digest,
                         "the image being written")  # fmt: skip
        pushed = transfer.push_from(image, str(dst_ref), settings, progress)
    return ImageResult(
        reference=str(dst_ref),
        digest=plan.descriptor.digest,
        model=f"{dst_ref.name}@{model.descriptor.digest}",
        kind=KIND_MODELCAR if modelcar else KIND_VOLUME,
        layout=layout,
        root=MODELCAR_ROOT if modelcar else "/",
        platform=",".join(str(p) for p in platforms),
        layers_reused=len(plan.reused),
        bytes_reused=sum(layer.size for layer in plan.reused),
        layers_converted=len(plan.tar_copies),
        bytes_added=plan.added_bytes,
        bytes_uploaded=pushed.stats.bytes_transferred,
        model_copied=copied,
    )


def _layout(modelcar: bool, layout: str | None, convert_raw: bool) -> str | None:
    """The modelcar's layout (None for a plain image); a layout without --modelcar, or
    --convert-raw with the files layout (which copies every file anyway), is refused."""
    if layout is None:
        return LAYOUT_LINKS if modelcar else None
    if layout not in MODELCAR_LAYOUTS:
        raise UsageError(
            f"--modelcar-layout {layout!r}: expected one of {', '.join(MODELCAR_LAYOUTS)}"
        )
    if not modelcar:
        raise UsageError(
            f"--modelcar-layout {layout} without --modelcar: only a modelcar has a /models layout",
            hint="add --modelcar",
        )
    if layout == LAYOUT_FILES and convert_raw:
        raise UsageError(
            "--convert-raw with --modelcar-layout files: the files layout copies every file "
            "under /models already, whatever the layers' format",
            hint="drop --convert-raw",
        )
    return layout


def _base_and_platforms(
    modelcar: bool, busybox: str | Path | None, platform: str | None
) -> tuple[Blob | None, list[Platform]]:
    """The modelcar base (if asked for) and the image's platforms (``a,b``: an index); a
    modelcar has one, its busybox's."""
    base, architecture = None, None
    if modelcar:
        base, architecture = modelcar_base(Path(busybox or DEFAULT_BUSYBOX))
    if not platform:
        return base, [Platform("linux", architecture or "amd64")]
    chosen = [Platform.parse(p.strip()) for p in platform.split(",")]
    if len({str(p) for p in chosen}) != len(chosen):
        raise UsageError(f"--platform {platform}: a platform is named twice")
    if architecture and [p.architecture for p in chosen] != [architecture]:
        raise UsageError(
            f"--platform {platform} but the busybox is built for {architecture}",
            hint="a modelcar has its busybox's one platform: pass another one with --busybox",
        )
    return base, chosen


def _pinned(source: str, digest: str) -> str:
    """SOURCE by the digest just inspected, so a tag moved meanwhile cannot change the model."""
    if registry_of(source) is None:
        return source
    return str(parse_reference(source.removeprefix("docker://")).with_digest(digest))
