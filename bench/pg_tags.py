"""Tag filtering on the PostgreSQL store at 1,000,000 devices (docs/decisions.md
"PostgreSQL": the tag index).

Starts a throwaway PostgreSQL cluster (``gateway/testing/postgres.py``; or uses ``--url``),
migrates an empty database with the store's own migrations, generates ``--devices`` devices
with ``generate_series`` — each with three tags: ``model`` (10 values: 10 % of the devices
each), ``site`` (1,000 values: 0.1 % each) and, on one device in 10,000, ``fleet=rare`` —
then times pages of the store's own ``list_devices`` query (``PgReader``, the code the
management API runs) for several filters, and prints each query's plan (``EXPLAIN
ANALYZE``).  Prints JSON; bounded by ``--timeout``.

    .venv/bin/python -m bench.pg_tags [--devices 1000000] [--url postgresql://…]

A benchmark: run it on a quiet machine (the figures in docs/decisions.md say when they were
taken and how loaded the machine was).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import time
from typing import Any

import psycopg

from gateway.store.api import DeviceQuery, Tag
from gateway.store.postgresql.migrations import migrate
from gateway.store.postgresql.reader import PgReader
from gateway.store.reads import encode_cursor as _encode_cursor
from gateway.testing.postgres import PgCluster

_GENERATE = """
INSERT INTO connectors VALUES ('bench', 'bench', '', '{}', 0, 0);
INSERT INTO devices (id, connector_id, identity, status, created, lastseen)
    SELECT i, 'bench', 'dev-' || lpad(i::text, 7, '0'), 'provisioned', i, i * 7 %% 1000003
    FROM generate_series(1, %(n)s) AS i;
INSERT INTO tags (connector_id, name, value, identity, device_id)
    SELECT 'bench', 'model', 'm' || (i %% 10), 'dev-' || lpad(i::text, 7, '0'), i
    FROM generate_series(1, %(n)s) AS i;
INSERT INTO tags (connector_id, name, value, identity, device_id)
    SELECT 'bench', 'site', 'site-' || (i %% 1000), 'dev-' || lpad(i::text, 7, '0'), i
    FROM generate_series(1, %(n)s) AS i;
INSERT INTO tags (connector_id, name, value, identity, device_id)
    SELECT 'bench', 'fleet', 'rare', 'dev-' || lpad(i::text, 7, '0'), i
    FROM generate_series(10000, %(n)s, 10000) AS i;
"""

_CASES: list[tuple[str, list[Tag], dict[str, Any]]] = [
    ("model=m3 (10%), first page", [Tag("model", "m3")], {}),
    ("model=m3 (10%), page from the middle", [Tag("model", "m3")], {"middle": True}),
    ("site=site-7 (0.1%)", [Tag("site", "site-7")], {}),
    ("fleet=rare (0.01%)", [Tag("fleet", "rare")], {}),
    ("model=m7 AND site=site-7 (0.1%)", [Tag("model", "m7"), Tag("site", "site-7")], {}),
    ("model=m3, by lastseen (not the tag's order)", [Tag("model", "m3")], {"sort": "lastseen"}),
    (
        "fleet=rare AND model=m3 (no match: walks every rare device)",
        [Tag("fleet", "rare"), Tag("model", "m3")],
        {},
    ),
]


def _timed(reader: PgReader, query: DeviceQuery, repeats: int) -> tuple[float, int]:
    times = []
    n = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        page = reader.list_devices(query)
        times.append(time.perf_counter() - t0)
        n = len(page.items)
    return statistics.median(times) * 1000, n


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--url", help="an empty database to fill (default: a throwaway cluster)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--timeout", type=int, default=900)
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: os._exit(2))
    signal.alarm(args.timeout)
    cluster = None
    url = args.url
    if url is None:
        cluster = PgCluster()
        cluster.start()
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        url = cluster.url("bench")
    try:
        out: dict[str, Any] = {"devices": args.devices, "load_average": os.getloadavg()}
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            t0 = time.perf_counter()
            with conn.transaction():
                for statement in _GENERATE.split(";"):
                    if statement.strip():
                        conn.execute(statement, {"n": args.devices})
            conn.execute("ANALYZE")
            out["generate_s"] = round(time.perf_counter() - t0, 1)
            tag_rows = conn.execute("SELECT count(*) FROM tags").fetchone()
            out["tag_rows"] = tag_rows[0] if tag_rows else 0
        reader = PgReader(url)
        reader.open()
        try:
            results = []
            for label, tags, opts in _CASES:
                cursor = None
                if opts.get("middle"):  # the cursor a client would hold half-way through
                    first = reader.list_devices(DeviceQuery("bench", tags=tags, limit=1))
                    assert first.next is not None
                    cursor = _encode_cursor(None, f"dev-{args.devices // 2:07d}")
                query = DeviceQuery(
                    "bench", tags=tags, limit=100, cursor=cursor, sort=opts.get("sort", "identity")
                )
                ms, n = _timed(reader, query, args.repeats)
                results.append({"filter": label, "page_ms_median": round(ms, 2), "items": n})
            out["pages"] = results
            # The plans of two of them, from the same SQL the reader sends.
            with psycopg.connect(url, autocommit=True) as conn:
                plans = {}
                for name, sql in {
                    "model=m3": (
                        "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT d.id FROM tags t0 "
                        "JOIN devices d ON d.id = t0.device_id WHERE t0.connector_id = 'bench' "
                        "AND t0.name = 'model' AND t0.value = 'm3' AND d.connector_id = 'bench' "
                        "ORDER BY t0.identity LIMIT 101"
                    ),
                    "model=m7 AND site=site-7": (
                        "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT d.id FROM tags t0 "
                        "JOIN devices d ON d.id = t0.device_id WHERE t0.connector_id = 'bench' "
                        "AND t0.name = 'model' AND t0.value = 'm7' AND d.connector_id = 'bench' "
                        "AND EXISTS (SELECT 1 FROM tags t WHERE t.connector_id = d.connector_id "
                        "AND t.name = 'site' AND t.value = 'site-7' "
                        "AND t.identity = d.identity) ORDER BY t0.identity LIMIT 101"
                    ),
                }.items():
                    plans[name] = [r[0] for r in conn.execute(sql).fetchall()]
                out["plans"] = plans
        finally:
            reader.close()
        print(json.dumps(out, indent=2))
    finally:
        if cluster is not None:
            cluster.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
