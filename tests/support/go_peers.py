"""The reference tools, built from the Go module proxy at pinned versions, for tests.

``scripts/peers/build-peers.sh`` builds each tool once into a cache outside the repo
(``make test`` runs it first; here it only confirms the cache, 0.1 s).  A test runs a
tool through :meth:`GoPeers.run`, which fails the test with the tool's own output
when it exits non-zero, so a broken peer reads as what it said.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "peers" / "build-peers.sh"
PINS = ROOT / "scripts" / "peers" / "pins.txt"


def pinned_versions() -> dict[str, str]:
    versions = {}
    for line in PINS.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and len(fields) >= 3:
            versions[fields[0]] = fields[2]
    return versions


@dataclass
class GoPeers:
    bin_dir: Path
    workdir: Path  # each tool's own state (modctl storage, kit config) lives below here
    versions: dict[str, str] = field(default_factory=pinned_versions)

    def path(self, tool: str) -> Path:
        return self.bin_dir / tool

    def run(
        self,
        tool: str,
        *args: str,
        check: bool = True,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(self.path(tool)), *self.state_args(tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env={**os.environ, "HOME": str(self.workdir / "home"), **(env or {})},
        )
        if check:
            assert result.returncode == 0, (
                f"{tool} {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def state_args(self, tool: str) -> list[str]:
        """Keep every tool's local state inside the test's folder."""
        if tool == "modctl":
            return [
                "--storage-dir", str(self.workdir / "modctl"),
                "--log-dir", str(self.workdir / "modctl-logs"),
                "--no-progress",
            ]  # fmt: skip
        if tool == "kit":
            return ["--config", str(self.workdir / "kit"), "--progress", "none"]
        return []


@dataclass
class CraneRegistry:
    """go-containerregistry's registry (``crane registry serve``): a second implementation of
    the distribution API beside CNCF distribution, blobs on disk.  It has no referrers API
    (its ``pkg/registry`` option for one is not reachable from the command), so referrers go
    through the tag schema there too."""

    peers: GoPeers
    workdir: Path
    port: int = 0
    _process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def __enter__(self) -> CraneRegistry:
        from modelpack.testing.registry import free_port, wait_until_serving

        self.port = free_port()
        (self.workdir / "blobs").mkdir(parents=True, exist_ok=True)
        log = self.workdir / "log"
        with open(log, "wb") as stderr:  # the child keeps its own descriptor
            self._process = subprocess.Popen(
                [str(self.peers.path("crane")), "registry", "serve",
                 "--address", self.host, "--disk", str(self.workdir / "blobs")],
                stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
        wait_until_serving(self.url, self._process, log, timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)


def build_peers() -> Path:
    """Run the build script (cached: only a changed pin rebuilds); the bin directory."""
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, (
        f"building the peer tools failed:\n{result.stdout}{result.stderr}"
    )
    match = re.search(r"^bin dir: (.+)$", result.stdout, re.M)
    assert match, result.stdout
    return Path(match.group(1).strip())
