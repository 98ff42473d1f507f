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


def _code_blocks(page: Path) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block of a docs page."""
    text = page.read_text(encoding="utf-8")
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)


def test_home_page_starts_with_install():
    text = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    install = text.index("\n## Install\n")
    first_table = text.index("\n|")
    assert install < first_table, "docs/index.md: Install comes after a table"
    assert text.index("\n## ") == install, "docs/index.md: Install is not the first section"
    for command in ("make demo", "make test", "pip install ."):
        assert install < text.index(command) < first_table, f"{command} is not in Install"


# What fits beside the copy button in a code block of a 1280-pixel wide window (the lines of a
# command block are pasted as they are, so a long one is split with a backslash, not cut).
CODE_LINE_MAX = 76


@pytest.mark.parametrize("name", ["index.md", "quickstart.md"])
def test_commands_fit_the_code_blocks(name):
    long = [
        line
        for lang, body in _code_blocks(ROOT / "docs" / name)
        if lang in ("bash", "python")
        for line in body.splitlines()
        if len(line) > CODE_LINE_MAX
    ]
    assert not long, f"docs/{name}: code lines over {CODE_LINE_MAX} characters: {long}"


def test_shell_blocks_do_not_paint_addresses(site):
    # The bash lexer makes the 127 of 127.0.0.1 a number token (class "m"), which material
    # paints red; docs/stylesheets/extra.css paints numbers of shell blocks as plain text,
    # which needs the language class on each block (pygments_lang_class).
    source = (site / "quickstart" / "index.html").read_text(encoding="utf-8")
    bash_blocks = re.findall(r'<div class="language-bash highlight">(.*?)</pre>', source, re.S)
    assert any('<span class="m">127</span>.0.0.1' in block for block in bash_blocks)
    assert 'href="../stylesheets/extra.css"' in source
    css = (site / "stylesheets" / "extra.css").read_text(encoding="utf-8")
    rule = css[css.index(".md-typeset .language-bash .m") :]
    assert rule[: rule.index("}")].strip().endswith("color: var(--md-code-fg-color);")
    assert re.search(r"\.md-typeset pre > code \{[^}]*padding-right", css)  # the copy button
