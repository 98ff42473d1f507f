"""Helpers for tests, demos and benchmarks: a real local registry, a real local Harbor and a
tiny real model.

``python -m modelpack.testing.registry --port 5000`` runs a registry until Ctrl-C;
``python -m modelpack.testing.harbor`` a Harbor (built by scripts/peers/build-harbor.sh).
"""

from __future__ import annotations

from typing import Any

__all__ = ["HarborServer", "RegistryServer", "make_tiny_model"]


def __getattr__(name: str) -> Any:
    # Imported on first use so `python -m modelpack.testing.registry` runs cleanly.
    if name == "HarborServer":
        from .harbor import HarborServer

        return HarborServer
    if name == "RegistryServer":
        from .registry import RegistryServer

        return RegistryServer
    if name == "make_tiny_model":
        from .tiny_model import make_tiny_model

        return make_tiny_model
    raise AttributeError(name)
