"""A registry that lies, and artifacts built to escape: every pull fails with the
documented exit code, writes nothing outside its target, and leaves no
half-written model behind (docs/security.md lists these attacks)."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile

import pytest
from support.helpers import make_artifact, make_tar, run_cli
from support.hostile_registry import HostileRegistry

from modelpack.errors import RegistryError
from modelpack.oci.digests import sha256_bytes
from modelpack.oci.spec import (
    ANNOTATION_FILE_METADATA,
    ANNOTATION_FILEPATH,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    FileMetadata,
)
from modelpack.registry import session
from modelpack.registry.client import Credentials, RegistryRepository, connect
from modelpack.storage.unpack import STAGING_PREFIX

RAW = "application/vnd.cncf.model.weight.v1.raw"
TAR = "application/vnd.cncf.model.weight.v1.tar"
CONFIG_FILE = (
    "application/vnd.cncf.model.weight.config.v1.raw",
    b'{"model_type": "bert"}',
    {ANNOTATION_FILEPATH: "config.json"},
)


@pytest.fixture
def hostile():
    server = HostileRegistry().start()
    yield server
    server.stop()


@pytest.fixture
def canary(tmp_path):
    """A directory beside the target that an escape would write into."""
    path = tmp_path / "canary"
    path.mkdir()
    (path / "keep.txt").write_text("untouched")
    return path


def _snapshot(path):
    return sorted(
        (p.relative_to(path).as_posix(), p.is_symlink(), p.read_bytes() if p.is_file() else b"")
        for p in path.rglob("*")
    )


def _pull(hostile, tmp_path, *args, env=None):
    out = tmp_path / "out"
    result = run_cli(
        "pull",
        f"{hostile.host}/evil/model:v1",
        "-o",
        str(out),
        "--plain-http",
        *args,
        env={"MODELPACK_RETRIES": "1", **(env or {})},
    )
    return result, out


def _assert_refused(result, out, canary, code=5, match=""):
    before = [("keep.txt", False, b"untouched")]
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert match in lines[0], lines[0]
    assert _snapshot(canary) == before
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(STAGING_PREFIX)] == []
    ours = {"canary", "modelpack-home", "docker-config"}
    assert sorted(p.name for p in out.parent.iterdir() if p.name not in ours) == []


def _tar_with(*members):
    """A tar of hand-made TarInfo entries (data for regular files only)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _entry(name, kind=tarfile.REGTYPE, data=b"x", linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


def _sparse_entry():
    info = tarfile.TarInfo("GNUSparseFile.0/big")
    data = b"1\n0\n1\n".ljust(512, b"\0") + b"x"
    info.size = len(data)
    info.pax_headers = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": "big",
        "GNU.sparse.realsize": str(10**12),  # a terabyte of holes from 1 KiB
    }
    return info, data


def escapes(canary):
    outside = str(canary / "keep.txt")
    return {
        "dotdot": _tar_with(_entry("../escape")),
        "nested-dotdot": _tar_with(_entry("a/../../escape")),
        "absolute": _tar_with(_entry(str(canary / "abs.txt"))),
        "symlink-out": _tar_with(_entry("link", tarfile.SYMTYPE, linkname=outside)),
        "write-through-symlink": _tar_with(
            _entry("sub", tarfile.SYMTYPE, linkname=str(canary)), _entry("sub/keep.txt")
        ),
        "hardlink-out": _tar_with(_entry("hard", tarfile.LNKTYPE, linkname="../canary/keep.txt")),
        "device": _tar_with(_entry("dev", tarfile.CHRTYPE)),
        "fifo": _tar_with(_entry("fifo", tarfile.FIFOTYPE)),
        "duplicate": _tar_with(_entry("w.bin", data=b"one"), _entry("w.bin", data=b"two")),
        "sparse": _tar_with(_sparse_entry()),
    }


@pytest.mark.parametrize(
    "attack",
    [
        "dotdot",
        "nested-dotdot",
        "absolute",
        "symlink-out",
        "write-through-symlink",
        "hardlink-out",
        "device",
        "fifo",
        "duplicate",
        "sparse",
    ],
)
def test_tar_layers_that_escape_are_refused(hostile, canary, tmp_path, attack):
    blob = escapes(canary)[attack]
    make_artifact(hostile, "v1", [CONFIG_FILE, (TAR, blob, {ANNOTATION_FILEPATH: "w.bin"})])
    result, out = _pull(hostile, tmp_path)
    _assert_refused(result, out, canary)


