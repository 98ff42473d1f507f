"""The interop matrix with the Python peers, each the real tool from PyPI: oras-py and
modelpack-client pull our artifacts and get the same files; we pull theirs.  (skopeo both
ways: test_skopeo_interop.py; modctl-style tar layers: test_skopeo_interop.py and
test_unpack.py; the upstream schema: test_schemas.py and test_roundtrip.py.)"""

from __future__ import annotations

import subprocess

import pytest
from support.helpers import tree_files

import modelpack
from modelpack.errors import IntegrityError, UnsafePathError
from modelpack.oci.spec import ARTIFACT_TYPE_MODEL_MANIFEST
from modelpack.testing.peers import peer_command


def _peer(peers_python, tool, operation, reference, path):
    result = subprocess.run(
        peer_command(peers_python, tool, operation, reference, path),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"{tool} {operation}: {result.stderr[-2000:]}"


# oras-py saves a tar layer as the archive itself (no unpacking): raw layers only there.
@pytest.mark.interop(
    "oras-py / modelpack-client", "pulls ours", "same files at the same paths, subfolders included"
)
@pytest.mark.parametrize(
    ("tool", "layer_format"),
    [("oras", "raw"), ("modelpack-client", "raw"), ("modelpack-client", "tar")],
)
def test_peer_pulls_our_artifact_and_gets_the_same_files(
    tool, layer_format, peers_python, tiny_model, registry, settings, tmp_path
):
    ref = f"{registry.host}/interop/ours-{tool}-{layer_format}:v1"
    modelpack.build(tiny_model, ref, layer_format=layer_format, settings=settings)
    modelpack.push(ref, settings=settings)
    out = tmp_path / "peer-out"
    _peer(peers_python, tool, "pull", ref, out)
    assert tree_files(out) == tree_files(tiny_model)
    assert any("/" in name for name in tree_files(out))  # subfolders (1_Pooling/) too


def _flat_copy(model, target):
    """oras-py titles a layer with the file's basename, so it can only push flat directories."""
    target.mkdir()
    for path in model.iterdir():
        if path.is_file():
            (target / path.name).write_bytes(path.read_bytes())
    return target


@pytest.mark.interop(
    "oras-py / modelpack-client",
    "we pull theirs",
    "identical files; inspect reads modelpack-client's config",
)
@pytest.mark.parametrize("tool", ["oras", "modelpack-client"])
def test_we_pull_the_peers_artifacts(tool, peers_python, tiny_model, registry, settings, tmp_path):
    ref = f"{registry.host}/interop/theirs-{tool}:v1"
    source = _flat_copy(tiny_model, tmp_path / "flat") if tool == "oras" else tiny_model
    _peer(peers_python, tool, "push", ref, source)
    generic = tool == "oras"  # a generic OCI artifact, not a ModelPack model: asked for
    if generic:
        with pytest.raises(IntegrityError, match="not a ModelPack model"):
            modelpack.pull(ref, tmp_path / "refused", settings=settings)
        assert not (tmp_path / "refused").exists()
    out = modelpack.pull(ref, tmp_path / "ours", allow_oci_artifact=generic, settings=settings)
    assert tree_files(out) == tree_files(source)
    inspected = modelpack.inspect(ref, remote=True, settings=settings)
    if tool == "modelpack-client":
        assert inspected.manifest.artifact_type == ARTIFACT_TYPE_MODEL_MANIFEST
        assert inspected.config is not None and inspected.config.descriptor.name == "peer"
    # And through the node cache (pull without -o), the way a serving pod uses it.
    cached = modelpack.pull(ref, allow_oci_artifact=generic, settings=settings)
    assert tree_files(cached) == tree_files(source)


@pytest.mark.interop(
    "oras-py",
    "we pull a flattened tree",
    "oras-py titles by basename: colliding paths are refused (exit 5), not merged",
)
def test_an_oras_py_push_of_a_tree_that_loses_paths_is_refused_not_merged(
    peers_python, tiny_model, registry, settings, tmp_path
):
    """config.json and 1_Pooling/config.json both become "config.json" in oras-py's titles;
    a pull must refuse the collision rather than let one file silently replace the other."""
    ref = f"{registry.host}/interop/theirs-oras-tree:v1"
    _peer(peers_python, "oras", "push", ref, tiny_model)
    with pytest.raises(UnsafePathError, match="config.json is written twice"):
        modelpack.pull(ref, tmp_path / "ours", allow_oci_artifact=True, settings=settings)
    assert not (tmp_path / "ours").exists()
