"""Docker Model Runner (github.com/docker/model-runner v1.2.9) both ways: its distribution
library, driven by tests/clients/model-runner the way `docker model pull` and
`docker model package --push` drive it, pulls what we push and we pull what it packages.

Model Runner speaks plain HTTP only to `localhost` and `*.local` registries
(pkg/distribution/oci/reference/reference.go, isInsecureHost), so the registry is named
localhost:PORT here.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from support.helpers import tree_files

import modelpack


@pytest.fixture(scope="module")
def model_runner(go_peers):  # noqa: ANN201 - a function running the peer
    store = go_peers.workdir / "model-runner-store"

    def run(command: str, *args: str) -> str:
        result = subprocess.run(
            [str(go_peers.path("model-runner-peer")), command, *args],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, f"model-runner-peer {command}: {result.stderr[-3000:]}"
        return result.stdout.strip()

    run.store = str(store)
    return run


def _localhost(registry) -> str:
    return "localhost:" + registry.host.rsplit(":", 1)[1]


@pytest.mark.interop("Docker Model Runner v1.2.9", "pulls ours", "identical files; inspect reads our config")
def test_model_runner_pulls_our_model(model_runner, registry, minilm_model, settings):
    ref = f"{_localhost(registry)}/dmr/ours-minilm:v1"
    modelpack.build(minilm_model, ref, settings=settings)
    modelpack.push(ref, settings=settings)
    model_dir = Path(model_runner("pull", "--store", model_runner.store, ref))
    assert tree_files(model_dir) == tree_files(minilm_model)
    seen = json.loads(model_runner("inspect", "--store", model_runner.store, ref))
    assert seen["format"] == "safetensors"
    assert seen["id"] == modelpack.inspect(ref, settings=settings).descriptor.digest


@pytest.mark.interop(
    "Docker Model Runner v1.2.9", "pulls ours (tar layers)", "writes each tar layer as the file: use raw layers"
)
def test_model_runner_writes_a_tar_layer_as_the_archive_itself(model_runner, registry, tiny_model, settings):
    """Model Runner hard-links every layer that has a file path annotation to that path
    (pkg/distribution/internal/bundle/unpack.go, UnpackFromLayers -> unpackLayerToFile): it
    does not unpack `application/vnd.cncf.model.*.tar` layers. docs/kubernetes.md says to
    build with raw layers (our default) for Model Runner; this test notices if that changes."""
    ref = f"{_localhost(registry)}/dmr/ours-tar:v1"
    modelpack.build(tiny_model, ref, layer_format="tar", settings=settings)
    modelpack.push(ref, settings=settings)
    model_dir = Path(model_runner("pull", "--store", model_runner.store, ref))
    written = tree_files(model_dir)
    assert set(written) == set(tree_files(tiny_model))
    config = written["config.json"]
    with tarfile.open(fileobj=io.BytesIO(config)) as archive:
        assert archive.extractfile("config.json").read() == (tiny_model / "config.json").read_bytes()


@pytest.mark.interop(
    "Docker Model Runner v1.2.9", "we pull theirs (--format cncf)", "identical files; inspect reads its config"
)
def test_we_pull_what_model_runner_packages_as_modelpack(model_runner, registry, minilm_model, settings, tmp_path):
    ref = f"{_localhost(registry)}/dmr/theirs-cncf:v1"
    model_runner("package", "--dir", str(minilm_model), "--format", "cncf", ref)
    out = tmp_path / "pulled"
    modelpack.pull(ref, out, settings=settings)
    assert tree_files(out) == tree_files(minilm_model)
    inspection = modelpack.inspect(ref, remote=True, settings=settings)
    assert inspection.config is not None
    assert inspection.config.config.format == "safetensors"
