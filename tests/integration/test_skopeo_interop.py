"""skopeo (containers/image), an independent OCI client, reads and writes what we do."""

import json
import subprocess

import pytest
from support.helpers import compress, make_artifact, make_tar, tree_files

import modelpack
from modelpack.oci.spec import ANNOTATION_FILEPATH
from modelpack.storage.store import LayoutStore


def skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["skopeo", *args], capture_output=True, text=True, check=True, timeout=300
    )


@pytest.mark.interop("skopeo", "skopeo inspect of ours", "artifactType seen")
def test_skopeo_sees_our_artifact_type(tiny_model, registry, settings):
    ref = f"{registry.host}/interop/tiny:v1"
    built = modelpack.build(tiny_model, ref, settings=settings)
    modelpack.push(ref, settings=settings)
    raw = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{ref}").stdout
    manifest = json.loads(raw)
    assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
    assert len(manifest["layers"]) == len(built.layers)


@pytest.mark.interop(
    "skopeo",
    "copy both ways",
    "registry -> OCI layout -> registry keeps the digest; we read skopeo's layout",
)
def test_skopeo_copies_ours_both_ways_with_the_digest_unchanged(
    tiny_model, registry, settings, tmp_path
):
    ref = f"{registry.host}/interop/copyme:v1"
    built = modelpack.build(tiny_model, ref, settings=settings)
    modelpack.push(ref, settings=settings)
    layout = tmp_path / "layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:v1")
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == built.digest
    back = f"{registry.host}/interop/copied-back:v1"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{back}")
    assert modelpack.inspect(back, remote=True, settings=settings).descriptor.digest == built.digest
    out = modelpack.pull(back, tmp_path / "out", settings=settings)
    assert tree_files(out) == tree_files(tiny_model)


@pytest.mark.interop(
    "skopeo", "we pull what skopeo pushed", "tar, tar+gzip, tar+zstd layers of all kinds"
)
def test_handmade_tar_gzip_zstd_artifact_pushed_by_skopeo_pulls_right(registry, settings, tmp_path):
    layout = LayoutStore(tmp_path / "handmade")
    make_artifact(
        layout,
        "v1",
        [
            (
                "application/vnd.cncf.model.weight.v1.tar",
                make_tar([("model.safetensors", b"\x00weights" * 100)]),
                {ANNOTATION_FILEPATH: "model.safetensors"},
            ),
            (
                "application/vnd.cncf.model.weight.config.v1.tar+gzip",
                compress(make_tar([("1_Pooling/config.json", b'{"pooling": true}')]), "gzip"),
                {ANNOTATION_FILEPATH: "1_Pooling/config.json"},
            ),
            (
                "application/vnd.cncf.model.doc.v1.tar+zstd",
                compress(make_tar([("README.md", b"# handmade\n")]), "zstd"),
                {ANNOTATION_FILEPATH: "README.md"},
            ),
            (
                "application/vnd.cncf.model.code.v1.tar+gzip",
                compress(make_tar([("src/", None), ("src/model.py", b"print(1)\n")]), "gzip"),
                {ANNOTATION_FILEPATH: "src/model.py"},
            ),
            (
                "application/vnd.cncf.model.dataset.v1.tar+zstd",
                compress(make_tar([("data/train.csv", b"a,b\n1,2\n")]), "zstd"),
                {ANNOTATION_FILEPATH: "data/train.csv"},
            ),
            (
                "application/vnd.cncf.model.weight.config.v1.raw",
                b'{"model_type": "bert"}',
                {ANNOTATION_FILEPATH: "config.json"},
            ),
        ],
    )
    ref = f"{registry.host}/interop/handmade:v1"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout.root}:v1", f"docker://{ref}")
    out = modelpack.pull(ref, tmp_path / "out", settings=settings)
    assert tree_files(out) == {
        "model.safetensors": b"\x00weights" * 100,
        "1_Pooling/config.json": b'{"pooling": true}',
        "README.md": b"# handmade\n",
        "src/model.py": b"print(1)\n",
        "data/train.csv": b"a,b\n1,2\n",
        "config.json": b'{"model_type": "bert"}',
    }
