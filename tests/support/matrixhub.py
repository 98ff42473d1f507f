"""A real MatrixHub for the tests: built by ``scripts/peers/build-matrixhub.sh`` from the source
snapshot in ``../shared/peer-src`` (once; a fixture waits for a running build on its lock) and
started by ``modelpack.testing.matrixhub`` with Debian's MariaDB."""

from __future__ import annotations

import os
import subprocess

from modelpack.testing.matrixhub import MatrixHubServer
from support.harbor import PEER_SRC, ROOT

SCRIPT = ROOT / "scripts" / "peers" / "build-matrixhub.sh"

__all__ = ["PEER_SRC", "build_matrixhub", "start_matrixhub"]


def build_matrixhub() -> None:
    """Build MatrixHub if the cache lacks it (waits for a build already running)."""
    result = subprocess.run(
        ["bash", str(SCRIPT)], env=os.environ, capture_output=True, text=True, timeout=3 * 3600
    )
    assert result.returncode == 0, f"build-matrixhub.sh: {result.stdout}{result.stderr}"


def start_matrixhub() -> MatrixHubServer:
    return MatrixHubServer().start()
