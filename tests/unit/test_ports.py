"""Ports chosen for servers before they start come from outside the kernel's ephemeral
range, where no outgoing connection can take them between the choice and the bind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gateway.testing import ports
from gateway.testing.ports import free_ports


def test_free_ports_are_distinct_bindable_and_not_ephemeral() -> None:
    lo, hi = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = free_ports(20)
    assert len(set(ports)) == 20
    for port in ports:
        assert not lo <= port <= hi, port
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_taken_port_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The candidate tried first is taken (a listener holds it): the next one is handed out."""
    (port,) = free_ports(1)
    with socket.socket() as held:
        held.bind(("127.0.0.1", port))
        held.listen()

        def taken_first(pool: list[int], k: int) -> list[int]:
            return [port, *(p for p in pool if p != port)]

        monkeypatch.setattr(ports.random, "sample", taken_first)
        (got,) = free_ports(1)
        assert got != port
