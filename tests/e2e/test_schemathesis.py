"""Schemathesis (property-based, all checks) against a live gateway: every operation of
the OpenAPI document is fuzzed (coverage, fuzzing and stateful phases) and must show no
server error, no undocumented status or content type, no schema mismatch, no accepted
invalid input and no rejected valid input.

The stateful phase follows the document's links (create a connector, then its devices,
resources, content, integrations...), so every operation is reached past the 404 of a random
name; tests/e2e/schemathesis.toml holds its budget and the few documented exceptions.

The live-log tail is excluded: it is an endless Server-Sent Events stream by contract, so
no request to it completes; ``tests/conformance/api`` covers it.  The example budget
(``GATEWAY_SCHEMATHESIS_EXAMPLES``, default 10 per operation) and the stateful budget keep the
run near a minute and a half.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.testing.server import TestGateway, gateway_process

pytestmark = pytest.mark.slow

ST = Path(sys.executable).with_name("schemathesis")
HERE = str(Path(__file__).parent)


def _run(gw: TestGateway, report: Path, *phase_args: str) -> subprocess.CompletedProcess[str]:
    url = f"http://127.0.0.1:{gw.ports['api']}/api/v1/openapi.json"
    cmd = [
        str(ST) if ST.exists() else "schemathesis",
        "--config-file",
        str(Path(HERE) / "schemathesis.toml"),
        "run",
        url,
        *phase_args,
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {gw.admin_token}",
        "--exclude-operation-id",
        "tailLogs",
        "--request-timeout",
        "20",
        "--generation-deterministic",
        "--no-shrink",
        "--max-failures",
        "20",
        "--report-dir",
        str(report),
    ]
    env = {
        **os.environ,
        "NO_COLOR": "1",
        # real PEM for the formats the document names (see that module)
        "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.skipif(
    not ST.exists() and shutil.which("schemathesis") is None,
    reason="schemathesis is not installed (pip install -e .[test])",
)
def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    examples = os.environ.get("GATEWAY_SCHEMATHESIS_EXAMPLES", "10")
    with gateway_process(tmp_path / "data") as (_proc, gw):
        # The stateful phase first, on an empty gateway: deterministic generation repeats
        # the connector ids of the other phases, whose creations would answer 409 and end
        # every chain of links at its first step.
        stateful = _run(gw, tmp_path / "stateful", "--phases", "stateful")
        assert stateful.returncode == 0, stateful.stdout[-8000:] + stateful.stderr[-2000:]
        assert "Stateful" in stateful.stdout
        rest = _run(
            gw,
            tmp_path / "report",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            examples,
        )
    assert rest.returncode == 0, rest.stdout[-8000:] + rest.stderr[-2000:]
