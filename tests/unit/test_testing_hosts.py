"""gateway/testing/hosts.py: a session maps names and leaves the hosts file as it found it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.testing.hosts import mapped_hosts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only root may write a hosts file")


def test_adds_missing_names_and_removes_only_its_own_lines(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    original = "127.0.0.1 localhost\n127.0.0.1 demo.m2.localhost\n::1 localhost\n"
    hosts.write_text(original)
    with mapped_hosts("demo.m2.localhost", "a.m2.localhost", path=hosts) as mapped:
        assert mapped.map("b.m2.localhost")
        text = hosts.read_text()
        assert text.startswith(original)
        lines = text.splitlines()
        assert sum("a.m2.localhost" in line for line in lines) == 1
        assert sum("b.m2.localhost" in line for line in lines) == 1
        assert sum("demo.m2.localhost" in line for line in lines) == 1  # already there
        # another session's line for the same name survives this session's restore
        with hosts.open("a") as fh:
            fh.write("127.0.0.1 a.m2.localhost # gateway-tests pid 1\n")
    assert hosts.read_text() == original + "127.0.0.1 a.m2.localhost # gateway-tests pid 1\n"


def test_restores_when_the_block_fails(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    with pytest.raises(RuntimeError), mapped_hosts("x.m2.localhost", path=hosts):
        raise RuntimeError("boom")
    assert hosts.read_text() == "127.0.0.1 localhost\n"
