"""MQTT CONNECT with a password and the verified-password cache (gateway/services/devices/
passwords.py): the second CONNECT is answered from the proof, a lock or a credential reset
through the management API refuses the next CONNECT, and a wrong password is never
remembered."""

from __future__ import annotations

import re

import httpx

from gateway.testing.mqtt_bytes import gen_connack, gen_connect, gen_puback, gen_publish
from gateway.testing.server import TestGateway

PW = "correct-horse-battery-staple"
PW2 = "another-long-device-password"


async def cache_counts(api: httpx.AsyncClient, gw: TestGateway) -> dict[str, int]:
    r = await api.get(f"http://127.0.0.1:{gw.ports['api']}/metrics")
    assert r.status_code == 200
    found = re.findall(r'^gateway_password_cache_total\{outcome="(\w+)"\} (\S+)$', r.text, re.M)
    return {k: int(float(v)) for k, v in found}


async def test_password_connects_hit_the_cache_and_resets_take_effect(gw, mqtt):
    async def connect(password: str, code: int) -> None:
        async with mqtt() as c:
            await c.send(gen_connect("", username="pw-m", password=password))
            await c.expect(gen_connack(code))
            if code == 0:
                await c.send(gen_publish("$resource/data_in", password[:4], qos=1, mid=1))
                await c.expect(gen_puback(1))

    async with httpx.AsyncClient(base_url=gw.api, headers=gw.admin_headers) as api:
        one = "/connectors/demo/devices/pw-m"
        r = await api.post(
            "/connectors/demo/devices",
            json={"identity": "pw-m", "auth": {"type": "password", "key": PW}},
        )
        assert r.status_code in (200, 201), r.text
        await connect(PW, 0)
        await connect(PW, 0)
        await connect(PW2, 4)
        assert await cache_counts(api, gw) == {"hit": 1, "miss": 2}

        assert (await api.patch(one, json={"locked": True})).status_code == 200
        await connect(PW, 5)
        assert (await api.patch(one, json={"locked": False})).status_code == 200
        await connect(PW, 0)

        assert (await api.patch(one, json={"reprovision": True})).status_code == 200
        await connect(PW, 4)
        assert (await api.delete(one)).status_code == 204
        r = await api.post(
            "/connectors/demo/devices",
            json={"identity": "pw-m", "auth": {"type": "password", "key": PW2}},
        )
        assert r.status_code in (200, 201), r.text
        await connect(PW, 4)
        await connect(PW2, 0)
        assert (await gw.services.state.get("demo", "pw-m"))["data_in"].reported == PW2[:4]
