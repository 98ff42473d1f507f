"""mkdocs hook (mkdocs.yml `hooks:`): the Python API reference documents every name of
``modelpack.__all__``, so a function added to the public API appears without editing
docs/api-reference.md. The page holds the marker below; this writes the mkdocstrings
directives in its place: functions by topic, then result classes, settings, errors."""

from __future__ import annotations

import inspect

import modelpack
from modelpack.errors import MissingDependencyError, ModelpackError
from modelpack.oci.copy import CopyStats

MARKER = "<!-- api-reference: generated -->"
TOPICS = {
    "Build": ["build", "generate_modelfile"],
    "Move": ["push", "pull", "pull_model", "copy", "use_model"],
    "Look": ["inspect", "verify_dir"],
    "Sign": ["keygen", "sign", "verify"],
    "Registries": ["login", "logout"],
    "Local store": ["list_models", "tag", "remove", "prune"],
    "Node cache": ["cache_list", "cache_prune", "cache_remove"],
}
SETTINGS = ["Settings", "Reference", "parse_reference"]


def _directive(obj: object, level: int, **options: str) -> list[str]:
    lines = [
        f"::: {obj.__module__}.{obj.__qualname__}",
        "    options:",
        f"      heading_level: {level}",
        "      show_root_heading: true",
        "      show_root_full_path: false",
        '      filters: ["!^_"]',
    ]
    lines += [f"      {key}: {value}" for key, value in options.items()]
    return [*lines, ""]


def render() -> str:
    public = {name: getattr(modelpack, name) for name in modelpack.__all__ if name[0] != "_"}
    functions = {n for n, o in public.items() if inspect.isfunction(o)} - set(SETTINGS)
    errors = [o for o in public.values() if inspect.isclass(o) and issubclass(o, ModelpackError)]
    if MissingDependencyError not in errors:
        errors.append(MissingDependencyError)
    results = [
        o for n, o in public.items() if inspect.isclass(o) and o not in errors and n not in SETTINGS
    ]
    out = ["## Functions", ""]
    topics = {title: [n for n in names if n in functions] for title, names in TOPICS.items()}
    others = sorted(functions - {n for names in topics.values() for n in names})
    for title, names in [*topics.items(), ("More", others)]:
        if names:
            out += [f"### {title}", ""]
            for name in names:
                out += _directive(public[name], 4)
    if CopyStats not in results:  # what TransferResult.stats holds
        results.insert(results.index(modelpack.TransferResult) + 1, CopyStats)
    out += ["## Results", ""]
    for cls in results:
        out += _directive(cls, 3, show_if_no_docstring="true")
    out += ["## Settings and references", ""]
    for name in SETTINGS:
        out += _directive(public[name], 3, show_if_no_docstring="true")
    out += [
        "## Errors",
        "",
        "Every error derives from `ModelpackError` and carries `exit_code` (the CLI's exit",
        "code for it), `message` and `hint`; `str(error)` is the one line the CLI prints.",
        "",
    ]
    for cls in sorted(errors, key=lambda c: c.exit_code if c is not ModelpackError else 0):
        out += _directive(cls, 3, show_if_no_docstring="true", members="false")
    return "\n".join(out)


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown
