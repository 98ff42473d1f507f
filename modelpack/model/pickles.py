"""Pickle-based files (``.bin``, ``.pt``, ``.pth``, ``.ckpt``, ``.pkl`` ...) read for what a
load would import, before they go into an artifact.

A pickle can name any importable callable (``posix.system``, ``builtins.exec``) and have
the unpickler call it: loading such a file runs code.  picklescan disassembles the
pickle with ``pickletools`` (nothing is imported or executed) and classes every global it
names: innocuous (its short list of tensor and container types), dangerous (its blocklist,
or a name it could not resolve) or suspicious (anything else).  A file passes when every
global is innocuous, picklescan's or one of the few more that ``torch.load(weights_only=
True)`` itself accepts (``ALLOWED``): the same line torch >= 2.6 draws by default, so a
plain ``torch.save`` state dict passes and anything that needs ``weights_only=False`` does
not.  Why picklescan (and not fickling or modelscan): docs/architecture.md.

Layouts: a zip as ``torch.save`` writes it (``ARCHIVE/data.pkl`` and the storages in
``ARCHIVE/data/N``, which are never unpickled and so never read), the legacy ``torch.save``
stream (a magic-number pickle, then four more, then raw storages: picklescan reads the five
pickles only) and plain pickles (every pickle in the file, one after another).

Bounds (``Limits``): the scan of one file reads at most ``max_bytes`` of pickle data (zip
members counted decompressed) in at most ``max_reads`` reads (pickletools reads each opcode
at least once, so this bounds the opcodes picklescan keeps in memory), within
``max_seconds``; a zip's central directory is measured before it is parsed, and at most
``max_zip_members_read`` of its members (tensor storages aside) are opened.  A file that
breaks a bound, or that the scanner cannot read to the end, is "error": refused like an
unsafe one, since what it would import is unknown.
"""

from __future__ import annotations

import io
import json
import logging
import struct
import time
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import UnsafePickleError

SCANNER = "picklescan"
# Suffixes of the files read as pickles (lower case); safetensors, GGUF, ONNX are not.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib")
TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")  # torch.save's legacy stream is tried first
ANNOTATION_IMPORTS_MAX = 32  # imports listed in an annotation (the count says if more)
NAME_MAX = 200  # characters of a module or name kept (a pickle chooses them)

# Globals ``torch.load(weights_only=True)`` accepts by default beyond picklescan's own
# innocuous list (torch/_weights_only_unpickler.py, _get_allowed_globals): tensor rebuild
# functions, parameters, storages, dtypes, sizes, devices, and the few containers and
# builtins torch.save writes.  ``__builtin__`` (protocol 2's name) is read as ``builtins``.
_STORAGES = (
    "Byte", "Char", "Short", "Int", "Long", "Half", "Float", "Double", "BFloat16", "Bool",
    "ComplexFloat", "ComplexDouble", "QUInt8", "QInt8", "QInt32", "QUInt4x2", "QUInt2x4",
)  # fmt: skip
_DTYPES = (
    "float16", "float32", "float64", "bfloat16", "half", "float", "double", "complex32",
    "complex64", "complex128", "uint8", "uint16", "uint32", "uint64", "int8", "int16",
    "int32", "int64", "bool", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
    "float8_e5m2fnuz", "quint8", "qint8", "qint32", "quint4x2", "quint2x4",
)  # fmt: skip
ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("collections", "OrderedDict"),
        ("collections", "Counter"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor_v3"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("torch._utils", "_rebuild_qtensor"),
        ("torch._utils", "_rebuild_sparse_tensor"),
        ("torch._utils", "_rebuild_meta_tensor_no_storage"),
        ("torch._utils", "_rebuild_device_tensor_from_cpu_tensor"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        ("torch.nn.parameter", "Parameter"),
        ("torch.serialization", "_get_layout"),
        ("torch.storage", "UntypedStorage"),
        ("torch.storage", "TypedStorage"),
        ("torch", "Size"),
        ("torch", "Tensor"),
        ("torch", "device"),
        ("_codecs", "encode"),
        ("builtins", "bytearray"),
        ("builtins", "set"),
        ("builtins", "complex"),
        *(("torch", f"{kind}Storage") for kind in _STORAGES),
        *(("torch", dtype) for dtype in _DTYPES),
    }
)

