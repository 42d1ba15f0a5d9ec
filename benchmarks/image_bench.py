"""The image phase of ``make bench``: an image model, served three ways, against its in-process rate.

The model is imagebench's small CNN (``benchmarks/plugins/imagebench``: three convolutions, a
linear layer to 10 classes, random weights drawn with seed 0), as

* the **imagebench plugin**: a 224x224 JPEG sent by multipart (``image``, a ``File`` argument),
  decoded with Pillow, resized and normalised in the worker; ``predict_batch`` stacks the
  images of a batch into one forward pass;
* the same network exported here as **TorchScript** and as **ONNX**, uploaded to the registry,
  called with the Open Inference Protocol's binary tensor extension: one FP32 tensor
  ``[1, 3, 224, 224]`` whose 602,112 bytes follow the JSON header in the body
  (``Inference-Header-Content-Length``, ``binary_data_size``). The request is written here as
  tritonclient's HTTP client writes it (the format is a JSON header and the raw bytes: no
  client library needed).

Each at c=1 and c=8, without batching and with it (``--max-batch-size 8``), by a closed-loop
client of this module's own (loadgen sends JSON only), against the **in-process rate**: the
plugin's ``predict`` (decode + preprocess + forward), the loaded TorchScript module and the
onnxruntime session, called one at a time in this process with the worker's threads (one:
the server runs with ``OMP_NUM_THREADS=1``, each worker one thread, as in-process).

Targets (issue 27): unbatched >= 0.9x the in-process rate; batching >= 1.5x it on this CPU.
With one worker of one thread, batching can only save the per-call overhead (a convolution's
work per image does not shrink in a batch on a CPU): the batched cases are also run with two
workers, each batching, which is what this 2-core machine can give.

The copy case: a 10 MB FP32 tensor ``[1, 10, 512, 512]`` sent to an uploaded model that
returns four of its values (so the model costs nothing): the server process's CPU per request,
and its whole tree's, beside one ``memcpy`` of 10 MB and the model's own work on it in-process.

Standalone: ``python benchmarks/image_bench.py --quick`` (prints the results as JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
IMAGEBENCH = HERE / "plugins" / "imagebench"
for _path in (str(HERE), str(IMAGEBENCH)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import registry_bench as registry  # noqa: E402
from loadgen import build_request, process_tree_cpu, read_response  # noqa: E402
from servers import Server, log, ours_command  # noqa: E402

PLUGIN = "imagebench"
TORCHSCRIPT = "cnn-torchscript"
ONNX = "cnn-onnx"
COPY_MODEL = "copy-probe"
COPY_SHAPE = (1, 10, 512, 512)  # 10,485,760 bytes of FP32
BATCH = 8
BATCH_TIME_MS = 5
THREADS = "1"  # OMP_NUM_THREADS of the server (and so of each worker) and of the in-process calls
TIMEOUT_S = 60
CONFIGS = {  # name: (workers, batching), and what its cases' kinds end with
    "w1": (1, False),
    "w1-batch": (1, True),
    "w2-batch": (2, True),
}
KIND_SUFFIX = {"w1": "", "w1-batch": "-batch", "w2-batch": "-batch-w2"}  # "-bare": see bare_cases
TARGETS = {"unbatched": 0.9, "batched": 1.5}
OCTETS = "application/octet-stream"


# --- the files: a JPEG, the network as TorchScript and ONNX, the copy probe -----------------------


def jpeg(size: int = 224) -> bytes:
    """A 224x224 photo-like JPEG (smooth gradients and some noise; about 10-20 kB at quality 90)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    pixels = np.stack([x, y, (x + y) / 2], axis=-1) * 200 + rng.normal(0, 12, (size, size, 3))
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def model_files(folder: Path) -> dict[str, Path]:
    """The network as TorchScript (traced) and ONNX (dynamic batch), and the copy probe (TorchScript)."""
    import torch
    from imagebench.net import SIZE, build

    net = build()
    x = torch.zeros(1, 3, SIZE, SIZE)

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(x.shape[0], -1)[:, :4]

    files = {TORCHSCRIPT: folder / "cnn.pt", ONNX: folder / "cnn.onnx", COPY_MODEL: folder / "probe.pt"}
    with warnings.catch_warnings():  # PyTorch 2.13 deprecates TorchScript and this ONNX exporter
        warnings.simplefilter("ignore")
        torch.jit.trace(net, x).save(str(files[TORCHSCRIPT]))
        torch.jit.script(Probe()).save(str(files[COPY_MODEL]))
        torch.onnx.export(
            net,
            (x,),
            str(files[ONNX]),
            input_names=["image"],
            output_names=["probabilities"],
            dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}},
            dynamo=False,
        )
    return files


