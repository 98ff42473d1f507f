"""An OCI image of a model, for what container runtimes mount: image volumes and KServe modelcars.

containerd and CRI-O mount only image manifests whose layers are
``application/vnd.oci.image.layer.v1.tar[+gzip|+zstd]``. A ModelPack tar layer already is such
a tar (one file and its parent folders, at the model's relative path), so the image lists the
very same blobs under the image media types: no layer byte is added to the registry. A raw
layer is the file itself, not a tar, and cannot be reused (:func:`raw_layers` names them).

A modelcar (KServe runs ``sh -c "ln -sf /proc/$$/root/models /mnt/models && sleep infinity"``
in it) starts with a static busybox with the applets KServe's two commands use,
byte-identical for every model (fixed mtimes and owners: one blob per registry). Then one of
two layouts of ``/models``:

- ``links`` (the default, zero-copy): the model's layers as they are, and last ``models/``,
  one relative symlink per model file (``models/config.json -> ../config.json``), so
  ``/models`` holds the model's files and nothing else; the links resolve through
  ``/proc/PID/root/models`` from the serving container. Only the modelcar sidecar reads it:
  KServe's storage initializer (``oci://`` without modelcars, ``oci+fetch://``) extracts only
  ``models/`` entries, with tarfile's ``data`` filter, which refuses a link leaving them;
  and ``oci+native://`` mounts the image's ``models`` folder alone (``subPath``), where
  the links lead nowhere.
- ``files``: each model file once more, as the tar ``build --layer-format tar`` makes of it
  but at ``models/PATH`` (:func:`file_layer_path`), and none of the model's layers: every way
  KServe reads a modelcar finds real files, for the model's size again in the registry. The
  model's own layers cannot be those tars: a ModelPack tar's entry names are its file's path
  to every puller (modctl's ``Untar``, our ``storage/unpack.py``), so entries under
  ``models/`` would move the model's files there for everyone.
"""

from __future__ import annotations

import contextlib
import io
import struct
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import UsageError
from ..oci.digests import sha256_bytes
from ..oci.spec import (
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    LayerFormat,
    Manifest,
    ModelConfig,
    canonical_json,
    parse_layer_media_type,
)
from ..oci.target import ReadOnlyTarget, Target
from ..storage.unpack import safe_relpath

MEDIA_TYPE_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
IMAGE_LAYER_MEDIA_TYPES = {
    LayerFormat.TAR: "application/vnd.oci.image.layer.v1.tar",
    LayerFormat.TAR_GZIP: "application/vnd.oci.image.layer.v1.tar+gzip",
    LayerFormat.TAR_ZSTD: "application/vnd.oci.image.layer.v1.tar+zstd",
}
# On the image manifest: what it is and which model it shows (the model is also its subject).
ANNOTATION_IMAGE_KIND = "io.modelpack.image.kind"  # "volume" or "modelcar"
ANNOTATION_IMAGE_MODEL = "io.modelpack.image.model"  # the model's name@digest
# On a files modelcar: "files" (none on a links one, so its digest is what it always was).
ANNOTATION_IMAGE_LAYOUT = "io.modelpack.image.layout"
KIND_VOLUME = "volume"
KIND_MODELCAR = "modelcar"
MODELCAR_ROOT = "/models"
LAYOUT_LINKS = "links"  # the model's layers at the root, /models a folder of symlinks
LAYOUT_FILES = "files"  # the model's files as new layers under /models, nothing at the root
MODELCAR_LAYOUTS = (LAYOUT_LINKS, LAYOUT_FILES)
# Every command KServe's modelcar and modelcar-init containers run (pkg/utils/storage.go).
MODELCAR_APPLETS = ("sh", "ln", "sleep", "echo", "ls", "[", "test")
DEFAULT_BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static installs it here

# ELF e_machine -> OCI architecture.
_ELF_ARCHITECTURES = {3: "386", 20: "ppc", 21: "ppc64le", 22: "s390x", 40: "arm", 62: "amd64",
                      183: "arm64", 243: "riscv64"}  # fmt: skip
_PT_INTERP = 3


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(
                f"--platform {text!r}: expected OS/ARCH[/VARIANT]", hint="e.g. linux/arm64"
            )
        return cls(*parts)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def to_dict(self) -> dict[str, str]:
        """As an index entry's ``platform``."""
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


