"""The Xet storage formats a client uploads and a download is answered from: shards (which chunks make each file) and
xorbs (the chunks, LZ4 or byte-grouped LZ4 compressed), read as huggingface/xet-core's
spec/shard.md, spec/xorb.md and spec/hashing.md describe them; LZ4 (frames and bare
blocks) is decoded by python-lz4 and BLAKE3 computed by blake3, both from the
``[serve]`` extra.

Every count and size is bounded here by what the spec (and xet-core, which hf_xet is)
allows, so a hand-made upload cannot make the gateway read or unpack more than that.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ...errors import IntegrityError
from ...extras import require

SHARD_TAG_PREFIX = b"HFRepoMetaData\x00"
ENTRY = 48
FLAG_VERIFICATION = 1 << 31
FLAG_METADATA_EXT = 1 << 30
BOOKEND = b"\xff" * 32
LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"
FOOTER_IDENT = b"XETBLOB"  # older clients append a footer (chunk hashes) after the chunks
CHUNK_MAX = 128 * 1024  # spec: a chunk holds at most 128 KiB
PACKED_MAX = CHUNK_MAX + CHUNK_MAX // 255 + 16  # LZ4's worst case for such a chunk
XORB_CHUNKS_MAX = 8 * 1024  # xet-core's MAX_XORB_CHUNKS
XORB_UNPACKED_MAX = 64 * 1024 * 1024 + CHUNK_MAX  # xet-core cuts a xorb at 64 MiB of chunks
XORB_MAX = 80 * 1024 * 1024  # a serialized xorb: the spec's 64 MiB and a margin
SHARD_FILES_MAX = 16 * 1024
FILE_TERMS_MAX = 256 * 1024  # a 50 GiB file in terms of 200 KiB on average
# spec/hashing.md: BLAKE3 keys of chunk hashes and of the Merkle tree's inner nodes.
DATA_KEY = bytes([102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28,
                  157, 228, 33, 16, 155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41])  # fmt: skip
NODE_KEY = bytes([1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230,
                  93, 221, 83, 111, 55, 199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63])  # fmt: skip
BRANCHING = 4  # xet-core's AGGREGATED_HASHES_MEAN_TREE_BRANCHING_FACTOR


class XetFormatError(IntegrityError):
    """A shard or xorb that is not what the Xet spec describes."""


def hash_name(raw: bytes) -> str:
    """A 32-byte Xet hash as it appears in API paths: four little-endian u64s in hex."""
    if len(raw) != 32:
        raise struct.error(f"a Xet hash is 32 bytes, not {len(raw)}")
    return raw[7::-1].hex() + raw[15:7:-1].hex() + raw[23:15:-1].hex() + raw[31:23:-1].hex()


@dataclass(frozen=True)
class Term:
    xorb: str  # hash_name of the xorb
    start: int  # chunk index, inclusive
    end: int  # exclusive
    size: int  # bytes these chunks unpack to, as the client declares it


@dataclass(frozen=True)
class FileInfo:
    file_hash: str
    terms: tuple[Term, ...]
    sha256: str | None = None  # what the client says the file's sha256 is (metadata ext)

    @property
    def size(self) -> int:
        """The size the client declares (the sum of its terms' sizes), not yet checked."""
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
        if len(files) == SHARD_FILES_MAX:
            raise XetFormatError(f"a Xet shard holds at most {SHARD_FILES_MAX} files")
        flags, count = struct.unpack_from("<II", data, offset + 32)
        if count > FILE_TERMS_MAX:
            raise XetFormatError(f"a file of a Xet shard has at most {FILE_TERMS_MAX} terms")
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


@dataclass(frozen=True)
class XorbIndex:
    """Where each chunk of a serialized xorb starts (``offsets[i]``; the last entry is
    where the chunks end) and what chunks ``[0, i)`` unpack to (``unpacked[i]``), read
    from the chunk headers alone: a file's size is known before a chunk is unpacked."""

    offsets: tuple[int, ...]
    unpacked: tuple[int, ...]

    @property
    def chunks(self) -> int:
        return len(self.offsets) - 1

    def size(self, start: int, end: int) -> int:
        """The bytes chunks ``[start, end)`` unpack to."""
        if not 0 <= start < end <= self.chunks:
            raise XetFormatError(f"xorb has no chunk {end - 1} (it has {self.chunks})")
        return self.unpacked[end] - self.unpacked[start]

    def packed(self) -> bytes:
        """Each chunk's serialized and unpacked size, 4 + 4 bytes little-endian: what a
        replica without the xorb answers reconstructions from (state/shared.py)."""
        out = bytearray()
        for i in range(self.chunks):
            out += (self.offsets[i + 1] - self.offsets[i]).to_bytes(4, "little")
            out += (self.unpacked[i + 1] - self.unpacked[i]).to_bytes(4, "little")
        return bytes(out)

    @classmethod
    def from_packed(cls, data: bytes) -> XorbIndex:
        """The index ``packed`` wrote, held to a xorb's bounds."""
        count = len(data) // 8
        if len(data) % 8 or not 0 < count <= XORB_CHUNKS_MAX:
            raise XetFormatError("not a packed xorb index")
        offsets, unpacked = [0], [0]
        for i in range(0, len(data), 8):
            serialized = int.from_bytes(data[i : i + 4], "little")
            size = int.from_bytes(data[i + 4 : i + 8], "little")
            if not 8 < serialized <= 8 + PACKED_MAX or not 0 < size <= CHUNK_MAX:
                raise XetFormatError("not a packed xorb index")
            offsets.append(offsets[-1] + serialized)
            unpacked.append(unpacked[-1] + size)
        if unpacked[-1] > XORB_UNPACKED_MAX:
            raise XetFormatError("not a packed xorb index")
        return cls(tuple(offsets), tuple(unpacked))


def _chunk_header(header: bytes, index: int) -> tuple[int, int, int]:
    """(packed size, compression scheme, unpacked size) of chunk ``index``."""
    if len(header) < 8:
        raise XetFormatError(f"xorb chunk {index} is cut short")
    packed = int.from_bytes(header[1:4], "little")
    unpacked = int.from_bytes(header[5:8], "little")
    if header[0] != 0:
        raise XetFormatError(f"xorb chunk {index}: not a version 0 chunk header")
    if not 0 < unpacked <= CHUNK_MAX or not 0 < packed <= PACKED_MAX:
        raise XetFormatError(
            f"xorb chunk {index} holds {unpacked} bytes ({packed} packed): "
            f"a chunk holds 1 to {CHUNK_MAX}"
        )
    return packed, header[4], unpacked


def index_xorb(stream: BinaryIO) -> XorbIndex:
    """The chunk index of a serialized xorb (a seekable stream), every header checked."""
    end = stream.seek(0, 2)
    position = stream.seek(0)
    offsets, unpacked = [0], [0]
    while position < end:
        header = stream.read(8)
        if header.startswith(FOOTER_IDENT):
            break
        if len(offsets) > XORB_CHUNKS_MAX:
            raise XetFormatError(f"a xorb holds at most {XORB_CHUNKS_MAX} chunks")
        packed, _, size = _chunk_header(header, len(offsets) - 1)
        position = stream.seek(packed, 1)
        if position > end:
            raise XetFormatError(f"xorb chunk {len(offsets) - 1} is cut short")
        offsets.append(position)
        unpacked.append(unpacked[-1] + size)
        if unpacked[-1] > XORB_UNPACKED_MAX:
            raise XetFormatError(f"a xorb's chunks unpack to at most {XORB_UNPACKED_MAX} bytes")
    if len(offsets) == 1:
        raise XetFormatError("a xorb holds at least one chunk")
    return XorbIndex(tuple(offsets), tuple(unpacked))


def read_chunks(stream: BinaryIO, index: XorbIndex, start: int, end: int) -> Iterator[bytes]:
    """Chunks ``[start, end)`` of a serialized xorb, decompressed."""
    index.size(start, end)  # the range exists
    stream.seek(index.offsets[start])
    for number in range(start, end):
        packed, scheme, size = _chunk_header(stream.read(8), number)
        body = stream.read(packed)
        if len(body) != packed:
            raise XetFormatError(f"xorb chunk {number} is cut short")
        data = decompress_chunk(scheme, body, size)
        if len(data) != size:
            raise XetFormatError(f"xorb chunk {number} unpacks to {len(data)} bytes")
        yield data


def chunk_hash(chunk: bytes) -> tuple[bytes, int]:
    """A chunk's leaf of the Merkle tree (spec/hashing.md): its keyed BLAKE3 and size."""
    return _blake3()(chunk, key=DATA_KEY).digest(), len(chunk)


def file_hash(leaves: list[tuple[bytes, int]]) -> str:
    """A file's Xet hash from the leaves of its chunks, in order: the Merkle root keyed
    again with 32 zero bytes (xet-core's ``file_hash``, no salt); zeros for no chunks."""
    if not leaves:
        return hash_name(bytes(32))
    return hash_name(_blake3()(merkle_root(leaves), key=bytes(32)).digest())


def xorb_hash(stream: BinaryIO, index: XorbIndex) -> str:
    """The name a xorb must be uploaded under: the Merkle hash of its chunks."""
    leaves = [chunk_hash(chunk) for chunk in read_chunks(stream, index, 0, index.chunks)]
    return hash_name(merkle_root(leaves))


def merkle_root(nodes: list[tuple[bytes, int]]) -> bytes:
    """xet-core's aggregated node hash over (hash, size) pairs: each level groups 2 to
    9 nodes, cutting after a node (from the third) whose last u64 is a multiple of 4."""
    if not nodes:
        return bytes(32)
    keyed = _blake3()
    while len(nodes) > 1:
        level, position = [], 0
        while position < len(nodes):
            group = nodes[position : position + _next_cut(nodes[position:])]
            text = "".join(f"{hash_name(digest)} : {size}\n" for digest, size in group)
            level.append((keyed(text.encode(), key=NODE_KEY).digest(), sum(s for _, s in group)))
            position += len(group)
        nodes = level
    return nodes[0][0]


def _next_cut(nodes: list[tuple[bytes, int]]) -> int:
    if len(nodes) <= 2:
        return len(nodes)
    end = min(2 * BRANCHING + 1, len(nodes))
    for i in range(2, end):
        if int.from_bytes(nodes[i][0][24:], "little") % BRANCHING == 0:
            return i + 1
    return end


def _blake3():  # noqa: ANN202 - the module's hasher class
    return require("blake3", purpose="Xet uploads", extra="serve").blake3


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