# --- requests ------------------------------------------------------------------------------------------


def multipart(image: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="image.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n".encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def binary_tensor(array: Any, name: str = "image") -> tuple[bytes, list[str]]:
    """An infer request as tritonclient writes one: the JSON header, then the tensor's bytes."""
    data = array.tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": list(array.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
            "outputs": [{"name": "output", "parameters": {"binary_data": False}}],
        }
    ).encode()
    return head + data, [f"Inference-Header-Content-Length: {len(head)}"]


def own_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the process ``pid`` alone."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def closed_loop(
    port: int, path: str, body: bytes, content_type: str, headers: list[str], concurrency: int, requests: int, pid: int
) -> dict[str, Any]:
    """``requests`` requests by ``concurrency`` kept-alive clients, after a few untimed ones."""
    host, _, request = build_request(f"http://127.0.0.1:{port}{path}", "POST", body, content_type, headers)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    issued = 0

    async def client(count: int | None) -> None:
        nonlocal issued
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
        try:
            while (issued < requests) if count is None else count > 0:
                if count is None:
                    issued += 1
                else:
                    count -= 1
                started = time.perf_counter()
                writer.write(request)
                status, _ = await asyncio.wait_for(read_response(reader), TIMEOUT_S)
                if count is None:
                    latencies.append(time.perf_counter() - started)
                    statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(client(2) for _ in range(concurrency)))  # warm: each connection, the batches
    cpu, own = process_tree_cpu(pid), own_cpu(pid)
    started = time.perf_counter()
    await asyncio.gather(*(client(None) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    cpu, own = process_tree_cpu(pid) - cpu, own_cpu(pid) - own
    latencies.sort()
    n = len(latencies)
    return {
        "concurrency": concurrency,
        "completed": n,
        "errors": n - statuses.get(200, 0),
        "status_counts": statuses,
        "rps": round(n / elapsed, 1),
        "lat_ms": {
            "p50": round(statistics.median(latencies) * 1000, 2),
            "p99": round(latencies[min(n - 1, int(n * 0.99))] * 1000, 2),
        },
        "server_cpu_ms_per_req": round(own / n * 1000, 2),
        "tree_cpu_ms_per_req": round(cpu / n * 1000, 2),
    }


# --- in process -----------------------------------------------------------------------------------------


def rate(call: Callable[[], Any], seconds: float) -> float:
    """Calls per second of ``call``, one at a time, after a few untimed ones."""
    for _ in range(3):
        call()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        call()
        count += 1
    return round(count / (time.perf_counter() - started), 1)


def in_process_rates(files: dict[str, Path], image_file: Path, seconds: float, batch: int = 1) -> dict[str, float]:
    """Images per second of the plugin's predict, the TorchScript module and the ONNX session, one
    call at a time, one thread; ``batch`` images per call (imagebench's ``predict_batch``, a
    ``[batch, 3, 224, 224]`` tensor): with :data:`BATCH`, the most that batching can give on this
    CPU, whatever the server."""
    import numpy as np
    import onnxruntime
    import torch
    from imagebench import api
    from imagebench.net import SIZE

    from deepaas_like.files import UploadedFile

    torch.set_num_threads(int(THREADS))
    image = UploadedFile(name="image", filename=str(image_file), content_type="image/jpeg")
    x = np.random.default_rng(0).normal(size=(batch, 3, SIZE, SIZE)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(files[TORCHSCRIPT]))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(THREADS)
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(files[ONNX]), options, providers=["CPUExecutionProvider"])

    def torchscript() -> Any:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy().tolist()

    def plugin() -> Any:
        return api.predict(image) if batch == 1 else api.predict_batch([{"image": image}] * batch)

    calls = {
        PLUGIN: rate(plugin, seconds),
        TORCHSCRIPT: rate(torchscript, seconds),
        ONNX: rate(lambda: session.run(None, {"image": x})[0].tolist(), seconds),
    }
    return {model: round(per_second * batch, 1) for model, per_second in calls.items()}


def copy_costs(seconds: float) -> dict[str, float]:
    """ms of one copy of 10 MB (numpy's copyto: a memcpy), and of the probe model's own work on it
    in a worker (the rows made one array, the module run)."""
    import numpy as np
    import torch

    source = np.random.default_rng(0).normal(size=COPY_SHAPE).astype(np.float32)
    target = np.empty_like(source)
    memcpy = 1000 / rate(lambda: np.copyto(target, source), seconds)

    def probe() -> Any:
        x = np.asarray([source[0]], dtype=np.float32)  # as the torch framework makes its input
        return torch.from_numpy(x).reshape(1, -1)[:, :4].numpy().tolist()

    return {"memcpy_10mb_ms": round(memcpy, 3), "model_work_ms": round(1000 / rate(probe, seconds), 3)}


# --- the phase -------------------------------------------------------------------------------------------


def plugin_site(scratch: Path) -> str | None:
    """Where the servers find imagebench when it is not installed (``make bench`` installs it):
    a folder with its entry point, to put on PYTHONPATH with the plugin's own folder."""
    from importlib.metadata import entry_points

    if entry_points(group="deepaas.v2.model", name=PLUGIN):
        return None
    info = scratch / "site" / f"{PLUGIN}-0.1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PLUGIN}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[deepaas.v2.model]\n{PLUGIN} = {PLUGIN}.api\n")
    return os.pathsep.join([str(info.parent), str(IMAGEBENCH)])


