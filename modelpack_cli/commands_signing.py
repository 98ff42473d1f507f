"""modelpack keygen / sign / verify."""

from __future__ import annotations

import click

import modelpack
from modelpack.schemas import CLI_SIGNATURE, CLI_VERIFY

from .output import counted, emit_json, json_option, status
from .signing_prompt import key_password, password_for
from .state import global_options, state


@click.command(
    short_help="Make a signing key pair.",
    epilog="""\b
Examples:
  MODELPACK_KEY_PASSWORD=... modelpack keygen --out ci-signing
  modelpack keygen --out dev --unencrypted
""",
)
@click.option(
    "--out",
    "prefix",
    default="modelpack",
    show_default=True,
    help="Write PREFIX.key and PREFIX.pub.",
)
@click.option(
    "--algorithm",
    type=click.Choice(["ecdsa-p256", "ed25519"]),
    default="ecdsa-p256",
    show_default=True,
)
@click.option(
    "--unencrypted",
    is_flag=True,
    help="Write the private key without a password (explicitly unsafe).",
)
@click.option("--force", is_flag=True, help="Replace existing key files.")
@global_options
def keygen(prefix: str, algorithm: str, unencrypted: bool, force: bool) -> None:
    """Make a signing key pair: PREFIX.key (PEM, password-encrypted) and PREFIX.pub."""
    password = None
    if not unencrypted:
        password = key_password(confirm=True)
        if not password:
            raise click.UsageError(
                "no password for the private key: set MODELPACK_KEY_PASSWORD, run on a terminal, or pass --unencrypted"
            )
    pair = modelpack.keygen(prefix, password=password, algorithm=algorithm, overwrite=force)
    status(
        f"Wrote {pair.private_path} (private) and {pair.public_path} (public), key id {pair.key_id}"
    )
    click.echo(str(pair.public_path))


@click.command(
    short_help="Sign REFERENCE the way cosign does.",
    epilog="""\b
Examples:
  modelpack sign reg.example.com/ml/bert:v1 --key ci-signing.key
  modelpack sign reg.example.com/ml/bert@sha256:... --key ci-signing.key --model-signing
""",
)
@click.argument("reference")
@click.option(
    "--key",
    "key",
    required=True,
    type=click.Path(dir_okay=False),
    help="Private key (PEM); password from MODELPACK_KEY_PASSWORD or a prompt.",
)
@click.option(
    "--model-signing",
    is_flag=True,
    help="Also attach an OpenSSF model signature of the files (needs the [signing] extra).",
)
@json_option(CLI_SIGNATURE)
@global_options
def sign(reference: str, key: str, model_signing: bool, as_json: bool) -> None:
    """Sign REFERENCE in its registry the way cosign does (sha256-HEX.sig tag and OCI referrer)."""
    result = modelpack.sign(
        reference,
        key,
        password=password_for(key),
        model_signing=model_signing,
        settings=state().settings(),
    )
    status(f"Signed {result.reference} {result.digest} with key {result.key_id}")
    if as_json:
        emit_json(
            {**result.to_dict(), "verified": True, "signatures": [], "otherSignatures": 0},
            CLI_SIGNATURE,
        )
    else:
        click.echo(f"{result.reference}@{result.digest}")


@click.command(
    short_help="Check REFERENCE's signature or unpacked copy.",
    epilog="""\b
Examples:
  modelpack verify reg.example.com/ml/bert:v1 --key ci-signing.pub
  modelpack verify 127.0.0.1:5000/team/bert:v1 --dir ./bert
""",
)
@click.argument("reference")
@click.option(
    "--key",
    "key",
    type=click.Path(dir_okay=False),
    help="Public key: require a valid signature by it over the current manifest.",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="An unpacked model to re-hash against the manifest.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document (modelpack/schemas/cli-signature.schema.json or cli-verify.schema.json).",
)
@global_options
def verify(reference: str, key: str | None, directory: str | None, as_json: bool) -> None:
    """Check REFERENCE's signature (--key) and/or an unpacked copy of it (--dir); exit 5 on any mismatch."""
    if not key and not directory:
        raise click.UsageError(
            "give --key PUB (check the signature) and/or --dir DIR (check the files)"
        )
    settings = state().settings()
    if key:
        check = modelpack.verify(reference, key, settings=settings)
        status(
            f"Verified {check.reference}@{check.digest}: {len(check.valid)} valid signature(s) by key {check.key_id}"
        )
        if as_json and not directory:
            emit_json(check.to_dict(), CLI_SIGNATURE)
    if directory:
        report = modelpack.verify_dir(reference, directory, settings=settings)
        status(
            f"Verified {counted(report.checked, 'file')} in {directory} against {report.reference} {report.digest}"
        )
        if report.extra:
            status(f"Not part of the model: {', '.join(report.extra[:10])}")
        if as_json:
            emit_json(report.to_dict(), CLI_VERIFY)


COMMANDS = [keygen, sign, verify]
