"""How a contained worker gets the uploaded files it serves: an open descriptor from the
server, never a path into the artifact directory."""

from __future__ import annotations

import os
import socket
from typing import Callable


class FileChannel:
    """The worker's end of the channel that brings it the uploaded files it serves: it
    asks for a target's file over its pipe, and the server answers on this socket with an
    open descriptor (SCM_RIGHTS). The file is copied into the scratch directory, named
    with its type's extension, and the copy is removed once the model is loaded."""

    def __init__(self, sock: socket.socket, ask: Callable[[str], None], scratch: str) -> None:
        self._sock = sock
        self._ask = ask
        self._scratch = scratch

    def local_copy(self, key: str, filetype: str) -> str:
        self._ask(key)
        message, fds, _, _ = socket.recv_fds(self._sock, 4096, 1)
        if not fds:
            raise FileNotFoundError(message.decode("utf-8", "replace") or "the server sent no file")
        name = "".join(c for c in key.split(":")[0] if c.isalnum())[:64] or "model"
        path = os.path.join(self._scratch, f"{name}.{filetype}")
        with os.fdopen(fds[0], "rb") as source, open(path, "wb") as copy:
            while chunk := source.read(1 << 20):
                copy.write(chunk)
        return path

    def done_with(self, path: str) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass
