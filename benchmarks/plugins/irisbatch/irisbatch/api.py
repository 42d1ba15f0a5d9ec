"""irisbench's model and arguments, plus ``predict_batch(rows)`` for adaptive batching.

How a plugin opts in to batching: besides ``predict(**kwargs)`` it defines
``predict_batch(rows)``, taking the list of kwargs dicts that ``predict`` would get
and returning one result per row. Here that is a single ``predict_proba`` on a matrix
instead of one call per row, which is where batching pays off.
"""

import os

import numpy as np
from irisbench import api as iris

NAMES = ["setosa", "versicolor", "virginica"]

warm = iris.warm
get_predict_args = iris.get_predict_args
predict = iris.predict
get_train_args = iris.get_train_args
train = iris.train


def get_metadata():
    return {
        **iris.get_metadata(),
        "id": "irisbatch",
        "name": "irisbatch",
        "description": "irisbench's RandomForest, predicting many rows per call (batching benchmark)",
    }


def predict_batch(rows):
    model = iris._ensure_model()
    features = np.array([[float(row[f]) for f in iris.FEATURES] for row in rows])
    results = []
    for row, proba in zip(rows, model.predict_proba(features)):
        order = np.argsort(proba)[::-1]
        k = int(row.get("top_k") or 3)
        best = int(order[0])
        results.append(
            {
                "label": NAMES[best],
                "label_id": best,
                "probabilities": {NAMES[i]: float(proba[i]) for i in range(len(NAMES))},
                "top_k": [{"label": NAMES[int(i)], "probability": float(proba[int(i)])} for i in order[:k]],
                "pid": os.getpid(),
            }
        )
    return results