# picklescan logs every global it finds (names a pickle chose) at warning level; the
# scan's result says the same once, in one line.
logging.getLogger("picklescan").setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class Limits:
    """What the scan of one file may cost (see the module's docstring)."""

    max_bytes: int = 64 << 20
    max_reads: int = 1_000_000
    max_seconds: float = 60.0
    max_zip_entries: int = 100_000
    max_central_directory: int = 16 << 20
    max_zip_members_read: int = 64  # members opened to see if they are pickles (storages never)


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Import:
    """A global the pickle names: what loading it imports and may call."""

    module: str
    name: str
    safety: str  # "innocuous", "suspicious" or "dangerous"

    @property
    def callable(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class PickleScan:
    """The scan of one file.  ``status``: "safe" (innocuous imports only), "suspicious"
    (imports outside the allow list), "unsafe" (picklescan's blocklist, or a name built at
    load time) or "error" (not read to the end: ``note`` says why).  ``allowed``: kept
    anyway, by the explicit option."""

    path: str
    status: str
    imports: tuple[Import, ...] = ()
    note: str = ""
    allowed: bool = False
    more: int = 0  # imports left out of an annotation

    @property
    def refused(self) -> bool:
        return self.status != "safe"

    @property
    def calls(self) -> list[str]:
        """The globals that make it unsafe, dangerous first."""
        order = {"dangerous": 0, "suspicious": 1}
        risky = [i for i in self.imports if i.safety in order]
        return [i.callable for i in sorted(risky, key=lambda i: (order[i.safety], i.callable))]

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "status": self.status,
            "scanner": SCANNER,
            "imports": [
                {"module": i.module, "name": i.name, "safety": i.safety}
                for i in self.imports[:ANNOTATION_IMPORTS_MAX]
            ],
        }
        more = self.more + max(0, len(self.imports) - ANNOTATION_IMPORTS_MAX)
        if more:
            document["moreImports"] = more
        if self.note:
            document["note"] = self.note
        if self.allowed:
            document["allowed"] = True
        return document

    def annotation(self) -> str:
        """The layer annotation (``ANNOTATION_PICKLE_SCAN``): compact JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_annotation(cls, path: str, text: str | None) -> PickleScan | None:
        """The scan a layer records, or None (none, or not one we can read: a layer's
        annotations come from whoever pushed it, so nothing here is trusted further than
        its shape)."""
        if not text or len(text) > 64 * 1024:
            return None
        try:
            document = json.loads(text)
        except ValueError:
            return None
        if not isinstance(document, dict) or document.get("status") not in STATUSES:
            return None
        imports, listed = [], document.get("imports")
        for item in listed if isinstance(listed, list) else []:
            if (
                isinstance(item, dict)
                and isinstance(item.get("module"), str)
                and isinstance(item.get("name"), str)
                and item.get("safety") in SAFETIES
            ):
                imports.append(
                    Import(item["module"][:NAME_MAX], item["name"][:NAME_MAX], item["safety"])
                )
        more = document.get("moreImports")
        note = document.get("note")
        return cls(
            path,
            document["status"],
            tuple(imports[:ANNOTATION_IMPORTS_MAX]),
            note[:NAME_MAX] if isinstance(note, str) else "",
            document.get("allowed") is True,
            more if type(more) is int and more > 0 else 0,
        )

    def summary(self) -> str:
        """A few words for a listing: "safe", "unsafe: calls posix.system (allowed)"."""
        text = self.status
        if self.calls:
            text += f": calls {_listed(self.calls)}"
        elif self.note:
            text += f": {self.note}"
        return text + (" (allowed)" if self.allowed else "")


STATUSES = ("safe", "suspicious", "unsafe", "error")
SAFETIES = ("innocuous", "suspicious", "dangerous")


def is_pickle_path(path: str) -> bool:
    return path.lower().endswith(PICKLE_SUFFIXES)


def scan_files(
    files: Iterable[tuple[str, Path]],
    *,
    allow: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, PickleScan]:
    """Scan each (path in the model, file on disk) whose name is a pickle's; the first
    refused one raises :class:`UnsafePickleError` unless ``allow`` (then every scan is
    returned, the refused ones marked ``allowed``)."""
    scans = {}
    for relpath, local in files:
        if not is_pickle_path(relpath):
            continue
        scan = scan_file(local, relpath, limits)
        if scan.refused:
            if not allow:
                raise refusal(scan)
            scan = replace(scan, allowed=True)
        scans[relpath] = scan
    return scans


def refusal(scan: PickleScan) -> UnsafePickleError:
    """The one-line error for a refused file: which file, and what it calls (or why it
    could not be read)."""
    if scan.calls:
        what = f"loading it runs code: it calls {_listed(scan.calls)}"
    else:
        what = f"it could not be scanned to the end ({scan.note})"
    return UnsafePickleError(
        f"{scan.path}: a pickle refused: {what}",
        path=scan.path,
        calls=scan.calls,
        hint="--allow-unsafe-pickle (allow_unsafe_pickle=True) accepts it, "
        "if you trust where it comes from",
    )


def _listed(calls: list[str], shown: int = 3) -> str:
    text = ", ".join(calls[:shown])
    return text + (f" and {len(calls) - shown} more" if len(calls) > shown else "")


def scan_file(path: Path, relpath: str, limits: Limits = DEFAULT_LIMITS) -> PickleScan:
    """What loading the file at ``path`` would import (``relpath`` names it)."""
    with open(path, "rb") as f:
        return scan_stream(f, relpath, limits)


def scan_stream(f: BinaryIO, relpath: str, limits: Limits = DEFAULT_LIMITS) -> PickleScan:
    """What loading a file would import, read from ``f`` (seekable; a zip is read from its
    end) as a file named ``relpath`` (its suffix says whether torch's layouts apply)."""
    budget = _Budget(limits)
    try:
        head = f.read(512)
        f.seek(0)
        if head.startswith(b"PK\x03\x04"):
            found = _scan_zip(f, relpath, budget)
        elif head[257:262] == b"ustar":  # torch < 0.4 wrote a tar; nobody scans those
            return PickleScan(relpath, "error", note="a tar archive (torch < 0.4) is not scanned")
        else:
            suffix = "." + relpath.rsplit(".", 1)[-1].lower() if "." in relpath else ""
            found = _scan_stream(_Bounded(f, budget), relpath, suffix)
    except _OverBudget as exc:
        return PickleScan(relpath, "error", note=str(exc))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, NotImplementedError) as exc:
        return PickleScan(relpath, "error", note=_printable(f"a zip this scan cannot read: {exc}"))
    except Exception as exc:  # picklescan's own errors on malformed input (ValueError ...)
        return PickleScan(relpath, "error", note=_printable(f"malformed pickle: {exc}"))
    if budget.exceeded:  # reached inside picklescan, which took it for a parse error
        return PickleScan(relpath, "error", note=budget.exceeded)
    return _judged(relpath, found)


