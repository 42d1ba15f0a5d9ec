"""``deepaas-cli explain``: why the model answers what it does, feature by feature.

    deepaas-cli --model-name irisbench explain --background rows.csv --sepal_length 6.9 \\
        --sepal_width 3.2 --petal_length 5.7 --petal_width 2.3 --max-explanations 4
    deepaas-cli --url http://127.0.0.1:5000 --model-name irisbench explain --petal_length 5.7 ...

The flags are predict's. In this process the explanation is computed against the rows of
``--background`` (a CSV with a header line, or a JSON list of objects); on a server
(``--url``) against the model's explanations initialization, which ``--background`` makes
first when given. Prints the answer of ``POST /v2/models/{name}/explain`` as JSON on stdout
and a signed bar per feature on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping, TextIO

from ..errors import ArgumentError
from ..quality.explanations import explain_options
from .checks_cli import _rows
from .models_cli import CommandFailed, ModelOutput

SUMMARY = "explain one prediction: each feature's strength (shap), strongest first ('explain --help')"
BAR = 20  # characters of the strongest feature's bar


def add_explain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--background",
        metavar="FILE",
        help="the background rows (CSV with a header line, or a JSON list of objects); on a server: "
        "its explanations initialization is made from them first",
    )
    parser.add_argument("--max-explanations", type=int, default=3, help="features listed per row (default: 3)")
    parser.add_argument("--explain-class", help="the class explained (default: the predicted one)")
    parser.add_argument("--threshold-low", type=float, help="explain only a prediction below this")
    parser.add_argument("--threshold-high", type=float, help="explain only a prediction above this")


def explanation_request(args: argparse.Namespace) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
    """The background rows (None: not given) and the checked options."""
    background = _rows(Path(args.background)) if args.background else None
    try:
        options = explain_options(
            {
                "maxExplanations": args.max_explanations,
                "explainClass": args.explain_class,
                "thresholdLow": args.threshold_low,
                "thresholdHigh": args.threshold_high,
            }
        )
    except ArgumentError as exc:
        raise CommandFailed(exc.message, 2) from None
    return background, options


def run_explain_command(model: Any, args: argparse.Namespace, values: Mapping[str, Any]) -> ModelOutput:
    background, options = explanation_request(args)
    answer = model.explain(values, background, options)
    show_bars(answer, sys.stderr)
    return ModelOutput(json=answer)


def show_bars(answer: Mapping[str, Any], out: TextIO) -> None:
    """Each row's explanations as signed bars, the strongest the longest::

    virginica (0.97): petal_length=5.7  +0.4117 +++ ████████████████████
    """
    for row in answer.get("data") or []:
        explanations = row.get("predictionExplanations") or []
        print(f"{row.get('prediction')} (row {row.get('rowId')}):", file=out)
        largest = max((abs(e["strength"]) for e in explanations), default=0.0) or 1.0
        for e in explanations:
            bar = ("█" if e["strength"] >= 0 else "░") * max(1, round(BAR * abs(e["strength"]) / largest))
            said = f"{e['feature']}={e['featureValue']}"
            print(f"  {said:<28} {e['strength']:+.4f} {e['qualitativeStrength']:<3} {bar}", file=out)
        if not explanations:
            print("  (not explained: outside the thresholds)", file=out)
