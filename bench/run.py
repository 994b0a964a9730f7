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
import sys
import time
from pathlib import Path

from bench import report
from bench.scenarios import SCENARIOS, Ctx, Row

ROOT = Path(__file__).resolve().parent.parent
RESULTS_JSON = ROOT / "bench" / "results.json"
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
QUICK = [
    "mqtt_qos0",
    "mqtt_qos1",
    "http_writes",
    "http_writes_tls",
    "tls_connects",
    "idle_memory",
    "reconnect_storm",
    "control_fanout",
    "mgmt_listing",
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
    ap.add_argument("--only", default="", help=f"comma list of: {', '.join(SCENARIOS)}")
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
    names = [n for n in a.only.split(",") if n] or (QUICK if a.quick else list(SCENARIOS))
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
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
            rows = [r.to_json() for r in SCENARIOS[name](ctx)]
        except Exception as exc:  # one broken scenario must not lose the others' results
            logging.exception("scenario %s failed", name)
            rows = [Row(name, "-", "-", "failed", "", None, [], f"failed: {exc}").to_json()]
        produced = {r["scenario"] for r in rows} | {name}
        results["rows"] = [r for r in results["rows"] if r["scenario"] not in produced] + rows
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