def start(data_dir: Path, raw: Path, workers: int, batching: bool, name: str) -> Server:
    flags = ["--workers", str(workers), "--registry-workers", str(workers), "--allow-unconfined-code"]
    if batching:
        flags += ["--max-batch-size", str(BATCH), "--max-batch-time-ms", str(BATCH_TIME_MS)]
    command = ours_command(data_dir, [PLUGIN], flags)
    return Server(command, "/v2/health/ready", raw / f"ours-image-{name}.log", settle=True)


def upload_all(server: Server, files: dict[str, Path]) -> None:
    for name, path in files.items():
        fields = {"filetype": "torchscript"} if path.suffix == ".pt" else {}
        status, body, _ = registry.upload(server.port, name, path, **fields)
        if status not in (200, 201):
            raise RuntimeError(f"upload of {name} answered {status}: {json.dumps(body)[:300]}")


def measure(
    scratch: Path,
    data_dir: Path,
    raw: Path,
    requests: int,
    seconds: float,
    record: Callable[[str, str, int, str, dict], None],
) -> dict[str, Any]:
    """Every case (see the module's docstring), each handed to ``record(model, kind, concurrency,
    config, result)`` as it is measured (``result["extra"]`` holds the in-process rate and the
    ratio to it); returns the in-process rates and the copy case."""

    folder = Path(tempfile.mkdtemp(prefix="image-", dir=scratch))
    site = plugin_site(folder)
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", "OMP_NUM_THREADS")}
    # the servers' environment: each worker one thread (as in-process), imagebench found
    os.environ["OMP_NUM_THREADS"] = THREADS
    if site is not None:
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (site, saved["PYTHONPATH"]) if p)
    try:
        return _measure(folder, data_dir, raw, requests, seconds, record)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _measure(
    folder: Path, data_dir: Path, raw: Path, requests: int, seconds: float, record: Callable[..., None]
) -> dict[str, Any]:
    import numpy as np

    files = model_files(folder)
    image = jpeg()
    (folder / "image.jpg").write_bytes(image)
    log(f"image: in-process rates ({seconds:g} s each, {THREADS} thread)")
    in_process = in_process_rates(files, folder / "image.jpg", seconds)
    in_batches = in_process_rates(files, folder / "image.jpg", seconds, BATCH)
    form, form_type = multipart(image)
    tensor, tensor_headers = binary_tensor(np.random.default_rng(1).normal(size=(1, 3, 224, 224)).astype(np.float32))
    cases = [
        (PLUGIN, "image-multipart", f"/v2/models/{PLUGIN}/predict/", form, form_type, []),
        (
            TORCHSCRIPT,
            "image-tensor",
            f"/v2/models/{TORCHSCRIPT}/infer",
            tensor,
            "application/octet-stream",
            tensor_headers,
        ),
        (ONNX, "image-tensor", f"/v2/models/{ONNX}/infer", tensor, "application/octet-stream", tensor_headers),
    ]
    summary: dict[str, Any] = {
        "in_process_rps": in_process,
        "in_process_batch_rps": in_batches,
        "jpeg_bytes": len(image),
    }
    summary["bare"] = bare_cases(files, raw, cases, requests, in_process, record)
    for config, (workers, batching) in CONFIGS.items():
        server = start(data_dir / config, raw, workers, batching, config)
        try:
            upload_all(server, {k: v for k, v in files.items() if k != COPY_MODEL})
            for model, kind, path, body, content_type, headers in cases:
                for concurrency in (1, BATCH) if not (batching and workers == 2) else (BATCH,):
                    if batching and concurrency == 1:
                        continue  # nothing to batch
                    log(f"image: {model} {kind} {config} c={concurrency}")
                    result = asyncio.run(
                        closed_loop(server.port, path, body, content_type, headers, concurrency, requests, server.pid)
                    )
                    target = TARGETS["batched" if batching else "unbatched"]
                    ratio = round(result["rps"] / in_process[model], 2)
                    result["extra"] = {
                        "in_process_rps": in_process[model],
                        "in_process_batch_rps": in_batches[model],
                        "ratio_to_in_process": ratio,
                        "target": target,
                        "met": ratio >= target,
                        "workers": workers,
                        "batching": f"max {BATCH}, {BATCH_TIME_MS} ms" if batching else "off",
                    }
                    record(model, kind + KIND_SUFFIX[config], concurrency, config, result)
        finally:
            server.stop()
    summary["copy"] = copy_case(data_dir / "copy", raw, files, requests, seconds, record)
    return summary


