"""Schemathesis (property-based, all checks) against a live gateway: every operation of
the OpenAPI document is fuzzed (coverage, fuzzing and stateful phases) and must show no
server error, no undocumented status or content type, no schema mismatch, no accepted
invalid input and no rejected valid input.

The live-log tail is excluded: it is an endless Server-Sent Events stream by contract, so
no request to it completes; ``tests/conformance/api`` covers it.  The example budget
(``GATEWAY_SCHEMATHESIS_EXAMPLES``, default 10 per operation) keeps the run near a minute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.testing.server import gateway_process

pytestmark = pytest.mark.slow

ST = Path(sys.executable).with_name("schemathesis")


@pytest.mark.skipif(
    not ST.exists() and shutil.which("schemathesis") is None,
    reason="schemathesis is not installed (pip install -e .[test])",
)
def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    examples = os.environ.get("GATEWAY_SCHEMATHESIS_EXAMPLES", "10")
    with gateway_process(tmp_path / "data") as (_proc, gw):
        url = f"http://127.0.0.1:{gw.ports['api']}/api/v1/openapi.json"
        cmd = [
            str(ST) if ST.exists() else "schemathesis",
            "--config-file",
            str(Path(__file__).with_name("schemathesis.toml")),
            "run",
            url,
            "--checks",
            "all",
            "--max-examples",
            examples,
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
            str(tmp_path / "report"),
        ]
        r = subprocess.run(
            cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "NO_COLOR": "1"}
        )
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-2000:]
