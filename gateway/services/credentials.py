"""Device credentials: tokens and passwords are stored only as hashes.

Tokens are 160 random bits (40 lowercase hex characters, docs/protocol.md §2.2), so a plain
SHA-256 is enough to make a stolen database useless and keeps the lookup at connect an
indexed equality match.  Device-chosen passwords can be weak, so they get scrypt with a
per-password salt; verification costs a few milliseconds and runs off the Trio thread.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import trio

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "hash_password",
    "hash_token",
    "new_token",
    "verify_password",
]

MIN_PASSWORD_LENGTH = 20  # Murano's rule for device passwords
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**13, 8, 1  # ~10 ms on one core: a storm stays bounded


def new_token() -> str:
    return secrets.token_hex(20)


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )


def hash_password_sync(password: str) -> str:
    salt = secrets.token_bytes(16)
    return f"scrypt:{salt.hex()}:{_scrypt(password, salt).hex()}"


async def hash_password(password: str) -> str:
    return await trio.to_thread.run_sync(hash_password_sync, password)


async def verify_password(password: str, stored: str) -> bool:
    try:
        kind, salt_hex, digest_hex = stored.split(":")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    got = await trio.to_thread.run_sync(_scrypt, password, bytes.fromhex(salt_hex))
    return hmac.compare_digest(got, bytes.fromhex(digest_hex))
