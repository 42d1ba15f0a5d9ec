"""The flags every peer launcher in this folder takes (standard library only: the launchers
run in the peers' own virtualenvs, not in ours).

    python benchmarks/peers/mlserver_serve.py --model FOREST.joblib --workers 2 \
        --max-batch-size 32 --max-batch-time-ms 2 --workdir DIR --port 8080

Every server binds 127.0.0.1 only; ``--max-batch-size 1`` means no adaptive batching.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

HOST = "127.0.0.1"
MODEL_NAME = "iris"  # the name the V2 servers serve the forest under


def parse(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", type=Path, required=True, help="the iris forest, a joblib file")
    parser.add_argument("--workers", type=int, default=1, help="model worker processes")
    parser.add_argument("--max-batch-size", type=int, default=1, help="adaptive batching: 1 is off")
    parser.add_argument("--max-batch-time-ms", type=float, default=2.0, help="adaptive batching: longest wait")
    parser.add_argument("--workdir", type=Path, required=True, help="where the server's files go")
    parser.add_argument("--port", type=int, required=True, help="the HTTP port on 127.0.0.1")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    return args


def free_port() -> int:
    """A free loopback port, for a server's other listeners (gRPC, metrics)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]
