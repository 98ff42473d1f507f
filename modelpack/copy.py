"""Copy a manifest graph from one Target to another (oras-go's ``Copy``).

Push is copy(store -> registry), pull is copy(registry -> store or
directory), ``modelpack copy`` is copy(registry -> registry).  Skipping what
the destination has, cross-repository mounts, parallel blob transfers,
retrying interrupted transfers and progress reporting live here once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from .errors import AuthorizationExpiredError, TransferInterruptedError
from .progress import NullProgress, Progress, ReportingReader
from .spec import INDEX_MEDIA_TYPES, MANIFEST_MEDIA_TYPES, Descriptor, manifest_successors
from .target import Target, fetch_bytes, push_bytes

TRANSFER_ATTEMPTS = 4


@dataclass
class CopyStats:
    """What a copy did, for --json output and for tests."""

    blobs: int = 0
    transferred: int = 0  # blobs whose bytes crossed the wire
    skipped: int = 0  # already present at the destination
    mounted: int = 0  # linked by the registry from another repository
    bytes_transferred: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(
        self, *, transferred: int = 0, skipped: int = 0, mounted: int = 0, nbytes: int = 0
    ) -> None:
        with self._lock:
            self.blobs += transferred + skipped + mounted
            self.transferred += transferred
            self.skipped += skipped
            self.mounted += mounted
            self.bytes_transferred += nbytes

    def to_dict(self) -> dict[str, int]:
        return {
            "blobs": self.blobs,
            "transferred": self.transferred,
            "skipped": self.skipped,
            "mounted": self.mounted,
            "bytesTransferred": self.bytes_transferred,
        }


@dataclass
class CopyResult:
    descriptor: Descriptor
    stats: CopyStats


def _label(desc: Descriptor) -> str:
    return (
        desc.filepath or desc.annotations.get("org.opencontainers.image.title") or desc.digest[:19]
    )


class GraphCopier:
    """One copy operation; holds the options so the recursion stays readable."""

    def __init__(
        self,
        src: Target,
        dst: Target,
        *,
        concurrency: int,
        progress: Progress,
        mount_from: str | None,
        layer_filter: Callable[[Descriptor], bool] | None,
    ) -> None:
        self.src = src
        self.dst = dst
        self.concurrency = max(1, concurrency)
        self.progress = progress
        self.mount_from = mount_from
        self.layer_filter = layer_filter
        self.stats = CopyStats()

    def copy_node(self, desc: Descriptor, reference: str | None) -> None:
        """Copy ``desc`` and everything below it; tag the root with ``reference``."""
        if desc.media_type not in MANIFEST_MEDIA_TYPES:
            self.copy_blobs([desc])
            return
        data = fetch_bytes(self.src, desc)
        document = json.loads(data)
        children = manifest_successors(desc.media_type, document)
        if self.dst.exists(desc):
            # The destination has the manifest, hence (by copy order) all below it.
            self.stats.add(skipped=len(children))
            if reference is not None:
                self.dst.tag(desc, reference)
            return
        if desc.media_type in INDEX_MEDIA_TYPES:
            for child in children:
                self.copy_node(child, None)
        else:
            config, layers = children[:1], children[1:]
            if self.layer_filter is not None:
                layers = [layer for layer in layers if self.layer_filter(layer)]
            self.copy_blobs(config + layers)
        push_bytes(self.dst, desc, data, reference)

    def copy_blobs(self, blobs: list[Descriptor]) -> None:
        unique = list({b.digest: b for b in blobs}.values())
        if len(unique) <= 1 or self.concurrency == 1:
            for blob in unique:
                self.copy_blob(blob)
            return
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(unique))) as pool:
            futures = [pool.submit(self.copy_blob, blob) for blob in unique]
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()
            for future in done:
                future.result()  # re-raise the first failure
            for future in pending:
                if not future.cancelled():
                    future.result()

    def copy_blob(self, desc: Descriptor) -> None:
        key = desc.digest
        label = _label(desc)
        if self.dst.exists(desc):
            self.progress.start(key, label, desc.size)
            self.progress.finish(key, note="exists")
            self.stats.add(skipped=1)
            return
        mount = getattr(self.dst, "mount", None)
        if self.mount_from and mount is not None and mount(desc, self.mount_from):
            self.progress.start(key, label, desc.size)
            self.progress.finish(key, note="mounted")
            self.stats.add(mounted=1)
            return
        for attempt in range(TRANSFER_ATTEMPTS):
            self.progress.start(key, label, desc.size)
            sent = 0

            def on_bytes(n: int) -> None:
                nonlocal sent
                sent += n
                self.progress.advance(key, n)

            try:
                with self.src.fetch(desc) as stream:
                    self.dst.push(desc, ReportingReader(stream, on_bytes))
            except (TransferInterruptedError, AuthorizationExpiredError):
                # A dropped connection or a token that expired mid-transfer: start again.
                self.progress.advance(key, -sent)
                if attempt + 1 == TRANSFER_ATTEMPTS:
                    raise
                time.sleep(min(0.5 * 2**attempt, 8.0))
                continue
            self.progress.finish(key)
            self.stats.add(transferred=1, nbytes=desc.size)
            return


def copy_graph(
    src: Target,
    src_reference: str,
    dst: Target,
    dst_reference: str | None,
    *,
    concurrency: int = 4,
    progress: Progress | None = None,
    mount_from: str | None = None,
    layer_filter: Callable[[Descriptor], bool] | None = None,
) -> CopyResult:
    """Copy what ``src_reference`` names from ``src`` to ``dst`` as ``dst_reference``."""
    root = src.resolve(src_reference)
    copier = GraphCopier(
        src,
        dst,
        concurrency=concurrency,
        progress=progress or NullProgress(),
        mount_from=mount_from,
        layer_filter=layer_filter,
    )
    copier.copy_node(root, dst_reference)
    return CopyResult(descriptor=root, stats=copier.stats)
