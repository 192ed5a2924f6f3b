"""CURVE key pairs and the certificate files that hold them (pyzmq's format).

``write_key_pair(name, directory)`` writes ``NAME.key`` (the public certificate, to hand
out) and ``NAME.key_secret`` (public and secret key, readable by its owner only), the
files ``zmq.auth.create_certificates`` writes and ``zmq.auth.load_certificate`` reads.
Every loading problem raises :class:`~zjobs.errors.KeyFileError` naming the file.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

from zjobs.errors import KeyFileError

__all__ = [
    "PUBLIC_SUFFIX",
    "SECRET_SUFFIX",
    "KeyPair",
    "check_key",
    "load_allowed_keys",
    "load_public_key",
    "write_key_pair",
]

log = logging.getLogger(__name__)

PUBLIC_SUFFIX = ".key"
"""Public certificate files end with this (the suffix pyzmq and czmq scan key folders for)."""

SECRET_SUFFIX = ".key_secret"
"""Secret certificate files end with this."""

StrPath = str | os.PathLike[str]


def check_key(key: bytes) -> bytes:
    """Return ``key`` if it is a Z85-encoded CURVE key (40 characters, 32 bytes decoded).

    Raises:
        ValueError: it is not.
    """
    if len(key) != 40:
        raise ValueError(f"a CURVE key is 40 Z85 characters, not {len(key)}")
    try:
        z85.decode(key)
    except (ValueError, KeyError, TypeError) as exc:  # z85 raises KeyError on a bad character
        raise ValueError("not a Z85-encoded CURVE key") from exc
    return key


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair, both keys Z85-encoded (40 ASCII bytes each)."""

    public: bytes
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_key(self.public)
        check_key(self.secret)
        if zmq.curve_public(self.secret) != self.public:
            raise ValueError("the public key does not belong to the secret key")

    @classmethod
    def generate(cls) -> KeyPair:
        """A new random key pair (for example an ephemeral client identity)."""
        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    @classmethod
    def load(cls, path: StrPath) -> KeyPair:
        """Load a key pair from a secret certificate file (``NAME.key_secret``).

        Logs a warning when the file is readable by other users.

        Raises:
            KeyFileError: the file is missing or malformed, holds only a public key, or
                its keys do not match.
        """
        public, secret = _read_certificate(path)
        if secret is None:
            raise KeyFileError(str(path), "holds no secret key (a public certificate? "
                                          f"the secret one ends with {SECRET_SUFFIX})")
        try:
            pair = cls(public, secret)
        except ValueError as exc:
            raise KeyFileError(str(path), str(exc)) from exc
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("secret key file %s is accessible by other users (mode %o); "
                        "chmod 600 it", path, stat.S_IMODE(mode))
        return pair


def _read_certificate(path: StrPath) -> tuple[bytes, bytes | None]:
    if os.path.isdir(path):
        raise KeyFileError(str(path), "is a directory, not a key file")
    if not os.path.exists(path):
        raise KeyFileError(str(path), "no such file")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise KeyFileError(str(path), exc.strerror or str(exc)) from exc
    except ValueError as exc:
        raise KeyFileError(str(path), "not a CURVE certificate (no public-key line)") from exc
    for what, key in (("public", public), ("secret", secret)):
        if key is not None:
            try:
                check_key(key)
            except ValueError as exc:
                raise KeyFileError(str(path), f"bad {what} key: {exc}") from exc
    return public, secret


def load_public_key(path: StrPath) -> bytes:
    """The public key in a certificate file (public ``NAME.key`` or secret ``NAME.key_secret``).

    Raises:
        KeyFileError: the file is missing or is not a CURVE certificate.
    """
    return _read_certificate(path)[0]


def load_allowed_keys(directory: StrPath) -> frozenset[bytes]:
    """The public keys of every ``*.key`` certificate in ``directory`` (pyzmq's convention).

    Raises:
        KeyFileError: the directory is missing or holds no ``.key`` file (an allow list
            that admits nobody is a mistake, not a policy), or one of its ``.key`` files is
            unusable (the error names that file).
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise KeyFileError(str(directory), "no such directory of allowed client keys")
    files = sorted(folder.glob("*" + PUBLIC_SUFFIX))
    if not files:
        raise KeyFileError(str(directory), f"no client keys (*{PUBLIC_SUFFIX}) in this "
                           "directory of allowed clients: nobody could connect (copy each "
                           f"client's NAME{PUBLIC_SUFFIX} there; see zjobs keygen)")
    return frozenset(load_public_key(file) for file in files)


def write_key_pair(name: str, directory: StrPath = ".", *,
                   overwrite: bool = False) -> tuple[Path, Path]:
    """Create a key pair and write ``NAME.key`` and ``NAME.key_secret`` (mode 0600) into
    ``directory`` (created if missing). Returns the (public, secret) file paths.

    The files are written by ``zmq.auth.create_certificates`` inside a private (0700)
    temporary folder and moved into place, so the secret is never readable by others.

    Raises:
        ValueError: ``name`` is empty or contains a path separator.
        KeyFileError: a file of that name exists and ``overwrite`` is false, or the
            directory cannot be created or written (the error names it and says why).
    """
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise ValueError(f"key name {name!r} must be a plain file name")
    folder = Path(directory)
    public_path = folder / (name + PUBLIC_SUFFIX)
    secret_path = folder / (name + SECRET_SUFFIX)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not overwrite:
            for path in (public_path, secret_path):
                if path.exists():
                    raise KeyFileError(str(path), "already exists (refusing to overwrite a "
                                       "key)")
        with tempfile.TemporaryDirectory(dir=folder, prefix=".zjobs-keygen-") as tmp:
            public_tmp, secret_tmp = zmq.auth.create_certificates(tmp, name)
            os.chmod(secret_tmp, 0o600)
            os.chmod(public_tmp, 0o644)
            os.replace(secret_tmp, secret_path)
            os.replace(public_tmp, public_path)
    except OSError as exc:
        raise KeyFileError(str(folder), f"cannot write key files there: "
                           f"{exc.strerror or exc}") from exc
    return public_path, secret_path
