"""Secrets at rest: AES-256-GCM under the node's secret key, a file in the data directory.

What is sealed with it: integration configuration values whose parameter is ``format:
password`` (and so the basic-auth and OAuth2 client secrets), and connectors' TLS server
private keys (``pki.server_key``).  The key lives in ``DIR/secrets.key`` (mode 0600,
created on first use), apart from the database, so a copied ``gateway.db`` (or its WAL)
alone reveals nothing.  Each ciphertext is bound to where it belongs through the AEAD's
associated data (the *context*: connector, integration and parameter, or connector and
setting): a value pasted into another row does not decrypt.

Release 0.1.0 called the same file ``integrations.key`` (it sealed integration secrets
only); :meth:`SecretBox.from_data_dir` renames it on first use, so the secrets it sealed
keep decrypting.

Format of a stored value: ``"v1:" + urlsafe_b64(nonce(12) || ciphertext+tag)``.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.datadir import write_file_atomic

__all__ = ["KEY_FILE", "LEGACY_KEY_FILE", "SecretBox"]

KEY_FILE = "secrets.key"
LEGACY_KEY_FILE = "integrations.key"  # the same key, as release 0.1.0 named it
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce; random per value (far below the 2**32 limit)
PREFIX = "v1:"


class SecretBox:
    """Encrypts and decrypts secrets at rest.  Holds the key, never logs it."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("the node secret key must be 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> SecretBox:
        """Load ``DIR/secrets.key``, creating it (0600, exclusive) if absent; a 0.1.0
        ``DIR/integrations.key`` becomes it (renamed, so both names never disagree)."""
        path = data_dir / KEY_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            legacy = data_dir / LEGACY_KEY_FILE
            try:
                os.rename(legacy, path)  # atomic; replaces nothing (path does not exist)
            except FileNotFoundError:
                pass  # no legacy key (or another process renamed it: read what it left)
            else:
                os.chmod(path, 0o600)
                return cls.from_data_dir(data_dir)
            if path.exists():
                return cls.from_data_dir(data_dir)
            data_dir.mkdir(parents=True, exist_ok=True)
            key = secrets.token_bytes(KEY_BYTES)
            try:
                # whole or not at all, fsynced: a key lost in a crash would orphan every
                # secret, and an empty one left by a full disk would stop every start
                write_file_atomic(path, base64.b64encode(key) + b"\n", exclusive=True)
            except FileExistsError:  # another process won the race: use its key
                return cls.from_data_dir(data_dir)
            return cls(key)
        return cls(base64.b64decode(raw.strip()))

    @staticmethod
    def is_sealed(value: str) -> bool:
        """Whether ``value`` has the shape of a sealed secret (not whether it decrypts)."""
        return value.startswith(PREFIX)

    def encrypt(self, plaintext: str, *, context: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def decrypt(self, token: str, *, context: str) -> str:
        """Raise ``ValueError`` when the value was not sealed by this key for ``context``."""
        if not token.startswith(PREFIX):
            raise ValueError("not an encrypted secret")
        raw = base64.urlsafe_b64decode(token[len(PREFIX) :])
        try:
            return self._aead.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()
            ).decode()
        except InvalidTag:
            raise ValueError("secret does not decrypt with this node's key") from None