@dataclass(frozen=True)
class Blob:
    """A small blob the image adds (config, modelcar base), held in memory."""

    descriptor: Descriptor
    data: bytes


@dataclass
class ImagePlan:
    """What to push: ``blobs`` (configs, the modelcar's layers, and with several platforms
    one manifest each), then the root ``manifest`` (an index with several). ``reused`` are the
    model's layers the image lists as they are, ``tar_copies`` the tars made of raw ones (or,
    for a ``files`` modelcar, of every file)."""

    manifest: bytes
    descriptor: Descriptor
    blobs: list[Blob]
    reused: list[Descriptor] = field(default_factory=list)
    tar_copies: list[Descriptor] = field(default_factory=list)

    @property
    def added_bytes(self) -> int:
        """What the image adds to a registry that has the model: at most this."""
        blobs = [b.descriptor for b in self.blobs] + self.tar_copies + [self.descriptor]
        return sum(desc.size for desc in blobs)


class ImageArtifact(ReadOnlyTarget):
    """The image as a read-only Target for the graph copy: its config, base and manifest
    from memory, every other blob from ``sources`` (the model's target, the local store)."""

    def __init__(self, plan: ImagePlan, sources: list[Target]) -> None:
        blobs = [*plan.blobs, Blob(plan.descriptor, plan.manifest)]
        self.blobs = {b.descriptor.digest: b.data for b in blobs}
        self.plan = plan
        self.sources = sources

    def describe(self) -> str:
        return "the image being written"

    def resolve(self, reference: str) -> Descriptor:
        return self.plan.descriptor

    def exists(self, desc: Descriptor) -> bool:
        return desc.digest in self.blobs or any(s.exists(desc) for s in self.sources)

    @contextlib.contextmanager
    def fetch(self, desc: Descriptor) -> Iterator[BinaryIO]:
        if desc.digest in self.blobs:
            yield io.BytesIO(self.blobs[desc.digest])
            return
        source = next((s for s in self.sources if s.exists(desc)), self.sources[-1])
        with source.fetch(desc) as stream:
            yield stream


def raw_layers(manifest: Manifest) -> list[Descriptor]:
    """The layers an image cannot reuse: raw files, and anything that is not a model tar."""
    out = []
    for layer in manifest.layers:
        parsed = parse_layer_media_type(layer.media_type)
        if parsed is None or parsed[1] not in IMAGE_LAYER_MEDIA_TYPES:
            out.append(layer)
    return out


def elf_architecture(path: Path) -> str:
    """The OCI architecture of a static ELF executable; UsageError for anything else
    (a dynamic busybox would not start in an image that has no libc)."""
    what = f"--busybox {path}"
    try:
        with open(path, "rb") as f:
            header = f.read(64)
            if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
                raise UsageError(f"{what} is not a 64-bit little-endian ELF executable")
            machine = struct.unpack_from("<H", header, 18)[0]
            phoff, = struct.unpack_from("<Q", header, 32)  # fmt: skip
            phentsize, phnum = struct.unpack_from("<HH", header, 54)
            f.seek(phoff)
            table = f.read(phentsize * phnum)
    except OSError as e:
        raise UsageError(
            f"{what}: {e.strerror or e}",
            hint="install a static busybox (Debian: apt-get install busybox-static) "
            "or pass --busybox PATH",
        ) from e
    for i in range(phnum):
        if struct.unpack_from("<I", table, i * phentsize)[0] == _PT_INTERP:
            raise UsageError(
                f"{what} is dynamically linked: it would not start in an image with no libc",
                hint="use a static build (Debian's busybox-static)",
            )
    if machine not in _ELF_ARCHITECTURES:
        raise UsageError(f"{what}: unknown ELF machine {machine}")
    return _ELF_ARCHITECTURES[machine]


