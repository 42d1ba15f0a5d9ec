"""Iris rows and model files for the registry's tests, and the upload form."""

from __future__ import annotations

import aiohttp
import numpy as np
import pandas as pd
from sklearn.datasets import load_iris

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def iris_frame():
    data = load_iris()
    return pd.DataFrame(data.data, columns=COLUMNS), np.array(data.target_names)[data.target]


def form(path, **fields) -> aiohttp.FormData:
    data = aiohttp.FormData()
    data.add_field("file", path.read_bytes(), filename=path.name, content_type="application/octet-stream")
    for key, value in fields.items():
        data.add_field(key, str(value))
    return data
