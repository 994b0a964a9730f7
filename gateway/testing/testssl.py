"""testssl.sh (Debian's ``testssl``) against the gateway's TLS ports, judged.

The acceptance rule (docs/decisions.md "TLS policies"): no finding of severity HIGH or
CRITICAL on any TLS port, except ``cert_revocation`` (the development CA issues no CRL or
OCSP URI: it has neither, and devices pin it).  :func:`scan` runs one target and returns
its findings; :func:`blocking` applies the rule.  ``tests/conformance/tls/test_07_testssl.py``
scans both ports in the quick mode; ``scripts/testssl`` runs this module's :func:`main`:
a fresh gateway process, full scans of both ports plus a connector on the ``legacy`` policy,
a summary on stdout, the JSON reports in ``--out``.

testssl.sh needs the connector name for SNI (a handshake without SNI fails by design,
docs/protocol.md §1), so it is given ``<cid>.m2.localhost`` with ``--ip 127.0.0.1``; it
trusts the development CA through ``--add-ca``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import httpx
import msgspec
import trio

from gateway.testing.server import gateway_process

__all__ = ["ALLOWED", "QUICK_CHECKS", "Finding", "Target", "blocking", "main", "scan"]

TESTSSL = "testssl"  # Debian's name for testssl.sh (scripts/bootstrap installs it)
# Findings that are not about our TLS configuration but about the development CA: it has no
# revocation service, and devices pin it rather than check revocation.
ALLOWED = frozenset({"cert_revocation"})
BLOCKING_SEVERITIES = frozenset({"HIGH", "CRITICAL"})
# Every check that rates anything (protocols, cipher categories, forward secrecy, server
# order, server defaults, HTTP headers, vulnerabilities); the full run adds the per-cipher
# listings and client simulations, which only inform.
QUICK_CHECKS = ("-p", "-s", "-f", "-P", "-S", "-h", "-U")
SCAN_TIMEOUT_S = 600.0


class Finding(msgspec.Struct, frozen=True):
    id: str
    severity: str
    finding: str


class Target(msgspec.Struct, frozen=True):
    """One scan: a connector's name on one port."""

    label: str  # e.g. "tls (default policy)"
    server_name: str
    port: int


def find_testssl() -> str | None:
    return shutil.which(TESTSSL)


async def scan(
    target: Target, *, ca_path: str, json_path: Path, quick: bool = False
) -> list[Finding]:
    """Run testssl.sh against ``target`` on 127.0.0.1; the JSON report lands in
    ``json_path`` (which must not exist: testssl.sh refuses to overwrite).  Raises
    ``RuntimeError`` when testssl.sh is missing or wrote no report, and
    ``trio.TooSlowError`` past :data:`SCAN_TIMEOUT_S`."""
    program = find_testssl()
    if program is None:
        raise RuntimeError("testssl is not installed (scripts/bootstrap --system installs it)")
    command = [
        program,
        *(QUICK_CHECKS if quick else ()),
        "--ip",
        "127.0.0.1",
        "--add-ca",
        ca_path,
        "--jsonfile",
        str(json_path),
        "--color",
        "0",
        "--warnings",
        "off",
        "--quiet",
        f"{target.server_name}:{target.port}",
    ]
    with trio.fail_after(SCAN_TIMEOUT_S):
        # testssl.sh exits with the number of failed checks; the report is what counts
        await trio.run_process(
            command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    report = trio.Path(json_path)
    if not await report.exists():
        raise RuntimeError(f"testssl wrote no report for {target.label}")
    return msgspec.convert(json.loads(await report.read_text()), list[Finding], strict=False)


def blocking(findings: Sequence[Finding]) -> list[Finding]:
    """The findings that fail the acceptance rule (module docstring)."""
    return [f for f in findings if f.severity in BLOCKING_SEVERITIES and f.id not in ALLOWED]


def _summary(target: Target, findings: Sequence[Finding]) -> list[str]:
    by_id = {f.id: f for f in findings}
    offered = [
        name
        for key, name in [("TLS1", "1.0"), ("TLS1_1", "1.1"), ("TLS1_2", "1.2"), ("TLS1_3", "1.3")]
        if key in by_id and by_id[key].finding.startswith("offered")
    ]
    order = by_id.get("cipher_order")
    lines = [
        f"{target.label}: {target.server_name}:{target.port}",
        f"  TLS versions offered: {', '.join(offered) or '?'}",
        f"  server cipher order: {order.finding if order else '?'}",
    ]
    notable = [f for f in findings if f.severity in {"MEDIUM", "HIGH", "CRITICAL"}]
    for f in notable:
        verdict = (
            "(allowed)"
            if f.id in ALLOWED
            else "(BLOCKING)"
            if f.severity in BLOCKING_SEVERITIES
            else ""
        )
        lines.append(f"  {f.severity:8} {f.id}: {f.finding[:90]} {verdict}".rstrip())
    lines.append(f"  verdict: {'FAIL' if blocking(findings) else 'ok'}")
    return lines


async def _run(out: Path, quick: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="testssl-gw-") as tmp:
        data = Path(tmp) / "data"
        with gateway_process(data, dev=False, timeout=60) as (_proc, gw):
            async with httpx.AsyncClient(base_url=gw.api, headers=gw.admin_headers) as api:
                created = await api.post(
                    "/connectors",
                    json={
                        "name": "Legacy",
                        "id": "legacy",
                        "settings": {"tls": {"policy": "legacy"}},
                    },
                )
                created.raise_for_status()
            targets = [
                Target("tls (default policy)", "demo.m2.localhost", gw.ports["tls"]),
                Target("mqtt_tls (default policy)", "demo.m2.localhost", gw.ports["mqtt_tls"]),
                Target("tls (legacy policy)", "legacy.m2.localhost", gw.ports["tls"]),
            ]
            results: dict[str, list[Finding]] = {}

            async def one(index: int, target: Target) -> None:
                path = out / f"testssl-{index}-{target.label.split()[0]}-{target.server_name}.json"
                path.unlink(missing_ok=True)
                results[target.label] = await scan(
                    target, ca_path=gw.ca, json_path=path, quick=quick
                )

            async with trio.open_nursery() as nursery:
                for index, target in enumerate(targets):
                    nursery.start_soon(one, index, target)
    lines = [line for target in targets for line in _summary(target, results[target.label])]
    sys.stdout.write("\n".join([*lines, f"reports: {out}", ""]))
    return 1 if any(blocking(found) for found in results.values()) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/testssl``: scan a fresh gateway (module docstring); exit 1 on a blocking
    finding."""
    parser = argparse.ArgumentParser(prog="scripts/testssl", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the checks that rate")
    parser.add_argument("--out", type=Path, default=None, help="directory for the JSON reports")
    args = parser.parse_args(argv)
    out: Path = args.out or Path(tempfile.mkdtemp(prefix="testssl-"))
    out.mkdir(parents=True, exist_ok=True)
    return trio.run(_run, out, args.quick)


if __name__ == "__main__":
    sys.exit(main())
