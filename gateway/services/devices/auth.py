"""Device authentication (docs/protocol.md §3.1, §5): a token, a password, or a TLS client
certificate (pinned, or verified against the connector's CA).

A token lookup is one indexed read of the SHA-256 (every HTTP request does one); a password
is verified with scrypt off the Trio thread once, and then by the proof remembered in
``passwords.py`` (bound to the stored hash, which a credential reset changes).
"""

from __future__ import annotations

from gateway.errors import ConnAckCode, GatewayError, Refused
from gateway.model import CertClaim
from gateway.services.connectors import Registry
from gateway.services.credentials import hash_token, verify_password
from gateway.services.devices.model import DeviceAuth, locked_refusal, not_authenticated
from gateway.services.devices.passwords import PasswordCache
from gateway.services.devices.provisioning import provision_certificate
from gateway.store.api import EventMeta, Store

__all__ = ["authenticate_certificate", "authenticate_password", "authenticate_token"]


async def authenticate_token(store: Store, cid: str, token: str) -> DeviceAuth:
    """Token → device, or ``Refused`` (401 / CONNACK 4; locked: 403 / CONNACK 5)."""
    if not token:
        raise not_authenticated("no token")
    match = await store.device_by_token_hash(cid, hash_token(token))
    if match is None:
        raise not_authenticated("unknown token")
    if match.locked:
        raise locked_refusal()
    return DeviceAuth(cid, match.device_id, match.identity)


async def authenticate_password(
    store: Store, passwords: PasswordCache, cid: str, identity: str, password: str
) -> DeviceAuth:
    """Identity and password → device, or ``Refused`` as :func:`authenticate_token`.

    The row is read on every call, so a lock, a delete or a credential reset committed
    before the call refuses it whatever ``passwords`` remembers; a remembered proof is
    bound to the hash read here.  A password no proof matches pays scrypt (a wrong one
    every time: there is no negative cache)."""
    row = await store.device(cid, identity)
    if row is None or row.auth_type != "password" or not row.cred_hash:
        raise not_authenticated("unknown identity or not a password device")
    proof = passwords.proof(cid, identity, row.cred_hash, password)
    if not passwords.admits(cid, identity, proof):
        if not await verify_password(password, row.cred_hash):
            raise not_authenticated("wrong password")
        if row.locked:  # not remembered: the lock's event may already have come
            raise locked_refusal()
        # A reset committed during the scrypt leaves this proof bound to the old hash: it
        # can never match the new one, and the LRU bound ages it out.
        passwords.remember(cid, identity, proof)
    if row.locked:
        raise locked_refusal()
    return DeviceAuth(cid, row.id, identity)


async def authenticate_certificate(
    store: Store, registry: Registry, cid: str, claim: CertClaim, *, ip: str | None, meta: EventMeta
) -> DeviceAuth:
    """Identity = certificate CN.  A known device must present its pinned certificate
    (or any certificate the connector's CA verified); an unknown one is provisioned on
    this first connection if the connector's rules allow it, pinning the certificate."""
    connector = registry.require(cid)
    try:
        connector.settings.identity_format.check(claim.cn)
    except GatewayError as exc:
        raise Refused(
            f"certificate CN: {exc.message}",
            reason="format_mismatch",
            http_status=403,
            connack=ConnAckCode.IDENTIFIER_REJECTED,
        ) from exc
    row = await store.device(cid, claim.cn)
    if row is not None and row.status == "provisioned" and not row.reprovision:
        if row.locked:
            raise locked_refusal()
        if claim.verified or row.cert_fp == claim.fingerprint:
            return DeviceAuth(cid, row.id, claim.cn)
        raise not_authenticated("certificate does not match the one pinned for this device")
    did = await provision_certificate(store, connector, claim, ip=ip, meta=meta)
    return DeviceAuth(cid, did, claim.cn)
