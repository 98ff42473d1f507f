"""Property tests on everything an untrusted registry or artifact author controls.

Manifests, configs, descriptors and file metadata must parse or raise
IntegrityError (exit 5), never another exception; tar layers with random
member names, types and link targets must unpack inside the target or be
refused, never write anywhere else.  MODELPACK_FUZZ_EXAMPLES raises the
example count for a long run (docs/security.md records one).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.helpers import make_artifact

from modelpack.errors import IntegrityError, InvalidReferenceError
from modelpack.oci.copy import CopyOptions, copy_graph
from modelpack.oci.digests import sha256_bytes
from modelpack.oci.modelrunner import parse_docker_model_config
from modelpack.oci.reference import parse_reference
from modelpack.oci.spec import (
    ANNOTATION_FILE_METADATA,
    ANNOTATION_FILEPATH,
    MEDIA_TYPE_OCI_MANIFEST,
    FileMetadata,
    manifest_successors,
    parse_manifest,
    parse_model_config,
)
from modelpack.schemas import DOCKER_MODEL_CONFIG, validate
from modelpack.storage.store import LayoutStore
from modelpack.storage.unpack import DirectoryTarget

EXAMPLES = int(os.environ.get("MODELPACK_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)

MANIFEST_KEYS = ["schemaVersion", "mediaType", "artifactType", "config", "layers", "subject",
                 "annotations", "manifests"]  # fmt: skip
DESCRIPTOR_KEYS = ["mediaType", "digest", "size", "annotations", "urls", "artifactType"]
GOOD_DIGEST = sha256_bytes(b"x")

descriptor_like = st.dictionaries(
    st.sampled_from(DESCRIPTOR_KEYS),
    json_values | st.just(GOOD_DIGEST) | st.integers(min_value=-2, max_value=1 << 64),
    max_size=6,
)
manifest_like = st.dictionaries(
    st.sampled_from(MANIFEST_KEYS),
    json_values | descriptor_like | st.lists(descriptor_like, max_size=4),
    max_size=8,
)


def _parse_or_refuse(parse, data, error=IntegrityError):  # noqa: ANN001, ANN202
    """The parsed value, or None after checking the refusal is one printable line."""
    try:
        return parse(data)
    except error as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 2000
        return None


@FUZZ
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bytes_parse_or_raise_integrity_error(data):
    manifest = _parse_or_refuse(parse_manifest, data)
    config = _parse_or_refuse(parse_model_config, data)
    docker = _parse_or_refuse(parse_docker_model_config, data)
    metadata = _parse_or_refuse(
        lambda d: FileMetadata.from_json(d.decode("utf-8", "replace")), data
    )
    if manifest is not None:
        assert isinstance(manifest.layers, tuple)
    if config is not None:
        assert all(isinstance(d, str) for d in config.diff_ids)
    if metadata is not None:
        assert isinstance(metadata.size, int)
    if docker is not None:
        validate(docker.to_dict(), DOCKER_MODEL_CONFIG)


@FUZZ
@given(manifest_like)
def test_manifest_shaped_documents_parse_or_raise_integrity_error(document):
    manifest = _parse_or_refuse(parse_manifest, json.dumps(document).encode())
    if manifest is None:
        return
    # What parsed is usable: digests well-formed (they become file names), sizes sane.
    for desc in (manifest.config, *manifest.layers):
        assert desc.digest.startswith("sha256:") and len(desc.digest) == 71
        assert 0 <= desc.size < 1 << 63
    successors = _parse_or_refuse(
        lambda d: manifest_successors(MEDIA_TYPE_OCI_MANIFEST, d), document
    )
    assert successors is None or len(successors) == 1 + len(manifest.layers)


def config_like(sections: list[str], keys: list[str], values=json_values):  # noqa: ANN001, ANN201
    """Documents shaped like a config: some of its sections, each some of its keys or junk."""
    return st.dictionaries(
        st.sampled_from(sections),
        st.dictionaries(st.sampled_from(keys), values, max_size=4) | json_values,
        max_size=3,
    )


MODEL_CONFIG_KEYS = ["name", "authors", "licenses", "diffIds", "capabilities", "architecture",
                     "reasoning", "inputTypes"]  # fmt: skip
DOCKER_CONFIG_KEYS = ["format", "quantization", "parameters", "architecture", "size", "gguf",
                      "safetensors", "diffusers", "context_size", "created", "diff_ids", "type"]  # fmt: skip


@FUZZ
@given(config_like(["descriptor", "config", "modelfs"], MODEL_CONFIG_KEYS))
def test_config_shaped_documents_parse_or_raise_integrity_error(document):
    config = _parse_or_refuse(parse_model_config, json.dumps(document).encode())
    if config is not None:
        assert isinstance(config.to_dict(), dict)  # what parsed serializes again


@FUZZ
@given(
    config_like(
        ["config", "descriptor", "rootfs"],
        DOCKER_CONFIG_KEYS,
        json_values
        | st.integers(-(1 << 40), 1 << 40)
        | st.dictionaries(st.text(max_size=8), st.text(max_size=8) | json_values, max_size=3),
    )
)
def test_docker_config_shaped_documents_parse_or_raise_integrity_error(document):
    """Docker Model Runner's config: what parses is what its schema in inspect --json accepts."""
    config = _parse_or_refuse(parse_docker_model_config, json.dumps(document).encode())
    if config is not None:
        validate(config.to_dict(), DOCKER_MODEL_CONFIG)


