"""Cloud-to-cloud integrations: third-party REST APIs described by OpenAPI 2 documents,
their assets kept as devices (docs/protocol.md §6; docs/decisions.md, "Integrations").

The tables are the store's (``gateway/store/sqlite/migrations.py``); ``storage.py`` holds
this feature's store calls.
"""

from __future__ import annotations

from gateway.services.integrations.models import IntegrationSettings, RunReport
from gateway.services.integrations.service import (
    Bound,
    IntegrationService,
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
    "parse_document",
    "serve_integrations",
]
