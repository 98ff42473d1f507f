"""What the pickle scans left, as the hub shows it (docs/gateway.md, "Scanning").

A scan (model/pickles.py) is made when a model is built, a commit is pushed
(writes/scanning.py) or a repo is imported, and kept in its layer's annotation.
``file_security`` and ``repo_security`` answer what the hub answers in
``securityFileStatus`` (tree, paths-info) and ``securityRepoStatus`` (model info), and
``scan_badge`` marks a file on the web page, from those annotations.
"""

from __future__ import annotations

import html
from typing import Any

from ...model.pickles import PickleScan
from ...oci.spec import ANNOTATION_PICKLE_SCAN
from ..core.hub import RepoFile

# The hub's levels (securityRepoStatus.filesWithIssues[].level) for our statuses.
LEVELS = {"suspicious": "suspicious", "unsafe": "unsafe", "error": "error"}


def layer_scan(f: RepoFile) -> PickleScan | None:
    if f.layer is None:
        return None
    return PickleScan.from_annotation(f.path, f.layer.annotations.get(ANNOTATION_PICKLE_SCAN))


def file_security(f: RepoFile) -> dict[str, Any] | None:
    """``securityFileStatus`` as the hub writes it (huggingface_hub's RepoFile.security):
    no antivirus runs here, so ``avScan`` is null."""
    scan = layer_scan(f)
    if scan is None:
        return None
    highest = max((i.safety for i in scan.imports), key=_SAFETY_ORDER.index, default="innocuous")
    return {
        "status": scan.status,
        "avScan": None,
        "pickleImportScan": {
            "highestSafetyLevel": highest,
            "imports": [
                {"module": i.module, "name": i.name, "safety": i.safety} for i in scan.imports
            ],
        },
    }


_SAFETY_ORDER = ["innocuous", "suspicious", "dangerous"]


def with_file_security(entries: list[dict], files: dict[str, RepoFile]) -> list[dict]:
    """Tree or paths-info entries, each scanned file's with its ``securityFileStatus``."""
    for entry in entries:
        found = files.get(entry.get("path", "")) if entry.get("type") == "file" else None
        if found is not None and (security := file_security(found)) is not None:
            entry["securityFileStatus"] = security
    return entries


def repo_security(files: dict[str, RepoFile]) -> dict[str, Any]:
    """``securityRepoStatus`` (huggingface_hub's ModelInfo.security_repo_status): the
    scans are done when the model was built or committed; the files they did not pass."""
    issues = []
    for path, f in sorted(files.items()):
        scan = layer_scan(f)
        if scan is not None and scan.status in LEVELS:
            issues.append({"path": path, "level": LEVELS[scan.status]})
    return {"scansDone": True, "filesWithIssues": issues}


def scan_badge(f: RepoFile) -> str:
    """The web page's mark beside a scanned file ("pickle: safe", "pickle: unsafe: calls
    posix.system (allowed)"), escaped: the names come from the file."""
    scan = layer_scan(f)
    if scan is None:
        return ""
    css = "scan-ok" if scan.status == "safe" else "scan-bad"
    return f' <span class="badge {css}">pickle: {html.escape(scan.summary())}</span>'
