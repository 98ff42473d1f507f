"""Which token an upstream import sends: one per pattern of repo ids.

Gated repos of two orgs on one upstream hub often need two tokens (each org grants access to
its own service account).  ``--upstream-token-for PATTERN=TOKEN`` and ``--upstream-token-file
PATTERN=FILE`` name them; ``--upstream-token`` is the token for every allowed repo no pattern
matches.  Patterns are ``fnmatch`` on the lower-case repo id, as ``--upstream-allow``.

Precedence, when patterns overlap: **the most specific pattern wins**, the one with the most
literal characters (a repo id without wildcards beats every pattern that merely matches it;
``acme/secret-*`` beats ``acme/*``, which beats ``*``); between two equally specific patterns,
the one given first (``--upstream-token-for`` values in order, then ``--upstream-token-file``
values in order).  ``--upstream-token`` comes last of all.

A token is one header value: visible ASCII, no space, at most ``MAX_TOKEN`` characters, checked
at start (a newline in it would make requests raise an error that quotes the header, token and
all).  No message here or anywhere quotes a token: errors name the pattern and the file.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from ...errors import UsageError

MAX_TOKEN = 4096  # characters: the public hub's tokens have 37, a JWT a few hundred
MAX_RULES = 1024  # patterns with a token of their own (each import tries every one)
_TOKEN_RE = re.compile(rf"[\x21-\x7e]{{1,{MAX_TOKEN}}}\Z")
_PATTERN_RE = re.compile(r"[\x21-\x7e]{1,256}\Z")  # no space: the env form is space separated


@dataclass(frozen=True)
class TokenRule:
    """``token`` for the repo ids ``pattern`` matches; ``source`` says where it was given
    (for messages: an option and pattern, a file's path; never the token)."""

    pattern: str
    token: str = field(repr=False)
    source: str

    @property
    def specificity(self) -> int:
        return literal_characters(self.pattern)

    def matches(self, repo_id: str) -> bool:
        return fnmatchcase(repo_id.lower(), self.pattern)


def literal_characters(pattern: str) -> int:
    """How many characters of ``pattern`` match only themselves: ``*``, ``?`` and a
    ``[...]`` set (as fnmatch reads one) count nothing."""
    count, i, n = 0, 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char in "*?":
            continue
        if char == "[":
            j = i + (i < n and pattern[i] == "!")
            j += j < n and pattern[j] == "]"
            end = pattern.find("]", j)
            if end >= 0:  # a set: one character of several
                i = end + 1
                continue
        count += 1
    return count


def check_token(token: str, what: str) -> str:
    """``token`` if it can be sent as a header value, else a UsageError naming ``what``."""
    if not _TOKEN_RE.match(token):
        raise UsageError(
            f"{what}: not a token: it must be one line of at most {MAX_TOKEN} visible ASCII "
            "characters, no spaces (the token itself is not shown)"
        )
    return token


def _split(value: str, option: str, right: str) -> tuple[str, str]:
    pattern, sep, rest = value.partition("=")
    pattern = pattern.strip().lower()
    if not sep or not rest.strip():
        shown = f"{pattern}=..." if sep else "the value"  # never echo what may be a token
        raise UsageError(f"{option} {shown}: expected PATTERN={right} (e.g. 'acme/*={right}')")
    if not _PATTERN_RE.match(pattern):  # not echoed either: it may be a token given first
        raise UsageError(
            f"{option}: the part before '=' is not a repo id pattern such as 'acme/*' "
            "(visible characters, no spaces, at most 256)"
        )
    return pattern, rest


def read_token_file(path: str, what: str) -> str:
    """The token in ``path`` (surrounding whitespace, a trailing newline, dropped): a regular
    file of at most MAX_TOKEN characters, read once, at start."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not hang
    except OSError as exc:
        raise UsageError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"{what}: {path} is not a regular file")
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_TOKEN + 64)
    if len(data) >= MAX_TOKEN + 64:
        raise UsageError(f"{what}: {path} is larger than a token (at most {MAX_TOKEN} characters)")
    text = data.decode("ascii", "replace").strip()
    if not text:
        raise UsageError(f"{what}: {path} is empty")
    return check_token(text, f"{what}: {path}")


def parse_token_rules(inline: Iterable[str], files: Iterable[str]) -> tuple[TokenRule, ...]:
    """The rules of ``--upstream-token-for PATTERN=TOKEN`` and ``--upstream-token-file
    PATTERN=FILE`` values, in the order they were given (inline ones first)."""
    rules: list[TokenRule] = []
    for value in inline:
        pattern, token = _split(value, "--upstream-token-for", "TOKEN")
        what = f"--upstream-token-for {pattern}"
        rules.append(TokenRule(pattern, check_token(token.strip(), what), what))
    for value in files:
        pattern, path = _split(value, "--upstream-token-file", "FILE")
        what = f"--upstream-token-file {pattern}"
        rules.append(TokenRule(pattern, read_token_file(path.strip(), what), f"{what}={path}"))
    if len(rules) > MAX_RULES:
        raise UsageError(f"{len(rules)} upstream token patterns: at most {MAX_RULES}")
    seen: dict[str, TokenRule] = {}
    for rule in rules:
        if rule.pattern in seen:
            raise UsageError(
                f"{rule.source}: the pattern {rule.pattern!r} has a token already "
                f"({seen[rule.pattern].source}); give each pattern one token"
            )
        seen[rule.pattern] = rule
    return tuple(rules)


def choose(rules: tuple[TokenRule, ...], repo_id: str) -> TokenRule | None:
    """The rule whose token ``repo_id`` gets: the most specific match, the first given of
    equally specific ones; None when no pattern matches."""
    best: TokenRule | None = None
    for rule in rules:
        if rule.matches(repo_id) and (best is None or rule.specificity > best.specificity):
            best = rule
    return best
