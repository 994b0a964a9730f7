"""Core services against a real SQLite store: connectors, identities, provisioning rules,
tags and listing, state with pending semantics.  Every refusal is checked to change nothing."""

from __future__ import annotations

import sqlite3

import msgspec
import pytest

from gateway.errors import AlreadyExists, BadRequest, InvalidValue, NotFound, Refused
from gateway.model import CertClaim
from gateway.services.bundle import Services
from gateway.services.connectors import (
    ConnectorSettings,
    IdentityFormat,
    IdentityFormatOptions,
    IpWhitelisting,
    ProvisioningSettings,
    Resource,
)
from gateway.services.control import Push
from gateway.services.devices import MAX_TAGS_PER_DEVICE, Tag, TagRef
from gateway.services.logs import LogFilter
from gateway.store.api import CreateDevice, EventMeta

META = EventMeta(connection_id="t", ip="10.9.8.7", protocol="onep:v1/http")
RESOURCES = [
    Resource("data_in"),
    Resource("data_out", settable=True),
    Resource("temp", format="number", allowed=[1, "10-20"]),
    Resource("flag", format="boolean"),
    Resource("mode", settable=True, sync=False, allowed=["a", "b"], initial="a"),
]


async def _connector(services: Services, **prov: object) -> str:
    settings = ConnectorSettings(provisioning=ProvisioningSettings(**prov))  # type: ignore[arg-type]
    c = await services.connectors.create(
        name="t", connector_id="tcon", settings=settings, resources=RESOURCES
    )
    assert c.fqdn == "tcon.m2.localhost"
    return c.id


def _count(services: Services, table: str) -> int:
    """Rows of ``table`` straight from the database (the tests' oracle), of either backend."""
    sql = f"SELECT count(*) FROM {table}"
    if services.config.store:
        import psycopg

        with psycopg.connect(services.config.store) as pg:
            row = pg.execute(sql).fetchone()
            assert row is not None
            return int(row[0])
    conn = sqlite3.connect(services.config.data_dir / "gateway.db")
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


async def _cred_hash(services: Services, cid: str, identity: str) -> str:
    row = await services.store.device(cid, identity)
    assert row is not None
    assert row.cred_hash is not None
    return row.cred_hash


async def test_connector_validation_changes_nothing(services: Services) -> None:
    with pytest.raises(BadRequest):
        await services.connectors.create(name="x", connector_id="Bad-Id")
    with pytest.raises(BadRequest):
        await services.connectors.create(name="x", resources=[Resource("a.b")])
    bad = ConnectorSettings(identity_format=IdentityFormat(type="weird"))
    with pytest.raises(BadRequest):
        await services.connectors.create(name="x", settings=bad)
    assert _count(services, "connectors") == 0
    cid = await _connector(services)
    with pytest.raises(AlreadyExists):
        await services.connectors.create(name="again", connector_id=cid)
    assert services.registry.connector_for_host("TCON.m2.localhost:8443") is not None
    assert services.registry.connector_for_host("tcon.devmode-m2.localhost")[1] is True  # type: ignore[index]
    assert services.registry.connector_for_host("nope.m2.localhost") is None


async def test_token_activation_rules(services: Services) -> None:
    cid = await _connector(services)
    token = await services.devices.activate(cid, "dev1", ip="10.0.0.1", meta=META)
    assert token is not None
    assert len(token) == 40
    assert token == token.lower()
    int(token, 16)
    auth = await services.devices.authenticate_token(cid, token)
    assert auth.identity == "dev1"
    # the token is stored only as a hash
    assert token not in await _cred_hash(services, cid, "dev1")
    with pytest.raises(Refused) as info:
        await services.devices.activate(cid, "dev1", ip=None, meta=META)
    assert info.value.http_status == 409
    assert info.value.reason == "already_provisioned"
    # revoke → new token, old one invalid
    await services.devices.update(cid, "dev1", reprovision=True)
    token2 = await services.devices.activate(cid, "dev1", ip=None, meta=META)
    assert token2
    assert token2 != token
    with pytest.raises(Refused) as info:
        await services.devices.authenticate_token(cid, token)
    assert info.value.http_status == 401
    assert info.value.connack == 4
    # locked: refused everywhere
    await services.devices.update(cid, "dev1", locked=True)
    with pytest.raises(Refused) as info:
        await services.devices.authenticate_token(cid, token2)
    assert info.value.reason == "locked"
    assert info.value.connack == 5
    events = await services.events.read(cid)
    # the revocation and the lock are events: they end live sessions on every process
    assert [e.type for e in events] == ["provisioned", "reprovision", "provisioned", "locked"]
    # locking again changes nothing and records nothing
    await services.devices.update(cid, "dev1", locked=True)
    assert len(await services.events.read(cid)) == 4