@pytest.mark.parametrize("path", ["../escape.bin", "/tmp/modelpack-escape.bin", "a/../../x"])
def test_raw_layer_paths_that_escape_are_refused(hostile, canary, tmp_path, path):
    make_artifact(hostile, "v1", [CONFIG_FILE, (RAW, b"weights", {ANNOTATION_FILEPATH: path})])
    result, out = _pull(hostile, tmp_path)
    _assert_refused(result, out, canary, match="escapes" if ".." in path else "absolute")
    assert not os.path.exists("/tmp/modelpack-escape.bin")


def _weights_artifact(hostile):
    make_artifact(
        hostile, "v1", [CONFIG_FILE, (RAW, b"w" * 100_000, {ANNOTATION_FILEPATH: "w.bin"})]
    )
    return sha256_bytes(b"w" * 100_000)


def test_blob_with_other_bytes_exits_5(hostile, canary, tmp_path):
    digest = _weights_artifact(hostile)
    hostile.blobs[digest] = b"v" * 100_000  # same size, other bytes
    result, out = _pull(hostile, tmp_path)
    _assert_refused(result, out, canary, match="digest mismatch")


def test_blob_with_too_many_bytes_exits_5(hostile, canary, tmp_path):
    digest = _weights_artifact(hostile)
    hostile.blobs[digest] = b"w" * 100_000 + b"extra" * 1000
    result, out = _pull(hostile, tmp_path)
    _assert_refused(result, out, canary, match="more than the expected")


def test_blob_with_too_few_bytes_exits_5(hostile, canary, tmp_path):
    digest = _weights_artifact(hostile)
    hostile.blobs[digest] = b"w" * 50_000
    result, out = _pull(hostile, tmp_path)
    assert result.returncode in (5, 6), result.stderr  # a short body reads as a cut connection
    assert _snapshot(canary) == [("keep.txt", False, b"untouched")]
    assert not out.exists()


def test_manifest_that_is_not_the_digest_asked_for_exits_5(hostile, canary, tmp_path):
    _weights_artifact(hostile)
    real = hostile.manifests["v1"]
    other = real.replace(b'"config"', b'"config" ', 1)  # same JSON, other digest
    asked = sha256_bytes(real)
    hostile.manifests[asked] = other
    out = tmp_path / "out"
    result = run_cli("pull", f"{hostile.host}/evil/model@{asked}", "-o", str(out), "--plain-http")
    _assert_refused(result, out, canary, match="digest")


def test_lying_docker_content_digest_exits_5(hostile, canary, tmp_path):
    _weights_artifact(hostile)
    hostile.content_digest["v1"] = "sha256:" + "1" * 64
    result, out = _pull(hostile, tmp_path)
    _assert_refused(result, out, canary, match="claims")


def test_oversized_manifest_exits_5(hostile, canary, tmp_path):
    _weights_artifact(hostile)
    document = json.loads(hostile.manifests["v1"])
    document["annotations"] = {"padding": "x" * (5 * 1024 * 1024)}
    hostile.manifests["v1"] = json.dumps(document).encode()
    hostile.content_digest["v1"] = sha256_bytes(hostile.manifests["v1"])
    result, out = _pull(hostile, tmp_path)
    _assert_refused(result, out, canary, match="larger than")


@pytest.mark.parametrize("shape", ["not-json", "list", "layers-not-list", "bad-digest", "size"])
def test_malformed_manifests_exit_5(hostile, canary, tmp_path, shape):
    _weights_artifact(hostile)
    document = json.loads(hostile.manifests["v1"])
    if shape == "not-json":
        body = b"{not json"
    elif shape == "list":
        body = b"[]"
    else:
        if shape == "layers-not-list":
            document["layers"] = {"a": 1}
        elif shape == "bad-digest":
            document["layers"][0]["digest"] = "sha256:../../../etc/passwd"
        else:
            document["layers"][0]["size"] = -1
        body = json.dumps(document).encode()
    hostile.manifests["v1"] = body
    hostile.content_digest["v1"] = sha256_bytes(body)
    result, out = _pull(hostile, tmp_path)
    _assert_refused(result, out, canary)


