"""The staging directories that pulls into ``-o DIR`` left behind, so that ``prune``
and ``doctor`` can find them.

A pull stages beside its target (``.modelpack-staging-<name>``) and keeps the raw
downloads there when it is interrupted, for the next pull to resume.  Those folders
live wherever users pulled to, outside MODELPACK_HOME, so each one is recorded here
(``<home>/interrupted/<id>.json``) from the moment it is made until the pull commits
or gives it up.  A record whose folder is still there, and that no running pull
holds, is an interrupted pull: a SIGKILL leaves one too.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ._destination import STAGING_PREFIX
from ._fsutil import atomic_write_bytes, private_folder, remove_tree
from ._locks import file_lock, held_elsewhere
from .diskspace import held_bytes


@dataclass(frozen=True)
class InterruptedPull:
    """A staging directory no pull is using: what it was for and what it holds."""

    staging: Path
    destination: Path
    size: int
    started: float

    def to_dict(self) -> dict[str, object]:
        return {
            "staging": str(self.staging),
            "destination": str(self.destination),
            "size": self.size,
            "started": self.started,
        }

    @classmethod
    def of(cls, staging: Path, document: dict[str, object], size: int) -> InterruptedPull:
        started = document.get("started")
        return cls(
            staging,
            Path(str(document.get("destination", ""))),
            size,
            float(started) if isinstance(started, int | float) else 0.0,
        )


def _tree_size(root: Path) -> int:
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            total += held_bytes(Path(folder, name))
    return total


def _ours(path: Path) -> bool:
    """A real folder named like a staging directory, ours and private, as a pull makes it."""
    return path.name.startswith(STAGING_PREFIX.rstrip("-")) and private_folder(path) is True


class InterruptedPulls:
    """The records under ``<home>/interrupted``."""

    def __init__(self, home: Path) -> None:
        self.root = Path(home) / "interrupted"

    def _record_path(self, staging: Path) -> Path:
        name = hashlib.sha256(os.fsencode(os.path.abspath(staging))).hexdigest()[:32]
        return self.root / f"{name}.json"

    def record(self, staging: Path, destination: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        document = {
            "staging": os.path.abspath(staging),
            "destination": os.path.abspath(destination),
            "started": time.time(),
        }
        atomic_write_bytes(self._record_path(staging), json.dumps(document).encode())

    def forget(self, staging: Path) -> None:
        self._record_path(staging).unlink(missing_ok=True)

    def _records(self) -> list[tuple[Path, dict[str, object]]]:
        if not self.root.is_dir():
            return []
        records = []
        for path in sorted(self.root.glob("*.json")):
            try:
                document = json.loads(path.read_bytes())
                if isinstance(document, dict) and isinstance(document.get("staging"), str):
                    records.append((path, document))
            except (OSError, ValueError):
                continue  # a torn or foreign file: not ours to read
        return records

    def stale(self) -> list[InterruptedPull]:
        """Interrupted pulls whose staging directory is still there; changes nothing."""
        found = []
        for _, document in self._records():
            staging = Path(str(document["staging"]))
            if _ours(staging) and not held_elsewhere(f"{staging}.lock"):
                found.append(InterruptedPull.of(staging, document, _tree_size(staging)))
        return found

    def clear(self) -> list[InterruptedPull]:
        """Remove every interrupted pull's staging directory (not one a pull holds now)
        and the records of those already gone; what was removed."""
        removed = []
        for record, document in self._records():
            staging = Path(str(document["staging"]))
            if not _ours(staging):
                record.unlink(missing_ok=True)  # gone, or no longer ours: nothing to remove
                continue
            lock = Path(f"{staging}.lock")
            with file_lock(lock, blocking=False) as held:
                if not held:
                    continue  # a pull is resuming it right now
                size = _tree_size(staging)
                remove_tree(staging)
                lock.unlink(missing_ok=True)
            record.unlink(missing_ok=True)
            removed.append(InterruptedPull.of(staging, document, size))
        return removed
