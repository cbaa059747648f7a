"""Resolve Apache Kafka's broker jars from Maven Central into streamer's cache.

The pom that ships next to this module names ``org.apache.kafka:kafka_2.13`` and
the log4j2 runtime. ``resolve_kafka_jars()`` runs ``mvn dependency:copy-dependencies``
once into ``$STREAMER_HOME/kafka/<version>/libs`` and writes a ``.complete`` marker
(extra Maven arguments, e.g. ``-s settings.xml`` for a mirror, come from
``$STREAMER_MAVEN_ARGS``);
later calls return at once without touching the network. Safe to call from
several processes: the copy goes to a temporary directory that is renamed into
place.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from streamer.errors import LocalKafkaError

log = logging.getLogger(__name__)

POM = Path(__file__).with_name("pom.xml")
LOG4J2_CONFIG = Path(__file__).with_name("log4j2.properties")


def kafka_version() -> str:
    """The Apache Kafka version the shipped pom resolves."""
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if match is None:  # pragma: no cover - the pom ships with the package
        raise LocalKafkaError(f"{POM} names no <kafka.version>; reinstall streamer")
    return match.group(1)


def streamer_home() -> Path:
    """``$STREAMER_HOME``, or ``~/.cache/streamer``."""
    env = os.environ.get("STREAMER_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "streamer"


def libs_dir(version: str | None = None) -> Path:
    return streamer_home() / "kafka" / (version or kafka_version()) / "libs"


def require_java() -> str:
    """Path of ``java``, or a one-line error saying how to get it."""
    java = shutil.which("java")
    if java is None:
        raise LocalKafkaError(
            "no `java` on PATH: install a JDK 17 or newer (e.g. apt install openjdk-17-jdk)"
        )
    return java


def resolve_kafka_jars(*, quiet: bool = False) -> Path:
    """Return the directory holding every jar the broker needs, resolving it if needed."""
    target = libs_dir()
    if (target / ".complete").exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            "no `mvn` on PATH and Kafka's jars are not cached in "
            f"{target}: install Maven (e.g. apt install maven)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="libs.", dir=target.parent))
    if not quiet:
        print(f"resolving Apache Kafka {kafka_version()} from Maven Central into {target} ...")
    cmd = [
        mvn, "-B", "-q", "-Dstyle.color=never",
        *shlex.split(os.environ.get("STREAMER_MAVEN_ARGS", "")),
        "-f", str(POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
        shutil.rmtree(tmp, ignore_errors=True)
        errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "ERROR" in ln]
        detail = errors[0].strip() if errors else f"mvn exited with {proc.returncode}"
        raise LocalKafkaError(
            f"could not resolve Apache Kafka {kafka_version()} with Maven ({detail[:300]}); "
            "check network access to Maven Central, or point STREAMER_HOME at a cache "
            "that already holds the jars"
        )
    (tmp / ".complete").write_text(kafka_version())
    try:
        tmp.rename(target)
    except OSError:  # another process won the race; its copy is complete
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("Apache Kafka jars cached in %s", target)
    return target
