"""The demo model that `make run` serves."""

import asyncio
import doctest
import io
import struct
import time
import zlib

import aiohttp
import pytest


def tiny_png(width: int, height: int) -> bytes:
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    raw = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


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
    errors = (
        await (
            await client.post(
                "/v2/models/demo/predict/", json={"scale": 0, "bins": 99, "palette": "neon", "normalize": "maybe"}
            )
        ).json()
    )["errors"]
    assert set(errors) == {"scale", "bins", "palette", "normalize"}


async def test_demo_training_moves_predictions(serve):
    client = await serve("demo", workers=2)
    job = await (
        await client.post("/v2/models/demo/train/", json={"target_mean": 10, "epochs": 20, "epoch_seconds": 0})
    ).json()
    deadline = time.monotonic() + 60
    while (status := await (await client.get(f"/v2/models/demo/train/{job['uuid']}")).json())["status"] == "running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert status["status"] == "done", status
    assert status["result"]["output"]["converged"] is True
    answers = await asyncio.gather(*(client.post("/v2/models/demo/predict/") for _ in range(10)))
    means = {round((await a.json())["predictions"]["mean"], 3) for a in answers}
    assert means == {10.0}


async def predict(client, values, via="multipart", **arguments):
    """POST the demo's predict: ``values`` as repeated multipart fields (what Swagger UI sends),
    as a JSON object, or in the query string."""
    if via == "json":
        response = await client.post("/v2/models/demo/predict/", json={"values": values, **arguments})
    elif via == "query":
        query = [("values", str(v)) for v in values] + [(name, str(v)) for name, v in arguments.items()]
        response = await client.post("/v2/models/demo/predict/", params=query)
    else:
        form = aiohttp.FormData(default_to_multipart=True)
        for name, value in [("values", v) for v in values] + list(arguments.items()):
            form.add_field(name, str(value))
        response = await client.post("/v2/models/demo/predict/", data=form)
    return response.status, await response.json()


@pytest.mark.parametrize(
    "values, scale, bins, expected",
    [
        # The span (2e301) and the sum stay finite; min, max and mean are exact.
        ([1e300, -1e300], 10, 2, {"min": -1e301, "max": 1e301, "mean": 0.0, "histogram": [1, 1]}),
        # The most values, all at the limit, scaled: their sum (1e305) stays finite.
        (
            [1e300] * 10000,
            10,
            3,
            {"min": 1e301, "max": 1e301, "mean": pytest.approx(1e301), "histogram": [10000, 0, 0]},
        ),
        # fsum: the 1 survives next to +-1e300.
        ([1e300, 1.0, -1e300], 1, 3, {"mean": 1 / 3, "histogram": [1, 1, 1]}),
        # Denormals: the bin width (5e-324) would round to 0.
        ([0.0, 5e-324, 1e-323], 1, 2, {"min": 0.0, "max": 1e-323, "mean": 5e-324, "histogram": [1, 2]}),
        # Scaled below the smallest denormal they become 0: one bin holds them all.
        ([5e-324, 1e-323], 0.1, 4, {"min": 0.0, "max": 0.0, "mean": 0.0, "histogram": [2, 0, 0, 0]}),
    ],
    ids=["plus-minus-limit-scaled", "ten-thousand-at-limit", "fsum", "denormals", "underflow"],
)
async def test_demo_summarises_extreme_finite_numbers(serve, values, scale, bins, expected):
    client = await serve("demo", executor="thread")
    for via in ("multipart", "json"):
        status, body = await predict(client, values, via=via, scale=scale, bins=bins)
        assert status == 200, (via, body)
        answer = body["predictions"]
        assert answer["count"] == len(values)
        assert {key: answer[key] for key in expected} == expected, via
    png = await client.post(
        "/v2/models/demo/predict/",
        json={"values": values, "scale": scale, "bins": bins},
        headers={"Accept": "image/png"},
    )
    assert png.status == 200 and png.content_type == "image/png", await png.text()


@pytest.mark.parametrize(
    "values, arguments, refused",
    [
        (["1e308"], {}, "values"),  # finite, but over the declared limit (1e300)
        (["-1.8e308"], {}, "values"),  # read as -inf
        (["1", "1e309"], {}, "values"),  # read as inf
        (["nan"], {}, "values"),
        (["-Infinity"], {}, "values"),
        (["1"], {"scale": "nan"}, "scale"),
        (["1"], {"scale": "inf"}, "scale"),
    ],
    ids=["over-limit", "minus-1.8e308", "1e309", "nan", "minus-infinity", "scale-nan", "scale-inf"],
)
async def test_demo_refuses_numbers_it_cannot_summarise_with_422(serve, values, arguments, refused):
    client = await serve("demo", executor="thread")
    for via in ("multipart", "query"):
        status, body = await predict(client, values, via=via, **arguments)
        assert status == 422, (via, body)
        assert set(body["errors"]) == {refused}, (via, body)
    status, body = await predict(client, [1e308], via="json")
    assert status == 422 and set(body["errors"]) == {"values"}, body


async def test_demo_training_refuses_a_target_mean_over_the_limit(serve):
    client = await serve("demo", executor="thread")
    for target in ("1e301", "-1.8e308", "nan"):
        response = await client.post("/v2/models/demo/train/", data={"target_mean": target, "epochs": "1"})
        assert response.status == 422, await response.text()
        assert set((await response.json())["errors"]) == {"target_mean"}


def test_demo_helpers_examples():
    """The examples in the docstrings of histogram() and mean() hold."""
    import deepaas_like_demo.api

    results = doctest.testmod(deepaas_like_demo.api)
    assert results.attempted >= 4 and results.failed == 0, results
