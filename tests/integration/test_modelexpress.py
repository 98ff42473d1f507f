"""NVIDIA ModelExpress 0.7.0 (the crates.io crates, built by tests/clients/,
scripts/peers/build-rust-peers.sh): its server, with its `memory-backend` metadata store and
`HF_ENDPOINT` at `modelpack serve`, downloads a model the gateway serves from the registry (its
hub provider is the hf-hub crate), and its CLI gets the files from the server over gRPC
(`--no-shared-storage`, `--strategy server-only`): identical bytes on both sides.

What it trips on, from its source (docs/kubernetes.md says the same to users):

- The server's `--cache-directory` (`config.cache.directory`) is not where its hub downloads
  go: modelexpress-server src/services.rs `get_server_cache_dir` asks modelexpress-common's
  `CacheConfig::discover` (src/cache.rs), which reads `--cache-path` from the command line or
  `MODEL_EXPRESS_CACHE_DIRECTORY`, else `~/.cache/model-express`. Set the variable.
- It downloads only the top folder's files, and neither dotfiles nor README.md
  (modelexpress-common src/providers/huggingface.rs `download_at_revision`:
  `is_subdirectory_file`, `is_ignored`): a sentence-transformers model's `1_Pooling/` stays
  behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from support.gateway import Gateway, clean_env
from support.helpers import build_and_push, tree_files

from modelpack.testing.registry import free_port

NAMESPACE = "mx"


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, (
            f"modelexpress-server exited:\n{log.read_text(errors='replace')}"
        )
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(
        f"modelexpress-server did not listen within {timeout} s:\n{log.read_text()}"
    )


@pytest.mark.interop(
    "ModelExpress 0.7.0",
    "downloads through serve (server, HF_ENDPOINT), streams to its CLI over gRPC",
    "the server's hub cache and the CLI's snapshot hold the model's files, identical; "
    "subfolders, dotfiles and README.md left out; --cache-directory unused",
)
def test_modelexpress_serves_what_the_gateway_serves(
    rust_llm_bin, registry, minilm_model, settings, tmp_path
):
    build_and_push(minilm_model, f"{registry.host}/{NAMESPACE}/org/minilm:main", settings)
    gateway = Gateway(f"{registry.host}/{NAMESPACE}", tmp_path / "gateway").start()
    server_cache, flag_cache, client_cache = (
        tmp_path / name for name in ("mx-cache", "flag-cache", "client")
    )
    port, log = free_port(), tmp_path / "modelexpress-server.log"
    env = clean_env(
        tmp_path,
        HOME=str(tmp_path / "home"),
        HF_ENDPOINT=gateway.url,
        HF_HOME=str(tmp_path / "hf-home"),
        MX_METADATA_BACKEND="memory",
        MODEL_EXPRESS_CACHE_DIRECTORY=str(server_cache),  # what moves its downloads
    )
    command = [
        str(rust_llm_bin / "modelexpress-server"), "--host", "127.0.0.1", "--port", str(port),
        "--metrics-port", "0", "--cache-directory", str(flag_cache),
    ]  # fmt: skip
    with open(log, "wb") as out:
        server = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_port(port, server, log)
        cli = [
            str(rust_llm_bin / "modelexpress-cli"), "--endpoint", f"http://127.0.0.1:{port}",
            "--cache-path", str(client_cache), "--no-shared-storage", "--format", "json",
            "model", "download", "org/minilm", "--strategy", "server-only", "--revision", "main",
        ]  # fmt: skip
        # The CLI reaches nothing but the server: no HF_ENDPOINT, no hub in its environment.
        done = subprocess.run(
            cli, env=clean_env(tmp_path, HOME=str(tmp_path / "cli-home")),
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"{done.stdout}\n{done.stderr}\n{log.read_text(errors='replace')[-3000:]}"
        )
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        gateway.stop()
    result = json.loads(done.stdout.strip().splitlines()[-1])
    commit = result["resolved_revision"]
    assert result["success"] and len(commit) == 40
    files = tree_files(minilm_model)
    top_files = {
        path: data for path, data in files.items() if "/" not in path and path != "README.md"
    }
    assert set(files) - set(top_files) == {"README.md", "1_Pooling/config.json"}

    snapshot = Path(result["path"])
    assert snapshot == client_cache / "models--org--minilm" / "snapshots" / commit
    assert tree_files(snapshot) == top_files  # over gRPC, from the server's cache
    assert tree_files(server_cache / "models--org--minilm" / "snapshots" / commit) == top_files
    assert not list(flag_cache.glob("models--*"))  # services.rs, get_server_cache_dir
    assert "GET /org/minilm/resolve/" in gateway.log()  # the server downloaded through the gateway
