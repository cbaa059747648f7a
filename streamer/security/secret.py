"""The cluster secret and the keys derived from it.

One secret per cluster authenticates the control plane, the data plane, the status
server and checkpoint manifests. It is never sent: peers prove they hold it (or a key
derived from it) by challenge-response, and files carry HMACs made with it.

Where it comes from, first match wins:

1. ``$STREAMER_CLUSTER_SECRET``: the secret itself, as hex (at least 32 hex digits);
2. ``$STREAMER_CLUSTER_SECRET_FILE``: a file holding that hex;
3. ``$STREAMER_HOME/cluster.secret`` (``~/.cache/streamer/cluster.secret``), generated
   on first use with 32 random bytes and mode 0600.

For several hosts, copy one file to each (or set the variable); every process of a
cluster must see the same secret.

Derived keys separate purposes, so a key handed to less trusted code cannot be used
for anything else: ``derive(secret, "task", job, task, attempt)`` is what a task
process receives instead of the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from streamer.errors import ConfigError

SECRET_ENV = "STREAMER_CLUSTER_SECRET"
SECRET_FILE_ENV = "STREAMER_CLUSTER_SECRET_FILE"
MIN_BYTES = 16


class SecretError(ConfigError):
    """The cluster secret is missing, unreadable or malformed."""


def _home() -> Path:
    env = os.environ.get("STREAMER_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "streamer"


def secret_path() -> Path:
    """The file the secret is read from (or generated into) when no variable gives it."""
    env = os.environ.get(SECRET_FILE_ENV)
    return Path(env).expanduser() if env else _home() / "cluster.secret"


def _parse(text: str, where: str) -> bytes:
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raise SecretError(f"the cluster secret in {where} is not hex; regenerate it") from None
    if len(raw) < MIN_BYTES:
        raise SecretError(
            f"the cluster secret in {where} has {len(raw)} bytes, fewer than {MIN_BYTES}; "
            "use `python -c 'import secrets; print(secrets.token_hex(32))'`"
        )
    return raw


def _generate(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = secrets.token_bytes(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(raw.hex() + "\n")
    try:
        os.link(tmp, path)  # fails if another process generated it first: use theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return _read(path)


def _read(path: Path) -> bytes:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SecretError(f"cannot read the cluster secret {path}: {exc.strerror}") from None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise SecretError(f"the cluster secret {path} is readable by others; chmod 600 {path}")
    return _parse(text, str(path))


def cluster_secret(*, create: bool = True) -> bytes:
    """This cluster's secret (see the module docstring for where it comes from).

    With ``create`` (the default), a missing default file is generated; a missing file
    named by ``$STREAMER_CLUSTER_SECRET_FILE`` is always an error, so a typo does not
    silently split a cluster in two.
    """
    env = os.environ.get(SECRET_ENV)
    if env:
        return _parse(env, f"${SECRET_ENV}")
    path = secret_path()
    if path.exists():
        return _read(path)
    if os.environ.get(SECRET_FILE_ENV) or not create:
        raise SecretError(
            f"no cluster secret at {path}; copy the cluster's secret file there "
            f"or set ${SECRET_ENV}"
        )
    return _generate(path)


def derive(key: bytes, purpose: str, *parts: object) -> bytes:
    """A key for one ``purpose`` (and identity ``parts``), derived from ``key`` by HMAC."""
    label = "\0".join([purpose, *(str(p) for p in parts)]).encode()
    return hmac.new(key, label, hashlib.sha256).digest()


def sign(key: bytes, data: bytes) -> str:
    """HMAC-SHA256 of ``data`` under ``key``, as hex."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def verify(key: bytes, data: bytes, signature: str) -> bool:
    """Whether ``signature`` is ``sign(key, data)``, compared in constant time."""
    return hmac.compare_digest(sign(key, data), signature)
