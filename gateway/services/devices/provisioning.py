"""Provisioning (docs/protocol.md §5, §12 items 3, 11, 12): a device claims its identity by
activation (HTTP ``/provision/activate``, MQTT ``$provision``) or by presenting a TLS client
certificate on a connector that provisions that way.

The connector's rules that need no stored state (enabled, identity format, IP whitelist,
auth type) are checked here; the rest (whitelisted or presenter identity, locked, already
provisioned, activation window) is checked by the store's ``ActivateDevice`` handler in the
same transaction that provisions, so two devices racing for one identity cannot both win.
"""

from __future__ import annotations

from gateway.clock import now_us
from gateway.errors import ConnAckCode, GatewayError, Refused
from gateway.model import CertClaim
from gateway.services.connectors import Connector
from gateway.services.credentials import MIN_PASSWORD_LENGTH, hash_password, hash_token, new_token
from gateway.store.api import ActivateDevice, EventMeta, Store

__all__ = ["activate", "check_provisioning_allowed", "provision_certificate"]


def check_provisioning_allowed(connector: Connector, identity: str, ip: str | None) -> None:
    """Raise the refusal (403 / 400, CONNACK 5 / 2) unless ``connector`` lets ``identity``
    provision itself from ``ip``."""
    prov = connector.settings.provisioning
    if not prov.enabled:
        raise Refused(
            "provisioning is disabled for this connector",
            reason="provisioning_disabled",
            http_status=403,
            connack=ConnAckCode.NOT_AUTHORIZED,
        )
    try:
        connector.settings.identity_format.check(identity)
    except GatewayError as exc:
        raise Refused(
            exc.message,
            reason="format_mismatch",
            http_status=400,
            connack=ConnAckCode.IDENTIFIER_REJECTED,
        ) from exc
    if not prov.ip_whitelisting.permits(ip):
        raise Refused(
            f"provisioning from {ip} is not allowed",
            reason="ip_not_allowed",
            http_status=403,
            connack=ConnAckCode.NOT_AUTHORIZED,
        )


async def activate(
    store: Store,
    connector: Connector,
    identity: str,
    *,
    ip: str | None,
    meta: EventMeta,
    password: str | None = None,
) -> tuple[str | None, int]:
    """Provision ``identity``; returns (the new token or None in password mode, device id).

    Token mode returns the new token (the only time it exists in clear); password mode
    stores the device-chosen password.  Refusals: 404 not whitelisted, 409 already
    provisioned, 403 locked / IP not allowed / provisioning disabled, 400 identity outside
    the format or a short password.
    """
    prov = connector.settings.provisioning
    check_provisioning_allowed(connector, identity, ip)
    token: str | None = None
    if prov.auth_type == "token":
        token = new_token()
        cred_hash = hash_token(token)
    elif prov.auth_type == "password":
        if password is None or len(password) < MIN_PASSWORD_LENGTH:
            raise Refused(
                f"a device password must have at least {MIN_PASSWORD_LENGTH} characters",
                reason="bad_password",
                http_status=400,
            )
        cred_hash = await hash_password(password)
    else:
        raise Refused(
            "this connector provisions devices by TLS client certificate",
            reason="certificate_required",
            http_status=400,
        )
    (did,) = await store.write(
        [
            ActivateDevice(
                connector.id,
                identity,
                prov.auth_type,
                prov.presenter_identity,
                meta,
                now_us(),
                cred_hash=cred_hash,
                ip=ip,
            )
        ]
    )
    assert isinstance(did, int)
    return token, did


async def provision_certificate(
    store: Store, connector: Connector, claim: CertClaim, *, ip: str | None, meta: EventMeta
) -> int:
    """Provision the certificate's CN on its first connection, pinning the certificate.
    Returns the device id."""
    check_provisioning_allowed(connector, claim.cn, ip)
    (did,) = await store.write(
        [
            ActivateDevice(
                connector.id,
                claim.cn,
                "certificate",
                connector.settings.provisioning.presenter_identity,
                meta,
                now_us(),
                cert_fp=claim.fingerprint,
                ip=ip,
            )
        ]
    )
    assert isinstance(did, int)
    return did
