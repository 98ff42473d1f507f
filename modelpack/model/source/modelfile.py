"""modctl's Modelfile: parse it, apply it to a directory, and write one modctl accepts.

Syntax (modctl pkg/modelfile/parser): one ``COMMAND ARG`` per line, commands
case-insensitive, ``#`` comments, blank lines; the argument may be quoted
("with spaces") and backslash-escaped; exactly one argument.  NAME, ARCH,
FAMILY, FORMAT, PARAMSIZE, PRECISION, QUANTIZATION may appear once; CONFIG,
MODEL, CODE, DOC, DATASET any number of times, each a path or a glob
relative to the model directory with Go ``filepath.Match`` semantics (``*``
stays within one folder).  A path without wildcards must exist.  Only files
a Modelfile names are packaged.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ...errors import SourceError
from ...oci.spec import LayerKind
from .local import SourceFile

KIND_COMMANDS = {
    "CONFIG": LayerKind.WEIGHT_CONFIG,
    "MODEL": LayerKind.WEIGHT,
    "CODE": LayerKind.CODE,
    "DOC": LayerKind.DOC,
    "DATASET": LayerKind.DATASET,
}
VALUE_COMMANDS = ("NAME", "ARCH", "FAMILY", "FORMAT", "PARAMSIZE", "PRECISION", "QUANTIZATION")
COMMANDS = tuple(KIND_COMMANDS) + VALUE_COMMANDS


@dataclass(frozen=True)
class Pattern:
    kind: LayerKind
    glob: str
    line: int
    command: str


@dataclass
class Modelfile:
    path: str
    values: dict[str, str] = field(default_factory=dict)  # NAME -> ..., ARCH -> ...
    patterns: list[Pattern] = field(default_factory=list)


class ModelfileError(SourceError):
    """A Modelfile that cannot be used; the message names the file and line."""


def _split_args(text: str) -> list[str]:
    """modctl's parseArgs: whitespace separates, quotes group, backslash escapes."""
    args: list[str] = []
    current: list[str] = []
    in_quotes = escape = had_quotes = False
    for char in text:
        if escape:
            current.append(char)
            escape = False
        elif char == "\\":
            escape = True
        elif char == '"':
            in_quotes, had_quotes = not in_quotes, True
        elif char in " \t" and not in_quotes:
            if current or had_quotes:
                args.append("".join(current))
                current, had_quotes = [], False
        else:
            current.append(char)
    if in_quotes:
        raise ValueError("unclosed quotes")
    if current or had_quotes:
        args.append("".join(current))
    return args


def parse_modelfile(text: str, path: str = "Modelfile") -> Modelfile:
    modelfile = Modelfile(path)
    seen_at: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        command = word.upper()
        where = f"{path}:{number}"
        if command not in COMMANDS:
            raise ModelfileError(
                f"{where}: unknown command {word!r}", hint=f"one of {', '.join(COMMANDS)}"
            )
        try:
            args = _split_args(rest.strip())
        except ValueError as exc:
            raise ModelfileError(f"{where}: {exc} in {line!r}") from None
        if len(args) != 1 or not args[0]:
            raise ModelfileError(f"{where}: {command} takes exactly one argument, got {len(args)}")
        if command in VALUE_COMMANDS:
            if command in seen_at:
                raise ModelfileError(
                    f"{where}: duplicate {command} (first on line {seen_at[command]})"
                )
            seen_at[command] = number
            modelfile.values[command] = args[0]
        else:
            modelfile.patterns.append(Pattern(KIND_COMMANDS[command], args[0], number, command))
    return modelfile


def read_modelfile(path: str | Path) -> Modelfile:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelfileError(f"Modelfile {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelfileError(f"cannot read Modelfile {path}: {exc}") from exc
    return parse_modelfile(text, str(path))


def _glob_matches(pattern: str, relpath: str) -> bool:
    """Go filepath.Match on whole paths: ``*`` and ``?`` never cross ``/``."""
    pattern_parts = PurePosixPath(pattern).parts
    path_parts = PurePosixPath(relpath).parts
    return len(pattern_parts) == len(path_parts) and all(
        fnmatch.fnmatchcase(name, part)
        for name, part in zip(path_parts, pattern_parts, strict=True)
    )


def apply_modelfile(
    modelfile: Modelfile, files: list[SourceFile]
) -> tuple[list[SourceFile], dict[str, LayerKind]]:
    """The files a Modelfile selects and the kind it gives each."""
    kinds: dict[str, tuple[LayerKind, Pattern]] = {}
    for pattern in modelfile.patterns:
        glob = pattern.glob.removeprefix("./")
        wildcard = any(c in glob for c in "*?[")
        matched = [
            f
            for f in files
            if (f.relpath == glob if not wildcard else _glob_matches(glob, f.relpath))
        ]
        if not wildcard and not matched:
            raise ModelfileError(
                f"{modelfile.path}:{pattern.line}: {pattern.command} {pattern.glob}: no such file in the model directory"
            )
        for f in matched:
            previous = kinds.get(f.relpath)
            if previous and previous[0] is not pattern.kind:
                raise ModelfileError(
                    f"{modelfile.path}:{pattern.line}: {f.relpath} is already {previous[1].command} "
                    f"(line {previous[1].line})"
                )
            kinds.setdefault(f.relpath, (pattern.kind, pattern))
    selected = [f for f in files if f.relpath in kinds]
    if not selected:
        raise ModelfileError(
            f"{modelfile.path}: no file in the model directory matches its patterns"
        )
    return selected, {path: kind for path, (kind, _) in kinds.items()}


_GENERATED_SECTIONS = (
    ("CONFIG", LayerKind.WEIGHT_CONFIG, "Config files"),
    ("CODE", LayerKind.CODE, "Code files"),
    ("MODEL", LayerKind.WEIGHT, "Model files"),
    ("DOC", LayerKind.DOC, "Documentation files"),
    ("DATASET", LayerKind.DATASET, "Dataset files"),
)


def _quote(value: str) -> str:
    if any(c in value for c in ' \t"\\'):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def render_modelfile(values: dict[str, str], kinds: dict[str, LayerKind]) -> str:
    """A Modelfile listing every file explicitly, as `modctl modelfile generate` writes them."""
    lines = [
        "# Generated by modelpack modelfile generate; modctl and modelpack both build from it."
    ]
    labels = {"NAME": "Model name", "ARCH": "Model architecture", "FAMILY": "Model family",
              "FORMAT": "Model format", "PARAMSIZE": "Number of parameters",
              "PRECISION": "Model precision", "QUANTIZATION": "Model quantization"}  # fmt: skip
    for command in VALUE_COMMANDS:
        if value := values.get(command):
            lines += ["", f"# {labels[command]}", f"{command} {_quote(value)}"]
    for command, kind, label in _GENERATED_SECTIONS:
        paths = sorted(p for p, k in kinds.items() if k is kind)
        if paths:
            lines += ["", f"# {label}"] + [f"{command} {_quote(p)}" for p in paths]
    return "\n".join(lines) + "\n"
