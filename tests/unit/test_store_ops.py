"""Each op handler and each typed read of the SQLite store, against a real database: what it
changes, what it returns, how it refuses (a refusal changes nothing: the submission rolls
back alone), and that the counters the store keeps stay equal to the rows."""

from __future__ import annotations

import sqlite3

import pytest

from gateway.errors import AlreadyExists, BadRequest, NotFound, Refused
from gateway.store.api import (
    ActivateDevice,
    AppendEvent,
    CommittedEvent,
    CreateAdminToken,
    CreateConnector,
    CreateDevice,
    CreateIntegration,
    DataIn,
    DeleteConnector,
    DeleteContent,
    DeleteDevice,
    DeleteIntegration,
    DeleteResource,
    DeviceConnected,
    DeviceCounts,
    DeviceDisconnected,
    DeviceQuery,
    DropConnections,
    EventMeta,
    EventQuery,
    FinishRun,
    ImportDevices,
    ImportOutcome,
    ImportRow,
    IntegrationRecord,
    MarkVanished,
    NodeBeat,
    PointWrite,
    PutContent,
    PutResource,
    ReapNodes,
    RecordHealth,
    ResetOnline,
    Resource,
    RevokeAdminToken,
    SetValue,
    SetValues,
    StartRun,
    Tag,
    TagRef,
    UpdateConnector,
    UpdateDevice,
    UpdateIntegration,
    UpsertAsset,
)
from gateway.store.sqlite import SqliteStore

from .conftest import CheckCounters

META = EventMeta(connection_id="conn-1", ip="10.0.0.1", protocol="onep:v1/http")
RESOURCES = [
    Resource("data_in"),
    Resource("data_out", settable=True, initial="boot"),  # sync: pending when given
    Resource("mode", settable=True, sync=False, initial="a"),
]


@pytest.fixture
async def conn_store(store: SqliteStore) -> SqliteStore:
    """The store with connector ``c`` (resources above)."""
    await store.write([CreateConnector("c", "C", "desc", b'{"k": 1}', 10, RESOURCES)])
    return store


async def _create(store: SqliteStore, identity: str, **kw: object) -> int:
    (did,) = await store.write([CreateDevice("c", identity, "whitelisted", 20, **kw)])  # type: ignore[arg-type]
    assert isinstance(did, int)
    return did


def _activate(identity: str, **kw: object) -> ActivateDevice:
    fields: dict[str, object] = {"presenter_identity": True, "cred_hash": "h-" + identity}
    fields.update(kw)
    return ActivateDevice("c", identity, "token", meta=META, timestamp=100, **fields)  # type: ignore[arg-type]


# -- connectors and resources -----------------------------------------------------------------


async def test_connector_ops_and_read(store: SqliteStore) -> None:
    await store.write([CreateConnector("c", "C", "desc", b'{"k": 1}', 10, RESOURCES)])
    with pytest.raises(AlreadyExists):
        await store.write([CreateConnector("c", "again", "", b"{}", 11)])
    await store.write([UpdateConnector("c", "C2", "d2", b'{"k": 2}', 12)])
    with pytest.raises(NotFound):
        await store.write([UpdateConnector("nope", "x", "", b"{}", 12)])
    (row,) = await store.connectors()
    assert (row.id, row.name, row.description, row.settings) == ("c", "C2", "d2", b'{"k": 2}')
    assert (row.created, row.updated) == (10, 12)
    assert row.resources == sorted(RESOURCES, key=lambda r: r.alias)


async def test_put_resource_gives_existing_devices_the_initial_value(
    conn_store: SqliteStore, counters_exact: CheckCounters
) -> None:
    store = conn_store
    did = await _create(store, "d1")
    with pytest.raises(AlreadyExists):
        await store.write([PutResource("c", Resource("data_in"), True, 30)])
    with pytest.raises(NotFound):
        await store.write([PutResource("c", Resource("ghost"), False, 30)])
    await store.write([PutResource("c", Resource("cfg", settable=True, initial="x"), True, 30)])
    assert {r.alias: r.set_value for r in await store.pending(did)} == {
        "data_out": "boot",
        "cfg": "x",
    }
    await store.write([PutResource("c", Resource("cfg", unit="m"), False, 31)])  # replace
    (row,) = await store.connectors()
    assert next(r for r in row.resources if r.alias == "cfg").unit == "m"
    await store.write([DeleteResource("c", "cfg")])
    assert [r.alias for r in await store.state(did)] == ["data_out", "mode"]
    await counters_exact(store)


