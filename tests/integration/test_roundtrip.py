"""Build -> push -> pull through a real CNCF distribution registry."""

import json
import math
from pathlib import Path

import pytest
from safetensors import safe_open
from support.helpers import tree_files

import modelpack
from modelpack.model.metadata import format_param_size
from modelpack.schemas import MODEL_CONFIG, validate
from modelpack.storage.store import LayoutStore
from modelpack.testing import RegistryServer, make_tiny_model


def _ref(registry, name):
    return f"{registry.host}/{name}"


@pytest.mark.interop(
    "registries", "push + pull", "byte-identical round trip on each registry implementation"
)
def test_tiny_model_round_trips_byte_identical(tiny_model, any_registry, settings, tmp_path):
    ref = _ref(any_registry, "roundtrip/tiny:v1")
    built = modelpack.build(tiny_model, ref, settings=settings)
    pushed = modelpack.push(ref, settings=settings)
    assert pushed.digest == built.digest
    blobs = [x.descriptor for x in built.layers] + [built.manifest.config]
    if isinstance(any_registry, RegistryServer):  # distribution: blobs are per repository
        assert pushed.stats.transferred == len(blobs)
        assert pushed.stats.bytes_transferred == sum(b.size for b in blobs)
    else:  # crane's registry shares blobs across repositories: those are skipped
        assert pushed.stats.transferred + pushed.stats.skipped == len(blobs)

    out = tmp_path / "pulled"
    pulled = modelpack.pull_model(ref, out, settings=settings)
    assert pulled.path == out
    assert tree_files(out) == tree_files(tiny_model)
    assert sorted(pulled.files) == sorted(tree_files(tiny_model))
    assert pulled.digest == built.digest


@pytest.mark.interop(
    "registries", "re-push", "nothing sent the second time, on each registry implementation"
)
def test_second_push_sends_nothing(tiny_model, any_registry, settings):
    ref = _ref(any_registry, "roundtrip/again:v1")
    modelpack.build(tiny_model, ref, settings=settings)
    modelpack.push(ref, settings=settings)
    built = modelpack.inspect(ref, settings=settings)
    again = modelpack.push(ref, settings=settings)
    assert again.stats.bytes_transferred == 0
    assert again.stats.transferred == 0
    assert again.stats.skipped == len(built.manifest.layers) + 1


def test_push_to_a_new_tag_skips_existing_blobs(tiny_model, registry, settings):
    ref = _ref(registry, "roundtrip/retag:v1")
    modelpack.build(tiny_model, ref, settings=settings)
    modelpack.push(ref, settings=settings)
    (tiny_model / "README.md").write_text("---\nlicense: mit\n---\nchanged\n")
    ref2 = _ref(registry, "roundtrip/retag:v2")
    built = modelpack.build(tiny_model, ref2, settings=settings)
    pushed = modelpack.push(ref2, settings=settings)
    assert pushed.stats.transferred == 2  # the new README layer and the new config
    assert pushed.stats.skipped == len(built.layers) - 1


@pytest.mark.interop(
    "registries",
    "push + pull of MiniLM",
    "the real 91 MB model with subfolders, on each registry implementation",
)
def test_real_hub_model_with_subfolders_round_trips(minilm_model, any_registry, settings, tmp_path):
    ref = _ref(any_registry, "sentence-transformers/all-minilm-l6-v2:v1")
    built = modelpack.build(minilm_model, ref, settings=settings)
    source_files = tree_files(minilm_model)
    assert len(source_files) >= 8 and "1_Pooling/config.json" in source_files
    modelpack.push(ref, settings=settings)
    out = modelpack.pull(ref, tmp_path / "minilm", settings=settings)
    assert tree_files(out) == source_files

    # The derived config: valid against the spec schema, and the numbers the headers give.
    validate(built.config.to_dict(), MODEL_CONFIG)
    with safe_open(str(minilm_model / "model.safetensors"), framework="numpy") as f:
        count = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
        per_dtype = {}
        for k in f.keys():
            dtype = f.get_slice(k).get_dtype()
            per_dtype[dtype] = per_dtype.get(dtype, 0) + math.prod(f.get_slice(k).get_shape())
    assert built.config.config.param_size == format_param_size(count) == "22.7M"
    # F32 weights plus a 512-value I64 position_ids buffer, below the 1% floor.
    assert per_dtype["I64"] * 100 < count <= per_dtype["F32"] + per_dtype["I64"]
    assert built.config.config.precision == "float32"
    assert built.config.descriptor.family == "bert"
    assert built.config.descriptor.licenses == ["Apache-2.0"]


@pytest.mark.interop(
    "registries",
    "tar layers",
    "tar, tar+gzip, tar+zstd round trips on each registry implementation",
)
@pytest.mark.parametrize(
    ("layer_format", "compress"), [("tar", "none"), ("tar", "gzip"), ("tar", "zstd")]
)
def test_tar_layers_round_trip(
    tiny_model, any_registry, settings, tmp_path, layer_format, compress
):
    ref = _ref(any_registry, f"roundtrip/tar-{compress}:v1")
    modelpack.build(
        tiny_model, ref, layer_format=layer_format, compress=compress, settings=settings
    )
    modelpack.push(ref, settings=settings)
    out = modelpack.pull(ref, tmp_path / "out", settings=settings)
    assert tree_files(out) == tree_files(tiny_model)


