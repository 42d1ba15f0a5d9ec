#!/usr/bin/env python3
"""The ceiling of the image cases: a bare aiohttp server that runs the model in its own process.

The image phase (``image_bench.py``) compares our server with the model called in-process. This
server is what any server built on aiohttp can do at best with the same requests: no worker
process, no validation, no queue, the model in the event loop's thread (one thread, as the
in-process calls), the request parsed the shortest way:

* ``POST /v2/models/{cnn-torchscript,cnn-onnx,copy-probe}/infer``: the OIP binary tensor (the JSON header's
  length in ``Inference-Header-Content-Length``, the FP32 bytes after it) read with
  ``numpy.frombuffer``, the module or session run, its outputs answered as JSON;
* ``POST /v2/models/imagebench/predict/``: the multipart ``image`` part written to a temporary
  file, imagebench's ``predict`` called on it (decode, preprocess, forward), as our worker does.

    python benchmarks/image_bare.py --torchscript cnn.pt --onnx cnn.onnx --port 5099 [--max-seconds 900]

It binds 127.0.0.1 only and stops by itself after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import warnings
from typing import Any

from aiohttp import web
from bare_aiohttp import serve

HEADER = "Inference-Header-Content-Length"


def load(torchscript: str, onnx: str, probe: str | None = None) -> dict[str, Any]:
    """Each model as a function of an FP32 array to a list of rows (``probe``: the copy case's
    TorchScript module, served as ``copy-probe``)."""
    import onnxruntime
    import torch

    torch.set_num_threads(1)

    def scripted(path: str) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(path, map_location="cpu").eval()

        def run(x: Any) -> list:
            with torch.no_grad():
                return module(torch.from_numpy(x)).numpy().tolist()

        return run

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
    models = {
        "cnn-torchscript": scripted(torchscript),
        "cnn-onnx": lambda x: session.run(None, {"image": x})[0].tolist(),
    }
    if probe is not None:
        models["copy-probe"] = scripted(probe)
    return models


def app_of(models: dict[str, Any]) -> web.Application:
    import numpy as np

    async def infer(request: web.Request) -> web.Response:
        run = models.get(request.match_info["name"])
        if run is None:
            raise web.HTTPNotFound()
        body = await request.read()
        size = int(request.headers[HEADER])
        (tensor,) = json.loads(body[:size])["inputs"]
        x = np.frombuffer(body, np.float32, offset=size).reshape(tensor["shape"])
        rows = run(x)
        outputs = [{"name": "output", "datatype": "FP64", "shape": [len(rows), len(rows[0])], "data": rows}]
        return web.json_response({"model_name": request.match_info["name"], "outputs": outputs})

    async def predict(request: web.Request) -> web.Response:
        from imagebench import api

        from deepaas_like.files import UploadedFile

        reader = await request.multipart()
        part = await reader.next()
        if part is None or part.name != "image":
            raise web.HTTPBadRequest(text="send the image as the 'image' part")
        data = await part.read()  # type: ignore[union-attr]
        fd, path = tempfile.mkstemp(suffix=".jpg")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            answer = api.predict(UploadedFile(name="image", filename=path, content_type="image/jpeg"))
        finally:
            os.unlink(path)
        return web.json_response({"status": "OK", "predictions": answer})

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v2/models/{name}/infer", infer)
    app.router.add_post("/v2/models/imagebench/predict/", predict)
    app.router.add_get("/v2/health/ready", ready)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torchscript", required=True)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--probe", help="the copy case's TorchScript module, served as copy-probe")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    serve(app_of(load(args.torchscript, args.onnx, args.probe)), args.port, args.max_seconds)


if __name__ == "__main__":
    main()
