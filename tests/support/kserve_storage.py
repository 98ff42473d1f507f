"""KServe's storage initializer, for real: ``kserve-storage`` from PyPI (what KServe's
``storage-initializer`` image runs) in a venv of its own, called the way that image's
entrypoint calls it (``Storage.download_files([uri], [dest])``).

It cannot share our environment: it pins botocore, which needs python-dateutil < 3 (ours
has 4.x; ``pip install --dry-run`` would downgrade it), and it brings the S3, GCS and Azure
SDKs along.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

KSERVE_STORAGE = "kserve-storage==0.21.0"  # the newest on PyPI (2026-11)

# Logs to stderr as the image does; exit 1 with the error's type and text on the last line.
_DRIVER = """\
import sys
from kserve_storage import Storage
from kserve_storage.logging import configure_logging
configure_logging()
try:
    Storage.download_files([sys.argv[1]], [sys.argv[2]])
except Exception as e:
    print(f"{type(e).__name__}: {e}", file=sys.stderr)
    sys.exit(1)
"""


def kserve_storage_python(venv: Path) -> Path:
    """The Python of a venv holding :data:`KSERVE_STORAGE`, created on first use."""
    python = venv / "bin" / "python"
    marker = venv / f".installed-{KSERVE_STORAGE}"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
             KSERVE_STORAGE],
            check=True, timeout=900,
        )  # fmt: skip
        marker.touch()
    return python


def storage_initializer(
    python: Path, uri: str, dest: Path, home: Path
) -> subprocess.CompletedProcess:
    """Run the storage initializer's download of ``uri`` into ``dest``, as KServe runs it
    for an ``oci://`` (or ``oci+fetch://``) storageUri against a plain-HTTP registry: the
    webhook's ``ociInsecureRegistry`` setting arrives as KSERVE_OCI_INSECURE_REGISTRY."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),  # oras-py reads ~/.docker/config.json: none, anonymous
        "KSERVE_OCI_INSECURE_REGISTRY": "true",
        "KSERVE_OCI_DOCKER_CONFIG": str(home / "no-docker-config.json"),
    }
    return subprocess.run(
        [str(python), "-c", _DRIVER, uri, str(dest)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
