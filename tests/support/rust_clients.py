"""The Rust hub clients of tests/clients/ (hf-hub, Dragonfly's hf:// backend), built once.

``scripts/peers/build-rust-peers.sh`` builds them with cargo from crates.io at the
versions its Cargo.lock pins, into the peers cache (``make peers`` runs it; here it
only confirms the cache when nothing changed).  A failed build fails the test with
cargo's output: these clients are part of the default run, never skipped.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "peers" / "build-rust-peers.sh"


def build_rust_peers() -> Path:
    """The bin dir holding ``hf-hub-fetch``, ``dragonfly-hf-fetch`` and ``dfdaemon``."""
    result = subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, timeout=7200, env=os.environ
    )
    assert result.returncode == 0, f"{SCRIPT} failed:\n{result.stdout[-3000:]}{result.stderr}"
    line = next(x for x in result.stdout.splitlines() if x.startswith("bin dir: "))
    return Path(line.removeprefix("bin dir: "))
