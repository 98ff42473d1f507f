"""A hub commit as a git commit: the objects and the id, derived from the artifact alone.

A commit this gateway makes (through the hub API or ``git push``) has the id of a git commit
whose tree holds each file as git would: a file uploaded as a regular file is a git blob of
its bytes (the layer's ``io.modelpack.hf.git-oid`` says its id), every other raw layer a
git-lfs pointer to its sha256.  The commit's text after its ``tree`` line (parent, author,
committer, message: as pushed, or made from the hub commit's fields) is kept in the
manifest's ``io.modelpack.git.commit`` annotation.  So any replica, and any clone, derives the
same 40-hex id from the manifest, with no state beside the registry: ``git clone`` shows the
ids ``list_repo_commits`` and the registry's commit tags show.

Git's object formats are dulwich's (``dulwich.objects``); nothing here parses a pack.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from ...extras import require
from ...oci.spec import Descriptor

if TYPE_CHECKING:
    from dulwich.objects import Tree

ANNOTATION_GIT_OID = "io.modelpack.hf.git-oid"  # on a layer: the git blob sha1 of the file
ANNOTATION_GIT_COMMIT = "io.modelpack.git.commit"  # on a manifest: its commit after "tree"
GIT_COMMIT_TEXT_MAX = 64 * 1024  # bytes of a commit's text kept (a pushed one is refused past)
LFS_POINTER_MAX = 200  # bytes: a pointer in git-lfs's spelling is shorter
FILE_MODE = 0o100644  # the only mode a hub file has
_LFS_POINTER_RE = re.compile(rb"\Aversion https://git-lfs\.github\.com/spec/v1\noid sha256:"
                             rb"([0-9a-f]{64})\nsize (0|[1-9][0-9]{0,18})\n\Z")  # fmt: skip
_IDENT_UNSAFE = re.compile(r"[<>\x00-\x1f\x7f]")


def dulwich(module: str) -> ModuleType:
    """``dulwich.MODULE``: git's objects and protocol come with ``serve``'s dependencies."""
    return require(f"dulwich.{module}", purpose="Git over HTTP", extra="serve", package="dulwich")


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer of a file, in the one spelling git-lfs writes."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


def parse_lfs_pointer(data: bytes) -> tuple[str, int] | None:
    """(sha256, size) of a pointer in git-lfs's own spelling, else None (a regular file)."""
    match = _LFS_POINTER_RE.match(data) if len(data) < LFS_POINTER_MAX else None
    return (match.group(1).decode(), int(match.group(2))) if match else None


@dataclass(frozen=True)
class GitFile:
    """A file as the git tree holds it: a regular blob (its bytes are the layer's) or a
    pointer to the layer's sha256 (git-lfs fetches the bytes)."""

    path: str
    blob: str  # the tree entry's object id (40 hex)
    layer: Descriptor
    pointer: bytes | None  # the pointer's bytes; None for a regular blob


def git_file(path: str, layer: Descriptor) -> GitFile | None:
    """How ``layer`` is a file in git; None when it cannot be (an archive layer, whose file
    bytes are not its digest's)."""
    if not (layer.media_type.endswith(".raw") and layer.digest.startswith("sha256:")):
        return None
    oid = layer.annotations.get(ANNOTATION_GIT_OID)
    if oid is not None:
        return GitFile(path, oid, layer, None) if re.fullmatch(r"[0-9a-f]{40}", oid) else None
    pointer = lfs_pointer(layer.digest.split(":", 1)[1], layer.size)
    return GitFile(path, dulwich("objects").Blob.from_string(pointer).id.decode(), layer, pointer)


def git_files(layers: Iterable[Descriptor]) -> list[GitFile] | None:
    """A commit's layers as git files, each at the path it names; None when one cannot be
    a file in git (an archive layer, a layer that names no path)."""
    found = []
    for layer in layers:
        path = layer.named_path
        entry = git_file(path, layer) if path else None
        if entry is None:
            return None
        found.append(entry)
    return found


def git_trees(files: list[GitFile]) -> tuple[str, list[Tree]]:
    """The root tree's id and every tree object of ``files`` (paths with ``/`` in folders)."""
    new_tree = dulwich("objects").Tree
    folders: dict[str, Tree] = {"": new_tree()}
    for f in files:
        parts = f.path.split("/")
        for depth in range(1, len(parts)):
            folders.setdefault("/".join(parts[:depth]), new_tree())
        parent = "/".join(parts[:-1])
        folders[parent].add(parts[-1].encode(), FILE_MODE, f.blob.encode())
    # Deepest first: a folder's id is known before its parent's entry is added.
    for folder in sorted((p for p in folders if p), key=lambda p: -p.count("/")):
        parent, _, name = folder.rpartition("/")
        folders[parent].add(name.encode(), 0o040000, folders[folder].id)
    return folders[""].id.decode(), list(folders.values())


def commit_raw(tree: str, text: str) -> bytes:
    return f"tree {tree}\n".encode() + text.encode()


def commit_oid(tree: str, text: str) -> str:
    """The git id of the commit whose tree is ``tree`` and whose text after it is ``text``."""
    raw = commit_raw(tree, text)
    return hashlib.sha1(f"commit {len(raw)}\0".encode() + raw).hexdigest()


def commit_text(parent: str | None, author: str, date: int, title: str, message: str) -> str:
    """A hub commit's text after its tree line, as git would write it: the author is the
    committer, at ``date`` in UTC; the message is the title, a blank line and the rest."""
    name = _IDENT_UNSAFE.sub("", author).strip() or "anonymous"
    ident = f"{name} <{name.replace(' ', '.')}@modelpack> {date} +0000"
    body = title.strip() or "commit"
    if message.strip():
        body += "\n\n" + message.strip()
    head = f"parent {parent}\n" if parent else ""
    return f"{head}author {ident}\ncommitter {ident}\n\n{body}\n"


def parents_of(text: str) -> list[str]:
    """The parent ids a commit's text names."""
    found = []
    for line in text.split("\n"):
        if not line:
            break
        if line.startswith("parent "):
            found.append(line[7:])
    return found
