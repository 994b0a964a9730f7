"""Byte-for-byte answers of the HTTP/1.1 device API (status line, headers and their order,
body, and whether the connection stays open) for every route and error in
``answers.CASES``, compared with the answers recorded in ``data/answers.json``.

The recording was made from the hypercorn path before the compiled fast path existed, so
this test holds every path to the answers devices got before; the cases added since (the
RFC 9112 refusals of docs/reliability.md section 2) were recorded from both paths alike.
To record again after an intended change of the wire format, run this module with
``GATEWAY_RECORD_ANSWERS=1`` and review the diff of ``data/answers.json`` like code.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.testing.server import TestGateway, open_test_gateway

from .answers import CASES, HTTP10_TRANSFER_ENCODING, prepare, run_case

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


async def test_http10_transfer_encoding_is_400_and_close_on_both_paths(
    path_gw: TestGateway,
) -> None:
    """RFC 9112 §6.1: ``Transfer-Encoding`` in an HTTP/1.0 request is faulty framing.  Both
    paths answer 400 with no body and close; the bytes differ only in where the
    ``Connection`` field stands (h11 rewrites it after ``date`` for an HTTP/1.0 peer), so the
    case is checked here rather than in ``CASES``."""
    values = await prepare(path_gw)
    answer, state = await run_case(path_gw, HTTP10_TRANSFER_ENCODING, values)
    head = answer.lower().split("\r\n")
    assert head[0] == "http/1.1 400 "
    assert sorted(head[1:]) == [
        "",
        "",
        "connection: close",
        "content-length: 0",
        "date: <http-date>",
    ]
    assert state == "closed"
