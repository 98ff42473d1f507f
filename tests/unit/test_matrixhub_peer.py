"""scripts/peers/build-matrixhub.sh and ``python -m modelpack.testing.matrixhub`` without
building or starting anything: one line without ../shared/peer-src (the tests skip), one line in
check mode, and a launcher with no build, or a port that is not one, says so and exits."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "peers" / "build-matrixhub.sh"


def _run(argv: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        env={**os.environ, "MODELPACK_PEERS_DIR": str(tmp_path / "peers"), **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_build_says_one_line_without_the_source_snapshots(tmp_path):
    absent = tmp_path / "no-peer-src"
    result = _run(["bash", str(SCRIPT)], tmp_path, MODELPACK_PEER_SRC=str(absent))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"matrixhub -            not built: {absent} is absent (the MatrixHub tests are skipped)"
    ]
    assert not (tmp_path / "peers").exists()


def test_check_mode_says_to_build_and_builds_nothing(tmp_path):
    src = tmp_path / "peer-src"
    src.mkdir()
    (src / "matrixhub-v0.2.0-rc.3.tar.gz").write_bytes(b"not built from")
    result = _run(
        ["bash", str(SCRIPT)], tmp_path, MODELPACK_PEER_SRC=str(src), MODELPACK_PEERS_CHECK="1"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["matrixhub", "v0.2.0-rc.3", "to", "build"]
    assert not (tmp_path / "peers").exists()


def test_the_launcher_without_a_build_says_so_on_one_line(tmp_path):
    launcher = [sys.executable, "-m", "modelpack.testing.matrixhub"]
    result = _run(launcher, tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: MatrixHub is not built in {tmp_path / 'peers' / 'matrixhub'}: "
        "run scripts/peers/build-matrixhub.sh"
    ]
    refused = _run([*launcher, "--port", "70000"], tmp_path)
    assert refused.returncode == 2 and "--port 70000: not a TCP port" in refused.stderr


def test_every_cell_of_the_hub_table_names_a_test_that_exists():
    """docs/comparison.md's MatrixHub table: a row either names its side-by-side test in
    tests/integration/test_matrixhub.py (and any other test it cites exists) or says "not
    tested" in MatrixHub's column."""
    doc = (ROOT / "docs" / "comparison.md").read_text()
    table = doc.split("## Hubs: `modelpack serve` beside MatrixHub", 1)[1].split("\n\n")[2]
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    side_by_side = (ROOT / "tests" / "integration" / "test_matrixhub.py").read_text()
    every = "".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    named = 0
    for row, ours, theirs, test in rows:
        names = re.findall(r"`(test_\w+)", test)
        if not names:
            assert test.strip(" |") == "-", row
            assert theirs.startswith("not tested") and ours.startswith("not tested"), row
            continue
        assert all(f"def {name}(" in every for name in names), names
        assert any(f"def {name}(" in side_by_side for name in names), names
        named += 1
    assert named == 16
