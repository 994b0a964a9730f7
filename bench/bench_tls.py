"""Full TLS handshakes per second: our front door vs mosquitto's TLS listener.

Both servers run as separate processes on 127.0.0.1 with the same ECDSA P-256 server
certificate (the development PKI), and the same load generator hits each in turn: worker
processes, each running ``--concurrency`` Trio tasks that connect, complete a full
handshake (stdlib ssl, certificate verified, SNI ``bench.m2.localhost``, no session reuse),
and close, for ``--seconds``.  Prints handshakes/s for each and the ratio.

    .venv/bin/python bench/bench_tls.py [--seconds 5] [--workers 2] [--concurrency 32]

Note: on a 2-core machine the client side competes for the same cores; the ratio is the
meaningful number, not the absolute rate.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from gateway.testing.ports import free_port as _free_port

SERVER_SCRIPT = r"""
import sys, trio
from gateway.frontdoor.connection import Handlers
from gateway.frontdoor.listeners import FrontDoorConfig, serve_device_listeners
from gateway.testing.certs import MemoryDirectory
from gateway.tls.contexts import ConnectorTLS

async def drop(stream, info):
    await stream.aclose()

async def main():
    directory = MemoryDirectory("localhost")
    directory.put(ConnectorTLS("bench", None, None, None, False))
    config = FrontDoorConfig(host="127.0.0.1", tls_port=0, mqtt_tls_port=None,
                             server_cert_path=sys.argv[1], server_key_path=sys.argv[2])
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(serve_device_listeners, config, directory,
                                    Handlers(serve_mqtt=drop, serve_http=drop), lambda r: None)
        print(ports["tls"], flush=True)

trio.run(main)
"""


async def _hammer(port: int, ca_path: str, seconds: float, concurrency: int) -> int:
    ctx = ssl.create_default_context(cafile=ca_path)
    ctx.set_alpn_protocols(["mqtt"])
    done = 0
    deadline = trio.current_time() + seconds

    async def client() -> None:
        nonlocal done
        while trio.current_time() < deadline:
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            stream = trio.SSLStream(tcp, ctx, server_hostname="bench.m2.localhost")
            try:
                await stream.do_handshake()
                done += 1
            except trio.BrokenResourceError:
                pass
            finally:
                await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(client)
    return done


def _worker(args: tuple[int, str, float, int]) -> int:
    return trio.run(_hammer, *args)


def measure(port: int, ca_path: str, *, seconds: float, workers: int, concurrency: int) -> float:
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        start = time.perf_counter()
        counts = pool.map(_worker, [(port, ca_path, seconds, concurrency)] * workers)
        elapsed = time.perf_counter() - start
    return sum(counts) / max(elapsed, seconds)


def _wait_port(port: int, timeout_s: float = 5.0) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from gateway.tls.pki import ensure_dev_pki

    with tempfile.TemporaryDirectory() as tmp:
        pki = ensure_dev_pki(Path(tmp) / "tls", "localhost")
        gateway = subprocess.Popen(
            [sys.executable, "-c", SERVER_SCRIPT, pki.server_cert, pki.server_key],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert gateway.stdout is not None
            ours_port = int(gateway.stdout.readline())
            ours = measure(
                ours_port,
                pki.ca_cert,
                seconds=args.seconds,
                workers=args.workers,
                concurrency=args.concurrency,
            )
        finally:
            gateway.terminate()
            gateway.wait()
        print(f"gateway front door : {ours:8.1f} handshakes/s")
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        port = _free_port()
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\n"
            f"certfile {pki.server_cert}\nkeyfile {pki.server_key}\ncafile {pki.ca_cert}\n"
            "require_certificate false\npersistence false\nlog_type none\n"
            # as root mosquitto drops to user "mosquitto", which cannot read our 0600 key
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        broker = subprocess.Popen([mosquitto, "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            _wait_port(port)
            theirs = measure(
                port,
                pki.ca_cert,
                seconds=args.seconds,
                workers=args.workers,
                concurrency=args.concurrency,
            )
        finally:
            broker.terminate()
            broker.wait()
        print(f"mosquitto TLS      : {theirs:8.1f} handshakes/s")
        print(
            f"ratio gateway/mosquitto: {ours / theirs:.2f}"
            if theirs
            else "mosquitto: no handshakes"
        )


if __name__ == "__main__":
    main()