def test_sharded_model_round_trips(registry, settings, tmp_path):
    source = make_tiny_model(tmp_path / "sharded", shards=4)
    ref = _ref(registry, "roundtrip/sharded:v1")
    modelpack.build(source, ref, settings=settings)
    modelpack.push(ref, settings=settings)
    out = modelpack.pull(ref, tmp_path / "out", settings=settings)
    assert tree_files(out) == tree_files(source)


def test_pull_without_output_dir_returns_a_model_tree(tiny_model, registry, settings, tmp_path):
    ref = _ref(registry, "roundtrip/tree:v1")
    modelpack.build(tiny_model, ref, settings=settings)
    modelpack.push(ref, settings=settings)
    # A different machine: empty home.
    other = settings.with_overrides(home=tmp_path / "node")
    first = modelpack.pull_model(ref, settings=other)
    assert first.path is not None and first.path.is_dir()
    assert tree_files(first.path) == tree_files(tiny_model)
    assert first.stats.bytes_transferred > 0
    again = modelpack.pull_model(ref, settings=other)
    assert again.path == first.path
    assert again.stats.bytes_transferred == 0
    # The store now has the artifact under its reference.
    assert [m.reference for m in modelpack.list_models(settings=other)] == [ref]
    # Raw weights in the tree share blocks with the verified store blob (no second copy).
    store = LayoutStore(other.store_dir)
    weight = next(
        x
        for x in json.loads(store.blob_path(first.digest).read_bytes())["layers"]
        if x["annotations"]["org.cncf.model.filepath"] == "model.safetensors"
    )
    assert (first.path / "model.safetensors").stat().st_ino == store.blob_path(
        weight["digest"]
    ).stat().st_ino


def test_include_pulls_only_matching_files(tiny_model, registry, settings, tmp_path):
    ref = _ref(registry, "roundtrip/partial:v1")
    modelpack.build(tiny_model, ref, settings=settings)
    modelpack.push(ref, settings=settings)
    result = modelpack.pull_model(ref, tmp_path / "part", include=["*.json"], settings=settings)
    expected = {k for k in tree_files(tiny_model) if k.endswith(".json")}
    assert set(tree_files(tmp_path / "part")) == expected
    assert set(result.files) == expected


def test_inspect_remote_matches_local(tiny_model, registry, settings):
    ref = _ref(registry, "roundtrip/inspect:v1")
    built = modelpack.build(tiny_model, ref, settings=settings)
    modelpack.push(ref, settings=settings)
    local = modelpack.inspect(ref, settings=settings)
    remote = modelpack.inspect(ref, remote=True, settings=settings)
    assert local.descriptor.digest == remote.descriptor.digest == built.digest
    assert remote.config.to_dict() == built.config.to_dict()
    assert remote.location == "remote" and local.location == "local"


def test_source_edited_after_build_is_caught_on_push(tiny_model, registry, settings):
    ref = _ref(registry, "roundtrip/edited:v1")
    built = modelpack.build(tiny_model, ref, settings=settings)
    weight = next(x for x in built.layers if x.plan.file.relpath == "model.safetensors")
    if weight.placement.value != "hardlink":
        pytest.skip("the store holds its own copy here; edits to the source cannot reach it")
    # Edit in place (same inode, same size): the hardlinked store blob changes with it.
    path = tiny_model / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    with open(path, "r+b") as f:
        f.write(data)
    # doctor says so before anything else would trip over it (issue 22 item 1) ...
    store_check = next(c for c in modelpack.doctor(settings=settings) if c.name == "store")
    assert store_check.status is modelpack.Status.FAIL
    assert str(path) in store_check.detail and "build` again" in store_check.fix
    # ... and a push is refused before a byte is sent, naming the edited file and the fix.
    with pytest.raises(modelpack.IntegrityError, match="changed after `modelpack build`") as caught:
        modelpack.push(ref, settings=settings)
    assert str(path) in str(caught.value) and "build` again" in caught.value.hint


def test_built_config_validates_against_the_upstream_schema_file(tiny_model, settings):
    import jsonschema

    upstream = json.loads(
        (
            Path(__file__).resolve().parents[1] / "data" / "modelpack-spec" / "config-schema.json"
        ).read_text()
    )
    built = modelpack.build(tiny_model, "reg.io/a:v1", settings=settings)
    jsonschema.Draft202012Validator(upstream).validate(built.config.to_dict())


def test_build_push_streams_weights_from_the_source(
    tiny_model, registry, settings, tmp_path, monkeypatch
):
    # The rebuild below must make the same artifact: createdAt pinned (on a busy machine the
    # two builds can straddle a second).
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    ref = _ref(registry, "roundtrip/direct:v1")
    result = modelpack.build(tiny_model, ref, push=True, settings=settings)
    assert result.pushed is not None and result.pushed.digest == result.digest
    store = LayoutStore(settings.store_dir)
    weight = next(x for x in result.layers if x.plan.file.relpath == "model.safetensors")
    assert not store.exists(weight.descriptor)  # no local copy of the weights, not even a link
    assert weight.placement is None
    assert (
        modelpack.list_models(settings=settings) == []
    )  # the store's copy is incomplete: untagged
    out = modelpack.pull(ref, tmp_path / "out", settings=settings)
    assert tree_files(out) == tree_files(tiny_model)
    # Pushed again unchanged: nothing crosses the wire.
    again = modelpack.build(tiny_model, ref, push=True, settings=settings)
    assert again.pushed.stats.bytes_transferred == 0
