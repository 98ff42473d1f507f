"""Helpers for tests, demos and benchmarks: a real local registry and a tiny real model."""

from .registry import RegistryServer
from .tiny_model import make_tiny_model

__all__ = ["RegistryServer", "make_tiny_model"]
