"""modelpack preheat: warm Dragonfly's P2P cache with a model."""

from __future__ import annotations

import click

import modelpack
from modelpack import PreheatJob, PreheatScope
from modelpack.schemas import CLI_PREHEAT

from .output import counted, emit_json, json_option, status
from .state import global_options, state


@click.command(
    short_help="Ask Dragonfly's manager to warm every blob of REFERENCE.",
    epilog="""\b
Examples:
  modelpack preheat harbor.example.com/ml/bert:v1 --manager http://dragonfly-manager:8080 --wait
  export MODELPACK_DRAGONFLY_TOKEN=...   # first: a personal access token, scope 'job'
  modelpack preheat harbor.example.com/ml/bert:v1 --scope all_peers --json
""",
)
@click.argument("reference")
@click.option(
    "--manager",
    envvar="MODELPACK_DRAGONFLY_MANAGER",
    metavar="URL",
    help="The manager's REST address (env MODELPACK_DRAGONFLY_MANAGER).",
)
@click.option(
    "--scope",
    type=click.Choice([s.value for s in PreheatScope]),
    default=PreheatScope.SINGLE_SEED_PEER.value,
    show_default=True,
    help="Which peers download the blobs.",
)
@click.option("--wait", is_flag=True, help="Poll the job until it succeeds or fails.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=600,
    show_default=True,
    metavar="SECONDS",
    help="With --wait: give up after this long.",
)
@json_option(CLI_PREHEAT)
@global_options
def preheat(
    reference: str, manager: str | None, scope: str, wait: bool, timeout: float, as_json: bool
) -> None:
    """Ask Dragonfly's manager to download every blob of REFERENCE into its seed peers.

    The token is read from MODELPACK_DRAGONFLY_TOKEN (never a flag: it would show in
    the process list).  The blobs are listed with your registry credentials, which
    the peers receive to fetch them.
    """

    def report(job: PreheatJob) -> None:
        status(f"Preheat job {job.id}: {job.state}")

    job = modelpack.preheat(
        reference,
        manager=manager,
        scope=scope,
        wait=wait,
        timeout=timeout,
        settings=state().settings(),
        on_state=report,
    )
    if as_json:
        emit_json(job.to_dict(), CLI_PREHEAT)
    else:
        status(
            f"Preheat of {reference} ({counted(len(job.urls), 'blob')}): job {job.id} {job.state}"
        )


COMMANDS = [preheat]
