"""The network of imagebench, built in code with fixed random weights (seed 0).

Three convolutions with pooling, then a linear layer to 10 classes; input
``[N, 3, 224, 224]`` float32 (an RGB image scaled to 0..1 and normalised with ImageNet's
mean and deviation), output ``[N, 10]`` class probabilities. About 12 M multiply-adds
per image: a few ms on one core, so that the serving around it shows.

The same network is what the benchmark exports as TorchScript and ONNX and uploads::

    >>> net = build()
    >>> net(torch.zeros(1, 3, SIZE, SIZE)).shape
    torch.Size([1, 10])
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

SIZE = 224
CLASSES = 10
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)


class SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(64, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(torch.flatten(self.features(x), 1)), dim=1)


def build() -> SmallCNN:
    """The network, its weights drawn with seed 0 (the same in every process), in eval mode."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        net = SmallCNN().eval()
    finally:
        torch.random.set_rng_state(generator_state)
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net


def preprocess(image: Any) -> np.ndarray:
    """A Pillow image as the network's input ``[3, 224, 224]`` float32: RGB, resized, normalised."""
    from PIL import Image

    image = image.convert("RGB")
    if image.size != (SIZE, SIZE):
        image = image.resize((SIZE, SIZE), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return np.ascontiguousarray((pixels - MEAN) / STD, dtype=np.float32)


def answers(probabilities: np.ndarray) -> list[dict[str, Any]]:
    """One ``{"label", "probabilities"}`` per row of ``[N, 10]`` probabilities."""
    return [{"label": int(np.argmax(row)), "probabilities": [round(float(p), 6) for p in row]} for row in probabilities]
