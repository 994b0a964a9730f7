"""Child process for test_store_kill9: writes as fast as it can from many Trio tasks and
prints each write's number only after its ticket says it committed (synchronous=FULL)."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from gateway.store.api import AppendEvent, CreateDevice, DataIn, EventMeta, PointWrite
from gateway.store.sqlite import open_store

META = EventMeta(connection_id="k", ip="127.0.0.1", protocol="test")


async def main(path: Path) -> None:
    async with open_store(path, synchronous="FULL") as store:
        # the devices exist (a write for an unknown device is refused: lock means now)
        ids = [await store.write([CreateDevice("c", f"d{t}", "whitelisted", 0)]) for t in range(16)]

        async def writer(task: int) -> None:
            i = 0
            while True:
                n = task * 1_000_000 + i
                ticket = store.submit(
                    [
                        DataIn(
                            "c",
                            int(ids[task][0]),  # type: ignore[arg-type]
                            f"d{task}",
                            [PointWrite("data_in", str(n), n)],
                            META,
                            n,
                        ),
                        AppendEvent("c", "publish", f"d{task}", META, n, {"n": n}),
                    ]
                )
                await ticket.wait()
                sys.stdout.write(f"{n}\n")
                sys.stdout.flush()
                i += 1

        async with trio.open_nursery() as nursery:
            for t in range(16):
                nursery.start_soon(writer, t)


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]))
