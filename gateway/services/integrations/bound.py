"""One integration ready to call (:class:`Bound`): its parsed document, settings, decrypted
configuration and OAuth2 tokens, built by the service and handed to probes and jobs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx
import trio

from gateway.services.integrations import storage
from gateway.services.integrations.models import IntegrationSettings
from gateway.services.integrations.oauth2 import TokenCache, fetch_token, token_url
from gateway.services.integrations.operations import (
    CallResult,
    UpstreamError,
    authorize,
    execute,
    find_operation,
    make_client,
    prepare,
)
from gateway.services.integrations.operations import base_url as make_base_url
from gateway.services.integrations.validate import SecurityUse, Spec

__all__ = ["Bound"]

log = logging.getLogger(__name__)


class Bound:
    """One integration ready to call: parsed document, settings, decrypted configuration.

    ``call("assetState", id="p-1")`` is the Python face of an operation (Murano's
    ``MyService.assetState({id=…})``).  OAuth2 tokens are obtained, cached and renewed here
    (:mod:`~gateway.services.integrations.oauth2`); they die with this object, which the
    service replaces whenever the integration's record changes.
    """

    __slots__ = (
        "_config",
        "_token_lock",
        "_tokens",
        "allow_http",
        "connector_id",
        "name",
        "settings",
        "spec",
        "updated",
    )

    def __init__(
        self,
        rec: storage.StoredIntegration,
        spec: Spec,
        config: dict[str, Any],
        settings: IntegrationSettings,
    ) -> None:
        self.connector_id = rec.connector_id
        self.name = rec.name
        self.updated = rec.updated
        self.allow_http = rec.allow_http
        self.spec = spec
        self.settings = settings
        self._config = config
        self._tokens = TokenCache()
        self._token_lock = trio.Lock()  # one token request at a time; the others reuse it

    def __repr__(self) -> str:
        return f"Bound({self.connector_id}/{self.name})"

    def base(self) -> str:
        return make_base_url(self.spec, host=self.settings.host, allow_http=self.allow_http)

    def secrets(self) -> tuple[str, ...]:
        """Every value to redact: secret configuration values and the OAuth2 tokens held."""
        return (
            tuple(
                str(self._config[n])
                for n, p in self.spec.config_params.items()
                if p.secret and self._config.get(n)
            )
            + self._tokens.tokens()
        )

    async def _token(self, client: httpx.AsyncClient, use: SecurityUse) -> str:
        """A usable token for ``use`` (scheme and scopes): the cached one, or a new one."""
        key = (use.scheme, use.scopes)
        token = self._tokens.get(key, trio.current_time())
        if token is not None:
            return token
        async with self._token_lock:
            started = trio.current_time()
            token = self._tokens.get(key, started)  # someone else may have just got one
            if token is not None:
                return token
            scheme = self.spec.security_schemes[use.scheme]
            url = token_url(scheme, self.spec, base=self.base(), host=self.settings.host)
            token, expires_in = await fetch_token(
                client,
                url,
                scheme,
                use.scopes,
                client_id=str(self._config[scheme.user_field or ""]),
                secret=str(self._config[scheme.secret_field or ""]),
                secrets=self.secrets(),
            )
            self._tokens.put(key, token, expires_in, started)
            log.info(
                "integration %s/%s: OAuth2 token for %s%s obtained (expires in %s)",
                self.connector_id,
                self.name,
                use.scheme,
                f" [{' '.join(use.scopes)}]" if use.scopes else "",
                "an unknown time" if expires_in is None else f"{expires_in:g} s",
            )
            return token

    async def call(
        self, operation: str, params: Mapping[str, Any] | None = None, /, **kwargs: Any
    ) -> CallResult:
        """Call ``operation`` with ``params`` (and/or keyword parameters).

        Raises ``NotFound`` (no such operation), ``ParameterInvalid`` / ``NotConfigured``
        (nothing was sent) or ``UpstreamError`` (sent; the API failed or answered outside
        the document).
        """
        op = find_operation(self.spec, operation)
        req = prepare(self.spec, op, {**(params or {}), **kwargs}, self._config, base=self.base())
        async with make_client(
            ca_bundle=self.settings.ca_bundle, timeout_s=self.settings.timeout_s
        ) as client:
            use = req.oauth2
            if use is None:
                return await execute(client, self.spec, op, req)
            token = await self._token(client, use)
            try:
                return await execute(client, self.spec, op, authorize(req, token))
            except UpstreamError as exc:
                if exc.status != 401:
                    raise
            # The API refused the token (expired early, revoked): renew it once.
            self._tokens.drop((use.scheme, use.scopes), token)
            log.info(
                "integration %s/%s: %s answered 401; renewing the OAuth2 token",
                self.connector_id,
                self.name,
                operation,
            )
            token = await self._token(client, use)
            return await execute(client, self.spec, op, authorize(req, token))
