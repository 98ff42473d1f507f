"""Signing keys: generate, save and load them as standard PEM.

ECDSA P-256 (what cosign uses) by default, Ed25519 on request.  Private keys
are PKCS#8 PEM, encrypted with a password unless the caller explicitly asks
otherwise; public keys are PKIX PEM, which ``cosign verify --key`` and
``openssl`` read as they are.  (cosign's own private-key file format is
scrypt + NaCl; ``cosign import-key-pair -k`` converts ours to it.)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FileNotFoundInSourceError, UsageError
from ..storage._fsutil import atomic_write_bytes

# cryptography is imported inside the functions: only commands that sign or
# verify pay for it.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
ALGORITHMS = ("ecdsa-p256", "ed25519")


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path
    key_id: str


def key_id(public: PublicKey) -> str:
    """A short, stable name for a public key: sha256 of its DER encoding."""
    from cryptography.hazmat.primitives import serialization

    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def generate_key_pair(
    prefix: str | os.PathLike[str],
    password: str | None,
    *,
    algorithm: str = "ecdsa-p256",
    overwrite: bool = False,
) -> KeyPair:
    """Write PREFIX.key (private) and PREFIX.pub; ``password`` None means unencrypted."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if algorithm not in ALGORITHMS:
        raise UsageError(
            f"unknown key algorithm {algorithm!r}", hint=f"one of {', '.join(ALGORITHMS)}"
        )
    private_path, public_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for path in (private_path, public_path):
        if path.exists() and not overwrite:
            raise UsageError(
                f"{path} already exists", hint="choose another --out prefix or pass --force"
            )
    key: PrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if algorithm == "ecdsa-p256"
        else ed25519.Ed25519PrivateKey.generate()
    )
    encryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    atomic_write_bytes(private_path, private_pem, mode=0o600)
    atomic_write_bytes(public_path, public_pem, mode=0o644)
    return KeyPair(private_path, public_path, key_id(key.public_key()))


def key_is_encrypted(pem: bytes) -> bool:
    """True for a PEM private key that needs a password (so a CLI knows to ask for one)."""
    return b"ENCRYPTED" in pem.split(b"\n", 1)[0]


def key_password(path: str | os.PathLike[str], password: str | None) -> str | None:
    """The password to open ``path`` with: none for an unencrypted key (whatever is
    around), else the one given, else MODELPACK_KEY_PASSWORD."""
    if not key_is_encrypted(_read(path, "private key")):
        return None
    return password if password is not None else os.environ.get("MODELPACK_KEY_PASSWORD")


def load_private_key(path: str | os.PathLike[str], password: str | None = None) -> PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    data = _read(path, "private key")
    password = key_password(path, password)
    try:
        key = serialization.load_pem_private_key(data, password.encode() if password else None)
    except TypeError:
        raise UsageError(
            f"{path} is encrypted and no password was given",
            hint="set MODELPACK_KEY_PASSWORD (or answer the prompt)",
        ) from None
    except ValueError as exc:
        raise UsageError(
            f"cannot load private key {path}: wrong password or not a PEM key ({exc})"
        ) from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1):
        raise UsageError(f"{path}: only P-256 ECDSA and Ed25519 keys are supported")
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise UsageError(f"{path}: only P-256 ECDSA and Ed25519 keys are supported")
    return key


def load_public_key(path: str | os.PathLike[str]) -> PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise UsageError(f"{path} is not a PEM public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise UsageError(f"{path}: only P-256 ECDSA and Ed25519 keys are supported")
    return key


def sign_bytes(key: PrivateKey, data: bytes) -> bytes:
    """ECDSA-SHA256 (ASN.1 DER, as cosign writes) or Ed25519."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify_bytes(key: PublicKey, signature: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundInSourceError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
