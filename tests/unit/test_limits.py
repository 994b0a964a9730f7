"""The limit mechanics of gateway/services/limits.py, driven by explicit clock readings
(no I/O, no sleeps), and the settings' validation."""

from __future__ import annotations

import msgspec
import pytest
import trio
import trio.testing

from gateway.errors import BadRequest, RateLimited
from gateway.frontdoor.limits import HandshakesPerIp
from gateway.metrics import Metrics
from gateway.services.connectors import ConnectorSettings
from gateway.services.limits import (
    Backoff,
    BackoffTable,
    DeviceLimits,
    Flapping,
    FlappingTable,
    Limits,
    PublishBudget,
    Rate,
    RateTable,
    check_limits,
    ip_key,
)


def test_token_bucket_burst_then_rate() -> None:
    table: RateTable[str] = RateTable(16)
    rate = Rate(10, 5)
    assert [table.take("a", rate, 0.0) for _ in range(5)] == [0.0] * 5
    assert table.take("a", rate, 0.0) == pytest.approx(0.1)  # the 6th waits a tenth
    assert table.take("b", rate, 0.0) == 0.0  # another key has its own bucket
    assert table.take("a", rate, 0.1) == 0.0  # one token back after 0.1 s
    assert table.take("a", rate, 0.1) > 0
    assert table.take("a", rate, 100.0) == 0.0  # refilled, but never above the burst
    assert [table.take("a", rate, 100.0) for _ in range(5)].count(0.0) == 4


def test_rate_zero_is_off_and_a_cost_above_the_burst_asks_for_the_burst() -> None:
    table: RateTable[str] = RateTable(16)
    assert all(table.take("a", Rate(0, 1), 0.0) == 0.0 for _ in range(1000))
    assert len(table) == 0  # nothing kept for a limit that is off
    assert table.take("a", Rate(1, 10), 0.0, cost=1e9) == 0.0  # a whole full bucket
    assert table.take("a", Rate(1, 10), 0.0, cost=1) == pytest.approx(1.0)


def test_tables_stay_bounded_and_evict_the_idle_key() -> None:
    table: RateTable[int] = RateTable(100)
    rate = Rate(1, 1)
    table.take(-1, rate, 0.0)  # spent: it would wait
    for i in range(10_000):
        table.take(i, rate, 1.0)
        if i == 50:
            assert table.take(-1, rate, 1.0) == 0.0  # touched again: most recent
            table.take(-1, rate, 1.0)
    assert len(table) == 100
    # the flood evicted the key idle longest, -1 included (a fresh bucket, as if idle)
    assert table.take(-1, rate, 1.0) == 0.0


