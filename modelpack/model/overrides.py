"""``--set config.quantization=awq``: change one field of the derived model config.

Paths are the JSON field names of the config document, under ``descriptor``
or ``config`` (``config.capabilities.languages=["en","fr"]``).  A value that
parses as a JSON list, object or boolean is taken as that; anything else is
a string; an empty value removes the field.  The result is validated against
the spec schema like every config we write.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..errors import UsageError
from ..oci.spec import ModelConfig

MODELFILE_FIELDS = {
    "NAME": "descriptor.name",
    "ARCH": "config.architecture",
    "FAMILY": "descriptor.family",
    "FORMAT": "config.format",
    "PARAMSIZE": "config.paramSize",
    "PRECISION": "config.precision",
    "QUANTIZATION": "config.quantization",
}


def _value(text: str) -> Any:
    if text[:1] in "[{" or text in ("true", "false"):
        try:
            return json.loads(text)
        except ValueError:
            raise UsageError(f"--set value {text!r} looks like JSON but does not parse") from None
    return text


def parse_assignment(text: str) -> tuple[list[str], str]:
    path, sep, value = text.partition("=")
    keys = [k for k in path.strip().split(".") if k]
    if not sep or len(keys) < 2 or keys[0] not in ("descriptor", "config"):
        raise UsageError(
            f"--set {text!r}: expected descriptor.FIELD=VALUE or config.FIELD=VALUE",
            hint="e.g. --set config.quantization=awq --set descriptor.licenses='[\"MIT\"]'",
        )
    return keys, value


def apply_assignments(
    config: ModelConfig, assignments: Iterable[tuple[list[str], str]]
) -> ModelConfig:
    document = config.to_dict()
    for keys, raw in assignments:
        node: dict[str, Any] = document
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise UsageError(f"--set {'.'.join(keys)}: {key} is not an object")
        if raw == "":
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = _value(raw)
    updated = ModelConfig.from_dict(document)
    config.descriptor, config.config = updated.descriptor, updated.config
    return config


def modelfile_assignments(values: dict[str, str]) -> list[tuple[list[str], str]]:
    """What a Modelfile's NAME/ARCH/... lines set, as assignments."""
    return [(MODELFILE_FIELDS[command].split("."), value) for command, value in values.items()]
