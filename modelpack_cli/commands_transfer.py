"""modelpack push / pull."""

from __future__ import annotations

import click

import modelpack
from modelpack import human_size
from modelpack.schemas import CLI_TRANSFER

from .output import counted, emit_json, json_option, report_transfer, status
from .progress import progress_for
from .signing_prompt import password_for
from .state import global_options, state


@click.command(
    short_help="Upload the built artifact REFERENCE.",
    epilog="""\b
Examples:
  modelpack push 127.0.0.1:5000/team/bert:v1
  modelpack push reg.example.com/ml/bert:v1 --json
""",
)
@click.argument("reference")
@click.option(
    "--sign-key", type=click.Path(dir_okay=False), help="Sign after pushing, with this private key."
)
@json_option("cli-transfer.schema.json")
@global_options
def push(reference: str, sign_key: str | None, as_json: bool) -> None:
    """Upload the locally built artifact REFERENCE to its registry.

    Blobs the registry already has are skipped; the rest are streamed in
    parallel and verified against their digests.
    """
    with progress_for("push") as progress:
        result = modelpack.push(reference, settings=state().settings(), progress=progress)
    if sign_key:
        signed = modelpack.sign(
            reference, sign_key, password=password_for(sign_key), settings=state().settings()
        )
        status(f"Signed {signed.reference} {signed.digest} with key {signed.key_id}")
    stats = result.stats
    report_transfer(
        result,
        f"Pushed {result.reference} {result.digest}: {counted(stats.transferred, 'blob')} sent "
        f"({human_size(stats.bytes_transferred)}), {stats.mounted} mounted, "
        f"{stats.skipped} already there",
        as_json,
    )


@click.command(
    short_help="Download model REFERENCE into a directory.",
    epilog="""\b
Examples:
  modelpack pull 127.0.0.1:5000/team/bert:v1 -o ./bert
  modelpack pull reg.example.com/ml/llama:v3 -o /models/llama --include '*.json' --include 'model-00001*'
  path=$(modelpack pull reg.example.com/ml/bert:v1 -q)
""",
)
@click.argument("reference")
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(file_okay=False),
    help="Write the model's files into this directory, exactly as in the source repository.",
)
@click.option("--include", multiple=True, metavar="GLOB", help="Only files matching (repeatable).")
@click.option(
    "--hf-cache",
    "hf_cache",
    type=click.Path(file_okay=False),
    help="Also lay the model out in this Hugging Face hub cache (e.g. ~/.cache/huggingface/hub) "
    "so from_pretrained(repo_id) finds it with HF_HUB_OFFLINE=1; prints the snapshot path.",
)
@click.option(
    "--hf-repo-id",
    metavar="ORG/NAME",
    help="Repo id in the HF cache (default: the reference's last two path components).",
)
@click.option(
    "--hf-revision", metavar="NAME", help="Also name the snapshot by this revision (refs/NAME)."
)
@click.option(
    "--hf-trust-annotations",
    is_flag=True,
    help="Take the HF repo id and commit the artifact recorded at build (annotations) "
    "instead of the reference's; only for artifacts whose publisher you trust.",
)
@click.option(
    "--force",
    is_flag=True,
    help="With -o: replace files of DIR that hold other bytes (default: refuse, exit 2).",
)
@click.option(
    "--allow-oci-artifact",
    is_flag=True,
    help="Also pull an OCI artifact that is not a ModelPack model (e.g. made by oras push): "
    "its titled files are written.",
)
@click.option(
    "--verify-key",
    type=click.Path(dir_okay=False),
    envvar="MODELPACK_VERIFY_KEY",
    help="Public key: refuse the model unless it carries a valid signature by it [env MODELPACK_VERIFY_KEY].",
)
@click.option(
    "--model-signature",
    is_flag=True,
    help="With -o: also write the OpenSSF model signature as DIR/model.sig.",
)
@json_option("cli-transfer.schema.json")
@global_options
def pull(
    reference: str,
    output: str | None,
    include: tuple[str, ...],
    hf_cache: str | None,
    hf_repo_id: str | None,
    hf_revision: str | None,
    hf_trust_annotations: bool,
    force: bool,
    allow_oci_artifact: bool,
    verify_key: str | None,
    model_signature: bool,
    as_json: bool,
) -> None:
    """Download model REFERENCE and print the directory holding its files.

    Every blob is verified against its digest before any file becomes
    visible; a failed pull leaves nothing behind.
    """
    with progress_for("pull") as progress:
        result = modelpack.pull_model(
            reference,
            output,
            include=include,
            hf_cache=hf_cache or False,
            hf_repo_id=hf_repo_id,
            hf_revision=hf_revision,
            hf_trust_annotations=hf_trust_annotations,
            verify_key=verify_key,
            model_signature=model_signature,
            force=force,
            allow_oci_artifact=allow_oci_artifact,
            settings=state().settings(),
            progress=progress,
        )
    stats = result.stats
    status(
        f"Pulled {result.reference} {result.digest}: {counted(len(result.files), 'file')}, "
        f"{human_size(result.size or 0)} ({human_size(stats.bytes_transferred)} downloaded)"
    )
    if as_json:
        emit_json(result.to_dict(), CLI_TRANSFER)
    else:
        click.echo(str(result.path))


COMMANDS = [push, pull]
