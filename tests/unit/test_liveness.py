"""When a node may declare other nodes of a cluster lost (gateway/services/liveness.py):
only once its own beats have gone through without a gap for ``lost_after_s``, so that a
store outage or its own stall never makes it take live nodes' devices offline."""

from __future__ import annotations

from gateway.services.liveness import GAP_BEATS, BeatTracker


def test_a_node_reaps_only_after_steady_beats_for_the_whole_bound() -> None:
    t = BeatTracker(every=2.0, lost_after_s=15.0)
    assert not t.may_reap(0.0)  # nothing has gone through yet
    for i in range(8):
        t.ok(2.0 * i)  # 0 .. 14
        assert not t.may_reap(2.0 * i + 0.5)
    assert not t.may_reap(14.9)
    assert t.may_reap(15.0)


def test_a_failed_beat_starts_the_count_again() -> None:
    """The store was away (a PostgreSQL restart): every row aged meanwhile, the others'
    too, so no reaping until every live node has had ``lost_after_s`` to beat again."""
    t = BeatTracker(every=2.0, lost_after_s=15.0)
    for i in range(20):
        t.ok(2.0 * i)
    assert t.may_reap(40.0)
    t.failed()
    assert not t.may_reap(42.0)
    t.ok(44.0)
    assert not t.may_reap(58.9)
    assert t.may_reap(59.0)


def test_a_gap_between_own_beats_starts_the_count_again() -> None:
    """This node stalled (CPU starved, its writer queue long): what it sees of the others is
    late, so it waits as after an outage."""
    t = BeatTracker(every=2.0, lost_after_s=15.0)
    for i in range(10):
        t.ok(2.0 * i)  # 0 .. 18
    assert t.may_reap(18.0)
    t.ok(18.0 + GAP_BEATS * 2.0)  # exactly the largest spacing that is not a gap
    assert t.may_reap(24.0)
    t.ok(24.0 + GAP_BEATS * 2.0 + 0.1)  # a gap
    assert not t.may_reap(30.2)
    assert t.may_reap(30.1 + 15.0)
