"""scripts/peers/build-rust-peers.sh's contract, without building: one line per phase in check
mode (what scripts/test.sh prints before the first test), a phase asked for alone, and
tests/clients/peers-deps naming only versions tests/clients/Cargo.lock holds (else
`cargo build --locked` fails: regenerate it with MODELPACK_RUST_UNIFY=1)."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "peers" / "build-rust-peers.sh"
CLIENTS = ROOT / "tests" / "clients"


def _check(tmp_path: Path, *phases: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MODELPACK_PEERS_DIR": str(tmp_path), "MODELPACK_PEERS_CHECK": "1"}
    return subprocess.run(
        ["bash", str(SCRIPT), *phases], env=env, capture_output=True, text=True, timeout=60
    )


def test_check_mode_says_each_phase_and_builds_nothing(tmp_path):
    both = _check(tmp_path)
    assert both.returncode == 0, both.stderr
    lines = [line.split() for line in both.stdout.splitlines()]
    assert [(name, status) for name, _hash, *status in lines] == [
        ("rust-peers", ["to", "build"]),
        ("rust-llm-peers", ["to", "build"]),
    ]
    assert [line[0] for line in (x.split() for x in _check(tmp_path, "2").stdout.splitlines())] == [
        "rust-llm-peers"
    ]
    phase1 = tmp_path / f"rust-{lines[0][1]}"
    (phase1 / "bin").mkdir(parents=True)
    (phase1 / ".built").touch()
    assert _check(tmp_path, "1").stdout.split()[2] == "cached"
    assert not (tmp_path / "rust-ws").exists()  # nothing assembled, nothing downloaded


def test_an_unknown_phase_is_a_usage_error(tmp_path):
    result = _check(tmp_path, "3")
    assert result.returncode == 2
    assert "unknown phase" in result.stderr


def test_peers_deps_names_only_locked_versions():
    locked = {
        (p["name"], p["version"])
        for p in tomllib.loads((CLIENTS / "Cargo.lock").read_text())["package"]
    }
    manifest = tomllib.loads((CLIENTS / "peers-deps" / "Cargo.toml").read_text())
    specs = {**manifest["dependencies"], **manifest["build-dependencies"]}
    assert specs, "peers-deps asks for nothing: regenerate it (MODELPACK_RUST_UNIFY=1)"
    for key, spec in specs.items():
        assert (spec["package"], spec["version"].removeprefix("=")) in locked, key