def bare_cases(
    files: dict[str, Path],
    raw: Path,
    cases: list[tuple[str, str, str, bytes, str, list[str]]],
    requests: int,
    in_process: dict[str, float],
    record: Callable[..., None],
) -> dict[str, float]:
    """Each case against ``image_bare.py`` (the model in a bare aiohttp server's own process: the
    ceiling of any server on aiohttp), unbatched, c=1 and c=8; its ratios to the in-process rate."""
    server = bare_server(files, raw)
    ratios: dict[str, float] = {}
    try:
        for model, kind, path, body, content_type, headers in cases:
            for concurrency in (1, BATCH):
                log(f"image: {model} {kind} bare aiohttp c={concurrency}")
                result = asyncio.run(
                    closed_loop(server.port, path, body, content_type, headers, concurrency, requests, server.pid)
                )
                ratio = round(result["rps"] / in_process[model], 2)
                result["extra"] = {
                    "in_process_rps": in_process[model],
                    "ratio_to_in_process": ratio,
                    "target": None,
                    "workers": 0,
                    "batching": "off",
                }
                record(model, kind + "-bare", concurrency, "bare", result)
                ratios[f"{model} c={concurrency}"] = ratio
    finally:
        server.stop()
    return ratios


def bare_server(files: dict[str, Path], raw: Path) -> Server:
    """``image_bare.py`` serving the network (TorchScript, ONNX), imagebench and the copy probe."""
    command = [sys.executable, str(HERE / "image_bare.py"), "--torchscript", str(files[TORCHSCRIPT])]
    command += ["--onnx", str(files[ONNX]), "--probe", str(files[COPY_MODEL])]
    return Server(command, "/v2/health/ready", raw / "bare-image.log", listen=lambda port: ["--port", str(port)])


