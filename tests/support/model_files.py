"""Real model files of every kind, built with the real libraries, for the tests that need them.

Each builder imports its library when called, so importing this module costs nothing.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np


def build_keras_files(where: Path) -> dict[str, Any]:
    """A softmax and a sigmoid classifier (.keras, .h5) and unsafe Lambda models, with answers."""
    import keras

    keras.utils.set_random_seed(0)
    softmax = keras.Sequential(
        [keras.Input(shape=(4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3, activation="softmax")]
    )
    sigmoid = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(1, activation="sigmoid")])
    unsafe = keras.Sequential(
        [keras.Input(shape=(4,)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Dense(2, activation="softmax")]
    )
    files = {
        "softmax.keras": softmax,
        "sigmoid.keras": sigmoid,
        "lambda.keras": unsafe,
        "softmax.h5": softmax,
        "lambda.h5": unsafe,
    }
    for name, model in files.items():
        with warnings.catch_warnings():
            # Keras warns that .h5 is a legacy format: saving one is the point here.
            warnings.filterwarnings("ignore", "You are saving your model as an HDF5 file", UserWarning)
            # TensorFlow 2.21's variables predate numpy 2's copy keyword; saving converts them.
            warnings.filterwarnings(
                "ignore", "__array__ implementation doesn't accept a copy keyword", DeprecationWarning
            )
            model.save(where / name)
    x = np.random.default_rng(2).normal(size=(7, 4)).astype(np.float32)
    return {
        "dir": where,
        "x": x,
        "version": keras.__version__,
        "softmax": np.asarray(softmax.predict_on_batch(x)),
        "sigmoid": np.asarray(sigmoid.predict_on_batch(x)),
    }


class TinyNet:
    """Built lazily: torch is imported by the fixture, not by this module."""

    @staticmethod
    def make() -> Any:
        import torch

        class Net(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.linear = torch.nn.Linear(4, 3)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.softmax(self.linear(x), dim=-1)

        torch.manual_seed(0)
        return Net().eval()


def build_torch_files(where: Path) -> dict[str, Any]:
    """A tiny softmax net: TorchScript (scripted, traced), torch.export (dynamic and static
    batch), a bare state dict; with its answers."""
    import torch

    net = TinyNet.make()
    x = torch.randn(5, 4)
    with warnings.catch_warnings():
        # PyTorch 2.13 deprecates TorchScript; serving the files people have is the point.
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        torch.jit.script(net).save(str(where / "scripted.pt"))
        torch.jit.trace(net, x).save(str(where / "traced.torchscript"))
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes={"x": {0: batch}}), str(where / "dynamic.pt2"))
    torch.export.save(torch.export.export(net, (x[:2],)), str(where / "static.pt2"))  # batch size 2 only
    torch.save(net.state_dict(), str(where / "weights.pt"))
    with torch.no_grad():
        expected = net(x).numpy()
    return {"dir": where, "x": x.numpy(), "expected": expected, "version": torch.__version__}
