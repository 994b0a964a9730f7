"""Differential: the compiled and the pure TLS record I/O agree (ext/tls_records.pyx vs
gateway/_pure/tls_records.py) on real OpenSSL connections.

Each twin gets its own pyOpenSSL client/server pair in memory-BIO mode (the ciphertext
differs between handshakes, the plaintext must not): the client sends one record per
``send`` of random sizes, the server reads with random limits, and both twins must return
the same chunks; writes must decrypt to the same bytes at the client; the end conditions
must raise the same pyOpenSSL exceptions.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from OpenSSL import SSL

from gateway.testing.certs import TestPKI
from gateway.tls.records import handles_for

PURE_ONLY = os.environ.get("GATEWAY_PURE_PYTHON", "") not in ("", "0")
SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
VERSIONS = [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return TestPKI(tmp_path_factory.mktemp("pki"))


def twins() -> tuple[ModuleType, ModuleType]:
    pure = importlib.import_module("gateway._pure.tls_records")
    if PURE_ONLY:
        compiled: ModuleType = pytest.importorskip("gateway._ext.tls_records")
    else:
        compiled = importlib.import_module("gateway._ext.tls_records")
    return pure, compiled


class Pair:
    """A handshaken pyOpenSSL client and server on memory BIOs; ``records`` is the twin's
    record I/O of the server side."""

    def __init__(self, pki: TestPKI, twin: ModuleType, version: int) -> None:
        sctx = SSL.Context(SSL.TLS_SERVER_METHOD)
        sctx.use_certificate_file(str(pki.dev.server_cert))
        sctx.use_privatekey_file(str(pki.dev.server_key))
        sctx.set_min_proto_version(version)
        sctx.set_max_proto_version(version)
        sctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
        self.server = SSL.Connection(sctx, None)
        self.server.set_accept_state()
        self.client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
        self.client.set_connect_state()
        for _ in range(6):
            for side in (self.client, self.server):
                with contextlib.suppress(SSL.WantReadError):
                    side.do_handshake()
            self.shuttle()
        self.records = twin.Records(handles_for(self.server))
        self.records.drain()  # TLS 1.3 session tickets
        self.client_read_all()

    def shuttle(self) -> None:
        for a, b in ((self.client, self.server), (self.server, self.client)):
            try:
                data = a.bio_read(1 << 20)
            except SSL.WantReadError:
                continue
            b.bio_write(data)

    def client_records(self, sizes: list[int]) -> bytes:
        """One record per size (one ``sendall`` each, two records past 16 KiB); all the
        ciphertext arrives at once."""
        plain = b""
        for i, n in enumerate(sizes):
            chunk = bytes([i % 251]) * n
            self.client.sendall(chunk)
            plain += chunk
        self.server.bio_write(self.client.bio_read(1 << 24))
        return plain

    def client_read_all(self) -> bytes:
        out = b""
        while True:
            try:
                out += self.client.recv(1 << 16)
            except SSL.WantReadError:
                return out


def reads(pair: Pair, limits: list[int]) -> list[bytes | None]:
    return [pair.records.read(n) for n in limits]


@SETTINGS
@given(
    st.sampled_from(VERSIONS),
    st.lists(st.integers(1, 20_000), min_size=1, max_size=40),
    st.lists(st.integers(1, 70_000), min_size=1, max_size=8),
)
def test_reads_agree(pki: TestPKI, version: int, sizes: list[int], limits: list[int]) -> None:
    pure, compiled = twins()
    a, b = Pair(pki, pure, version), Pair(pki, compiled, version)
    plain = a.client_records(sizes)
    assert b.client_records(sizes) == plain
    got_a, got_b = reads(a, limits), reads(b, limits)
    assert got_a == got_b
    rest_a = reads(a, [65536] * 40)
    assert rest_a == reads(b, [65536] * 40)
    assert b"".join(x for x in got_a + rest_a if x) == plain
    assert rest_a[-1] is None  # everything read: OpenSSL wants more ciphertext


def test_one_read_returns_every_record(pki: TestPKI) -> None:
    """900 records of 70 bytes (one PUBLISH each) come back from one read."""
    for twin in twins():
        p = Pair(pki, twin, SSL.TLS1_3_VERSION)
        plain = p.client_records([70] * 900)
        assert p.records.read(65536) == plain
        assert p.records.read(65536) is None


@SETTINGS
@given(st.sampled_from(VERSIONS), st.lists(st.integers(0, 100_000), min_size=1, max_size=5))
def test_writes_agree(pki: TestPKI, version: int, sizes: list[int]) -> None:
    for twin in twins():
        p = Pair(pki, twin, version)
        sent = b""
        for i, n in enumerate(sizes):
            data = bytes([i % 251]) * n
            p.records.write(memoryview(data))
            sent += data
        cipher = p.records.drain()
        assert p.records.drain() == b""
        p.client.bio_write(cipher) if cipher else None
        assert p.client_read_all() == sent


def test_writes_make_full_records(pki: TestPKI) -> None:
    """A 40 KiB write is three records (16 + 16 + 8 KiB), not one per call or per packet."""
    for twin in twins():
        p = Pair(pki, twin, SSL.TLS1_3_VERSION)
        p.records.write(b"a" * 40960)
        cipher = p.records.drain()
        # TLS 1.3 record: 5-byte header, plaintext + content type (1) + AES-GCM tag (16)
        assert len(cipher) == 3 * (5 + 17) + 40960


def _end_condition(pki: TestPKI, twin: ModuleType, how: str) -> type[BaseException] | None:
    p = Pair(pki, twin, SSL.TLS1_3_VERSION)
    if how == "close_notify":
        p.client.shutdown()
        p.shuttle()
    elif how == "eof":
        p.server.bio_shutdown()
    elif how == "garbage":
        p.server.bio_write(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
    try:
        p.records.read(1000)
    except SSL.Error as exc:
        return type(exc)
    return None


@pytest.mark.parametrize(
    ("how", "raised"),
    [
        ("close_notify", SSL.ZeroReturnError),
        ("eof", SSL.SysCallError),
        ("garbage", SSL.Error),
    ],
)
def test_end_conditions_raise_what_pyopenssl_raises(
    pki: TestPKI, how: str, raised: type[BaseException]
) -> None:
    results = [_end_condition(pki, twin, how) for twin in twins()]
    assert results == [raised, raised]


def test_data_before_an_end_is_returned_first(pki: TestPKI) -> None:
    """Records followed by close_notify: the data comes first, the end on the next read."""
    for twin in twins():
        p = Pair(pki, twin, SSL.TLS1_3_VERSION)
        plain = p.client_records([10, 20])
        p.client.shutdown()
        p.shuttle()
        assert p.records.read(1000) == plain
        with pytest.raises(SSL.ZeroReturnError):
            p.records.read(1000)