def copy_case(
    data_dir: Path, raw: Path, files: dict[str, Path], requests: int, seconds: float, record: Callable[..., None]
) -> dict[str, Any]:
    """A 10 MB tensor's server CPU per request, beside one memcpy of it, the model's own work, and a
    bare aiohttp server's CPU for the same request (the probe in its own process: what receiving
    10 MB over HTTP costs before any worker)."""
    import numpy as np

    array = np.random.default_rng(2).normal(size=COPY_SHAPE).astype(np.float32)
    body, headers = binary_tensor(array, name="x")
    count = max(10, requests // 4)

    def measure_on(server: Server) -> dict[str, Any]:
        return asyncio.run(
            closed_loop(server.port, f"/v2/models/{COPY_MODEL}/infer", body, OCTETS, headers, 1, count, server.pid)
        )

    server = start(data_dir, raw, 1, False, "copy")
    try:
        upload_all(server, {COPY_MODEL: files[COPY_MODEL]})
        log(f"image: {COPY_MODEL} a {len(body) / 2**20:.1f} MiB body, c=1")
        result = measure_on(server)
    finally:
        server.stop()
    bare = bare_server(files, raw)
    try:
        log(f"image: {COPY_MODEL} a {len(body) / 2**20:.1f} MiB body, bare aiohttp c=1")
        bare_result = measure_on(bare)
    finally:
        bare.stop()
    costs = copy_costs(seconds)
    bare_result["extra"] = {**costs, "body_bytes": len(body)}
    record(COPY_MODEL, "tensor-10mb-bare", 1, "bare", bare_result)
    result["extra"] = {**costs, "body_bytes": len(body), "bare_server_cpu_ms": bare_result["server_cpu_ms_per_req"]}
    record(COPY_MODEL, "tensor-10mb", 1, "w1", result)
    return {
        **costs,
        **{k: result[k] for k in ("server_cpu_ms_per_req", "tree_cpu_ms_per_req", "rps", "lat_ms")},
        "bare_server_cpu_ms_per_req": bare_result["server_cpu_ms_per_req"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, shorter in-process runs")
    parser.add_argument("--requests", type=int)
    args = parser.parse_args(argv)
    requests = args.requests or (80 if args.quick else 400)
    seconds = 2.0 if args.quick else 5.0
    scratch = Path(tempfile.mkdtemp(prefix="deepaas-like-image-bench-"))
    raw = scratch / "raw"
    raw.mkdir()
    results: list[dict[str, Any]] = []

    def record(model: str, kind: str, concurrency: int, config: str, result: dict) -> None:
        results.append({"model": model, "kind": kind, "c": concurrency, "config": config, **result})
        extra = result.get("extra", {})
        log(
            f"  {result['rps']} req/s, p50 {result['lat_ms']['p50']} ms, server {result['server_cpu_ms_per_req']} "
            f"ms CPU/req (tree {result['tree_cpu_ms_per_req']}), errors {result['errors']}"
            + (f", {extra['ratio_to_in_process']}x in-process" if "ratio_to_in_process" in extra else "")
        )

    started = time.monotonic()
    summary = measure(scratch, scratch / "data", raw, requests, seconds, record)
    summary["phase_s"] = round(time.monotonic() - started, 1)
    print(json.dumps({"summary": summary, "cases": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
