"""Pickle scans of a commit's files (model/pickles.py scans; docs/gateway.md, "Scanning").

``scan_commit`` reads each pickle-based file a commit adds before the commit is built (a
spooled inline file from disk, an LFS or Xet file from the registry by Range requests of
1 MiB blocks, so a 10 GB ``.bin`` costs a few blocks, not a download) and refuses the
commit with a 400 naming the file and what it calls, unless the gateway runs with
``--allow-unsafe-pickle``; each scan is kept for its layer's annotation (read/scans.py
shows it).
"""

from __future__ import annotations

import io
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from ...model.pickles import is_pickle_path, refusal, scan_file, scan_stream
from ...oci.spec import Descriptor
from ...registry.client import RegistryRepository
from ..core.hub import HubError
from .commits import Change

BLOCK = 1 << 20
BLOCKS_KEPT = 8  # 8 MiB of a blob in memory while one file is scanned


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
