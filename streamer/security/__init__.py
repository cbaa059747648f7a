"""Cluster security: the shared cluster secret and the keys derived from it
(DESIGN.md §10)."""

from streamer.security.secret import (
    SECRET_ENV,
    SECRET_FILE_ENV,
    SecretError,
    cluster_secret,
    derive,
    secret_path,
    sign,
    verify,
)

__all__ = [
    "SECRET_ENV",
    "SECRET_FILE_ENV",
    "SecretError",
    "cluster_secret",
    "derive",
    "secret_path",
    "sign",
    "verify",
]
