"""modelpack cache ls / prune / rm."""

from __future__ import annotations

import time

import click

import modelpack
from modelpack import human_size
from modelpack.schemas import CLI_CACHE

from .output import json_option, print_models, short_digest, short_reference, status
from .state import global_options, state


@click.group(
    short_help="The node cache of pulled models.",
    epilog="""\b
Examples:
  modelpack pull reg.example.com/ml/llama:v3     # fills the cache, prints the path
  modelpack cache ls
  modelpack cache prune --max-size 200G
  modelpack cache rm reg.example.com/ml/llama:v3
""",
)
@global_options
def cache() -> None:
    """The node cache: one copy of each pulled model, shared by every process on this machine."""


@cache.command(
    short_help="List the models in the node cache.",
    name="ls",
    epilog="""\b
Examples:
  modelpack cache ls
  modelpack cache ls --json
""",
)
@json_option(CLI_CACHE)
@global_options
def cache_ls(as_json: bool) -> None:
    """Models in the node cache: size, last use, where they are."""
    entries = modelpack.cache_list(settings=state().settings())
    print_models(
        entries,
        CLI_CACHE,
        as_json,
        {
            "REFERENCE": lambda e: (
                short_reference(e.reference) + (" (partial)" if e.partial else "")
            ),
            "DIGEST": lambda e: short_digest(e.digest),
            "SIZE": lambda e: human_size(e.size),
            "LAST USED": lambda e: time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used)),
            "PATH": lambda e: str(e.path),
        },
    )


@cache.command(
    short_help="Evict least recently used models to fit SIZE.",
    name="prune",
    epilog="""\b
Examples:
  modelpack cache prune --max-size 200G
  MODELPACK_HOME=/var/lib/modelpack modelpack cache prune --max-size 500GiB
""",
)
@click.option("--max-size", required=True, metavar="SIZE", help="Target size, e.g. 200G or 500GiB.")
@global_options
def cache_prune(max_size: str) -> None:
    """Evict least recently used models until the cache fits SIZE.

    Models being pulled, or held by a running `modelpack.use_model`, are kept.
    """
    result = modelpack.cache_prune(max_size, settings=state().settings())
    for entry in result.removed:
        status(f"Removed {entry.reference} ({human_size(entry.size)})")
    for entry in result.in_use:
        status(f"Kept {entry.reference}: in use")
    status(f"Cache size now {human_size(result.size)}")


@cache.command(
    short_help="Remove REFERENCE's model from the node cache.",
    name="rm",
    epilog="""\b
Examples:
  modelpack cache rm reg.example.com/ml/llama:v3
""",
)
@click.argument("reference")
@global_options
def cache_rm(reference: str) -> None:
    """Remove REFERENCE's model from the node cache."""
    for entry in modelpack.cache_remove(reference, settings=state().settings()):
        status(f"Removed {entry.path} ({human_size(entry.size)})")


COMMANDS = [cache]
