"""modelpack build, modelpack modelfile generate."""

from __future__ import annotations

import click

import modelpack
from modelpack import human_size
from modelpack.schemas import CLI_BUILD

from .output import counted, emit_json, json_option, media_types_option, status
from .progress import progress_for
from .signing_prompt import password_for
from .state import global_options, state


@click.command(
    short_help="Package SOURCE as a ModelPack artifact.",
    epilog="""\b
Examples:
  modelpack build ./bert -t 127.0.0.1:5000/team/bert:v1
  modelpack build hf://sentence-transformers/all-MiniLM-L6-v2 -t reg.example.com/ml/minilm:v1
  modelpack build --from-hf Qwen/Qwen2.5-0.5B --revision 060db6499f32faf8b98477b0a26969ef7d8b9987 -t reg.example.com/ml/qwen:0.5b
  modelpack build ./bert -t reg.example.com/ml/bert:v1 -f Modelfile --push
  modelpack build ./llama -t reg.example.com/ml/llama:v3 --set config.quantization=awq --exclude 'checkpoint-*'
  SOURCE_DATE_EPOCH=0 modelpack build ./bert -t reg.example.com/ml/bert:v1 --json
""",
)
@click.argument("source", required=False)
@click.option(
    "-t", "--tag", "tag", required=True, help="Reference to name the artifact, HOST/REPO:TAG."
)
@click.option(
    "-f",
    "--file",
    "modelfile",
    type=click.Path(dir_okay=False),
    help="A modctl Modelfile: which files, which kinds, which metadata.",
)
@click.option(
    "--from-hf",
    metavar="ORG/NAME",
    help="Build from a Hugging Face hub model (same as SOURCE hf://ORG/NAME).",
)
@click.option("--revision", metavar="REV", help="With --from-hf: a branch, tag or commit sha.")
@click.option(
    "--include",
    multiple=True,
    metavar="GLOB",
    help="Only matching files (repeatable; narrows hf:// downloads).",
)
@click.option(
    "--exclude", multiple=True, metavar="GLOB", help="Leave out matching files (repeatable)."
)
@click.option(
    "--set",
    "set_fields",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Override a config field: config.quantization=awq, descriptor.licenses='[\"MIT\"]'.",
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
@media_types_option("Names to write:")
@click.option("--push", "push_after", is_flag=True, help="Push to the registry after building.")
@click.option(
    "--allow-unsafe-pickle",
    is_flag=True,
    help="Keep pickle files (.bin, .pt, .ckpt ...) that run code when loaded "
    "(refused by default: exit 5); the scan is recorded either way.",
)
@click.option(
    "--sign-key",
    type=click.Path(dir_okay=False),
    help="With --push: sign it too, with this private key.",
)
@json_option(CLI_BUILD)
@global_options
def build(
    source: str | None,
    tag: str,
    modelfile: str | None,
    from_hf: str | None,
    revision: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    set_fields: tuple[str, ...],
    layer_format: str,
    compress: str,
    hf_repo_id: str | None,
    hf_revision: str | None,
    media_types: str | None,
    push_after: bool,
    allow_unsafe_pickle: bool,
    sign_key: str | None,
    as_json: bool,
) -> None:
    """Package the model in SOURCE as a ModelPack artifact.

    SOURCE is a directory (an HF cache snapshot works too), hf://ORG/NAME[@REV]
    (through huggingface_hub, the [hf] extra: HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE honoured)
    or modelscope://ORG/NAME[@REV].  Without -f, files are classified
    automatically (weights, weight config, doc, code, dataset) and the model
    config is derived from config.json, safetensors/GGUF headers and the
    README front matter.
    """
    if from_hf and source:
        raise click.UsageError("give SOURCE or --from-hf, not both")
    if from_hf:
        source = f"hf://{from_hf}" + (f"@{revision}" if revision else "")
    elif revision:
        raise click.UsageError(
            "--revision goes with --from-hf (or write SOURCE as hf://ORG/NAME@REV)"
        )
    if not source:
        raise click.UsageError(
            "missing SOURCE (a directory, hf://ORG/NAME or modelscope://ORG/NAME)"
        )
    settings = state().settings()
    with progress_for("build") as progress:
        result = modelpack.build(
            source,
            tag,
            exclude=exclude,
            include=include,
            modelfile=modelfile,
            set_fields=set_fields,
            layer_format=layer_format,
            compress=compress,
            hf_repo_id=hf_repo_id,
            hf_revision=hf_revision,
            media_types=media_types,
            push=push_after,
            allow_unsafe_pickle=allow_unsafe_pickle,
            settings=settings,
            progress=progress,
        )
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    document = result.to_dict()
    status(
        f"Built {result.reference} {result.digest} "
        f"({counted(len(result.layers), 'layer')}, {human_size(document['size'])})"
    )
    if result.pushed is not None:
        stats = result.pushed.stats
        status(
            f"Pushed {result.reference} ({counted(stats.transferred, 'blob')} sent, "
            f"{stats.mounted} mounted, {stats.skipped} already there)"
        )
        if sign_key:
            signed = modelpack.sign(
                result.reference, sign_key, password=password_for(sign_key), settings=settings
            )
            status(f"Signed {signed.reference} {signed.digest} with key {signed.key_id}")
            document["signature"] = signed.to_dict()
    if as_json:
        emit_json(document, CLI_BUILD)
    else:
        click.echo(f"{result.reference}@{result.digest}")


@click.group(
    epilog="""\b
Examples:
  modelpack modelfile generate ./my-model -o Modelfile
  modelpack build ./my-model -f Modelfile -t reg.example.com/ml/bert:v1
"""
)
def modelfile() -> None:
    """modctl-compatible Modelfiles."""


@modelfile.command(
    short_help="Write a Modelfile listing DIRECTORY's files.",
    name="generate",
    epilog="""\b
Examples:
  modelpack modelfile generate ./my-model
  modelpack modelfile generate ./my-model -o Modelfile
""",
)
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option(
    "--exclude", multiple=True, metavar="GLOB", help="Leave out matching files (repeatable)."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Where to write it (default: DIRECTORY/Modelfile).",
)
@click.option("--force", is_flag=True, help="Replace an existing Modelfile.")
@global_options
def modelfile_generate(
    directory: str, exclude: tuple[str, ...], output: str | None, force: bool
) -> None:
    """Write a Modelfile listing DIRECTORY's files by kind, with the derived metadata.

    modctl builds from it as it is; edit it to move files between kinds or drop them.
    """
    path = modelpack.generate_modelfile(directory, exclude=exclude, output=output, overwrite=force)
    status(f"Wrote {path}")
    click.echo(str(path))


COMMANDS = [build, modelfile]