def _printable(text: str) -> str:
    """``text`` cut to NAME_MAX, anything but printable ASCII as ``?``: names a pickle
    chose end up in error lines, headers and pages."""
    return "".join(c if " " <= c <= "~" else "?" for c in text[:NAME_MAX])


def _judged(relpath: str, found: Iterable[Any]) -> PickleScan:
    imports = {}
    for g in found:
        module, name = _printable(str(g.module)), _printable(str(g.name))
        safety = g.safety.value
        canonical = "builtins" if module == "__builtin__" else module
        if safety == "suspicious" and (canonical, name) in ALLOWED:
            safety = "innocuous"
        imports[(module, name)] = Import(module, name, safety)
    levels = {i.safety for i in imports.values()}
    status = (
        "unsafe" if "dangerous" in levels else "suspicious" if "suspicious" in levels else "safe"
    )
    ordered = sorted(imports.values(), key=lambda i: (i.safety == "innocuous", i.callable))
    return PickleScan(relpath, status, tuple(ordered))


def _scan_stream(stream: _Bounded, relpath: str, suffix: str) -> list[Any]:
    from picklescan import scanner  # import cost only for models with pickles

    if suffix in TORCH_SUFFIXES:
        try:  # torch.save's legacy stream: the magic number, then four pickles
            return scanner.scan_pytorch(stream, relpath).globals
        except scanner.InvalidMagicError:
            stream.seek(0)
    return scanner.scan_pickle_bytes(stream, relpath).globals


def _storage_record(name: str) -> bool:
    """A tensor storage of torch.save's zip (``ARCHIVE/data/N``, N a number): raw bytes
    torch never unpickles, so never opened here (``data/data.pkl``, the pickle of an
    archive named "data", is not one)."""
    parts = name.split("/")
    return len(parts) > 1 and parts[-2] == "data" and parts[-1].isdigit()


def _unpickled_member(name: str, head: bytes) -> bool:
    """A zip member some loader unpickles: torch.save's ``data.pkl`` (and TorchScript's
    ``constants.pkl``), any ``.pkl``, and whatever else starts as a pickle does."""
    if name.lower().endswith((".pkl", ".pickle")):
        return True
    return len(head) > 1 and head[0] == 0x80 and head[1] in (2, 3, 4, 5)


