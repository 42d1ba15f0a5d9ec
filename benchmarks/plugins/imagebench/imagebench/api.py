"""imagebench: a JPEG (a ``File`` argument, multipart) in, the class of a small CNN out.

DEEPaaS v2 style: ``get_predict_args`` declares ``image`` as a file; ``predict(image)``
decodes it with Pillow, resizes and normalises it (:func:`imagebench.net.preprocess`) and
runs :mod:`imagebench.net`'s network; ``predict_batch(rows)`` stacks the images of many
requests into one forward pass (the server's batching, ``--max-batch-size``)::

    curl -F image=@cat.jpg http://127.0.0.1:5000/v2/models/imagebench/predict/
    {"label": 3, "probabilities": [...]}

Torch's threads: as many as ``OMP_NUM_THREADS`` says (the server gives each worker its
share of the CPUs), one when it is not set, never torch's default of every core in each
of several workers.
"""

from __future__ import annotations

import os
from typing import Any

from webargs import fields

_state: dict[str, Any] = {}


class NotAnImage(ValueError):
    """The file sent is not an image Pillow can read: a 422."""

    status = 422


def get_metadata() -> dict[str, Any]:
    return {
        "id": "imagebench",
        "name": "imagebench",
        "description": "A small PyTorch CNN (random weights) classifying a 224x224 image into 10 classes",
        "license": "Apache-2.0",
        "version": "0.1.0",
    }


def get_predict_args() -> dict[str, Any]:
    return {
        "image": fields.Field(
            required=True, type="file", location="form", description="The image (JPEG or PNG), any size"
        ),
    }


def warm() -> None:
    _network()


def _network() -> Any:
    net = _state.get("net")
    if net is None:
        import torch

        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS") or 1)))
        from .net import build

        net = _state["net"] = build()
    return net


def _pixels(image: Any) -> Any:
    from PIL import Image

    from .net import preprocess

    with Image.open(image.filename) as opened:
        return preprocess(opened)


def predict(image: Any) -> dict[str, Any]:
    return predict_batch([{"image": image}])[0]


def predict_batch(rows: list[dict[str, Any]]) -> list[Any]:
    """One forward pass for every row's image; a row whose file is not an image fails alone."""
    import numpy as np
    import torch

    from .net import answers

    net = _network()
    results: list[Any] = [None] * len(rows)
    pixels, kept = [], []
    for index, row in enumerate(rows):
        try:
            pixels.append(_pixels(row["image"]))
            kept.append(index)
        except (OSError, ValueError) as exc:  # Pillow's UnidentifiedImageError is an OSError
            results[index] = NotAnImage(f"not an image: {exc}")
    if pixels:
        with torch.no_grad():
            probabilities = net(torch.from_numpy(np.stack(pixels))).numpy()
        for index, answer in zip(kept, answers(probabilities)):
            results[index] = answer
    return results
