"""MQTT load generator that must never be the bottleneck of what it measures.

Design (why it is fast enough in Python):

* Raw non-blocking sockets on an epoll selector, one selector per worker process, connections
  spread over several processes (``multiprocessing``, fork) so that no process holds more than
  ``MAX_CONNS_PER_PROCESS`` sockets (the workplace allows 20,000 fds per process).
* Every PUBLISH is pre-encoded: QoS 0 sends slices of one ~64 KiB buffer of identical packets;
  QoS 1 sends slices of a ring of 65,535 packets whose packet ids are 1..65535, so a window
  refill is one ``send`` of a memoryview slice, never an encode.
* QoS 1 PUBACKs are counted four bytes at a time (a stream made only of PUBACKs is checked with
  two slice counts); anything else falls back to a frame parser.  MQTT 3.1.1 §4.6 makes the
  server acknowledge in order, so the ack latency of a batch of k acks is the age of the k
  oldest in-flight packets (kept as (send time, count) batches, not per packet).
* QoS 0 is "fire and count", but only what the server has *processed* counts: each buffer is
  k PUBLISHes followed by a PINGREQ, at most QOS0_PINGS_IN_FLIGHT buffers per connection are
  unanswered, and a server answers PINGRESP in stream order (§3.12).  So socket buffers never
  hide a backlog, the drain at the deadline is short, and the last PINGRESP marks the end.
* TLS sends **one PUBLISH per TLS record** by default (``per_record=True``), as device
  clients do (paho, murano-client and mosquitto_pub write one message per ``send``), and
  the records are **encrypted before the timed phase** (:func:`_prebuild`: each PUBLISH its
  own ``SSL_write`` on the connection's ``SSLObject``, in the order they will be sent, up
  to ``tls_prebuild_records`` per worker), so the timed loop only writes ciphertext to
  sockets and never caps the peer; past the pre-built stock, records are sealed on the fly
  (counted in ``loadgen_cpu``).  ``per_record=False`` packs each send into 16 KiB records
  (many PUBLISHes per record): the labelled batched scenarios.

Contract: the host must be 127.0.0.1 (anything else raises ``ValueError``); runs are bounded
by ``duration`` (and optionally ``count`` messages per connection) plus ``drain_timeout``.
The generator proves its own ceiling against ``bench.nullsink`` in the same run.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import resource
import select
import time
from array import array
from collections.abc import Sequence
from typing import Any, Literal

from bench import mqtt_wire as wire
from bench.loadcfg import (
    LOOPBACK,
    PACKET_ID_SPACE,
    QOS0_BUFFER_BYTES,
    RECV_SIZE,
    Credentials,
    LoadResult,
    MqttLoad,
    err_key,
    merge,
    require_loopback,
    weighted_percentiles,
)
from bench.mqtt_conns import (
    EP_IN,
    EP_OUT,
    Conn,
    close_all,
    connect_all,
    receive,
    subscribe_all,
)

__all__ = [
    "LOOPBACK",
    "Credentials",
    "LoadResult",
    "LoadRun",
    "MqttLoad",
    "connect_storm",
    "require_loopback",
    "run_mqtt",
    "weighted_percentiles",
]

Mode = Literal["publish", "hold", "storm", "receive"]
log = logging.getLogger("bench")


def _consume(c: Conn, now: float, lat: array[float], weight: array[int]) -> tuple[int, int]:
    """Consume PUBACKs and PINGRESPs from c.rbuf; return (acks, pingresps).

    Fast paths for a stream made only of PUBACKs (4 bytes each) or only of PINGRESPs (2 bytes
    each); anything else (a server push, mixed frames) goes through the frame splitter.
    """
    buf = c.rbuf
    acks = pings = 0
    n4 = len(buf) // 4
    n2 = len(buf) // 2
    if n4 and len(buf) == n4 * 4 and buf[0] == wire.PUBACK:
        view = bytes(buf)
        if view[0::4].count(wire.PUBACK) == n4 and view[1::4].count(2) == n4:
            acks = n4
            buf.clear()
    if not acks and n2 and len(buf) == n2 * 2 and buf[0] == wire.PINGRESP:
        view = bytes(buf)
        if view[0::2].count(wire.PINGRESP) == n2 and view[1::2].count(0) == n2:
            pings = n2
            buf.clear()
    if not (acks or pings):
        for first, _body in wire.split_frames(buf):
            if first == wire.PUBACK:
                acks += 1
            elif first == wire.PINGRESP:
                pings += 1
    if acks:
        c.acked += acks
        c.inflight -= acks
        left = acks
        batches = c.batches
        while left and batches:
            b = batches[0]
            take = left if left < b[1] else int(b[1])
            lat.append(now - b[0])
            weight.append(take)
            b[1] -= take
            left -= take
            if not b[1]:
                batches.popleft()
    if pings:
        c.pings_out -= pings
        c.confirmed += pings
    return acks, pings


QOS0_PINGS_IN_FLIGHT = 2
QOS0_UNCONFIRMED_BYTES = 1024 * 1024


def _build(cfg: MqttLoad, nconns: int) -> tuple[memoryview, int, int, int]:
    """Pre-encode the publish buffer: (buffer, packet size, publishes per QoS 0 chunk, max
    chunks).  Done before the worker reports ready, so that it never eats into the run."""
    payload = (b"0123456789" * (cfg.payload_size // 10 + 1))[: cfg.payload_size]
    per_chunk = 0
    max_chunks = 0
    if cfg.qos == 0:
        one = wire.publish(cfg.topic, payload)
        pkt = len(one)
        # Bound what may sit unprocessed in socket buffers to ~QOS0_UNCONFIRMED_BYTES per
        # worker, so that the drain stays short and the rate is what the server processed.
        # (at least 4 KiB per connection: tinier chunks would make per-event costs dominate).
        per_conn = max(4096, QOS0_UNCONFIRMED_BYTES // max(1, nconns))
        chunk_bytes = min(QOS0_BUFFER_BYTES, per_conn // QOS0_PINGS_IN_FLIGHT)
        per_chunk = max(1, chunk_bytes // pkt)
        if cfg.count:
            max_chunks = -(-cfg.count // per_chunk)
            per_chunk = -(-cfg.count // max_chunks)
        return memoryview(one * per_chunk + wire.PINGREQ_BYTES), pkt, per_chunk, max_chunks
    one = wire.publish(cfg.topic, payload, qos=1, packet_id=1)
    pkt = len(one)
    prefix = one[: pkt - len(payload) - 2]  # fixed header + topic; then packet id, payload
    ring = b"".join(
        [prefix + i.to_bytes(2, "big") + payload for i in range(1, PACKET_ID_SPACE + 1)]
    )
    last = wire.publish(cfg.topic, payload, qos=1, packet_id=PACKET_ID_SPACE)
    if ring[:pkt] != one or ring[-pkt:] != last:
        raise AssertionError("QoS 1 ring does not match the packet builder")
    return memoryview(ring), pkt, 0, 0


def _qos0_chunk(buf: memoryview, pkt: int, per_chunk: int) -> list[memoryview]:
    """The packets of one QoS 0 chunk (k PUBLISHes and the PINGREQ), one record each."""
    return [buf[i * pkt : (i + 1) * pkt] for i in range(per_chunk)] + [buf[per_chunk * pkt :]]


def _ring_packets(buf: memoryview, pkt: int, start: int, k: int) -> list[memoryview]:
    """k QoS 1 packets of the id ring from index ``start`` (wrapping at the id space)."""
    return [
        buf[((start + i) % PACKET_ID_SPACE) * pkt : ((start + i) % PACKET_ID_SPACE + 1) * pkt]
        for i in range(k)
    ]


def _prebuild(cfg: MqttLoad, conns: list[Conn], built: tuple[memoryview, int, int, int]) -> int:
    """TLS, one record per PUBLISH: encrypt each connection's first publishes now, before
    the timed phase, in the order they will be sent.  Returns the record size (constant for
    the AEAD ciphers of TLS 1.2/1.3 at one plaintext size), 0 when nothing was built."""
    if not cfg.tls or not cfg.per_record or not conns:
        return 0
    buf, pkt, per_chunk, max_chunks = built
    budget = max(1, cfg.tls_prebuild_records // len(conns))
    rec_len = 0
    for c in conns:
        tls = c.tls
        assert tls is not None
        if cfg.qos == 0:
            chunks = max(QOS0_PINGS_IN_FLIGHT, budget // (per_chunk + 1))
            if max_chunks:
                chunks = min(chunks, max_chunks)
            packets = _qos0_chunk(buf, pkt, per_chunk)
            c.cipher = collections.deque(tls.seal(packets) for _ in range(chunks))
            continue
        records = max(2 * cfg.window, budget)
        if cfg.count:
            records = min(records, cfg.count)
        cipher = tls.seal(_ring_packets(buf, pkt, 0, records))
        one = len(cipher) // records
        if one * records != len(cipher):
            raise AssertionError("TLS records of one plaintext size differ in length")
        rec_len = rec_len or one
        if one != rec_len:
            raise AssertionError("connections negotiated different record overheads")
        c.cipher = cipher
        c.cipher_at = 0
    return rec_len


def _publish(
    cfg: MqttLoad,
    conns: list[Conn],
    t0: float,
    built: tuple[memoryview, int, int, int],
    rec_len: int = 0,
) -> dict[str, Any]:
    """Run the timed publish phase on already-open connections; return this worker's totals.

    QoS 0 flow control: the buffer is k PUBLISHes followed by one PINGREQ, and at most
    QOS0_PINGS_IN_FLIGHT buffers per connection may be unanswered.  Only publishes whose
    trailing PINGRESP came back count, so the rate is what the server processed, and the
    drain at the end is bounded (a count limit is rounded up to whole buffers).
    """
    buf, pkt, per_chunk, max_chunks = built
    per_record = cfg.tls and cfg.per_record
    batched_tls = cfg.tls and not per_record
    unit = rec_len or pkt  # bytes of one QoS 1 packet as it goes on the wire
    qos0_packets = _qos0_chunk(buf, pkt, per_chunk) if per_record and cfg.qos == 0 else []
    refill_step = max(1, cfg.window // 2)
    ep = select.epoll()
    by_fd: dict[int, Conn] = {}
    lat: array[float] = array("d")
    weight: array[int] = array("q")
    errors: collections.Counter[str] = collections.Counter()
    for c in conns:
        by_fd[c.sock.fileno()] = c
        ep.register(c.sock.fileno(), EP_IN)
    while time.monotonic() < t0:
        time.sleep(min(0.01, max(0.0, t0 - time.monotonic())))
    end = t0 + cfg.duration
    draining = False
    drain_deadline = end + cfg.drain_timeout
    ru0 = resource.getrusage(resource.RUSAGE_SELF)

    def set_writing(c: Conn, on: bool) -> None:
        if c.writing != on:
            c.writing = on
            ep.modify(c.sock.fileno(), EP_IN | EP_OUT if on else EP_IN)

    def refill(c: Conn, now: float) -> None:
        if draining or c.pending is not None:
            return
        tls = c.tls
        if cfg.qos == 0:
            if c.pings_out >= QOS0_PINGS_IN_FLIGHT or (max_chunks and c.chunks >= max_chunks):
                return
            if tls is None:
                c.pending = buf
            elif batched_tls:
                c.pending = memoryview(tls.seal_batched(buf))
            elif c.cipher:
                assert isinstance(c.cipher, collections.deque)
                c.pending = memoryview(c.cipher.popleft())
            else:  # the pre-built stock is spent: seal on the fly (counted)
                c.pending = memoryview(tls.seal(qos0_packets))
            c.pings_out += 1
            c.chunks += 1
            return
        room = cfg.window - c.inflight
        if cfg.count:
            room = min(room, cfg.count - c.acked - c.inflight)
        # Refill in half-window steps: one send per many acks keeps the generator's per-event
        # cost low (the window bound itself is never exceeded).
        if room <= 0 or (room < refill_step and c.inflight):
            return
        k = min(room, PACKET_ID_SPACE - c.next_idx)
        if tls is None:
            c.pending = buf[c.next_idx * pkt : (c.next_idx + k) * pkt]
        elif batched_tls:
            c.pending = memoryview(tls.seal_batched(buf[c.next_idx * pkt : (c.next_idx + k) * pkt]))
        else:
            stock = c.cipher
            assert isinstance(stock, bytes)
            have = len(stock) // rec_len - c.cipher_at if rec_len else 0
            if have > 0:
                # the stock's records are numbered by TLS in order: use them all, none skipped
                k = min(k, have)
                c.pending = memoryview(stock)[c.cipher_at * rec_len : (c.cipher_at + k) * rec_len]
                c.cipher_at += k
            else:  # the pre-built stock is spent: seal on the fly (counted)
                c.pending = memoryview(tls.seal(_ring_packets(buf, pkt, c.next_idx, k)))
        c.next_idx = (c.next_idx + k) % PACKET_ID_SPACE
        c.inflight += k
        c.batches.append([now, float(k)])

    def finished(c: Conn) -> bool:
        if c.pending is not None:
            return False
        return c.pings_out <= 0 if cfg.qos == 0 else c.inflight <= 0

    def counted_out(c: Conn) -> bool:
        """The connection reached its message count (its run may end before the deadline)."""
        if not cfg.count:
            return False
        if cfg.qos == 0:
            return c.chunks >= max_chunks
        return c.acked + c.inflight >= cfg.count

    def retire(c: Conn, why: BaseException | str | None = None) -> None:
        if why is not None:
            errors[err_key(why)] += 1
        fd = c.sock.fileno()
        if by_fd.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                ep.unregister(fd)
        if why is not None:
            c.sock.close()

    now = time.monotonic()
    for c in conns:
        refill(c, now)
        if c.pending is not None:
            set_writing(c, True)
    while by_fd:
        now = time.monotonic()
        if not draining and now >= end:
            draining = True
            for c in list(by_fd.values()):
                if cfg.qos == 1 and c.pending is not None and not batched_tls:
                    # Whole packets still in our buffer were never sent: un-count them; the
                    # front remainder of a partly sent packet (or record) must still go out.
                    # (A batched TLS record holds many packets: it goes out whole.)
                    unsent = len(c.pending) // unit
                    partial = len(c.pending) % unit
                    c.inflight -= unsent
                    if unsent and c.batches:
                        c.batches[-1][1] -= unsent
                        if c.batches[-1][1] <= 0:
                            c.batches.pop()
                    c.pending = c.pending[:partial] if partial else None
                if finished(c):
                    retire(c)
        if draining and now >= drain_deadline:
            for c in list(by_fd.values()):
                retire(c, "drain timeout")
            break
        timeout = 0.2 if draining else max(0.0, min(0.2, end - now))
        for fd, ev in ep.poll(timeout):
            c = by_fd.get(fd)  # type: ignore[assignment]
            if c is None:
                continue
            try:
                if ev & EP_IN:
                    try:
                        data = c.sock.recv(RECV_SIZE)
                    except BlockingIOError:
                        data = None
                    if data == b"":
                        retire(c, "closed by server")
                        continue
                    if data and c.tls is not None:
                        data = c.tls.feed(data)  # b"": no whole record yet
                    if data:
                        c.rbuf += data
                        now = time.monotonic()
                        acks, pings = _consume(c, now, lat, weight)
                        if acks or pings:
                            c.done_at = now
                            if c.pending is None:
                                refill(c, now)
                                if c.pending is not None:
                                    set_writing(c, True)
                if ev & EP_OUT and c.pending is not None:
                    try:
                        n = c.sock.send(c.pending)
                    except BlockingIOError:
                        n = 0
                    if n:
                        c.bytes_sent += n
                        c.pending = c.pending[n:] if n < len(c.pending) else None
                        if c.pending is None:
                            refill(c, time.monotonic())
                            if c.pending is None:
                                set_writing(c, False)
                if (draining or counted_out(c)) and finished(c):
                    retire(c)
            except (OSError, ValueError) as exc:
                retire(c, exc)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    ep.close()
    if cfg.qos == 0:
        sent = sum(c.confirmed for c in conns) * per_chunk
    else:
        sent = sum(c.acked + max(0, c.inflight) for c in conns)
    return {
        "sent": sent,
        "acked": sum(c.acked for c in conns),
        "t_end": max((c.done_at for c in conns), default=t0),
        "drained": not errors.get("drain timeout"),
        "lat": list(lat),
        "weight": list(weight),
        "cpu": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
        "errors": dict(errors),
    }


def _worker(
    cfg: MqttLoad, mode: Mode, indices: list[int], pipe: multiprocessing.connection.Connection
) -> None:
    """Worker process body; talks to the parent with (tag, payload) tuples on `pipe`.

    While it connects it sends ``("progress", counts)`` every few seconds (phase
    ``connect``), then once ``("progress", {"phase": "prepare"})`` before the untimed
    preparation (SUBSCRIBE, pre-encoding, TLS pre-sealing); the answers are ``ready``,
    ``result`` or ``error``."""
    try:
        rate = cfg.connect_rate / cfg.process_count() if cfg.connect_rate else 0.0

        def progress(counts: dict[str, int]) -> None:
            pipe.send(("progress", {"phase": "connect", **counts}))

        if mode == "storm":
            _tag, t0 = pipe.recv()
            while time.monotonic() < t0:
                time.sleep(0.001)
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            conns, errors, last = connect_all(
                cfg, indices, cfg.connect_concurrency, rate=rate, progress=progress
            )
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
            pipe.send(("result", {"ok": len(conns), "errors": errors, "last": last, "cpu": cpu}))
            close_all(conns)
            return
        t_start = time.monotonic()
        conns, errors, last = connect_all(
            cfg, indices, cfg.connect_concurrency, rate=rate, progress=progress
        )
        pipe.send(("progress", {"phase": "prepare", "ok": len(conns)}))
        if cfg.subscribe_prefix:
            conns = subscribe_all(cfg, conns, errors)
        built = _build(cfg, len(conns)) if mode == "publish" else (memoryview(b""), 0, 0, 0)
        rec_len = _prebuild(cfg, conns, built) if mode == "publish" else 0  # TLS, untimed
        pipe.send(("ready", {"ok": len(conns), "errors": errors, "seconds": last - t_start}))
        tag, t0 = pipe.recv()
        if mode == "publish" and tag == "go":
            pipe.send(("result", _publish(cfg, conns, t0, built, rec_len)))
        elif mode == "receive" and tag == "go":
            pipe.send(("result", receive(cfg, conns, t0)))
        close_all(conns)
        if mode == "hold":
            pipe.send(("result", {}))
    except Exception as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


PROGRESS_LOG_INTERVAL = 10.0  # the parent logs the summed progress this often
SILENT_LIMIT = 30.0  # a connecting worker reports every PROGRESS_INTERVAL; this long is stuck
ENTER_MARGIN = 120.0  # beyond connect_timeout: SUBSCRIBE, pre-encoding and TLS pre-sealing


class LoadRun:
    """Worker processes for one configuration; a context manager that always reaps them.

    Failures name their cause: a worker that reports an exception, exits without an answer,
    stays silent for ``SILENT_LIMIT`` seconds while it connects, or has not answered when a
    phase's bound is over raises with the worker, its pid and every worker's last progress
    (``LoadRun.progress``)."""

    def __init__(self, cfg: MqttLoad, mode: Mode = "publish") -> None:
        self.cfg = cfg
        self.mode = mode
        self.result = LoadResult(qos=cfg.qos)
        nproc = cfg.process_count()
        ctx = multiprocessing.get_context("fork")
        self._pipes: list[multiprocessing.connection.Connection] = []
        self._children: list[multiprocessing.connection.Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self.progress: list[dict[str, Any]] = [{} for _ in range(nproc)]
        shares = [list(range(i, cfg.connections, nproc)) for i in range(nproc)]
        for share in shares:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(cfg, mode, share, child), daemon=True)
            self._pipes.append(parent)
            self._children.append(child)
            self._procs.append(p)

    def __enter__(self) -> LoadRun:
        for p, child in zip(self._procs, self._children, strict=True):
            p.start()
            # Only the worker keeps its end: once it dies, its pipe reads EOF here (while
            # the parent, or a later fork, held a copy, a killed worker looked merely slow).
            child.close()
        if self.mode != "storm":
            try:
                msgs = self._gather(self.cfg.connect_timeout + ENTER_MARGIN, "connect")
            except BaseException:
                for p in self._procs:  # a failed connect phase: no worker is waited for
                    if p.pid is not None and p.is_alive():
                        p.kill()
                self.__exit__()
                raise
            for msg in msgs:
                self.result.connections += msg["ok"]
                self.result.connect_seconds = max(self.result.connect_seconds, msg["seconds"])
                merge(self.result.errors, msg["errors"])
                self.result.connect_errors += sum(msg["errors"].values())
        return self

    def progress_text(self) -> str:
        """Every worker's last progress report, for failure messages and logs."""
        now = time.monotonic()
        parts = []
        for i, (p, prog) in enumerate(zip(self._procs, self.progress, strict=True)):
            if not prog:
                parts.append(f"worker {i} (pid {p.pid}): no report")
                continue
            counts = ", ".join(f"{k} {v}" for k, v in prog.items() if k not in ("phase", "at"))
            ago = now - prog.get("at", now)
            parts.append(
                f"worker {i} (pid {p.pid}) {prog.get('phase')}: {counts} ({ago:.0f} s ago)"
            )
        return "; ".join(parts)

    def progress_totals(self) -> str:
        """The connect counts summed over the workers (``ok 3,100, failed 0, ...``)."""
        totals: collections.Counter[str] = collections.Counter()
        for prog in self.progress:
            if prog.get("phase") == "connect":
                totals.update({k: int(v) for k, v in prog.items() if k not in ("phase", "at")})
            elif prog:
                totals["ok"] += int(prog.get("ok", 0))
        return ", ".join(f"{k} {v:,}" for k, v in totals.items()) or "no report yet"

    def _died(self, phase: str, i: int) -> str:
        proc = self._procs[i]
        code = proc.exitcode
        how = (
            f"was killed by signal {-code}" + (" (SIGKILL: out of memory?)" if code == -9 else "")
            if code is not None and code < 0
            else f"exited with code {code}"
        )
        return (
            f"{phase}: load generator worker {i} (pid {proc.pid}) {how} without answering;"
            f" {self.progress_text()}"
        )

    def _gather(self, timeout: float, phase: str) -> list[dict[str, Any]]:
        """One answer from every worker within ``timeout`` seconds, progress reports read
        (and kept in ``self.progress``) on the way."""
        out: dict[int, dict[str, Any]] = {}
        start = time.monotonic()
        deadline = start + timeout
        waiting = {id(pipe): i for i, pipe in enumerate(self._pipes)}
        heard = dict.fromkeys(range(len(self._pipes)), start)
        next_log = start + PROGRESS_LOG_INTERVAL
        while waiting:
            now = time.monotonic()
            if now >= next_log:
                next_log = now + PROGRESS_LOG_INTERVAL
                log.info("load generator %s: %s", phase, self.progress_totals())
            if now >= deadline:
                raise TimeoutError(
                    f"{phase}: {len(waiting)} of {len(self._pipes)} load generator workers"
                    f" had not answered after {timeout:.0f} s; {self.progress_text()}"
                )
            for i in waiting.values():
                prog = self.progress[i]
                if prog.get("phase") == "connect" and now - heard[i] > SILENT_LIMIT:
                    raise TimeoutError(
                        f"{phase}: load generator worker {i} (pid {self._procs[i].pid}) sent"
                        f" no progress for {now - heard[i]:.0f} s while connecting;"
                        f" {self.progress_text()}"
                    )
            for i in waiting.values():
                proc = self._procs[i]
                if not proc.is_alive() and not self._pipes[i].poll():
                    raise RuntimeError(self._died(phase, i))
            pending = [self._pipes[i] for i in waiting.values()]
            for pipe in multiprocessing.connection.wait(pending, timeout=min(1.0, deadline - now)):
                assert isinstance(pipe, multiprocessing.connection.Connection)
                i = waiting[id(pipe)]
                try:
                    tag, payload = pipe.recv()
                except EOFError:
                    self._procs[i].join(timeout=1)
                    raise RuntimeError(self._died(phase, i)) from None
                heard[i] = time.monotonic()
                if tag == "progress":
                    self.progress[i] = {**payload, "at": heard[i]}
                    continue
                if tag == "error":
                    raise RuntimeError(f"{phase}: load generator worker {i} failed: {payload}")
                out[i] = payload
                del waiting[id(pipe)]
        return [out[i] for i in range(len(self._pipes))]

    def go(self) -> LoadResult:
        """Start the timed phase in every worker at the same instant; collect the totals."""
        t0 = time.monotonic() + 0.05
        for pipe in self._pipes:
            pipe.send(("go", t0))
        r = self.result
        if self.mode == "storm":
            msgs = self._gather(self.cfg.connect_timeout + ENTER_MARGIN, "connect")
            r.connections = sum(m["ok"] for m in msgs)
            for m in msgs:
                merge(r.errors, m["errors"])
            r.connect_errors = sum(r.errors.values())
            r.connect_seconds = max(m["last"] for m in msgs) - t0
            r.cpu_seconds = sum(m["cpu"] for m in msgs)
            return r
        msgs = self._gather(self.cfg.duration + self.cfg.drain_timeout + 60, "publish")
        lat: list[float] = []
        weight: list[int] = []
        for m in msgs:
            r.sent += m["sent"]
            r.acked += m["acked"]
            r.cpu_seconds += m["cpu"]
            r.drained = r.drained and m["drained"]
            lat += m["lat"]
            weight += m["weight"]
            merge(r.errors, m["errors"])
        r.elapsed = max(m["t_end"] for m in msgs) - t0
        p50, p99 = weighted_percentiles(lat, weight, (0.50, 0.99))
        r.p50_ms = None if p50 is None else p50 * 1e3
        r.p99_ms = None if p99 is None else p99 * 1e3
        return r

    def start(self) -> float:
        """Receive mode: start listening in every worker; returns t0 (the common start)."""
        t0 = time.monotonic() + 0.05
        for pipe in self._pipes:
            pipe.send(("go", t0))
        while time.monotonic() < t0:
            time.sleep(0.005)
        return t0

    def collect_received(self, t0: float) -> tuple[int, int, float]:
        """Receive mode: (publishes received, connections complete, seconds to the last one)."""
        msgs = self._gather(self.cfg.duration + 60, "receive")
        for m in msgs:
            merge(self.result.errors, m["errors"])
        last = max(m["t_last"] for m in msgs)
        return sum(m["received"] for m in msgs), sum(m["complete"] for m in msgs), last - t0

    def release(self) -> None:
        """Hold mode: close every connection (the workers then exit)."""
        for pipe in self._pipes:
            pipe.send(("close", 0.0))
        self._gather(60, "release")

    def __exit__(self, *exc: object) -> None:
        for p, pipe in zip(self._procs, self._pipes, strict=True):
            if p.pid is not None and p.is_alive():  # still waiting for "go": let it go home
                with contextlib.suppress(OSError):
                    pipe.send(("close", 0.0))
        for p in self._procs:
            if p.pid is None:  # never started
                continue
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
        for pipe in self._pipes:
            pipe.close()


