"""Images and image tensors: the imagebench plugin (a JPEG by multipart) and the same small CNN
uploaded as TorchScript and as ONNX, called with the inference protocol's tensors (binary
data after the JSON header, as tritonclient sends them, and JSON data), all answering the
class that the network gives in this process."""

from __future__ import annotations

import json
import warnings

import aiohttp
import numpy as np
import pytest

from support import TESTS
from support.registry import form

IMAGEBENCH = TESTS.parent / "benchmarks" / "plugins" / "imagebench"
SIDE = 32  # the network pools to one value per channel: any image size runs; small ones run fast


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """imagebench's network, as TorchScript and ONNX files, with a batch of inputs and its classes."""
    import sys

    sys.path.insert(0, str(IMAGEBENCH))
    try:
        import torch
        from imagebench.net import build
    finally:
        sys.path.remove(str(IMAGEBENCH))
    folder = tmp_path_factory.mktemp("cnn")
    net = build()
    x = np.random.default_rng(0).normal(size=(3, 3, SIDE, SIDE)).astype(np.float32)
    with warnings.catch_warnings():
        # PyTorch 2.13 deprecates TorchScript and its ONNX exporter; the files people have are still made so.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.jit.trace(net, torch.from_numpy(x[:1])).save(str(folder / "cnn.pt"))
        torch.onnx.export(
            net,
            (torch.from_numpy(x[:1]),),
            str(folder / "cnn.onnx"),
            input_names=["image"],
            output_names=["probabilities"],
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "probabilities": {0: "batch"}},
            dynamo=False,
        )
        expected = net(torch.from_numpy(x)).numpy()
    return {"dir": folder, "x": x, "classes": expected.argmax(axis=1).tolist(), "net": net}


def torch_no_grad():
    import torch

    return torch.no_grad()


def torch_tensor(array: np.ndarray):
    import torch

    return torch.from_numpy(array)


def binary_request(array: np.ndarray, datatype: str = "FP32", name: str = "image") -> tuple[bytes, dict[str, str]]:
    """An infer request with ``array`` as binary data after its JSON header (tritonclient's format)."""
    data = np.ascontiguousarray(array).tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(data)},
                }
            ]
        }
    ).encode()
    headers = {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}
    return head + data, headers


def classes_of(answer: dict) -> list[int]:
    (output,) = answer["outputs"]
    assert output["datatype"] == "FP64" and output["shape"][1] == 10, output
    return np.asarray(output["data"]).reshape(output["shape"]).argmax(axis=1).tolist()


async def test_uploaded_cnn_takes_binary_and_json_image_tensors(serve, network):
    client = await serve("echobench", executor="thread")
    torchscript = await client.put("/v2/models/cnn-ts", data=form(network["dir"] / "cnn.pt", filetype="torchscript"))
    assert torchscript.status == 201, await torchscript.text()
    onnx = await client.put("/v2/models/cnn-onnx", data=form(network["dir"] / "cnn.onnx"))
    assert onnx.status == 201, await onnx.text()
    x = network["x"]
    for name in ("cnn-ts", "cnn-onnx"):
        body, headers = binary_request(x)
        response = await client.post(f"/v2/models/{name}/infer", data=body, headers=headers)
        answer = await response.json()
        assert response.status == 200, answer
        assert classes_of(answer) == network["classes"], name
        assert answer["model_version"] == "1"
        # larger images: a body read into one buffer, each image beside the pickle to the worker
        large = np.random.default_rng(4).normal(size=(2, 3, 96, 96)).astype(np.float32)
        body, headers = binary_request(large)
        response = await client.post(f"/v2/models/{name}/infer", data=body, headers=headers)
        answer = await response.json()
        assert response.status == 200, answer
        with torch_no_grad():
            assert classes_of(answer) == network["net"](torch_tensor(large)).numpy().argmax(axis=1).tolist()
        # one image, as JSON data (nested, as a person writes it)
        request = {
            "inputs": [{"name": "image", "shape": [1, 3, SIDE, SIDE], "datatype": "FP32", "data": x[1].tolist()}]
        }
        response = await client.post(f"/v2/models/{name}/infer", json=request)
        answer = await response.json()
        assert response.status == 200, answer
        assert classes_of(answer) == network["classes"][1:2], name
        # an image of four channels: the model says it cannot take it (a 422, which the protocol answers 400)
        body, headers = binary_request(np.zeros((1, 4, SIDE, SIDE), np.float32))
        response = await client.post(f"/v2/models/{name}/infer", data=body, headers=headers)
        answer = await response.json()
        assert response.status == 400 and "[1, 4, 32, 32]" in answer["error"], (name, answer)
        assert "channels" in answer["error"] or "takes shape [N, 3, ?, ?]" in answer["error"], (name, answer)
    # the protocol's own refusals: 400 with the reason
    body, headers = binary_request(x[:1])
    cases = [
        (body[:-4], headers, "more than the body holds"),  # the body is shorter than it says
        (*binary_request(x[:1].astype(np.float64), datatype="FP32"), "bytes for 3072 FP32 values"),  # 8-byte values
        (
            json.dumps(
                {
                    "inputs": [
                        {"name": "image", "shape": [1, 1, 2, 2], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}
                    ]
                }
            ).encode(),
            {"Content-Type": "application/json"},
            "numeric",
        ),
        (
            json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 2, 2], "datatype": "FP32", "data": [0.5] * 11}]}),
            {"Content-Type": "application/json"},
            "holds 12 values",
        ),
    ]
    for data, sent_headers, text in cases:
        response = await client.post("/v2/models/cnn-onnx/infer", data=data, headers=sent_headers)
        answer = await response.json()
        assert response.status == 400 and text in answer["error"], (text, answer)