async def test_delete_connector_removes_everything_it_holds(
    conn_store: SqliteStore, counters_exact: CheckCounters
) -> None:
    store = conn_store
    did = await _create(store, "d1", tags=[Tag("k", "v")])
    await store.write([DataIn("c", did, "d1", [PointWrite("data_in", "1", 5)], META, 5)])
    await store.write([PutContent("c", "f", "sha1", 1, "t", "", {}, 1)])
    await store.write([DeleteConnector("c")])
    assert await store.connectors() == []
    assert await store.device("c", "d1") is None
    assert await store.state(did) == []
    assert await store.events(EventQuery("c")) == []
    assert await store.content_list("c") == []
    await counters_exact(store)


# -- device identities ------------------------------------------------------------------------


async def test_create_device_with_tags_and_initial_values(
    conn_store: SqliteStore, counters_exact: CheckCounters
) -> None:
    store = conn_store
    did = await _create(
        store, "d1", locked=True, tags=[Tag("site", "b"), Tag("site", "a")], expire=99
    )
    row = await store.device("c", "d1")
    assert row is not None
    assert (row.id, row.status, row.locked, row.expire, row.online) == (
        did,
        "whitelisted",
        True,
        99,
        False,
    )
    assert row.tags == [Tag("site", "a"), Tag("site", "b")]
    state = {r.alias: (r.set_value, r.pending) for r in await store.state(did)}
    assert state == {"data_out": ("boot", True), "mode": ("a", False)}
    with pytest.raises(AlreadyExists):
        await _create(store, "d1")
    assert (await store.stats()).devices == 1
    await counters_exact(store)


async def test_device_by_token_hash(conn_store: SqliteStore) -> None:
    store = conn_store
    await store.write(
        [CreateDevice("c", "d1", "provisioned", 1, auth_type="token", cred_hash="abc")]
    )
    match = await store.device_by_token_hash("c", "abc")
    assert match is not None
    assert (match.identity, match.locked) == ("d1", False)
    assert await store.device_by_token_hash("c", "abd") is None
    assert await store.device_by_token_hash("other", "abc") is None


async def test_import_devices(conn_store: SqliteStore, counters_exact: CheckCounters) -> None:
    store = conn_store
    await _create(store, "old")
    rows = [
        ImportRow(2, "new1", None, [Tag("k", "v")]),
        ImportRow(3, "old"),
        ImportRow(4, "new2", "fp"),
    ]
    # all or nothing: an existing identity means nothing is written
    (out,) = await store.write([ImportDevices("c", rows, 5)])
    assert out == ImportOutcome(0, ["old"])
    assert await store.device("c", "new1") is None
    # errors the services found count too; a dry run never writes
    (out,) = await store.write([ImportDevices("c", rows[:1], 5, row_errors=True)])
    assert out == ImportOutcome(0, [])
    (out,) = await store.write([ImportDevices("c", rows[:1], 5, dry_run=True)])
    assert out == ImportOutcome(0, [])
    (out,) = await store.write([ImportDevices("c", rows, 5, all_or_nothing=False)])
    assert out == ImportOutcome(2, ["old"])
    new2 = await store.device("c", "new2")
    assert new2 is not None
    assert (new2.status, new2.auth_type, new2.cert_fp) == ("provisioned", "certificate", "fp")
    new1 = await store.device("c", "new1")
    assert new1 is not None
    assert new1.tags == [Tag("k", "v")]
    assert {r.alias for r in await store.pending(new1.id)} == {"data_out"}
    await counters_exact(store)


async def test_import_finds_existing_identities_past_one_parameter_list(
    conn_store: SqliteStore, counters_exact: CheckCounters
) -> None:
    """Identities are looked up 500 at a time (SQLite's host-parameter lists): one in the
    third chunk is found like one in the first."""
    store = conn_store
    await _create(store, "d0003")
    await _create(store, "d1100")
    rows = [ImportRow(i + 2, f"d{i:04d}") for i in range(1200)]
    (out,) = await store.write([ImportDevices("c", rows, 5, all_or_nothing=False)])
    assert out == ImportOutcome(1198, ["d0003", "d1100"])
    assert (await store.device_counts("c")).total == 1200
    await counters_exact(store)


