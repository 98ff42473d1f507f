"""Key passwords: MODELPACK_KEY_PASSWORD, else a prompt on a terminal."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from modelpack import key_is_encrypted


def key_password(*, confirm: bool = False) -> str | None:
    """MODELPACK_KEY_PASSWORD, else a prompt on a terminal, else None."""
    if (value := os.environ.get("MODELPACK_KEY_PASSWORD")) is not None:
        return value
    if sys.stdin.isatty():
        return click.prompt("Key password", hide_input=True, confirmation_prompt=confirm)
    return None


def password_for(key: str) -> str | None:
    """Ask only when the key is encrypted (its PEM says so)."""
    try:
        encrypted = key_is_encrypted(Path(key).read_bytes())
    except OSError:
        return None  # the library reports the missing file
    return key_password() if encrypted else None
