"""Options every command accepts, before or after the command name."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import click
from click.core import ParameterSource

from modelpack import Settings


@dataclass
class CliState:
    plain_http: bool | None = None
    insecure: bool | None = None
    ca_file: str | None = None
    concurrency: int | None = None
    home: str | None = None
    quiet: bool = False
    verbose: bool = False

    def settings(self) -> Settings:
        return Settings().with_overrides(
            plain_http=self.plain_http,
            insecure=self.insecure,
            ca_file=self.ca_file,
            concurrency=self.concurrency,
            home=self.home,
        )


def state(ctx: click.Context | None = None) -> CliState:
    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Keep a global option's value if the user gave it (flag or environment)."""
    if param.name and ctx.get_parameter_source(param.name) is not ParameterSource.DEFAULT:
        setattr(state(ctx), param.name, value)


def log_requests() -> None:
    """-v: each HTTP request on stderr (method, URL without query, status), no headers."""
    logger = logging.getLogger("modelpack")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("debug: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


_GLOBAL_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("--plain-http",),
        {
            "is_flag": True,
            "help": "Talk HTTP, not HTTPS, to the registry [env MODELPACK_PLAIN_HTTP=1].",
        },
    ),
    (("--insecure",), {"is_flag": True, "help": "Do not verify the registry's TLS certificate."}),
    (
        ("--ca-file",),
        {
            "type": click.Path(exists=True, dir_okay=False),
            "help": "PEM file of CA certificates to trust for the registry [env MODELPACK_CA_FILE].",
        },
    ),
    (
        ("--concurrency",),
        {
            "type": click.IntRange(1, 64),
            "help": "Parallel blob transfers [env MODELPACK_CONCURRENCY; default 4-8].",
        },
    ),
    (
        ("--home",),
        {
            "type": click.Path(file_okay=False),
            "help": "Where the local store and models live [env MODELPACK_HOME].",
        },
    ),
    (
        ("-q", "--quiet"),
        {
            "is_flag": True,
            "envvar": "MODELPACK_QUIET",
            "help": "No progress or status lines, only results [env MODELPACK_QUIET=1].",
        },
    ),
    (
        ("-v", "--verbose"),
        {
            "is_flag": True,
            "envvar": "MODELPACK_VERBOSE",
            "help": "Log each registry request; tracebacks on errors [env MODELPACK_VERBOSE=1].",
        },
    ),
]


def global_options(command):  # noqa: ANN001, ANN201 - a click decorator
    """Accept the global options on this command too (``modelpack push REF --plain-http``)."""
    for decls, attrs in reversed(_GLOBAL_OPTIONS):
        command = click.option(
            *decls, expose_value=False, callback=_remember, is_eager=True, **attrs
        )(command)
    return command
