"""docs/quickstart.md, run as a reader would run it: every bash and python block, in order, in
one working directory, against the registry its own command starts (on a free port instead of
5000). Blocks marked `<!-- quickstart-test: skip -->` may only install packages;
`<!-- quickstart-test: service -->` blocks run in the background until the end."""

from __future__ import annotations

import filecmp
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

import modelpack
from modelpack.oci.spec import ARTIFACT_TYPE_MODEL_MANIFEST
from modelpack.testing.registry import free_port

QUICKSTART = Path(__file__).resolve().parents[2] / "docs" / "quickstart.md"
BLOCK = re.compile(
    r"(?:<!-- quickstart-test: (?P<mark>[\w-]+)[^>]*-->\n)?```(?P<lang>bash|python)\n(?P<body>.*?)```",
    re.S,
)
INSTALL_LINE = re.compile(r"^(python3? -m venv |pip install |modelpack --version)")
DOC_HOST = "127.0.0.1:5000"


@dataclass
class Block:
    mark: str | None
    lang: str
    body: str


def blocks() -> list[Block]:
    return [
        Block(m["mark"], m["lang"], m["body"])
        for m in BLOCK.finditer(QUICKSTART.read_text(encoding="utf-8"))
    ]


def same_tree(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    theirs = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files], shallow=False)
    return files == theirs and not mismatch and not errors


def first_line(process: subprocess.Popen, timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in process.stdout], daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"the quick start's service printed nothing in {timeout} s")


def test_the_skipped_blocks_only_install():
    skipped = [b for b in blocks() if b.mark == "skip"]
    assert len(skipped) == 1
    for line in skipped[0].body.splitlines():
        assert INSTALL_LINE.match(line), f"a skipped quick start line is not an install: {line}"
    assert {b.mark for b in blocks()} <= {None, "skip", "service"}


@pytest.mark.integration
def test_every_quickstart_command_works(tmp_path, home):
    port = free_port()
    host = f"127.0.0.1:{port}"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    work = tmp_path / "reader"
    work.mkdir()
    ran: list[tuple[str, subprocess.CompletedProcess]] = []
    services: list[subprocess.Popen] = []

    def output_of(command: str) -> subprocess.CompletedProcess:
        return next(result for body, result in ran if command in body)

    runnable = [b for b in blocks() if b.mark != "skip"]
    assert sum(DOC_HOST in b.body for b in runnable) >= 5
    try:
        for block in runnable:
            body = block.body.replace(DOC_HOST, host).replace("--port 5000", f"--port {port}")
            if block.mark == "service":
                service = subprocess.Popen(
                    ["bash", "-c", f"exec {body.strip()}"],
                    cwd=work,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                services.append(service)
                assert f"registry on http://{host}" in first_line(service, timeout=60)
                continue
            argv = (
                ["bash", "-euo", "pipefail", "-c", body]
                if block.lang == "bash"
                else [sys.executable, "-c", body]
            )
            result = subprocess.run(
                argv, cwd=work, env=env, capture_output=True, text=True, timeout=300
            )
            assert result.returncode == 0, (
                f"quick start block failed (exit {result.returncode}):\n{body}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
            ran.append((body, result))

        model = work / "my-model"
        assert (model / "model.safetensors").is_file() and (model / "config.json").is_file()

        # 3. build, push, pull: the same files, byte for byte
        built_ref, _, digest = output_of("modelpack build").stdout.split()[0].partition("@")
        assert built_ref == f"{host}/team/bert:v1" and digest.startswith("sha256:")
        assert "same files, byte for byte" in output_of("diff -r").stdout
        assert same_tree(model, work / "bert")

        # 4. inspect: the registry holds what was built
        inspected = json.loads((work / "bert.json").read_text())
        assert inspected["artifactType"] == ARTIFACT_TYPE_MODEL_MANIFEST
        assert inspected["digest"] == digest
        assert "model.safetensors" in output_of("--remote\n").stdout

        # 5. signed by demo.key; the verified pull is complete
        assert (work / "demo.key").is_file() and (work / "demo.pub").is_file()
        assert "1 valid signature" in output_of("modelpack verify").stderr
        assert same_tree(model, work / "verified")

        # 6. the node cache and the local store
        cache_block = output_of("modelpack cache ls")
        tree = Path(cache_block.stdout.splitlines()[0])
        assert tree.is_relative_to(home / "models") and same_tree(model, tree)
        assert f"{host}/team/bert:v1" in cache_block.stdout
        assert re.search(r"\b0 blobs sent", cache_block.stderr)  # the :stable push
        stored = {m.reference for m in modelpack.list_models(home=home)}
        assert {f"{host}/team/bert:v1", f"{host}/team/bert:v2"} <= stored
        assert f"{host}/team/bert:stable" not in stored
        for tag in ("v1", "v2", "stable"):
            remote = modelpack.inspect(f"{host}/team/bert:{tag}", remote=True, plain_http=True)
            assert remote.config is not None and remote.config.config.format == "safetensors"
        assert modelpack.inspect(f"{host}/team/bert:v1", remote=True, plain_http=True).signatures

        # 7. Python
        python_out = output_of("import modelpack").stdout
        assert re.match(r"sha256:[0-9a-f]{64} \[", python_out)
        assert "'model.safetensors'" in python_out
    finally:
        for service in services:
            service.send_signal(signal.SIGTERM)  # the registry launcher cleans up on SIGTERM
            try:
                service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()
