"""Build streamer's three Docker images without any image registry; nothing is pulled.

    python -m scripts.images            # build what is missing or out of date
    python -m scripts.images --force    # build all three again

on the engine that ``DOCKER_HOST`` names (``make images`` starts one where it can):

1. ``streamer-base:bookworm``: ``debootstrap --variant=minbase bookworm`` from Debian's
   mirror, with ca-certificates, python3, python3-venv and passwd, and this machine's
   extra CA certificates (``/usr/local/share/ca-certificates``: pip and apt inside a
   build go through the same TLS-inspecting proxy as the host, where there is one),
   made an image with ``docker import``.
2. ``streamer-kafka:<version>``: ``docker/kafka/Dockerfile`` on that base: Debian's
   OpenJDK 17 and the Kafka jars Maven resolves from ``docker/kafka/pom.xml`` (broker
   and tools, the version of ``streamer/localkafka/pom.xml``), configured from
   ``KAFKA_*`` variables like the official ``apache/kafka`` image.
3. ``streamer:dev``: ``docker/Dockerfile`` with ``PYTHON_IMAGE=streamer-base:bookworm``
   (elsewhere it builds on the official ``python:3.11-slim``).

Each image carries the label ``dev.streamer.recipe``, a sha256 of what it is built
from; an image whose label matches is not built again. Builds use the classic
builder (``DOCKER_BUILDKIT=0``: BuildKit would pull its frontend image) and the
host's network (``--network host``: no NAT rules needed for apt and pip).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from streamer.localkafka.jars import kafka_version, streamer_home

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "streamer-base:bookworm"
KAFKA_IMAGE = f"streamer-kafka:{kafka_version()}"
STREAMER_IMAGE = "streamer:dev"
LABEL = "dev.streamer.recipe"
SUITE = os.environ.get("STREAMER_DEBIAN_SUITE", "bookworm")
MIRROR = os.environ.get("STREAMER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = ("ca-certificates", "python3", "python3-venv", "passwd")
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
# Inputs of streamer:dev (what docker/Dockerfile copies), for its recipe hash.
STREAMER_INPUTS = (
    "docker/Dockerfile",
    "pyproject.toml",
    "README.md",
    "streamer",
    "netlayer",
    "examples",
)


class ImageError(Exception):
    """An image could not be built; the message says which and why."""


@dataclass(frozen=True)
class Built:
    image: str
    action: str  # "built" | "up to date"
    seconds: float
    size_mb: float

    def line(self) -> str:
        took = f" in {self.seconds:.0f} s" if self.action == "built" else ""
        return f"{self.image}: {self.action}{took} ({self.size_mb:.0f} MB)"


# --------------------------------------------------------------- docker CLI
def docker(args: list[str], env: Mapping[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    cli = shutil.which("docker")
    if cli is None:
        raise ImageError("no `docker` command on PATH (Debian's docker.io provides one)")
    full_env = {**os.environ, **env, "DOCKER_BUILDKIT": "0"}
    return subprocess.run([cli, *args], env=full_env, text=True, check=False, **kw)


def inspect(image: str, fmt: str, env: Mapping[str, str]) -> str | None:
    """``docker image inspect --format fmt image``, or None when the image is not here."""
    proc = docker(["image", "inspect", "--format", fmt, image], env, capture_output=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def recipe_of(image: str, env: Mapping[str, str]) -> str | None:
    return inspect(image, f'{{{{ index .Config.Labels "{LABEL}" }}}}', env)


def size_mb(image: str, env: Mapping[str, str]) -> float:
    size = inspect(image, "{{ .Size }}", env)
    return int(size) / 1e6 if size and size.isdigit() else 0.0


def image_id(image: str, env: Mapping[str, str]) -> str:
    found = inspect(image, "{{ .Id }}", env)
    if not found:
        raise ImageError(f"{image} is not on this engine")
    return found


def run_build(args: list[str], what: str, env: Mapping[str, str], log: Path) -> None:
    """``docker build`` with its output in ``log``; ImageError with its tail on failure."""
    with open(log, "w") as out:
        proc = docker(["build", *args], env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise ImageError(f"building {what} failed (log {log}):\n  " + "\n  ".join(tail))


# ------------------------------------------------------------------- hashes
def digest(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:32]


def tree_bytes(root: Path, rels: Iterable[str]) -> Iterable[bytes]:
    """Every file under the given paths (sorted; caches and bytecode left out), with its path."""
    for rel in rels:
        path = root / rel
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.suffix in {".pyc", ".pyo"}:
                continue
            yield str(f.relative_to(root)).encode()
            yield f.read_bytes()


def extra_ca_certs() -> list[Path]:
    return sorted(EXTRA_CA_DIR.rglob("*.crt")) if EXTRA_CA_DIR.is_dir() else []


# --------------------------------------------------------------------- base
def base_recipe() -> str:
    head = [b"base-1", SUITE.encode(), MIRROR.encode(), " ".join(BASE_PACKAGES).encode()]
    return digest([*head, *(p.read_bytes() for p in extra_ca_certs())])


def build_base(env: Mapping[str, str], logdir: Path) -> None:
    if os.geteuid() != 0:
        raise ImageError(f"{BASE_IMAGE}: debootstrap needs root")
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if debootstrap is None:
        raise ImageError(f"{BASE_IMAGE}: no debootstrap (apt-get install debootstrap)")
    rootfs = Path(tempfile.mkdtemp(prefix="streamer-base-", dir="/var/tmp"))
    log = logdir / "base.log"
    try:
        cmd = [
            debootstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
            SUITE, str(rootfs), MIRROR,
        ]  # fmt: skip
        with open(log, "w") as out:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-10:]
            raise ImageError(f"debootstrap failed (log {log}):\n  " + "\n  ".join(tail))
        customize_rootfs(rootfs, log)
        import_rootfs(rootfs, env)
    finally:
        remove_rootfs(rootfs)


def customize_rootfs(rootfs: Path, log: Path) -> None:
    """The host's extra CAs, no recommended packages, no service starts, no apt caches."""
    certs = extra_ca_certs()
    if certs:
        target = rootfs / "usr/local/share/ca-certificates/host"
        target.mkdir(parents=True, exist_ok=True)
        for crt in certs:
            shutil.copy2(crt, target / crt.name)
        with open(log, "a") as out:
            subprocess.run(
                ["chroot", str(rootfs), "update-ca-certificates"],
                stdout=out, stderr=subprocess.STDOUT, check=True,
            )  # fmt: skip
    (rootfs / "etc/apt/apt.conf.d/90streamer").write_text(
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n'
    )
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# no service starts inside images\nexit 101\n")
    policy.chmod(0o755)
    for leftover in [
        *(rootfs / "var/cache/apt/archives").glob("*.deb"),
        rootfs / "var/log/bootstrap.log",
    ]:
        leftover.unlink(missing_ok=True)
    shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)