async def test_whitelist_required_and_format(services: Services) -> None:
    settings = ConnectorSettings(
        identity_format=IdentityFormat(
            type="base16", prefix="AB", options=IdentityFormatOptions(casing="upper", length=4)
        ),
        provisioning=ProvisioningSettings(presenter_identity=False),
    )
    await services.connectors.create(name="w", connector_id="wcon", settings=settings)
    with pytest.raises(Refused) as info:
        await services.devices.activate("wcon", "AB12FF", ip=None, meta=META)
    assert info.value.http_status == 404
    with pytest.raises(Refused) as info:
        await services.devices.activate("wcon", "ab12ff", ip=None, meta=META)
    assert info.value.http_status == 400
    assert info.value.reason == "format_mismatch"
    with pytest.raises(InvalidValue):
        await services.devices.add("wcon", "AB12F")
    await services.devices.add("wcon", "AB12FF")
    with pytest.raises(AlreadyExists):
        await services.devices.add("wcon", "AB12FF")
    assert await services.devices.activate("wcon", "AB12FF", ip=None, meta=META)
    assert _count(services, "devices") == 1


async def test_ip_whitelisting_and_disabled_provisioning(services: Services) -> None:
    cid = await _connector(
        services, ip_whitelisting=IpWhitelisting(enabled=True, allowed=["192.0.2.0/24"])
    )
    with pytest.raises(Refused) as info:
        await services.devices.activate(cid, "d", ip="198.51.100.1", meta=META)
    assert info.value.reason == "ip_not_allowed"
    assert info.value.http_status == 403
    assert await services.devices.activate(cid, "d", ip="192.0.2.77", meta=META)
    c = services.registry.require(cid)
    off = msgspec.structs.replace(
        c.settings, provisioning=msgspec.structs.replace(c.settings.provisioning, enabled=False)
    )
    await services.connectors.update(cid, settings=off)
    with pytest.raises(Refused) as info:
        await services.devices.activate(cid, "e", ip="192.0.2.77", meta=META)
    assert info.value.reason == "provisioning_disabled"
    assert _count(services, "devices") == 1


async def test_password_provisioning(services: Services) -> None:
    cid = await _connector(services, auth_type="password")
    with pytest.raises(Refused) as info:
        await services.devices.activate(cid, "p1", ip=None, meta=META, password="short")
    assert info.value.http_status == 400
    pw = "correct horse battery staple"
    assert await services.devices.activate(cid, "p1", ip=None, meta=META, password=pw) is None
    auth = await services.devices.authenticate_password(cid, "p1", pw)
    assert auth.identity == "p1"
    with pytest.raises(Refused):
        await services.devices.authenticate_password(cid, "p1", pw + "x")
    stored = await _cred_hash(services, cid, "p1")
    assert pw not in stored
    assert stored.startswith("scrypt:")


async def test_certificate_pinning(services: Services) -> None:
    cid = await _connector(services, auth_type="certificate")
    claim = CertClaim(cn="cert1", fingerprint="aa" * 32, verified=False)
    auth = await services.devices.authenticate_certificate(cid, claim, ip=None, meta=META)
    again = await services.devices.authenticate_certificate(cid, claim, ip=None, meta=META)
    assert again.device_id == auth.device_id
    other = CertClaim(cn="cert1", fingerprint="bb" * 32, verified=False)
    with pytest.raises(Refused) as info:
        await services.devices.authenticate_certificate(cid, other, ip=None, meta=META)
    assert info.value.reason == "not_authenticated"
    # a CA-verified certificate for the same CN is accepted without pinning
    ok = CertClaim(cn="cert1", fingerprint="cc" * 32, verified=True)
    assert (await services.devices.authenticate_certificate(cid, ok, ip=None, meta=META)).identity


