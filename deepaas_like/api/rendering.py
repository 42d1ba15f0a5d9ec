"""Sending a prediction's output over HTTP (the output itself: :mod:`deepaas_like.outputs`)."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from aiohttp import hdrs, web

from ..outputs import PredictionOutput


async def send_output(request: web.Request, output: PredictionOutput) -> web.StreamResponse:
    if output.path is None:
        return web.Response(body=output.body, content_type=output.content_type)
    return await send_file(request, output.path, output.content_type, output.filename)


async def send_file(
    request: web.Request,
    path: str,
    content_type: str,
    filename: str | None,
    *,
    disposition: str = "inline",
    extra_headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """Stream a file completely before returning (the caller may delete it right after)."""
    name = filename or os.path.basename(path)
    fh = await asyncio.to_thread(open, path, "rb")
    try:
        response = web.StreamResponse(
            headers={
                hdrs.CONTENT_TYPE: content_type,
                hdrs.CONTENT_LENGTH: str(os.fstat(fh.fileno()).st_size),
                hdrs.CONTENT_DISPOSITION: f'{disposition}; filename="{_ascii_name(name)}"',
                **(extra_headers or {}),
            }
        )
        await response.prepare(request)
        while chunk := await asyncio.to_thread(fh.read, 256 * 1024):
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        fh.close()


def _ascii_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._ -]", "_", name)[:200] or "file"


def file_in(directory: Path, name: str) -> Path | None:
    """The plain file ``name`` directly in ``directory`` (resolved: ``..%2F`` decodes to
    ``../``), not a hidden one; None for anything else."""
    path = (directory / name).resolve()
    if path.parent != directory or path.name.startswith(".") or not path.is_file():
        return None
    return path
