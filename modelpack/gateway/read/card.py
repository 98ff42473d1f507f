"""A model's card: its README, read through the node cache, split into front matter and text.

The hub's ``cardData`` (``model_info(expand=["cardData"])``) and the web page's badges
are the README's YAML front matter; the page renders the markdown after it.  The README
is read like any file a client downloads (the node cache, else pulled through and
verified), so a card costs one small blob from the registry once per manifest.
Cards are kept per manifest digest: the caller has already checked the viewer's access.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from ...errors import ModelpackError
from ...model.metadata import (
    MAX_FRONT_MATTER_VALUES,
    expands_past,
    front_matter,
    front_matter_problem,
    split_front_matter,
)
from ..core.hub import HubError, RepoFile
from .models import Model
from .pullthrough import PullThrough

MAX_CARD_BYTES = 1 << 20  # a bigger README is not rendered (the file is still served)
# validate-yaml (no credentials needed) parses front matter up to this size; libyaml
# takes at most about 0.3 s of CPU for it (docs/security.md).  A bigger one is not
# checked there (a warning says so); a build still reads it.
MAX_CHECKED_FRONT_MATTER = 64 * 1024
MAX_CARDS = 1024
README_NAMES = ("README.md", "readme.md", "README", "Readme.md")


@dataclass(frozen=True)
class Card:
    data: dict[str, Any] = field(default_factory=dict)  # the front matter (cardData)
    text: str = ""  # the markdown after it
    warnings: tuple[str, ...] = ()  # why the front matter was ignored, or the text not read
    complete: bool = True  # False: reading failed this time (not kept, tried again)


def check_front_matter(text: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) for huggingface_hub's ``validate-yaml``: an error when a build
    would ignore the README's front matter, a warning when it is too big to check here."""
    block, _ = split_front_matter(text)
    if block is not None and len(block) > MAX_CHECKED_FRONT_MATTER:
        return [], [f"README.md: front matter larger than {MAX_CHECKED_FRONT_MATTER} "
                    "characters is not checked by this gateway"]  # fmt: skip
    problem = front_matter_problem(text)
    return ([problem] if problem else []), []


def readme_file(files: dict[str, RepoFile]) -> RepoFile | None:
    return next((files[name] for name in README_NAMES if name in files), None)


class Cards:
    """README -> Card, once per manifest digest."""

    def __init__(self, pulls: PullThrough) -> None:
        self.pulls = pulls
        self._cards: OrderedDict[str, Card] = OrderedDict()
        self._lock = threading.Lock()

    def card(self, model: Model, files: dict[str, RepoFile]) -> Card | None:
        """The model's card, None when it has no README."""
        f = readme_file(files)
        if f is None:
            return None
        with self._lock:
            known = self._cards.get(model.root.digest)
        if known is not None:
            return known
        card = self._read(model, f)
        if not card.complete:
            return card
        with self._lock:
            self._cards[model.root.digest] = card
            while len(self._cards) > MAX_CARDS:
                self._cards.popitem(last=False)
        return card

    def _read(self, model: Model, f: RepoFile) -> Card:
        if f.size is not None and f.size > MAX_CARD_BYTES:
            return Card(warnings=(f"{f.path} is larger than {MAX_CARD_BYTES} bytes; not shown",))
        try:
            path = self.pulls.cached_path(model, f)
            if path is None and f.layer is not None:
                never = lambda: False  # noqa: E731 - a page waits like a download
                if f.raw:
                    path = self.pulls.verified_blob(model, f.layer, never)
                else:
                    path = self.pulls.unpack_one(model, f, never)
            if path is None:
                return Card(warnings=(f"{f.path} is not in the node cache",), complete=False)
            text = path.read_bytes()[:MAX_CARD_BYTES].decode("utf-8-sig", "replace")
        except (ModelpackError, HubError, OSError) as exc:
            reason = f"{f.path} could not be read now ({type(exc).__name__})"
            return Card(warnings=(reason,), complete=False)
        warnings: list[str] = []
        try:
            data = as_json(front_matter(text, f.path, warnings))
        except (RecursionError, _TooLarge):  # nested too deep, or aliases that expand
            data = {}
            warnings.append(f"{f.path}: front matter ignored, it is too large or too deep")
        _, body = split_front_matter(text)
        return Card(data, body, tuple(warnings))


class _TooLarge(Exception):
    pass


def as_json(data: dict[str, Any], budget: int = MAX_FRONT_MATTER_VALUES) -> dict[str, Any]:
    """Front matter as JSON can carry it (what the hub answers as ``cardData``): dates
    as ISO text, keys as text, NaN as null; binary and other YAML-only values dropped.
    YAML aliases can make a small card a huge tree: past ``budget`` values it is refused."""
    if expands_past(data, budget):
        raise _TooLarge

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        if isinstance(value, bool | int | str) or value is None:
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, date | datetime):
            return value.isoformat()
        return None  # bytes (!!binary), sets (!!set): nothing JSON has

    return convert(data)
