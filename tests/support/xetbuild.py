"""Hand-made Xet uploads in the real format (huggingface/xet-core's spec/), for the
hostile tests: xorbs of one chunk (whose Merkle hash is that chunk's own hash, so no
tree is needed here) and shards.  Written from the spec, not from the gateway's code,
so the tests run the same against any version of it."""

from __future__ import annotations

import struct

import blake3
import lz4.block

# spec/hashing.md: the BLAKE3 key of chunk hashes.
DATA_KEY = bytes([102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28,
                  157, 228, 33, 16, 155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41])  # fmt: skip
SHARD_TAG = b"HFRepoMetaData\x00" + bytes(17)
FLAG_METADATA_EXT = 1 << 30
BOOKEND = b"\xff" * 32


def name_of(raw: bytes) -> str:
    """A 32-byte hash as the API writes it: four little-endian u64s in hex."""
    return "".join(f"{v:016x}" for v in struct.unpack("<4Q", raw))


def raw_of(name: str) -> bytes:
    return struct.pack("<4Q", *(int(name[i : i + 16], 16) for i in range(0, 64, 16)))


def chunk(data: bytes, compress: bool = False) -> bytes:
    """One serialized chunk: header (version 0, packed size, scheme, size) and body."""
    body = lz4.block.compress(data, store_size=False) if compress else data
    header = bytes([0]) + len(body).to_bytes(3, "little")
    return header + bytes([1 if compress else 0]) + len(data).to_bytes(3, "little") + body


def one_chunk_xorb(data: bytes, compress: bool = False) -> tuple[str, bytes]:
    """(the xorb's hash, its bytes): a one-leaf Merkle tree's root is the leaf."""
    return name_of(blake3.blake3(data, key=DATA_KEY).digest()), chunk(data, compress)


Term = tuple[str, int, int, int]  # xorb hash, first chunk, end chunk, bytes


def shard(files: list[tuple[list[Term], str | None]]) -> bytes:
    """A shard describing ``files``: each its terms and the sha256 hf_xet declares
    in the metadata extension (None: no extension)."""
    out = [SHARD_TAG + struct.pack("<QQ", 2, 0)]
    for terms, sha256 in files:
        flags = FLAG_METADATA_EXT if sha256 else 0
        out.append(bytes(32) + struct.pack("<II", flags, len(terms)) + bytes(8))
        out += [raw_of(x) + struct.pack("<IIII", 0, size, s, e) for x, s, e, size in terms]
        if sha256:
            out.append(raw_of(sha256) + bytes(16))
    return b"".join([*out, BOOKEND, bytes(16)])
