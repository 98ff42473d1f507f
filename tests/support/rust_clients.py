"""The Rust peers of tests/clients/ (hf-hub, Dragonfly's hf:// backend and dfdaemon; llmman
and ModelExpress), built once.

``scripts/peers/build-rust-peers.sh`` builds them with cargo from crates.io at the versions
its Cargo.lock pins, into the peers cache, in two phases: 1 (dfdaemon, hf-hub-fetch,
dragonfly-hf-fetch) and 2 (llmman, modelexpress-server, modelexpress-cli).  A fixture asks
for the phase it needs and waits only for that one (``make test`` builds both in the
background; here the script only confirms the cache when nothing changed).  A failed build
fails the test with cargo's output: these peers are part of the default run, never skipped.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "peers" / "build-rust-peers.sh"


def build_rust_peers(phase: str = "1") -> Path:
    """The bin dir holding phase 1's ``hf-hub-fetch``, ``dragonfly-hf-fetch`` and
    ``dfdaemon``, or (``phase="2"``) ``llmman``, ``modelexpress-server`` and
    ``modelexpress-cli``."""
    result = subprocess.run(
        ["bash", str(SCRIPT), phase],
        capture_output=True,
        text=True,
        timeout=4 * 3600,
        env=os.environ,
    )
    if result.returncode != 0:
        log = Path(
            os.environ.get("MODELPACK_PEERS_DIR", Path.home() / ".cache" / "modelpack-peers")
        )
        name = "rust-peers" if phase == "1" else "rust-llm-peers"
        cargo = log / "logs" / f"{name}.log"
        tail = cargo.read_text(errors="replace")[-4000:] if cargo.is_file() else ""
        raise AssertionError(
            f"{SCRIPT} {phase} failed:\n{result.stdout[-3000:]}{result.stderr}\n{tail}"
        )
    line = next(x for x in result.stdout.splitlines() if x.startswith("bin dir: "))
    return Path(line.removeprefix("bin dir: "))
