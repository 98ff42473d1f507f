"""modelpack inspect / ls / tag / rm / prune."""

from __future__ import annotations

import click
from rich.text import Text

import modelpack
from modelpack import human_size
from modelpack.schemas import CLI_INSPECT, CLI_LS, CLI_TAGS

from .output import (
    counted,
    emit_json,
    json_option,
    print_models,
    print_table,
    short_digest,
    short_reference,
    status,
    stdout,
)
from .state import global_options, state


@click.command(
    short_help="Show REFERENCE's manifest, config and layers.",
    epilog="""\b
Examples:
  modelpack inspect 127.0.0.1:5000/team/bert:v1
  modelpack inspect 127.0.0.1:5000/team/bert:v1 --remote --json
""",
)
@click.argument("reference")
@click.option("--remote", is_flag=True, help="Ask the registry instead of the local store.")
@json_option("cli-inspect.schema.json")
@global_options
def inspect(reference: str, remote: bool, as_json: bool) -> None:
    """Show the manifest, model config and layers of REFERENCE."""
    result = modelpack.inspect(reference, remote=remote, settings=state().settings())
    document = result.to_dict()
    if as_json:
        emit_json(document, CLI_INSPECT)
        return
    console = stdout()
    console.print(f"[bold]{result.reference}[/bold] ({result.location})")
    from rich.table import Table

    summary = Table(box=None, pad_edge=False, show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    for label, value in _metadata_rows(result, document):
        summary.add_row(label, value)
    print_table(summary)
    console.print()
    table = Table(box=None, pad_edge=False)
    scanned = any("pickleScan" in layer for layer in document["layers"])
    for column in ("PATH", "MEDIA TYPE", "DIGEST", "SIZE", *(("PICKLE SCAN",) if scanned else ())):
        table.add_column(column, justify="right" if column == "SIZE" else "left")
    for layer in document["layers"]:
        row: list[str | Text] = [
            layer.get("path", "-"),
            layer["mediaType"]
            .removeprefix("application/vnd.cncf.model.")
            .removeprefix("application/vnd.docker.ai."),
            short_digest(layer["digest"]),
            human_size(layer["size"]),
        ]
        if scanned:
            row.append(_pickle_scan(layer.get("pickleScan")))
        table.add_row(*row)
    print_table(table)


def _pickle_scan(scan: dict | None) -> Text:
    """A layer's pickle scan: its status, the first thing it calls, whether it was allowed
    (a Text: names a pickle chose are never read as markup)."""
    if scan is None:
        return Text("-")
    risky = [f"{i['module']}.{i['name']}" for i in scan["imports"] if i["safety"] != "innocuous"]
    detail = f" ({risky[0]}{', ...' if len(risky) > 1 else ''})" if risky else ""
    return Text(scan["status"] + detail + (", allowed" if scan.get("allowed") else ""))


def _metadata_rows(result, document: dict) -> list[tuple[str, str]]:  # noqa: ANN001 - Inspection
    rows = [
        ("digest", result.descriptor.digest),
        ("artifactType", str(result.manifest.artifact_type)),
        (
            "size",
            f"{human_size(document['size'])} in {counted(len(result.manifest.layers), 'layer')}",
        ),
        ("signatures", f"{result.signatures} (referrers: {len(result.referrers)})"),
    ]
    rows += [(f"image ({image['kind']})", image["digest"]) for image in document["images"]]
    if document["imageOf"]:
        rows.append(("image of", document["imageOf"]))
    if result.docker_config is not None:
        return rows + _docker_rows(result.docker_config, result.manifest.config.media_type)
    if result.config is None:
        return rows
    descriptor, config = result.config.descriptor, result.config.config
    caps = config.capabilities
    for label, value in (
        ("name", descriptor.name),
        ("family", descriptor.family),
        ("architecture", config.architecture),
        ("format", config.format),
        ("parameters", config.param_size),
        ("precision", config.precision),
        ("quantization", config.quantization),
        ("licenses", ", ".join(descriptor.licenses)),
        ("languages", ", ".join(caps.languages) if caps else None),
        (
            "inputs -> outputs",
            f"{', '.join(caps.input_types)} -> {', '.join(caps.output_types)}"
            if caps and caps.input_types
            else None,
        ),
        ("datasets", ", ".join(descriptor.datasets_url)),
        ("source", descriptor.source_url),
        ("revision", descriptor.revision),
        ("created", descriptor.created_at),
    ):
        rows += _filled(label, value)
    return rows


def _filled(label: str, value: object) -> list[tuple[str, str]]:
    """The row of a field that has a value; none for an empty one."""
    return [] if value is None or value == "" else [(label, str(value))]


def _docker_rows(config, media_type: str) -> list[tuple[str, str]]:  # noqa: ANN001
    """A Docker Model Runner model's config (modelpack.oci.modelrunner.DockerModelConfig)."""
    version = media_type.removeprefix("application/vnd.docker.ai.model.config.").split("+")[0]
    rows = [("model", f"Docker Model Runner format {version}")]
    for label, value in (
        ("architecture", config.architecture),
        ("format", config.format),
        ("parameters", config.parameters),
        ("quantization", config.quantization),
        ("context size", config.context_size),
        ("weights size", config.size),
        ("created", config.created),
    ):
        rows += _filled(label, value)
    return rows


@click.command(
    name="ls",
    epilog="""\b
Examples:
  modelpack ls
  modelpack ls --json | jq -r '.models[].reference'
""",
)
@json_option("cli-ls.schema.json")
@global_options
def list_command(as_json: bool) -> None:
    """List the artifacts in the local store."""
    models = modelpack.list_models(settings=state().settings())
    print_models(
        models,
        CLI_LS,
        as_json,
        {
            "REFERENCE": lambda m: short_reference(m.reference),
            "DIGEST": lambda m: short_digest(m.digest),
            "NAME": lambda m: m.name or "-",
            "FORMAT": lambda m: m.format or "-",
            "PARAMS": lambda m: m.param_size or "-",
            "SIZE": lambda m: human_size(m.size),
            "CREATED": lambda m: m.created or "-",
        },
    )


@click.command(
    short_help="Give stored artifact SOURCE the name TARGET.",
    epilog="""\b
Examples:
  modelpack tag 127.0.0.1:5000/team/bert:v1 reg.example.com/ml/bert:v1
  modelpack push reg.example.com/ml/bert:v1
""",
)
@click.argument("source")
@click.argument("target")
@global_options
def tag(source: str, target: str) -> None:
    """Name the stored artifact SOURCE also as TARGET (no bytes copied)."""
    desc = modelpack.tag(source, target, settings=state().settings())
    status(f"Tagged {desc.digest} as {modelpack.parse_reference(target)}")


@click.command(
    short_help="Remove REFERENCES from the local store.",
    name="rm",
    epilog="""\b
Examples:
  modelpack rm 127.0.0.1:5000/team/bert:v1
  modelpack rm 127.0.0.1:5000/team/bert:v1 127.0.0.1:5000/team/bert:v2 && modelpack prune
""",
)
@click.argument("references", nargs=-1, required=True)
@global_options
def remove_command(references: tuple[str, ...]) -> None:
    """Remove REFERENCES from the local store (run prune to free the space)."""
    settings = state().settings()
    for reference in references:
        desc = modelpack.remove(reference, settings=settings)
        status(f"Untagged {modelpack.parse_reference(reference)} ({desc.digest})")


@click.command(
    short_help="Delete untagged blobs and interrupted pulls.",
    epilog="""\b
Examples:
  modelpack rm 127.0.0.1:5000/team/bert:v1 && modelpack prune
""",
)
@global_options
def prune() -> None:
    """Delete blobs and model trees no tag refers to, and what interrupted pulls kept."""
    result = modelpack.prune(settings=state().settings())
    for pull in result.interrupted_removed:
        status(f"Removed {pull.staging} ({human_size(pull.size)} an interrupted pull kept)")
    status(
        f"Removed {counted(result.blobs_removed, 'blob')}, "
        f"{counted(result.models_removed, 'model tree')} and "
        f"{counted(len(result.interrupted_removed), 'interrupted pull')}, "
        f"freed {human_size(result.bytes_freed)}"
    )


@click.command(
    short_help="List the tags of REPOSITORY in its registry.",
    epilog="""\b
Examples:
  modelpack tags 127.0.0.1:5000/team/bert
  modelpack tags harbor.example.com/ml/bert --json | jq -r '.tags[]'
""",
)
@click.argument("repository")
@click.option(
    "--all", "include_companions", is_flag=True, help="Also the sha256-<hex>.sig-style tags."
)
@json_option("cli-tags.schema.json")
@global_options
def tags(repository: str, include_companions: bool, as_json: bool) -> None:
    """List the tags of REPOSITORY (HOST/NAME) in its registry."""
    found = modelpack.list_tags(
        repository, include_companions=include_companions, settings=state().settings()
    )
    if as_json:
        emit_json({"repository": repository, "tags": found}, CLI_TAGS)
        return
    if not found:
        status(f"{repository} has no tags")
    for name in found:
        click.echo(name)


COMMANDS = [inspect, list_command, tags, tag, remove_command, prune]
