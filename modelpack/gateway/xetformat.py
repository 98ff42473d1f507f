"""The Xet storage formats a client uploads: shards (which chunks make each file) and
xorbs (the chunks, LZ4 or byte-grouped LZ4 compressed), read as huggingface/xet-core's
spec/shard.md and spec/xorb.md describe them; LZ4 (frames and bare blocks) is decoded by
python-lz4, the ``[serve]`` extra's ``lz4``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import IntegrityError
from ..extras import require

SHARD_TAG_PREFIX = b"HFRepoMetaData\x00"
ENTRY = 48
FLAG_VERIFICATION = 1 << 31
FLAG_METADATA_EXT = 1 << 30
BOOKEND = b"\xff" * 32
LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"
CHUNK_MAX = 1 << 20  # spec: chunks are at most 128 KiB; a margin against junk headers


class XetFormatError(IntegrityError):
    """A shard or xorb that is not what the Xet spec describes."""


def hash_name(raw: bytes) -> str:
    """A 32-byte Xet hash as it appears in API paths: four little-endian u64s in hex."""
    return "".join(f"{value:016x}" for value in struct.unpack("<4Q", raw))


@dataclass(frozen=True)
class Term:
    xorb: str  # hash_name of the xorb
    start: int  # chunk index, inclusive
    end: int  # exclusive
    size: int  # bytes these chunks unpack to


@dataclass(frozen=True)
class FileInfo:
    file_hash: str
    terms: tuple[Term, ...]
    sha256: str | None = None  # what the client says the file's sha256 is (metadata ext)

    @property
    def size(self) -> int:
        return sum(term.size for term in self.terms)


def parse_shard(data: bytes) -> list[FileInfo]:
    """The files a shard upload describes (its CAS info section is not needed here)."""
    if len(data) < ENTRY or not data[:32].startswith(SHARD_TAG_PREFIX):
        raise XetFormatError("not a Xet shard (header tag)")
    (version,) = struct.unpack_from("<Q", data, 32)
    if version != 2:
        raise XetFormatError(f"Xet shard version {version} is not supported")
    files, offset = [], ENTRY
    while True:
        if offset + ENTRY > len(data):
            raise XetFormatError("Xet shard ends inside its file info section")
        file_hash = data[offset : offset + 32]
        if file_hash == BOOKEND:
            return files
        flags, count = struct.unpack_from("<II", data, offset + 32)
        offset += ENTRY
        terms = []
        for _ in range(count):
            if offset + ENTRY > len(data):
                raise XetFormatError("Xet shard ends inside a file's terms")
            xorb = hash_name(data[offset : offset + 32])
            _, size, start, end = struct.unpack_from("<IIII", data, offset + 32)
            if end <= start:
                raise XetFormatError("Xet shard: empty chunk range")
            terms.append(Term(xorb, start, end, size))
            offset += ENTRY
        if flags & FLAG_VERIFICATION:
            offset += ENTRY * count
        sha256 = None
        if flags & FLAG_METADATA_EXT:
            if offset + ENTRY > len(data):
                raise XetFormatError("Xet shard ends inside a file's metadata")
            sha256 = hash_name(data[offset : offset + 32])  # stored as a Xet hash is
            offset += ENTRY
        files.append(FileInfo(hash_name(file_hash), tuple(terms), sha256))


def xorb_chunks(stream: BinaryIO, start: int, end: int) -> Iterator[bytes]:
    """Chunks ``[start, end)`` of a serialized xorb, decompressed."""
    index = 0
    while index < end:
        header = stream.read(8)
        if len(header) < 8:
            raise XetFormatError(f"xorb has no chunk {index}")
        version = header[0]
        packed = int.from_bytes(header[1:4], "little")
        scheme = header[4]
        unpacked = int.from_bytes(header[5:8], "little")
        if version != 0 or packed > CHUNK_MAX or unpacked > CHUNK_MAX:
            raise XetFormatError(f"xorb chunk {index}: not a version 0 chunk header")
        if index < start:
            stream.seek(packed, 1)
        else:
            body = stream.read(packed)
            if len(body) != packed:
                raise XetFormatError(f"xorb chunk {index} is cut short")
            data = decompress_chunk(scheme, body, unpacked)
            if len(data) != unpacked:
                raise XetFormatError(f"xorb chunk {index} unpacks to {len(data)} bytes")
            yield data
        index += 1


def decompress_chunk(scheme: int, body: bytes, size: int) -> bytes:
    if scheme == 0:
        return body
    if scheme == 1:
        return lz4_decompress(body, size)
    if scheme == 2:
        return _ungroup4(lz4_decompress(body, size))
    raise XetFormatError(f"xorb chunk compression {scheme} is not supported")


def _ungroup4(data: bytes) -> bytes:
    """Undo byte grouping: four groups (the first len % 4 one byte longer) interleaved."""
    size, out = len(data), bytearray(len(data))
    base, extra = divmod(size, 4)
    position = 0
    for group in range(4):
        length = base + (1 if group < extra else 0)
        out[group::4] = data[position : position + length]
        position += length
    return bytes(out)


def lz4_decompress(data: bytes, size: int) -> bytes:
    """An LZ4 frame (or a bare block) holding exactly ``size`` bytes, decoded by python-lz4
    and never past ``size`` (a chunk that claims less than it unpacks to is refused)."""
    lz4 = require("lz4.frame", purpose="Xet uploads", extra="serve", package="lz4")
    block = require("lz4.block", purpose="Xet uploads", extra="serve", package="lz4")
    try:
        if not data.startswith(LZ4_FRAME_MAGIC):
            return block.decompress(data, uncompressed_size=size)
        decoder = lz4.LZ4FrameDecompressor()
        out = decoder.decompress(data, max_length=size + 1)
    except (RuntimeError, block.LZ4BlockError) as e:
        raise XetFormatError(f"LZ4 data does not decode: {e}") from None
    if len(out) > size or not decoder.eof:
        raise XetFormatError("LZ4 frame unpacks past its chunk, or is cut short")
    return out
