"""The documentation site builds with `mkdocs build --strict` (what `make docs` runs), and the
generated pages hold what they promise: every CLI command, every public Python name."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

import modelpack
from modelpack_cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


def _words(text: str) -> str:
    return " ".join(text.replace("`", "").split())


def _text(page: Path) -> str:
    """The visible text of a built page's article: tags stripped, entities decoded, white
    space folded."""
    source = page.read_text(encoding="utf-8")
    article = source[source.index("<article") : source.index("</article>")]
    return _words(html.unescape(re.sub(r"<[^>]+>", "", article)))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_every_page_of_the_nav_is_built(site):
    pages = sorted(p.stem for p in (ROOT / "docs").glob("*.md"))
    for name in pages:
        built = site / ("index.html" if name == "index" else f"{name}/index.html")
        assert built.is_file(), f"docs/{name}.md was not built"
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for name in pages:
        assert f" {name}.md" in nav, f"docs/{name}.md is not in the nav of mkdocs.yml"


def test_cli_reference_lists_every_command_with_its_help(site):
    text = _text(site / "cli" / "index.html")

    def walk(group: click.Group, prefix: str) -> None:
        for name, command in group.commands.items():
            full = f"{prefix} {name}"
            assert full in text, f"`{full}` is missing from the CLI reference"
            summary = _words(command.get_short_help_str(limit=200))
            assert summary in text, f"the help of `{full}` is garbled: {summary!r}"
            for param in command.params:
                for option in getattr(param, "opts", []):
                    if option.startswith("--"):
                        assert option in text, f"{full} {option} is missing"
            if isinstance(command, click.Group):
                walk(command, full)

    walk(cli, "modelpack")


def test_python_api_reference_documents_every_public_name(site):
    source = (site / "api-reference" / "index.html").read_text(encoding="utf-8")
    documented = set(re.findall(r'id="modelpack\.[\w.]*?\.?(\w+)"', source))
    missing = sorted(set(modelpack.__all__) - documented - {"__version__"})
    assert not missing, f"not in docs/api-reference.md: {missing}"
    text = _text(site / "api-reference" / "index.html")
    assert "Package a model as a ModelPack artifact" in text  # a docstring, rendered
    assert ":func:" not in text and ":class:" not in text  # no raw Sphinx roles


def test_concepts_page_has_its_diagram(site):
    source = (site / "concepts" / "index.html").read_text(encoding="utf-8")
    assert 'class="mermaid"' in source
    assert "application/vnd.cncf.model.weight.v1.raw" in _text(site / "concepts" / "index.html")