async def test_update_device_is_one_transaction(conn_store: SqliteStore) -> None:
    store = conn_store
    did = await store.write(
        [
            CreateDevice(
                "c",
                "d1",
                "provisioned",
                1,
                auth_type="token",
                cred_hash="h",
                tags=[Tag("a", "1"), Tag("a", "2"), Tag("b", "1")],
            )
        ]
    )
    assert did
    await store.write(
        [
            UpdateDevice(
                "c",
                "d1",
                locked=True,
                reprovision=True,
                add_tags=[Tag("a", "3")],
                remove_tags=[TagRef("b")],
                replace_tags=True,
            )
        ]
    )
    row = await store.device("c", "d1")
    assert row is not None
    assert (row.locked, row.reprovision, row.cred_hash, row.cert_fp) == (True, True, None, None)
    assert row.tags == [Tag("a", "3")]
    await store.write(
        [UpdateDevice("c", "d1", locked=False, reprovision=False, remove_tags=[TagRef("a", "3")])]
    )
    row = await store.device("c", "d1")
    assert row is not None
    assert (row.locked, row.reprovision, row.tags) == (False, False, [])
    # past the tag limit: refused, and the lock in the same op is not applied either
    too_many = [Tag("t", str(i)) for i in range(3)]
    with pytest.raises(BadRequest, match="at most 2 tags"):
        await store.write([UpdateDevice("c", "d1", locked=True, add_tags=too_many, max_tags=2)])
    row = await store.device("c", "d1")
    assert row is not None
    assert (row.locked, row.tags) == (False, [])
    with pytest.raises(NotFound):
        await store.write([UpdateDevice("c", "nobody", locked=True)])


async def test_delete_device(conn_store: SqliteStore, counters_exact: CheckCounters) -> None:
    store = conn_store
    did = await _create(store, "d1", tags=[Tag("k", "v")])
    await store.write(
        [DataIn("c", did, "d1", [PointWrite("data_in", "x", 5, replay_check=True)], META, 5)]
    )
    await store.write([DeleteDevice("c", "d1", META, 50)])
    assert await store.device("c", "d1") is None
    assert await store.state(did) == []
    assert [e.type for e in await store.events(EventQuery("c"))] == ["data_in", "deleted"]
    with pytest.raises(NotFound):
        await store.write([DeleteDevice("c", "d1", META, 51)])
    await counters_exact(store)


async def test_activation_rules(conn_store: SqliteStore, counters_exact: CheckCounters) -> None:
    """docs/protocol.md §12 item 12, checked in the transaction that provisions."""
    store = conn_store
    # presenter identity: an unknown identity is created and provisioned
    (did,) = await store.write([_activate("p1", ip="10.1.1.1")])
    row = await store.device("c", "p1")
    assert row is not None
    assert (row.id, row.status, row.auth_type, row.cred_hash, row.lastip) == (
        did,
        "provisioned",
        "token",
        "h-p1",
        "10.1.1.1",
    )
    assert {r.alias for r in await store.pending(did)} == {"data_out"}  # initial values
    # without presenter identity an unknown identity is refused (404), nothing created
    with pytest.raises(Refused) as info:
        await store.write([_activate("p2", presenter_identity=False)])
    assert (info.value.reason, info.value.http_status) == ("presenter_identity_disabled", 404)
    assert await store.device("c", "p2") is None
    # provisioned twice: 409; after reprovision: allowed again
    with pytest.raises(Refused) as info:
        await store.write([_activate("p1")])
    assert info.value.http_status == 409
    await store.write([UpdateDevice("c", "p1", reprovision=True)])
    await store.write([_activate("p1", cred_hash="h2")])
    row = await store.device("c", "p1")
    assert row is not None
    assert (row.cred_hash, row.reprovision) == ("h2", False)
    # locked: 403; whitelist window over: 404
    await _create(store, "l1", locked=True)
    with pytest.raises(Refused) as info:
        await store.write([_activate("l1")])
    assert (info.value.reason, info.value.http_status) == ("locked", 403)
    await _create(store, "e1", expire=99)
    with pytest.raises(Refused) as info:
        await store.write([_activate("e1")])  # timestamp 100 > expire 99
    assert info.value.reason == "expired"
    # a certificate is pinned
    await store.write([ActivateDevice("c", "cert1", "certificate", True, META, 100, cert_fp="fp1")])
    row = await store.device("c", "cert1")
    assert row is not None
    assert (row.auth_type, row.cert_fp, row.cred_hash) == ("certificate", "fp1", None)
    types = [e.type for e in await store.events(EventQuery("c"))]
    assert types == ["provisioned", "reprovision", "provisioned", "provisioned"]
    await counters_exact(store)


