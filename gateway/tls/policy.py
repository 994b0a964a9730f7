"""TLS policies: which protocol versions and cipher suites a connector's devices may use.

A connector picks one of three policies in its settings (``tls.policy``; the lists and the
reasons behind them are in docs/decisions.md "TLS policies"):

``default``
    TLS 1.2 and 1.3; in TLS 1.2 only ECDHE key exchange (forward secrecy) with AEAD
    ciphers.  What every device stack of the last decade speaks.
``legacy``
    TLS 1.0 to 1.3; adds the CBC suites (ECDHE first, then RSA key exchange) that devices
    without AEAD or ECDHE support need.  Nothing with a known break (RC4, 3DES, export,
    anonymous, NULL) is in it.
``custom``
    The operator's minimum version and OpenSSL cipher string (for TLS 1.0-1.2; TLS 1.3
    always uses the three standard AEAD suites).  :meth:`TlsPolicy.check` refuses strings
    that select nothing or select a broken cipher.

Every policy is applied in **server order**: the server picks the first suite of its own
list that the client offers (``SSL_OP_CIPHER_SERVER_PREFERENCE``), except that a client
which puts ChaCha20-Poly1305 first gets it (``SSL_OP_PRIORITIZE_CHACHA``: small devices
without AES hardware are several times faster with it).  How the policy reaches a handshake
is explained in :mod:`gateway.tls.contexts`.

This module only describes and checks policies; it opens no connection.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from OpenSSL import SSL

__all__ = [
    "CIPHERS_DEFAULT",
    "CIPHERS_LEGACY",
    "CIPHERS_TLS13",
    "MIN_VERSIONS",
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

# Mozilla's "intermediate" TLS 1.2 suites, in our server order: AES-128-GCM (fast wherever
# AES hardware exists, 128-bit security is the target of the P-256 keys anyway), then
# AES-256-GCM, then ChaCha20-Poly1305 (chosen first anyway by clients that prefer it, see
# the module docstring).  ECDSA before RSA: the gateway's own keys are P-256, a connector
# may bring an RSA certificate.
CIPHERS_DEFAULT = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)

# Mozilla's "old" list without DHE (it needs our own DH parameters and is slower than ECDHE
# for no device that lacks ECDHE) and without 3DES (64-bit blocks: Sweet32).  Forward-secret
# suites first, RSA key exchange last; the AEAD suites stay in front so a TLS 1.2 client of
# a legacy connector gets what the default policy would give it.
CIPHERS_LEGACY = (
    CIPHERS_DEFAULT + ":"
    "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:"
    "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:"
    "ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:"
    "ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA:"
    "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:AES256-SHA256:AES128-SHA:AES256-SHA"
)

# TLS 1.3 suites, every policy: the three of RFC 8446 that OpenSSL enables, AES-128 first
# as above.  (The CCM suites are off in OpenSSL by default and we keep them off.)
CIPHERS_TLS13 = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

# OpenSSL 3 and later sign TLS 1.0/1.1 handshakes with SHA-1, which security level 1 and
# above refuse: a policy that admits them must run at level 0 (docs/decisions.md).
_SECLEVEL_0 = "@SECLEVEL=0"

# Cipher-name fragments that mark a suite with a known break or without authentication:
# NULL encryption, anonymous key exchange (no certificate: anyone in the middle can answer),
# export grade, RC4, (3)DES (64-bit blocks), MD5 MACs.  The PSK and SRP families that
# OpenSSL's ``DEFAULT`` contains are not refused: without a PSK or SRP callback, which the
# gateway never sets, they cannot be negotiated.
_BROKEN = ("NULL", "ADH", "AECDH", "EXP", "RC4", "DES", "MD5", "ANON")
_MAX_CIPHER_STRING = 4096  # characters; OpenSSL's own lists are far shorter


class TlsPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A connector's TLS policy (connector settings ``tls``).

    ``min_version`` and ``ciphers`` belong to ``custom`` only; ``custom`` without them means
    TLS 1.2 and the default list.  Immutable and comparable: contexts are cached by it.
    """

    policy: PolicyName = "default"
    min_version: TlsVersion | None = None
    ciphers: str | None = None  # OpenSSL cipher string, TLS 1.0-1.2 suites

    def check(self) -> None:
        """Raise ``ValueError`` (with a sentence naming the field) unless OpenSSL accepts
        the policy and it selects no broken suite.  Built-in policies always pass."""
        if self.policy != "custom":
            if self.min_version is not None or self.ciphers is not None:
                raise ValueError(
                    f"tls.min_version and tls.ciphers belong to the custom policy, "
                    f"not {self.policy!r}"
                )
            return
        if self.ciphers is not None and not self.ciphers.strip():
            raise ValueError("tls.ciphers must not be empty (omit it for the default list)")
        if self.ciphers is not None and (
            len(self.ciphers) > _MAX_CIPHER_STRING
            or not all(" " <= ch <= "~" for ch in self.ciphers)
        ):
            raise ValueError(
                f"tls.ciphers must be printable ASCII of at most {_MAX_CIPHER_STRING} characters"
            )
        names = self.cipher_names()
        broken = [name for name in names if any(part in name.upper() for part in _BROKEN)]
        if broken:
            more = f" and {len(broken) - 3} more" if len(broken) > 3 else ""
            raise ValueError(
                f"tls.ciphers selects broken or unauthenticated suites: "
                f"{', '.join(broken[:3])}{more}"
            )

    @property
    def min_version_number(self) -> int:
        """The lowest protocol version (OpenSSL number) this policy accepts."""
        if self.policy == "legacy":
            return SSL.TLS1_VERSION
        if self.policy == "custom" and self.min_version is not None:
            return MIN_VERSIONS[self.min_version]
        return SSL.TLS1_2_VERSION

    def cipher_string(self) -> str:
        """The OpenSSL cipher string for TLS 1.0-1.2, security level included."""
        if self.policy == "legacy":
            ciphers = CIPHERS_LEGACY
        elif self.policy == "custom" and self.ciphers is not None:
            ciphers = self.ciphers.strip()
        else:
            ciphers = CIPHERS_DEFAULT
        if self.min_version_number < SSL.TLS1_2_VERSION and "@SECLEVEL" not in ciphers:
            ciphers += ":" + _SECLEVEL_0
        return ciphers

    def cipher_names(self) -> list[str]:
        """The TLS 1.0-1.2 suites the policy selects, in server order (OpenSSL's names).

        Raises ``ValueError`` when OpenSSL selects none from the string.
        """
        ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        try:
            ctx.set_cipher_list(self.cipher_string().encode("ascii"))
        except (SSL.Error, UnicodeEncodeError):
            raise ValueError(
                f"tls.ciphers {self.ciphers!r} selects no cipher OpenSSL knows"
            ) from None
        names = SSL.Connection(ctx, None).get_cipher_list()
        return [name for name in names if not name.startswith("TLS_")]  # TLS 1.3 ones
