"""The Python peers (oras-py, modelpack-client) in a venv of their own, for interop tests
and benchmarks.

They cannot share our environment: modelpack-client installs a ``modelpack`` console
script of its own.  ``peer_driver.py`` (run by the peers' Python) pushes or pulls a
directory with either tool, the way their READMEs show.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PEER_PACKAGES = ("modelpack-client", "oras")
DRIVER = Path(__file__).with_name("peer_driver.py")


def peers_python(venv: Path) -> Path:
    """The Python of a venv holding the peers, created (from PyPI) on first use."""
    python = venv / "bin" / "python"
    marker = venv / ".peers-installed"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                *PEER_PACKAGES,
            ],
            check=True,
        )
        marker.touch()
    return python


def peer_command(python: Path, tool: str, operation: str, reference: str, path: Path) -> list[str]:
    """argv that makes ``tool`` (``oras`` or ``modelpack-client``) push or pull ``path``."""
    return [str(python), str(DRIVER), tool, operation, reference, str(path)]


def peer_version(python: Path, package: str) -> str:
    result = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return result.stdout.strip() or "unknown"