# -- device data and connections ---------------------------------------------------------------


async def test_connection_bookkeeping_follows_the_current_connection(
    conn_store: SqliteStore,
) -> None:
    """A second connection of the same identity takes over; the first one's disconnect,
    whenever it commits, does not take the device offline (docs/decisions.md)."""
    store = conn_store
    did = await _create(store, "d1")
    a = EventMeta(connection_id="A", ip="10.0.0.1", protocol="mqtt")
    b = EventMeta(connection_id="B", ip="10.0.0.2", protocol="mqtt")

    async def online() -> bool:
        row = await store.device("c", "d1")
        assert row is not None
        return row.online

    await store.write([DeviceConnected("c", did, "d1", a, 1)])
    await store.write([DeviceConnected("c", did, "d1", b, 2)])
    await store.write([DeviceDisconnected("c", did, "d1", a, 3, "duplicate_connection")])
    assert await online()
    row = await store.device("c", "d1")
    assert row is not None
    assert (row.lastip, row.lastseen) == ("10.0.0.2", 3)
    await store.write([DeviceDisconnected("c", did, "d1", b, 4, "peer_closed")])
    assert not await online()
    # the other order: A's disconnect commits before B's connect
    await store.write([DeviceConnected("c", did, "d1", a, 5)])
    await store.write([DeviceDisconnected("c", did, "d1", a, 6, "peer_closed")])
    await store.write([DeviceConnected("c", did, "d1", b, 7)])
    assert await online()
    events = await store.events(EventQuery("c"))
    assert [(e.type, e.connection_id, e.reason) for e in events][-3:] == [
        ("connect", "A", None),
        ("disconnect", "A", "peer_closed"),
        ("connect", "B", None),
    ]
    assert await store.write([ResetOnline()]) == [1]
    assert not await online()


async def test_set_values(conn_store: SqliteStore, counters_exact: CheckCounters) -> None:
    store = conn_store
    did = await _create(store, "d1")
    values = [SetValue("data_out", "go", True), SetValue("mode", "b", False)]
    assert await store.write([SetValues("c", "d1", values, META, 40)]) == [did]
    state = {r.alias: (r.set_value, r.set_ts, r.pending) for r in await store.state(did)}
    assert state == {"data_out": ("go", 40, True), "mode": ("b", 40, False)}
    assert [r.alias for r in await store.state(did, ["mode", "nope"])] == ["mode"]
    assert await store.state(did, []) == []
    assert [r.alias for r in await store.pending(did, since=39)] == ["data_out"]
    assert await store.pending(did, since=40) == []
    (ev,) = await store.events(EventQuery("c"))
    assert (ev.type, ev.payload) == (
        "data_out",
        [{"timestamp": 40, "values": {"data_out": "go", "mode": "b"}}],
    )
    with pytest.raises(NotFound):
        await store.write([SetValues("c", "nobody", values, META, 41)])
    await counters_exact(store)


async def test_data_in_updates_state_lastseen_and_event(conn_store: SqliteStore) -> None:
    store = conn_store
    did = await _create(store, "d1")
    points = [PointWrite("data_in", "1", 10), PointWrite("free", "x", 10, defined=False)]
    assert await store.write([DataIn("c", did, "d1", points, META, 11)]) == [2]
    assert [r.alias for r in await store.state(did)] == ["data_in", "data_out", "mode"]
    row = await store.device("c", "d1")
    assert row is not None
    assert (row.lastseen, row.lastip) == (11, "10.0.0.1")
    (ev,) = await store.events(EventQuery("c"))
    assert ev.payload == [{"timestamp": 10, "values": {"data_in": "1", "free": "x"}}]


async def test_events_read_by_cursor(store: SqliteStore) -> None:
    for i in range(5):
        await store.write([AppendEvent("c", "publish", None, META, i, {"n": i})])
    assert await store.last_seq("c") == 5
    assert await store.last_seq("other") == 0
    page = await store.events(EventQuery("c", after=2, limit=2))
    assert [(e.seq, e.payload) for e in page] == [(3, {"n": 2}), (4, {"n": 3})]


