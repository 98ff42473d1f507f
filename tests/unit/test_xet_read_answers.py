"""read/xet.py's reconstruction answers built from records and xorbs on disk, without a
gateway: what an answer costs when a file's terms cycle through many xorbs."""

import time
from pathlib import Path

import pytest
from support.xetbuild import chunk

from modelpack.gateway.core import xetformat
from modelpack.gateway.read import xet as xet_reads
from modelpack.gateway.read.xet import XetReads, record_reconstruction
from modelpack.gateway.state.shared import InProcess, ReadToken, token_key


class _Config:
    def __init__(self, home: Path) -> None:
        self.settings = type("Settings", (), {"home": home})()


def _reads(home: Path) -> XetReads:
    return XetReads(_Config(home), None, InProcess(home / "xet"))  # type: ignore[arg-type]


READER = ReadToken(None, "org/m", 2e9, "c" * 40)


def _xorb(store: Path, number: int, chunks: int) -> tuple[str, list[bytes]]:
    datas = [number.to_bytes(2, "little") + bytes([j]) for j in range(chunks)]
    name = xetformat.hash_name(xetformat.merkle_root([xetformat.chunk_hash(d) for d in datas]))
    (store / name).write_bytes(b"".join(chunk(d) for d in datas))
    return name, datas


def test_an_answer_reads_each_xorb_index_once_however_its_terms_cycle(tmp_path, monkeypatch):
    """A file whose terms cycle through more xorbs than the index cache keeps (256; 2
    here): each xorb's chunk headers are parsed once per answer, not once per term (a
    hand-made upload of 300 xorbs and 262,144 terms kept a thread busy for half an hour)."""
    monkeypatch.setattr(xet_reads, "INDEXES_KEPT", 2)
    reads = _reads(tmp_path)
    reads.store.mkdir(parents=True)
    xorbs = [_xorb(reads.store, n, 16) for n in range(3)]
    terms, content = [], b""
    for i in range(48):  # xorb 0, 1, 2, 0, 1, 2, ...: one chunk each
        name, datas = xorbs[i % 3]
        c = i // 3
        terms.append((name, c, c + 1, len(datas[c])))
        content += datas[c]
    record_reconstruction(reads.shared, "org/m", "ab" * 32, "cd" * 32, len(content), terms, {})
    parsed = []
    real = xet_reads.index_xorb
    monkeypatch.setattr(xet_reads, "index_xorb", lambda s: parsed.append(1) or real(s))
    answer = reads._answer(
        reads._record("ab" * 32, "org/m"), 0, len(content) - 1, "http://cas", "t", READER
    )
    assert len(answer["terms"]) == 48
    assert len(parsed) <= 3, f"{len(parsed)} xorb indexes parsed for 3 xorbs"
    # The answer is still the file: each term one chunk of its xorb, in order.
    assert [(t["hash"], t["range"]["start"]) for t in answer["terms"]] == [
        (name, start) for name, start, _, _ in terms
    ]
    assert sum(t["unpacked_length"] for t in answer["terms"]) == len(content)
    # A range from the middle (chunks of 3 bytes): byte 7 is in term 2 (xorb 2's chunk
    # 0), one byte in; byte 20 in term 6.
    part = reads._answer(reads._record("ab" * 32, "org/m"), 7, 20, "http://cas", "t", READER)
    assert part["offset_into_first_range"] == 1
    assert [(t["hash"], t["range"]["start"]) for t in part["terms"]] == [
        (name, start) for name, start, _, _ in terms[2:7]
    ]