def run_mqtt(cfg: MqttLoad) -> LoadResult:
    """Connect, publish for cfg.duration, drain, disconnect; return totals."""
    with LoadRun(cfg, "publish") as run:
        if run.result.connections == 0:
            return run.result
        return run.go()


def connect_storm(cfg: MqttLoad) -> LoadResult:
    """Open cfg.connections from every worker at the same instant, at most
    cfg.connect_concurrency in progress per worker; time from start to the last CONNACK."""
    with LoadRun(cfg, "storm") as run:
        return run.go()


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: ``python -m bench.loadgen --port P [--qos 1] [--connections N] ...`` prints JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default=LOOPBACK)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--qos", type=int, default=0)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--payload", type=int, default=50)
    ap.add_argument("--topic", default="$resource/data_in")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--batched", action="store_true", help="TLS: many PUBLISHes per record")
    ap.add_argument("--sni", default=None)
    ap.add_argument("--processes", type=int, default=0)
    ap.add_argument("--storm", action="store_true")
    a = ap.parse_args(argv)
    cfg = MqttLoad(
        host=a.host,
        port=a.port,
        connections=a.connections,
        qos=a.qos,
        window=a.window,
        duration=a.duration,
        count=a.count,
        payload_size=a.payload,
        topic=a.topic,
        tls=a.tls,
        per_record=not a.batched,
        server_hostname=a.sni,
        processes=a.processes,
    )
    res = connect_storm(cfg) if a.storm else run_mqtt(cfg)
    print(json.dumps(res.to_json(), indent=1))


if __name__ == "__main__":
    main()
