"""The distribution API client: transport, auth, credentials, and a repository as a Target.

``client`` opens a repository (with mirrors) for a reference; ``repository`` is the
registry as an :class:`~modelpack.oci.target.Target`; the other modules are its parts.
"""

from .client import connect, open_for_pull, open_repository
from .repository import RegistryRepository

__all__ = ["RegistryRepository", "connect", "open_for_pull", "open_repository"]
