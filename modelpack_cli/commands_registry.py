"""modelpack copy / login / logout."""

from __future__ import annotations

import sys

import click

import modelpack
from modelpack import human_size
from modelpack.schemas import CLI_TRANSFER

from .output import counted, json_option, media_types_option, report_transfer, status
from .progress import progress_for
from .state import global_options, state


@click.command(
    short_help="Copy an artifact and its referrers.",
    epilog="""\b
Examples:
  modelpack copy reg-a.example.com/ml/bert:v1 reg-b.example.com/ml/bert:v1
  modelpack copy 127.0.0.1:5000/team/bert:v1 127.0.0.1:5000/prod/bert:v1   # mounts, no bytes sent
  modelpack copy reg.example.com/ml/bert:v1 oci:./bert-layout:v1           # to an OCI layout
  modelpack copy oci:./bert-layout:v1 airgap.example.com/ml/bert:v1
  modelpack copy reg.example.com/ml/bert:v1 store:reg.example.com/ml/bert:v1
  modelpack copy reg.example.com/ml/bert:v1 harbor.example.com/ml/bert:v1 --media-types cnai
""",
)
@click.argument("source")
@click.argument("destination")
@media_types_option("Convert to these names on the way (a new digest; signatures stay behind):")
@json_option(CLI_TRANSFER)
@global_options
def copy(source: str, destination: str, media_types: str | None, as_json: bool) -> None:
    """Copy an artifact, its signatures and other referrers from SOURCE to DESTINATION.

    Each side is a registry reference, oci:DIR[:TAG] (an OCI image layout)
    or store:REF (the local store).  Blobs stream through without being held
    in memory; within one registry they are mounted instead of sent.
    """
    with progress_for("copy") as progress:
        result = modelpack.copy(
            source,
            destination,
            media_types=media_types,
            settings=state().settings(),
            progress=progress,
        )
    stats = result.stats
    report_transfer(
        result,
        f"Copied {source} to {result.reference} {result.digest}: {counted(stats.transferred, 'blob')} sent "
        f"({human_size(stats.bytes_transferred)}), {stats.mounted} mounted, {stats.skipped} already "
        f"there, {counted(stats.referrers, 'referrer')}",
        as_json,
    )


@click.command(
    short_help="Check and store credentials for HOST.",
    epilog="""\b
Examples:
  echo "$TOKEN" | modelpack login harbor.example.com -u 'robot$ml+ci' --password-stdin
  modelpack login 127.0.0.1:5000 -u alice -p secret
""",
)
@click.argument("host")
@click.option("-u", "--username", required=True, help="User name (or robot account).")
@click.option(
    "-p", "--password", help="Password; prefer --password-stdin (argv is visible to others)."
)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@global_options
def login(host: str, username: str, password: str | None, password_stdin: bool) -> None:
    """Check credentials against HOST and store them in the docker config
    (or its credential helper), as `docker login` does."""
    if password_stdin == (password is not None):
        raise click.UsageError("give exactly one of --password-stdin and -p/--password")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        click.echo(
            "Warning: a password on the command line is visible to other users and kept "
            "in shell history; use --password-stdin.",
            err=True,
        )
    if not password:
        raise click.UsageError("the password is empty")
    where = modelpack.login(host, username, password, settings=state().settings())
    status(f"Login succeeded for {username} at {host} (saved in {where})")


@click.command(
    epilog="""\b
Examples:
  modelpack logout harbor.example.com
"""
)
@click.argument("host")
@global_options
def logout(host: str) -> None:
    """Forget the credentials stored for HOST."""
    if modelpack.logout(host):
        status(f"Removed login credentials for {host}")
    else:
        status(f"Not logged in to {host}")


COMMANDS = [copy, login, logout]
