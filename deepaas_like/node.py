"""Which server this is, among replicas: its node id, kept in its data directory."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

NODE_FILE = "node-id"


def node_id(data_dir: str | os.PathLike[str]) -> str:
    """This server's name in the jobs it runs: its host and a random id kept in its data
    directory, which only one server at a time may use. A server that restarts on the
    same directory knows its own jobs again (and that the one who ran them is gone)."""
    path = Path(data_dir) / NODE_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        node = f"{socket.gethostname()}:{uuid.uuid4().hex[:12]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(node + "\n")
        return node
