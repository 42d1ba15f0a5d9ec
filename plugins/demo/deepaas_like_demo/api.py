"""The demo model: a toy "calibrated statistics" model with every kind of argument.

predict(values, scale, bins, palette, normalize, image, accept)
    summarises a list of numbers (after the learned offset and ``scale``); answers JSON,
    or a PNG histogram when ``accept`` is ``image/png``; an uploaded ``image`` is
    described (size, sha256, PNG dimensions).
train(target_mean, epochs, epoch_seconds)
    "learns" an offset that moves the mean of future predictions toward
    ``target_mean``, saves it in ``storage_dir()``; ``warm()`` loads it, so after a
    training every worker predicts with the new offset.

Every number it accepts is declared with its limits, so that a value it cannot summarise is
refused with a 422 naming the argument instead of failing inside ``predict``: NaN and
infinities are refused (``allow_nan=False``, which also refuses ``1e309`` or ``-1.8e308``,
read as infinities), and ``values`` and ``target_mean`` stay within ``±LIMIT``. Within those
limits the arithmetic cannot overflow: ``(value + offset) * scale`` is at most 2e301 and a
sum of 10 000 of them 2e305, far below the largest float (1.8e308).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from typing import Any

from webargs import fields, validate

from deepaas_like import BaseModel, File, report_progress, storage_dir

from . import png

PALETTES = {
    "viridis": ((68, 1, 84), (33, 145, 140), (253, 231, 37)),
    "sunset": ((45, 0, 75), (230, 80, 60), (255, 200, 90)),
    "mono": ((30, 30, 30), (120, 120, 120), (220, 220, 220)),
}
STATE_FILE = "demo_state.json"
LIMIT = 1e300  # largest magnitude of `values` and `target_mean` (see the module docstring)


def _mix(palette: tuple, t: float) -> tuple[int, int, int]:
    low, mid, high = palette
    a, b, t = (low, mid, t * 2) if t < 0.5 else (mid, high, (t - 0.5) * 2)
    return tuple(int(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


def finite_number(description: str, **kwargs: Any) -> fields.Float:
    """A float argument that refuses NaN, infinities and magnitudes over ``LIMIT``."""
    return fields.Float(
        allow_nan=False,
        validate=validate.Range(min=-LIMIT, max=LIMIT),
        metadata={"description": f"{description} (a finite number within ±{LIMIT:g})"},
        **kwargs,
    )


def mean(values: list[float]) -> float:
    """The mean; ``fsum`` keeps the 1 of ``[1e300, 1.0, -1e300]`` that ``sum`` loses.

    >>> mean([1e300, 1.0, -1e300])
    0.3333333333333333
    """
    return math.fsum(values) / len(values)


def histogram(values: list[float], bins: int) -> list[int]:
    """Counts in ``bins`` equal-width bins from min to max, for any finite values.

    >>> histogram([1.0, 2.0, 10.0], 3)
    [2, 0, 1]
    >>> histogram([-1e308, 1e308], 2)   # the span, 2e308, would overflow to inf
    [1, 1]
    >>> histogram([0.0, 5e-324, 1e-323], 2)   # denormals: the width would round to 0
    [1, 2]
    """
    low, high = min(values), max(values)
    # Halve everything when the span overflows; the position within it is unchanged.
    half = 0.5 if math.isinf(high - low) else 1.0
    span = high * half - low * half
    counts = [0] * bins
    for v in values:
        position = (v * half - low * half) / span if span else 0.0  # 0 to 1
        counts[min(int(position * bins), bins - 1)] += 1
    return counts


def histogram_png(counts: list[int], palette: str, width: int = 320, height: int = 200) -> bytes:
    """A bar chart of ``counts``, one colour of ``palette`` per bar, as PNG bytes."""
    top = max(counts) or 1
    bars = len(counts)
    bar_width = width / bars
    bar_of = [min(int(x / bar_width), bars - 1) for x in range(width)]  # the bar each column draws
    gap = int(bar_width or 1)  # every gap-th column stays white, between bars
    colours = [bytes(_mix(PALETTES[palette], i / max(bars - 1, 1))) for i in range(bars)]
    white = b"\xff\xff\xff"
    rows, drawn = [], {}  # a row depends only on which bars reach it: draw each kind once
    for y in range(height):
        level = (height - y) / height
        reached = tuple(count / top >= level for count in counts)
        if reached not in drawn:
            drawn[reached] = b"".join(colours[i] if reached[i] and x % gap else white for x, i in enumerate(bar_of))
        rows.append(drawn[reached])
    return png.encode_rgb(width, height, rows)


class DemoModel(BaseModel):
    """Class plugin: each worker gets its own instance, warmed once."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.trained_at: str | None = None

    def get_metadata(self) -> dict[str, Any]:
        return {
            "name": "demo",
            "description": "Demo model: summarises numbers, draws a PNG histogram, describes an "
            "uploaded file, and learns an offset when trained.",
            "author": "deepaas_like",
            "license": "Apache-2.0",
            "version": "0.1.0",
        }

    def warm(self) -> None:
        try:
            state = json.loads((storage_dir() / STATE_FILE).read_text())
        except (FileNotFoundError, LookupError, ValueError):
            return
        offset = float(state.get("offset", 0.0))
        if math.isfinite(offset):  # a hand-edited file cannot make predict overflow
            self.offset = max(-LIMIT, min(LIMIT, offset))
        self.trained_at = state.get("trained_at")

    def get_predict_args(self) -> dict[str, Any]:
        return {
            "values": fields.List(
                finite_number("A number to summarise"),
                load_default=[1.0, 2.0, 3.0, 5.0, 8.0],
                validate=validate.Length(min=1, max=10000),
                metadata={
                    "description": "The numbers to summarise (repeat the field for several; "
                    f"1 to 10000 finite numbers within ±{LIMIT:g})"
                },
            ),
            "scale": fields.Float(
                allow_nan=False,
                load_default=1.0,
                validate=validate.Range(min=0.1, max=10.0),
                metadata={"description": "Multiply every value by this (0.1 to 10)"},
            ),
            "bins": fields.Int(
                load_default=8,
                validate=validate.Range(min=1, max=32),
                metadata={"description": "Number of histogram bins (1 to 32)"},
            ),
            "palette": fields.Str(
                load_default="viridis",
                validate=validate.OneOf(sorted(PALETTES)),
                metadata={"description": "Colours of the PNG histogram"},
            ),
            "normalize": fields.Bool(
                load_default=False,
                metadata={"description": "Report the histogram as fractions instead of counts"},
            ),
            "image": File(
                required=False,
                metadata={"description": "Optional file to describe (size, sha256, PNG dimensions)"},
            ),
            "accept": fields.Str(
                load_default="application/json",
                validate=validate.OneOf(["application/json", "image/png"]),
                metadata={"description": "Answer as JSON or as a PNG histogram"},
            ),
        }

    def predict(self, values, scale, bins, palette, normalize, accept, image=None) -> Any:
        adjusted = [(v + self.offset) * scale for v in values]
        counts = histogram(adjusted, bins)
        if accept == "image/png":
            return histogram_png(counts, palette)
        answer: dict[str, Any] = {
            "count": len(adjusted),
            "mean": mean(adjusted),
            "min": min(adjusted),
            "max": max(adjusted),
            "histogram": [c / len(adjusted) for c in counts] if normalize else counts,
            "model": {"offset": self.offset, "trained_at": self.trained_at, "pid": os.getpid()},
        }
        if image is not None:
            with open(image.filename, "rb") as fh:
                data = fh.read()
            size = png.dimensions(data)
            answer["image"] = {
                "original_filename": image.original_filename,
                "content_type": image.content_type,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "png_size": list(size) if size else None,
            }
        return answer

    def get_train_args(self) -> dict[str, Any]:
        return {
            "target_mean": finite_number("Mean that predictions should move toward", load_default=0.0),
            "epochs": fields.Int(
                load_default=10,
                validate=validate.Range(min=1, max=1000),
                metadata={"description": "Training steps"},
            ),
            "epoch_seconds": fields.Float(
                allow_nan=False,
                load_default=0.1,
                validate=validate.Range(min=0.0, max=10.0),
                metadata={"description": "How long each step takes (to watch or cancel a training)"},
            ),
        }

    def train(self, target_mean, epochs, epoch_seconds) -> dict[str, Any]:
        reference = 3.8  # mean of the default values
        offset = self.offset
        for step in range(epochs):
            offset += (target_mean - reference - offset) * 0.5
            time.sleep(epoch_seconds)
            print(f"epoch {step + 1}/{epochs}: offset={offset:.4f}", flush=True)
            report_progress((step + 1) / epochs, f"epoch {step + 1}/{epochs}")
        state = {"offset": offset, "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (storage_dir() / STATE_FILE).write_text(json.dumps(state))
        return {
            "offset": offset,
            "epochs": epochs,
            "loss": abs(target_mean - reference - offset),
            "converged": math.isclose(offset, target_mean - reference, abs_tol=1e-3),
        }