@pytest.mark.parametrize("repo_id, route", [
    ("org/m", "/api/models/org/m/xet-read-token/"),
    ("datasets/org/ds", "/api/datasets/org/ds/xet-read-token/"),
])  # fmt: skip
def test_the_xet_auth_link_names_the_route_of_the_repo_type(tmp_path, repo_id, route):
    """huggingface_hub's hf_hub_download asks the read token where resolve's Link says:
    for a dataset that is /api/datasets/ORG/NAME (/api/models/datasets/... is a 404)."""
    reads = _reads(tmp_path)
    reads.store.mkdir(parents=True)
    name, datas = _xorb(reads.store, 1, 1)
    record_reconstruction(reads.shared, "org/m", "ab" * 32, "cd" * 32, len(datas[0]),
                          [(name, 0, 1, len(datas[0]))], {})  # fmt: skip

    class Request:
        def base_url(self, config):  # noqa: ANN001, ANN202
            return "http://hub"

    model = type("Model", (), {"repo_id": repo_id, "commit": "c" * 40})()
    headers = reads.headers(Request(), model, "cd" * 32, len(datas[0]))  # type: ignore[arg-type]
    assert headers["Link"] == f'<http://hub{route}{"c" * 40}>; rel="xet-auth"'


def test_a_file_of_many_tiny_terms_is_not_recorded_for_downloads():
    from modelpack.gateway.writes.xet import recordable

    assert recordable(1 << 30, (1 << 30) // 65536)  # hf_xet's 64 KiB chunks
    assert recordable(100, 1) and recordable(0, 0)
    assert not recordable(262_144, 262_144)  # one-byte chunks, as an attacker may send
    assert not recordable(1 << 20, 1024)  # 1 KiB chunks


def test_a_replicated_record_signs_where_a_replica_without_the_xorb_finds_it(tmp_path):
    """With replicas a record names each xorb's registry blob; the fetch URL carries the
    blob and the read token's sha256 (never the token) under the signature, so a replica
    that lacks the xorb can fetch it with that token's credentials, and a URL whose blob or
    token was changed is refused.  A xorb neither here nor named is no Xet file."""
    reads = _reads(tmp_path)
    reads.store.mkdir(parents=True)
    name, datas = _xorb(reads.store, 2, 4)
    size = sum(map(len, datas))
    blob = ("sha256:" + "ee" * 32, 4 * (len(datas[0]) + 8))
    record_reconstruction(reads.shared, "org/m", "ab" * 32, "cd" * 32, size, [(name, 0, 4, size)],
                          {name: blob})  # fmt: skip
    (reads.store / name).rename(tmp_path / "away")  # this replica lacks it: the blob serves
    assert reads.file_hash("cd" * 32, size, "org/m") == "ab" * 32
    with open(tmp_path / "away", "rb") as stream:
        reads._indexes[f"{name}.{'ee' * 32}"] = xetformat.index_xorb(stream)
    answer = reads._answer(
        reads._record("ab" * 32, "org/m"), 0, size - 1, "http://cas", "tok", READER
    )
    url = answer["fetch_info"][name][0]["url"]
    assert f"&b={'ee' * 32}&n={blob[1]}&g={token_key('tok')}" in url and "tok&" not in url
    query = dict(part.split("=") for part in url.split("?")[1].split("&"))
    r = query["r"].split("-")
    source = (query["b"], int(query["n"]), query["g"])
    assert reads._sign(name, int(r[0]), int(r[1]), int(query["e"]), source) == query["s"]
    other = (query["b"], int(query["n"]), token_key("another"))
    assert reads._sign(name, int(r[0]), int(r[1]), int(query["e"]), other) != query["s"]
    record_reconstruction(
        reads.shared, "org/m", "ef" * 32, "12" * 32, size, [(name, 0, 4, size)], {}
    )
    assert reads.file_hash("12" * 32, size, "org/m") is None


def test_a_packed_xorb_index_reads_back_and_is_held_to_a_xorb_s_bounds(tmp_path):
    """What replicas keep in Redis for a xorb they received (its chunk sizes), so another
    answers reconstructions without fetching it: the same index back; malformed or
    out-of-bounds data refused."""
    store = tmp_path / "x"
    store.mkdir()
    name, _ = _xorb(store, 3, 5)
    with open(store / name, "rb") as stream:
        index = xetformat.index_xorb(stream)
    assert xetformat.XorbIndex.from_packed(index.packed()) == index
    too_big = (9 + xetformat.PACKED_MAX).to_bytes(4, "little") + (1).to_bytes(4, "little")
    empty_chunk = (9).to_bytes(4, "little") + (0).to_bytes(4, "little")
    many = ((11).to_bytes(4, "little") + (3).to_bytes(4, "little")) * (
        xetformat.XORB_CHUNKS_MAX + 1
    )
    for bad in (b"", b"1234567", too_big, empty_chunk, many):
        with pytest.raises(xetformat.XetFormatError):
            xetformat.XorbIndex.from_packed(bad)


def test_a_replica_s_xorbs_are_trimmed_least_recently_used_first(tmp_path):
    """With replicas every kept xorb is a registry blob too: past --xet-cache-max the least
    recently used go, a xorb's names (its blob copies are hard links) together, files being
    written (``.part-``) never; the newest stays."""
    import os

    from modelpack.gateway.read.xet import trim_store, used

    store = tmp_path / "verified"
    store.mkdir()
    for age, name in enumerate(["new", "mid", "old"]):
        (store / name).write_bytes(b"x" * 100)
        os.utime(store / name, (1_000_000 - age * 1000, 1_000_000 - age * 1000))
    os.link(store / "old", store / "old.blobcopy")
    (store / ".part-1").write_bytes(b"y" * 500)
    used(store / "mid")  # just served: now the most recent
    assert trim_store(store, 0) == 0  # 0: no bound
    assert trim_store(store, 250) == 100
    assert sorted(p.name for p in store.iterdir()) == [".part-1", "mid", "new"]
    assert trim_store(store, 150) == 100
    assert sorted(p.name for p in store.iterdir()) == [".part-1", "mid"]
    assert trim_store(store, 150) == 0


@pytest.mark.parametrize("value, expected", [("100GiB", 100 * 1024**3), ("0", 0),
                                             ("1MiB", None)])  # fmt: skip
def test_xet_cache_max_is_a_size_of_at_least_a_few_xorbs(tmp_path, value, expected):
    from modelpack.errors import UsageError
    from modelpack.gateway.core.config import GatewayConfig

    if expected is None:
        with pytest.raises(UsageError, match="--xet-cache-max"):
            GatewayConfig(registry="127.0.0.1:5000/ns", xet_cache_max=value)
    else:
        assert (
            GatewayConfig(registry="127.0.0.1:5000/ns", xet_cache_max=value).xet_cache_max
            == expected
        )


def test_whether_a_file_is_offered_through_xet_is_asked_once_per_offer_ttl(tmp_path, monkeypatch):
    """Every resolve (a download's HEAD and GET) asks whether a file is a Xet file; with
    replicas that is a Redis call, so the answer (either way) is kept OFFER_TTL seconds."""
    reads = _reads(tmp_path)
    reads.store.mkdir(parents=True)
    name, datas = _xorb(reads.store, 4, 2)
    size = sum(map(len, datas))
    record_reconstruction(reads.shared, "org/m", "ab" * 32, "cd" * 32, size,
                          [(name, 0, 2, size)], {})  # fmt: skip
    asked = []
    real = reads.shared.xet_file
    monkeypatch.setattr(reads.shared, "xet_file", lambda *a: asked.append(a) or real(*a))
    for _ in range(5):
        assert reads.file_hash("cd" * 32, size, "org/m") == "ab" * 32
        assert reads.file_hash("ef" * 32, size, "org/m") is None
    assert len(asked) == 2
    reads.offered = xet_reads.TTLMap(16, 0.001)  # past its time: asked again
    assert reads.file_hash("cd" * 32, size, "org/m") == "ab" * 32
    time.sleep(0.01)
    assert reads.file_hash("cd" * 32, size, "org/m") == "ab" * 32
    assert len(asked) == 4
