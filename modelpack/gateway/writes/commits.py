"""A hub commit as a ModelPack artifact, and the history that commits leave in a registry.

A commit is the parent's files with the commit's changes applied, packaged as
``modelpack build`` would package them: one layer per file, classified by
``plan_layers``, a model config from ``derive_metadata`` (read from a staging
folder holding the few bytes it reads: JSON, READMEs, safetensors and GGUF
headers) and a manifest.  Files the parent has keep their layer as it is.

Every path, the commit's and the parent's, passes ``hub.path_problem`` before a
byte is staged, and the staging folder is written only through descriptors opened
beneath it (``O_NOFOLLOW``, new files ``O_EXCL``): nothing lands outside it.

The commit id is 40 hex, derived as git derives one: a sha1 over the parent's
id, the config and every (path, layer digest), the message and the date.  The
manifest records it (``io.modelpack.hf.commit``, what the resolver and
``pull --hf-cache`` read), its parent's id, the branch and the message, and is
tagged by the id and by the branch: history is walked in the registry alone,
so every gateway in front of it answers the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from ...errors import IntegrityError, SourceError, UsageError
from ...model.build import PlannedLayer, layer_annotations, plan_layers
from ...model.metadata import derive_metadata, rfc3339
from ...model.source import ModelSource, SourceFile
from ...oci.digests import sha256_bytes
from ...oci.spec import (
    ANNOTATION_CREATED,
    ANNOTATION_HF_COMMIT,
    ANNOTATION_HF_REPO_ID,
    ANNOTATION_PICKLE_SCAN,
    MEDIA_TYPE_MODEL_CONFIG,
    Descriptor,
    LayerFormat,
    LayerKind,
    Manifest,
    MediaTypes,
    ModelConfig,
    convert_manifest,
    layer_media_type,
    parse_layer_media_type,
)
from ...oci.target import push_bytes
from ...registry.client import RegistryRepository
from ...schemas import MODEL_CONFIG, validate
from ..core.gitobjects import (
    ANNOTATION_GIT_COMMIT,
    ANNOTATION_GIT_OID,
    commit_oid,
    commit_text,
    git_files,
    git_trees,
)
from ..core.hub import is_dataset, path_problem, shown_path, single_file_size

ANNOTATION_PARENT = "io.modelpack.hf.parent"
ANNOTATION_BRANCH = "io.modelpack.hf.branch"
ANNOTATION_COMMIT_TITLE = "io.modelpack.hf.commit.title"
ANNOTATION_COMMIT_MESSAGE = "io.modelpack.hf.commit.message"
ANNOTATION_COMMIT_AUTHOR = "io.modelpack.hf.commit.author"
SAFETENSORS_HEADER_MAX = 100 * 1024 * 1024
GGUF_PREFIX = 32 * 1024 * 1024  # enough for the key/value header of real GGUF files
MESSAGE_MAX = 16 * 1024  # annotations stay small: longer messages are cut


@dataclass(frozen=True)
class NewFile:
    """A file the commit adds, already a blob in the repository."""

    path: str
    digest: str
    size: int
    git_oid: str | None = None  # regular (inline) files: what the client compares
    local: Path | None = None  # a spooled copy, read instead of the registry
    pickle_scan: str | None = None  # a pickle file's scan (scanning.py), for its layer


@dataclass(frozen=True)
class Head:
    """The commit a branch points at (a model manifest, by anyone)."""

    descriptor: Descriptor
    manifest: Manifest
    config: ModelConfig | None
    commit: str


@dataclass
class Change:
    added: dict[str, NewFile] = field(default_factory=dict)
    deleted_files: set[str] = field(default_factory=set)
    deleted_folders: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class CommitInfo:
    title: str
    message: str
    author: str
    branch: str
    date: float
    git_text: str | None = None  # a pushed git commit's text after its tree line, as sent


@dataclass(frozen=True)
class Built:
    commit: str
    descriptor: Descriptor
    manifest: Manifest
    config_descriptor: Descriptor
    config_bytes: bytes


class MissingEntryError(IntegrityError):
    """A deleted path that the parent does not have."""


class CommitPathError(UsageError):
    """A path the commit cannot hold: the hub answers ``status`` (400: the request's
    fault; 422: the parent's, which only a new artifact at the branch can mend)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Carried:
    layer: Descriptor
    diff_id: str
    kind: LayerKind
    directory: bool = False  # a directory archive layer: carried whole, never staged


def entries(head: Head | None) -> dict[str, _Carried]:
    """The parent's files by path, each with its layer, diffID and kind."""
    if head is None:
        return {}
    diff_ids = head.config.diff_ids if head.config else []
    found: dict[str, _Carried] = {}
    for index, layer in enumerate(head.manifest.layers):
        path = layer.named_path
        if not path:
            continue
        # Any OCI tool can push a layer titled "../../x.json": never carried, never staged.
        if problem := path_problem(path.removesuffix("/") or path):
            raise CommitPathError(
                f"the parent commit {head.commit} has a file this gateway refuses, "
                f"{shown_path(path)}: {problem}; push a fixed artifact to the branch first",
                422,
            )
        parsed = parse_layer_media_type(layer.media_type)
        kind = parsed[0] if parsed else LayerKind.CODE
        raw = parsed is not None and parsed[1] is LayerFormat.RAW
        diff_id = diff_ids[index] if index < len(diff_ids) else (layer.digest if raw else "")
        found[path.rstrip("/")] = _Carried(layer, diff_id, kind, path.endswith("/"))
    return found


def apply(head: Head | None, change: Change) -> dict[str, _Carried | NewFile]:
    files: dict[str, _Carried | NewFile] = dict(entries(head))
    for path in sorted(change.deleted_files):
        if path not in files:
            raise MissingEntryError(f"A file with this name doesn't exist: {path}")
        del files[path]
    for folder in change.deleted_folders:
        prefix = folder.strip("/") + "/"
        for path in [p for p in files if p.startswith(prefix) or prefix == "/"]:
            del files[path]
    files.update(change.added)
    if not files:  # the spec's config needs one diffId, so an empty model is no model
        raise CommitPathError(
            "this commit would leave the repo without files, and a ModelPack model holds "
            "at least one; keep a file, or delete the repo instead"
        )
    _refuse_files_as_folders(files)
    return dict(sorted(files.items()))


def _refuse_files_as_folders(files: dict[str, _Carried | NewFile]) -> None:
    """``a`` and ``a/b`` cannot both be files (git and every file system agree)."""
    for path in files:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            entry = files.get(folder)
            if entry is not None and not (isinstance(entry, _Carried) and entry.directory):
                raise CommitPathError(
                    f"{shown_path(folder)} is a file, and {shown_path(path)} needs it as a "
                    "folder; delete the file in the same commit to replace it"
                )


def build_commit(
    repository: RegistryRepository,
    repo_id: str,
    head: Head | None,
    change: Change,
    info: CommitInfo,
    workdir: Path,
) -> Built:
    """The manifest and config of ``head`` + ``change`` (nothing pushed yet)."""
    files = apply(head, change)
    workdir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix="commit-", dir=workdir))
    try:
        sources = [
            _stage(repository, stage, path, entry, info.date)
            for path, entry in files.items()
            if not (isinstance(entry, _Carried) and entry.directory)
        ]
        name = repo_id.rsplit("/", 1)[-1]
        plans = {
            p.file.relpath: as_dataset(p) if is_dataset(repo_id) else p
            for p in plan_layers(ModelSource(stage, sources, name), LayerFormat.RAW)
        }
        kinds = {f.relpath: _kind(files[f.relpath], plans[f.relpath]) for f in sources}
        try:
            derived = derive_metadata(sources, kinds, name=name)
        except SourceError as exc:  # a weights file whose header does not parse: say which
            raise CommitPathError(exc.message.replace(f"{stage}{os.sep}", "")) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    layers, diff_ids = [], []
    for path, entry in files.items():
        if isinstance(entry, _Carried):
            layers.append(entry.layer)
            diff_ids.append(entry.diff_id)
        else:
            layers.append(_new_layer(plans[path], entry, info.date))
            diff_ids.append(entry.digest)
    derived.descriptor.created_at = rfc3339(info.date)
    config = ModelConfig(descriptor=derived.descriptor, config=derived.config, diff_ids=diff_ids)
    validate(config.to_dict(), MODEL_CONFIG, "model config")
    config_bytes = config.to_bytes()
    config_desc = Descriptor(MEDIA_TYPE_MODEL_CONFIG, sha256_bytes(config_bytes), len(config_bytes))
    parent = head.commit if head else ""
    git = git_commit(layers, head, info)
    commit = git[0] if git else commit_id(parent, config_desc.digest, layers, info)
    annotations = {
        ANNOTATION_HF_REPO_ID: repo_id,
        ANNOTATION_HF_COMMIT: commit,
        ANNOTATION_BRANCH: info.branch,
        ANNOTATION_COMMIT_TITLE: info.title[:MESSAGE_MAX],
        ANNOTATION_COMMIT_MESSAGE: info.message[:MESSAGE_MAX],
        ANNOTATION_COMMIT_AUTHOR: info.author,
        ANNOTATION_CREATED: rfc3339(info.date),
    }
    if parent:
        annotations[ANNOTATION_PARENT] = parent
    if git:
        annotations[ANNOTATION_GIT_COMMIT] = git[1]
    manifest = convert_manifest(
        Manifest(config=config_desc, layers=tuple(layers), annotations=annotations),
        MediaTypes.CNCF,
    )
    return Built(commit, manifest_descriptor(manifest), manifest, config_desc, config_bytes)