def test_backoff_budget_then_doubling_then_forgiven() -> None:
    table: BackoffTable[str] = BackoffTable(16)
    policy = Backoff(burst=3, rate=0.01, backoff_s=1, max_backoff_s=8)
    assert [table.failed("ip", policy, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert table.closed_for("ip", 0.0) == 0.0
    assert table.failed("ip", policy, 0.0) == 1.0  # budget spent: closed 1 s
    assert table.closed_for("ip", 0.5) == pytest.approx(0.5)
    assert table.closed_for("ip", 1.0) == 0.0
    assert table.failed("ip", policy, 1.0) == 2.0  # each further failure doubles...
    assert table.failed("ip", policy, 3.0) == 4.0
    assert table.failed("ip", policy, 7.0) == 8.0
    assert table.failed("ip", policy, 15.0) == 8.0  # ... up to max_backoff_s
    # the budget refills at 0.01 failure/s: 300 s later it is full, the doubling forgotten
    assert table.failed("ip", policy, 400.0) == 0.0
    assert table.failed("other", policy, 100.0) == 0.0


def test_flapping_bans_after_max_connects_in_the_window() -> None:
    table: FlappingTable[str] = FlappingTable(16)
    policy = Flapping(max_connects=3, window_s=10, ban_s=60)
    assert [table.connect("d", policy, t) for t in (0.0, 1.0, 2.0)] == [0.0] * 3
    assert table.connect("d", policy, 3.0) == 60.0  # the 4th within 10 s: banned
    assert table.connect("d", policy, 30.0) == pytest.approx(33.0)  # still banned
    assert table.connect("d", policy, 63.0) == 0.0  # ban over, a new window
    # connects spread wider than the window never ban
    assert all(table.connect("e", policy, 11.0 * i) == 0.0 for i in range(20))


def test_publish_budget_goes_into_debt_and_says_which_limit() -> None:
    budget = PublishBudget(Rate(10, 10), Rate(1000, 100_000), 0.0)
    assert budget.charge(10, 100, 0.0) == (0.0, "")
    wait, limit = budget.charge(20, 100, 0.0)
    assert (wait, limit) == (pytest.approx(2.0), "publish_rate")
    assert budget.charge(0, 0, 2.0)[0] == 0.0  # the debt is paid by waiting
    wait, limit = budget.charge(1, 150_000, 2.1)
    assert limit == "publish_bytes"
    assert wait == pytest.approx(50.0, rel=0.01)


def test_ip_key() -> None:
    assert ip_key("192.0.2.7") == "192.0.2.7"
    assert ip_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert ip_key("2001:db8:1:2:aaaa::1") == ip_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert ip_key("2001:db8:1:3::1") != ip_key("2001:db8:1:2::1")
    assert ip_key("") == ""


def test_device_limits_refuse_with_reason_and_count() -> None:
    now = [0.0]
    metrics = Metrics()
    settings = Limits(
        auth_failures_per_ip=Backoff(burst=2, rate=0.01, backoff_s=5, max_backoff_s=60),
        flapping=Flapping(max_connects=2, window_s=60, ban_s=30),
        publishes=Rate(1, 2),
    )
    limits = DeviceLimits(
        lambda cid: settings if cid == "c" else None, metrics, clock=lambda: now[0]
    )
    for _ in range(3):
        limits.check_auth("c", "10.0.0.1")
        limits.auth_failed("c", "10.0.0.1", "not_authenticated")
    with pytest.raises(RateLimited) as info:
        limits.check_auth("c", "10.0.0.1")
    assert info.value.reason == "auth_backoff"
    assert info.value.retry_after_s == 5.0
    assert info.value.http_status == 429
    assert int(info.value.connack) == 3
    limits.check_auth("c", "10.0.0.2")  # another address is not concerned
    limits.auth_failed("c", "10.0.0.3", "locked")  # not a guess: never counted
    limits.auth_failed("c", "10.0.0.3", "locked")
    limits.auth_failed("c", "10.0.0.3", "locked")
    limits.check_auth("c", "10.0.0.3")
    limits.connected("c", "dev")
    limits.connected("c", "dev")
    with pytest.raises(RateLimited, match="banned"):
        limits.connected("c", "dev")
    limits.http_publish("c", 1, 10)
    limits.http_publish("c", 1, 10)
    with pytest.raises(RateLimited) as info:
        limits.http_publish("c", 1, 10)
    assert info.value.reason == "publish_rate"
    limits.check_auth("unknown", "10.0.0.1")  # an unknown connector limits nothing
    assert dict(metrics.limited) == {
        (("connector", "c"), ("limit", "auth_backoff")): 1,
        (("connector", "c"), ("limit", "flapping")): 1,
        (("connector", "c"), ("limit", "publish_rate")): 1,
    }


def test_activation_failures_ignore_already_provisioned() -> None:
    settings = Limits(activation_failures_per_ip=Backoff(burst=1, rate=0.01))
    limits = DeviceLimits(lambda cid: settings, Metrics(), clock=lambda: 0.0)
    for _ in range(50):
        limits.activation_failed("c", "10.0.0.1", "already_provisioned")
    limits.check_activation("c", "10.0.0.1")
    limits.activation_failed("c", "10.0.0.1", "not_found")
    limits.activation_failed("c", "10.0.0.1", "not_found")
    with pytest.raises(RateLimited, match="failed to activate"):
        limits.check_activation("c", "10.0.0.1")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"connections_per_ip": {"rate": -1, "burst": 1}}, "limits.connections_per_ip.rate"),
        ({"connections": {"rate": 5, "burst": 0}}, "limits.connections.burst"),
        ({"publish_bytes": {"rate": 10, "burst": 0.5}}, "limits.publish_bytes.burst"),
        ({"auth_failures_per_ip": {"burst": 5, "rate": 0}}, "limits.auth_failures_per_ip.rate"),
        (
            {"activation_failures_per_ip": {"backoff_s": 0, "max_backoff_s": 5}},
            "limits.activation_failures_per_ip",
        ),
        ({"flapping": {"max_connects": 5, "window_s": 0}}, "limits.flapping.window_s"),
        ({"upload_quota": -1}, "limits.upload_quota"),
        ({"max_payload": 10}, "limits.max_payload"),
    ],
)
def test_settings_out_of_range_are_refused_by_name(change: dict[str, object], message: str) -> None:
    settings = msgspec.convert({"limits": change}, ConnectorSettings)
    with pytest.raises(BadRequest, match=message):
        settings.validate()


def test_defaults_validate_and_off_is_allowed() -> None:
    check_limits(Limits())
    off = msgspec.convert(
        {
            "connections_per_ip": {"rate": 0, "burst": 1},
            "connections": {"rate": 0, "burst": 1},
            "publishes": {"rate": 0, "burst": 1},
            "publish_bytes": {"rate": 0, "burst": 1},
            "auth_failures_per_ip": {"burst": 0},
            "activation_failures_per_ip": {"burst": 0},
            "flapping": {"max_connects": 0},
            "upload_quota": 0,
        },
        Limits,
    )
    check_limits(off)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"connections_per_ip": {"rate": 1, "burst": 1, "x": 1}}, Limits)


async def test_handshake_gate_guarantees_per_ip_and_lends_while_slots_are_free() -> None:
    free = [100.0]
    gate = HandshakesPerIp(2, lambda: free[0])
    entered: list[int] = []

    async def one(i: int, done: trio.Event) -> None:
        async with gate.turn("10.0.0.1"):
            entered.append(i)
            await done.wait()

    done = trio.Event()
    async with trio.open_nursery() as nursery:
        for i in range(5):  # 2 own turns, 3 borrowed: 100 slots are free
            nursery.start_soon(one, i, done)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(entered) == [0, 1, 2, 3, 4]
        free[0] = 2  # the door is contended now: no more borrowing
        nursery.start_soon(one, 5, done)
        async with gate.turn("10.0.0.2") as other:  # another address has its own turns
            assert other.got
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(entered) == [0, 1, 2, 3, 4]  # the 6th waits for one of its address's turns
        assert len(gate) == 1
        done.set()
    assert sorted(entered) == [0, 1, 2, 3, 4, 5]
    assert len(gate) == 0  # nothing kept once the address has no handshake in flight


async def test_handshake_gate_forgets_a_cancelled_waiter() -> None:
    gate = HandshakesPerIp(1, lambda: 0.0)
    async with gate.turn("10.0.0.1"):
        waiting = gate.turn("10.0.0.1")
        with trio.CancelScope() as scope:
            scope.cancel()  # as the handshake deadline does
            async with waiting:
                raise AssertionError("no second turn while the first is held")
        assert not waiting.got
    assert len(gate) == 0
