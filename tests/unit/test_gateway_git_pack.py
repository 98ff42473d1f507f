"""A pushed pack is checked before dulwich inflates it into memory: every object (a delta:
the object it makes) and all of them together within bounds, whatever the pack's compressed
size; an ordinary push passes through byte for byte, gzipped or not."""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib

import pytest

pytest.importorskip("dulwich")
from dulwich.object_format import SHA1  # noqa: E402
from dulwich.objects import Blob  # noqa: E402
from dulwich.pack import write_pack_objects  # noqa: E402
from dulwich.protocol import pkt_line  # noqa: E402

from modelpack.gateway.git import routes  # noqa: E402

COMMANDS = pkt_line(b"0" * 40 + b" " + b"1" * 40 + b" refs/heads/main\0report-status\n") + b"0000"


def pack_of(*objects: bytes) -> bytes:
    """A pack of raw ``(header, zlib data)`` entries."""
    body = b"".join(objects)
    data = b"PACK" + (2).to_bytes(4, "big") + len(objects).to_bytes(4, "big") + body
    return data + hashlib.sha1(data).digest()


def entry(kind: int, size: int, payload: bytes, prefix: bytes = b"") -> bytes:
    first, size_left, header = (kind << 4) | (size & 0x0F), size >> 4, bytearray()
    while size_left:
        header.append(first | 0x80)
        first, size_left = size_left & 0x7F, size_left >> 7
    header.append(first)
    return bytes(header) + prefix + zlib.compress(payload)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_all(body) -> bytes:  # noqa: ANN001
    chunks = []
    while data := body.read(7919):
        chunks.append(data)
    return b"".join(chunks)


def checked(request_body: bytes, object_max: int = 1 << 20):  # noqa: ANN201
    return routes._checked_push(io.BytesIO(request_body), object_max, io.BytesIO())


def test_an_ordinary_pack_passes_byte_for_byte():
    buf = io.BytesIO()
    blobs = [Blob.from_string(b"hello %d\n" % i * 50) for i in range(20)]
    write_pack_objects(buf.write, [(b, None) for b in blobs], SHA1, deltify=True)
    request = COMMANDS + buf.getvalue()
    assert read_all(checked(request)) == request

    # gzipped, as git sends a large request
    class Req:
        environ = {"wsgi.input": io.BytesIO(gzip.compress(request))}

        def header(self, name: str) -> str | None:
            return "gzip" if name == "Content-Encoding" else None

    assert read_all(routes._body(Req(), 1 << 20)) == request


def test_a_blob_that_inflates_past_the_bound_is_refused_before_it_is_inflated():
    bomb = entry(3, 200 << 20, b"\0" * (200 << 20))  # 200 MB of zeros, ~200 KB compressed
    assert len(bomb) < 1 << 20
    body = checked(COMMANDS + pack_of(bomb))
    assert body.read(len(COMMANDS)) == COMMANDS  # dulwich reads the commands
    with pytest.raises(OSError, match="inflate to more than"):
        body.read(4096)  # dulwich answers: unpack <why>


def test_a_delta_that_makes_a_huge_object_is_refused():
    base = Blob.from_string(b"x" * 100)
    # a REF_DELTA of a few bytes that says it makes 1 GiB (copies of the base, 100 bytes each)
    delta = varint(100) + varint(1 << 30) + b"\x90\x64" * 8
    ref = entry(7, len(delta), delta, prefix=base.sha().digest())
    raw = base.as_raw_string()
    body = checked(COMMANDS + pack_of(entry(3, len(raw), raw), ref))
    body.read(len(COMMANDS))
    with pytest.raises(OSError, match="inflate to more than"):
        body.read(4096)


def test_many_objects_are_bounded_in_all(monkeypatch):
    monkeypatch.setattr(routes, "PUSH_INFLATED_MAX", 10 << 20)
    blobs = [entry(3, 1 << 20, bytes([i]) * (1 << 20)) for i in range(11)]
    body = checked(COMMANDS + pack_of(*blobs), object_max=2 << 20)
    body.read(len(COMMANDS))
    with pytest.raises(OSError, match="inflate to more than"):
        body.read(4096)


def test_a_malformed_pack_is_left_to_dulwich():
    request = COMMANDS + b"PACK\0\0\0\2\0\0\0\1garbage"
    assert read_all(checked(request)) == request


def test_a_push_of_too_many_refs_is_refused_before_its_pack_is_read():
    def commands(n: int) -> bytes:
        lines = [
            pkt_line(b"0" * 40 + b" " + b"1" * 40 + b" refs/heads/b%d\n" % i) for i in range(n)
        ]
        return b"".join(lines) + b"0000"

    assert read_all(checked(commands(routes.PUSH_REFS_MAX))) == commands(routes.PUSH_REFS_MAX)
    with pytest.raises(routes.HubError, match="refs in one push"):
        checked(commands(routes.PUSH_REFS_MAX + 1))


def test_a_gzip_bomb_is_cut_at_the_request_bound():
    class Req:
        environ = {"wsgi.input": io.BytesIO(gzip.compress(b"\0" * (64 << 20)))}

        def header(self, name: str) -> str | None:
            return "gzip" if name == "Content-Encoding" else None

    with pytest.raises(routes.HubError, match="larger than this gateway takes"):
        read_all(routes._body(Req(), 16 << 20))
