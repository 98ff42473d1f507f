"""modelpack build."""

from __future__ import annotations

import click

import modelpack
from modelpack.display import human_size
from modelpack.schemas import CLI_BUILD

from .output import emit_json, json_option, status
from .progress import progress_for
from .state import global_options, state


@click.command(
    epilog="""\b
Examples:
  modelpack build ./bert -t 127.0.0.1:5000/team/bert:v1
  modelpack build ./bert -t reg.example.com/ml/bert:v1 --exclude 'checkpoint-*' --push
  SOURCE_DATE_EPOCH=0 modelpack build ./bert -t reg.example.com/ml/bert:v1 --json
"""
)
@click.argument("source", type=click.Path())
@click.option(
    "-t", "--tag", "tag", required=True, help="Reference to name the artifact, HOST/REPO:TAG."
)
@click.option(
    "--exclude", multiple=True, metavar="GLOB", help="Leave out matching files (repeatable)."
)
@click.option(
    "--layer-format",
    type=click.Choice(["raw", "tar"]),
    default="raw",
    show_default=True,
    help="raw: each file is its own layer (zero-copy); tar: one tar per file, as modctl does.",
)
@click.option(
    "--compress",
    type=click.Choice(["none", "gzip", "zstd"]),
    default="none",
    show_default=True,
    help="Compress tar layers.",
)
@click.option(
    "--hf-repo-id",
    metavar="ORG/NAME",
    help="Record the Hugging Face repo id (for pull --hf-cache).",
)
@click.option(
    "--hf-revision", metavar="COMMIT", help="Record the hub commit sha the files come from."
)
@click.option("--push", "push_after", is_flag=True, help="Push to the registry after building.")
@json_option("cli-build.schema.json")
@global_options
def build(
    source: str,
    tag: str,
    exclude: tuple[str, ...],
    layer_format: str,
    compress: str,
    hf_repo_id: str | None,
    hf_revision: str | None,
    push_after: bool,
    as_json: bool,
) -> None:
    """Package the model in SOURCE (a directory) as a ModelPack artifact.

    Files are classified automatically (weights, weight config, doc, code,
    dataset) and the model config is derived from config.json, safetensors
    headers and the README front matter.
    """
    settings = state().settings()
    with progress_for("build") as progress:
        result = modelpack.build(
            source,
            tag,
            exclude=exclude,
            layer_format=layer_format,
            compress=compress,
            hf_repo_id=hf_repo_id,
            hf_revision=hf_revision,
            settings=settings,
            progress=progress,
        )
    document = result.to_dict()
    status(
        f"Built {result.reference} {result.digest} "
        f"({len(result.layers)} layers, {human_size(document['size'])})"
    )
    if push_after:
        with progress_for("push") as progress:
            pushed = modelpack.push(result.reference, settings=settings, progress=progress)
        document["push"] = pushed.to_dict()
        status(
            f"Pushed {pushed.reference} ({pushed.stats.transferred} blobs sent, {pushed.stats.skipped} already there)"
        )
    if as_json:
        emit_json(document, CLI_BUILD)
    else:
        click.echo(f"{result.reference}@{result.digest}")


COMMANDS = [build]
