"""The demo model that `make run` serves."""

import asyncio
import io
import struct
import time
import zlib

import aiohttp


def tiny_png(width: int, height: int) -> bytes:
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    raw = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


async def test_demo_every_kind_of_argument(serve):
    client = await serve("demo")
    form = aiohttp.FormData()
    for value in ("1", "2", "2", "9"):
        form.add_field("values", value)
    form.add_field("scale", "2")
    form.add_field("bins", "2")
    form.add_field("normalize", "true")
    form.add_field("palette", "mono")
    form.add_field("image", io.BytesIO(tiny_png(3, 2)), filename="dot.png", content_type="image/png")
    response = await client.post("/v2/models/demo/predict/", data=form)
    assert response.status == 200, await response.text()
    answer = (await response.json())["predictions"]
    assert answer["count"] == 4 and answer["mean"] == 7.0 and answer["max"] == 18.0
    assert answer["histogram"] == [0.75, 0.25]
    assert answer["image"]["png_size"] == [3, 2]
    assert answer["image"]["original_filename"] == "dot.png"
    errors = (await (await client.post("/v2/models/demo/predict/", json={
        "scale": 0, "bins": 99, "palette": "neon", "normalize": "maybe"})).json())["errors"]
    assert set(errors) == {"scale", "bins", "palette", "normalize"}


async def test_demo_training_moves_predictions(serve):
    client = await serve("demo", workers=2)
    job = await (await client.post("/v2/models/demo/train/", json={
        "target_mean": 10, "epochs": 20, "epoch_seconds": 0})).json()
    deadline = time.monotonic() + 60
    while (status := await (await client.get(f"/v2/models/demo/train/{job['uuid']}")).json())["status"] == "running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert status["status"] == "done", status
    assert status["result"]["output"]["converged"] is True
    answers = await asyncio.gather(*(client.post("/v2/models/demo/predict/") for _ in range(10)))
    means = {round((await a.json())["predictions"]["mean"], 3) for a in answers}
    assert means == {10.0}
