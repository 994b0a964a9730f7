"""Secrets at rest: AES-256-GCM with a key file in the data directory.

Configuration values whose parameter is ``format: password`` (and so the basic-auth secret)
are stored only as ciphertext.  The key lives in ``DIR/integrations.key`` (mode 0600,
created on first use), apart from the database, so a copied ``gateway.db`` alone reveals
nothing.  Each ciphertext is bound to where it belongs (connector, integration, parameter)
through the AEAD's associated data: a value pasted into another row does not decrypt.

Format of a stored value: ``"v1:" + urlsafe_b64(nonce(12) || ciphertext+tag)``.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KEY_FILE", "SecretBox"]

KEY_FILE = "integrations.key"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's standard nonce; random per value (far below the 2**32 limit)
PREFIX = "v1:"


class SecretBox:
    """Encrypts and decrypts configuration secrets.  Holds the key, never logs it."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("integration secret key must be 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> SecretBox:
        """Load ``DIR/integrations.key``, creating it (0600, exclusive) if absent."""
        path = data_dir / KEY_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            data_dir.mkdir(parents=True, exist_ok=True)
            key = secrets.token_bytes(KEY_BYTES)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process won the race: use its key
                return cls.from_data_dir(data_dir)
            with os.fdopen(fd, "wb") as fh:
                fh.write(base64.b64encode(key) + b"\n")
            return cls(key)
        return cls(base64.b64decode(raw.strip()))

    def encrypt(self, plaintext: str, *, context: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def decrypt(self, token: str, *, context: str) -> str:
        """Raise ``ValueError`` when the value was not sealed by this key for ``context``."""
        if not token.startswith(PREFIX):
            raise ValueError("not an encrypted integration secret")
        raw = base64.urlsafe_b64decode(token[len(PREFIX) :])
        try:
            return self._aead.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode()
            ).decode()
        except InvalidTag:
            raise ValueError("integration secret does not decrypt with this key") from None
