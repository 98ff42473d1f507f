"""modelpack doctor / completion: about the tool and this machine, not about artifacts."""

from __future__ import annotations

import click
from rich.markup import escape

import modelpack
from modelpack import Status
from modelpack.schemas import CLI_DOCTOR

from .output import emit_json, json_option, stdout
from .state import global_options, state

MARKS = {
    Status.OK: "[green]ok[/green]  ",
    Status.WARN: "[yellow]warn[/yellow]",
    Status.FAIL: "[red]FAIL[/red]",
}


@click.command(
    short_help="Check this machine's set-up; say what to fix.",
    epilog="""\b
Examples:
  modelpack doctor
  modelpack doctor harbor.example.com
  modelpack doctor 127.0.0.1:5000 --json
""",
)
@click.argument("host", required=False)
@json_option(CLI_DOCTOR)
@global_options
def doctor(host: str | None, as_json: bool) -> None:
    """Check the local store, node cache, config and, given HOST, the registry's
    reachability, TLS and authentication; say what to fix.  Exits 1 if a check fails."""
    checks = modelpack.doctor(host, settings=state().settings())
    failed = any(c.status is Status.FAIL for c in checks)
    if as_json:
        emit_json({"ok": not failed, "checks": [c.to_dict() for c in checks]}, CLI_DOCTOR)
    else:
        console = stdout()
        for check in checks:
            # details and fixes are text, not rich markup: a fix names [registries."HOST"]
            detail, fix = escape(check.detail), escape(check.fix or "")
            console.print(f"{MARKS[check.status]} [bold]{check.name}[/bold]: {detail}")
            if fix:
                console.print(f"       fix: {fix}")
    if failed:
        raise click.exceptions.Exit(1)


SHELLS = ("bash", "zsh", "fish")


@click.command(
    short_help="Print the shell completion script for SHELL.",
    epilog="""\b
Examples:
  eval "$(modelpack completion bash)"           # in ~/.bashrc
  modelpack completion zsh > "${fpath[1]}/_modelpack"
  modelpack completion fish > ~/.config/fish/completions/modelpack.fish
""",
)
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL (commands, options, file names)."""
    from click.shell_completion import get_completion_class

    complete = get_completion_class(shell)
    assert complete is not None  # click ships all three
    script = complete(ctx.find_root().command, {}, "modelpack", "_MODELPACK_COMPLETE").source()
    click.echo(script)


COMMANDS = [doctor, completion]
