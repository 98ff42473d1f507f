"""``modelpack image``: an OCI image of a model in the registry, from the model's own blobs.

The model's tar layers become the image's layers as they are (no byte uploaded for them);
only the image config, for a modelcar the busybox base, and the manifest are new. The image
names the model as its ``subject``, so it is one of the model's referrers (``inspect`` lists
it, ``copy`` takes it along). How it is put together: ``model/image.py``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import transfer
from .display import human_size
from .endpoints import open_endpoint, registry_of, registry_repository
from .errors import UsageError
from .model.image import (
    DEFAULT_BUSYBOX,
    KIND_MODELCAR,
    KIND_VOLUME,
    MODELCAR_ROOT,
    ImagePlan,
    Platform,
    modelcar_base,
    plan_image,
    raw_layers,
)
from .oci.reference import parse_reference
from .progress import Progress
from .settings import Settings


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
            "bytesAdded": self.bytes_added,
            "bytesUploaded": self.bytes_uploaded,
            "modelCopied": self.model_copied,
        }


def _refuse_raw(display: str, manifest) -> None:  # noqa: ANN001
    raw = raw_layers(manifest)
    if not raw:
        return
    size = human_size(sum(layer.size for layer in raw))
    raise UsageError(
        f"{display} has {len(raw)} raw layer{'s' if len(raw) != 1 else ''} ({size}): container "
        "runtimes mount only tar layers, so an image would need a tar copy of them "
        f"({size} more in the registry)",
        hint="rebuild it with `modelpack build --layer-format tar` (modctl's default): "
        "its image then reuses every layer, 0 bytes more",
    )


def make_image(
    source: str,
    image_ref: str,
    settings: Settings,
    *,
    modelcar: bool = False,
    platform: str | None = None,
    busybox: str | Path | None = None,
    progress: Progress | None = None,
) -> ImageResult:
    """Push IMAGE_REF, an image of the model SOURCE (a registry reference, ``store:REF`` or
    ``oci:DIR[:TAG]``). A model in another repository (or not in a registry) is copied to
    IMAGE_REF's repository first, by digest: across repositories of one registry a mount."""
    dst_ref = parse_reference(image_ref.removeprefix("docker://"))
    if dst_ref.digest or not dst_ref.tag:
        raise UsageError(
            f"{image_ref}: the image needs a tag", hint=f"e.g. {dst_ref.name}:v1-image"
        )
    src = open_endpoint(source, settings, reading=True, command_registry=dst_ref.registry)
    model = transfer.inspect_model(src)
    assert model.config is not None
    _refuse_raw(src.display, model.manifest)
    base, architecture = (None, None)
    if modelcar:
        base, architecture = modelcar_base(Path(busybox or DEFAULT_BUSYBOX))
    chosen = Platform.parse(platform) if platform else Platform("linux", architecture or "amd64")
    if architecture and chosen.architecture != architecture:
        raise UsageError(
            f"--platform {chosen} but the busybox is built for {architecture}",
            hint="pass a busybox of that architecture with --busybox",
        )
    src_repo = registry_repository(src)
    # The model is (or is copied) where the image is: its subject must be in that repository.
    name = dst_ref.name
    plan = plan_image(model.descriptor, model.manifest, model.config, model_name=name,
                      platform=chosen, base=base)  # fmt: skip
    copied = not (src_repo and registry_of(image_ref) == src_repo.registry
                  and src_repo.name == dst_ref.repository)  # fmt: skip
    if copied:
        transfer.copy(_pinned(source, model.descriptor.digest),
                      f"{dst_ref.name}@{model.descriptor.digest}", settings, progress)  # fmt: skip
    dst = open_endpoint(image_ref, settings, reading=False)
    uploaded = _push(dst.target, plan, dst_ref.tag)
    return ImageResult(
        reference=str(dst_ref),
        digest=plan.descriptor.digest,
        model=f"{name}@{model.descriptor.digest}",
        kind=KIND_MODELCAR if modelcar else KIND_VOLUME,
        root=MODELCAR_ROOT if modelcar else "/",
        platform=str(chosen),
        layers_reused=len(plan.reused),
        bytes_reused=sum(layer.size for layer in plan.reused),
        bytes_added=sum(b.descriptor.size for b in plan.new_blobs) + plan.descriptor.size,
        bytes_uploaded=uploaded,
        model_copied=copied,
    )


def _pinned(source: str, digest: str) -> str:
    """SOURCE by the digest just inspected, so a tag moved meanwhile cannot change the model."""
    if source.startswith(("oci:", "store:")):
        return source
    return str(parse_reference(source.removeprefix("docker://")).with_digest(digest))


def _push(target, plan: ImagePlan, tag: str) -> int:  # noqa: ANN001
    uploaded = 0
    for blob in plan.new_blobs:
        if not target.exists(blob.descriptor):
            target.push(blob.descriptor, io.BytesIO(blob.data))
            uploaded += blob.descriptor.size
    target.push(plan.descriptor, io.BytesIO(plan.manifest), reference=tag)
    return uploaded + plan.descriptor.size