async def test_events_filtered_forwards_and_backwards(store: SqliteStore) -> None:
    """Filters by identity, types, address and time; ``before`` pages newest first."""
    rows = [  # (type, identity, ip, µs)
        ("connect", "a", "10.0.0.1", 1_000),
        ("data_in", "a", "10.0.0.1", 2_000),
        ("data_in", "b", "10.0.0.2", 3_000),
        ("connection_refused", None, "10.0.0.9", 4_000),
        ("data_in", "a", "10.0.0.1", 5_000),
        ("disconnect", "a", "10.0.0.1", 6_000),
    ]
    for kind, ident, ip, ts in rows:
        meta = EventMeta("conn", ip, "murano:v1/mqtt")
        await store.write([AppendEvent("c", kind, ident, meta, ts)])
    await store.write([AppendEvent("other", "data_in", "a", META, 2_500)])

    def seqs(events: list[CommittedEvent]) -> list[int]:
        return [e.seq for e in events]

    assert seqs(await store.events(EventQuery("c", identity="a"))) == [1, 2, 5, 6]
    assert seqs(await store.events(EventQuery("c", identity="a", types=("data_in",)))) == [2, 5]
    both = EventQuery("c", types=("connect", "connection_refused"))
    assert seqs(await store.events(both)) == [1, 4]
    assert seqs(await store.events(EventQuery("c", ip="10.0.0.2"))) == [3]
    assert seqs(await store.events(EventQuery("c", since=2_000, until=5_000))) == [2, 3, 4, 5]
    assert seqs(await store.events(EventQuery("c", since=7_000))) == []
    assert seqs(await store.events(EventQuery("c", until=500))) == []
    # newest first below a cursor, with and without filters
    assert seqs(await store.events(EventQuery("c", before=2**62, limit=3))) == [6, 5, 4]
    assert seqs(await store.events(EventQuery("c", before=4, limit=3))) == [3, 2, 1]
    back = EventQuery("c", before=6, identity="a", types=("data_in",), since=1_500)
    assert seqs(await store.events(back)) == [5, 2]
    # the other connector's event never shows
    assert all(e.connector_id == "c" for e in await store.events(EventQuery("c", limit=100)))


async def test_event_reads_by_identity_use_its_index(store: SqliteStore) -> None:
    """A device's events are read through (connector, identity, seq), not by walking the
    whole log: the device page stays fast at a million events."""
    if hasattr(store, "url"):
        import psycopg

        with psycopg.connect(store.url) as pg:
            pg.execute("SET enable_seqscan = off")  # an empty table: ask for the index plan
            text = " ".join(
                str(r[0])
                for r in pg.execute(
                    "EXPLAIN SELECT seq FROM events WHERE connector_id = 'c' AND seq < 10 "
                    "AND identity = 'a' ORDER BY seq DESC LIMIT 10"
                )
            )
        assert "events_identity" in text, text
        assert "Sort" not in text, text  # no sort: the index is in seq order
        return
    conn = sqlite3.connect(store.path)
    try:
        plan = " ".join(
            str(r)
            for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT seq FROM events WHERE connector_id = ? AND seq < ? "
                "AND identity = ? ORDER BY seq DESC LIMIT 10",
                ("c", 10, "a"),
            )
        )
    finally:
        conn.close()
    assert "events_identity" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # no sort: the index is in seq order


async def test_device_counts(conn_store: SqliteStore) -> None:
    store = conn_store
    await store.write([CreateDevice("c", "w1", "whitelisted", 1)])
    await store.write([CreateDevice("c", "w2", "whitelisted", 1, locked=True)])
    await store.write([CreateDevice("c", "p1", "provisioned", 1, auth_type="token")])
    await store.write([UpdateDevice("c", "p1", reprovision=True)])
    counts = await store.device_counts("c")
    assert counts == DeviceCounts(
        total=3, online=0, locked=1, provisioned=1, whitelisted=2, reprovision=1
    )
    assert await store.device_counts("nobody") == DeviceCounts(0, 0, 0, 0, 0, 0)


# -- listing --------------------------------------------------------------------------------


