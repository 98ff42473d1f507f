"""Docker Model Runner's own format: its config read strictly, the names its older (v0.1)
layers get, and its archive layers unpacked like ours.  What its packager writes today is
checked against the real peer in tests/integration/test_model_runner.py; Model Runner
v1.2.9 writes no archive layer any more (it still reads them), so those are made here."""

from __future__ import annotations

import json

import pytest
from support.helpers import make_artifact, make_tar

from modelpack.errors import IntegrityError, UnsafePathError
from modelpack.oci.copy import CopyOptions, copy_graph
from modelpack.oci.digests import sha256_bytes
from modelpack.oci.modelrunner import (
    DockerModelConfig,
    parse_docker_model_config,
    unnamed_layer_names,
)
from modelpack.oci.spec import (
    ANNOTATION_FILEPATH,
    MEDIA_TYPE_DOCKER_MODEL_CONFIG_V01,
    MEDIA_TYPE_DOCKER_MODEL_CONFIG_V02,
    MEDIA_TYPE_MODEL_CONFIG,
    Descriptor,
    Manifest,
)
from modelpack.schemas import DOCKER_MODEL_CONFIG, validate
from modelpack.storage.store import LayoutStore
from modelpack.storage.unpack import DirectoryTarget, planned_files

DOCKER = "application/vnd.docker.ai."
# As builder.FromDirectory wrote it for a tiny safetensors model (trimmed diff ids).
CONFIG = {
    "config": {"format": "safetensors", "quantization": "F32", "parameters": "30.78K",
               "size": "127.12kB", "safetensors": {"format": "pt", "tensor_count": "5"},
               "context_size": 64},
    "descriptor": {"created": "2026-12-06T22:38:15.799939326Z"},
    "rootfs": {"type": "rootfs", "diff_ids": ["sha256:" + "a" * 64]},
}  # fmt: skip


def test_the_config_reads_what_model_runner_writes_and_shows_it_in_its_names():
    config = parse_docker_model_config(json.dumps(CONFIG).encode())
    assert config == DockerModelConfig(
        format="safetensors", quantization="F32", parameters="30.78K", size="127.12kB",
        context_size=64, safetensors={"format": "pt", "tensor_count": "5"},
        created="2026-12-06T22:38:15.799939326Z", diff_ids=("sha256:" + "a" * 64,),
    )  # fmt: skip
    assert config.to_dict() == CONFIG
    validate(config.to_dict(), DOCKER_MODEL_CONFIG)
    # Fields it does not define are not carried; an empty document is an empty config.
    assert parse_docker_model_config(b'{"config": {"future": 1}}') == DockerModelConfig()


@pytest.mark.parametrize(
    ("document", "needle"),
    [({"config": {"context_size": 1 << 31}}, "out of range"),
     ({"config": {"context_size": True}}, "wrong type"),
     ({"config": {"parameters": 30780}}, "wrong type"),
     ({"config": {"safetensors": {"tensor_count": 5}}}, "must map names to strings"),
     ({"config": []}, "wrong type"),
     ({"descriptor": {"created": 0}}, "wrong type"),
     ({"rootfs": {"diff_ids": [1]}}, "list of strings")],
)  # fmt: skip
def test_a_config_go_would_not_decode_is_an_integrity_error(document, needle):
    with pytest.raises(IntegrityError, match=needle):
        parse_docker_model_config(json.dumps(document).encode())


def _layer(media_type: str, content: bytes, path: str | None = None) -> Descriptor:
    annotations = {ANNOTATION_FILEPATH: path} if path else {}
    return Descriptor(DOCKER + media_type, sha256_bytes(content), len(content), annotations)


def _manifest(layers: list[Descriptor], config: str = MEDIA_TYPE_DOCKER_MODEL_CONFIG_V01):
    return Manifest(Descriptor(config, sha256_bytes(b"{}"), 2), tuple(layers), artifact_type=None)


