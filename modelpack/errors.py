"""One exception hierarchy for the whole library.

Every error a user can cause derives from :class:`ModelpackError` and carries
the CLI exit code it maps to (see DESIGN.md "Exit codes"), a message that
names what failed and which reference or file, and an optional hint that says
what to do.  The CLI prints ``str(error)`` as one line; nothing else maps
errors to exit codes.
"""

from __future__ import annotations


class ModelpackError(Exception):
    """Base class: anything modelpack raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


# -- exit code 2: the input itself is wrong ---------------------------------


class UsageError(ModelpackError):
    """Bad input: malformed reference, bad option value, unusable source."""

    exit_code = 2


class InvalidReferenceError(UsageError):
    """A string that is not a valid ``host[:port]/repo[:tag][@digest]``."""


class SourceError(UsageError):
    """The model source cannot be packaged as it is (empty, LFS pointers...)."""


class SchemaValidationError(UsageError):
    """A document does not match its JSON Schema; the message names the field."""


class MissingDependencyError(UsageError):
    """A feature needs an optional package that is not installed; the hint names the extra."""


class DestinationConflictError(UsageError):
    """A pull would replace a file of the output directory with other bytes (and no ``force``)."""


# -- exit code 3: something named does not exist ----------------------------


class NotFoundError(ModelpackError):
    exit_code = 3


class ReferenceNotFoundError(NotFoundError):
    """A tag or digest that neither the registry nor the local store knows."""


class BlobNotFoundError(NotFoundError):
    """A manifest names a blob the source does not have."""


class FileNotFoundInSourceError(NotFoundError):
    """A path given by the user does not exist."""


# -- exit code 4: the registry said no to who we are ------------------------


class AuthenticationError(ModelpackError):
    exit_code = 4


class AuthorizationExpiredError(AuthenticationError):
    """A token expired in the middle of a transfer; the transfer may be restarted."""


# -- exit code 5: bytes are not what they claim to be -----------------------


class IntegrityError(ModelpackError):
    """Digest or size mismatch, malformed or hostile artifact content."""

    exit_code = 5


class UnsafePathError(IntegrityError):
    """An archive entry or annotation path that would land outside the target."""


class UnsafePickleError(IntegrityError):
    """A pickle-based file (``.bin``, ``.pt``, ``.ckpt`` ...) that would run code when
    loaded, or that could not be scanned to the end: ``path`` names it in the model,
    ``calls`` what it calls (empty when the scan stopped short)."""

    def __init__(
        self, message: str, *, path: str, calls: list[str], hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.path = path
        self.calls = calls


# -- exit code 6: the network or registry is not there ----------------------


class RegistryUnavailableError(ModelpackError):
    """Connection refused, DNS, TLS or 5xx that outlived the retries."""

    exit_code = 6


class TransferInterruptedError(RegistryUnavailableError):
    """A connection dropped mid-blob; the caller may restart or resume the transfer."""


class SharedStateUnavailableError(RegistryUnavailableError):
    """The service gateway replicas share state through (``serve --redis``) did not answer:
    nothing was moved, the request may be sent again."""


class LeaseLostError(SharedStateUnavailableError):
    """A branch lock that the shared state decides could not be had in time, or ended
    before the commit holding it moved the branch: nothing was moved, commit again."""


# -- exit code 130: the user pressed Ctrl-C -----------------------------------


class InterruptedByUserError(ModelpackError):
    """Ctrl-C (SIGINT) during a transfer: what arrived is kept for the next run."""

    exit_code = 130


# -- exit code 1: everything else we anticipated ----------------------------


class RegistryError(ModelpackError):
    """The registry answered with an error we do not map more precisely."""


class RegistryPolicyError(RegistryError):
    """A rule of the registry refused a write (an immutable tag, a full storage quota): the
    credentials are fine, so not exit 4; the line says which rule and what to do."""


class RangeIgnoredError(RegistryError):
    """A server answered a bounded Range request with the whole blob (200, not 206):
    a ranged download falls back to one stream."""


class StoreError(ModelpackError):
    """The local store is unusable (permissions, disk full, corrupt index)."""


class DragonflyError(ModelpackError):
    """Dragonfly's manager refused a job, or the job failed (the message says which)."""


class DiskFullError(StoreError):
    """Not enough space for what a transfer will write (checked before, or hit mid-way)."""