async def test_list_devices_pages_filters_and_sorts(conn_store: SqliteStore) -> None:
    store = conn_store
    for i in range(7):
        tags = [Tag("site", "east" if i % 2 else "west"), Tag("row", str(i % 3))]
        await store.write([CreateDevice("c", f"dev{i}", "whitelisted", 100 - i, tags=tags)])
    await store.write([UpdateDevice("c", "dev3", locked=True)])
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_devices(DeviceQuery("c", limit=3, cursor=cursor))
        seen += [d.identity for d in page.items]
        if page.next is None:
            break
        cursor = page.next
    assert seen == [f"dev{i}" for i in range(7)]
    east = await store.list_devices(DeviceQuery("c", tags=[Tag("site", "east")]))
    assert [d.identity for d in east.items] == ["dev1", "dev3", "dev5"]
    assert east.items[0].tags == [Tag("row", "1"), Tag("site", "east")]
    both = await store.list_devices(DeviceQuery("c", tags=[Tag("site", "east"), Tag("row", "0")]))
    assert [d.identity for d in both.items] == ["dev3"]
    locked = await store.list_devices(DeviceQuery("c", status="locked"))
    assert [d.identity for d in locked.items] == ["dev3"]
    newest_first = await store.list_devices(
        DeviceQuery("c", sort="created", descending=True, limit=2)
    )
    assert [d.identity for d in newest_first.items] == ["dev0", "dev1"]
    assert newest_first.next is not None
    more = await store.list_devices(
        DeviceQuery("c", sort="created", descending=True, limit=2, cursor=newest_first.next)
    )
    assert [d.identity for d in more.items] == ["dev2", "dev3"]
    prefixed = await store.list_devices(DeviceQuery("c", prefix="dev6"))
    assert [d.identity for d in prefixed.items] == ["dev6"]
    with pytest.raises(BadRequest, match="invalid cursor"):
        await store.list_devices(DeviceQuery("c", cursor="%%%"))


# -- content and admin tokens ----------------------------------------------------------------


async def test_content_ops_report_orphaned_blobs(conn_store: SqliteStore) -> None:
    store = conn_store
    event = AppendEvent("c", "content_in", "d1", META, 5)
    assert await store.write(
        [PutContent("c", "a/f", "s1", 3, "text/plain", "d", {"k": "v"}, 5, event)]
    ) == [None]
    assert await store.write([PutContent("c", "b/f", "s1", 3, "text/plain", "", {}, 6)]) == [None]
    # a/f now points elsewhere; s1 is still used by b/f
    assert await store.write([PutContent("c", "a/f", "s2", 4, "text/plain", "", {}, 7)]) == [None]
    assert await store.write([DeleteContent("c", "b/f")]) == ["s1"]
    assert await store.write([DeleteContent("c", "a/f")]) == ["s2"]
    with pytest.raises(NotFound):
        await store.write([DeleteContent("c", "a/f")])
    await store.write([PutContent("c", "x/1", "s3", 1, "t", "d", {"k": "v"}, 8)])
    await store.write([PutContent("c", "y/1", "s3", 1, "t", "", {}, 9)])
    row = await store.content("c", "x/1")
    assert row is not None
    assert (row.sha256, row.size, row.description, row.tags, row.updated) == (
        "s3",
        1,
        "d",
        {"k": "v"},
        8,
    )
    assert [r.content_id for r in await store.content_list("c", "x/")] == ["x/1"]
    assert [r.content_id for r in await store.content_list("c")] == ["x/1", "y/1"]
    assert [e.type for e in await store.events(EventQuery("c"))] == ["content_in"]


async def test_admin_tokens(store: SqliteStore) -> None:
    await store.write([CreateAdminToken("t2", "two", "h2", 2)])
    await store.write([CreateAdminToken("t1", "one", "h1", 1)])
    assert await store.admin_token_known("h1")
    assert not await store.admin_token_known("h3")
    assert [t.id for t in await store.admin_tokens()] == ["t1", "t2"]
    await store.write([RevokeAdminToken("t1")])
    assert not await store.admin_token_known("h1")
    with pytest.raises(NotFound):
        await store.write([RevokeAdminToken("t1")])


# -- integrations ----------------------------------------------------------------------------

_REC = IntegrationRecord(
    "c", "pumps", "doc", 1, "1.0", False, {"a": 1}, {"s": "ct"}, {"x": 2}, 1, 1
)


async def test_integration_records(conn_store: SqliteStore) -> None:
    store = conn_store
    await store.write([CreateIntegration(_REC)])
    with pytest.raises(AlreadyExists):
        await store.write([CreateIntegration(_REC)])
    newer = IntegrationRecord("c", "pumps", "doc2", 2, "1.1", True, {}, {}, {}, 1, 5)
    await store.write([UpdateIntegration(newer)])
    assert await store.integration("c", "pumps") == newer
    with pytest.raises(NotFound):
        await store.write(
            [UpdateIntegration(IntegrationRecord("c", "nope", "", 1, "", False, {}, {}, {}, 1, 1))]
        )
    other = IntegrationRecord("c", "alpha", "d", 1, "1", False, {}, {}, {}, 1, 1)
    await store.write([CreateIntegration(other)])
    assert [r.name for r in await store.integrations("c")] == ["alpha", "pumps"]
    assert [r.name for r in await store.integrations()] == ["alpha", "pumps"]
    assert await store.integration("c", "zzz") is None


