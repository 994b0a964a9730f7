"""TLS policies: which protocol versions and cipher suites a connector's devices may use.

A connector picks one of three policies in its settings (``tls``, tagged by ``policy``; the
lists and the reasons behind them are in docs/decisions.md "TLS policies"):

``{"policy": "default"}``
    TLS 1.2 and 1.3; in TLS 1.2 only ECDHE key exchange (forward secrecy) with AEAD
    ciphers.  What every device stack of the last decade speaks.
``{"policy": "legacy"}``
    TLS 1.0 to 1.3; adds the CBC suites (ECDHE first, then RSA key exchange) that devices
    without AEAD or ECDHE support need.  Nothing with a known break (RC4, 3DES, export,
    anonymous, NULL) is in it.
``{"policy": "custom", "min_version": "1.1", "ciphers": [...]}``
    The operator's minimum version and TLS 1.0-1.2 suites, in the operator's order, chosen
    by name from the legacy list (every name there is vetted, so any schema-valid custom
    policy is a usable one: the OpenAPI schema enumerates the names).  TLS 1.3 always uses
    the three standard AEAD suites.

Every policy is applied in **server order**: the server picks the first suite of its own
list that the client offers (``SSL_OP_CIPHER_SERVER_PREFERENCE``), except that a client
which puts ChaCha20-Poly1305 first gets it (``SSL_OP_PRIORITIZE_CHACHA``: small devices
without AES hardware are several times faster with it).  How the policy reaches a handshake
is explained in :mod:`gateway.tls.contexts`.

This module only describes policies; it opens no connection.
"""

from __future__ import annotations

import typing
from typing import Annotated, Literal

import msgspec
from OpenSSL import SSL

__all__ = [
    "CIPHERS_DEFAULT",
    "CIPHERS_LEGACY",
    "CIPHERS_TLS13",
    "MIN_VERSIONS",
    "CipherName",
    "CustomPolicy",
    "DefaultPolicy",
    "LegacyPolicy",
    "PolicyName",
    "TlsPolicy",
    "TlsVersion",
]

PolicyName = Literal["default", "legacy", "custom"]
TlsVersion = Literal["1.0", "1.1", "1.2", "1.3"]

# OpenSSL's protocol version numbers (the wire values: 0x0301 is TLS 1.0).
MIN_VERSIONS: dict[TlsVersion, int] = {
    "1.0": SSL.TLS1_VERSION,
    "1.1": SSL.TLS1_1_VERSION,
    "1.2": SSL.TLS1_2_VERSION,
    "1.3": SSL.TLS1_3_VERSION,
}

# The legacy list, in its server order (OpenSSL's names), which is also every name a custom
# policy may use.  The first six are the default list: Mozilla's "intermediate" TLS 1.2
# suites, AES-128-GCM first (fast wherever AES hardware exists, and 128-bit security is the
# level of the P-256 keys anyway), then AES-256-GCM, then ChaCha20-Poly1305 (chosen first
# anyway by clients that prefer it, see the module docstring); ECDSA before RSA: the
# gateway's own keys are P-256, a connector may bring an RSA certificate.  Then Mozilla's
# "old" additions without DHE (it needs our own DH parameters and is slower than ECDHE for
# no device that lacks ECDHE) and without 3DES (64-bit blocks: Sweet32): the ECDHE CBC
# suites, then RSA key exchange.
CipherName = Literal[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-RSA-AES256-SHA384",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA256",
    "AES256-SHA256",
    "AES128-SHA",
    "AES256-SHA",
]
_LEGACY_NAMES: tuple[str, ...] = typing.get_args(CipherName)
_DEFAULT_COUNT = 6  # the forward-secret AEAD suites at the head of the list
CIPHERS_DEFAULT = ":".join(_LEGACY_NAMES[:_DEFAULT_COUNT])
CIPHERS_LEGACY = ":".join(_LEGACY_NAMES)

# TLS 1.3 suites, every policy: the three of RFC 8446 that OpenSSL enables, AES-128 first
# as above.  (The CCM suites are off in OpenSSL by default and we keep them off.)
CIPHERS_TLS13 = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

# OpenSSL 3 and later sign TLS 1.0/1.1 handshakes with SHA-1, which security level 1 and
# above refuse: a policy that admits them must run at level 0 (docs/decisions.md).
_SECLEVEL_0 = "@SECLEVEL=0"


class _Policy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="policy"):
    """What every policy answers.  Immutable and comparable: contexts are cached by it."""

    @property
    def name(self) -> PolicyName:
        tag: PolicyName = self.__struct_config__.tag  # type: ignore[assignment]
        return tag

    @property
    def min_version_number(self) -> int:
        """The lowest protocol version (OpenSSL number) this policy accepts."""
        return SSL.TLS1_2_VERSION

    def names(self) -> tuple[str, ...]:
        """The TLS 1.0-1.2 suites, in server order."""
        return _LEGACY_NAMES[:_DEFAULT_COUNT]

    def cipher_string(self) -> str:
        """The OpenSSL cipher string for TLS 1.0-1.2, security level included."""
        ciphers = ":".join(self.names())
        if self.min_version_number < SSL.TLS1_2_VERSION:
            ciphers += ":" + _SECLEVEL_0
        return ciphers

    def cipher_names(self) -> list[str]:
        """The TLS 1.0-1.2 suites OpenSSL selects for this policy, in server order (a
        check that every name is known to the OpenSSL we run on)."""
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        ctx.set_cipher_list(self.cipher_string().encode("ascii"))
        names = SSL.Connection(ctx, None).get_cipher_list()
        return [name for name in names if not name.startswith("TLS_")]  # TLS 1.3 ones


class DefaultPolicy(_Policy, frozen=True, tag="default"):
    """TLS 1.2+, forward-secret AEAD suites only."""


class LegacyPolicy(_Policy, frozen=True, tag="legacy"):
    """TLS 1.0+, the default suites then CBC and RSA key exchange ones."""

    @property
    def min_version_number(self) -> int:
        return SSL.TLS1_VERSION

    def names(self) -> tuple[str, ...]:
        return _LEGACY_NAMES


class CustomPolicy(_Policy, frozen=True, tag="custom"):
    """The operator's minimum version and suites (from the legacy list, in their order;
    without ``ciphers`` the default list)."""

    min_version: TlsVersion = "1.2"
    ciphers: Annotated[list[CipherName], msgspec.Meta(min_length=1, max_length=64)] | None = None

    @property
    def min_version_number(self) -> int:
        return MIN_VERSIONS[self.min_version]

    def names(self) -> tuple[str, ...]:
        if self.ciphers is None:
            return super().names()
        return tuple(dict.fromkeys(self.ciphers))  # repeated names once, first place kept


TlsPolicy = DefaultPolicy | LegacyPolicy | CustomPolicy
