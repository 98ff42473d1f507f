"""model/image.py: the image manifest over a model's blobs, and the modelcar base."""

import io
import json
import tarfile
from pathlib import Path

import pytest

from modelpack.errors import UnsafePathError, UsageError
from modelpack.model.image import (
    ANNOTATION_IMAGE_KIND,
    ANNOTATION_IMAGE_LAYOUT,
    MEDIA_TYPE_IMAGE_CONFIG,
    Blob,
    Platform,
    elf_architecture,
    file_layer_path,
    modelcar_base,
    modelcar_links,
    plan_image,
    raw_layers,
)
from modelpack.oci.spec import Descriptor, Manifest, ModelConfig, parse_model_config

DIGESTS = [f"sha256:{c * 64}" for c in "abc"]
IMAGE_LAYER = "application/vnd.oci.image.layer.v1.tar"


def model(media_types: list[str], diff_ids: list[str]) -> tuple[Descriptor, Manifest, ModelConfig]:
    layers = tuple(
        Descriptor(mt, d, 10 + i, {"org.cncf.model.filepath": f"f{i}"})
        for i, (mt, d) in enumerate(zip(media_types, DIGESTS, strict=False))
    )
    config = parse_model_config(
        json.dumps({"descriptor": {"name": "m"}, "config": {},
                    "modelfs": {"type": "layers", "diffIds": diff_ids}}).encode()
    )  # fmt: skip
    manifest = Manifest(
        Descriptor("application/vnd.cncf.model.config.v1+json", "sha256:" + "d" * 64, 5), layers
    )
    return (
        Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "e" * 64, 99),
        manifest,
        config,
    )