async def test_imagebench_classifies_a_jpeg_sent_by_multipart(serve, plugins, network, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.syspath_prepend(str(IMAGEBENCH))
    plugins.install(
        "imagebench", source="from imagebench.api import get_metadata, get_predict_args, predict, predict_batch, warm\n"
    )
    from imagebench.net import preprocess

    pixels = np.random.default_rng(1).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    path = tmp_path / "noise.jpg"
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    import torch

    with Image.open(path) as image, torch.no_grad():
        expected = network["net"](torch.from_numpy(preprocess(image)[None])).numpy()[0]
    client = await serve("imagebench", workers=1, per_model={"imagebench": {"max_batch_size": 4}})
    for _ in range(2):  # alone, then (batching on) through predict_batch again
        data = aiohttp.FormData()
        data.add_field("image", path.read_bytes(), filename="noise.jpg", content_type="image/jpeg")
        response = await client.post("/v2/models/imagebench/predict/", data=data)
        body = await response.json()
        assert response.status == 200, body
        assert body["predictions"]["label"] == int(expected.argmax())
        assert np.allclose(body["predictions"]["probabilities"], expected, atol=1e-5)
    data = aiohttp.FormData()
    data.add_field("image", b"not an image", filename="x.jpg", content_type="image/jpeg")
    response = await client.post("/v2/models/imagebench/predict/", data=data)
    body = await response.json()
    assert response.status == 422 and "not an image" in body["message"], body
    spec = await (await client.get("/swagger.json")).json()
    form_schema = spec["paths"]["/v2/models/imagebench/predict/"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in form_schema


def test_a_binary_tensor_is_a_view_of_the_body_and_travels_beside_the_pickle():
    """The bytes of a binary tensor are not copied by the protocol's parsing, nor by pickling
    them for a worker: the worker reads them straight into the array it unpickles."""
    import socket
    import threading

    from deepaas_like.engine.worker import OUT_OF_BAND, frames, receive
    from deepaas_like.oip import parse_request, rows_from_tensors

    images = np.random.default_rng(3).normal(size=(2, 3, 96, 96)).astype(np.float32)
    sent, headers = binary_request(images)
    body = bytearray(sent)
    _, (tensor,) = parse_request(body, headers["Inference-Header-Content-Length"])
    assert tensor.data.shape == images.shape and np.shares_memory(tensor.data, np.frombuffer(body, np.uint8))
    rows, _ = rows_from_tensors([tensor], [], 0, {})
    message = ("group", 7, "predict", [{"rows": [row]} for row in rows], None)
    pieces = frames(message)
    assert len(pieces) == 3 and all(len(p) == images[0].nbytes >= OUT_OF_BAND for p in pieces[1:])
    assert np.shares_memory(np.frombuffer(pieces[1], np.uint8), np.frombuffer(body, np.uint8))
    small = ("group", 8, "predict", [{"rows": [[1.0, 2.0]]}], None)
    ours, theirs = socket.socketpair()

    def send() -> None:  # beside the reader: the images are more than the socket holds
        for piece in [*pieces, *frames(small), *frames(("stop", 0, None, None, None))]:
            ours.sendall(piece)
        ours.shutdown(socket.SHUT_WR)

    with ours, theirs:
        sender = threading.Thread(target=send)
        sender.start()
        kind, call_id, method, payloads, target = receive(theirs.fileno())
        assert (kind, call_id, method, target) == ("group", 7, "predict", None)
        for index, payload in enumerate(payloads):
            (row,) = payload["rows"]
            assert row.dtype == np.float32 and row.flags.writeable and np.array_equal(row, images[index])
        assert receive(theirs.fileno()) == small
        assert receive(theirs.fileno())[0] == "stop"
        with pytest.raises(EOFError):
            receive(theirs.fileno())
        sender.join()


def test_a_contained_worker_keeps_the_operators_thread_counts(monkeypatch):
    """OMP_NUM_THREADS set for the server reaches contained workers (the registry's), and
    nothing else of the server's environment does."""
    from deepaas_like.engine.interpreter import CLEAN_ENVIRONMENT
    from deepaas_like.engine.worker import library_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert "OMP_NUM_THREADS" in CLEAN_ENVIRONMENT and "DEEPAAS_STORE" not in CLEAN_ENVIRONMENT
    assert "OMP_NUM_THREADS" not in dict(library_threads(2))  # the operator's choice, not the share
