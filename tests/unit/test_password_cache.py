"""The verified-password cache (gateway/services/devices/passwords.py): the keyed proof, the
LRU bound and its memory, invalidation by committed events, and — against a real store — that
a proof is bound to the stored hash, so a reset or a lock refuses the old password on the
next check even when no event ever reaches the cache."""

from __future__ import annotations

import tracemalloc

import pytest

from gateway.errors import Refused
from gateway.metrics import Metrics
from gateway.mgmt.exporter import NodeCollector, exposition
from gateway.services.bundle import Services
from gateway.services.connectors import ConnectorSettings, ProvisioningSettings
from gateway.services.devices import auth
from gateway.services.devices.passwords import BYTES_PER_ENTRY, PasswordCache
from gateway.store.api import CommittedEvent, EventMeta

PW = "correct horse battery staple"
PW2 = "a different but long password"
HASH = "scrypt:00:11"
HIT = (("outcome", "hit"),)
MISS = (("outcome", "miss"),)


def _event(kind: str, identity: str | None, cid: str = "c") -> CommittedEvent:
    return CommittedEvent(cid, 1, 0, kind, identity, None, None, None, None, None)


def test_proof_is_keyed_and_covers_every_field() -> None:
    a = PasswordCache(10, Metrics(), key=b"k" * 32)
    b = PasswordCache(10, Metrics(), key=b"j" * 32)
    p = a.proof("c", "dev", HASH, PW)
    assert len(p) == 32
    assert PW.encode() not in p
    assert p == a.proof("c", "dev", HASH, PW)  # deterministic under one key
    assert p != b.proof("c", "dev", HASH, PW)  # another process's key: another proof
    others = {
        a.proof("d", "dev", HASH, PW),
        a.proof("c", "dev2", HASH, PW),
        a.proof("c", "dev", "scrypt:00:12", PW),
        a.proof("c", "dev", HASH, PW + "x"),
        # length-prefixed fields: moving a boundary changes the proof
        a.proof("cd", "ev", HASH, PW),
        a.proof("c", "dev" + HASH, "", PW),
    }
    assert p not in others
    assert len(others) == 6
    # without a key given, each cache draws its own
    assert PasswordCache(1, Metrics()).proof("c", "dev", HASH, PW) != PasswordCache(
        1, Metrics()
    ).proof("c", "dev", HASH, PW)


def test_hit_miss_and_metrics() -> None:
    m = Metrics()
    cache = PasswordCache(10, m)
    proof = cache.proof("c", "dev", HASH, PW)
    assert not cache.admits("c", "dev", proof)
    cache.remember("c", "dev", proof)
    assert cache.admits("c", "dev", proof)
    assert not cache.admits("c", "dev", cache.proof("c", "dev", HASH, PW2))  # no match
    assert not cache.admits("c", "other", proof)  # a proof is the device's own
    assert (m.password_cache[HIT], m.password_cache[MISS]) == (1, 3)
    assert m.password_cache_entries[()] == 1
    text = exposition(NodeCollector(m, [])).decode()
    assert 'gateway_password_cache_total{outcome="hit"} 1.0' in text
    assert 'gateway_password_cache_total{outcome="miss"} 3.0' in text
    assert "gateway_password_cache_entries 1.0" in text


def test_bound_evicts_least_recently_used() -> None:
    m = Metrics()
    cache = PasswordCache(3, m)
    proofs = {d: cache.proof("c", d, HASH, PW) for d in ("a", "b", "c", "d")}
    for d in ("a", "b", "c"):
        cache.remember("c", d, proofs[d])
    assert cache.admits("c", "a", proofs["a"])  # a is now the most recently used
    cache.remember("c", "d", proofs["d"])  # evicts b, the least recently used
    assert len(cache) == 3
    assert m.password_cache_entries[()] == 3
    assert not cache.admits("c", "b", proofs["b"])
    assert all(cache.admits("c", d, proofs[d]) for d in ("a", "c", "d"))
    cache.remember("c", "a", cache.proof("c", "a", "scrypt:new", PW))  # replaces, no growth
    assert len(cache) == 3
    assert not cache.admits("c", "a", proofs["a"])


def test_capacity_zero_remembers_nothing() -> None:
    cache = PasswordCache(0, Metrics())
    proof = cache.proof("c", "dev", HASH, PW)
    cache.remember("c", "dev", proof)
    assert len(cache) == 0
    assert not cache.admits("c", "dev", proof)
    with pytest.raises(ValueError):
        PasswordCache(-1, Metrics())


def test_committed_events_drop_entries() -> None:
    m = Metrics()
    cache = PasswordCache(10, m)
    for d in ("locked", "deleted", "reprovision", "provisioned", "kept", "moved"):
        cache.remember("c", d, cache.proof("c", d, HASH, PW))
    cache.remember("other", "kept", cache.proof("other", "kept", HASH, PW))
    cache.on_events(
        [
            _event("locked", "locked"),
            _event("deleted", "deleted"),
            _event("reprovision", "reprovision"),
            _event("provisioned", "provisioned"),
            _event("data_in", "kept"),
            _event("connect", "kept"),
            _event("locked", "kept", cid="elsewhere"),
            _event("locked", None),
        ]
    )
    assert sorted(k for k in cache._entries) == [("c", "kept"), ("c", "moved"), ("other", "kept")]
    assert m.password_cache_entries[()] == 3
    cache.clear()
    assert len(cache) == 0
    assert m.password_cache_entries[()] == 0


