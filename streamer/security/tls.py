"""Optional TLS with mutual authentication, for clusters that span hosts.

The cluster secret already authenticates every connection, but the bytes travel in
the clear. With TLS, the control plane and the data plane are encrypted too, and
each side checks that the other's certificate was signed by the cluster's CA.
Turn it on for every process of the cluster with three variables:

- ``STREAMER_TLS_CERT``: this host's certificate (PEM), signed by the cluster CA;
- ``STREAMER_TLS_KEY``: its private key (PEM);
- ``STREAMER_TLS_CA``: the cluster CA's certificate (PEM).

Host names are not checked (workers are often reached by address); the CA is the
trust anchor, so use a CA of your own for the cluster, not a public one. The
challenge-response handshake still runs inside TLS and still decides who may say
what. Task processes inherit the variables from their worker.

`make_test_pki` makes a CA and one certificate with the ``openssl`` command, for
tests, the benchmark and trying it out.
"""

from __future__ import annotations

import os
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streamer.errors import ConfigError

__all__ = [
    "TLS_CA_ENV",
    "TLS_CERT_ENV",
    "TLS_KEY_ENV",
    "TlsConfig",
    "make_test_pki",
    "tls_from_env",
]

TLS_CERT_ENV = "STREAMER_TLS_CERT"
TLS_KEY_ENV = "STREAMER_TLS_KEY"
TLS_CA_ENV = "STREAMER_TLS_CA"


@dataclass(frozen=True)
class TlsConfig:
    cert: Path
    key: Path
    ca: Path

    def _context(self, purpose: ssl.Purpose, protocol: int) -> ssl.SSLContext:
        ctx = ssl.SSLContext(protocol)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert, self.key)
            ctx.load_verify_locations(self.ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the TLS files ({self.cert}, {self.key}, {self.ca}): {exc}; "
                f"check ${TLS_CERT_ENV}, ${TLS_KEY_ENV} and ${TLS_CA_ENV}"
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def server_context(self) -> ssl.SSLContext:
        """For listeners: present our certificate, require the peer's."""
        return self._context(ssl.Purpose.CLIENT_AUTH, ssl.PROTOCOL_TLS_SERVER)

    def client_context(self) -> ssl.SSLContext:
        """For connections we open: present our certificate, verify the server's
        against the cluster CA (not its host name)."""
        ctx = self._context(ssl.Purpose.SERVER_AUTH, ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


def tls_from_env() -> TlsConfig | None:
    """The TLS settings from the environment; None when TLS is off (none of them set)."""
    values = {name: os.environ.get(name, "") for name in (TLS_CERT_ENV, TLS_KEY_ENV, TLS_CA_ENV)}
    if not any(values.values()):
        return None
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise ConfigError(f"TLS needs all three of its variables; {', '.join(missing)} unset")
    for name, value in values.items():
        if not Path(value).is_file():
            raise ConfigError(f"${name}={value}: no such file")
    return TlsConfig(
        Path(values[TLS_CERT_ENV]), Path(values[TLS_KEY_ENV]), Path(values[TLS_CA_ENV])
    )


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ConfigError(f"openssl {args[0]} failed: {result.stderr.strip()[-300:]}")


def make_test_pki(directory: Path) -> TlsConfig:
    """A throwaway CA and one certificate it signed (EC P-256), in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=directory)
    _openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=streamer test CA",
             "-days", "2", "-out", "ca.pem", cwd=directory)  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "node.key",
             cwd=directory)  # fmt: skip
    _openssl("req", "-new", "-key", "node.key", "-subj", "/CN=streamer node",
             "-out", "node.csr", cwd=directory)  # fmt: skip
    _openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", "node.pem", cwd=directory)  # fmt: skip
    os.chmod(directory / "node.key", 0o600)
    return TlsConfig(directory / "node.pem", directory / "node.key", directory / "ca.pem")


def server_ssl() -> ssl.SSLContext | None:
    """The listeners' TLS context from the environment (None: TLS off)."""
    tls = tls_from_env()
    return None if tls is None else tls.server_context()


def client_ssl() -> ssl.SSLContext | None:
    """The connecting side's TLS context from the environment (None: TLS off)."""
    tls = tls_from_env()
    return None if tls is None else tls.client_context()
