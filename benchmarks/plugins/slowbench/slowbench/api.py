"""A DEEPaaS v2 module plugin whose predict sleeps: a model far slower than its clients.

Same arguments as echobench and irisbench (4 floats and ``top_k``), so the benchmark's
query string works unchanged; ``predict`` sleeps ``SLEEP_S`` (50 ms) and echoes them.
One worker serves about 20 predictions a second, which is what lets a flood of clients
overrun it: the benchmark measures how the server sheds the excess (503 with
``Retry-After``) while it keeps answering health checks.
"""

import time

from webargs import fields

SLEEP_S = 0.05


def get_metadata():
    return {
        "id": "slowbench",
        "name": "slowbench",
        "description": "Sleeps 50 ms per prediction, then echoes its input (overload benchmark)",
        "author": "bench",
        "license": "MIT",
        "version": "0.1.0",
    }


def warm():
    return None


def get_predict_args():
    return {
        "sepal_length": fields.Float(required=True),
        "sepal_width": fields.Float(required=True),
        "petal_length": fields.Float(required=True),
        "petal_width": fields.Float(required=True),
        "top_k": fields.Int(required=False, load_default=3),
    }


def predict(**kwargs):
    time.sleep(SLEEP_S)
    return dict(kwargs)