async def test_tags_listing_and_paging(services: Services) -> None:
    cid = await _connector(services)
    for i in range(25):
        tags = [Tag("site", "north" if i % 2 else "south"), Tag("apps", "a")]
        if i % 5 == 0:
            tags.append(Tag("apps", "b"))
        await services.devices.add(cid, f"dev{i:02d}", tags=tags)
    items, nxt = await services.devices.list(cid, tags=[Tag("site", "north")], limit=5)
    seen = [d.identity for d in items]
    while nxt:
        items, nxt = await services.devices.list(
            cid, tags=[Tag("site", "north")], limit=5, cursor=nxt
        )
        seen += [d.identity for d in items]
    assert seen == [f"dev{i:02d}" for i in range(25) if i % 2]
    both, _ = await services.devices.list(cid, tags=[Tag("site", "south"), Tag("apps", "b")])
    assert [d.identity for d in both] == ["dev00", "dev10", "dev20"]
    pref, _ = await services.devices.list(cid, q="dev1", sort="-identity")
    assert [d.identity for d in pref] == [f"dev1{i}" for i in range(9, -1, -1)]
    d = await services.devices.set_tags(cid, "dev00", [Tag("site", "east")], replace=True)
    assert Tag("site", "east") in d.tags
    assert Tag("site", "south") not in d.tags
    d = await services.devices.remove_tags(cid, "dev00", "apps")
    assert [t.name for t in d.tags] == ["site"]
    with pytest.raises(BadRequest):
        await services.devices.list(cid, cursor="garbage!")
    with pytest.raises(NotFound):
        await services.devices.set_tags(cid, "nobody", [Tag("a", "b")])


async def test_csv_import_all_or_nothing(services: Services) -> None:
    cid = await _connector(services)
    await services.devices.add(cid, "exists")
    bad = "ID,tag:site\nn1,north\nexists,\nn1,south\n"
    report = await services.devices.import_csv(cid, bad)
    assert report.created == 0
    assert [(e.line, e.error) for e in report.errors] == [
        (3, "already exists"),
        (4, "duplicate identity in the file"),
    ]
    assert _count(services, "devices") == 1
    rows = "ID,tag:site\n" + "".join(f"m{i},s{i % 3}\n" for i in range(1000))
    dry = await services.devices.import_csv(cid, rows, dry_run=True)
    assert dry.created == 0
    assert not dry.errors
    report = await services.devices.import_csv(cid, rows)
    assert report.created == 1000
    items, _ = await services.devices.list(cid, tags=[Tag("site", "s1")], limit=1000)
    assert len(items) == 333
    with pytest.raises(BadRequest):
        await services.devices.import_csv(cid, "identity\nx\n")


async def test_state_pending_and_ack(services: Services) -> None:
    cid = await _connector(services)
    token = await services.devices.activate(cid, "s1", ip=None, meta=META)
    assert token
    auth = await services.devices.authenticate_token(cid, token)
    # initial value of a settable resource with sync=false: set, never pending
    st = await services.state.get(cid, "s1")
    assert st["mode"].set == "a"
    assert not st["mode"].pending

    pushed: list[Push] = []

    class Target:
        def push(self, pushes: list[Push]) -> None:
            pushed.extend(pushes)

        def kick(self, reason: str) -> None:
            raise AssertionError(reason)

    services.control.attach((cid, "s1"), "conn-1", Target())
    await services.state.set_values(cid, "s1", {"data_out": {"004": True}})
    assert [(p.alias, p.value) for p in pushed] == [("data_out", '{"004":true}')]
    assert (await services.state.pending(auth.device_id))[0].alias == "data_out"
    assert await services.state.read_for_device(auth.device_id, ["data_out", "nope"]) == {
        "data_out": '{"004":true}'
    }
    # any device write to the alias acknowledges (byte equality not required)
    pts = services.state.points_for(cid, [("data_out", '{"004": true}', 5)])
    await services.state.device_write(auth, pts, META)
    st = await services.state.get(cid, "s1")
    assert not st["data_out"].pending
    assert st["data_out"].reported == '{"004": true}'
    assert await services.state.pending(auth.device_id) == []
    # bad values: refused, nothing stored
    with pytest.raises(InvalidValue):
        services.state.points_for(cid, [("temp", "25", 6)])
    with pytest.raises(InvalidValue):
        services.state.points_for(cid, [("flag", "yes", 6)])
    with pytest.raises(BadRequest):
        await services.state.set_values(cid, "s1", {"data_in": "x"})
    with pytest.raises(NotFound):
        await services.state.set_values(cid, "s1", {"undefined": "x"})
    with pytest.raises(InvalidValue):
        await services.state.set_values(cid, "s1", {"mode": "c"})
    assert (await services.state.get(cid, "s1"))["mode"].set == "a"
    ok = services.state.points_for(cid, [("temp", "15", 7), ("flag", "true", 7), ("zz", "u", 7)])
    assert [p.defined for p in ok] == [True, True, False]
    await services.state.device_write(auth, ok, META)
    st = await services.state.get(cid, "s1")
    assert "zz" not in st
    assert st["temp"].reported == "15"
    types = [e.type for e in await services.events.read(cid)]
    assert types == ["provisioned", "data_out", "data_in", "data_in"]


