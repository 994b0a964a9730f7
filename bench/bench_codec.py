"""Microbenchmarks of the compiled hot path against its pure-Python twin, same inputs.

Run: ``.venv/bin/python -m pytest bench/bench_codec.py -q -p no:cacheprovider
--benchmark-group-by=group --benchmark-columns=min,median,mean,ops``.  Compare the two rows
of each group; the claim to keep is "compiled decode >= 10x pure".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import msgspec
import pytest

from gateway._pure.dispatch import ResourceSpec
from gateway.testing import mqtt_bytes as mb

IMPLS = ["compiled", "pure"]
N = 1000
CONNECT = mb.gen_connect("bench", username="", password=b"t" * 40)


def _codec(impl: str) -> ModuleType:
    return importlib.import_module(
        "gateway._ext.mqtt_codec" if impl == "compiled" else "gateway._pure.mqtt_codec"
    )


def _dispatch(impl: str) -> ModuleType:
    return importlib.import_module(
        "gateway._ext.dispatch" if impl == "compiled" else "gateway._pure.dispatch"
    )


def _publishes(qos: int) -> bytes:
    """N PUBLISH packets of 50 bytes each on the wire."""
    topic = "$resource/data_in"  # 17 bytes
    payload_len = 50 - 2 - 2 - len(topic) - (2 if qos else 0)
    packets = [
        mb.gen_publish(topic, b"x" * payload_len, qos=qos, mid=(i % 65535) + 1 if qos else 0)
        for i in range(N)
    ]
    assert all(len(p) == 50 for p in packets)
    return CONNECT + b"".join(packets)


def _decode_all(codec: ModuleType, data: bytes) -> list[Any]:
    decoder = codec.Decoder()
    decoder.receive_data(data)
    events: list[Any] = decoder.events()
    return events


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("qos", [0, 1])
def test_decode_1000_publishes(benchmark: Any, impl: str, qos: int) -> None:
    benchmark.group = f"decode 1000 x 50-byte QoS{qos} PUBLISH"
    data = _publishes(qos)
    events = benchmark(_decode_all, _codec(impl), data)
    assert len(events) == N + 1


@pytest.mark.parametrize("impl", IMPLS)
def test_encode_1000_pubacks(benchmark: Any, impl: str) -> None:
    benchmark.group = "encode 1000 PUBACKs (coalesced)"
    pids = list(range(1, N + 1))
    out = benchmark(_codec(impl).encode_pubacks, pids)
    assert len(out) == 4 * N


@pytest.mark.parametrize("impl", IMPLS)
def test_encode_1000_pubacks_one_by_one(benchmark: Any, impl: str) -> None:
    benchmark.group = "encode 1000 PUBACKs (one call each)"
    encode: Callable[[int], bytes] = _codec(impl).encode_puback

    def run() -> int:
        return sum(len(encode(pid)) for pid in range(1, N + 1))

    assert benchmark(run) == 4 * N


SPECS = [
    ResourceSpec("data_in", "string"),
    ResourceSpec("temp", "number", (1, "0-100")),
    ResourceSpec("on", "boolean"),
]


@pytest.mark.parametrize("impl", IMPLS)
def test_dispatch_1000_resource_writes(benchmark: Any, impl: str) -> None:
    benchmark.group = "dispatch 1000 $resource/data_in writes"
    module = _dispatch(impl)
    table = module.ResourceTable(SPECS)
    dispatch = module.dispatch
    payload = b'{"001":21.5,"002":150}'

    def run() -> int:
        points: list[Any] = []
        rejected: list[Any] = []
        for i in range(N):
            dispatch(table, "$resource/data_in", payload, i, points, rejected)
        return len(points)

    assert benchmark(run) == N


@pytest.mark.parametrize("impl", IMPLS)
def test_dispatch_100_point_batch(benchmark: Any, impl: str) -> None:
    benchmark.group = "dispatch a 100-point $resource.batch"
    module = _dispatch(impl)
    table = module.ResourceTable(SPECS)
    entries = [
        {
            "timestamp": 1_700_000_000_000_000 + i,
            "values": {"data_in": '{"001":21.5}', "temp": i % 100, "on": True, "x": 1},
        }
        for i in range(25)
    ]
    payload = msgspec.json.encode(entries)

    def run() -> int:
        points: list[Any] = []
        module.dispatch(table, "$resource.batch", payload, 0, points, [])
        return len(points)

    assert benchmark(run) == 100
