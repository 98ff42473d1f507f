"""``modelpack image``: an OCI image of a model in the registry, from the model's own blobs.

The model's tar layers become the image's layers as they are (no byte uploaded for them);
only the image config, for a modelcar the busybox base, and the manifest are new (with
``--convert-raw`` also a tar copy of each raw layer, made in the local store). The image
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
from .model.build import LayerBuilder, PlannedLayer
from .model.image import (
    DEFAULT_BUSYBOX,
    KIND_MODELCAR,
    KIND_VOLUME,
    MODELCAR_ROOT,
    Blob,
    ImageArtifact,
    Platform,
    modelcar_base,
    plan_image,
    raw_layers,
)
from .model.source.local import SourceFile
from .oci.reference import parse_reference
from .oci.spec import Descriptor, LayerFormat, Manifest, layer_media_type, parse_layer_media_type
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
    root: str  # where the model's files are in the image's filesystem
    platform: str
    layers_reused: int
    bytes_reused: int
    layers_converted: int  # raw layers the image has a tar copy of (--convert-raw)
    bytes_added: int  # new blobs and the manifest (what the image costs the registry, at most)
    bytes_uploaded: int  # of those, what was not there yet
    model_copied: bool  # the model's blobs were copied into the image's repository first

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "model": self.model,
            "kind": self.kind,
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
    builder = LayerBuilder(node_store(settings), progress or NullProgress())
    with ThreadPoolExecutor(max_workers=settings.concurrency) as pool:
        built = dict(zip(plans, pool.map(builder.build, plans.values()), strict=True))
    return {index: layer.descriptor for index, layer in built.items()}


def make_image(
    source: str,
    image_ref: str,
    settings: Settings,
    *,
    modelcar: bool = False,
    platform: str | None = None,
    busybox: str | Path | None = None,
    convert_raw: bool = False,
    progress: Progress | None = None,
) -> ImageResult:
    """Push IMAGE_REF, an image of the model SOURCE (a registry reference, ``store:REF`` or
    ``oci:DIR[:TAG]``). A model in another repository (or not in a registry) is copied to
    IMAGE_REF's repository first, by digest: across repositories of one registry a mount.
    ``convert_raw`` writes a tar copy of each raw layer (pulled into the node cache first)."""
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
    assert model.config is not None
    raw = raw_layers(model.manifest)
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
        # The model is (or is copied) where the image is: its subject must be there.
        plan = plan_image(model.descriptor, model.manifest, model.config,
                          model_name=dst_ref.name, platforms=platforms, base=base,
                          tar_copies=copies)  # fmt: skip
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
        root=MODELCAR_ROOT if modelcar else "/",
        platform=",".join(str(p) for p in platforms),
        layers_reused=len(plan.reused),
        bytes_reused=sum(layer.size for layer in plan.reused),
        layers_converted=len(copies),
        bytes_added=plan.added_bytes,
        bytes_uploaded=pushed.stats.bytes_transferred,
        model_copied=copied,
    )


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
