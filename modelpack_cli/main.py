"""Entry point: the click group, and the one place errors become exit codes."""

from __future__ import annotations

import os
import sys
import traceback

import click

from modelpack import ModelpackError, __version__
from modelpack.schemas import CLI_ERROR

from . import (
    commands_build,
    commands_cache,
    commands_dragonfly,
    commands_image,
    commands_registry,
    commands_serve,
    commands_setup,
    commands_signing,
    commands_store,
    commands_transfer,
)
from .output import emit_json
from .state import global_options, log_requests

EPILOG = """\b
Examples:
  modelpack build ./my-model -t 127.0.0.1:5000/team/bert:v1
  modelpack push 127.0.0.1:5000/team/bert:v1
  modelpack pull 127.0.0.1:5000/team/bert:v1 -o ./bert

Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 auth refused,
5 integrity/signature failure, 6 registry unreachable, 130 interrupted.
"""


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="modelpack")
@global_options
def cli() -> None:
    """Build, push, pull and inspect AI models as CNCF ModelPack OCI artifacts."""


for module in (
    commands_build,
    commands_transfer,
    commands_registry,
    commands_signing,
    commands_store,
    commands_cache,
    commands_dragonfly,
    commands_image,
    commands_serve,
    commands_setup,
):
    for command in module.COMMANDS:
        cli.add_command(command)


def _verbose(args: list[str]) -> bool:
    return any(a in ("-v", "--verbose") for a in args) or os.environ.get(
        "MODELPACK_VERBOSE", ""
    ) not in ("", "0")


def _json_error(args: list[str], kind: str, message: str, hint: str | None, code: int) -> None:
    """Under --json, a failure is a JSON document on stdout too (schema cli-error), so a
    pipeline that parses stdout reads why instead of failing to parse nothing."""
    if "--json" not in args:
        return
    document = {"error": {"kind": kind, "message": message, "exitCode": code}}
    if hint:
        document["error"]["hint"] = hint
    emit_json(document, CLI_ERROR)


def main(args: list[str] | None = None) -> None:
    """Run the CLI; exit with the documented code for whatever happened."""
    args = list(sys.argv[1:] if args is None else args)
    if _verbose(args):
        log_requests()
    try:
        # Without standalone mode click returns (not raises) a command's Exit code.
        code = cli.main(args=args, prog_name="modelpack", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except ModelpackError as exc:
        if _verbose(args):
            traceback.print_exc()
        click.echo(f"Error: {exc}", err=True)
        _json_error(args, type(exc).__name__, exc.message, exc.hint, exc.exit_code)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        _json_error(args, "UsageError", exc.format_message(), None, exc.exit_code)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as exc:  # a bug: say so in one line, traceback on request
        if _verbose(args):
            traceback.print_exc()
        click.echo(
            f"Error: unexpected {type(exc).__name__}: {exc} (run with -v for the traceback)",
            err=True,
        )
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
