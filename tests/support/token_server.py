"""A distribution token server for tests, as Harbor and Docker Hub run one.

Issues ES256 JWTs (header ``x5c`` carries the signing certificate, which the
registry trusts through ``rootcertbundle``) granting, per requested scope,
only the actions the user's policy allows.  Supports GET with Basic
credentials (and ``offline_token`` refresh tokens) and the OAuth2 POST
``refresh_token`` / ``password`` grants.  Records every request.
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from .serving import serve, shutdown

SERVICE = "modelpack-test-registry"
ISSUER = "modelpack-test-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    workdir: Path
    users: dict[str, str] = field(default_factory=dict)
    # user (or "" for anonymous) -> {repository glob: actions}
    policy: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    expires_in: int = 300
    requests: list[dict] = field(default_factory=list)
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    issued: list[str] = field(default_factory=list)  # every access token, for leak checks
    catalog_users: set[str] = field(default_factory=set)  # granted registry:catalog:*

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelpack test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def cert_path(self) -> Path:
        return self.workdir / "token-signer.pem"

    @property
    def realm(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def registry_auth_yaml(self) -> str:
        return (
            "auth:\n  token:\n"
            f"    realm: {self.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
            f"    rootcertbundle: {self.cert_path}\n"
        )

    # -- tokens -------------------------------------------------------------

    def allowed(self, user: str, repository: str, wanted: list[str]) -> list[str]:
        granted: set[str] = set()
        for pattern, actions in self.policy.get(user, {}).items():
            if fnmatch.fnmatchcase(repository, pattern):
                granted.update(actions)
        return [a for a in wanted if a in granted or ("*" in granted)]

    def issue(self, user: str, scopes: list[str]) -> dict:
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if parts[:2] == ["registry", "catalog"]:  # distribution's /v2/_catalog
                granted = ["*"] if user in self.catalog_users else []
                access.append({"type": "registry", "name": "catalog", "actions": granted})
                continue
            if len(parts) != 3 or parts[0] != "repository":
                continue
            actions = self.allowed(user, parts[1], parts[2].split(","))
            access.append({"type": "repository", "name": parts[1], "actions": actions})
        now = int(time.time())
        claims = {
            "iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + self.expires_in,
            "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8), "access": access,
        }  # fmt: skip
        der = self._cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(
            self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        token = f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
        self.issued.append(token)
        return {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": datetime.datetime.now(datetime.UTC).isoformat(),
        }

    # -- HTTP ---------------------------------------------------------------

    def start(self) -> TokenServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, document: dict) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _basic_user(self) -> str | None:
                header = self.headers.get("Authorization", "")
                if not header.startswith("Basic "):
                    return ""
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
                return user if server.users.get(user) == password else None

            def do_GET(self) -> None:  # noqa: N802
                query = parse_qs(urlsplit(self.path).query)
                user = self._basic_user()
                record = {"method": "GET", "user": user, "scopes": query.get("scope", []),
                          "offline": query.get("offline_token") == ["true"],
                          "authorization": bool(self.headers.get("Authorization"))}  # fmt: skip
                with server._lock:
                    server.requests.append(record)
                if user is None:
                    self._answer(
                        401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
                    )
                    return
                document = server.issue(user, query.get("scope", []))
                if record["offline"] and user:
                    refresh = secrets.token_hex(16)
                    server.refresh_tokens[refresh] = user
                    document["refresh_token"] = refresh
                self._answer(200, document)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                form = parse_qs(self.rfile.read(length).decode())
                grant = form.get("grant_type", [""])[0]
                scopes = " ".join(form.get("scope", [""])).split()
                with server._lock:
                    server.requests.append(
                        {"method": "POST", "grant_type": grant, "scopes": scopes}
                    )
                if grant == "refresh_token":
                    user = server.refresh_tokens.get(form.get("refresh_token", [""])[0])
                elif grant == "password":
                    name = form.get("username", [""])[0]
                    user = name if server.users.get(name) == form.get("password", [""])[0] else None
                else:
                    user = None
                if not user:
                    self._answer(
                        401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid grant"}]}
                    )
                    return
                self._answer(200, server.issue(user, scopes))

        self._server = serve(Handler)
        return self

    def stop(self) -> None:
        shutdown(self._server)
        self._server = None