async def test_delete_device_and_connector(services: Services) -> None:
    cid = await _connector(services)
    await services.devices.add(cid, "gone", tags=[Tag("a", "b")])
    await services.devices.delete(cid, "gone")
    with pytest.raises(NotFound):
        await services.devices.get(cid, "gone")
    assert _count(services, "tags") == 0
    await services.connectors.delete(cid)
    assert services.registry.get(cid) is None
    assert _count(services, "resources") == 0


async def test_device_change_is_one_transaction(services: Services) -> None:
    """``PATCH …/devices/{identity}``: lock, credentials and tag edits apply together, or
    (here: past the tag limit) not at all."""
    cid = await _connector(services)
    await services.devices.add(cid, "d1", tags=[Tag("a", "1")])
    too_many = [Tag("t", str(i)) for i in range(MAX_TAGS_PER_DEVICE)]
    with pytest.raises(BadRequest, match="at most"):
        await services.devices.update(cid, "d1", locked=True, add_tags=too_many)
    d = await services.devices.get(cid, "d1")
    assert (d.locked, d.tags) == (False, [Tag("a", "1")])
    d = await services.devices.update(
        cid,
        "d1",
        locked=True,
        add_tags=[Tag("a", "2"), Tag("b", "1")],
        remove_tags=[TagRef("a", "1")],
    )
    assert (d.locked, d.tags) == (True, [Tag("a", "2"), Tag("b", "1")])


async def test_connection_bookkeeping(services: Services) -> None:
    """``connected``/``disconnected`` are not awaited; the device stays online while a newer
    connection of it is open (docs/decisions.md)."""
    cid = await _connector(services)
    token = await services.devices.activate(cid, "d1", ip=None, meta=META)
    assert token
    auth = await services.devices.authenticate_token(cid, token)
    first = EventMeta(connection_id="first", ip="10.0.0.1", protocol="murano:v1/mqtt")
    second = EventMeta(connection_id="second", ip="10.0.0.2", protocol="murano:v1/mqtt")
    services.devices.connected(auth, first)
    services.devices.connected(auth, second)  # takes over
    services.devices.disconnected(auth, first, "duplicate_connection")
    await services.store.write([])  # submissions commit in order: the three above are in
    d = await services.devices.get(cid, "d1")
    assert (d.online, d.lastip) == (True, "10.0.0.2")
    services.devices.disconnected(auth, second, "peer_closed")
    await services.store.write([])
    assert not (await services.devices.get(cid, "d1")).online


async def test_unawaited_failures_are_logged_and_reach_the_debug_log(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """A detached submission that fails is not silent: a warning with the ops and the
    reason, and a ``store_write_failed`` record in the connector's live debug log."""
    cid = await _connector(services)
    await services.devices.add(cid, "d1")
    async with services.logs.subscribe(LogFilter(cid, kinds=("debug",))) as sub:
        ticket = services.store.submit([CreateDevice(cid, "d1", "whitelisted", 1)], detached=True)
        with pytest.raises(AlreadyExists):
            await ticket.wait()
        rec = sub.receive.receive_nowait()
    assert (rec.event, rec.reason, rec.connector_id, rec.identity) == (
        "store_write_failed",
        "already_exists",
        cid,
        "d1",
    )
    assert "CreateDevice" in (rec.detail or "")
    assert any(
        "CreateDevice" in r.getMessage() and "already_exists" in r.getMessage()
        for r in caplog.records
    )
