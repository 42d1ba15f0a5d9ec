"""The benchmark script runs end to end (ours only, a smoke-sized run)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_smoke_run(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--frameworks", "ours", "--quick",
         "--requests", "200", "--concurrency", "1,8", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| echobench predict c=8 |" in result.stdout
    report = json.loads((tmp_path / "latest.json").read_text())
    rows = {(r["model"], r["kind"], r["concurrency"]): r for r in report["rows"]}
    assert rows[("irisbench", "predict", 8)]["ours"]["errors"] == 0
    assert rows[("irisbatch", "predict", 8)]["ours"]["rps"] > 0
    assert rows[("echobench", "metadata", 64)]["ours"]["rps"] > 0
    assert report["in_process"]["irisbench"] > 0
    assert (tmp_path / "latest.md").read_text().startswith("Run of ")
