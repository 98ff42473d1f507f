"""Progress for CLI commands: the library's display, silenced by --quiet."""

from __future__ import annotations

from modelpack.display import PlainProgress, QuietProgress, RichProgress, progress_display

from .state import state


def progress_for(verb: str) -> RichProgress | PlainProgress | QuietProgress:
    return progress_display(verb, quiet=state().quiet)
