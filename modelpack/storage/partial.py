"""Resumable, verified downloads into a partial file.

Used by every destination that keeps bytes on disk (the store's ``ingest/``,
a pull directory's ``.blobs/``): what arrived before an interruption stays,
the next attempt asks the source for the rest, and the file is only handed
back once all of it hashes to the digest.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from ..errors import IntegrityError
from ..oci.digests import CHUNK_SIZE, VerifyingReader
from ..oci.pieces import PieceSource
from ..oci.spec import Descriptor
from ..oci.target import Opener
from .pieces import fill_pieces, settle_to_prefix


def fill_partial(
    partial: Path, desc: Descriptor, opener: Opener, what: str, *, durable: bool = True
) -> None:
    """Complete ``partial`` to exactly ``desc``'s bytes; ``opener(offset)`` streams the rest.

    Bytes already in the file are re-hashed (a local read), not fetched again.
    On an interruption the file keeps what arrived; on a digest mismatch it is
    deleted and IntegrityError raised.  An opener that is a PieceSource fetches
    the rest as parallel ranges (:mod:`.pieces`) unless the server ignores them.
    ``durable`` fsyncs the file before it
    is handed back: the shared store wants that (a blob published under its
    digest must hold those bytes even after a power cut); a pull into a
    user's directory does not, as cp and skopeo do not (it costs ~1/3 of a
    local pull's time).
    """
    if isinstance(opener, PieceSource) and fill_pieces(
        partial, desc, opener, what, durable=durable
    ):
        return
    settle_to_prefix(partial)  # a ranged attempt's pieces, for one stream to append to
    reader = VerifyingReader(io.BytesIO(), desc.digest, desc.size, what)
    if partial.exists() and partial.stat().st_size > desc.size:
        partial.unlink()
    if partial.exists():
        with open(partial, "rb") as previous:
            while data := previous.read(CHUNK_SIZE):
                reader.prime(data)
    with open(partial, "ab") as out:
        try:
            if reader.count < desc.size:
                with opener(reader.count) as stream:
                    reader.switch(stream)
                    for chunk in reader.chunks(CHUNK_SIZE):
                        out.write(chunk)
        finally:
            out.flush()
            if durable:
                os.fsync(out.fileno())
    try:
        reader.verify()
    except IntegrityError:
        partial.unlink()
        raise
