"""The byte formats behind uploads: the commit's NDJSON (spooled as it arrives), Xet shards,
xorb chunks and LZ4, checked against inputs built here by the specs' rules."""

import base64
import hashlib
import io
import json
import random
import struct

import pytest

from modelpack.gateway.hub import HubError
from modelpack.gateway.payload import operations
from modelpack.gateway.xetformat import (
    BOOKEND,
    FLAG_METADATA_EXT,
    FLAG_VERIFICATION,
    XetFormatError,
    decompress_chunk,
    hash_name,
    lz4_decompress,
    parse_shard,
    xorb_chunks,
)


def ndjson(*items) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def test_commit_payload_spools_file_lines_across_reads(tmp_path):
    big = random.Random(1).randbytes(3 * 1024 * 1024 + 5)  # spans several 1 MiB reads
    body = ndjson(
        {"key": "header", "value": {"summary": "s", "description": "", "parentCommit": "a" * 40}},
        {
            "key": "file",
            "value": {
                "content": base64.b64encode(big).decode(),
                "path": "w.bin",
                "encoding": "base64",
            },
        },  # fmt: skip
        {"key": "lfsFile", "value": {"path": "x", "algo": "sha256", "oid": "b" * 64, "size": 3}},
        # Another client's key order: read whole, same result.
        {"value": {"path": "n.txt", "encoding": "base64", "content": "aGk="}, "key": "file"},
        {"key": "deletedFile", "value": {"path": "old"}},
    )
    ops = list(operations(io.BytesIO(body), len(body), tmp_path, line_max=1 << 20))
    assert [op.key for op in ops] == ["header", "file", "lfsFile", "file", "deletedFile"]
    spooled = ops[1].content
    assert ops[1].value["path"] == "w.bin" and spooled.size == len(big)
    assert spooled.sha256 == "sha256:" + hashlib.sha256(big).hexdigest()
    assert spooled.path.read_bytes() == big
    assert ops[3].content.path.read_bytes() == b"hi" and ops[3].value["path"] == "n.txt"
    assert ops[2].value["oid"] == "b" * 64 and ops[0].value["parentCommit"] == "a" * 40


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (ndjson({"key": "file", "value": {"content": "not base64!", "path": "p"}}), 400),
        (b"{not json}\n", 400),
        (ndjson({"key": "deletedFile", "value": {"path": "x" * 2000}}), 413),
        (ndjson(["a list"]), 400),
    ],
)
def test_commit_payload_refuses_malformed_lines(tmp_path, body, status):
    with pytest.raises(HubError) as caught:
        list(operations(io.BytesIO(body), len(body), tmp_path, line_max=1000))
    assert caught.value.status == status


def test_a_commit_payload_shorter_than_its_content_length_is_refused(tmp_path):
    """A dropped connection ends the body early: the lines that did arrive are not a commit."""
    body = ndjson({"key": "header", "value": {"summary": "s"}},
                  {"key": "deletedFile", "value": {"path": "a.txt"}})  # fmt: skip
    read = []
    with pytest.raises(HubError, match="ended 100 bytes short") as refused:
        for op in operations(io.BytesIO(body), len(body) + 100, tmp_path, 1 << 20):
            read.append(op.key)
    assert refused.value.status == 400 and read == ["header", "deletedFile"]
    assert [op.key for op in operations(io.BytesIO(body), len(body), tmp_path, 1 << 20)] == [
        "header",
        "deletedFile",
    ]


def test_hash_names_are_little_endian_words():
    # The example of xet-core's spec/api.md (whose printed string drops the "10" byte).
    assert hash_name(bytes(range(32))) == (
        "07060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918"
    )


def test_lz4_frames_and_blocks_from_the_real_encoder_decode_within_their_size():
    import lz4.block
    import lz4.frame

    data = b"".join(random.Random(7).choice([b"ab", b"xyz", bytes(range(40))]) for _ in range(500))
    assert lz4_decompress(lz4.frame.compress(data), len(data)) == data
    assert lz4_decompress(lz4.frame.compress(data, block_checksum=True), len(data)) == data
    assert lz4_decompress(lz4.block.compress(data, store_size=False), len(data)) == data
    # a chunk that unpacks to more than it declares, a cut frame, bytes that are not LZ4
    with pytest.raises(XetFormatError):
        lz4_decompress(lz4.frame.compress(data), len(data) - 1)
    with pytest.raises(XetFormatError):
        lz4_decompress(lz4.frame.compress(data)[:-20], len(data))
    with pytest.raises(XetFormatError):
        lz4_decompress(b"\x04\x22\x4d\x18garbage", 10)
    with pytest.raises(XetFormatError):
        lz4_decompress(b"\x1fa\x01\x00\xff\x0a\x10b" * 3, 1000)  # a block that breaks LZ4's rules


def group4(data: bytes) -> bytes:
    """Byte grouping as spec/xorb.md describes it (the client's side)."""
    return b"".join(data[i::4] for i in range(4))


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 7, 8, 1001])
def test_byte_grouping_is_undone(size):
    data = random.Random(size).randbytes(size)
    import lz4.frame

    assert decompress_chunk(2, lz4.frame.compress(group4(data)), size) == data


def chunk(data: bytes) -> bytes:
    return (
        bytes([0])
        + len(data).to_bytes(3, "little")
        + bytes([0])
        + len(data).to_bytes(3, "little")
        + data
    )


def test_xorb_chunk_ranges():
    xorb = io.BytesIO(b"".join(chunk(bytes([i]) * (i + 1)) for i in range(5)))
    assert list(xorb_chunks(xorb, 1, 3)) == [b"\x01\x01", b"\x02\x02\x02"]
    with pytest.raises(XetFormatError):
        list(xorb_chunks(io.BytesIO(chunk(b"a")), 0, 2))
    with pytest.raises(XetFormatError):
        decompress_chunk(7, b"", 0)


def test_shards_name_each_file_and_its_chunk_ranges():
    tag = b"HFRepoMetaData\x00" + bytes(17)
    header = tag + struct.pack("<QQ", 2, 200)
    xorb = bytes(range(32, 64))
    entry = xorb + struct.pack("<IIII", 0, 1000, 2, 5)
    flags = FLAG_VERIFICATION | FLAG_METADATA_EXT
    first = (
        bytes(range(32)) + struct.pack("<II", flags, 1) + bytes(8) + entry + bytes(48) + bytes(48)
    )
    second = bytes(32) + struct.pack("<II", 0, 2) + bytes(8) + entry + entry
    shard = header + first + second + BOOKEND + bytes(16) + BOOKEND + bytes(16)
    files = parse_shard(shard)
    assert [f.file_hash for f in files] == [hash_name(bytes(range(32))), hash_name(bytes(32))]
    assert files[0].terms[0].xorb == hash_name(xorb)
    assert (files[0].terms[0].start, files[0].terms[0].end, files[0].size) == (2, 5, 1000)
    assert files[1].size == 2000
    assert files[0].sha256 == "0" * 64 and files[1].sha256 is None  # from the metadata ext
    with pytest.raises(XetFormatError):
        parse_shard(b"x" * 100)
    with pytest.raises(XetFormatError):
        parse_shard(header + first)  # no bookend