def _scan_zip(f: BinaryIO, relpath: str, budget: _Budget) -> list[Any]:
    from picklescan import scanner
    from picklescan.relaxed_zipfile import RelaxedZipFile  # torch's CRCs are not checked

    _measure_central_directory(f, budget.limits)
    found: list[Any] = []
    with RelaxedZipFile(f, "r") as archive:
        infos = archive.infolist()
        if len(infos) > budget.limits.max_zip_entries:
            raise _OverBudget(
                f"a zip of {len(infos)} entries (at most {budget.limits.max_zip_entries})"
            )
        opened = 0
        for info in infos:
            if info.is_dir() or _storage_record(info.filename):
                continue
            opened += 1
            if opened > budget.limits.max_zip_members_read:
                raise _OverBudget(
                    f"a zip of more than {budget.limits.max_zip_members_read} members "
                    "besides tensor storages"
                )
            with archive.open(info) as member:
                head = member.read(8)
                if not _unpickled_member(info.filename, head):
                    continue
            budget.charge(len(head), 1)
            with archive.open(info) as member:
                data = _read_bounded(member, budget)
            member_id = f"{relpath}:{info.filename}"
            found += scanner.scan_pickle_bytes(
                _Bounded(io.BytesIO(data), budget), member_id
            ).globals
    return found


def _read_bounded(member: BinaryIO, budget: _Budget) -> bytes:
    """A member's bytes, decompressed, within the budget (a zip bomb stops here)."""
    chunks = []
    while chunk := member.read(1 << 20):
        budget.charge(len(chunk), 1)
        chunks.append(chunk)
    return b"".join(chunks)


def _measure_central_directory(f: BinaryIO, limits: Limits) -> None:
    """Entries and size of a zip's central directory from its end records, before
    ``zipfile`` reads the directory into memory (zip64 records too)."""
    f.seek(0, io.SEEK_END)
    size = f.tell()
    tail_size = min(size, 22 + 0xFFFF)
    f.seek(size - tail_size)
    tail = f.read(tail_size)
    end = tail.rfind(b"PK\x05\x06")
    if end < 0 or len(tail) - end < 22:
        raise zipfile.BadZipFile("no end of central directory record")
    entries, directory = struct.unpack_from("<HI", tail, end + 10)
    if entries == 0xFFFF or directory == 0xFFFFFFFF:  # zip64: the locator precedes the record
        locator = end - 20
        if locator < 0 or tail[locator : locator + 4] != b"PK\x06\x07":
            raise zipfile.BadZipFile("no zip64 end of central directory locator")
        (record,) = struct.unpack_from("<Q", tail, locator + 8)
        f.seek(record)
        head = f.read(56)
        if len(head) < 56 or head[:4] != b"PK\x06\x06":
            raise zipfile.BadZipFile("no zip64 end of central directory record")
        entries, directory = struct.unpack_from("<QQ", head, 32)
    f.seek(0)
    if entries > limits.max_zip_entries:
        raise _OverBudget(f"a zip of {entries} entries (at most {limits.max_zip_entries})")
    if directory > limits.max_central_directory:
        raise _OverBudget(
            f"a zip whose central directory is {directory} bytes "
            f"(at most {limits.max_central_directory})"
        )


class _OverBudget(Exception):
    """The scan of one file reached a bound; the message says which."""


@dataclass
class _Budget:
    """What one file's scan has used.  Once over a bound it stays over: picklescan reads
    a stream inside ``except Exception`` (a parse error there ends one pickle), so every
    later charge fails again, and the scan's result is checked against it at the end."""

    limits: Limits
    bytes_read: int = 0
    reads: int = 0
    deadline: float = field(default=0.0)
    exceeded: str = ""

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.limits.max_seconds

    def charge(self, n: int, reads: int) -> None:
        self.bytes_read += n
        self.reads += reads
        if not self.exceeded:
            if self.bytes_read > self.limits.max_bytes:
                self.exceeded = f"more than {self.limits.max_bytes} bytes of pickle data"
            elif self.reads > self.limits.max_reads:
                self.exceeded = f"more than {self.limits.max_reads} pickle opcodes"
            elif self.reads % 1024 == 0 and time.monotonic() > self.deadline:
                self.exceeded = f"the scan took more than {self.limits.max_seconds:g} s"
        if self.exceeded:
            raise _OverBudget(self.exceeded)


class _Bounded(io.RawIOBase):
    """A seekable reader that charges every read to the budget before it reads: a
    length a pickle claims (BINBYTES8 of 2**60) fails the budget, not the memory."""

    def __init__(self, inner: BinaryIO, budget: _Budget) -> None:
        self._inner = inner
        self._budget = budget

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._budget.limits.max_bytes - self._budget.bytes_read + 1
        self._budget.charge(n, 1)
        data = self._inner.read(n)
        self._budget.bytes_read -= n - len(data)  # charged what was asked; count what came
        return data

    def readline(self, limit: int | None = -1) -> bytes:
        # pickletools reads text opcodes' arguments by line: bounded like a read.
        cap = self._budget.limits.max_bytes - self._budget.bytes_read + 1
        size = cap if limit is None or limit < 0 else min(limit, cap)
        line = self._inner.readline(size)
        self._budget.charge(len(line), 1)
        return line

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()
