"""Start a real CNCF distribution registry on 127.0.0.1 for tests, demos and benchmarks.

With a Docker engine, the ``registry:2`` image through testcontainers;
otherwise Debian's ``docker-registry`` binary (distribution 2.8) on a free
port.  Either way it is the real server, not a mock.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

REGISTRY_BINARIES = ("docker-registry", "registry")


def write_test_ca(directory: Path, hosts: list[str]) -> None:
    """A throwaway CA (``ca.crt``) and a server certificate for ``hosts`` signed by it."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelpack test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.crt").write_bytes(ca_cert.public_bytes(pem))
    (directory / "server.crt").write_bytes(cert.public_bytes(pem))
    (directory / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def wait_until_serving(
    url: str,
    process: subprocess.Popen | None,
    log: Path,
    timeout: float,
    *,
    verify: str | bool = True,
) -> None:
    """Until ``url`` answers ``/v2/`` as a registry does (200 or 401); a process that exits
    first, or a deadline, is a RuntimeError with the end of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"registry exited with {process.returncode}: "
                + (log.read_text(errors="replace")[-2000:] if log.exists() else "")
            )
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/v2/", timeout=1, verify=verify).status_code in (200, 401):
                return
        time.sleep(0.05)
    raise RuntimeError(f"registry on {url} did not answer within {timeout}s")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker_engine_available() -> bool:
    if os.environ.get("MODELPACK_TEST_NO_DOCKER"):
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    """A bcrypt htpasswd file (what distribution accepts), via apache2-utils' htpasswd."""
    path.unlink(missing_ok=True)
    for user, password in users.items():
        flags = "-Bbc" if not path.exists() else "-Bb"
        subprocess.run(
            ["htpasswd", flags, str(path), user, password], check=True, capture_output=True
        )
    return path


def registry_binary() -> str | None:
    for name in REGISTRY_BINARIES:
        if path := shutil.which(name):
            return path
    return None


@dataclass
class RegistryServer:
    """A running registry; ``host`` is what goes into references (127.0.0.1:PORT)."""

    htpasswd: Path | None = None  # basic auth with this htpasswd file
    users: dict[str, str] = field(default_factory=dict)  # or: basic auth for these users
    tls: bool = False  # serve HTTPS with a certificate from a fresh self-signed CA
    extra_config: str = ""  # YAML appended to the generated config (top-level keys)
    workdir: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="modelpack-registry-"))
    )
    port: int = field(default_factory=free_port)
    scheme: str = "http"
    _process: subprocess.Popen | None = None
    _container: object | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the server certificate (with ``tls=True``)."""
        return self.workdir / "ca.crt"

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

    def config_yaml(self, addr: str | None = None) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: info",
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.workdir / 'data'}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {addr or f'127.0.0.1:{self.port}'}",
            "  secret: modelpack-test-secret",
        ]
        if self.tls:
            lines += [
                "  tls:",
                f"    certificate: {self.workdir / 'server.crt'}",
                f"    key: {self.workdir / 'server.key'}",
            ]
        if self.htpasswd is not None:
            lines += [
                "auth:",
                "  htpasswd:",
                "    realm: modelpack-test",
                f"    path: {self.htpasswd}",
            ]
        return "\n".join(lines) + "\n" + self.extra_config

    def start(self, timeout: float = 60.0) -> RegistryServer:
        """Start ``registry:2`` in Docker if an engine answers, else the local binary."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.users:
            self.htpasswd = write_htpasswd(self.workdir / "htpasswd", self.users)
        if self.tls:
            self.scheme = "https"
            write_test_ca(self.workdir, hosts=["127.0.0.1", "localhost"])
        if docker_engine_available():
            self._start_container()
        else:
            self._start_binary()
        self._wait(timeout)
        return self

    def _start_binary(self) -> None:
        binary = registry_binary()
        if binary is None:
            raise RuntimeError(
                "no registry binary found: install Debian's docker-registry "
                "(apt-get install docker-registry) or run a Docker engine"
            )
        config = self.workdir / "config.yml"
        config.write_text(self.config_yaml(), encoding="utf-8")
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self._process = subprocess.Popen(
            [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )

    def _start_container(self) -> None:
        from testcontainers.core.container import DockerContainer

        config = self.workdir / "config.yml"
        config.write_text(self.config_yaml(addr="0.0.0.0:5000"), encoding="utf-8")
        # The work directory is mounted at the same path, so paths in the config hold.
        container = (
            DockerContainer("registry:2")
            .with_exposed_ports(5000)
            .with_volume_mapping(str(self.workdir), str(self.workdir), "rw")
            .with_command(f"serve {config}")
        )
        container.start()
        self._container = container
        self.port = int(container.get_exposed_port(5000))

    def _wait(self, timeout: float) -> None:
        verify = str(self.ca_file) if self.tls else True
        wait_until_serving(self.url, self._process, self.log_path, timeout, verify=verify)

    def stop(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self.log_path.write_bytes(b"".join(self._container.get_logs()))
                self._container.stop()
            self._container = None
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def access_log(self) -> str:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self.log_path.write_bytes(b"".join(self._container.get_logs()))
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def main() -> None:
    """``python -m modelpack.testing.registry [--port N]``: run a registry until Ctrl-C."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="Run a local CNCF distribution registry.")
    parser.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)"
    )
    args = parser.parse_args()
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # delivered to sigwait, not as a kill
    server = RegistryServer(port=args.port or free_port())
    server.start()
    print(
        f"registry on http://{server.host} (data in {server.workdir}); Ctrl-C stops it", flush=True
    )
    try:
        signal.sigwait(signals)
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
