"""Byte-for-byte answers of the HTTP/1.1 device API (status line, headers and their order,
body, and whether the connection stays open) for every route and error in
``answers.CASES``, compared with the answers recorded in ``data/answers.json``.

The recording was made from the hypercorn path before the compiled fast path existed, so
this test holds every path to the answers devices got before.  To record again after an
intended change of the wire format, run this module with ``GATEWAY_RECORD_ANSWERS=1`` and
review the diff of ``data/answers.json`` like code.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.testing.server import TestGateway, open_test_gateway

from .answers import CASES, prepare, run_case

RECORDED = Path(__file__).parent / "data" / "answers.json"
PATHS: dict[str, dict[str, Any]] = {"hypercorn": {"http_fast_path": False}, "fast": {}}


@pytest.fixture(params=sorted(PATHS))
async def path_gw(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TestGateway]:
    async with open_test_gateway(tmp_path / "data", **PATHS[request.param]) as gw:
        yield gw


async def test_every_answer_is_the_recorded_one(path_gw: TestGateway) -> None:
    values = await prepare(path_gw)
    got = {case.name: await run_case(path_gw, case, values) for case in CASES}
    if os.environ.get("GATEWAY_RECORD_ANSWERS") == "1":
        RECORDED.parent.mkdir(exist_ok=True)
        RECORDED.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n")
    recorded = json.loads(RECORDED.read_text())
    assert sorted(got) == sorted(recorded)
    for name, answers in got.items():
        assert answers == recorded[name], name
