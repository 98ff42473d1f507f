"""Checks shared by the benchmark report tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.report import replace_section


def rewritten_twice(run: Any, heading: str, section: Callable[[Any], str], tmp_path: Path) -> str:
    """``run`` saved, loaded back equal, and its section written twice into a page with
    two other sections: the page's text (the section once, in its place)."""
    saved = tmp_path / "results.json"
    run.save(saved)
    assert type(run).load_json(saved) == run
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n## Before\n\ntext\n\n## After\n\nmore\n")
    for _ in range(2):
        replace_section(page, heading, section(type(run).load_json(saved)))
    text = page.read_text()
    assert text.count(heading) == 1
    return text
