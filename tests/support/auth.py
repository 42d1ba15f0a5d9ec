"""Tokens from the real deepaas-token command, and the request that uses one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

IRIS_QUERY = "sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"
ECHO = f"/v2/models/echobench/predict/?{IRIS_QUERY}"
TOKEN_CLI = str(Path(sys.executable).parent / "deepaas-token")


def mint(data_dir: Path, *args: str) -> str:
    """A token from the real deepaas-token command (its last line of output)."""
    result = subprocess.run(
        [TOKEN_CLI, "--data-dir", str(data_dir), "create", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
