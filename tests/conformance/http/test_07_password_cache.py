"""Password devices over HTTPS with the verified-password cache (gateway/services/devices/
passwords.py): later requests are answered from the proof (``/metrics`` counts hits), and
a credential reset, a lock or a delete through the management API refuses the next request
on the same keep-alive connection; a wrong password is never remembered."""

from __future__ import annotations

import base64
import re

import httpx

from gateway.testing.server import TestGateway

from .conftest import FORM, Client

ALIAS = "/onep:v1/stack/alias"
PW = "correct-horse-battery-staple"
PW2 = "another-long-device-password"


def basic(identity: str, password: str) -> tuple[str, str]:
    return (
        "Authorization",
        "Basic " + base64.b64encode(f"{identity}:{password}".encode()).decode(),
    )


async def cache_counts(api: httpx.AsyncClient, gw: TestGateway) -> dict[str, int]:
    r = await api.get(f"http://127.0.0.1:{gw.ports['api']}/metrics")
    assert r.status_code == 200
    found = re.findall(r'^gateway_password_cache_total\{outcome="(\w+)"\} (\S+)$', r.text, re.M)
    return {k: int(float(v)) for k, v in found}


async def write(c: Client, identity: str, password: str, value: str) -> int:
    r = await c.request(
        "POST", ALIAS, headers=[basic(identity, password), FORM], body=f"data_in={value}".encode()
    )
    return r.status


async def test_password_requests_hit_the_cache_and_resets_take_effect(gw: TestGateway) -> None:
    async with httpx.AsyncClient(base_url=gw.api, headers=gw.admin_headers) as api:
        one = "/connectors/demo/devices/pw-c"
        r = await api.post(
            "/connectors/demo/devices",
            json={"identity": "pw-c", "auth": {"type": "password", "key": PW}},
        )
        assert r.status_code in (200, 201), r.text
        c = await Client.tls(gw)
        for i in range(4):
            assert await write(c, "pw-c", PW, f"v{i}") == 204
        assert await cache_counts(api, gw) == {"hit": 3, "miss": 1}
        # wrong passwords pay scrypt each time and are refused each time
        for _ in range(2):
            assert await write(c, "pw-c", PW2, "no") == 401
        assert await cache_counts(api, gw) == {"hit": 3, "miss": 3}
        assert (await gw.services.state.get("demo", "pw-c"))["data_in"].reported == "v3"

        # lock: the next request is refused, unlock: served again from the proof
        assert (await api.patch(one, json={"locked": True})).status_code == 200
        assert await write(c, "pw-c", PW, "locked") == 403
        assert (await api.patch(one, json={"locked": False})).status_code == 200
        assert await write(c, "pw-c", PW, "v4") == 204

        # reset (credentials revoked), then provisioned again with another password
        assert (await api.patch(one, json={"reprovision": True})).status_code == 200
        assert await write(c, "pw-c", PW, "reset") == 401
        assert (await api.delete(one)).status_code == 204
        assert await write(c, "pw-c", PW, "deleted") == 401
        r = await api.post(
            "/connectors/demo/devices",
            json={"identity": "pw-c", "auth": {"type": "password", "key": PW2}},
        )
        assert r.status_code in (200, 201), r.text
        assert await write(c, "pw-c", PW, "old") == 401
        assert await write(c, "pw-c", PW2, "v5") == 204
        assert await write(c, "pw-c", PW2, "v6") == 204
        state = await gw.services.state.get("demo", "pw-c")
        assert state["data_in"].reported == "v6"
