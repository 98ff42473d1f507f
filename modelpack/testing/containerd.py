"""A private containerd (Debian's, with runc) for tests and benchmarks: what a kubelet on
containerd does with an image (pull, unpack, mount, run), without a kubelet. Root only. Its
root, state and socket live in one folder; stopping it kills its tasks and shims, unmounts what
it mounted and removes the folder."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CONFIG = """version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{socket}"
"""


def version(tool: str) -> str:
    """``containerd``/``runc --version``: the third word of either."""
    out = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.split()
    return out[2] if len(out) > 2 else "?"


@dataclass
class Containerd:
    workdir: Path
    _process: subprocess.Popen | None = None
    _containers: list[str] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd.sock"

    def __enter__(self) -> Containerd:
        missing = [t for t in ("containerd", "ctr", "runc") if shutil.which(t) is None]
        if missing:
            raise RuntimeError(
                f"{', '.join(missing)} not installed (Debian: apt-get install containerd runc)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.toml"
        config.write_text(CONFIG.format(root=self.workdir / "root", state=self.workdir / "state",
                                        socket=self.socket))  # fmt: skip
        log = open(self.workdir / "containerd.log", "wb")  # noqa: SIM115
        self._process = subprocess.Popen(["containerd", "--config", str(config)],
                                         stdout=log, stderr=log)  # fmt: skip
        deadline = time.monotonic() + 30
        while self.ctr("version", check=False).returncode != 0:
            assert self._process.poll() is None, (self.workdir / "containerd.log").read_text()
            assert time.monotonic() < deadline, "containerd did not start in 30 s"
            time.sleep(0.1)
        return self

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(["ctr", "--address", str(self.socket), *args],
                                capture_output=True, text=True, timeout=timeout)  # fmt: skip
        if check:
            assert result.returncode == 0, f"ctr {' '.join(args)}: {result.stderr}"
        return result

    def pull(self, reference: str) -> None:
        self.ctr("images", "pull", "--plain-http", reference)

    def run(self, reference: str, name: str, *command: str, detach: bool = False,
            options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:  # fmt: skip
        if detach:  # the others remove themselves (--rm)
            self._containers.append(name)
        flags = ["-d"] if detach else ["--rm"]
        return self.ctr("run", *flags, *options, reference, name, *command, check=False)

    def task_pid(self, name: str) -> int:
        for line in self.ctr("tasks", "ls").stdout.splitlines()[1:]:
            parts = line.split()
            if parts and parts[0] == name:
                return int(parts[1])
        raise AssertionError(f"no task {name}")

    def __exit__(self, *exc: object) -> None:
        for name in self._containers:
            self.ctr("tasks", "kill", "-s", "SIGKILL", name, check=False)
        for name in self._containers:
            for _ in range(50):
                self.ctr("tasks", "rm", "-f", name, check=False)
                if self.ctr("containers", "rm", name, check=False).returncode == 0:
                    break
                time.sleep(0.1)
        if self._process is not None:
            self._process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=10)
            if self._process.poll() is None:
                self._process.kill()
        subprocess.run(["pkill", "-f", f"containerd-shim.*{self.workdir}"], check=False)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.workdir))]  # fmt: skip
        for mount in sorted(mounts, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)
