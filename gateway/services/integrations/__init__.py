"""Cloud-to-cloud integrations: third-party REST APIs described by OpenAPI 2 documents,
their assets kept as devices (docs/protocol.md §6; docs/decisions.md, "Integrations").

Importing this package registers its tables (migration 100), so the composition root must
import it before the store opens.
"""

from __future__ import annotations

from gateway.services.integrations import storage as _storage  # registers the schema
from gateway.services.integrations.models import IntegrationSettings, RunReport
from gateway.services.integrations.service import (
    Bound,
    IntegrationService,
    integration_service,
    serve_integrations,
)
from gateway.services.integrations.validate import DocumentInvalid, Violation, parse_document

__all__ = [
    "Bound",
    "DocumentInvalid",
    "IntegrationService",
    "IntegrationSettings",
    "RunReport",
    "Violation",
    "integration_service",
    "parse_document",
    "serve_integrations",
]

del _storage
