"""The memory phase of ``make bench``: each server's resident memory (RSS of its whole process
tree, and per process) once it has answered a prediction, and its start-up time (from the
command to the first prediction answered 200).

Same plugins and workers on both sides: irisbench and echobench with ``--workers 2`` (DEEPaaS's
``--workers 2``: its two prediction processes), ours with the process executor; our echobench
also as the bench serves it elsewhere (``--executor thread``: no worker process); and a server
of ours with the demo plugin alone (the issue's "no plugin but the demo", target 150 MiB).

Ours runs from a virtualenv of its own, installed as a user of these plugins would
(``deepaas_like`` without extras, the demo, echobench and irisbench) under the bench's work
folder, as DEEPaaS's is (DEEPaaS, scikit-learn, the plugins). The virtualenv of ``make test``
has every extra: its ``shap`` brings pandas, which scikit-learn imports whenever it is
installed (``sklearn.utils.fixes``), 29 MiB in every worker that imports scikit-learn; irisbench
is measured there too, for information.

Each server starts on a fresh data directory (ours migrates its store then: the start-up a new
user sees), is asked one prediction, left 2 s, then measured. A process's role is read from its
command line: the server, a worker (``spawn_main``), the fork server helper, multiprocessing's
resource tracker, a contained worker (``isolated_main``).
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadgen import _tree
from servers import deepaas_listen, free_port, log
from stress import QUERY

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LEAN_PACKAGES = (ROOT, ROOT / "plugins" / "demo", ROOT / "tests" / "bench_plugins" / "echobench")
LEAN_PACKAGES += (ROOT / "tests" / "bench_plugins" / "irisbench",)
START_TIMEOUT_S = 180.0
SETTLE_S = 2.0
ROLES = (
    (b"resource_tracker", "resource tracker"),
    (b"forkserver", "fork server helper"),
    (b"isolated_main", "contained worker"),
    (b"spawn_main", "worker"),
)
# (model, workers, flags): ours; DEEPaaS gets --workers of the same number
CASES = (
    ("irisbench", 2, ["--workers", "2"]),
    ("echobench", 2, ["--workers", "2"]),
    ("echobench", 0, ["--executor", "thread"]),
    ("demo", 0, []),
)


def ensure_lean(venv: Path) -> Path:
    """Ours without extras, with the demo and the two plugins, in a virtualenv of its own; its python."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import deepaas_like, deepaas_like_demo, irisbench.api, echobench.api, sklearn"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    log(f"installing deepaas_like (no extras) with the demo, echobench and irisbench into {venv}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *(arg for path in LEAN_PACKAGES for arg in ("-e", str(path)))], check=True)
    return python


def processes(pid: int) -> list[dict]:
    """Every live process of ``pid``'s tree: its role and RSS (MiB)."""
    found = []
    for member in sorted(_tree(pid)):
        try:
            with open(f"/proc/{member}/cmdline", "rb") as fh:
                cmdline = fh.read()
            with open(f"/proc/{member}/status") as fh:
                rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        role = "server" if member == pid else next((r for key, r in ROLES if key in cmdline), "other")
        found.append({"pid": member, "role": role, "rss_mib": round(rss / 1024, 1)})
    return found


def _answered(port: int, path: str) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("POST" if "predict" in path else "GET", path, headers={"Accept": "application/json"})
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def measure_server(command: list[str], path: str, log_path: Path, env: dict | None = None) -> dict:
    """Start ``command`` (listening on a free port), time it to its first 200 on ``path``, then
    its process tree's RSS; stop it (its whole session)."""
    port = free_port()
    with open(log_path, "w") as output:
        started = time.monotonic()
        process = subprocess.Popen(
            [*command, *deepaas_listen(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        try:
            while not _answered(port, path):
                if process.poll() is not None:
                    raise RuntimeError(f"server exited ({process.returncode}); see {log_path}")
                if time.monotonic() - started > START_TIMEOUT_S:
                    raise RuntimeError(f"server not answering after {START_TIMEOUT_S:g} s; see {log_path}")
                time.sleep(0.05)
            startup = time.monotonic() - started
            time.sleep(SETTLE_S)
            members = processes(process.pid)
        finally:
            try:
                os.killpg(process.pid, 15)
                process.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(process.pid, 9)
                process.wait(10)
    return {
        "startup_s": round(startup, 2),
        "rss_mib": round(sum(m["rss_mib"] for m in members), 1),
        "extra": {"processes": [{k: m[k] for k in ("role", "rss_mib")} for m in members]},
    }


def measure(
    work: Path,
    deepaas_run: Path | None,
    raw: Path,
    record,
    repeats: int = 1,
    venv: Path | None = None,
    quick: bool = False,
) -> None:
    """Every case, ``repeats`` times each, DEEPaaS's and ours alternating: ``record(framework,
    model, kind, workers, config, result)`` for each run. ``quick``: irisbench and the demo alone,
    ours from this Python's virtualenv (no virtualenv installed)."""
    python = Path(sys.executable) if quick else ensure_lean(venv or work / "ours-lean")
    cases = [c for c in CASES if c[0] == "demo" or c[:2] == ("irisbench", 2)] if quick else CASES
    with tempfile.TemporaryDirectory(prefix="memory-", dir=work) as scratch:
        for repeat in range(repeats):
            for model, workers, flags in cases:
                path = f"/v2/models/{model}/predict/?{QUERY}" if model != "demo" else "/v2/health/ready"
                config = " ".join(flags) or "defaults"
                if deepaas_run is not None and workers:
                    log(f"memory: DEEPaaS {model} --workers {workers}")
                    result = measure_server(
                        [str(deepaas_run), "--model-name", model, "--workers", str(workers)],
                        path,
                        raw / f"memory-deepaas-{model}-{repeat}.log",
                    )
                    record("deepaas", model, "memory", workers, f"--workers {workers}", result)
                log(f"memory: ours {model} {config}")
                data = Path(tempfile.mkdtemp(prefix="data-", dir=scratch))
                command = [str(python), "-m", "deepaas_like.cli.run", "--data-dir", str(data), "--model-name", model]
                result = measure_server([*command, *flags], path, raw / f"memory-ours-{model}-{repeat}.log")
                record("ours", model, "memory", workers, config, result)
            if quick:
                continue
            log("memory: ours irisbench --workers 2, in make test's virtualenv (every extra)")
            data = Path(tempfile.mkdtemp(prefix="data-", dir=scratch))
            command = [sys.executable, "-m", "deepaas_like.cli.run", "--data-dir", str(data)]
            result = measure_server(
                [*command, "--model-name", "irisbench", "--workers", "2"],
                f"/v2/models/irisbench/predict/?{QUERY}",
                raw / f"memory-ours-full-irisbench-{repeat}.log",
            )
            record("ours", "irisbench", "memory-full", 2, "--workers 2, every extra installed", result)


if __name__ == "__main__":  # a quick look: python benchmarks/memory_bench.py [DEEPAAS_VENV]
    deepaas = Path(sys.argv[1]) / "bin" / "deepaas-run" if len(sys.argv) > 1 else None
    where = Path(tempfile.gettempdir()) / "deepaas-like-bench"
    where.mkdir(exist_ok=True)

    def show(framework, model, kind, workers, config, result):
        roles = ", ".join(f"{p['role']} {p['rss_mib']:.0f}" for p in result["extra"]["processes"])
        print(
            f"{framework:8} {model:10} {kind:12} {config:40} {result['rss_mib']:7.1f} MiB  "
            f"start {result['startup_s']:5.2f} s  [{roles}]"
        )

    measure(where, deepaas, Path(tempfile.mkdtemp()), show)
