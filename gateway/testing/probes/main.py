"""``scripts/probe``: run the reliability probes and print their figures.

By default a fresh gateway is started in a temporary directory with its shipped defaults
(SQLite ``synchronous=FULL``, the 10 s TLS handshake and 5 s MQTT CONNECT deadlines), the
dev ports on, and its log at DEBUG level, so that the leak scan reads every log line.
``--data DIR`` probes a gateway that is already running on ``DIR`` instead (the log file is
then not scanned).  ``--quick`` shortens what takes long (a 5 s flood, 200 devices).  The
``diskfull`` probe always runs gateways of its own, on a small filesystem it mounts (root
only; skipped with the reason otherwise).

Exit status: 0 when every probe held (catalogue cases marked ``pending``/``known`` may fail:
they are listed), 1 otherwise.  ``--json FILE`` writes every result.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import trio

from gateway.testing.probes import catalogue, checks, diskfull, http_cases, leaks, mqtt_cases
from gateway.testing.probes.flood import handshake_flood
from gateway.testing.probes.target import (
    Canary,
    Target,
    connector_limits,
    find_gateway,
    mgmt_client,
    spawn_gateway,
)

__all__ = ["main"]

PROBES = ("mqtt", "http", "idle", "tokens", "auth", "tls", "flood", "leaks", "diskfull")
DEFAULT_HANDSHAKE_S = 10.0
DEFAULT_CONNECT_S = 5.0


def _print(*parts: object) -> None:
    print(*parts, flush=True)  # noqa: T201 - the report is the command's output


def _catalogue_summary(
    name: str, results: list[catalogue.CaseResult], marks: dict[str, str]
) -> bool:
    failed = [r for r in results if not r.ok]
    unexpected = [r for r in failed if r.name not in marks]
    fixed = sorted({r.name for r in results if r.ok and r.name in marks})
    by_transport: dict[str, int] = {}
    for r in results:
        by_transport[r.transport] = by_transport.get(r.transport, 0) + 1
    _print(
        f"{name}: {len(results) - len(failed)}/{len(results)} cases closed with the expected "
        f"answer and reason ({', '.join(f'{k} {v}' for k, v in by_transport.items())}); "
        "process up and canary served after each"
    )
    for r in failed:
        tag = f"[{marks[r.name]}]" if r.name in marks else "[UNEXPECTED]"
        _print(f"  FAIL {r.transport} {r.name}: {'; '.join(r.problems)} {tag}")
    for n in fixed:
        _print(f"  now passes (drop its marker): {n}")
    return not unexpected


async def _run(
    args: argparse.Namespace, target: Target, workdir: Path, results: dict[str, Any]
) -> bool:
    ok = True
    wanted = args.probes or list(PROBES)
    async with mgmt_client(target) as client:
        canary = await Canary.create(target, client)
        limits = await connector_limits(client, target.connector)
        if "mqtt" in wanted:
            res = await catalogue.run_mqtt_catalogue(
                target, client, canary, mqtt_cases.cases(limits.max_packet_size)
            )
            results["mqtt"] = res
            ok &= _catalogue_summary("MQTT catalogue", res, {})
        if "http" in wanted:
            cases = http_cases.cases(limits.max_payload)
            marks = {c.name: (c.pending or c.known or "") for c in cases if c.pending or c.known}
            res = await catalogue.run_http_catalogue(target, client, canary, cases)
            results["http"] = res
            ok &= _catalogue_summary("HTTP catalogue", res, marks)
        if "idle" in wanted:
            cuts = await checks.check_idle_cuts(
                target, client, handshake_s=args.handshake_s, connect_s=args.connect_s
            )
            results["idle"] = cuts
            for c in cuts:
                _print(
                    f"idle cut: {c.name}: cut after {c.cut_after_s} s (deadline "
                    f"{c.deadline_s} s), reason {c.reason} {'ok' if c.ok else 'FAIL'}"
                )
                ok &= c.ok
        if "tokens" in wanted:
            cross = await checks.check_cross_connector(target, client)
            results["tokens"] = cross
            for what, want, got, good in cross.attempts:
                _print(
                    f"cross-connector: {what}: {got} (expected {want}) {'ok' if good else 'FAIL'}"
                )
            ok &= cross.ok
        if "auth" in wanted:
            walk = await checks.check_management_auth(target)
            results["auth"] = walk
            _print(
                f"management auth: {walk.operations} operations, {walk.refused} calls refused 401 "
                f"(no token and a wrong one); public: {', '.join(walk.public)}"
            )
            for f in walk.failures:
                _print(f"  FAIL {f}")
            for d in walk.dropped:
                _print(f"  closed without an answer (judged by a second call): {d}")
            ok &= walk.ok
        if "tls" in wanted:
            if args.testssl:
                testssl = await checks.run_testssl(target, workdir)
                results["testssl"] = testssl
                for t in testssl:
                    _print(f"testssl {t.port}: {'; '.join(t.offered)}")
                    for p in t.problems:
                        _print(f"  FAIL {p}")
                    ok &= t.ok
            policy = await checks.check_tls_policy(target)
            results["tls"] = policy
            for port in policy:
                versions = ", ".join(
                    f"{v} {'yes' if on else 'no'}" for v, on in port.versions.items()
                )
                _print(
                    f"TLS policy {port.port}: {versions}; TLS 1.2 suites accepted "
                    f"{len(port.tls12_accepted)} ({', '.join(port.tls12_accepted)}), refused "
                    f"{port.tls12_refused}; TLS 1.3 {', '.join(port.tls13_accepted)}"
                )
                for problem in port.problems:
                    _print(f"  FAIL {problem}")
                ok &= port.ok
        if "flood" in wanted:
            flood = await handshake_flood(
                target,
                client,
                seconds=args.flood_seconds,
                workers=args.flood_workers,
                concurrency=args.flood_concurrency,
            )
            results["flood"] = flood
            _print(
                f"handshake flood: {flood.ok} handshakes in {flood.seconds} s "
                f"({flood.per_second}/s, "
                f"p50 {flood.p50_ms} ms, p99 {flood.p99_ms} ms), {flood.refused} refused cleanly, "
                f"{flood.errors} errors; gateway counted {flood.gateway_ok} ok "
                f"{'ok' if flood.holds else 'FAIL'}"
            )
            for s in flood.error_samples:
                _print(f"  {s}")
            ok &= flood.holds
        if "leaks" in wanted:
            found = await leaks.scan_for_secrets(target, client, workdir, devices=args.devices)
            results["leaks"] = found
            _print(
                f"secrets scan: {found.devices} device tokens and {found.secrets} integration "
                f"secret forms searched in {len(found.corpora)} places "
                f"({sum(found.corpora.values())} bytes) in {found.seconds} s: "
                f"{'none found' if found.ok else 'FOUND'}"
            )
            for f in found.findings:
                _print(f"  FAIL {f}")
            ok &= found.ok
        if not target.alive():
            _print("FAIL the gateway process is gone")
            ok = False
    return ok


def _disk_full(workdir: Path, results: dict[str, Any]) -> bool:
    """The disk-full probe (its own gateways on its own small filesystem), against the
    default node (``--workers auto``) and one process (``--workers 1``)."""
    reason = diskfull.mount_unavailable()
    if reason is not None:
        _print(f"disk full: skipped ({reason})")
        return True
    ok = True
    for workers in ("auto", "1"):
        res = trio.run(diskfull.probe_disk_full, workdir, workers)
        results[f"diskfull-{workers}"] = res
        for line in diskfull.summary(res):
            _print(line)
        ok &= res.ok
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/probe", description="Run the reliability probes and print their figures."
    )
    parser.add_argument(
        "probes", nargs="*", metavar="PROBE", help=f"any of {', '.join(PROBES)} (default: all)"
    )
    parser.add_argument(
        "--data", type=Path, help="probe the gateway running on DIR instead of a fresh one"
    )
    parser.add_argument("--quick", action="store_true", help="5 s flood, 200 devices")
    parser.add_argument("--json", type=Path, help="write every result to FILE")
    parser.add_argument(
        "--testssl", action="store_true", help="also run testssl.sh on each TLS port"
    )
    parser.add_argument("--flood-seconds", type=float, default=30.0)
    parser.add_argument("--flood-workers", type=int, default=2)
    parser.add_argument("--flood-concurrency", type=int, default=32)
    parser.add_argument(
        "--devices",
        type=int,
        default=5000,
        help="devices the leak scan provisions over HTTP (plus 2 over MQTT)",
    )
    parser.add_argument(
        "--handshake-s",
        type=float,
        default=DEFAULT_HANDSHAKE_S,
        help="the gateway's handshake_timeout_s",
    )
    parser.add_argument(
        "--connect-s", type=float, default=DEFAULT_CONNECT_S, help="the gateway's connect_timeout_s"
    )
    args = parser.parse_args(argv)
    unknown = [p for p in args.probes if p not in PROBES]
    if unknown:
        parser.error(f"unknown probe {', '.join(unknown)} (choose from {', '.join(PROBES)})")
    if args.quick:
        args.flood_seconds = min(args.flood_seconds, 5.0)
        args.devices = min(args.devices, 200)
    results: dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="gateway-probe-"))
    wanted = args.probes or list(PROBES)
    args.probes = [p for p in wanted if p != "diskfull"]
    ok = True
    try:
        if args.data is not None and args.probes:
            ok = trio.run(_run, args, find_gateway(args.data), workdir, results)
        elif args.probes:
            with spawn_gateway(workdir / "data") as (_, target):
                _print(
                    f"fresh gateway: pid {target.pid}, ports {target.ports}, log {target.log_file}"
                )
                ok = trio.run(_run, args, target, workdir, results)
        if "diskfull" in wanted:
            ok &= _disk_full(workdir, results)
    finally:
        if args.json is not None:
            args.json.write_bytes(msgspec.json.format(msgspec.json.encode(results)))
        shutil.rmtree(workdir, ignore_errors=True)
    _print("all probes held" if ok else "SOME PROBES FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
