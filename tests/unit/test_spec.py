import json
import re
from pathlib import Path

import pytest

from modelpack.oci import spec
from modelpack.oci.spec import (
    Descriptor,
    LayerFormat,
    LayerKind,
    Manifest,
    ModelConfig,
    canonical_json,
    layer_media_type,
    parse_layer_media_type,
)

SPEC_DIR = Path(__file__).resolve().parents[1] / "data" / "modelpack-spec"


def _go_constants(filename: str) -> dict[str, str]:
    text = (SPEC_DIR / filename).read_text()
    return dict(re.findall(r'^\s*(\w+)\s*=\s*"([^"]+)"', text, flags=re.M))


def test_every_upstream_media_type_is_known():
    upstream = _go_constants("mediatype.go")
    ours = set(spec.ALL_LAYER_MEDIA_TYPES) | {
        spec.MEDIA_TYPE_MODEL_CONFIG,
        spec.ARTIFACT_TYPE_MODEL_MANIFEST,
    }
    assert set(upstream.values()) == ours
    assert len(upstream) == 22


def test_every_upstream_annotation_key_is_known():
    upstream = set(_go_constants("annotations.go").values())
    assert upstream == {
        spec.ANNOTATION_FILEPATH,
        spec.ANNOTATION_FILE_METADATA,
        spec.ANNOTATION_MEDIATYPE_UNTESTED,
    }


@pytest.mark.parametrize("kind", list(LayerKind))
@pytest.mark.parametrize("fmt", list(LayerFormat))
def test_media_type_round_trip(kind, fmt):
    assert parse_layer_media_type(layer_media_type(kind, fmt)) == (kind, fmt)


def test_legacy_media_types_parse():
    assert parse_layer_media_type("application/vnd.cnai.model.weight.v1.tar") == (
        LayerKind.WEIGHT,
        LayerFormat.TAR,
    )
    assert parse_layer_media_type("application/vnd.cnai.model.weight.config.v1.tar+gzip") == (
        LayerKind.WEIGHT_CONFIG,
        LayerFormat.TAR_GZIP,
    )


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.cncf.model.weights.v1.raw",
        "application/vnd.cncf.model.weight.v1.zip",
        "application/vnd.cncf.model.weight.v2.raw",
        "",
    ],
)
def test_non_model_media_types_are_rejected(media_type):
    assert parse_layer_media_type(media_type) is None


def test_canonical_json_is_sorted_compact_utf8():
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def test_manifest_round_trip_and_digest_is_stable():
    layer = Descriptor(
        media_type=layer_media_type(LayerKind.WEIGHT, LayerFormat.RAW),
        digest="sha256:" + "a" * 64,
        size=0,
        annotations={spec.ANNOTATION_FILEPATH: "model.safetensors"},
    )
    config = Descriptor(spec.MEDIA_TYPE_MODEL_CONFIG, "sha256:" + "b" * 64, 10)
    manifest = Manifest(config=config, layers=(layer,))
    parsed = Manifest.from_dict(json.loads(manifest.to_bytes()))
    assert parsed == manifest
    assert parsed.to_bytes() == manifest.to_bytes()
    assert parsed.is_model
    assert parsed.layers[0].filepath == "model.safetensors"
    # size 0 must survive (an empty file is a valid layer)
    assert json.loads(manifest.to_bytes())["layers"][0]["size"] == 0


def test_upstream_config_example_round_trips():
    text = (SPEC_DIR / "config.md").read_text()
    example = json.loads(re.search(r"```json[^\n]*\n(.*?)```", text, re.S).group(1))
    assert ModelConfig.from_dict(example).to_dict() == example


def test_vendored_spec_matches_the_shared_copy_when_present():
    shared = Path(__file__).resolve().parents[3] / "shared" / "modelpack-spec"
    if not shared.is_dir():
        pytest.skip("no ../shared/modelpack-spec beside this checkout")
    for name in ("config-schema.json", "config.md", "mediatype.go", "annotations.go"):
        assert (SPEC_DIR / name).read_bytes() == (shared / name).read_bytes(), name


def test_media_type_conversion_renames_and_round_trips():
    from modelpack.oci.spec import (
        MEDIA_TYPE_OCI_INDEX,
        Descriptor,
        Manifest,
        MediaTypes,
        canonical_json,
        convert_manifest,
        media_types_of,
        rewrite_manifest_bytes,
    )

    layer = Descriptor(
        "application/vnd.cncf.model.weight.v1.raw",
        "sha256:" + "a" * 64,
        3,
        {"org.cncf.model.filepath": "w.bin", "org.opencontainers.image.title": "w.bin"},
    )
    config = Descriptor("application/vnd.cncf.model.config.v1+json", "sha256:" + "b" * 64, 2)
    original = Manifest(config=config, layers=(layer,))
    cnai = convert_manifest(original, MediaTypes.CNAI)
    assert media_types_of(cnai) is MediaTypes.CNAI
    assert cnai.artifact_type == "application/vnd.cnai.model.manifest.v1+json"
    assert cnai.layers[0].media_type == "application/vnd.cnai.model.weight.v1.raw"
    assert cnai.layers[0].annotations == {
        "org.cnai.model.filepath": "w.bin",
        "org.opencontainers.image.title": "w.bin",  # not a model key: kept
    }
    assert cnai.layers[0].digest == layer.digest  # blobs untouched
    assert convert_manifest(cnai, MediaTypes.CNCF).to_bytes() == original.to_bytes()
    data = original.to_bytes()
    assert rewrite_manifest_bytes(data, MediaTypes.CNCF, "m") is data  # nothing to do
    image = Manifest(
        config=Descriptor("application/vnd.oci.image.config.v1+json", "sha256:" + "c" * 64, 2),
        layers=(),
        artifact_type=None,
    )
    assert convert_manifest(image, MediaTypes.CNAI) is image  # not a model: left alone
    index = canonical_json({"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": []})
    assert rewrite_manifest_bytes(index, MediaTypes.CNAI, "i") is index  # an index neither