async def test_integration_health_history_and_change_events(conn_store: SqliteStore) -> None:
    store = conn_store
    await store.write([CreateIntegration(_REC)])

    def probe(ts: int, healthy: bool) -> RecordHealth:
        ev = AppendEvent("c", "integration_health", None, META, ts, {"healthy": healthy})
        return RecordHealth(
            "c", "pumps", ts, healthy, 200 if healthy else None, 1.0, "d", ev, history=3
        )

    changes = [
        await store.write([probe(ts, h)])
        for ts, h in [(1, True), (2, True), (3, False), (4, False), (5, True)]
    ]
    assert changes == [[True], [False], [True], [False], [True]]
    assert [h.timestamp for h in await store.integration_health("c", "pumps")] == [5, 4, 3]
    assert [
        h.timestamp for h in await store.integration_health("c", "pumps", changes_only=True)
    ] == [5, 3]
    assert [h.timestamp for h in await store.integration_health("c", "pumps", limit=1)] == [5]
    assert [e.timestamp for e in await store.events(EventQuery("c"))] == [1, 3, 5]


async def test_integration_runs_and_assets(conn_store: SqliteStore) -> None:
    store = conn_store
    await store.write([CreateIntegration(_REC)])
    ids = []
    for i in range(4):
        (run_id,) = await store.write([StartRun("c", "pumps", "sync", {"n": i}, history=2)])
        assert isinstance(run_id, int)
        ids.append(run_id)
    await store.write([FinishRun(ids[-1], {"n": 3, "status": "ok"})])
    await store.write([StartRun("c", "pumps", "fetch", {"n": 9})])
    runs = await store.integration_runs("c", "pumps", "sync")
    assert [(r.id, r.report) for r in runs] == [
        (ids[3], {"n": 3, "status": "ok"}),
        (ids[2], {"n": 2}),
    ]
    assert len(await store.integration_runs("c", "pumps")) == 3
    assert len(await store.integration_runs("c", "pumps", limit=1)) == 1

    await store.write(
        [UpsertAsset("c", "pumps", "a2", "d2", 1), UpsertAsset("c", "pumps", "a1", "d1", 1)]
    )
    await store.write([MarkVanished("c", "pumps", ["a1"])])
    assets = await store.integration_assets("c", "pumps")
    assert [(a.asset_id, a.identity, a.vanished) for a in assets] == [
        ("a1", "d1", True),
        ("a2", "d2", False),
    ]
    many = [f"m{i:04d}" for i in range(1200)]  # past one parameter list (500 a statement)
    await store.write([UpsertAsset("c", "pumps", a, "d-" + a, 1) for a in many])
    await store.write([MarkVanished("c", "pumps", many[1:])])
    vanished = {a.asset_id for a in await store.integration_assets("c", "pumps") if a.vanished}
    assert vanished == {"a1", *many[1:]}
    await store.write([UpsertAsset("c", "pumps", "a1", "d1b", 2)])  # back upstream
    assert (await store.integration_assets("c", "pumps"))[0].vanished is False

    await store.write([DeleteIntegration("c", "pumps")])
    assert await store.integration("c", "pumps") is None
    assert await store.integration_runs("c", "pumps") == []
    assert await store.integration_assets("c", "pumps") == []
    with pytest.raises(NotFound):
        await store.write([DeleteIntegration("c", "pumps")])


async def test_data_in_is_refused_once_the_device_is_locked_revoked_or_deleted(
    conn_store: SqliteStore, counters_exact: CheckCounters
) -> None:
    """Lock means now: a write that was authenticated before the lock but commits after it
    is refused with the lock's reason and stores nothing (docs/architecture.md "The node")."""
    store = conn_store
    did = await _create(store, "w1")
    write = DataIn("c", did, "w1", [PointWrite("data_in", "1", 5)], META, 200)
    assert await store.write([write]) == [1]
    await store.write([UpdateDevice("c", "w1", locked=True, meta=META, timestamp=300)])
    before = [e.type for e in await store.events(EventQuery("c"))]
    with pytest.raises(Refused) as info:
        await store.write([DataIn("c", did, "w1", [PointWrite("data_in", "2", 6)], META, 400)])
    assert (info.value.reason, info.value.http_status) == ("locked", 403)
    assert [e.type for e in await store.events(EventQuery("c"))] == before
    assert before[-1] == "locked"
    (row,) = await store.state(did, ["data_in"])
    assert row.reported == "1"
    # revoked credentials
    await store.write([UpdateDevice("c", "w1", locked=False, reprovision=True)])
    with pytest.raises(Refused) as info:
        await store.write([write])
    assert info.value.reason == "credentials_reset"
    # deleted: the write does not resurrect state rows for a device that is gone
    await store.write([DeleteDevice("c", "w1", META, 500)])
    with pytest.raises(Refused) as info:
        await store.write([write])
    assert info.value.reason == "deleted"
    assert await store.state(did) == []
    await counters_exact(store)


