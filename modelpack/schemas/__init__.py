"""JSON Schema validation against the schemas shipped in ``schemas/``.

A failure names the field (``config.capabilities.languages[0]``) so the user
can fix the document, not hunt for it.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from ..errors import SchemaValidationError

MODEL_CONFIG = "model-config.schema.json"
DOCKER_MODEL_CONFIG = "docker-model-config.schema.json"
MANIFEST = "manifest.schema.json"
CLI_BUILD = "cli-build.schema.json"
CLI_TRANSFER = "cli-transfer.schema.json"
CLI_INSPECT = "cli-inspect.schema.json"
CLI_LS = "cli-ls.schema.json"
CLI_CACHE = "cli-cache.schema.json"
CLI_VERIFY = "cli-verify.schema.json"
CLI_SIGNATURE = "cli-signature.schema.json"
CLI_DOCTOR = "cli-doctor.schema.json"
CLI_TAGS = "cli-tags.schema.json"
CLI_PREHEAT = "cli-preheat.schema.json"
CLI_IMAGE = "cli-image.schema.json"
CLI_ERROR = "cli-error.schema.json"
PICKLE_SCAN = "pickle-scan.schema.json"
GATEWAY_AUDIT = "gateway-audit.schema.json"


@cache
def load_schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files(__name__).joinpath(name).read_text("utf-8"))


@cache
def _registry():  # noqa: ANN202 - referencing.Registry, imported when first needed
    from referencing import Registry, Resource

    registry = Registry()
    for entry in resources.files(__name__).iterdir():
        if entry.name.endswith(".schema.json"):
            schema = load_schema(entry.name)
            registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
    return registry


def field_path(error) -> str:  # noqa: ANN001 - jsonschema.ValidationError
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(document)"


def validate(document: Any, schema_name: str, what: str = "document") -> None:
    """Raise :class:`SchemaValidationError` naming the first offending field."""
    import jsonschema  # ~100 ms: only when a document is actually checked

    schema = load_schema(schema_name)
    validator = jsonschema.Draft202012Validator(schema, registry=_registry())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        raise SchemaValidationError(
            f"{what} is invalid at {field_path(first)}: {first.message}"
            + (f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else "")
        )
