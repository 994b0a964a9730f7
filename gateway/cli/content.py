"""``gateway content …``: files (firmware, configuration) that devices download.

Uploads and downloads stream through :class:`gateway.cli.client.Client` with a progress bar,
so a 150 MB firmware image never sits in memory.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path
from typing import Any

import click

from gateway.cli.client import content_path
from gateway.cli.context import Run, command_options, group_options
from gateway.cli.listing import print_page
from gateway.cli.output import Column

__all__ = ["content"]

CONTENT_COLS = (
    Column("id"),
    Column("length", "SIZE", kind="bytes"),
    Column("type"),
    Column("updated", kind="time"),
    Column("description"),
)


@click.group()
@group_options
def content() -> None:
    """Content (firmware and files) that devices download."""


def _show(run: Run, info: dict[str, Any]) -> None:
    if run.json:
        run.out.emit_json(info)
    else:
        run.out.record(info, {"length": "bytes"})


@content.command("upload")
@click.argument("cid")
@click.argument("content_id")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--type", "ctype", help="media type [guessed from the file name]")
@click.option("--description", default="")
@command_options
def content_upload(
    run: Run, cid: str, content_id: str, file: str, ctype: str | None, description: str
) -> None:
    """Upload FILE as CONTENT_ID (replacing an older one of that id)."""
    size = os.path.getsize(file)
    ctype = ctype or mimetypes.guess_type(file)[0] or "application/octet-stream"
    c = run.client()
    with (
        open(file, "rb") as fh,
        run.out.progress(
            f"uploading {Path(file).name}",
            size,
            unit="bytes",
            then="the gateway is storing it",
        ) as step,
    ):
        info = c.upload(
            "PUT",
            content_path(cid, content_id),
            fh,
            size=size,
            content_type=ctype,
            params={"description": description} if description else {},
            progress=step,
        )
    _show(run, info)


@content.command("list")
@click.argument("cid")
@click.option("--prefix", help="only ids starting with this")
@command_options
def content_list(run: Run, cid: str, prefix: str | None) -> None:
    """List connector CID's content."""
    params = {"prefix": prefix}
    print_page(run.out, run.client(), content_path(cid), params, CONTENT_COLS, noun="items")


@content.command("show")
@click.argument("cid")
@click.argument("content_id")
@command_options
def content_show(run: Run, cid: str, content_id: str) -> None:
    """Show CONTENT_ID's size, type, checksum and description."""
    _show(run, run.client().get(content_path(cid, content_id), info="true"))


@content.command("download")
@click.argument("cid")
@click.argument("content_id")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="file to write [the id's last part, in the current directory]",
)
@command_options
def content_download(run: Run, cid: str, content_id: str, output: str | None) -> None:
    """Download CONTENT_ID to a file."""
    target = Path(output or content_id.rsplit("/", 1)[-1])
    partial = target.with_name(target.name + ".part")  # a broken download leaves no file
    n = 0
    try:
        with (
            run.client().download(content_path(cid, content_id)) as dl,
            partial.open("wb") as fh,
            run.out.progress(f"downloading {content_id}", dl.length, unit="bytes") as step,
        ):
            for chunk in dl.chunks():
                fh.write(chunk)
                n += len(chunk)
                step(len(chunk))
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    if run.json:
        run.out.emit_json({"id": content_id, "length": n, "file": str(target)})
    else:
        run.out.line(f"{content_id} -> {target} ({n:,} bytes)")


@content.command("delete")
@click.argument("cid")
@click.argument("content_id")
@command_options
def content_delete(run: Run, cid: str, content_id: str) -> None:
    """Delete CONTENT_ID."""
    run.client().delete(content_path(cid, content_id))
    if run.json:
        run.out.emit_json({"deleted": content_id})
    else:
        run.out.line(f"deleted {content_id}")
