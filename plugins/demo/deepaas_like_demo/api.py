"""The demo model: a toy "calibrated statistics" model with every kind of argument.

predict(values, scale, bins, palette, normalize, image, accept)
    summarises a list of numbers (after the learned offset and ``scale``); answers JSON,
    or a PNG histogram when ``accept`` is ``image/png``; an uploaded ``image`` is
    described (size, sha256, PNG dimensions).
train(target_mean, epochs, epoch_seconds)
    "learns" an offset that moves the mean of future predictions toward
    ``target_mean``, saves it in ``storage_dir()``; ``warm()`` loads it, so after a
    training every worker predicts with the new offset.
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


def _mix(palette: tuple, t: float) -> tuple[int, int, int]:
    low, mid, high = palette
    a, b, t = (low, mid, t * 2) if t < 0.5 else (mid, high, (t - 0.5) * 2)
    return tuple(int(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


def histogram(values: list[float], bins: int) -> list[int]:
    low, high = min(values), max(values)
    width = (high - low) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(int((v - low) / width), bins - 1)] += 1
    return counts


def histogram_png(counts: list[int], palette: str, width: int = 320, height: int = 200) -> bytes:
    top = max(counts) or 1
    colours = PALETTES[palette]
    rows = []
    bar_width = width / len(counts)
    for y in range(height):
        row = bytearray()
        level = (height - y) / height
        for x in range(width):
            i = min(int(x / bar_width), len(counts) - 1)
            filled = counts[i] / top >= level and (x % int(bar_width or 1)) > 0
            row += bytes(_mix(colours, i / max(len(counts) - 1, 1))) if filled else b"\xff\xff\xff"
        rows.append(bytes(row))
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
        self.offset = float(state.get("offset", 0.0))
        self.trained_at = state.get("trained_at")

    def get_predict_args(self) -> dict[str, Any]:
        return {
            "values": fields.List(
                fields.Float(),
                load_default=[1.0, 2.0, 3.0, 5.0, 8.0],
                validate=validate.Length(min=1, max=10000),
                metadata={"description": "The numbers to summarise (repeat the field for several)"},
            ),
            "scale": fields.Float(
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
            "mean": sum(adjusted) / len(adjusted),
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
            "target_mean": fields.Float(
                load_default=0.0, metadata={"description": "Mean that predictions should move toward"}
            ),
            "epochs": fields.Int(
                load_default=10,
                validate=validate.Range(min=1, max=1000),
                metadata={"description": "Training steps"},
            ),
            "epoch_seconds": fields.Float(
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
        return {"offset": offset, "epochs": epochs, "loss": abs(target_mean - reference - offset),
                "converged": math.isclose(offset, target_mean - reference, abs_tol=1e-3)}
