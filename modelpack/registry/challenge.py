"""Parse ``WWW-Authenticate`` headers into challenges (RFC 7235 shape)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN_RE = re.compile(
    r'\s*([A-Za-z][A-Za-z0-9_.-]*)(?:\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*)))?\s*,?'
)


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer", lower case
    params: dict[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """Split a WWW-Authenticate value into challenges: a scheme word, then k=v params."""
    challenges: list[Challenge] = []
    for match in _TOKEN_RE.finditer(header):
        word, quoted, bare = match.groups()
        if quoted is None and bare is None:
            challenges.append(Challenge(word.lower(), {}))
        elif challenges:
            value = quoted.replace('\\"', '"') if quoted is not None else bare
            challenges[-1].params[word.lower()] = value
    return challenges
