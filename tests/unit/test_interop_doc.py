"""docs/interop.md claims only what a test showed: every row of its matrix names an
interop-marked test with the same tool, direction and check, says it passed, and every
interop-marked test has its row (regenerate with `make interop`)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "interop.md"


def marked_tests() -> dict[tuple[str, str], tuple[str, str, str]]:
    """(file, test name) -> (tool, direction, checked) from each @pytest.mark.interop."""
    found = {}
    for path in sorted((ROOT / "tests" / "integration").glob("test_*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                if (
                    isinstance(decorator, ast.Call)
                    and ast.unparse(decorator.func) == "pytest.mark.interop"
                ):
                    args = tuple(ast.literal_eval(a) for a in decorator.args)
                    found[(path.name, node.name)] = args
    return found


def matrix_rows() -> list[dict[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    body = text.split("<!-- interop-matrix: begin -->", 1)[1].split("<!-- interop-matrix: end -->")[
        0
    ]
    rows = []
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] in ("tool", "---"):
            continue
        tool, version, direction, checked, result, test = cells
        match = re.match(r"`([\w.]+)::(\w+)`", test)
        assert match, line
        rows.append(
            {
                "tool": tool.strip("*"),
                "direction": direction,
                "checked": checked,
                "result": result,
                "key": (match.group(1), match.group(2)),
            }
        )
    return rows


def test_every_row_is_a_passing_marked_test():
    marked = marked_tests()
    rows = matrix_rows()
    assert rows, "docs/interop.md has no matrix: run `make interop`"
    for row in rows:
        assert row["key"] in marked, f"{row['key']} in docs/interop.md is not an interop test"
        assert (row["tool"], row["direction"], row["checked"]) == marked[row["key"]], row
        assert row["result"] == "pass", row


def test_every_marked_test_has_a_row():
    documented = {row["key"] for row in matrix_rows()}
    missing = sorted(set(marked_tests()) - documented)
    assert not missing, f"not in docs/interop.md (run `make interop`): {missing}"
