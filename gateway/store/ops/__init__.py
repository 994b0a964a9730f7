"""The op handlers of both store backends: one function per op type of
:data:`gateway.store.api.Op` (the modules of this package), written once against the
:class:`~gateway.store.ops._tx.Tx` protocol (its docstring says how one SQL text serves
SQLite and PostgreSQL); :data:`HANDLERS`, which handler serves which op type; and
:func:`apply_ops`, which applies one submission's ops in order inside its transaction
(coalescing a device's "now" writes).

Every SQL statement of the op handlers is in this package; each backend's ``tx.py`` holds
its Tx and the writer's retention.  A handler raises a :mod:`gateway.errors` class to
refuse; the writer then rolls the submission back alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.store.api import (
    ActivateDevice,
    AppendEvent,
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
    DeviceDisconnected,
    DropConnections,
    FinishRun,
    ImportDevices,
    MarkVanished,
    NodeBeat,
    Op,
    OpResult,
    PutContent,
    PutResource,
    ReapNodes,
    RecordHealth,
    ResetOnline,
    RevokeAdminToken,
    SetValues,
    StartRun,
    UpdateConnector,
    UpdateDevice,
    UpdateIntegration,
    UpsertAsset,
)
from gateway.store.ops import catalog, data, devices, integrations
from gateway.store.ops._tx import Delta, Tx, TxBase

__all__ = ["HANDLERS", "Delta", "Handler", "Tx", "TxBase", "apply_ops", "seed_counts"]

Handler = Callable[[Tx, Any], OpResult]

seed_counts = data.seed_counts

HANDLERS: Mapping[type, Handler] = {
    DataIn: data.data_in,
    AppendEvent: data.append_event,
    DeviceConnected: data.device_connected,
    DeviceDisconnected: data.device_disconnected,
    ResetOnline: data.reset_online,
    DropConnections: data.drop_connections,
    NodeBeat: data.node_beat,
    ReapNodes: data.reap_nodes,
    SetValues: data.set_values,
    CreateDevice: devices.create_device,
    ImportDevices: devices.import_devices,
    UpdateDevice: devices.update_device,
    DeleteDevice: devices.delete_device,
    ActivateDevice: devices.activate_device,
    CreateConnector: catalog.create_connector,
    UpdateConnector: catalog.update_connector,
    DeleteConnector: catalog.delete_connector,
    PutResource: catalog.put_resource,
    DeleteResource: catalog.delete_resource,
    PutContent: catalog.put_content,
    DeleteContent: catalog.delete_content,
    CreateAdminToken: catalog.create_admin_token,
    RevokeAdminToken: catalog.revoke_admin_token,
    CreateIntegration: integrations.create_integration,
    UpdateIntegration: integrations.update_integration,
    DeleteIntegration: integrations.delete_integration,
    RecordHealth: integrations.record_health,
    StartRun: integrations.start_run,
    FinishRun: integrations.finish_run,
    UpsertAsset: integrations.upsert_asset,
    MarkVanished: integrations.mark_vanished,
}


def _has_replay(op: DataIn) -> bool:
    return any(p.replay_check for p in op.points)


def apply_ops(tx: Tx, ops: Sequence[Op]) -> list[OpResult]:
    """Apply one submission's ops in order; returns their results.

    A run of "now" writes of one device (the publishes of one MQTT read) is coalesced: one
    state upsert per alias and one ``data_in`` event whose payload keeps every write, instead
    of three statements per publish (docs/decisions.md, "Performance").  Each op of the run
    still gets its own result (its number of points).
    """
    handlers, data_in = HANDLERS, data.data_in
    results: list[OpResult] = []
    i, n = 0, len(ops)
    while i < n:
        op = ops[i]
        i += 1
        if type(op) is DataIn:
            j = i
            if not _has_replay(op):
                while j < n:
                    nxt = ops[j]
                    if type(nxt) is not DataIn or nxt.device_id != op.device_id or _has_replay(nxt):
                        break
                    j += 1
            if j == i:
                results.append(data_in(tx, op))
                continue
            run: list[DataIn] = [op, *(o for o in ops[i:j] if type(o) is DataIn)]
            merged = DataIn(
                op.connector_id,
                op.device_id,
                op.identity,
                [p for o in run for p in o.points],
                op.meta,
                op.timestamp,
            )
            data_in(tx, merged)
            results.extend(len(o.points) for o in run)
            i = j
            continue
        handler = handlers.get(type(op))
        if handler is None:
            raise TypeError(f"unknown store operation {type(op).__name__}")
        results.append(handler(tx, op))
    return results