def import_rootfs(rootfs: Path, env: Mapping[str, str]) -> None:
    cli = shutil.which("docker")
    if cli is None:
        raise ImageError("no `docker` command on PATH")
    changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["bash"]',
        f"LABEL {LABEL}={base_recipe()}",
    ]
    args = [cli, "import", *(a for c in changes for a in ("--change", c)), "-", BASE_IMAGE]
    tar = subprocess.Popen(
        ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", "-", "."], stdout=subprocess.PIPE
    )
    try:
        proc = subprocess.run(
            args, stdin=tar.stdout, env={**os.environ, **env},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    finally:
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()
    if proc.returncode != 0 or tar.returncode != 0:
        raise ImageError(f"docker import of {BASE_IMAGE} failed: {proc.stderr.strip()[-300:]}")


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` (debootstrap mounts /proc and /sys in the target)."""
    prefix = str(path.resolve())
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            out.append(point)
    return out


def remove_rootfs(rootfs: Path) -> None:
    """Unmount what debootstrap may have left mounted, then delete; never delete through
    a mount that would not come off."""
    for point in sorted(mounts_under(rootfs), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    left = mounts_under(rootfs)
    if left:
        print(f"not removing {rootfs}: still mounted: {left}", file=sys.stderr)
        return
    shutil.rmtree(rootfs, ignore_errors=True)


# -------------------------------------------------------------------- kafka
def kafka_jars() -> Path:
    """The image's jars, resolved once by Maven into $STREAMER_HOME/kafka-image/<version>/libs."""
    version = kafka_version()
    target = streamer_home() / "kafka-image" / version / "libs"
    if (target / ".complete").exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ImageError("no `mvn` on PATH to resolve the Kafka image's jars")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="libs.", dir=target.parent))
    cmd = [
        mvn, "-B", "-q", "-Dstyle.color=never",
        *shlex.split(os.environ.get("STREAMER_MAVEN_ARGS", "")),
        "-f", str(REPO / "docker/kafka/pom.xml"), f"-Dkafka.version={version}",
        "dependency:copy-dependencies", f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not any(tmp.glob("kafka-tools-*.jar")):
        shutil.rmtree(tmp, ignore_errors=True)
        errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "ERROR" in ln]
        raise ImageError(
            f"Maven could not resolve the Kafka image's jars: {(errors or ['?'])[0][:300]}"
        )
    (tmp / ".complete").write_text(version)
    try:
        tmp.rename(target)
    except OSError:  # another process won the race; its copy is complete
        shutil.rmtree(tmp, ignore_errors=True)
    return target


KAFKA_FILES = ("Dockerfile", "run", "bin", "log4j2.properties", "tools-log4j2.properties")


def kafka_recipe(env: Mapping[str, str], jars: Path) -> str:
    names = sorted(p.name for p in jars.glob("*.jar"))
    parts = [b"kafka-1", kafka_version().encode(), image_id(BASE_IMAGE, env).encode()]
    return digest(
        [*parts, "\n".join(names).encode(), *tree_bytes(REPO / "docker/kafka", KAFKA_FILES)]
    )


def build_kafka(env: Mapping[str, str], logdir: Path, recipe: str, jars: Path) -> None:
    context = Path(tempfile.mkdtemp(prefix="streamer-kafka-context-"))
    try:
        for name in KAFKA_FILES:
            src = REPO / "docker/kafka" / name
            if src.is_dir():
                shutil.copytree(src, context / name)
            else:
                shutil.copy2(src, context / name)
        (context / "libs").mkdir()
        for jar in jars.glob("*.jar"):
            try:
                os.link(jar, context / "libs" / jar.name)
            except OSError:
                shutil.copy2(jar, context / "libs" / jar.name)
        run_build(
            ["--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
             "--label", f"{LABEL}={recipe}", "-t", KAFKA_IMAGE, str(context)],
            KAFKA_IMAGE, env, logdir / "kafka.log",
        )  # fmt: skip
    finally:
        shutil.rmtree(context, ignore_errors=True)


# ----------------------------------------------------------------- streamer
def streamer_recipe(env: Mapping[str, str]) -> str:
    parts = [b"streamer-1", image_id(BASE_IMAGE, env).encode()]
    return digest([*parts, *tree_bytes(REPO, STREAMER_INPUTS)])


def build_streamer(env: Mapping[str, str], logdir: Path, recipe: str) -> None:
    run_build(
        ["--network", "host", "-f", str(REPO / "docker/Dockerfile"),
         "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}",
         "--label", f"{LABEL}={recipe}", "-t", STREAMER_IMAGE, str(REPO)],
        STREAMER_IMAGE, env, logdir / "streamer.log",
    )  # fmt: skip


# ---------------------------------------------------------------------- all
def ensure_images(
    env: Mapping[str, str] | None = None, *, force: bool = False, log: IO[str] = sys.stderr
) -> list[Built]:
    """Build each image that is missing or out of date (all with ``force``), in order."""
    env = dict(os.environ if env is None else env)
    logdir = streamer_home() / "images"
    logdir.mkdir(parents=True, exist_ok=True)
    out: list[Built] = []

    def step(image: str, recipe: str, build: Callable[[], None]) -> None:
        started = time.monotonic()
        if not force and recipe_of(image, env) == recipe:
            out.append(Built(image, "up to date", 0.0, size_mb(image, env)))
        else:
            print(f"building {image} ...", file=log, flush=True)
            build()
            out.append(Built(image, "built", time.monotonic() - started, size_mb(image, env)))
        print(out[-1].line(), file=log, flush=True)

    step(BASE_IMAGE, base_recipe(), lambda: build_base(env, logdir))
    jars = kafka_jars()
    recipe = kafka_recipe(env, jars)
    step(KAFKA_IMAGE, recipe, lambda: build_kafka(env, logdir, recipe, jars))
    srecipe = streamer_recipe(env)
    step(STREAMER_IMAGE, srecipe, lambda: build_streamer(env, logdir, srecipe))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.images", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--force", action="store_true", help="build all three again")
    args = parser.parse_args(argv)
    try:
        ensure_images(force=args.force)
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
