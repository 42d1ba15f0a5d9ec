"""Feature impact: how much a model's predictions move when one feature's values are shuffled.

Permutation importance measured through the model's own predictions (batched): for each
feature and each repeat, that feature's values are shuffled across the rows, the rows are
predicted again, and the impact is the mean distance to the unshuffled predictions (class
probabilities and numbers by their difference, labels and other values by whether they
changed). No actual values are needed. The result has DataRobot's shape::

    {"count": 4, "rowCount": 500, "ranRedundancyDetection": false,
     "featureImpacts": [{"featureName": "petal_width", "impactNormalized": 1.0,
                         "impactUnnormalized": 0.41, "redundantWith": null}, ...]}
"""

from __future__ import annotations

import io
import random
from typing import Any, Callable

from .checks import IGNORED
from .predictor import Predictor
from .samples import Row

REPEATS = 5


def distance(a: Any, b: Any, ignore: tuple[str, ...] = IGNORED) -> float:
    """Between 0 (the same prediction) and about 1: the mean over the answer's leaves."""
    total, count = _distance(a, b, ignore)
    return total / count if count else 0.0


def _distance(a: Any, b: Any, ignore: tuple[str, ...]) -> tuple[float, int]:
    if isinstance(a, dict) and isinstance(b, dict):
        total, count = 0.0, 0
        for key in (set(a) | set(b)) - set(ignore):
            if key in a and key in b:
                part, n = _distance(a[key], b[key], ignore)
            else:
                part, n = 1.0, 1
            total, count = total + part, count + n
        return total, count
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        total, count = 0.0, 0
        for x, y in zip(a, b):
            part, n = _distance(x, y, ignore)
            total, count = total + part, count + n
        return total, count
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        scale = max(1.0, abs(a), abs(b))  # probabilities as they are; large numbers relative
        return abs(a - b) / scale, 1
    return (0.0 if a == b else 1.0), 1


async def feature_impact(
    predictor: Predictor,
    rows: list[Row],
    features: list[str],
    *,
    seed: int = 0,
    repeats: int = REPEATS,
    progress: Callable[[float, str], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Permutation importance of ``features`` over ``rows`` (see the module documentation)."""
    rng = random.Random(seed)
    baseline = await predictor.batch(rows)
    impacts: dict[str, float] = {}
    steps, done = len(features) * repeats, 0
    for feature in features:
        total = 0.0
        for _ in range(repeats):
            shuffled = [row[feature] for row in rows]
            rng.shuffle(shuffled)
            predictions = await predictor.batch([{**row, feature: value} for row, value in zip(rows, shuffled)])
            total += sum(distance(a, b) for a, b in zip(baseline, predictions)) / len(rows)
            done += 1
            if progress is not None:
                progress(done / steps, f"{feature}: repeat {done - features.index(feature) * repeats}/{repeats}")
        impacts[feature] = total / repeats
        if log is not None:
            log(f"{feature}: impact {impacts[feature]:.6f}")
    largest = max(impacts.values(), default=0.0) or 1.0
    ranked = sorted(impacts.items(), key=lambda item: (-item[1], item[0]))
    return {
        "count": len(ranked),
        "featureImpacts": [
            {
                "featureName": name,
                "impactNormalized": value / largest,
                "impactUnnormalized": value,
                "redundantWith": None,
            }
            for name, value in ranked
        ],
        "rowCount": len(rows),
        "ranRedundancyDetection": False,
    }


def impact_plot(result: dict[str, Any], title: str) -> bytes:
    """A horizontal bar chart of the normalized impacts, largest on top, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    impacts = result["featureImpacts"][:30]
    figure = Figure(figsize=(7, 0.45 * len(impacts) + 1.4), dpi=110)
    axes = figure.add_subplot()
    names = [item["featureName"] for item in impacts][::-1]
    values = [item["impactNormalized"] for item in impacts][::-1]
    bars = axes.barh(names, values, color="#3b7dd8")
    for bar, value in zip(bars, values):
        axes.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, f"{value:.2f}", va="center", fontsize=9)
    axes.set_xlim(0, 1.15)
    axes.set_xlabel("impact (normalized: the largest is 1)")
    axes.set_title(title)
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
