"""Scale-out (ours only): replicas on one PostgreSQL, job submissions by store, the Ray executor.

    postgres = start_postgres()                        # tests/support/postgres.py's throwaway cluster
    try:
        shared = SharedFiles.make(folder)              # one --artifact-dir and --auth-key-file
        commands = [ours_command(data_dir, ["echobench"], replica_flags(postgres.new_database(), shared))
                    for data_dir in (first_dir, second_dir)]   # the same database for both
        ...                                            # Server(command, ..., settle=True) for each
        result = round_robin(servers, "echobench", concurrency=64, requests=3000)
        result = submissions(server, "echobench", concurrency=8, requests=3000)
    finally:
        postgres.stop()

* replicas: echobench's predict at c=64 on one replica (``--store`` PostgreSQL, thread
  executor), then on two replicas of one database, the same load requested round-robin
  (loadgen with one URL per replica), each replica's CPU counted.
* submissions: asynchronous predictions (``POST .../predictions/?...``, answered 202 with
  a Location; any other status is an error) at c=8, on the default SQLite store and on
  PostgreSQL: how many jobs a server accepts per second.
* ray: irisbench with ``--executor ray`` (actors on the local Ray head the server starts
  on 127.0.0.1) against ``--executor process``, both ``--workers 2``; at c=1 the
  difference of the p50s is Ray's cost per call.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from loadgen import process_tree_cpu, process_tree_rss_mib
from measure import LOADGEN, run_loadgen
from servers import ROOT, Server
from stress import QUERY

LEVEL = 64  # the replica and Ray cases' concurrency (that of the echobench and irisbench cases)
RAY_LEVELS = (LEVEL, 1)  # c=1: the cost of one call
SUBMIT_CONCURRENCY = 8
REPLICA_FLAGS = ["--executor", "thread"]  # echobench as the loadgen phase serves it
RAY_FLAGS = ["--executor", "ray", "--workers", "2", "--ray-num-cpus", "0.5"]
PROCESS_FLAGS = ["--executor", "process", "--workers", "2"]
RAY_START_TIMEOUT_S = 300  # a local Ray head (GCS, raylet, agents) and the actors, on a busy 2-core machine


def start_postgres():
    """A throwaway PostgreSQL cluster (tests/support/postgres.py's PostgresServer), started; ``.stop()`` it."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.postgres import PostgresServer, _binaries

    if importlib.util.find_spec("psycopg") is None:
        raise RuntimeError("psycopg is not installed in this Python (pip install 'deepaas_like[postgresql]')")
    bin_dir = _binaries()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    server = PostgresServer(bin_dir)
    try:
        server.start()
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(server.root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {(exc.stderr or '').strip()[-300:]}") from None
    return server


def ray_missing() -> str | None:
    """Why the Ray cases cannot run here, or None."""
    return None if importlib.util.find_spec("ray") else "ray is not installed in this Python (deepaas_like[ray])"


@dataclass
class SharedFiles:
    """What replicas share besides the database: uploaded model files and the token key."""

    artifact_dir: Path
    auth_key_file: Path

    @classmethod
    def make(cls, folder: Path) -> "SharedFiles":
        (folder / "artifacts").mkdir(parents=True, exist_ok=True)
        return cls(folder / "artifacts", folder / "auth.key")  # the key: written by the first replica


def replica_flags(store: str, shared: SharedFiles) -> list[str]:
    return [
        *REPLICA_FLAGS,
        "--store",
        store,
        "--artifact-dir",
        str(shared.artifact_dir),
        "--auth-key-file",
        str(shared.auth_key_file),
    ]


def round_robin(servers: list[Server], model: str, *, concurrency: int, requests: int) -> dict:
    """``model``'s predict at ``concurrency``, one URL per server requested in turn (benchmarks/loadgen.py:
    the shared one takes a single URL); the CPU (from before the warm-up) and RSS of every
    server's process tree, summed in ``server_cpu_ms_per_req`` and ``rss_mib``, CPU each in ``extra``."""
    urls = [server.url(f"/v2/models/{model}/predict/?{QUERY}") for server in servers]
    before = [process_tree_cpu(server.pid) for server in servers]
    result = run_loadgen(urls, method="POST", concurrency=concurrency, requests=requests, server_pid=servers[0].pid)
    cpu = [process_tree_cpu(server.pid) - start for server, start in zip(servers, before)]
    result["server_cpu_ms_per_req"] = round(sum(cpu) / max(1, result["completed"]) * 1000, 3)
    result["rss_mib"] = round(sum(process_tree_rss_mib(server.pid) for server in servers), 1)
    result["extra"] = {
        "replicas": len(servers),
        "replica_cpu_s": [round(c, 3) for c in cpu],
        "replica_pids": [server.pid for server in servers],
    }
    return result


def submissions(server: Server, model: str, *, concurrency: int, requests: int, loadgen: Path = LOADGEN) -> dict:
    """``POST /v2/models/MODEL/predictions/?...`` at ``concurrency``: asynchronous predictions
    accepted per second (``rps``); any answer but 202 counts as an error."""
    result = run_loadgen(
        [server.url(f"/v2/models/{model}/predictions/?{QUERY}")],
        method="POST",
        concurrency=concurrency,
        requests=requests,
        server_pid=server.pid,
        loadgen=loadgen,
        expect_status=202,
        warmup=10,
        duration_max=max(60.0, requests / 20),
    )
    result["extra"] = {"submitted": result["completed"], "accepted": result["status_counts"].get("202", 0)}
    return result


def predict(server: Server, model: str, *, concurrency: int, requests: int, loadgen: Path = LOADGEN) -> dict:
    """``model``'s predict at ``concurrency`` (the Ray and process executor rows)."""
    return run_loadgen(
        [server.url(f"/v2/models/{model}/predict/?{QUERY}")],
        method="POST",
        concurrency=concurrency,
        requests=requests,
        server_pid=server.pid,
        loadgen=loadgen,
    )
