"""Copy a manifest graph from one Target to another (oras-go's ``Copy``).

Push is copy(store -> registry), pull is copy(registry -> store or
directory), ``modelpack copy`` is copy(anything -> anything).  Skipping what
the destination has, cross-repository mounts, parallel blob transfers,
resuming interrupted transfers, referrers (signatures) and progress
reporting live here once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import BinaryIO

from ..errors import AuthorizationExpiredError, NotFoundError, TransferInterruptedError
from ..progress import NullProgress, PlannedProgress, Progress, ReportingReader
from .digests import parse_digest, sha256_bytes
from .pieces import ConnectionBudget, PieceSource, RangedPolicy, default_policy
from .spec import (
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    Descriptor,
    Manifest,
    manifest_successors,
    parse_document,
)
from .target import (
    FileTreeWriter,
    Mounter,
    PieceFetcher,
    RangeFetcher,
    ResumablePusher,
    SpaceChecker,
    Target,
    fetch_bytes,
    push_bytes,
    referrers_of,
)

REFERRER_DEPTH = 3
# cosign's tag-based companions of an image: signatures, attestations, SBOMs.
COMPANION_SUFFIXES = (".sig", ".att", ".sbom")


@dataclass
class CopyStats:
    """What a copy did, for --json output and for tests."""

    blobs: int = 0
    transferred: int = 0  # blobs whose bytes crossed the wire
    skipped: int = 0  # already present at the destination
    mounted: int = 0  # linked by the registry from another repository
    bytes_transferred: int = 0
    referrers: int = 0  # signatures and other referrers copied along
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
            "referrers": self.referrers,
        }


class CopyAbandoned(Exception):  # noqa: N818 - not an error of its own: the reason is elsewhere
    """Raised in a worker once the copy is being given up; what arrived stays resumable."""


@dataclass
class CopyResult:
    descriptor: Descriptor
    stats: CopyStats
    digests: set[str] = field(default_factory=set)  # every blob the destination now has
    rewritten_from: Descriptor | None = None  # the source manifest, when rewrite_root changed it


@dataclass
class CopyOptions:
    concurrency: int = 4
    progress: Progress = field(default_factory=NullProgress)
    # Repositories of the destination registry that may already hold a blob.
    mount_sources: Callable[[Descriptor], list[str]] | None = None
    layer_filter: Callable[[Descriptor], bool] | None = None
    # Copy referrers and cosign companion tags; the callables turn a tag into
    # a reference on the source and destination target.
    src_tag_reference: Callable[[str], str] | None = None
    dst_tag_reference: Callable[[str], str] | None = None
    with_referrers: bool = False
    transfer_attempts: int = 5  # per blob; an interrupted transfer resumes where it can
    # The root manifest's bytes -> the bytes to write instead (same blobs, other names:
    # ``--media-types``).  A rewritten root is a new digest: its referrers do not follow.
    rewrite_root: Callable[[bytes], bytes] | None = None
    # A big blob as parallel Range requests (oci/pieces.py); they share ``concurrency``.
    ranged: RangedPolicy = field(default_factory=default_policy)


def _label(desc: Descriptor) -> str:
    if desc.named_path:
        return desc.named_path
    return "config" if ".config." in desc.media_type else desc.digest[:19]


def _key(desc: Descriptor) -> str:
    """One progress unit per blob, and per file where one blob is written as two files."""
    return f"{desc.digest} {desc.filepath or ''}"


class GraphCopier:
    """One copy operation; holds the options so the recursion stays readable."""

    def __init__(self, src: Target, dst: Target, options: CopyOptions) -> None:
        self.src = src
        self.dst = dst
        self.options = options
        self.progress = options.progress
        self.stats = CopyStats()
        self.digests: set[str] = set()
        # Set when the copy is being given up (Ctrl-C, or another blob failed): the other
        # workers stop at their next chunk instead of finishing their blobs first.
        self._abandoned = threading.Event()
        # Blob connections open at once, layers and their pieces together.
        self.budget = ConnectionBudget(options.concurrency)

    # -- manifests ----------------------------------------------------------

    def copy_node(
        self,
        desc: Descriptor,
        reference: str | None,
        rewrite: Callable[[bytes], bytes] | None = None,
    ) -> Descriptor:
        """Copy ``desc`` and everything below it; tag it with ``reference``; the
        descriptor written (``desc``, or the rewritten manifest's)."""
        if desc.media_type not in MANIFEST_MEDIA_TYPES:
            self.copy_blobs([desc])
            return desc
        data = fetch_bytes(self.src, desc)
        what = f"{desc.digest} from {self.src.describe()}"
        parsed = parse_document(data, what)
        children = manifest_successors(desc.media_type, parsed, what)
        if rewrite is not None and (rewritten := rewrite(data)) != data:
            data = rewritten
            document = parse_document(data, what)
            desc = Descriptor(
                desc.media_type,
                sha256_bytes(data),
                len(data),
                artifact_type=document.get("artifactType"),
            )
        self.digests.update(c.digest for c in children if c.media_type not in MANIFEST_MEDIA_TYPES)
        if self.dst.exists(desc):
            # The destination has the manifest, hence (by copy order) all below it.
            self.stats.add(skipped=len(children))
            if reference is not None:
                self.dst.tag(desc, reference)
            return desc
        if desc.media_type in INDEX_MEDIA_TYPES:
            for child in children:
                self.copy_node(child, None)
        else:
            config, layers = children[:1], children[1:]
            if isinstance(self.dst, FileTreeWriter) and "config" in parsed:
                self.dst.plan(Manifest.from_dict(parsed, what))
            if self.options.layer_filter is not None:
                kept = [layer for layer in layers if self.options.layer_filter(layer)]
                partial, layers = len(kept) < len(layers), kept
            else:
                partial = False
            blobs = config + layers
            if isinstance(self.dst, SpaceChecker):
                self.dst.require_space([b for b in blobs if not self.dst.exists(b)])
            self.copy_blobs(blobs)
            if partial and not isinstance(self.dst, FileTreeWriter):
                return desc  # the manifest would claim blobs the destination lacks
        push_bytes(self.dst, desc, data, reference)
        return desc

    def copy_referrers(self, subject: Descriptor, depth: int = 0) -> None:
        """Signatures, SBOMs and other artifacts attached to ``subject``."""
        if depth < REFERRER_DEPTH:
            for referrer in referrers_of(self.src, subject):
                self.copy_node(referrer, None)
                self.stats.referrers += 1
                self.copy_referrers(referrer, depth + 1)
        src_tag, dst_tag = self.options.src_tag_reference, self.options.dst_tag_reference
        if depth == 0 and src_tag is not None and dst_tag is not None:
            alg, hexpart = parse_digest(subject.digest)
            for suffix in COMPANION_SUFFIXES:
                tag = f"{alg}-{hexpart}{suffix}"
                try:
                    companion = self.src.resolve(src_tag(tag))
                except NotFoundError:
                    continue
                self.copy_node(companion, dst_tag(tag))
                self.stats.referrers += 1

    # -- blobs --------------------------------------------------------------

    def copy_blobs(self, blobs: list[Descriptor]) -> None:
        if isinstance(self.dst, FileTreeWriter):
            unique = list({(b.digest, b.filepath): b for b in blobs}.values())
        else:
            unique = list({b.digest: b for b in blobs}.values())
        if isinstance(self.progress, PlannedProgress):
            self.progress.expect([(_key(b), b.size) for b in unique])
        if len(unique) <= 1 or self.options.concurrency == 1:
            for blob in unique:
                self.copy_blob(blob)
            return
        with ThreadPoolExecutor(max_workers=min(self.options.concurrency, len(unique))) as pool:
            futures = [pool.submit(self.copy_blob, blob) for blob in unique]
            try:
                done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            except BaseException:  # Ctrl-C while waiting: stop the workers, keep what arrived
                self._abandon(futures)
                raise
            if pending:  # a blob failed: the others need not finish
                self._abandon(pending)
            for future in done:
                future.result()  # re-raise the first failure
            for future in pending:
                if not future.cancelled():
                    future.result()

    def _abandon(self, futures: Iterable[Future]) -> None:
        self._abandoned.set()
        for future in futures:
            future.cancel()

    def _skip_or_mount(self, desc: Descriptor, key: str, label: str) -> bool:
        if self.dst.exists(desc):
            self.progress.start(key, label, desc.size)
            self.progress.finish(key, note="exists")
            self.stats.add(skipped=1)
            return True
        sources = self.options.mount_sources
        if isinstance(self.dst, Mounter) and sources is not None:
            for repository in sources(desc):
                if self.dst.mount(desc, repository):
                    self.progress.start(key, label, desc.size)
                    self.progress.finish(key, note="mounted")
                    self.stats.add(mounted=1)
                    return True
        return False

    def copy_blob(self, desc: Descriptor) -> None:
        key, label = _key(desc), _label(desc)
        if self._skip_or_mount(desc, key, label):
            return
        attempts = max(1, self.options.transfer_attempts)
        for attempt in range(attempts):
            self.progress.start(key, label, desc.size)
            received = 0

            def on_bytes(n: int) -> None:
                nonlocal received
                if self._abandoned.is_set():
                    raise CopyAbandoned(f"{desc.digest}: the copy was given up")
                received += n
                self.progress.advance(key, n)

            try:
                with self.budget.slot():
                    self._transfer(desc, key, on_bytes)
            except (TransferInterruptedError, AuthorizationExpiredError):
                # A dropped connection or a token that expired mid-transfer: go again
                # (from where we stopped, where both sides can do ranges).
                self.stats.add(nbytes=received)
                self.progress.advance(key, -received)
                if attempt + 1 == attempts:
                    raise
                time.sleep(min(0.25 * 2**attempt, 4.0))
                continue
            if not received and desc.size and isinstance(self.progress, PlannedProgress):
                self.progress.resumed(key, desc.size)  # complete from an earlier attempt
            self.progress.finish(key)
            self.stats.add(transferred=1, nbytes=received)
            return

    def _resumed(self, key: str, already: int) -> None:
        if isinstance(self.progress, PlannedProgress):
            self.progress.resumed(key, already)  # there before: not this run's bytes

    def _transfer(self, desc: Descriptor, key: str, on_bytes: Callable[[int], None]) -> None:
        src, dst = self.src, self.dst
        if isinstance(dst, ResumablePusher) and isinstance(src, RangeFetcher):

            @contextlib.contextmanager
            def opener(offset: int) -> Iterator[BinaryIO]:
                if offset:
                    self._resumed(key, offset)
                with src.fetch_from(desc, offset) as stream:
                    yield ReportingReader(stream, on_bytes)

            if isinstance(src, PieceFetcher) and self.options.ranged.applies(
                desc.size, self.budget.slots
            ):
                dst.push_resumable(
                    desc,
                    PieceSource(
                        desc,
                        src,
                        opener,
                        piece_size=self.options.ranged.piece_size,
                        budget=self.budget,
                        on_bytes=on_bytes,
                        on_resumed=lambda n: self._resumed(key, n),
                    ),
                )
                return
            dst.push_resumable(desc, opener)
            return
        with self.src.fetch(desc) as stream:
            self.dst.push(desc, ReportingReader(stream, on_bytes))


def copy_graph(
    src: Target,
    src_reference: str,
    dst: Target,
    dst_reference: str | None,
    options: CopyOptions | None = None,
) -> CopyResult:
    """Copy what ``src_reference`` names from ``src`` to ``dst`` as ``dst_reference``."""
    options = options or CopyOptions()
    root = src.resolve(src_reference)
    copier = GraphCopier(src, dst, options)
    written = copier.copy_node(root, dst_reference, options.rewrite_root)
    if options.with_referrers and written.digest == root.digest:
        copier.copy_referrers(root)
    return CopyResult(
        descriptor=written,
        stats=copier.stats,
        digests=copier.digests,
        rewritten_from=root if written.digest != root.digest else None,
    )