def test_tar_layers_keep_their_blobs_and_compressed_ones_their_diff_ids():
    desc, manifest, config = model(
        ["application/vnd.cncf.model.weight.v1.tar", "application/vnd.cncf.model.doc.v1.tar+gzip"],
        [DIGESTS[0], "sha256:" + "f" * 64],
    )
    plan = plan_image(
        desc, manifest, config, model_name="r/m", platforms=[Platform("linux", "arm64")]
    )
    document = json.loads(plan.manifest)
    assert [layer["digest"] for layer in document["layers"]] == DIGESTS[:2]
    assert [layer["mediaType"] for layer in document["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip"]  # fmt: skip
    assert document["subject"]["digest"] == desc.digest and "artifactType" not in document
    assert document["annotations"][ANNOTATION_IMAGE_KIND] == "volume"
    (config_blob,) = plan.blobs
    image_config = json.loads(config_blob.data)
    assert config_blob.descriptor.media_type == MEDIA_TYPE_IMAGE_CONFIG
    assert image_config["rootfs"]["diff_ids"] == [DIGESTS[0], "sha256:" + "f" * 64]
    assert (image_config["os"], image_config["architecture"]) == ("linux", "arm64")


def test_raw_layers_are_named_and_a_wrong_diff_id_is_refused():
    desc, manifest, config = model(
        ["application/vnd.cncf.model.weight.v1.raw", "application/vnd.cncf.model.doc.v1.tar"],
        [DIGESTS[0], DIGESTS[0]],
    )
    assert [layer.digest for layer in raw_layers(manifest)] == [DIGESTS[0]]
    _, tar_only, config = model(["application/vnd.cncf.model.doc.v1.tar"], [DIGESTS[1]])
    with pytest.raises(UsageError, match="uncompressed tar, but its diffId"):
        plan_image(desc, tar_only, config, model_name="r/m", platforms=[Platform("linux", "amd64")])
    _, tar_only, config = model(["application/vnd.cncf.model.doc.v1.tar"], [])
    with pytest.raises(UsageError, match="0 diffIds for 1 layers"):
        plan_image(desc, tar_only, config, model_name="r/m", platforms=[Platform("linux", "amd64")])


def test_the_modelcar_base_is_reproducible_and_static_only(tmp_path):
    busybox = Path("/bin/busybox")
    first, arch = modelcar_base(busybox)
    second, _ = modelcar_base(busybox)
    assert first.descriptor.digest == second.descriptor.digest and arch == "amd64"
    with tarfile.open(fileobj=io.BytesIO(first.data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert "models" not in members
    assert members["bin/sh"].linkname == "busybox" and members["bin/busybox"].mode == 0o755
    assert {m.mtime for m in members.values()} == {0}
    with pytest.raises(UsageError, match="dynamically linked"):
        elf_architecture(Path("/bin/ls"))
    script = tmp_path / "busybox"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(UsageError, match="not a 64-bit little-endian ELF"):
        elf_architecture(script)


def test_platform_parse():
    assert str(Platform.parse("linux/arm64/v8")) == "linux/arm64/v8"
    with pytest.raises(UsageError):
        Platform.parse("linux//")


def _paths(*paths: str) -> Manifest:
    layers = tuple(
        Descriptor("application/vnd.cncf.model.weight.v1.tar", DIGESTS[0], 1,
                   {"org.cncf.model.filepath": p} if p else {})
        for p in paths
    )  # fmt: skip
    return Manifest(Descriptor("x", "sha256:" + "d" * 64, 1), layers)


def test_models_links_are_relative_and_refuse_what_would_escape_or_collide():
    links = modelcar_links(_paths("config.json", "1_Pooling/config.json", "onnx/"))
    with tarfile.open(fileobj=io.BytesIO(links.data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["models/config.json"].linkname == "../config.json"
    assert members["models/1_Pooling/config.json"].linkname == "../../1_Pooling/config.json"
    assert members["models/1_Pooling"].isdir() and members["models/onnx"].linkname == "../onnx"
    with pytest.raises(UnsafePathError):
        modelcar_links(_paths("../etc/passwd"))
    with pytest.raises(UsageError, match="its own models/"):
        modelcar_links(_paths("models/x.bin"))
    with pytest.raises(UsageError, match="names no file path"):
        modelcar_links(_paths(""))


def test_several_platforms_make_an_index_of_manifests_that_share_every_layer():
    desc, manifest, config = model(["application/vnd.cncf.model.weight.v1.tar"], [DIGESTS[0]])
    platforms = [Platform("linux", "amd64"), Platform("linux", "arm64", "v8")]
    plan = plan_image(desc, manifest, config, model_name="r/m", platforms=platforms)
    index = json.loads(plan.manifest)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert index["subject"]["digest"] == desc.digest
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]
    blobs = {b.descriptor.digest: b.data for b in plan.blobs}
    children = [json.loads(blobs[m["digest"]]) for m in index["manifests"]]
    assert all("subject" not in child for child in children)  # the index is the referrer
    assert children[0]["layers"] == children[1]["layers"]
    assert children[0]["config"]["digest"] != children[1]["config"]["digest"]


def test_a_files_modelcar_lists_its_file_tars_and_no_layer_of_the_model():
    desc, manifest, config = model(
        ["application/vnd.cncf.model.weight.v1.raw", "application/vnd.cncf.model.doc.v1.tar+zstd"],
        [DIGESTS[0], "sha256:" + "f" * 64],
    )  # raw and zstd layers: a files modelcar needs neither a tar copy nor a diffId of them
    base = Blob(Descriptor(IMAGE_LAYER, "sha256:" + "9" * 64, 7), b"busybox")
    files = [Descriptor(IMAGE_LAYER, f"sha256:{c * 64}", 1024 * i + 10240,
                        {"org.opencontainers.image.title": file_layer_path(f"f{i}")})
             for i, c in enumerate("12")]  # fmt: skip
    plan = plan_image(desc, manifest, config, model_name="r/m",
                      platforms=[Platform("linux", "amd64")], base=base, file_layers=files)  # fmt: skip
    document = json.loads(plan.manifest)
    layers = [base.descriptor.digest, *(f.digest for f in files)]
    assert [layer["digest"] for layer in document["layers"]] == layers
    assert document["annotations"][ANNOTATION_IMAGE_LAYOUT] == "files"
    assert document["layers"][1]["annotations"]["org.opencontainers.image.title"] == "models/f0"
    image_config = json.loads(next(b.data for b in plan.blobs if b.descriptor.media_type
                                   == MEDIA_TYPE_IMAGE_CONFIG))  # fmt: skip
    assert image_config["rootfs"]["diff_ids"] == layers
    assert image_config["config"]["WorkingDir"] == "/models"
    assert plan.reused == [] and plan.tar_copies == files
    assert plan.added_bytes > sum(f.size for f in files)
    for bad in (
        {"base": None, "file_layers": files},
        {"base": base, "file_layers": []},
        {"base": base, "file_layers": [Descriptor(IMAGE_LAYER + "+zstd", DIGESTS[0], 1)]},
        {"base": base, "file_layers": files, "tar_copies": {0: files[0]}},
    ):
        with pytest.raises(ValueError, match="a files modelcar"):
            plan_image(desc, manifest, config, model_name="r/m",
                       platforms=[Platform("linux", "amd64")], **bad)  # fmt: skip


def test_a_links_modelcar_keeps_its_manifest_without_a_layout_annotation():
    """The default layout's image is what it was before layouts existed: same digest."""
    desc, manifest, config = model(["application/vnd.cncf.model.weight.v1.tar"], [DIGESTS[0]])
    base = Blob(Descriptor(IMAGE_LAYER, "sha256:" + "9" * 64, 7), b"busybox")
    plan = plan_image(desc, manifest, config, model_name="r/m",
                      platforms=[Platform("linux", "amd64")], base=base)  # fmt: skip
    document = json.loads(plan.manifest)
    assert ANNOTATION_IMAGE_LAYOUT not in document["annotations"]
    assert document["layers"][1]["digest"] == DIGESTS[0]  # the model's own layer
    assert document["layers"][-1]["digest"] == modelcar_links(manifest).descriptor.digest