@FUZZ
@given(st.text(max_size=120))
def test_references_parse_or_raise_invalid_reference(text):
    reference = _parse_or_refuse(parse_reference, text, InvalidReferenceError)
    if reference is not None:
        assert parse_reference(str(reference)) == reference


# -- tar extraction -------------------------------------------------------------

NAME_PARTS = st.sampled_from(["a", "b", "..", ".", "", "c.bin", "\\", "/"])
member_names = st.lists(NAME_PARTS, min_size=1, max_size=5).map("/".join)
member_types = st.sampled_from(
    [
        tarfile.REGTYPE,
        tarfile.REGTYPE,
        tarfile.DIRTYPE,
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.FIFOTYPE,
        tarfile.CONTTYPE,
    ]  # fmt: skip
)
members = st.lists(
    st.tuples(member_names, member_types, member_names | st.just("/etc/passwd")),
    min_size=1,
    max_size=6,
)


def _tar(entries) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            data = b"data" if kind in (tarfile.REGTYPE, tarfile.CONTTYPE) else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def _everything_under(path: Path) -> list[tuple[str, bool]]:
    return sorted((p.relative_to(path).as_posix(), p.is_symlink()) for p in path.rglob("*"))


def _pull_layers(layers, workdir: Path) -> tuple[bool, Path]:
    store = LayoutStore(workdir / "store")
    make_artifact(store, "x", layers)
    out = workdir / "pulls" / "out"
    try:
        with DirectoryTarget(out) as directory:
            copy_graph(store, "x", directory, None, CopyOptions(concurrency=2))
    except IntegrityError:  # UnsafePathError included
        return False, out
    return True, out


def _check_contained(ok: bool, out: Path, workdir: Path, before: list) -> None:
    assert _everything_under(workdir / "canary") == before
    assert sorted(p.name for p in (workdir / "pulls").iterdir()) == (["out"] if ok else [])
    if ok:
        for path in out.rglob("*"):
            assert not path.is_symlink()
            assert path.resolve().is_relative_to(out.resolve())
            assert path.is_dir() or path.is_file()


@FUZZ
@given(members, st.sampled_from(["tar", "tar+gzip", "tar+zstd"]))
def test_random_tar_members_never_escape(entries, fmt):
    from support.helpers import compress

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "canary").mkdir()
        (workdir / "canary" / "keep").write_text("x")
        (workdir / "pulls").mkdir()
        before = _everything_under(workdir / "canary")
        how = {"tar": "tar", "tar+gzip": "gzip", "tar+zstd": "zstd"}[fmt]
        blob = compress(_tar(entries), how)
        media_type = f"application/vnd.cncf.model.weight.v1.{fmt}"
        ok, out = _pull_layers([(media_type, blob, {ANNOTATION_FILEPATH: "w"})], workdir)
        _check_contained(ok, out, workdir, before)


@FUZZ
@given(st.lists(member_names | st.text(max_size=30), min_size=1, max_size=4), json_values)
def test_random_raw_layer_paths_and_metadata_never_escape(paths, metadata):
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "canary").mkdir()
        (workdir / "pulls").mkdir()
        layers = [
            (
                "application/vnd.cncf.model.weight.v1.raw",
                f"blob {i}".encode(),
                {ANNOTATION_FILEPATH: path, ANNOTATION_FILE_METADATA: json.dumps(metadata)},
            )
            for i, path in enumerate(paths)
        ]
        ok, out = _pull_layers(layers, workdir)
        _check_contained(ok, out, workdir, [])
