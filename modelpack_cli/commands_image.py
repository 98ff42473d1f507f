"""modelpack image: an OCI image of a model, for Kubernetes image volumes and KServe modelcars."""

from __future__ import annotations

import click

import modelpack
from modelpack import human_size
from modelpack.schemas import CLI_IMAGE

from .output import counted, emit_json, json_option, status
from .progress import progress_for
from .state import global_options, state


@click.command(
    short_help="Make an image of a model for image volumes.",
    epilog="""\b
Examples:
  modelpack image 127.0.0.1:5000/ml/bert:v1 127.0.0.1:5000/ml/bert:v1-image
  modelpack image 127.0.0.1:5000/ml/bert:v1 127.0.0.1:5000/ml/bert:v1-modelcar --modelcar
  modelpack image 127.0.0.1:5000/ml/bert:v1 127.0.0.1:5000/ml/bert:v1-kserve --modelcar --modelcar-layout files
  modelpack image store:127.0.0.1:5000/ml/bert:v1 127.0.0.1:5000/images/bert:v1 --json
""",
)
@click.argument("reference")
@click.argument("image_ref")
@click.option(
    "--modelcar",
    is_flag=True,
    help="For KServe (storageUri oci://): add a static busybox and /models.",
)
@click.option(
    "--modelcar-layout",
    type=click.Choice(["links", "files"]),
    help="With --modelcar: /models as symlinks to the model's own layers (links: no byte "
    "added; KServe's modelcar sidecar only) or as a copy of every file (files: the model's "
    "size again; also KServe's storage initializer, oci+fetch:// and oci+native://) "
    "[default: links].",
)
@click.option(
    "--platform",
    metavar="OS/ARCH[,...]",
    help="The image's platform; several (linux/amd64,linux/arm64) write an index "
    "[default: linux/amd64, or the busybox's architecture].",
)
@click.option(
    "--busybox",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="With --modelcar: the static busybox to use [default: /bin/busybox].",
)
@click.option(
    "--convert-raw",
    is_flag=True,
    help="Add a tar copy of each raw layer (their size again in the registry).",
)
@json_option(CLI_IMAGE)
@global_options
def image(
    reference: str,
    image_ref: str,
    modelcar: bool,
    modelcar_layout: str | None,
    platform: str | None,
    busybox: str | None,
    convert_raw: bool,
    as_json: bool,
) -> None:
    """Push IMAGE_REF, an OCI image of the model REFERENCE that container runtimes mount.

    The model's tar layers are the image's layers, so the registry stores no layer twice;
    the files are at the image root (an image volume's mountPath), with --modelcar also
    under /models.  A model built with raw layers (modelpack's default) is refused unless
    --convert-raw; building it with --layer-format tar avoids the copy.  With --modelcar
    --modelcar-layout files the image holds a copy of each file under /models instead (any
    layer format), which every way KServe reads an OCI model accepts.  REFERENCE may also be
    store:REF or oci:DIR[:TAG]; a model in another repository is copied (mounted) into
    IMAGE_REF's repository first.
    """
    with progress_for("copy") as progress:
        result = modelpack.image(
            reference,
            image_ref,
            modelcar=modelcar,
            platform=platform,
            busybox=busybox,
            convert_raw=convert_raw,
            modelcar_layout=modelcar_layout,
            settings=state().settings(),
            progress=progress,
        )
    if as_json:
        emit_json(result.to_dict(), CLI_IMAGE)
        return
    status(
        f"Image {result.reference} ({result.kind}"
        + (f" {result.layout}" if result.layout else "")
        + f", {result.platform}, files at {result.root}): "
        f"{counted(result.layers_reused, 'layer')} of the model reused "
        f"({human_size(result.bytes_reused)}), "
        + (
            f"{counted(result.layers_converted, 'file' if result.layout == 'files' else 'raw layer')}"
            " copied as tar, "
            if result.layers_converted
            else ""
        )
        + f"{human_size(result.bytes_added)} added"
    )
    click.echo(f"{result.reference}@{result.digest}")


COMMANDS = [image]
