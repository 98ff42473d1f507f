"""Issue 22 item 10: every command line in the README and docs is pasteable, and there is
one way to do each thing (the same example model, no flag a loopback registry needs not)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _code_lines(page: Path) -> list[str]:
    lines, inside = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line)
    return lines


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_plain_http_flag_for_a_loopback_registry(page):
    shown = [
        line
        for line in _code_lines(page)
        if "--plain-http" in line and re.search(r"\b(127\.0\.0\.1|localhost)[:/]", line)
    ]
    assert not shown, f"{page.name}: loopback falls back to HTTP by itself: {shown}"


def test_the_example_model_is_made_one_way():
    ways = set()
    for page in PAGES:
        for line in _code_lines(page):
            if "tiny_model" in line and "./my-model" in line:
                ways.add(line.split("#")[0].strip())
    assert ways == {"python -m modelpack.testing.tiny_model ./my-model"}, ways
