"""``GET /metrics``: the layers feed the counters (front door, MQTT, HTTP device API), and the
text is valid Prometheus exposition format as the reference parser (``prometheus_client``)
reads it: ``# HELP`` and ``# TYPE`` before every family's samples, label values escaped.

The device traffic is real and small: an HTTP activation and writes on the dev plain port,
raw MQTT 3.1.1 bytes (``gateway.testing.mqtt_bytes``) on the dev plain MQTT port, and TLS
handshakes with and without SNI on the multi-protocol port.  The expected deltas are exact:
this module's gateway serves nothing else.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.bus.api import MetricsSnapshot
from gateway.metrics import Metrics
from gateway.mgmt.exporter import NodeCollector, exposition
from gateway.testing.mqtt_bytes import (
    gen_connack,
    gen_connect,
    gen_disconnect,
    gen_puback,
    gen_publish,
)
from gateway.testing.server import TestGateway

Sample = tuple[str, frozenset[tuple[str, str]]]
SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")


def parse_exposition(text: str) -> dict[Sample, float]:
    """Every sample of ``text`` by (name, labels), after checking the format both ways:
    the reference parser accepts it, and each family's ``# HELP`` / ``# TYPE`` lines come
    before its first sample."""
    samples: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    assert text.endswith("\n")
    helped: set[str] = set()
    typed: set[str] = set()
    histograms: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split(" ")[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            typed.add(name)
            if kind == "histogram":
                histograms.add(name)
        else:
            m = SAMPLE_LINE.match(line)
            assert m is not None, line
            name = m.group(1)
            for suffix in ("_bucket", "_count", "_sum"):
                if name.removesuffix(suffix) in histograms:
                    name = name.removesuffix(suffix)
            assert name in helped, line
            assert name in typed, line
    return samples


def render_counters(m: Metrics, connectors: frozenset[str] | None = None) -> str:
    return exposition(NodeCollector(m, [], connectors=connectors)).decode()


def scrape(gw: TestGateway) -> dict[Sample, float]:
    r = httpx.get(f"http://127.0.0.1:{gw.ports['api']}/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_exposition(r.text)


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Raw:
    """A blocking raw-bytes socket client (this module's tests are synchronous)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def recv_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            assert chunk, f"closed after {self.buf!r}, expected {n} bytes"
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def expect_eof(self) -> None:
        while chunk := self.sock.recv(65536):
            self.buf += chunk


@contextmanager
def mqtt(gw: TestGateway) -> Iterator[Raw]:
    with socket.create_connection(("127.0.0.1", gw.ports["dev_mqtt"]), timeout=10) as sock:
        yield Raw(sock)


def activate(gw: TestGateway, identity: str) -> str:
    r = httpx.post(
        f"http://127.0.0.1:{gw.ports['dev_http']}/provision/activate",
        content=f"id={identity}",
        headers={
            "Host": gw.devmode_fqdn(),
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        },
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.text


def http_write(gw: TestGateway, token: str, body: str) -> int:
    r = httpx.post(
        f"http://127.0.0.1:{gw.ports['dev_http']}/onep:v1/stack/alias",
        content=body,
        headers={
            "Host": gw.devmode_fqdn(),
            "X-Exosite-CIK": token,
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        },
        timeout=10,
    )
    return r.status_code


def wait_gauge_zero(gw: TestGateway, **labels: str) -> dict[Sample, float]:
    """Connections close asynchronously (the gateway notices EOF): poll briefly."""
    deadline = time.monotonic() + 10
    while True:
        samples = scrape(gw)
        if value(samples, "gateway_connections", **labels) == 0:
            return samples
        assert time.monotonic() < deadline, (labels, samples)
        time.sleep(0.05)


def test_counters_move_with_device_traffic(gw: TestGateway) -> None:
    before = scrape(gw)
    token = activate(gw, "metrics-1")  # http in/out 1
    assert http_write(gw, token, "data_in=one") == 204  # 1 value written
    assert http_write(gw, "f" * 40, "data_in=two") == 401  # refused: not_authenticated

    with mqtt(gw) as c:
        c.sock.sendall(gen_connect("metrics-1", username="", password=token))
        assert c.recv_exactly(4) == gen_connack(0)
        # two QoS 1 publishes in one write: one read, one submission, two values
        c.sock.sendall(
            gen_publish("$resource/data_in", "a", qos=1, mid=1)
            + gen_publish("$resource/data_in", "b", qos=1, mid=2)
        )
        assert c.recv_exactly(8) == gen_puback(1) + gen_puback(2)
        during = scrape(gw)
        assert value(during, "gateway_connections", connector="demo", protocol="mqtt") == 1
        c.sock.sendall(gen_disconnect())
        c.expect_eof()
    with mqtt(gw) as c:
        c.sock.sendall(gen_connect("metrics-bad", username="", password="0" * 40))
        rc = c.recv_exactly(4)
        assert rc[:3] == gen_connack(0)[:3]
        assert rc[3] in (4, 5)
        c.expect_eof()

    request = f"GET /timestamp HTTP/1.1\r\nHost: {gw.fqdn()}\r\nConnection: close\r\n\r\n"
    tls_ctx = ssl.create_default_context(cafile=gw.ca)
    tls_ctx.set_alpn_protocols(["http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", gw.ports["tls"]), timeout=10) as sock,
        tls_ctx.wrap_socket(sock, server_hostname=gw.fqdn()) as tls,
    ):
        tls.sendall(request.encode())
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    no_sni = ssl.create_default_context(cafile=gw.ca)
    no_sni.check_hostname = False
    with (
        socket.create_connection(("127.0.0.1", gw.ports["tls"]), timeout=10) as sock,
        pytest.raises((ssl.SSLError, ConnectionError)),
    ):
        no_sni.wrap_socket(sock).close()

    after = wait_gauge_zero(gw, connector="demo", protocol="mqtt")
    after = wait_gauge_zero(gw, connector="demo", protocol="http")
    after = wait_gauge_zero(gw, connector="", protocol="http")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # HTTP: activate, write, refused write, /timestamp over TLS
    assert delta("gateway_packets_total", protocol="http", direction="in") == 4
    assert delta("gateway_packets_total", protocol="http", direction="out") == 4
    # MQTT in: CONNECT, 2 PUBLISH, DISCONNECT, the refused CONNECT; out: CONNACK, 2 PUBACK,
    # the refusing CONNACK
    assert delta("gateway_packets_total", protocol="mqtt", direction="in") == 5
    assert delta("gateway_packets_total", protocol="mqtt", direction="out") == 4
    assert delta("gateway_writes_total", protocol="http", connector="demo") == 1
    assert delta("gateway_writes_total", protocol="mqtt", connector="demo") == 2
    assert delta("gateway_refused_total", protocol="http", reason="not_authenticated") == 1
    assert delta("gateway_refused_total", protocol="mqtt", reason="not_authenticated") == 1
    assert delta("gateway_refused_total", protocol="tls", reason="no_sni") == 1
    assert delta("gateway_handshakes_total", outcome="ok") == 1
    assert delta("gateway_handshakes_total", outcome="failed") == 1
    # the services' own figures are there too, and the devices gauge saw the activation
    assert delta("gateway_devices") == 1
    assert value(after, "gateway_connectors") >= 1


def test_label_values_are_escaped() -> None:
    """Backslash, quote and newline in a label value survive the reference parser."""
    m = Metrics()
    nasty = 'a"b\\c\nd'
    m.refuse("tls", nasty)
    m.refuse("tls", nasty)
    m.write("mqtt", None, 3)
    text = render_counters(m)
    assert 'reason="a\\"b\\\\c\\nd"' in text
    samples = parse_exposition(text)
    assert value(samples, "gateway_refused_total", protocol="tls", reason=nasty) == 2
    assert value(samples, "gateway_writes_total", protocol="mqtt", connector="") == 3


def test_connection_gauge_pairs_open_and_close() -> None:
    m = Metrics()
    k1 = m.connection_opened("mqtt", "demo")
    k2 = m.connection_opened("mqtt", "demo")
    m.connection_closed(k1)
    samples = parse_exposition(render_counters(m))
    assert value(samples, "gateway_connections", protocol="mqtt", connector="demo") == 1
    m.connection_closed(k2)
    samples = parse_exposition(render_counters(m))
    assert (
        "gateway_connections",
        frozenset({("protocol", "mqtt"), ("connector", "demo")}),
    ) not in (samples)  # back to zero: the label set is gone


def test_histograms_and_process_metrics(gw: TestGateway) -> None:
    """prometheus_client's histograms (commit latency and group size kept by the store's
    writer, management API request durations) and process metrics are in the text."""
    activate(gw, "histo-1")  # at least one commit
    scrape(gw)  # at least one request observed before the next scrape
    samples = scrape(gw)
    for name in ("gateway_store_commit_duration_seconds", "gateway_store_batch_size"):
        count = value(samples, f"{name}_count")
        assert count >= 1, name
        assert value(samples, f"{name}_bucket", le="+Inf") == count
        buckets = sorted(
            (float(dict(labels)["le"]), v)
            for (n, labels), v in samples.items()
            if n == f"{name}_bucket"
        )
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert value(samples, "gateway_store_commit_duration_seconds_count") == value(
        samples, "gateway_store_commits_total"
    )
    assert value(samples, "gateway_store_batch_size_sum") == value(
        samples, "gateway_store_submissions_total"
    )
    assert (
        value(
            samples,
            "gateway_api_request_duration_seconds_count",
            method="GET",
            route="/metrics",
            status="200",
        )
        >= 1
    )
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_cpu_seconds_total") > 0


def test_deleted_connectors_leave_no_series() -> None:
    """A deleted connector's counters go (in the process and in the node's sum, where a
    worker's last snapshot may still carry them), and a connection gauge's label set goes
    when it is back to zero: series do not pile up for every connector ever made."""
    m = Metrics()
    m.write("mqtt", "gone", 5)
    m.write("mqtt", "kept", 2)
    m.connector_refusal("gone", "not_authenticated")
    key = m.connection_opened("mqtt", "gone")
    m.connection_closed(key)
    assert key not in m.connections
    worker = Metrics()  # a worker that has not yet heard of the deletion
    worker.write("http", "gone", 1)
    total = Metrics()
    MetricsSnapshot.of("worker-1", worker, mqtt_sessions=0, log_records=0).add_to(total)
    MetricsSnapshot.of("owner", m, mqtt_sessions=0, log_records=0).add_to(total)
    text = render_counters(total, connectors=frozenset({"kept"}))
    assert 'connector="gone"' not in text
    samples = parse_exposition(text)
    assert value(samples, "gateway_writes_total", protocol="mqtt", connector="kept") == 2
    m.retain_connectors({"kept"})
    assert [dict(k)["connector"] for k in m.writes] == ["kept"]
    assert not m.connector_refused