def test_too_many_layers_exit_5(hostile, canary, tmp_path):
    layers = [(RAW, f"w{i}".encode(), {ANNOTATION_FILEPATH: f"w{i}.bin"}) for i in range(6)]
    make_artifact(hostile, "v1", [CONFIG_FILE, *layers])
    result, out = _pull(hostile, tmp_path, env={"MODELPACK_MAX_LAYERS": "5"})
    _assert_refused(result, out, canary, match="limit of 5")


BOMB_SIZE = 256 * 1024 * 1024  # of zeros; compresses ~1000x


@pytest.fixture(scope="module")
def zero_tar():
    """A tar holding one 256 MiB file of zeros, streamed (never whole in memory)."""

    class Zeros(io.RawIOBase):
        def __init__(self):
            self.left = BOMB_SIZE

        def readinto(self, buffer):
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=1) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        info = tarfile.TarInfo("zeros.bin")
        info.size = BOMB_SIZE
        tar.addfile(info, Zeros())
    return buffer.getvalue()


@pytest.mark.parametrize("how", ["gzip", "zstd"])
def test_decompression_bombs_stop_at_the_expansion_limit(hostile, canary, tmp_path, how, zero_tar):
    import zstandard

    blob = zero_tar
    if how == "zstd":
        compressed = io.BytesIO()
        with gzip.GzipFile(fileobj=io.BytesIO(zero_tar)) as tar_stream:
            zstandard.ZstdCompressor().copy_stream(tar_stream, compressed)
        blob = compressed.getvalue()
    assert len(blob) * 100 < BOMB_SIZE  # a real bomb: past the 100x default ratio
    media_type = f"application/vnd.cncf.model.weight.v1.tar+{how}"
    make_artifact(hostile, "v1", [CONFIG_FILE, (media_type, blob, {ANNOTATION_FILEPATH: "z"})])
    result, out = _pull(hostile, tmp_path)
    _assert_refused(result, out, canary, match="unpacks to more than")


def test_a_layer_larger_than_its_declared_file_size_is_refused(hostile, canary, tmp_path):
    data = b"a" * 1_000_000
    blob = gzip.compress(make_tar([("w.bin", data)]), mtime=0)
    metadata = FileMetadata("w.bin", 0o644, 0, 0, 1000, "2024-01-01T00:00:00Z").to_json()
    annotations = {ANNOTATION_FILEPATH: "w.bin", ANNOTATION_FILE_METADATA: metadata}
    make_artifact(
        hostile,
        "v1",
        [CONFIG_FILE, ("application/vnd.cncf.model.weight.v1.tar+gzip", blob, annotations)],
    )
    result, out = _pull(hostile, tmp_path)
    _assert_refused(result, out, canary, match="unpacks to more than 1000 bytes")


def test_not_enough_disk_space_fails_before_writing(hostile, canary, tmp_path):
    digest = _weights_artifact(hostile)
    document = json.loads(hostile.manifests["v1"])
    for layer in document["layers"]:
        if layer["digest"] == digest:
            layer["size"] = 1 << 50  # a petabyte: no disk here has it
    hostile.manifests["v1"] = json.dumps(document).encode()
    hostile.content_digest["v1"] = sha256_bytes(hostile.manifests["v1"])
    result, out = _pull(hostile, tmp_path)
    _assert_refused(result, out, canary, code=1, match="not enough space")
    assert not any(f"/blobs/{digest}" in r for r in hostile.requests)


def test_a_huge_error_body_is_not_read_into_memory(hostile, canary, tmp_path):
    hostile.not_found_body = b'{"errors":[{"message":"' + b"x" * (64 * 1024 * 1024) + b'"}]}'
    result, out = _pull(hostile, tmp_path)  # nothing was pushed: every answer is that 404
    _assert_refused(result, out, canary, code=3, match="not found")
    assert len(result.stderr) < 1000  # the registry's words, shortened to one line


