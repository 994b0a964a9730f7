"""Listener behaviour on 127.0.0.1: dev plain ports, graceful drain, accept back-off."""

from __future__ import annotations

import logging
import os
import resource
from pathlib import Path

import pytest
import trio

from gateway.model import Transport
from gateway.testing.tlsclient import CONNACK_ACCEPTED, mqtt_connect_bytes, start_gateway


async def test_dev_plain_ports(nursery: trio.Nursery, tmp_path: Path) -> None:
    gw = await start_gateway(
        nursery,
        tmp_path,
        tls_port=None,
        mqtt_tls_port=None,
        dev_http_port=0,
        dev_mqtt_port=0,
        dev_default_connector="demo",
    )
    assert set(gw.ports) == {"dev_http", "dev_mqtt"}
    mqtt = await trio.open_tcp_stream("127.0.0.1", gw.ports["dev_mqtt"])
    await mqtt.send_all(mqtt_connect_bytes())
    assert await mqtt.receive_some(4) == CONNACK_ACCEPTED
    await mqtt.aclose()
    http = await trio.open_tcp_stream("127.0.0.1", gw.ports["dev_http"])
    await http.send_all(b"GET / HTTP/1.1\r\nHost: demo.devmode-m2.localhost\r\n\r\n")
    response = b""
    while chunk := await http.receive_some():
        response += chunk
    await http.aclose()
    assert response.endswith(b"http None None\n")
    (_, mqtt_info), (_, http_info) = gw.recorder.seen
    assert (mqtt_info.transport, mqtt_info.connector_id) == (Transport.DEV_MQTT, "demo")
    assert (http_info.transport, http_info.connector_id) == (Transport.DEV_HTTP, None)
    assert not mqtt_info.tls
    gw.scope.cancel()


async def test_graceful_shutdown_drains_sessions(nursery: trio.Nursery, tmp_path: Path) -> None:
    """Cancel → no new connections; live sessions read EOF and end well before the grace."""
    gw = await start_gateway(
        nursery, tmp_path, tls_port=None, mqtt_tls_port=None, dev_mqtt_port=0, shutdown_grace_s=5.0
    )
    live = await trio.open_tcp_stream("127.0.0.1", gw.ports["dev_mqtt"])
    await live.send_all(mqtt_connect_bytes())
    assert await live.receive_some(4) == CONNACK_ACCEPTED
    start = trio.current_time()
    gw.scope.cancel()
    with trio.fail_after(3):
        assert await live.receive_some(10) == b""  # the session ended on the drain EOF
    assert trio.current_time() - start < 3
    await live.aclose()
    await trio.sleep(0.05)
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", gw.ports["dev_mqtt"])


def _lowest_free_fd() -> int:
    used = {int(name) for name in os.listdir("/proc/self/fd")}
    fd = 0
    while fd in used:
        fd += 1
    return fd


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
async def test_accept_backs_off_on_emfile(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await start_gateway(nursery, tmp_path, tls_port=None, mqtt_tls_port=None, dev_mqtt_port=0)
    client = trio.socket.socket()  # created before the limit drops: connect needs no new fd
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    caplog.set_level(logging.ERROR, logger="gateway.frontdoor.listeners")
    resource.setrlimit(resource.RLIMIT_NOFILE, (_lowest_free_fd(), hard))
    try:
        await client.connect(("127.0.0.1", gw.ports["dev_mqtt"]))
        await trio.sleep(0.25)  # the accept loop hits EMFILE and sleeps, more than once
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    messages = [r.getMessage() for r in caplog.records]
    assert any("EMFILE" in m for m in messages), messages
    stream = trio.SocketStream(client)
    await stream.send_all(mqtt_connect_bytes())
    with trio.fail_after(3):
        assert await stream.receive_some(4) == CONNACK_ACCEPTED  # served once fds are back
    await stream.aclose()
    gw.scope.cancel()
