"""`scripts/bench [--quick] [--only NAME[,NAME]]`: run scenarios, write bench/RESULTS.md.

Rows of scenarios not rerun are kept from bench/results.json, so `--only` refreshes one part
of the report.  Exit status is 0 even when gateway scenarios skip (their rows say why).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from bench import report
from bench.scenarios import SCENARIOS, Ctx, Row
from bench.scenarios_http import HTTP_SCENARIOS
from bench.scenarios_node import NODE_SCENARIOS

ROOT = Path(__file__).resolve().parent.parent
RESULTS_JSON = ROOT / "bench" / "results.json"
RESULTS_MD = ROOT / "bench" / "RESULTS.md"


def codec(ctx: Ctx) -> list[Row]:
    """bench/bench_codec.py (pytest-benchmark, owned by the codec engineer): compiled/pure
    speed-up per group, from the medians of its --benchmark-json output."""
    name = "codec"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "codec.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "bench/bench_codec.py",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--benchmark-json={out}",
                "--benchmark-max-time=0.2" if ctx.quick else "--benchmark-max-time=1.0",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
            return [Row(name, "-", "-", "failed", "", None, [], f"failed: {' / '.join(tail)}")]
        data = json.loads(out.read_text())
    medians: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for b in data["benchmarks"]:
        impl = str(b["params"].get("impl", ""))
        medians[b["group"]][impl].append(float(b["stats"]["median"]))
    rows = []
    for group, by_impl in sorted(medians.items()):
        if not by_impl.get("compiled") or not by_impl.get("pure"):
            continue
        compiled = statistics.median(by_impl["compiled"])
        pure = statistics.median(by_impl["pure"])
        rows.append(
            Row(
                name,
                "compiled/pure",
                group,
                "speedup",
                "x",
                pure / compiled,
                [],
                f"median compiled {compiled * 1e6:,.0f} µs, pure {pure * 1e6:,.0f} µs",
            )
        )
    return rows


ALL: dict[str, Callable[[Ctx], list[Row]]] = {
    **SCENARIOS,
    **HTTP_SCENARIOS,
    **NODE_SCENARIOS,
    "codec": codec,
}
QUICK = [  # the batched-record MQTT scenarios and the full-size loads are left to a full run
    "mqtt_qos0",
    "mqtt_qos0_tls",
    "mqtt_qos1",
    "mqtt_qos1_tls",
    "http_writes",
    "http_writes_tls",
    "http2_writes_tls",
    "http_auth_tls",
    "tls_connects",
    "idle_memory",
    "idle_memory_tls",
    "longpoll_memory",
    "reconnect_storm",
    "control_fanout",
    "mgmt_listing",
    "codec",
]


def _wait_quiet(limit: float) -> None:
    """Sleep until the 1-minute load average is below nproc/2, at most `limit` seconds."""
    target = (os.cpu_count() or 1) / 2
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        load = float(Path("/proc/loadavg").read_text().split()[0])
        if load < target:
            return
        logging.info("load average %.2f >= %.1f: waiting", load, target)
        time.sleep(5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller loads, fewer repeats (<10 min)")
    ap.add_argument("--only", default="", help=f"comma list of: {', '.join(ALL)}")
    ap.add_argument("--repeats", type=int, default=0)
    ap.add_argument("--duration", type=float, default=0.0)
    ap.add_argument("--work", default="", help="scratch directory (default bench/out/work)")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="before each scenario wait up to S seconds for the 1-minute load average to fall"
        " below half the CPU count (the machine may be shared)",
    )
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    names = [n for n in a.only.split(",") if n] or (QUICK if a.quick else list(ALL))
    unknown = [n for n in names if n not in ALL]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}; known: {', '.join(ALL)}")
    work = Path(a.work) if a.work else ROOT / "bench" / "out" / "work"
    if work.exists():
        shutil.rmtree(work)
    ctx = Ctx(
        work=work,
        quick=a.quick,
        repeats=a.repeats or (2 if a.quick else 3),
        duration=a.duration or (1.0 if a.quick else 3.0),
    )
    results = (
        json.loads(RESULTS_JSON.read_text())
        if RESULTS_JSON.exists()
        else {"machine": {}, "runs": {}, "rows": []}
    )
    results["machine"] = report.machine_facts()
    command = "scripts/bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    for name in names:
        if a.wait_quiet:
            _wait_quiet(a.wait_quiet)
        logging.info("scenario %s", name)
        t = time.monotonic()
        loadavg = Path("/proc/loadavg").read_text().split(" ", 3)[:3]
        try:
            rows = [r.to_json() for r in ALL[name](ctx)]
        except Exception as exc:  # one broken scenario must not lose the others' results
            logging.exception("scenario %s failed", name)
            rows = [Row(name, "-", "-", "failed", "", None, [], f"failed: {exc}").to_json()]
        produced = {r["scenario"] for r in rows} | {name}
        # Retired figures stay only until their successor has figures of its own.
        measured = {r["scenario"] for r in rows if r["value"] is not None}
        gone = {old for old, (succ, _why) in report.RETIRED.items() if succ in measured}
        results["rows"] = [
            r for r in results["rows"] if r["scenario"] not in produced | gone
        ] + rows
        for old in gone:
            results["runs"].pop(old, None)
        for scen in produced:
            results["runs"][scen] = {
                "command": command.strip(),
                "when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "repeats": ctx.repeats,
                "duration": ctx.duration,
                "loadavg": " ".join(loadavg),
            }
        logging.info("scenario %s done in %.0f s", name, time.monotonic() - t)
        RESULTS_JSON.write_text(json.dumps(results, indent=1) + "\n")
        report.write(results, RESULTS_MD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