def test_layers_naming_no_file_get_model_runners_names():
    gguf = [_layer("gguf.v3", b"shard-%d" % i) for i in range(3)]
    named = _layer("gguf.v3", b"named", "q4.gguf")  # counted among the shards, keeps its name
    layers = [*gguf[:2], named, gguf[2], _layer("mmproj", b"p"), _layer("chat.template.jinja", b"t"),
              _layer("license", b"MIT"), _layer("safetensors", b"w"), _layer("dduf", b"d")]  # fmt: skip
    names = unnamed_layer_names(_manifest(layers))
    assert names == {
        gguf[0].digest: "model-00001-of-00004.gguf",
        gguf[1].digest: "model-00002-of-00004.gguf",
        gguf[2].digest: "model-00004-of-00004.gguf",
        layers[4].digest: "model.mmproj",
        layers[5].digest: "template.jinja",
        layers[6].digest: "LICENSE",
        layers[7].digest: "model.safetensors",
        layers[8].digest: layers[8].digest.removeprefix("sha256:") + ".dduf",
    }
    assert unnamed_layer_names(_manifest([gguf[0]], MEDIA_TYPE_DOCKER_MODEL_CONFIG_V02)) == {
        gguf[0].digest: "model.gguf"
    }
    licenses = [_layer("license", b"MIT"), _layer("license", b"Apache-2.0")]
    assert sorted(unnamed_layer_names(_manifest(licenses)).values()) == ["LICENSE-1", "LICENSE-2"]
    # Only Model Runner's format is named so; a generic file without a path stays unnamed.
    assert unnamed_layer_names(_manifest(gguf, MEDIA_TYPE_MODEL_CONFIG)) == {}
    assert unnamed_layer_names(_manifest([_layer("model.file", b"x")])) == {}


def _docker_artifact(store, layers, config=MEDIA_TYPE_DOCKER_MODEL_CONFIG_V01):
    make_artifact(store, "x", layers, config=(config, json.dumps(CONFIG).encode()))


def _pull(store, destination):
    with DirectoryTarget(destination) as directory:
        copy_graph(store, "x", directory, None, CopyOptions(concurrency=4))
    return directory


def test_two_projectors_naming_no_file_are_refused_as_model_runner_refuses_them(tmp_path):
    store = LayoutStore(tmp_path / "store")
    _docker_artifact(store, [(DOCKER + "gguf.v3", b"w", {}), (DOCKER + "mmproj", b"one", {}),
                             (DOCKER + "mmproj", b"two", {})])  # fmt: skip
    with pytest.raises(UnsafePathError, match="model.mmproj is written twice"):
        _pull(store, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_archive_layers_unpack_into_the_model_folder_whatever_path_they_name(tmp_path):
    """unpackLegacy extracts vllm.config.tar and dir.tar into the model folder; an annotation
    on one (NewLayer's temporary file name) names the archive, not a file of the model."""
    store = LayoutStore(tmp_path / "store")
    _docker_artifact(
        store,
        [(DOCKER + "safetensors", b"weights", {}),
         (DOCKER + "vllm.config.tar", make_tar([("config.json", b"{}")]),
          {ANNOTATION_FILEPATH: "dir-tar-123.tar"}),
         (DOCKER + "dir.tar", make_tar([("text_encoder/", None), ("text_encoder/a.json", b"a")]),
          {})],
    )  # fmt: skip
    directory = _pull(store, tmp_path / "out")
    assert sorted(directory.files) == ["config.json", "model.safetensors", "text_encoder/a.json"]
    assert (tmp_path / "out" / "text_encoder" / "a.json").read_bytes() == b"a"
    assert not (tmp_path / "out" / "dir-tar-123.tar").exists()


@pytest.mark.parametrize(
    "entries",
    [[("../escape", b"x")], [("/abs", b"x")], [("config.json", b"a"), ("config.json", b"b")],
     [("model.safetensors", b"again")]],
    ids=["dotdot", "absolute", "twice-in-the-archive", "over-a-layer"],
)  # fmt: skip
def test_a_hostile_archive_layer_is_refused_and_leaves_nothing(tmp_path, entries):
    store = LayoutStore(tmp_path / "store")
    _docker_artifact(store, [(DOCKER + "safetensors", b"weights", {}),
                             (DOCKER + "dir.tar", make_tar(entries), {})])  # fmt: skip
    with pytest.raises((UnsafePathError, IntegrityError)):
        _pull(store, tmp_path / "out" / "model")
    assert list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "escape").exists()


def test_planned_files_checks_named_and_unnamed_paths_before_the_first_byte():
    weights = _layer("safetensors", b"w")
    archive = _layer("dir.tar", b"tar bytes")  # its files are checked as they are read
    planned = planned_files([weights, archive], {weights.digest: "model.safetensors"})
    assert [str(p.relpath) for p in planned] == ["model.safetensors"]
    with pytest.raises(IntegrityError, match="no org.cncf.model.filepath"):
        planned_files([_layer("model.file", b"x")], {})
    with pytest.raises(UnsafePathError, match="escapes"):
        planned_files([_layer("model.file", b"x", "../x")], {})
    clash = [_layer("model.file", b"one", "a.json"), _layer("model.file", b"two", "a.json")]
    with pytest.raises(UnsafePathError, match="a.json is written twice"):
        planned_files(clash, {})
    same = _layer("model.file", b"one", "a.json")
    assert len(planned_files([same, same], {})) == 2  # one file, listed by each layer
