"""Device state: reported writes from devices and set values from the cloud.

The semantics are docs/protocol.md §4.2-4.3: a device write updates ``reported`` (and ``set`` of
a settable resource) and clears a pending set value — any write to the alias counts as the
acknowledgement, byte equality is not required (§13 item 6).  A cloud set updates ``set``
and, for ``sync`` resources, makes the value pending: pushed to a connected MQTT session
and returned to HTTP long-polls until the device writes the alias (the push follows the
committed ``data_out`` event: ``services/control.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from gateway.clock import now_us
from gateway.errors import BadRequest, InvalidValue, NotFound
from gateway.rules.dispatch import ResourceTable, validate_value
from gateway.services.connectors import Registry
from gateway.services.control import Push
from gateway.services.devices import DeviceAuth
from gateway.store.api import DataIn, EventMeta, PointWrite, SetValue, SetValues, Store, Ticket

__all__ = ["AliasState", "StateService", "check_value", "value_text"]


class AliasState(msgspec.Struct, frozen=True):
    """One alias of the state object (docs/protocol.md §6.1), timestamps in µs.  ``timestamp``
    is the newer of the two."""

    reported: str | None
    set: str | None
    timestamp: int | None
    reported_timestamp: int | None
    set_timestamp: int | None
    pending: bool


def value_text(value: Any) -> str:
    """Values travel as text: strings as they are, everything else as compact JSON."""
    if isinstance(value, str):
        return value
    return msgspec.json.encode(value).decode()


def check_value(table: ResourceTable, alias: str, value: str) -> None:
    """Raise ``InvalidValue`` unless ``value`` fits the resource's format and allowed list
    (the same compiled rules the MQTT dispatcher applies)."""
    reason = validate_value(table, alias, value)
    if reason is not None:
        raise InvalidValue(f"{alias}: {reason}")


class StateService:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry

    # -- device side ---------------------------------------------------------------------

    def points_for(
        self, cid: str, values: Sequence[tuple[str, str, int]], *, replay_check: bool = False
    ) -> list[PointWrite]:
        """Turn (alias, value, µs) triples into store points, validating defined aliases.
        Raises ``InvalidValue`` on the first value that does not fit (the HTTP API refuses
        the whole request, docs/protocol.md §12 item 13)."""
        resources = self.registry.resources(cid)
        table = self.registry.table(cid)
        out = []
        for alias, value, ts in values:
            res = resources.get(alias)
            if res is not None:
                check_value(table, alias, value)
            out.append(
                PointWrite(
                    alias,
                    value,
                    ts,
                    defined=res is not None,
                    settable=bool(res and res.settable),
                    replay_check=replay_check,
                )
            )
        return out

    def submit_write(
        self,
        auth: DeviceAuth,
        points: Sequence[PointWrite],
        meta: EventMeta,
        *,
        timestamp: int | None = None,
    ) -> Ticket:
        """Queue a device write (one ``data_in`` event); await the ticket before acking."""
        return self.store.submit(
            [
                DataIn(
                    auth.connector_id,
                    auth.device_id,
                    auth.identity,
                    points,
                    meta,
                    timestamp or now_us(),
                )
            ]
        )

    async def device_write(
        self, auth: DeviceAuth, points: Sequence[PointWrite], meta: EventMeta
    ) -> int:
        (stored,) = await self.submit_write(auth, points, meta).wait()
        assert isinstance(stored, int)
        return stored

    async def read_for_device(self, device_id: int, aliases: Sequence[str]) -> dict[str, str]:
        """What a device read returns: the set value of settable resources, else the
        reported value (docs/protocol.md §2.4, §13 item 3).  Aliases without a value are absent."""
        if not aliases:
            return {}
        out = {}
        for row in await self.store.state(device_id, aliases):
            v = row.set_value if row.set_value is not None else row.reported
            if v is not None:
                out[row.alias] = v
        return {a: out[a] for a in aliases if a in out}

    async def pending(
        self, device_id: int, aliases: Sequence[str] | None = None, since: int = 0
    ) -> list[Push]:
        """Pending set values of the device, oldest first (optionally only ``aliases``
        and only those set after ``since`` µs)."""
        want = None if aliases is None else set(aliases)
        return [
            Push(r.alias, r.set_value if r.set_value is not None else "", r.set_ts or 0)
            for r in await self.store.pending(device_id, since)
            if want is None or r.alias in want
        ]

    # -- management side -----------------------------------------------------------------

    async def get(self, cid: str, identity: str) -> dict[str, AliasState]:
        self.registry.require(cid)
        device = await self.store.device(cid, identity)
        if device is None:
            raise NotFound(f"device {identity!r} not found")
        out = {}
        for r in await self.store.state(device.id):
            rts, sts = r.reported_ts, r.set_ts
            ts = max(t for t in (rts, sts, 0) if t is not None) or None
            out[r.alias] = AliasState(r.reported, r.set_value, ts, rts, sts, r.pending)
        return out

    async def set_values(
        self, cid: str, identity: str, values: Mapping[str, Any], *, meta: EventMeta | None = None
    ) -> dict[str, AliasState]:
        """Cloud set (``setIdentityState``): validate every alias first (all or nothing),
        then commit.  The committed ``data_out`` event pushes the values to the device and
        wakes its long-polls, on whichever process holds it (``services/control.py``)."""
        resources = self.registry.resources(cid)
        table = self.registry.table(cid)
        if not values:
            raise BadRequest("no values to set")
        texts: dict[str, str] = {}
        for alias, value in values.items():
            res = resources.get(alias)
            if res is None:
                raise NotFound(f"resource {alias!r} is not defined")
            if not res.settable:
                raise BadRequest(f"resource {alias!r} is not settable")
            text = value_text(value)
            check_value(table, alias, text)
            texts[alias] = text
        ts = now_us()
        meta = meta or EventMeta(protocol="api")
        op = SetValues(
            cid,
            identity,
            [SetValue(a, v, resources[a].sync) for a, v in texts.items()],
            meta,
            ts,
        )
        await self.store.write([op])
        return await self.get(cid, identity)
