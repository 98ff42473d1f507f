"""Pickle scans at the gateway (model/pickles.py scans; docs/gateway.md, "Scanning").

Uploads: ``scan_commit`` reads each pickle-based file a commit adds before the commit is
built (a spooled inline file from disk, an LFS or Xet file from the registry by Range
requests of 1 MiB blocks, so a 10 GB ``.bin`` costs a few blocks, not a download) and
refuses the commit with a 400 naming the file and what it calls, unless the gateway runs
with ``--allow-unsafe-pickle``; each scan is kept for its layer's annotation.
Imports: the build refuses such a file (``UnsafePickleError``); ``UnsafeImportError``
makes that the import's 403, naming the file.  Display: ``file_security`` and
``repo_security`` answer what the hub answers in ``securityFileStatus`` (tree,
paths-info) and ``securityRepoStatus`` (model info), and ``scan_badge`` marks a file on
the web page, from the annotations the scans left.
"""

from __future__ import annotations

import html
import io
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from ..errors import UnsafePickleError
from ..model.pickles import PickleScan, is_pickle_path, refusal, scan_file, scan_stream
from ..oci.spec import ANNOTATION_PICKLE_SCAN, Descriptor
from ..registry.client import RegistryRepository
from .commits import Change
from .egress import RefusedError
from .hub import HubError, RepoFile

BLOCK = 1 << 20
BLOCKS_KEPT = 8  # 8 MiB of a blob in memory while one file is scanned
# The hub's levels (securityRepoStatus.filesWithIssues[].level) for our statuses.
LEVELS = {"suspicious": "suspicious", "unsafe": "unsafe", "error": "error"}


def scan_commit(
    repository: RegistryRepository, repo_id: str, change: Change, allow: bool
) -> Change:
    """``change`` with a scan on each pickle file it adds; a refused file stops the commit."""
    for path, entry in sorted(change.added.items()):
        if not is_pickle_path(path):
            continue
        if entry.local is not None:
            scan = scan_file(entry.local, path)
        else:
            desc = Descriptor("application/octet-stream", entry.digest, entry.size)
            scan = scan_stream(_BlobReader(repository, desc), path)
        if scan.refused:
            if not allow:
                raise HubError(
                    400,
                    f"{repo_id}: {refusal(scan).message}; this gateway refuses pickles that "
                    "run code when loaded (upload safetensors instead)",
                )
            scan = replace(scan, allowed=True)
        change.added[path] = replace(entry, pickle_scan=scan.annotation())
    return change


class UnsafeImportError(RefusedError):
    """An upstream file that would run code when loaded: nothing is imported."""

    def __init__(self, exc: UnsafePickleError, what: str) -> None:
        super().__init__(f"{what}: {exc.message}")
        self.public = f"{exc.message}; nothing was imported"


def layer_scan(f: RepoFile) -> PickleScan | None:
    if f.layer is None:
        return None
    return PickleScan.from_annotation(f.path, f.layer.annotations.get(ANNOTATION_PICKLE_SCAN))


def file_security(f: RepoFile) -> dict[str, Any] | None:
    """``securityFileStatus`` as the hub writes it (huggingface_hub's RepoFile.security):
    no antivirus runs here, so ``avScan`` is null."""
    scan = layer_scan(f)
    if scan is None:
        return None
    highest = max((i.safety for i in scan.imports), key=_SAFETY_ORDER.index, default="innocuous")
    return {
        "status": scan.status,
        "avScan": None,
        "pickleImportScan": {
            "highestSafetyLevel": highest,
            "imports": [
                {"module": i.module, "name": i.name, "safety": i.safety} for i in scan.imports
            ],
        },
    }


_SAFETY_ORDER = ["innocuous", "suspicious", "dangerous"]


def with_file_security(entries: list[dict], files: dict[str, RepoFile]) -> list[dict]:
    """Tree or paths-info entries, each scanned file's with its ``securityFileStatus``."""
    for entry in entries:
        found = files.get(entry.get("path", "")) if entry.get("type") == "file" else None
        if found is not None and (security := file_security(found)) is not None:
            entry["securityFileStatus"] = security
    return entries


def repo_security(files: dict[str, RepoFile]) -> dict[str, Any]:
    """``securityRepoStatus`` (huggingface_hub's ModelInfo.security_repo_status): the
    scans are done when the model was built or committed; the files they did not pass."""
    issues = []
    for path, f in sorted(files.items()):
        scan = layer_scan(f)
        if scan is not None and scan.status in LEVELS:
            issues.append({"path": path, "level": LEVELS[scan.status]})
    return {"scansDone": True, "filesWithIssues": issues}


def scan_badge(f: RepoFile) -> str:
    """The web page's mark beside a scanned file ("pickle: safe", "pickle: unsafe: calls
    posix.system (allowed)"), escaped: the names come from the file."""
    scan = layer_scan(f)
    if scan is None:
        return ""
    css = "scan-ok" if scan.status == "safe" else "scan-bad"
    return f' <span class="badge {css}">pickle: {html.escape(scan.summary())}</span>'


class _BlobReader(io.RawIOBase):
    """A registry blob as a seekable file, read in BLOCK-sized Range requests (the last
    BLOCKS_KEPT kept): what a zip's central directory and a pickle's few MiB need."""

    def __init__(self, repository: RegistryRepository, desc: Descriptor) -> None:
        self._repository = repository
        self._desc = desc
        self._position = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._desc.size}
        self._position = max(0, base[whence] + offset)
        return self._position

    def read(self, n: int = -1) -> bytes:
        end = self._desc.size if n is None or n < 0 else min(self._desc.size, self._position + n)
        parts = []
        while self._position < end:
            index = self._position // BLOCK
            block = self._block(index)
            start = self._position - index * BLOCK
            part = block[start : start + end - self._position]
            if not part:
                break
            parts.append(part)
            self._position += len(part)
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _block(self, index: int) -> bytes:
        if index in self._blocks:
            self._blocks.move_to_end(index)
            return self._blocks[index]
        start = index * BLOCK
        end = min(self._desc.size, start + BLOCK)
        chunks, wanted = [], end - start
        with self._repository.fetch_range(self._desc, start, end) as stream:
            while wanted > 0 and (chunk := stream.read(wanted)):
                chunks.append(chunk)
                wanted -= len(chunk)
        data = b"".join(chunks)
        self._blocks[index] = data
        if len(self._blocks) > BLOCKS_KEPT:
            self._blocks.popitem(last=False)
        return data
