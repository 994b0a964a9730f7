"""Certificate hot swap under 1,000 live devices, against a gateway process.

Starts ``gateway serve`` (TLS ports and the management API on ephemeral 127.0.0.1 ports,
a fresh data directory), connects ``--devices`` MQTT devices over TLS to a connector with
its own server certificate, replaces that certificate through the settings API, and checks
that new handshakes get the new one while every device stays connected
(:mod:`gateway.testing.hotswap`, the scenario the suite runs with 300).  Prints the result
as JSON; exits 1 when a device was dropped or the new certificate was not served.

    .venv/bin/python bench/tls_hot_swap.py [--devices 1000]

Bounded: the whole run is cancelled after ``--timeout`` seconds (default 300).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import msgspec
import trio

from gateway.testing.hotswap import HotSwapResult, run_hot_swap
from gateway.testing.server import gateway_process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hotswap-") as tmp:
        data = Path(tmp) / "data"
        with gateway_process(data, dev=False, timeout=60) as (_proc, gw):
            ca_key = (data / "tls" / "ca.key").read_text()

            async def run() -> HotSwapResult:
                with trio.fail_after(args.timeout):
                    return await run_hot_swap(
                        api=gw.api,
                        admin_headers=gw.admin_headers,
                        tls_port=gw.ports["tls"],
                        ca_path=gw.ca,
                        ca_key_pem=ca_key,
                        devices=args.devices,
                    )

            result = trio.run(run)
    print(json.dumps(msgspec.to_builtins(result), indent=2))
    ok = result.dropped == 0 and result.served_after == result.new_fingerprint
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
