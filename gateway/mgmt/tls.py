"""Management routes for the certificates the device ports serve, and their expiry metric.

``GET /api/v1/tls/certificates`` lists what a device can be served: the node's wildcard
certificate (``DIR/tls/server.pem``, for every connector without its own) and each
connector's own ``pki.server_cert``, with its TLS policy.  ``POST /api/v1/tls/reload``
re-reads the node certificate from disk (what SIGHUP does): new handshakes get it, live
connections keep theirs.  A connector's own certificate needs no reload: replacing it
through ``PATCH /api/v1/connectors/{cid}/settings`` takes effect on the next handshake.

:func:`certificate_expiry` is the ``/metrics`` family
``gateway_tls_certificate_expiry_timestamp_seconds`` (the earliest notAfter in each served
chain), computed at scrape time from the same list.
"""

from __future__ import annotations

import logging

import msgspec
import trio
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import BadRequest
from gateway.mgmt.common import Endpoint, json_response
from gateway.mgmt.exporter import Family
from gateway.services.bundle import Services
from gateway.tls.contexts import ServerContexts
from gateway.tls.pki import CertificateInfo, certificate_info
from gateway.tls.policy import PolicyName

__all__ = ["ServedCertificate", "ServedCertificates", "certificate_expiry", "endpoints"]

log = logging.getLogger(__name__)

BASE = "/api/v1/tls"
EXPIRY_METRIC = "gateway_tls_certificate_expiry_timestamp_seconds"


class ServedCertificate(msgspec.Struct, frozen=True):
    """A certificate chain a device port serves.  ``connector`` is null for the node's
    wildcard certificate; ``policy`` is the connector's TLS policy (null for the node's)."""

    connector: str | None
    policy: PolicyName | None
    certificate: CertificateInfo


class ServedCertificates(msgspec.Struct, frozen=True):
    items: list[ServedCertificate]
    next: str | None = None


def served_certificates(services: Services, tls: ServerContexts) -> list[ServedCertificate]:
    """The node's certificate, then every connector's own, by connector id.  A connector
    certificate that no longer parses is left out (it was checked when it was set)."""
    out = [ServedCertificate(None, None, tls.node_certificate())]
    for connector in services.registry.all():
        pem = connector.settings.pki.server_cert
        if not pem:
            continue
        try:
            info = certificate_info(pem)
        except ValueError:
            log.warning("connector %s: pki.server_cert does not parse", connector.id)
            continue
        out.append(ServedCertificate(connector.id, connector.settings.tls.name, info))
    return out


def certificate_expiry(services: Services, tls: ServerContexts) -> Family:
    """The expiry gauge; ``connector=""`` is the node's certificate."""
    return Family(
        EXPIRY_METRIC,
        "gauge",
        "Earliest notAfter (Unix time) in each served certificate chain; "
        'connector="" is the node\'s wildcard certificate.',
        [
            ({"connector": served.connector or ""}, served.certificate.not_after)
            for served in served_certificates(services, tls)
        ],
    )


def endpoints(services: Services, tls: ServerContexts) -> list[Endpoint]:
    async def list_certificates(request: Request) -> Response:
        return json_response(ServedCertificates(served_certificates(services, tls)))

    async def reload(request: Request) -> Response:
        try:
            info = await trio.to_thread.run_sync(tls.reload_server_cert)
        except (OSError, ValueError) as exc:
            raise BadRequest(f"server certificate not reloaded, the old one stays: {exc}") from None
        services.bus.publish_tls_reload()  # the other processes of a node that serve devices
        return json_response(ServedCertificate(None, None, info))

    t = "tls"
    return [
        Endpoint(
            "GET",
            f"{BASE}/certificates",
            list_certificates,
            "Certificates the device ports serve, with their expiry",
            t,
            "listCertificates",
            response=ServedCertificates,
            errors=(),
        ),
        Endpoint(
            "POST",
            f"{BASE}/reload",
            reload,
            "Re-read the node's server certificate from DIR/tls (as SIGHUP does)",
            t,
            "reloadServerCertificate",
            response=ServedCertificate,
            errors=(400,),
            description=(
                "Reads `DIR/tls/server.pem` (leaf first, then the chain) and "
                "`DIR/tls/server.key`.  New handshakes of connectors without their own "
                "certificate get it; established connections keep the certificate they "
                "were served.  When the files do not load or do not match, answers 400 "
                "and the old certificate stays."
            ),
        ),
    ]
