"""Files from the node cache, pulled through from the registry on first request.

The first GET of any file of a manifest starts one background pull of the whole
model into the node cache (``transfer.pull_to_node_cache``: store blobs, a tagged
manifest, the materialized tree), exactly what ``modelpack pull`` makes, so
``cache ls`` / ``cache prune`` / a later ``modelpack pull`` see it.  A file asked
for before that finishes is pulled on its own at once (its blob into the same
store, through the same copy); the per-blob flocks of the store make the two,
and any number of concurrent requests or processes, download each blob once.

While a raw (weight) blob is still arriving, its bytes are streamed to the client
as they land in the store's partial file, all but the last byte of the response:
that one goes out only after the whole blob hashed to its digest, so no client
ever completes a download of unverified bytes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import transfer
from ..endpoints import Endpoint
from ..errors import IntegrityError, RegistryUnavailableError
from ..oci.copy import CopyOptions, copy_graph
from ..oci.digests import CHUNK_SIZE
from ..oci.spec import Descriptor
from ..settings import Settings
from ..storage.cache import NodeCache
from .hub import RepoFile
from .metrics import Metrics
from .models import Model

log = logging.getLogger("modelpack.gateway")
STALL_SECONDS = 300.0  # a pull that delivers no byte for this long fails the response
POLL_SECONDS = 0.02


class Flight:
    """One background job that any number of requests wait on."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.result: Any = None

    def wait(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


class PullThrough:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.cache = NodeCache(settings)
        self.store = self.cache.store
        self.metrics = metrics
        self._flights: dict[str, Flight] = {}
        self._listings: dict[str, dict[str, RepoFile]] = {}
        self._lock = threading.Lock()

    def _start(self, key: str, kind: str, job: Callable[[], Any]) -> Flight:
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight
            flight = self._flights[key] = Flight()
        self.metrics.pull_started()

        def run() -> None:
            try:
                flight.result = job()
            except BaseException as exc:  # handed to every waiter
                flight.error = exc
                log.warning("pull failed: %s: %s", key, exc)
            finally:
                with self._lock:
                    self._flights.pop(key, None)
                self.metrics.pull_finished(kind, flight.error is None)
                flight.done.set()

        threading.Thread(target=run, name=f"pull {key[:40]}", daemon=True).start()
        return flight

    def in_flight(self) -> int:
        with self._lock:
            return len(self._flights)

    # -- the whole model --------------------------------------------------------

    def tree(self, model: Model) -> Path | None:
        return self.cache.ready(model.root.digest)  # complete and unchanged

    def prefetch(self, model: Model) -> Flight | None:
        """Start pulling the whole model into the node cache unless it is there."""
        if self.tree(model) is not None:
            return None
        return self._start(f"model {model.root.digest}", "model", lambda: self._pull_model(model))

    def _pull_model(self, model: Model) -> Path:
        src = Endpoint(
            model.repository,
            model.root.digest,
            model.key,
            registry_ref=model.reference,
            resolved=model.root,
        )
        result, path, _ = transfer.pull_to_node_cache(src, model.root, model.key, self.settings)
        self.metrics.pulled(result.stats.bytes_transferred)
        return path

    def listing(self, model: Model) -> dict[str, RepoFile]:
        """The model's files: from the manifest, else from its unpacked tree."""
        if model.view.files is not None:
            return model.view.files
        digest = model.root.digest
        with self._lock:
            known = self._listings.get(digest)
        if known is not None:
            return known
        flight = self.prefetch(model)
        tree = flight.wait() if flight is not None else self.tree(model)
        assert tree is not None
        files = {
            p.relative_to(tree).as_posix(): RepoFile(
                p.relative_to(tree).as_posix(), p.stat().st_size, None, digest
            )
            for p in sorted(tree.rglob("*"))
            if p.is_file()
        }
        with self._lock:
            self._listings[digest] = files
        return files

    # -- one file ---------------------------------------------------------------

    def cached_path(self, model: Model, f: RepoFile) -> Path | None:
        """Where the verified bytes of ``f`` already are on this node, if anywhere."""
        candidates = []
        if (tree := self.tree(model)) is not None:
            candidates.append(tree / f.path)
        if f.raw and f.layer is not None:
            candidates.append(self.store.intact_path(f.layer))
        elif f.layer is not None and (one := self.cache.ready(model.root.digest, [f.path])):
            candidates.append(one / f.path)
        return next((p for p in candidates if p is not None and p.is_file()), None)

    def pull_blob(self, model: Model, layer: Descriptor) -> Flight:
        return self._start(f"blob {layer.digest}", "blob", lambda: self._pull_blob(model, layer))

    def _pull_blob(self, model: Model, layer: Descriptor) -> Path:
        options = CopyOptions(
            concurrency=1,
            layer_filter=lambda d: d.digest == layer.digest,
            transfer_attempts=self.settings.retries,
        )
        with self.store.using():
            result = copy_graph(model.repository, model.root.digest, self.store, None, options)
        self.metrics.pulled(result.stats.bytes_transferred)
        return self.store.blob_path(layer.digest)

    def unpack_one(self, model: Model, f: RepoFile) -> Path:
        """A file of an archive layer, unpacked on its own (a partial tree of one file)."""
        assert f.layer is not None
        layer = f.layer

        def job() -> Path:
            self.pull_blob(model, layer).wait()
            tree, _ = self.cache.materialize(
                model.root,
                model.key,
                source=model.repository,
                patterns=[f.path],
                layer_filter=lambda d: d == layer,
            )
            return tree / f.path

        return self._start(f"file {model.root.digest} {f.path}", "file", job).wait()

    def follow(self, layer: Descriptor, flight: Flight, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start..end`` (inclusive) of a raw blob while it is being pulled.

        Read from the store's partial file as it grows; the final byte is sent only
        once the blob is published under its digest (verified), and only if it is
        the very file we read from (a partial discarded after a mismatch is not).
        """
        final, partial = self.store.blob_path(layer.digest), self.store.partial_path(layer)
        fd: int | None = None
        position, last_progress = start, time.monotonic()
        try:
            while position <= end:
                if fd is None:
                    fd = _open_first(final, partial)
                verified = fd is not None and _same_file(fd, final)
                if fd is not None and not verified and final.exists():
                    if position > start:
                        raise IntegrityError(
                            f"blob {layer.digest}: the partial download being streamed was "
                            "replaced; the response is cut so the client retries"
                        )
                    os.close(fd)
                    fd = None
                    continue
                limit = end + 1 if verified else end  # hold the last byte back
                if fd is not None and position < limit:
                    data = os.pread(fd, min(CHUNK_SIZE, limit - position), position)
                    if data:
                        position += len(data)
                        last_progress = time.monotonic()
                        yield data
                        continue
                if flight.done.is_set() and not final.exists():
                    flight.wait()  # raises the pull's error
                    raise IntegrityError(f"blob {layer.digest}: pulled but not in the store")
                if time.monotonic() - last_progress > STALL_SECONDS:
                    raise RegistryUnavailableError(
                        f"blob {layer.digest}: no progress from the registry "
                        f"for {STALL_SECONDS:.0f}s"
                    )
                time.sleep(POLL_SECONDS)
        finally:
            if fd is not None:
                os.close(fd)


def _open_first(*paths: Path) -> int | None:
    for path in paths:
        try:
            return os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
    return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
