"""Optional dependencies, imported only by the features that need them.

The base install (``pip install modelpack-oci``) builds from local
directories, pushes, pulls, inspects, logs in, signs and verifies.  The rest
comes with extras: ``[hf]`` (hf:// sources), ``[signing]`` (OpenSSF model
signatures), ``[serve]`` (the gateway's gunicorn).  A missing one is a ``MissingDependencyError``
that says which extra to install, never a bare ImportError.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError


def require(
    module: str, *, purpose: str, extra: str | None = None, package: str | None = None
) -> ModuleType:
    """Import ``module`` or say how to install it: ``pip install 'modelpack-oci[EXTRA]'``
    (or ``pip install PACKAGE`` for what no extra of ours brings)."""
    package = package or module
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = (
            f"pip install 'modelpack-oci[{extra}]', or from a checkout: pip install '.[{extra}]'"
            if extra
            else f"pip install {package}"
        )
        raise MissingDependencyError(
            f"{purpose} need the {package} package, which is not installed", hint=hint
        ) from exc
