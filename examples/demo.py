"""`make demo`: build, push, pull and verify a small model through a real local registry.

Starts a CNCF distribution registry on a free 127.0.0.1 port, writes a tiny
BERT (real safetensors weights), and runs the same commands a user would,
printing each one and what it did.  Exits non-zero if any step fails.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import modelpack
from modelpack.testing import RegistryServer, make_tiny_model


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m" if sys.stdout.isatty() else f"\n== {title}", flush=True)


def run(*args: str, env: dict[str, str]) -> str:
    print("$ modelpack " + " ".join(args), flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "modelpack", *args], env=env, capture_output=True, text=True
    )
    sys.stderr.write(result.stderr)
    if "--json" not in args:  # JSON documents are summarized by the caller instead
        sys.stdout.write(result.stdout)
    if result.returncode != 0:
        raise SystemExit(f"demo failed: `modelpack {' '.join(args)}` exited {result.returncode}")
    return result.stdout


def same_tree(a: Path, b: Path) -> int:
    """Compare every file byte for byte; return how many there are."""
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    theirs = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    if files != theirs:
        raise SystemExit(f"demo failed: file lists differ: {files} vs {theirs}")
    _, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files], shallow=False)
    if mismatch or errors:
        raise SystemExit(f"demo failed: files differ: {mismatch + errors}")
    return len(files)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="modelpack-demo-"))
    env = {**os.environ, "MODELPACK_HOME": str(work / "home"), "NO_PROXY": "127.0.0.1,localhost"}
    try:
        step("Start a local CNCF distribution registry")
        with RegistryServer() as registry:
            print(f"registry listening on http://{registry.host}")
            ref = f"{registry.host}/team/tiny-bert:v1"

            step("Write a small Hugging Face-style model")
            model = make_tiny_model(work / "tiny-bert")
            for path in sorted(model.rglob("*")):
                if path.is_file():
                    print(f"  {path.relative_to(model)}  ({path.stat().st_size} bytes)")

            step("Build it into a ModelPack artifact")
            built = json.loads(run("build", str(model), "-t", ref, "--json", env=env))
            print(f"digest {built['digest']}, {len(built['layers'])} layers")
            print("model config: " + json.dumps(built["config"]["config"], sort_keys=True))

            step("Push it to the registry")
            run("push", ref, env=env)

            step("Ask the registry what it holds")
            remote = json.loads(run("inspect", ref, "--remote", "--json", env=env))
            print(f"artifactType {remote['artifactType']}, digest {remote['digest']}")
            if shutil.which("skopeo"):
                raw = subprocess.run(
                    ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                print(f"skopeo sees artifactType {json.loads(raw)['artifactType']}")

            step("Pull it into a directory and check every byte")
            out = work / "pulled"
            run("pull", ref, "-o", str(out), env=env)
            count = same_tree(model, out)
            print(f"verified: {count} files identical to the source, byte for byte")

            step("Pull it from Python, as a training script would")
            path = modelpack.pull(ref, plain_http=True, home=work / "node-home")
            print(f"modelpack.pull(...) -> {path}")
            same_tree(model, path)
            print("verified: the model tree under MODELPACK_HOME matches too")

        step("Done")
        print("build -> push -> pull -> verify: all steps passed")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