def test_memory_per_entry_is_bounded() -> None:
    n = 5000
    cache = PasswordCache(n, Metrics())
    cid = "conn" + "x" * 16
    idents = [f"device-{i:032d}" for i in range(n)]  # 39 characters, like a MAC-ish id
    proofs = [cache.proof(cid, ident, HASH, PW) for ident in idents]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for ident, proof in zip(idents, proofs, strict=True):
            cache.remember(cid, ident, proof)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # the identity strings and proofs already exist here; add what the cache keeps of them
    per_entry = used / n + (len(idents[0]) + 49) + (32 + 33)
    assert per_entry < BYTES_PER_ENTRY, per_entry
    assert len(cache) == n


# -- against a real store: the proof is bound to the stored hash ---------------------------

META = EventMeta(connection_id="t", ip=None, protocol="onep:v1/http")


async def _password_device(services: Services, identity: str = "p1") -> str:
    c = await services.connectors.create(
        name="t",
        connector_id="pwcon",
        settings=ConnectorSettings(provisioning=ProvisioningSettings(auth_type="password")),
        resources=[],
    )
    await services.devices.activate(c.id, identity, ip=None, meta=META, password=PW)
    return c.id


async def test_second_check_is_a_hit(services: Services) -> None:
    cid = await _password_device(services)
    m = services.metrics
    assert (await services.devices.authenticate_password(cid, "p1", PW)).identity == "p1"
    assert (m.password_cache[HIT], m.password_cache[MISS]) == (0, 1)
    for _ in range(3):
        await services.devices.authenticate_password(cid, "p1", PW)
    assert (m.password_cache[HIT], m.password_cache[MISS]) == (3, 1)
    # wrong passwords are never remembered: each one is a miss (scrypt) and refused
    for _ in range(2):
        with pytest.raises(Refused) as info:
            await services.devices.authenticate_password(cid, "p1", PW2)
        assert info.value.reason == "not_authenticated"
    assert (m.password_cache[HIT], m.password_cache[MISS]) == (3, 3)
    assert len(services.devices.passwords) == 1


async def test_committed_events_reach_the_cache(services: Services) -> None:
    """The composition root feeds the store's committed events to the cache."""
    cid = await _password_device(services)
    await services.devices.authenticate_password(cid, "p1", PW)
    assert len(services.devices.passwords) == 1
    await services.devices.update(cid, "p1", locked=True)
    assert len(services.devices.passwords) == 0


async def test_reset_refuses_the_old_password_without_any_event(services: Services) -> None:
    """A cache that never hears of the reset (its event is late) still cannot admit the
    old password: its proof covers the old stored hash."""
    cid = await _password_device(services)
    deaf = PasswordCache(10, Metrics())  # fed no events at all
    await auth.authenticate_password(services.store, deaf, cid, "p1", PW)
    await auth.authenticate_password(services.store, deaf, cid, "p1", PW)
    assert deaf.metrics.password_cache[HIT] == 1
    await services.devices.update(cid, "p1", reprovision=True)
    with pytest.raises(Refused):  # revoked: no hash at all
        await auth.authenticate_password(services.store, deaf, cid, "p1", PW)
    await services.devices.activate(cid, "p1", ip=None, meta=META, password=PW2)
    with pytest.raises(Refused) as info:
        await auth.authenticate_password(services.store, deaf, cid, "p1", PW)
    assert info.value.reason == "not_authenticated"
    assert len(deaf) == 1  # the stale proof is still there, and useless
    await auth.authenticate_password(services.store, deaf, cid, "p1", PW2)
    # the same password again after a reset: a new salt, a new hash, so scrypt runs again
    await services.devices.update(cid, "p1", reprovision=True)
    await services.devices.activate(cid, "p1", ip=None, meta=META, password=PW2)
    misses = deaf.metrics.password_cache[MISS]
    await auth.authenticate_password(services.store, deaf, cid, "p1", PW2)
    assert deaf.metrics.password_cache[MISS] == misses + 1


async def test_lock_and_delete_refuse_despite_a_proof(services: Services) -> None:
    cid = await _password_device(services)
    deaf = PasswordCache(10, Metrics())
    await auth.authenticate_password(services.store, deaf, cid, "p1", PW)
    await services.devices.update(cid, "p1", locked=True)
    with pytest.raises(Refused) as info:
        await auth.authenticate_password(services.store, deaf, cid, "p1", PW)
    assert (info.value.reason, info.value.http_status) == ("locked", 403)
    await services.devices.update(cid, "p1", locked=False)
    await auth.authenticate_password(services.store, deaf, cid, "p1", PW)
    # a locked device's right password is checked but not remembered (the lock's event
    # may already have been and gone)
    fresh = PasswordCache(10, Metrics())
    await services.devices.update(cid, "p1", locked=True)
    with pytest.raises(Refused) as info:
        await auth.authenticate_password(services.store, fresh, cid, "p1", PW)
    assert info.value.reason == "locked"
    with pytest.raises(Refused) as info:  # the wrong one is refused as wrong, locked or not
        await auth.authenticate_password(services.store, fresh, cid, "p1", PW2)
    assert info.value.reason == "not_authenticated"
    assert len(fresh) == 0
    await services.devices.update(cid, "p1", locked=False)
    await services.devices.delete(cid, "p1")
    with pytest.raises(Refused) as info:
        await auth.authenticate_password(services.store, deaf, cid, "p1", PW)
    assert info.value.reason == "not_authenticated"
    # re-added with the same password: a new hash, so the old proof does not carry over
    await services.devices.add(cid, "p1", auth_type="password", key=PW)
    hits = deaf.metrics.password_cache[HIT]
    await auth.authenticate_password(services.store, deaf, cid, "p1", PW)
    assert deaf.metrics.password_cache[HIT] == hits
