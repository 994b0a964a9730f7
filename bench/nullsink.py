"""Null sink: the cheapest server a load generator can talk to, to prove the generator's ceiling.

MQTT mode answers CONNECT with CONNACK, QoS 1 PUBLISH with PUBACK, SUBSCRIBE with SUBACK and
PINGREQ with PINGRESP, and discards everything else.  HTTP mode answers every request with
``204 No Content`` (keep-alive).  Several processes accept on one listening socket; TLS is
optional.  Run ``python -m bench.nullsink --mode mqtt`` — it prints one JSON line with the port
and then serves until SIGTERM.  Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import selectors
import signal
import socket
import ssl
import sys
from typing import Literal

from bench import mqtt_wire as wire

HTTP_204 = b"HTTP/1.1 204 No Content\r\nserver: nullsink\r\n\r\n"
_CL = b"content-length:"


def scan_mqtt(buf: bytearray, out: bytearray) -> tuple[int, bool]:
    """Answer every complete packet in `buf` into `out`; return (bytes consumed, disconnect)."""
    pos = 0
    n = len(buf)
    while pos + 2 <= n:
        first = buf[pos]
        b = buf[pos + 1]
        i = pos + 2
        length = b & 0x7F
        shift = 7
        while b & 0x80:
            if i >= n:
                return pos, False
            b = buf[i]
            i += 1
            length |= (b & 0x7F) << shift
            shift += 7
        end = i + length
        if end > n:
            break
        kind = first & wire.TYPE_MASK
        if kind == wire.PUBLISH:
            if first & 0x06:
                pid = i + 2 + ((buf[i] << 8) | buf[i + 1])
                out += b"\x40\x02"
                out += buf[pid : pid + 2]
        elif kind == wire.CONNECT:
            out += wire.CONNACK_ACCEPTED
        elif kind == wire.PINGREQ:
            out += wire.PINGRESP_BYTES
        elif kind == wire.SUBSCRIBE & wire.TYPE_MASK:
            out += b"\x90\x03"
            out += buf[i : i + 2]
            out += b"\x00"
        elif kind == wire.DISCONNECT:
            return end, True
        pos = end
    return pos, False


def scan_http(buf: bytearray, out: bytearray) -> tuple[int, bool]:
    """Answer every complete HTTP/1.1 request in `buf` with 204; return (consumed, close)."""
    pos = 0
    while True:
        head_end = buf.find(b"\r\n\r\n", pos)
        if head_end < 0:
            return pos, False
        head = bytes(buf[pos:head_end]).lower()
        body = 0
        k = head.find(_CL)
        if k >= 0:
            line_end = head.find(b"\r\n", k)
            body = int(head[k + len(_CL) : line_end if line_end >= 0 else None])
        end = head_end + 4 + body
        if end > len(buf):
            return pos, False
        out += HTTP_204
        pos = end


Mode = Literal["mqtt", "http"]


def serve(listener: socket.socket, mode: Mode, ctx: ssl.SSLContext | None) -> None:
    """Accept and answer forever on a shared listening socket (one process's loop)."""
    scan = scan_mqtt if mode == "mqtt" else scan_http
    sel = selectors.DefaultSelector()
    listener.setblocking(False)
    sel.register(listener, selectors.EVENT_READ, None)
    bufs: dict[int, bytearray] = {}

    def close(sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(sock)
        bufs.pop(sock.fileno(), None)
        sock.close()

    while True:
        for key, _ev in sel.select():
            if key.data is None:
                try:
                    sock, _addr = listener.accept()
                except BlockingIOError:
                    continue
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if ctx is not None:
                    sock.setblocking(True)
                    sock.settimeout(10)
                    try:
                        sock = ctx.wrap_socket(sock, server_side=True)
                    except (OSError, ssl.SSLError):
                        sock.close()
                        continue
                sock.setblocking(False)
                bufs[sock.fileno()] = bytearray()
                sel.register(sock, selectors.EVENT_READ, sock)
                continue
            sock = key.data
            try:
                data = sock.recv(262_144)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except OSError:
                close(sock)
                continue
            if data and isinstance(sock, ssl.SSLSocket):
                # one recv returns one TLS record: take every record that arrived (a client
                # sending one PUBLISH per record would otherwise cap the sink, not itself)
                while True:
                    try:
                        more = sock.recv(262_144)
                    except (ssl.SSLWantReadError, BlockingIOError):
                        break
                    except OSError:
                        more = b""
                    if not more:
                        break
                    data += more
            if not data:
                close(sock)
                continue
            buf = bufs[sock.fileno()]
            buf += data
            out = bytearray()
            used, done = scan(buf, out)
            del buf[:used]
            if out:
                try:
                    sock.setblocking(True)
                    sock.sendall(out)
                    sock.setblocking(False)
                except OSError:
                    close(sock)
                    continue
            if done:
                close(sock)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="null sink for load generator ceilings")
    ap.add_argument("--mode", choices=("mqtt", "http"), default="mqtt")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--certfile")
    ap.add_argument("--keyfile")
    a = ap.parse_args(argv)
    ctx = None
    if a.certfile:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.certfile, a.keyfile)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", a.port))
    listener.listen(4096)
    print(json.dumps({"port": listener.getsockname()[1], "pid": os.getpid()}), flush=True)
    if a.processes <= 1:
        serve(listener, a.mode, ctx)
        return
    mp = multiprocessing.get_context("fork")
    procs = [mp.Process(target=serve, args=(listener, a.mode, ctx)) for _ in range(a.processes)]
    for p in procs:
        p.start()

    def stop(_sig: int, _frame: object) -> None:
        for p in procs:
            p.terminate()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    for p in procs:
        p.join()


if __name__ == "__main__":
    main()