def _entry(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.mtime = info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def modelcar_base(busybox: Path) -> tuple[Blob, str]:
    """The modelcar's base layer and its architecture: ``bin/busybox`` and the applets as
    symlinks to it."""
    architecture = elf_architecture(busybox)
    binary = busybox.read_bytes()

    def write(tar: tarfile.TarFile) -> None:
        tar.addfile(_entry("bin", tarfile.DIRTYPE, 0o755))
        tar.addfile(_entry("bin/busybox", tarfile.REGTYPE, 0o755, len(binary)), io.BytesIO(binary))
        for applet in MODELCAR_APPLETS:
            tar.addfile(_entry(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox"))

    return _tar_blob(write, "modelcar base (busybox)"), architecture


def modelcar_links(manifest: Manifest) -> Blob:
    """``models/`` with a relative symlink to each of the model's files (and folders):
    the modelcar's ``/models``, without a second copy of any byte."""
    root = MODELCAR_ROOT.lstrip("/")
    paths = []
    for layer in manifest.layers:
        if not layer.filepath:
            raise UsageError(f"layer {layer.digest} names no file path: a modelcar cannot link it")
        path = safe_relpath(layer.filepath.rstrip("/"), f"layer {layer.digest}")
        if path.parts[0] in (root, "bin"):
            raise UsageError(
                f"the model has its own {path.parts[0]}/ ({layer.filepath}), where a modelcar "
                f"keeps {'its links' if path.parts[0] == root else 'busybox'}",
                hint="use the plain image (no --modelcar) in an image volume",
            )
        paths.append(path)

    def write(tar: tarfile.TarFile) -> None:
        folders = sorted({p.parents[i] for p in paths for i in range(len(p.parts) - 1)})
        tar.addfile(_entry(root, tarfile.DIRTYPE, 0o755))
        for folder in folders:
            tar.addfile(_entry(f"{root}/{folder}", tarfile.DIRTYPE, 0o755))
        for path in sorted(paths):
            up = "../" * len(path.parts)
            tar.addfile(_entry(f"{root}/{path}", tarfile.SYMTYPE, 0o777, link=f"{up}{path}"))

    return _tar_blob(write, "modelcar /models links")


def file_layer_path(relpath: str) -> str:
    """Where a ``files`` modelcar keeps a model file: under ``models/``, where KServe's
    storage initializer and ``oci+native://`` (``subPath: models``) look."""
    return f"{MODELCAR_ROOT.lstrip('/')}/{relpath}"


def _tar_blob(write: Callable[[tarfile.TarFile], None], title: str) -> Blob:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        write(tar)
    data = out.getvalue()
    descriptor = Descriptor(IMAGE_LAYER_MEDIA_TYPES[LayerFormat.TAR], sha256_bytes(data),
                            len(data), {"org.opencontainers.image.title": title})  # fmt: skip
    return Blob(descriptor, data)


def _diff_ids(manifest: Manifest, config: ModelConfig) -> list[str]:
    """The uncompressed digests the runtime checks after unpacking: the model config's
    ``modelfs.diffIds`` (for an uncompressed tar, its digest)."""
    if len(config.diff_ids) != len(manifest.layers):
        raise UsageError(
            f"the model config lists {len(config.diff_ids)} diffIds for "
            f"{len(manifest.layers)} layers: cannot write the image's rootfs"
        )
    for layer, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
        parsed = parse_layer_media_type(layer.media_type)
        if parsed and parsed[1] is LayerFormat.TAR and diff_id != layer.digest:
            raise UsageError(
                f"layer {layer.digest} is an uncompressed tar, but its diffId is {diff_id}"
            )
    return list(config.diff_ids)


def plan_image(
    model: Descriptor,
    manifest: Manifest,
    config: ModelConfig,
    *,
    model_name: str,
    platforms: list[Platform],
    base: Blob | None = None,
    tar_copies: dict[int, Descriptor] | None = None,
    file_layers: list[Descriptor] | None = None,
) -> ImagePlan:
    """The image of a model: its tar blobs as image layers, behind ``base`` if given (a
    modelcar, then also ending with the ``/models`` links). A raw layer (:func:`raw_layers`)
    needs its uncompressed tar copy in ``tar_copies`` (the layer's index -> its descriptor).
    ``file_layers`` (with ``base``) makes a ``files`` modelcar instead: the base, then these
    uncompressed tars of the model's files under ``models/``, and no layer of the model.
    One platform: one manifest whose ``subject`` is the model. Several: a manifest each (the
    same layers, configs that differ in the platform) under an index whose subject it is."""
    tar_copies = tar_copies or {}
    blobs = []
    annotations = {
        ANNOTATION_IMAGE_KIND: KIND_MODELCAR if base is not None else KIND_VOLUME,
        ANNOTATION_IMAGE_MODEL: f"{model_name}@{model.digest}",
    }
    if file_layers is not None:
        plain_tar = IMAGE_LAYER_MEDIA_TYPES[LayerFormat.TAR]
        if (base is None or tar_copies or not file_layers
                or any(layer.media_type != plain_tar for layer in file_layers)):  # fmt: skip
            raise ValueError("a files modelcar: a base, uncompressed file layers, no tar copies")
        layers = [base.descriptor, *file_layers]
        diff_ids = [base.descriptor.digest, *(layer.digest for layer in file_layers)]
        reused, tar_copies = [], dict(enumerate(file_layers))
        blobs.append(base)
        annotations[ANNOTATION_IMAGE_LAYOUT] = LAYOUT_FILES
    else:
        layers, diff_ids, reused = _layers(manifest, config, tar_copies)
        if base is not None:
            links = modelcar_links(manifest)
            layers = [base.descriptor, *layers, links.descriptor]
            diff_ids = [base.descriptor.digest, *diff_ids, links.descriptor.digest]
            blobs += [base, links]
    subject = Descriptor(model.media_type, model.digest, model.size)
    manifests = []
    for platform in platforms:
        image_config = _image_config(platform, diff_ids, modelcar=base is not None)
        document = Manifest(
            config=image_config.descriptor,
            layers=tuple(layers),
            artifact_type=None,
            annotations=annotations,
            subject=subject if len(platforms) == 1 else None,
        ).to_bytes()
        blobs.append(image_config)
        manifests.append((Blob(_descriptor(MEDIA_TYPE_OCI_MANIFEST, document), document), platform))
    if len(manifests) == 1:
        (root, _), = manifests  # fmt: skip
        return ImagePlan(root.data, _with(root.descriptor, annotations), blobs, reused,
                         list(tar_copies.values()))  # fmt: skip
    index = canonical_json({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_INDEX,
        "manifests": [{**m.descriptor.to_dict(), "platform": p.to_dict()} for m, p in manifests],
        "subject": subject.to_dict(),
        "annotations": annotations,
    })  # fmt: skip
    blobs += [m for m, _ in manifests]
    return ImagePlan(index, _with(_descriptor(MEDIA_TYPE_OCI_INDEX, index), annotations), blobs,
                     reused, list(tar_copies.values()))  # fmt: skip


def _layers(
    manifest: Manifest, config: ModelConfig, tar_copies: dict[int, Descriptor]
) -> tuple[list[Descriptor], list[str], list[Descriptor]]:
    """The model's layers as image layers, their diffIds, and which were reused as they are."""
    layers, diff_ids, reused = [], [], []
    pairs = zip(manifest.layers, _diff_ids(manifest, config), strict=True)
    for index, (layer, diff_id) in enumerate(pairs):
        if index in tar_copies:
            copy = tar_copies[index]
            layers.append(Descriptor(IMAGE_LAYER_MEDIA_TYPES[LayerFormat.TAR], copy.digest,
                                     copy.size, dict(layer.annotations)))  # fmt: skip
            diff_ids.append(copy.digest)
            continue
        parsed = parse_layer_media_type(layer.media_type)
        assert parsed is not None and parsed[1] in IMAGE_LAYER_MEDIA_TYPES, layer.media_type
        layers.append(
            Descriptor(IMAGE_LAYER_MEDIA_TYPES[parsed[1]], layer.digest, layer.size,
                       dict(layer.annotations))
        )  # fmt: skip
        diff_ids.append(diff_id)
        reused.append(layer)
    return layers, diff_ids, reused


def _image_config(platform: Platform, diff_ids: list[str], *, modelcar: bool) -> Blob:
    document: dict = {"architecture": platform.architecture, "os": platform.os}
    if platform.variant:
        document["variant"] = platform.variant
    if modelcar:
        document["config"] = {"Env": ["PATH=/bin"], "WorkingDir": MODELCAR_ROOT}
    document["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    data = canonical_json(document)
    return Blob(_descriptor(MEDIA_TYPE_IMAGE_CONFIG, data), data)


def _descriptor(media_type: str, data: bytes) -> Descriptor:
    return Descriptor(media_type, sha256_bytes(data), len(data))


def _with(desc: Descriptor, annotations: dict[str, str]) -> Descriptor:
    return Descriptor(desc.media_type, desc.digest, desc.size, dict(annotations))
