"""A SASL_SSL listener (SCRAM) for ``LocalKafka``: test certificates, broker and client settings.

``prepare_sasl_ssl(directory, port)`` makes, once per data directory and with the
JDK's ``keytool`` only (the broker needs Java anyway):

- a test CA (``ca.pem``, the file clients give as ``ssl.ca.location``), valid 30 days;
- the broker's key and a certificate the CA signed for ``127.0.0.1`` and ``localhost``,
  in a PKCS12 keystore (``broker.p12``) with a random password;
- a SCRAM user ``streamer`` with a random password, created when the KRaft storage
  is formatted (``kafka-storage format --add-scram``);
- ``client.properties``: the settings a client needs, for ``--kafka-config``.

Everything lives in ``<data dir>/sasl-ssl`` (0700; the files 0600), so a kept data
directory restarts with the same certificates and user. For tests and development
only: the CA's key sits next to what it signed.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from streamer.errors import LocalKafkaError

SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
USERNAME = "streamer"
_VALIDITY_DAYS = "30"
_KEYTOOL_JVM = ["-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC", "-J-Xshare:auto"]


@dataclass(frozen=True)
class SaslSslListener:
    """Where and how a client reaches the broker's SASL_SSL listener."""

    bootstrap_servers: str
    mechanism: str
    username: str
    password: str
    ca_location: str
    keystore: str
    keystore_password: str

    def client_config(self) -> dict[str, str]:
        """librdkafka settings for this listener (a job's ``kafka_config``)."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": self.mechanism,
            "sasl.username": self.username,
            "sasl.password": self.password,
            "ssl.ca.location": self.ca_location,
        }

    def properties(self) -> str:
        """``client_config`` as a properties file for ``--kafka-config``."""
        lines = [f"# the SASL_SSL listener of the local broker at {self.bootstrap_servers}"]
        lines += [f"{k}={v}" for k, v in self.client_config().items()]
        return "\n".join(lines) + "\n"

    def broker_properties(self, port: int) -> dict[str, str]:
        """What the broker's server.properties adds for this listener (see
        ``broker_properties``, which adds it to ``listeners``)."""
        mech = self.mechanism.lower()
        return {
            "sasl.enabled.mechanisms": self.mechanism,
            f"listener.name.sasl_ssl.{mech}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": self.keystore,
            "ssl.keystore.password": self.keystore_password,
            "ssl.key.password": self.keystore_password,
            "ssl.client.auth": "none",
        }

    def scram_argument(self) -> str:
        """The storage tool's ``--add-scram`` value that creates the user."""
        return f"{self.mechanism}=[name={self.username},password={self.password}]"


def prepare_sasl_ssl(
    directory: Path, host: str, port: int, mechanism: str = "SCRAM-SHA-512"
) -> SaslSslListener:
    """The listener's certificates, user and client file in ``directory``; made on the
    first call, read back on later ones (a kept data directory)."""
    if mechanism not in SCRAM_MECHANISMS:
        raise LocalKafkaError(f"unknown SCRAM mechanism {mechanism!r}: use SCRAM-SHA-512 or -256")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    state = directory / "listener.json"
    if state.exists():
        saved = SaslSslListener(**json.loads(state.read_text()))
        listener = SaslSslListener(**{**asdict(saved), "bootstrap_servers": f"{host}:{port}"})
    else:
        keystore_password = secrets.token_urlsafe(18)
        _make_certificates(directory, keystore_password)
        listener = SaslSslListener(
            bootstrap_servers=f"{host}:{port}",
            mechanism=mechanism,
            username=USERNAME,
            password=secrets.token_urlsafe(18),
            ca_location=str(directory / "ca.pem"),
            keystore=str(directory / "broker.p12"),
            keystore_password=keystore_password,
        )
    _write_private(state, json.dumps(asdict(listener)))
    _write_private(directory / "client.properties", listener.properties())
    return listener


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _make_certificates(directory: Path, password: str) -> None:
    """A CA and a broker certificate it signed, by keytool (see the module docstring)."""
    ca, broker = directory / "ca.p12", directory / "broker.p12"
    for stale in (ca, broker):
        stale.unlink(missing_ok=True)
    store = ["-storetype", "PKCS12", "-storepass", password]
    key = ["-keyalg", "EC", "-groupname", "secp256r1", "-validity", _VALIDITY_DAYS]
    csr, signed = directory / "broker.csr", directory / "broker.pem"
    steps = [
        ["-genkeypair", "-alias", "ca", "-dname", "CN=streamer test CA", "-ext", "bc:c",
         *key, "-keystore", str(ca), *store, "-keypass", password],
        ["-exportcert", "-rfc", "-alias", "ca", "-keystore", str(ca), *store,
         "-file", str(directory / "ca.pem")],
        ["-genkeypair", "-alias", "broker", "-dname", "CN=localhost", *key,
         "-keystore", str(broker), *store, "-keypass", password],
        ["-certreq", "-alias", "broker", "-keystore", str(broker), *store, "-file", str(csr)],
        ["-gencert", "-rfc", "-alias", "ca", "-keystore", str(ca), *store,
         "-infile", str(csr), "-outfile", str(signed), "-validity", _VALIDITY_DAYS,
         "-ext", "SAN=ip:127.0.0.1,dns:localhost", "-ext", "EKU=serverAuth"],
        ["-importcert", "-noprompt", "-alias", "ca", "-file", str(directory / "ca.pem"),
         "-keystore", str(broker), *store],
        ["-importcert", "-noprompt", "-alias", "broker", "-file", str(signed),
         "-keystore", str(broker), *store],
    ]  # fmt: skip
    keytool = _keytool()
    for step in steps:
        proc = subprocess.run(
            [keytool, *_KEYTOOL_JVM, *step], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            out = (proc.stderr or proc.stdout).strip().splitlines()
            detail = out[-1] if out else f"exit code {proc.returncode}"
            raise LocalKafkaError(f"keytool {step[0]} failed making test certificates: {detail}")
    for path in directory.iterdir():
        path.chmod(0o600)


def _keytool() -> str:
    """``keytool`` next to the ``java`` the broker runs with (or on PATH)."""
    import shutil

    from streamer.localkafka.jars import require_java

    beside = Path(os.path.realpath(require_java())).with_name("keytool")
    found = str(beside) if beside.exists() else shutil.which("keytool")
    if found is None:
        raise LocalKafkaError(
            "no `keytool` next to `java` nor on PATH: install a full JDK 17 or newer "
            "(e.g. apt install openjdk-17-jdk-headless)"
        )
    return found
