"""Quick version of ``scripts/probe mqtt``: every malformed-MQTT case of the catalogue on the
plain dev port and the MQTT/TLS port — closed at once, with the expected refusal bytes and
``disconnect`` reason in the live debug log; the process up and the canary device served
after each (docs/reliability.md, "Malformed MQTT")."""

from __future__ import annotations

import pytest

from gateway.testing.probes.catalogue import case_source, run_mqtt_case
from gateway.testing.probes.mqtt_cases import MAX_PACKET_SIZE, MqttCase, cases
from gateway.testing.probes.target import Probed, mgmt_client

CASES = list(enumerate(cases(MAX_PACKET_SIZE)))


def test_catalogue_is_well_formed() -> None:
    names = [c.name for _, c in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 80
    assert {c.stage for _, c in CASES} == {"first", "anonymous"}


@pytest.mark.parametrize("transport", ["plain", "tls"])
@pytest.mark.parametrize(("index", "case"), CASES, ids=[c.name for _, c in CASES])
async def test_case(probed: Probed, transport: str, index: int, case: MqttCase) -> None:
    async with mgmt_client(probed.target) as client:
        result = await run_mqtt_case(
            probed.target,
            client,
            probed.canary(),
            case,
            transport,
            source=case_source(1, transport, index),
            close_timeout=5.0,
            canary_protocols=("mqtt",),  # the protocol under attack (scripts/probe: both)
        )
    assert result.ok, result.problems