def git_commit(
    layers: list[Descriptor], head: Head | None, info: CommitInfo
) -> tuple[str, str] | None:
    """(id, text after the tree line) of the commit as git has it (core/gitobjects.py);
    None when a file cannot be in git (an archive layer), and the id is :func:`commit_id`'s.
    Its parent is the head when the head is a git commit too; otherwise it starts a history."""
    found = git_files(layers)
    if found is None:
        return None
    tree, _ = git_trees(found)
    text = info.git_text
    if text is None:
        native = head is not None and ANNOTATION_GIT_COMMIT in head.manifest.annotations
        text = commit_text(head.commit if native and head else None, info.author,
                           int(info.date), info.title[:MESSAGE_MAX], info.message[:MESSAGE_MAX])  # fmt: skip
    return commit_oid(tree, text), text


def commit_id(parent: str, config: str, layers: list[Descriptor], info: CommitInfo) -> str:
    """The id of a commit git cannot hold (see :func:`git_commit`)."""
    document = {
        "parent": parent,
        "config": config,
        "files": [[layer.named_path, layer.digest] for layer in layers],
        "title": info.title,
        "message": info.message,
        "author": info.author,
        "date": int(info.date),
    }
    return hashlib.sha1(json.dumps(document, sort_keys=True).encode()).hexdigest()


