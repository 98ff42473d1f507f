"""Progress for CLI commands: the library's display, silenced by --quiet."""

from __future__ import annotations

from modelpack import ProgressDisplay, progress_display

from .state import state


def progress_for(verb: str) -> ProgressDisplay:
    return progress_display(verb, quiet=state().quiet)
