"""Where output goes: results on stdout, status and progress on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from modelpack.schemas import validate

from .state import state

if TYPE_CHECKING:
    from rich.console import Console


def _console(stream) -> Console:  # noqa: ANN001
    from rich.console import Console  # imported when output is drawn

    # Off a terminal rich would wrap tables at 80 columns; logs and pipes want whole lines.
    width = None if stream.isatty() else 240
    return Console(file=stream, width=width, highlight=False, soft_wrap=not stream.isatty())


def stdout() -> Console:
    return _console(sys.stdout)


def stderr() -> Console:
    return _console(sys.stderr)


def status(message: str) -> None:
    """A human status line on stderr, unless --quiet."""
    if not state().quiet:
        stderr().print(message)


def emit_json(document: Any, schema_name: str) -> None:
    """Print the one JSON document of --json, checked against its published schema."""
    validate(document, schema_name, "--json output")
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """``1 layer``, ``2 layers``: a count with its noun in the right number."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def short_digest(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def json_option(schema_name: str):  # noqa: ANN201 - a click decorator
    """``--json``: print one document valid against ``modelpack/schemas/<schema_name>``."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help=f"Print one JSON document (modelpack/schemas/{schema_name}).",
    )


def print_models(
    rows: list[Any],
    schema_name: str,
    as_json: bool,
    columns: dict[str, Callable[[Any], str]],
) -> None:
    """A list of models: ``{"models": [row.to_dict()...]}`` with --json, else a table with
    one column per ``columns`` entry (header -> cell of a row; SIZE is right-aligned)."""
    if as_json:
        emit_json({"models": [row.to_dict() for row in rows]}, schema_name)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for header in columns:
        table.add_column(header, justify="right" if header == "SIZE" else "left")
    for row in rows:
        table.add_row(*(cell(row) for cell in columns.values()))
    print_table(table)


def print_table(table: Any) -> None:
    """A rich table on stdout without the spaces rich pads its last column with."""
    from rich.segment import Segment, Segments

    console = stdout()
    segments: list[Segment] = []
    for line in console.render_lines(table, pad=False):
        while line and not line[-1].text.strip():
            line.pop()
        if line:
            last = line[-1]
            line[-1] = Segment(last.text.rstrip(), last.style, last.control)
        segments += [*line, Segment.line()]
    console.print(Segments(segments), end="")


def short_reference(reference: str) -> str:
    """``REPO@sha256:<12 hex>…`` (or ``sha256:<12 hex>…``, what a pull by digest keeps) for
    a reference by digest, so a table stays narrow (DIGEST and --json have it whole)."""
    name, at, digest = reference.rpartition("@")
    if not at and reference.startswith("sha256:"):
        digest = reference
    return f"{name}{at}{digest[:19]}…" if digest.startswith("sha256:") else reference


def media_types_option(what: str):  # noqa: ANN201 - a click decorator
    """``--media-types cncf|cnai``: which ModelPack names the artifact gets."""
    return click.option(
        "--media-types",
        type=click.Choice(["cncf", "cnai"]),
        default=None,
        help=f"{what} cncf: the spec's names; cnai: the names released Harbor (2.13-2.15) "
        "renders. Default: the registry's media_types in the registries config, else cncf.",
    )


def report_transfer(result, summary: str, as_json: bool) -> None:  # noqa: ANN001 - TransferResult
    """A push or copy result: a status line, then REF@DIGEST or the --json document."""
    from modelpack.schemas import CLI_TRANSFER

    status(summary)
    if result.converted_from is not None:
        status(
            f"Converted from {result.converted_from}: its signatures name that digest and were "
            "not copied; sign the converted artifact (`modelpack sign`)"
        )
    if as_json:
        emit_json(result.to_dict(), CLI_TRANSFER)
    else:
        click.echo(f"{result.reference}@{result.digest}")