def manifest_descriptor(manifest: Manifest) -> Descriptor:
    data = manifest.to_bytes()
    return Descriptor(
        manifest.media_type, sha256_bytes(data), len(data), artifact_type=manifest.artifact_type
    )


def push_commit(repository: RegistryRepository, built: Built, head: Head | None) -> None:
    """Config, then the manifest pushed as the branch, then tagged by its commit id.

    The branch first: a registry rule that refuses to move it (Harbor's tag immutability)
    then leaves no new artifact behind.  The commit is found from the branch (its
    annotations) until the id tag is there.  A parent the gateway did not make
    (``modelpack push``) is tagged by its commit id too, so the history that starts at it
    can be walked."""
    if not repository.exists(built.config_descriptor):
        push_bytes(repository, built.config_descriptor, built.config_bytes)
    if head is not None and ANNOTATION_BRANCH not in head.manifest.annotations:
        repository.tag(head.descriptor, head.commit)
    branch = str(built.manifest.annotations[ANNOTATION_BRANCH])
    repository.put_manifest(built.descriptor, built.manifest.to_bytes(), branch)
    repository.tag(built.descriptor, built.commit)


def branch_manifest(head: Head, repo_id: str, branch: str) -> tuple[Descriptor, bytes]:
    """``head`` as the first commit of a new branch: the same files, config and commit
    id; only the branch annotation differs (so refs can tell branches from tags)."""
    annotations = {
        **head.manifest.annotations,
        ANNOTATION_HF_REPO_ID: head.manifest.annotations.get(ANNOTATION_HF_REPO_ID, repo_id),
        ANNOTATION_HF_COMMIT: head.commit,
        ANNOTATION_BRANCH: branch,
    }
    manifest = replace(head.manifest, annotations=annotations)
    return manifest_descriptor(manifest), manifest.to_bytes()


def as_dataset(plan: PlannedLayer) -> PlannedLayer:
    """A dataset repo's file: a dataset layer (the spec's
    ``application/vnd.cncf.model.dataset.v1.*``), its card and docs kept as docs."""
    if plan.kind == LayerKind.DOC:
        return plan
    media_type = layer_media_type(LayerKind.DATASET, plan.layer_format)
    return replace(plan, kind=LayerKind.DATASET, media_type=media_type)


def _kind(entry: _Carried | NewFile, plan: PlannedLayer) -> LayerKind:
    """A carried layer keeps the kind its builder gave it (a Modelfile may have)."""
    return entry.kind if isinstance(entry, _Carried) else plan.kind


