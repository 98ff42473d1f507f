"""Headless Chromium, as a person's browser sees a page: a screenshot and the DOM it built."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SHOTS_FOR_THE_LEAD = Path("/tmp/hub-shots")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed (apt-get install chromium)"
    return found


def _run(profile: Path, *args: str) -> subprocess.CompletedProcess:
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [chromium_binary(), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def dump_dom(url: str, workdir: Path) -> str:
    """The DOM after the page loaded (``--dump-dom``)."""
    result = _run(workdir / "chromium-profile", "--dump-dom", url)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def screenshot(url: str, path: Path, workdir: Path, size: str = "1280,900") -> Path:
    """A PNG of the page at ``path``, copied to /tmp/hub-shots/ for people to look at."""
    path.parent.mkdir(parents=True, exist_ok=True)
    result = _run(
        workdir / "chromium-profile", f"--screenshot={path}", f"--window-size={size}",
        "--hide-scrollbars", url,
    )  # fmt: skip
    assert result.returncode == 0 and path.is_file(), result.stderr[-2000:]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    SHOTS_FOR_THE_LEAD.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, SHOTS_FOR_THE_LEAD / path.name)
    return path
