"""Hostile pickles for the scanning tests, made with ``pickle.dumps`` and never loaded."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # what torch.save's legacy stream starts with


class SystemCall:
    """Unpickling this runs ``os.system(command)`` (``posix.system`` on Linux)."""

    def __init__(self, command: str = "touch /tmp/modelpack-pwned") -> None:
        self.command = command

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (self.command,))


def system_call(protocol: int = 2, padding: int = 0) -> bytes:
    """A pickle that calls os.system when loaded; ``padding`` bytes of a string beside it
    make it as large as a test needs (an LFS upload rather than an inline one)."""
    return pickle.dumps({"weights": "x" * padding, "run": SystemCall()}, protocol=protocol)


def torch_zip(data_pkl: bytes, archive: str = "archive", storages: int = 2) -> bytes:
    """A zip laid out as torch.save writes one: ARCHIVE/data.pkl, data/N storages,
    version, byteorder (stored, not compressed)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{archive}/data.pkl", data_pkl)
        z.writestr(f"{archive}/byteorder", "little")
        for key in range(storages):
            z.writestr(f"{archive}/data/{key}", bytes(64))
        z.writestr(f"{archive}/version", "3\n")
    return buffer.getvalue()


def legacy_stream(main: bytes) -> bytes:
    """torch.save's legacy layout: magic number, protocol version, sys info, the main
    pickle, the storage keys; then raw storage bytes."""
    head = b"".join(
        pickle.dumps(value, protocol=2)
        for value in (TORCH_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True})
    )
    return head + main + pickle.dumps([], protocol=2) + bytes(256)