def _new_layer(plan: PlannedLayer, entry: NewFile, date: float) -> Descriptor:
    annotations = layer_annotations(plan, date)
    if entry.git_oid:
        annotations[ANNOTATION_GIT_OID] = entry.git_oid
    if entry.pickle_scan:
        annotations[ANNOTATION_PICKLE_SCAN] = entry.pickle_scan
    return Descriptor(plan.media_type, entry.digest, entry.size, annotations=annotations)


# -- the staging folder derive_metadata reads --------------------------------------


def _wanted(path: str, size: int) -> int:
    """How many leading bytes of a file the metadata readers use (-1: all of it)."""
    name = path.rsplit("/", 1)[-1].lower()
    if name.endswith(".json") or name in ("readme", "readme.md"):
        return -1 if size <= 64 * 1024 * 1024 else 0
    if name.endswith(".gguf"):
        return min(size, GGUF_PREFIX)
    if name.endswith(".safetensors"):
        return -2  # 8 bytes of length, then the header
    return 0


def _stage(
    repository: RegistryRepository, stage: Path, path: str, entry: _Carried | NewFile, date: float
) -> SourceFile:
    """A sparse file of the real size holding the bytes metadata needs."""
    size = _carried_size(entry.layer) if isinstance(entry, _Carried) else entry.size
    target = stage / path
    wanted = _wanted(path, size)
    with _create_beneath(stage, path) as out:
        if wanted and size:
            with _open_file(repository, entry) as stream:
                if wanted == -2:
                    _copy_safetensors_header(stream, out)
                else:
                    _copy(stream, out, size if wanted == -1 else wanted)
        out.truncate(size)
    return SourceFile(path, target, size, 0o644, date)


@contextlib.contextmanager
def _create_beneath(stage: Path, path: str) -> Iterator[BinaryIO]:
    """A new file at ``stage/path``, proven inside ``stage``: the path resolves there,
    each folder is made and opened relative to its parent's descriptor without
    following a link, and the file is created (``O_EXCL``), never reused."""
    if not (stage / path).resolve().is_relative_to(stage.resolve()):
        raise CommitPathError(f"{shown_path(path)} leaves the repository")
    *folders, name = path.split("/")
    fd = os.open(stage, _DIRECTORY)
    try:
        for folder in folders:
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder, 0o700, dir_fd=fd)
            child = os.open(folder, _DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        created = os.open(name, _NEW_FILE, 0o600, dir_fd=fd)
    finally:
        os.close(fd)
    with os.fdopen(created, "wb") as out:
        yield out


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _carried_size(layer: Descriptor) -> int:
    parsed = parse_layer_media_type(layer.media_type)
    if parsed is not None and parsed[1] is LayerFormat.RAW:
        return layer.size
    return single_file_size(layer) or 0


@contextlib.contextmanager
def _open_file(repository: RegistryRepository, entry: _Carried | NewFile) -> Iterator[BinaryIO]:
    if isinstance(entry, NewFile):
        if entry.local is not None:
            with open(entry.local, "rb") as stream:
                yield stream
            return
        desc = Descriptor("application/octet-stream", entry.digest, entry.size)
        with repository.fetch(desc) as stream:
            yield stream
        return
    parsed = parse_layer_media_type(entry.layer.media_type)
    with repository.fetch(entry.layer) as stream:
        if parsed is None or parsed[1] is LayerFormat.RAW:
            yield stream
            return
        with tarfile.open(fileobj=stream, mode="r|*") as archive:
            for member in archive:
                if member.isfile():
                    extracted = archive.extractfile(member)
                    assert extracted is not None
                    yield extracted
                    return
        raise IntegrityError(f"layer {entry.layer.digest} holds no file")


def _copy(stream: BinaryIO, out: BinaryIO, count: int) -> None:
    while count > 0:
        data = stream.read(min(1 << 20, count))
        if not data:
            return
        out.write(data)
        count -= len(data)


def _copy_safetensors_header(stream: BinaryIO, out: BinaryIO) -> None:
    prefix = stream.read(8)
    out.write(prefix)
    if len(prefix) == 8:
        (length,) = struct.unpack("<Q", prefix)
        _copy(stream, out, min(length, SAFETENSORS_HEADER_MAX))


def git_blob_oid(path: str | os.PathLike[str], size: int) -> str:
    """The git object id of a file (what the hub calls a regular file's oid)."""
    hasher = hashlib.sha1(f"blob {size}\0".encode())
    with open(path, "rb") as f:
        while data := f.read(1 << 20):
            hasher.update(data)
    return hasher.hexdigest()
