"""The handshake flood: as many full TLS handshakes as the clients can open, for a while.

Worker *processes* (Python's TLS client costs as much CPU as the server's side, so one
process could not load the gateway) each run Trio with ``concurrency`` tasks; every task
connects from its own 127.0.w.t address, completes a handshake with a fresh
session (no resumption: each one pays the full key exchange and certificate check), closes
and starts again until the time is up.  An attempt counts as

* ``ok`` — the handshake completed;
* ``refused`` — the gateway ended it cleanly before completing it (an alert or a close:
  what admission control and the handshake deadline do);
* ``error`` — anything else (connection refused by the kernel, a client timeout).

The figure holds when nothing is an ``error`` and the gateway's own
``gateway_handshakes_total{outcome="ok"}`` grew by at least the clients' ``ok`` count.
"""

from __future__ import annotations

import multiprocessing
import re
import ssl
import time
from typing import Any

import httpx
import msgspec
import trio

from gateway.testing.probes import wire
from gateway.testing.probes.target import Target

__all__ = ["FloodResult", "handshake_flood"]

CLIENT_TIMEOUT_S = 30.0  # one attempt; the gateway's handshake deadline is 10 s
_OK_RE = re.compile(r'^gateway_handshakes_total\{outcome="ok"\} (\d+)', re.M)


class FloodResult(msgspec.Struct, frozen=True):
    port: str
    seconds: float
    workers: int
    concurrency: int
    ok: int
    refused: int
    errors: int
    per_second: float
    p50_ms: float
    p99_ms: float
    gateway_ok: int  # growth of the gateway's own ok counter over the flood
    error_samples: list[str]
    holds: bool


async def _worker_main(
    port: int, server_name: str, ca: str, prefix: str, concurrency: int, seconds: float
) -> dict[str, Any]:
    ctx = wire.client_context(ca, alpn=["http/1.1"])
    ctx.options |= ssl.OP_NO_TICKET  # a full handshake every time
    counts = {"ok": 0, "refused": 0, "error": 0}
    times: list[float] = []
    samples: list[str] = []
    stop = trio.current_time() + seconds

    async def one_task(local: str) -> None:
        while trio.current_time() < stop:
            start = trio.current_time()
            try:
                with trio.fail_after(CLIENT_TIMEOUT_S):
                    stream = await wire.open_tls("127.0.0.1", port, server_name, ctx, local)
                counts["ok"] += 1
                times.append(trio.current_time() - start)
                await trio.aclose_forcefully(stream)
            except trio.BrokenResourceError as exc:
                counts["refused"] += 1
                if len(samples) < 5:
                    samples.append(f"refused: {exc.__cause__!r}")
            except (OSError, trio.TooSlowError) as exc:
                counts["error"] += 1
                if len(samples) < 5:
                    samples.append(f"error: {exc!r}")

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            # one source address per task: ephemeral ports (and TIME_WAIT) per address
            nursery.start_soon(one_task, f"{prefix}.{10 + len(nursery.child_tasks)}")
    return {"counts": counts, "times": times, "samples": samples}


def _worker(args: tuple[int, str, str, str, int, float], queue: Any) -> None:
    queue.put(trio.run(_worker_main, *args))


async def _gateway_ok(client: httpx.AsyncClient) -> int:
    text = (await client.get("/metrics")).text
    m = _OK_RE.search(text)
    return int(m.group(1)) if m else 0


async def handshake_flood(
    target: Target,
    client: httpx.AsyncClient,
    *,
    seconds: float = 30.0,
    workers: int = 2,
    concurrency: int = 32,
    port: str = "tls",
) -> FloodResult:
    """Flood ``port`` with handshakes for ``seconds`` (see the module docstring)."""
    before = await _gateway_ok(client)
    mp = multiprocessing.get_context("spawn")
    queue = mp.Queue()
    procs = [
        mp.Process(
            target=_worker,
            args=(
                (
                    target.ports[port],
                    target.fqdn(),
                    target.ca,
                    f"127.0.{1 + i}",
                    concurrency,
                    seconds,
                ),
                queue,
            ),
            daemon=True,
        )
        for i in range(workers)
    ]
    started = time.monotonic()
    for p in procs:
        p.start()
    results = [await trio.to_thread.run_sync(queue.get) for _ in procs]
    elapsed = time.monotonic() - started
    for p in procs:
        await trio.to_thread.run_sync(p.join)
    await trio.sleep(0.5)  # the last handshakes' counters
    grown = await _gateway_ok(client) - before
    counts = {k: sum(r["counts"][k] for r in results) for k in ("ok", "refused", "error")}
    times = sorted(t for r in results for t in r["times"])
    samples = [s for r in results for s in r["samples"]][:10]

    def pct(q: float) -> float:
        return round(times[min(len(times) - 1, int(q * len(times)))] * 1000, 1) if times else 0.0

    return FloodResult(
        port=port,
        seconds=round(elapsed, 1),
        workers=workers,
        concurrency=concurrency,
        ok=counts["ok"],
        refused=counts["refused"],
        errors=counts["error"],
        per_second=round(counts["ok"] / max(seconds, 1e-9), 1),
        p50_ms=pct(0.5),
        p99_ms=pct(0.99),
        gateway_ok=grown,
        error_samples=samples,
        holds=counts["error"] == 0 and counts["ok"] > 0 and grown >= counts["ok"],
    )