async def test_drop_connections_takes_a_dead_workers_devices_offline(
    conn_store: SqliteStore,
) -> None:
    """A worker of the node died: its devices (current connection id under its prefix) go
    offline with a ``worker_lost`` disconnect; devices on other workers stay online."""
    store = conn_store
    mine = await _create(store, "mine")
    other = await _create(store, "other")
    await store.write(
        [
            DeviceConnected("c", mine, "mine", EventMeta(connection_id="w1.a1-x"), 1),
            DeviceConnected("c", other, "other", EventMeta(connection_id="w2.b2-y"), 1),
        ]
    )
    assert await store.write([DropConnections("%", 5)]) == [0]  # LIKE wildcards are literal
    assert await store.write([DropConnections("w1.a1-", 5)]) == [1]
    rows = {r: await store.device("c", r) for r in ("mine", "other")}
    assert [(r.online, r.lastseen) for r in rows.values() if r is not None] == [
        (False, 5),
        (True, 1),
    ]
    last = (await store.events(EventQuery("c")))[-1]
    assert (last.type, last.identity, last.connection_id, last.reason) == (
        "disconnect",
        "mine",
        "w1.a1-x",
        "worker_lost",
    )
    assert await store.write([DropConnections("w1.a1-", 6)]) == [0]  # nothing left


async def test_drop_connections_matches_its_prefix_literally(conn_store: SqliteStore) -> None:
    """The prefix is matched as it is, LIKE's wildcards and escape character included."""
    store = conn_store
    did = await _create(store, "odd")
    await store.write([DeviceConnected("c", did, "odd", EventMeta(connection_id="n!_%\\-1"), 1)])
    for other in ("n!x", "n_", "n!_x", "n!_%\\x"):
        assert await store.write([DropConnections(other, 5)]) == [0], other
    assert await store.write([DropConnections("n!_%\\-", 5)]) == [1]


async def test_a_node_that_stops_beating_is_declared_lost_once(conn_store: SqliteStore) -> None:
    """Cluster liveness: a node's beat creates then refreshes its row; reaping takes the
    nodes whose last beat is older than the bound, once, with their devices offline under a
    ``node_lost`` disconnect, and leaves the live node and its devices alone."""
    store = conn_store
    on_a = await _create(store, "on-a")
    on_b = await _create(store, "on-b")
    await store.write(
        [
            DeviceConnected("c", on_a, "on-a", EventMeta(connection_id="node-a.w1.1-x"), 1),
            DeviceConnected("c", on_b, "on-b", EventMeta(connection_id="node-b.w1.1-y"), 1),
        ]
    )
    assert await store.write(
        [NodeBeat("node-a", "node-a.", 10), NodeBeat("node-b", "node-b.", 10)]
    ) == [False, False]  # first beats create the rows
    assert await store.write([NodeBeat("node-b", "node-b.", 50)]) == [True]
    assert await store.write([ReapNodes(before=10, timestamp=60)]) == [0]  # nobody older
    assert await store.write([ReapNodes(before=40, timestamp=60)]) == [1]  # node-a: seen 10
    assert await store.write([ReapNodes(before=40, timestamp=61)]) == [0]  # taken once
    rows = {r: await store.device("c", r) for r in ("on-a", "on-b")}
    assert [(r.online, r.lastseen) for r in rows.values() if r is not None] == [
        (False, 60),
        (True, 1),
    ]
    last = (await store.events(EventQuery("c")))[-1]
    assert (last.type, last.identity, last.connection_id, last.reason) == (
        "disconnect",
        "on-a",
        "node-a.w1.1-x",
        "node_lost",
    )
    # a node declared lost that beats again finds its row gone (it says so in its log)
    assert await store.write([NodeBeat("node-a", "node-a.", 70)]) == [False]
