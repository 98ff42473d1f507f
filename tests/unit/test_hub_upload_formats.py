"""The byte formats behind uploads: the commit's NDJSON (spooled as it arrives), Xet shards,
xorb chunks and LZ4, checked against inputs built here by the specs' rules."""

import base64
import hashlib
import io
import json
import random
import struct

import pytest

from modelpack.gateway.core.hub import HubError
from modelpack.gateway.core.xetformat import (
    BOOKEND,
    CHUNK_MAX,
    FILE_TERMS_MAX,
    FLAG_METADATA_EXT,
    FLAG_VERIFICATION,
    SHARD_FILES_MAX,
    XORB_CHUNKS_MAX,
    XetFormatError,
    decompress_chunk,
    hash_name,
    index_xorb,
    lz4_decompress,
    merkle_root,
    parse_shard,
    read_chunks,
    xorb_hash,
)
from modelpack.gateway.writes.payload import operations


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
    index = index_xorb(xorb)
    assert list(read_chunks(xorb, index, 1, 3)) == [b"\x01\x01", b"\x02\x02\x02"]
    assert (index.chunks, index.size(1, 3), index.size(0, 5)) == (5, 5, 15)
    single = io.BytesIO(chunk(b"a"))
    with pytest.raises(XetFormatError):
        list(read_chunks(single, index_xorb(single), 0, 2))
    with pytest.raises(XetFormatError):
        decompress_chunk(7, b"", 0)


# xet-core merklehash/src/aggregated_hashes.rs, test_correctness: (hash, size) leaves
# and the root cas_node_hash computes for them.
LEAVES = [
    ("0" * 64, 0),
    ("cfc5d07f6f03c29bbf424132963fe08d19a37d5757aaf520bf08119f05cd56d6", 100),
    ("c3e67584b5c4fc2a89837ec39e40f2c8a6bb0b2987ac94cd4b31e5fbdd210a72", 200),
    ("0d2beb91b9196929a5ddec9f6e306924ddf4a24268e3e59fd8464738d525af37", 300),
    ("adf8773496a9b7319b2e50dc98093f344053b17d8ad37100b9c07d9805988784", 400),
    ("4ac202caf347fc1e9c874b1ef6a1c5e619141eb775a6f43f0f0124ccd0060d9e", 500),
    ("b3b28636f65c149ea52eb1f94669466f70f033b54cea792824c696ba6ef3c389", 600),
    ("0e2c1a002aae913d2c0fc8ddfa4e9e14b7b311b3b0d458726d5d9f6a6318013c", 700),
]


@pytest.mark.parametrize(
    ("leaves", "root"),
    [
        ([], "0" * 64),
        ([1], LEAVES[1][0]),
        ([1, 2, 3], "71ec1275fca074724e2dd666921b3277c7cee603e4d025bcab2d4050015be2bc"),
        ([1] * 4, "89f2ada89ff8c96763c6b25010e6dd76a4c05b1466207633ea559acf2093211b"),
        ([1, 2, 1, 2, 3, 4], "52c826f99507aa05d0b45e9837fa1709e0485425cfbcb1e80db3905cf98b3ee9"),
        ([3, 4, 5, 3], "73b9dc802ab03a0855c66823a18d95c2a785af594535756abf405038b6270cb8"),
        (list(range(8)), "f62abe77e3fb9c954fe52b0028027ddc90c064c45951a4fd2211d87e5c0011db"),
        ([1] * 32, "0a0123c1617921883b7e13902095fcb86676e77c49120c33b233003b0af0e0a6"),
        ([i % 8 for i in range(64)], "6554007c9b5d0a5e7918f79596a1b68815c1407535585435f5735db761f21b88"),
    ],
)  # fmt: skip
def test_xorb_hashes_are_xet_cores_merkle_tree(leaves, root):
    nodes = [(raw_of(LEAVES[i][0]), LEAVES[i][1]) for i in leaves]
    assert hash_name(merkle_root(nodes)) == root


def raw_of(name: str) -> bytes:
    return struct.pack("<4Q", *(int(name[i : i + 16], 16) for i in range(0, 64, 16)))


def test_a_xorb_is_named_by_the_merkle_hash_of_its_chunks_however_compressed():
    import lz4.block

    data = [random.Random(i).randbytes(1000 + i) for i in range(12)]
    plain = io.BytesIO(b"".join(chunk(d) for d in data))
    packed = b"".join(
        bytes([0]) + len(body).to_bytes(3, "little") + b"\x01" + len(d).to_bytes(3, "little") + body
        for d in data
        for body in [lz4.block.compress(d, store_size=False)]
    )
    name = xorb_hash(plain, index_xorb(plain))
    assert xorb_hash(io.BytesIO(packed), index_xorb(io.BytesIO(packed))) == name
    # An older client's footer after the chunks is not a chunk.
    footed = io.BytesIO(plain.getvalue() + b"XETBLOB\x01" + bytes(100))
    assert index_xorb(footed).chunks == 12 and xorb_hash(footed, index_xorb(footed)) == name
    other = io.BytesIO(b"".join(chunk(d) for d in data[:-1]))
    assert xorb_hash(other, index_xorb(other)) != name


@pytest.mark.parametrize(
    "body",
    [
        b"",  # no chunk
        chunk(b""),  # a chunk of nothing
        chunk(bytes(CHUNK_MAX + 1)),  # past the spec's 128 KiB
        chunk(b"abc")[:-1],  # cut short
        chunk(b"abc") + b"\x00\x01",  # a header cut short
        chunk(b"a") * (XORB_CHUNKS_MAX + 1),  # more chunks than xet-core makes
        bytes([1]) + chunk(b"abc")[1:],  # not version 0
    ],
    ids=["empty", "empty-chunk", "big-chunk", "cut-body", "cut-header", "many", "version"],
)
def test_xorbs_past_the_specs_bounds_are_refused(body):
    with pytest.raises(XetFormatError):
        index_xorb(io.BytesIO(body))


def test_a_xorb_unpacks_to_at_most_64_mib():
    import lz4.block

    body = lz4.block.compress(bytes(CHUNK_MAX), store_size=False)  # 128 KiB in ~500 bytes
    one = bytes([0]) + len(body).to_bytes(3, "little") + b"\x01" + CHUNK_MAX.to_bytes(3, "little")
    assert index_xorb(io.BytesIO((one + body) * 512)).size(0, 512) == 64 << 20
    with pytest.raises(XetFormatError, match="unpack to at most"):
        index_xorb(io.BytesIO((one + body) * 514))


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


def shard_of(files: list[bytes]) -> bytes:
    header = b"HFRepoMetaData\x00" + bytes(17) + struct.pack("<QQ", 2, 0)
    return header + b"".join(files) + BOOKEND + bytes(16)


def test_shards_past_the_count_limits_are_refused():
    entry = bytes(range(32)) + struct.pack("<IIII", 0, 10, 0, 1)
    one = bytes(32) + struct.pack("<II", 0, 1) + bytes(8) + entry
    assert len(parse_shard(shard_of([one] * SHARD_FILES_MAX))) == SHARD_FILES_MAX
    with pytest.raises(XetFormatError, match="at most"):
        parse_shard(shard_of([one] * (SHARD_FILES_MAX + 1)))
    many = FILE_TERMS_MAX + 1
    with pytest.raises(XetFormatError, match="at most"):
        parse_shard(shard_of([bytes(32) + struct.pack("<II", 0, many) + bytes(8) + entry * many]))
