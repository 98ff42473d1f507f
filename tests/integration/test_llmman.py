"""llmman 0.1.611 (the crates.io crate, built by tests/clients/, scripts/peers/build-rust-peers.sh)
both ways: it pulls what we push, through `llmman serve` as its CLI does, and we pull what its
`build` + `push` and its `transfer` (from the gateway, as from Hugging Face) write.

What it trips on, from its source (docs/kubernetes.md says the same to users):

- `llmman serve` fetches a llama.cpp release at start: on Linux its `auto` runtime tries
  docker, podman, then llama.cpp's GitHub release (src/cmd/serve/runtime.rs, `candidates` and
  `try_one`'s `Runtime::Bin`). `LLMMAN_RUNTIME=path` takes llama-server from PATH and fetches
  nothing; without one the daemon only warns. Its state goes where HOME and LLMMAN_MODELS say.
- `llmman resolve` (what `vllm serve oci://REF` runs through its plugin) links only the
  `weight.v1.raw` and `weight.config.v1.raw` layers into the model folder
  (src/modelpack.rs, `extract_safetensors_dir`): tar layers are left out, its own `build`'s
  included (src/storage/oci.rs `build` writes one tar layer per file), and so are docs.
- Plain HTTP: its registry client is containerd's resolver (go-shim/backend_docker.go,
  `newResolver`), which speaks HTTP (after trying HTTPS) to `localhost` and to loopback
  addresses alike (containerd core/remotes/docker/config/hosts.go and resolver.go,
  `IsLocalhost`), so the registry is named 127.0.0.1:PORT as everywhere else here.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import requests
from support.gateway import Gateway, clean_env
from support.helpers import build_and_push, tree_files

import modelpack
from modelpack.oci.spec import ANNOTATION_FILEPATH
from modelpack.testing.registry import free_port

NAMESPACE = "llm"
RESOLVED = (
    "application/vnd.cncf.model.weight.v1.raw",
    "application/vnd.cncf.model.weight.config.v1.raw",
)


class Llmman:
    """The llmman CLI with its state in one folder, and its daemon (`llmman serve`)."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.home = home
        self.store = home / "store"
        self.port = free_port()
        self.env = clean_env(
            home,
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / "config"),
            XDG_CACHE_HOME=str(home / "cache"),
            XDG_DATA_HOME=str(home / "data"),
            LLMMAN_MODELS=str(self.store),
            LLMMAN_HOST=f"127.0.0.1:{self.port}",
            LLMMAN_RUNTIME="path",  # no llama.cpp download at start (runtime.rs, try_one)
            LLMMAN_NOHISTORY="1",
            LLMMAN_NOUSAGE="1",
            PATH="/usr/bin:/bin",  # no llama-server: the daemon warns and serves on
        )
        self.daemon: subprocess.Popen | None = None
        self.log_path = home / "serve.log"

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> str:
        result = subprocess.run(
            [str(self.binary), *args], env={**self.env, **(env or {})},
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        assert result.returncode == 0, (
            f"llmman {' '.join(args)} exited {result.returncode}:\n{result.stdout[-2000:]}"
            f"\n{result.stderr[-3000:]}\nserve log:\n{self.serve_log()[-3000:]}"
        )
        return result.stdout

    def serve(self, timeout: float = 60) -> None:
        """`llmman serve` on its own port; returns when it answers. Its start must need no
        network: with one needed, the machine (no route out) makes it hang and this fail."""
        with open(self.log_path, "ab") as log:
            self.daemon = subprocess.Popen(
                [str(self.binary), "serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.daemon.poll() is None, f"llmman serve exited:\n{self.serve_log()}"
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/api/version", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"llmman serve did not answer within {timeout} s:\n{self.serve_log()}")

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            os.killpg(self.daemon.pid, signal.SIGTERM)  # its own session: it and its children
            try:
                self.daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait()

    def serve_log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def resolve(self, ref: str, cache: Path) -> dict:
        """`llmman resolve --no-pull`: the model folder vLLM's plugin is handed."""
        out = self.run("resolve", "--no-pull", ref, "--cache", str(cache))
        return json.loads(out.strip().splitlines()[-1])

    def stored_blob(self, digest: str) -> bytes:
        return (self.store / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


@pytest.fixture(scope="module")
def llmman(rust_llm_bin, tmp_path_factory):  # noqa: ANN201 - Llmman
    peer = Llmman(rust_llm_bin / "llmman", tmp_path_factory.mktemp("llmman"))
    peer.serve()
    yield peer
    peer.stop()


def _wanted(model: Path, paths) -> dict[str, bytes]:  # noqa: ANN001 - an iterable of paths
    return {path: (model / path).read_bytes() for path in paths}


@pytest.mark.interop(
    "llmman 0.1.611",
    "pulls ours (llmman pull through llmman serve)",
    "every layer in its store is our file; `llmman resolve` links config and weights, identical; "
    "the daemon started without reaching the network",
)
def test_llmman_pulls_our_model_through_serve(llmman, registry, minilm_model, settings, tmp_path):
    ref = f"{registry.host}/{NAMESPACE}/ours-minilm:v1"
    build_and_push(minilm_model, ref, settings)
    assert f"Pulled {ref}" in llmman.run("pull", ref)
    assert "no llama-server on PATH" in llmman.serve_log()  # LLMMAN_RUNTIME=path: nothing fetched

    layers = modelpack.inspect(ref, settings=settings).manifest.layers
    stored = {
        layer.annotations[ANNOTATION_FILEPATH]: llmman.stored_blob(layer.digest) for layer in layers
    }
    assert stored == _wanted(minilm_model, stored)
    assert set(stored) == set(tree_files(minilm_model))

    resolved = llmman.resolve(ref, tmp_path / "cache")
    assert resolved["format"] == "safetensors"
    linked = [
        layer.annotations[ANNOTATION_FILEPATH] for layer in layers if layer.media_type in RESOLVED
    ]
    assert tree_files(Path(resolved["path"])) == _wanted(minilm_model, linked)
    assert set(stored) - set(linked) == {"README.md"}  # our doc layer: vLLM does not need it


@pytest.mark.interop(
    "llmman 0.1.611",
    "pulls ours (tar layers)",
    "pulls every tar intact, but `llmman resolve` links only raw layers (its own build's tars too): "
    "use raw layers",
)
def test_llmman_resolve_leaves_tar_layers_out(llmman, registry, tiny_model, settings, tmp_path):
    """src/modelpack.rs, extract_safetensors_dir: `matches!(layer.media_type, "...weight.config.v1.raw"
    | "...weight.v1.raw")`. docs/kubernetes.md says to keep raw layers (our default) for llmman and
    vLLM; this test notices if llmman starts unpacking tar layers."""
    ours = f"{registry.host}/{NAMESPACE}/ours-tar:v1"
    build_and_push(tiny_model, ours, settings, layer_format="tar")
    llmman.run("pull", ours)
    for layer in modelpack.inspect(ours, settings=settings).manifest.layers:
        path = layer.annotations[ANNOTATION_FILEPATH]
        with tarfile.open(fileobj=io.BytesIO(llmman.stored_blob(layer.digest))) as archive:
            assert archive.extractfile(path).read() == (tiny_model / path).read_bytes()
    theirs = f"{registry.host}/{NAMESPACE}/their-build:v1"
    llmman.run("build", "-t", theirs, str(tiny_model))
    for ref in (ours, theirs):
        resolved = llmman.resolve(ref, tmp_path / "cache")
        assert resolved["format"] == "safetensors"
        assert tree_files(Path(resolved["path"])) == {}, ref  # nothing of the model


@pytest.mark.interop(
    "llmman 0.1.611",
    "we pull theirs (llmman build + push)",
    "identical files from its one-tar-per-file layers; inspect reads its config",
)
def test_we_pull_what_llmman_builds_and_pushes(llmman, registry, minilm_model, settings, tmp_path):
    ref = f"{registry.host}/{NAMESPACE}/theirs-minilm:v1"
    assert "Built" in llmman.run("build", "-t", ref, str(minilm_model))
    assert f"Pushed {ref}" in llmman.run("push", ref)
    out = tmp_path / "pulled"
    modelpack.pull(ref, out, settings=settings)
    assert tree_files(out) == tree_files(minilm_model)
    assert (out / ".gitattributes").read_bytes() == (minilm_model / ".gitattributes").read_bytes()
    inspection = modelpack.inspect(ref, remote=True, settings=settings)
    assert inspection.config is not None and inspection.config.config.format == "safetensors"
    assert {layer.media_type for layer in inspection.manifest.layers} <= {
        f"application/vnd.cncf.model.{kind}.v1.tar"
        for kind in ("weight", "weight.config", "doc", "code")
    }


@pytest.mark.interop(
    "llmman 0.1.611",
    "we pull theirs (llmman transfer from the gateway)",
    "`llmman transfer hf.co/ORG/NAME REF` with HF_ENDPOINT at `modelpack serve`: identical files "
    "(it leaves dotfiles out); inspect reads its config",
)
def test_we_pull_what_llmman_transfers_from_the_gateway(
    llmman, registry, minilm_model, settings, tmp_path
):
    build_and_push(minilm_model, f"{registry.host}/{NAMESPACE}/hub/org/minilm:main", settings)
    gateway = Gateway(f"{registry.host}/{NAMESPACE}/hub", tmp_path / "gateway").start()
    try:
        ref = f"{registry.host}/{NAMESPACE}/transferred-minilm:v1"
        hub = {"HF_ENDPOINT": gateway.url, "HF_HOME": str(tmp_path / "hf-home")}
        assert "Transferred" in llmman.run("transfer", "hf.co/org/minilm", ref, env=hub)
    finally:
        gateway.stop()
    assert "GET /org/minilm/resolve/" in gateway.log()  # through the gateway, not a cache
    out = tmp_path / "pulled"
    modelpack.pull(ref, out, settings=settings)
    assert tree_files(out) == tree_files(minilm_model)
    assert not (out / ".gitattributes").exists()  # src/hf/api.rs, should_download_safetensors
    inspection = modelpack.inspect(ref, remote=True, settings=settings)
    assert inspection.config is not None and inspection.config.config.format == "safetensors"