def test_a_huge_body_where_a_small_one_belongs_is_refused(hostile):
    hostile.ping_body = b"{" + b" " * (64 * 1024 * 1024) + b"}"
    result = run_cli(
        "login", hostile.host, "-u", "u", "--password-stdin", "--plain-http", input="p\n"
    )
    assert result.returncode == 1, result.stderr
    assert "larger than 4194304 bytes" in result.stderr and len(result.stderr) < 1000


def test_a_stalled_registry_times_out_with_exit_6(hostile, canary, tmp_path):
    _weights_artifact(hostile)
    hostile.stall = 5  # without a working read timeout the pull would succeed after it
    result, out = _pull(hostile, tmp_path, env={"MODELPACK_READ_TIMEOUT": "1"})
    _assert_refused(result, out, canary, code=6, match="did not answer in time")


# -- listings: Link headers stay on the registry ------------------------------

SUBJECT = Descriptor(MEDIA_TYPE_OCI_MANIFEST, sha256_bytes(b"subject"), 7)


def _tag_page(tags):
    return json.dumps({"name": "evil/model", "tags": tags}).encode()


def _referrer_page(names):
    manifests = [
        Descriptor(MEDIA_TYPE_OCI_MANIFEST, sha256_bytes(n.encode()), 1, artifact_type=n).to_dict()
        for n in names
    ]
    return json.dumps(
        {"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": manifests}
    ).encode()


LISTINGS = {  # what a listing is called, how to make its pages, how to read it, what it gives
    "tags": (
        "tags/list",
        "application/json",
        _tag_page,
        lambda repository: repository.list_tags(),
    ),
    "referrers": (
        f"referrers/{SUBJECT.digest}",
        MEDIA_TYPE_OCI_INDEX,
        _referrer_page,
        lambda repository: [d.artifact_type for d in repository.referrers(SUBJECT)],
    ),
}


def _listing(hostile, kind, pages, settings):
    """``hostile`` serving ``pages`` of one listing to a client that holds credentials."""
    key, content_type, page, _ = LISTINGS[kind]
    hostile.listings[key] = (content_type, [page(names) for names in pages])
    client = connect(hostile.host, settings, credentials=Credentials("ci", "s3cret"))
    return RegistryRepository(client, "evil/model")


@pytest.mark.parametrize("kind", sorted(LISTINGS))
def test_every_page_on_the_registry_is_read(hostile, settings, kind):
    repository = _listing(hostile, kind, [["a", "b"], ["c"], ["d"]], settings)
    assert LISTINGS[kind][3](repository) == ["a", "b", "c", "d"]


@pytest.mark.parametrize("kind", sorted(LISTINGS))
def test_a_link_to_another_host_is_refused_and_gets_no_credentials(hostile, settings, kind):
    hostile.basic_auth = True
    elsewhere = HostileRegistry().start()  # another port: another origin, recording what it gets
    try:
        key = LISTINGS[kind][0]
        elsewhere.listings[key] = (LISTINGS[kind][1], [LISTINGS[kind][2](["stolen"])])
        hostile.next_link = f"http://{elsewhere.host}/v2/evil/model/{key}"
        repository = _listing(hostile, kind, [["a"]], settings)
        with pytest.raises(RegistryError, match="links the next page to another host"):
            LISTINGS[kind][3](repository)
        assert hostile.authorizations  # the registry itself did get the credentials
        assert elsewhere.requests == [] and elsewhere.authorizations == []
    finally:
        elsewhere.stop()


@pytest.mark.parametrize("kind", sorted(LISTINGS))
def test_pages_that_link_in_a_loop_stop_at_the_page_cap(hostile, settings, kind, monkeypatch):
    monkeypatch.setattr(session, "MAX_PAGES", 5)
    hostile.next_link = f"/v2/evil/model/{LISTINGS[kind][0]}"  # page 0 links to itself
    repository = _listing(hostile, kind, [["a"]], settings)
    with pytest.raises(RegistryError, match="more than 5 pages"):
        LISTINGS[kind][3](repository)
    listing_requests = [r for r in hostile.requests if LISTINGS[kind][0] in r]
    assert len(listing_requests) == 5
