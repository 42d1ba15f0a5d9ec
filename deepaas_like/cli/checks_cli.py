"""``deepaas-cli test``: the model tests, in this process, for a plugin's own CI.

    deepaas-cli --model-name irisbench test --data rows.csv --check longRunningService=fail

Runs the same checks as ``POST /v2/models/{name}/tests/`` (see
:mod:`deepaas_like.quality.checks`) on the plugin loaded here, prints the result (DataRobot's
``overallStatus`` and ``testingStatus``) as JSON, the checks' log on stderr, and exits 1
when a check configured ``fail`` failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import ArgumentError
from ..quality.checks import CHECKS, IGNORED, LEVELS, TestRun, configuration_of, run_checks
from ..quality.predictor import LocalPredictor
from ..quality.samples import checked_rows, rows_from_csv
from .models_cli import CommandFailed, LocalModel

SUMMARY = "run the model tests on sample rows (a CSV or JSON file); exit 1 when a 'fail' check fails"


def add_test_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        metavar="FILE",
        help="the sample rows: a CSV file with a header line, or a JSON list of objects",
    )
    parser.add_argument(
        "--check",
        action="append",
        default=[],
        metavar="CHECK=LEVEL",
        help=f"set a check's level (repeatable); checks: {', '.join(CHECKS)}; levels: {', '.join(LEVELS)}",
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=None,
        metavar="KEY",
        help=f"keys of the answers left out of comparisons (default: {', '.join(IGNORED)})",
    )


def run_test_command(model: Any, args: argparse.Namespace) -> int:
    if not isinstance(model, LocalModel):
        raise CommandFailed(
            "'test' runs in this process; on a server, POST /v2/models/{name}/tests/ starts the same checks as a job", 2
        )
    rows = _rows(Path(args.data))
    levels: dict[str, str] = {}
    for item in args.check:
        check, sep, level = item.partition("=")
        if not sep:
            raise CommandFailed(f"--check takes CHECK=LEVEL, got {item!r}", 2)
        levels[check] = level
    try:
        configuration = configuration_of(levels)
    except ArgumentError as exc:
        raise CommandFailed(exc.message, 2) from None
    model.warm()
    predictor = LocalPredictor(model.name, model.adapter, model.predict_spec)
    run = TestRun(configuration, tuple(args.ignore if args.ignore is not None else IGNORED))

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    asyncio.run(run_checks(predictor, rows, run, log))
    json.dump(run.document(), sys.stdout, indent=1)
    print()
    return (
        1
        if any(
            s["status"] in ("failed", "aborted") and configuration[name] == "fail"
            for name, s in run.testing_status.items()
        )
        else 0
    )


def _rows(path: Path) -> list[dict[str, Any]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CommandFailed(f"cannot read {path}: {exc.strerror}", 2) from None
    try:
        if path.suffix.lower() == ".json":
            return checked_rows(json.loads(data))
        return rows_from_csv(data)
    except (ArgumentError, ValueError) as exc:
        raise CommandFailed(f"{path}: {getattr(exc, 'message', exc)}", 2) from None
