"""Lay a pulled model out as the Hugging Face hub cache does, so existing code loads it.

    <cache>/models--<org>--<name>/blobs/<sha256>
    <cache>/models--<org>--<name>/snapshots/<commit>/<path>   symlinks into ../blobs
    <cache>/models--<org>--<name>/refs/<revision>             the commit, no newline

With HF_HUB_OFFLINE=1, ``snapshot_download(repo_id)``, ``hf_hub_download``
and ``from_pretrained(repo_id)`` resolve ``refs/main`` (or the revision they
are given) and read the snapshot; nothing else is consulted.  The repo id
comes from the reference (its last two path components) and the commit is a
stand-in derived from the manifest: an artifact must not choose which repo of
the user's cache it writes (``someone/innocent:v1`` claiming to be
``meta-llama/...``).  The ids recorded at build (annotations, the config's
source URL and revision) count only when the caller trusts them
(``trust_annotations``); an explicit ``repo_id`` always wins.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..oci.digests import sha256_file
from ..oci.reference import Reference
from ..oci.spec import ANNOTATION_HF_COMMIT, ANNOTATION_HF_REPO_ID, Manifest, ModelConfig
from ._fsutil import atomic_write_bytes, remove_tree

# A model's NAME or ORG/NAME; a dataset's has "datasets/" in front (as the hub's URLs do).
_REPO_ID_RE = re.compile(r"^(datasets/)?[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?\Z")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}\Z")
# A hub URL's repo id: a dataset's with its "datasets/" (datasets/ORG/NAME, datasets/NAME).
_HF_URL_RE = re.compile(r"^https?://[^/]+/((?:datasets/)?[^/]+/[^/@?#]+)")


def default_hf_cache() -> Path:
    """Where huggingface_hub looks: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if value := os.environ.get("HF_HUB_CACHE"):
        return Path(value).expanduser()
    home = os.environ.get("HF_HOME") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    )
    return Path(home).expanduser() / "hub"


@dataclass(frozen=True)
class HFMapping:
    repo_id: str
    commit: str
    revisions: tuple[str, ...]  # names written under refs/, "main" first

    @property
    def folder(self) -> str:
        """``models--ORG--NAME``, or huggingface_hub's ``datasets--ORG--NAME`` for a dataset."""
        kind, _, name = self.repo_id.partition("/")
        if kind == "datasets" and name:
            return "datasets--" + name.replace("/", "--")
        return "models--" + self.repo_id.replace("/", "--")


def hf_mapping(
    reference: Reference,
    manifest: Manifest,
    config: ModelConfig | None,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    trust_annotations: bool = False,
) -> HFMapping:
    """Decide the HF repo id, commit and revision names for a pulled artifact."""
    recorded = _recorded_ids(manifest, config) if trust_annotations else (None, None)
    repo = repo_id or recorded[0] or "/".join(reference.repository.split("/")[-2:])
    if not _REPO_ID_RE.match(repo):
        raise UsageError(f"{repo!r} is not a Hugging Face repo id (ORG/NAME)")
    commit = recorded[1]
    if not commit or not _COMMIT_RE.match(commit):
        # No hub commit known: a stable stand-in derived from the manifest bytes.
        commit = hashlib.sha1(manifest.to_bytes()).hexdigest()
    names = ["main"]
    for name in (revision, reference.tag):
        if name and name not in names and "/" not in name:
            names.append(name)
    return HFMapping(repo, commit, tuple(names))


def _recorded_ids(manifest: Manifest, config: ModelConfig | None) -> tuple[str | None, str | None]:
    """The repo id and commit the artifact says it came from (annotations, else its config)."""
    annotations = manifest.annotations
    from_url = _HF_URL_RE.match((config.descriptor.source_url if config else None) or "")
    repo = annotations.get(ANNOTATION_HF_REPO_ID) or (from_url.group(1) if from_url else None)
    commit = annotations.get(ANNOTATION_HF_COMMIT) or (
        config.descriptor.revision if config else None
    )
    return repo, commit


def write_hf_cache(
    tree: Path,
    files: list[str],
    mapping: HFMapping,
    cache_dir: Path,
    known_digests: dict[str, str] | None = None,
) -> Path:
    """Link ``tree``'s files into the HF cache layout; return the snapshot directory.

    A new snapshot is staged and renamed into place; one that exists already (from
    an ``--include`` pull, or ``hf_hub_download`` of single files) gets the files it
    lacks, each link made atomically, as huggingface_hub itself fills snapshots in.
    ``known_digests`` (path -> sha256 hex, from raw layer digests) spares
    re-reading those files; others are hashed here.
    """
    repo_dir = cache_dir / mapping.folder
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snapshots = repo_dir / "snapshots"
    snapshots.mkdir(parents=True, exist_ok=True)
    snapshot = snapshots / mapping.commit
    links = _SnapshotLinks(tree, repo_dir / "blobs", known_digests or {})
    if not snapshot.is_dir():
        staging = snapshots / f".{mapping.commit}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            for relpath in sorted(files):
                links.link(relpath, staging)
            os.rename(staging, snapshot)
        except FileExistsError:
            remove_tree(staging)  # another process made the same snapshot first
        except BaseException:
            remove_tree(staging)
            raise
    for relpath in sorted(files):
        if not (snapshot / relpath).is_file():  # missing, or a link to a missing blob
            links.link(relpath, snapshot)
    refs = repo_dir / "refs"
    for name in mapping.revisions:
        # No trailing newline: huggingface_hub >= 2.4 fails to resolve it offline otherwise.
        atomic_write_bytes(refs / name, mapping.commit.encode())
    return snapshot


@dataclass(frozen=True)
class _SnapshotLinks:
    """Places a tree's file as a blob (by sha256) and links a snapshot path to it."""

    tree: Path
    blobs: Path
    known: dict[str, str]

    def link(self, relpath: str, snapshot: Path) -> None:
        source = self.tree / relpath
        hexpart = self.known.get(relpath) or sha256_file(str(source))[0].split(":", 1)[1]
        blob = self.blobs / hexpart
        if not blob.exists():
            _place(source, blob)
        link = snapshot / relpath
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}.tmp")
        os.symlink(os.path.relpath(blob, link.parent), tmp)
        os.replace(tmp, link)


def _place(source: Path, blob: Path) -> None:
    tmp = blob.with_name(f".{blob.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, blob)
