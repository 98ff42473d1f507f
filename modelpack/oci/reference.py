"""Registry references: ``host[:port]/repo[:tag][@digest]``, parsed strictly.

The grammar is the one of distribution/reference (what docker, skopeo and
oras-go accept).  oras-py's ``Container`` parser accepts almost any string,
so a typo would only surface as a confusing registry error; here it is a
usage error (exit 2) that says which part is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..errors import InvalidReferenceError
from .digests import is_digest

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
_NAME_TOTAL_LENGTH_MAX = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[_.]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*\Z")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})"
_DOMAIN_RE = re.compile(rf"^{_HOST}(?::[0-9]+)?\Z")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")


@dataclass(frozen=True)
class Reference:
    """A parsed reference; ``tag`` and ``digest`` may both be set."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        return parse_reference(text)

    @property
    def name(self) -> str:
        """``registry/repository``, the part a tag is relative to."""
        return f"{self.registry}/{self.repository}"

    @property
    def target(self) -> str:
        """What to ask the registry for: the digest when known, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> Reference:
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        return replace(self, digest=digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def is_tag(text: str) -> bool:
    """The OCI tag grammar: ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`` (ASCII only)."""
    return bool(_TAG_RE.match(text))


def _invalid(text: str, why: str) -> InvalidReferenceError:
    return InvalidReferenceError(
        f"invalid reference {text!r}: {why}",
        hint="expected HOST[:PORT]/REPOSITORY[:TAG][@DIGEST], e.g. 127.0.0.1:5000/team/bert:v1",
    )


def parse_reference(text: str) -> Reference:
    """Parse and validate; raises ``InvalidReferenceError`` (exit 2)."""
    if not text or text != text.strip():
        raise _invalid(text, "empty or surrounded by whitespace")
    remainder, digest = text, None
    if "@" in remainder:
        remainder, digest = remainder.split("@", 1)
        if not is_digest(digest):
            raise _invalid(text, f"digest {digest!r} is not ALGORITHM:HEX")
    tag = None
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise _invalid(text, f"tag {tag!r} must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
    if not remainder:
        raise _invalid(text, "missing repository name")

    first, sep, rest = remainder.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        registry, path = first, rest
        if not _DOMAIN_RE.match(registry):
            raise _invalid(text, f"registry host {registry!r} is not HOST[:PORT]")
    else:
        registry, path = DEFAULT_REGISTRY, remainder
    if registry == "index.docker.io":
        registry = DEFAULT_REGISTRY
    if not _PATH_RE.match(path):
        raise _invalid(
            text,
            f"repository {path!r} must be lowercase letters, digits and separators (. _ - /)",
        )
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    if len(f"{registry}/{path}") > _NAME_TOTAL_LENGTH_MAX:
        raise _invalid(text, f"name longer than {_NAME_TOTAL_LENGTH_MAX} characters")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry=registry, repository=path, tag=tag, digest=digest)
