"""Predict: argument sources, validation, files, output kinds, plugin failures."""

import asyncio
import io
import os
import zipfile

import aiohttp
import pytest

IRIS = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
IRIS_QUERY = "sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"


async def test_arguments_from_query_form_multipart_and_json(serve):
    client = await serve("echobench")
    url = "/v2/models/echobench/predict/"
    form = aiohttp.FormData()
    for key, value in IRIS.items():
        form.add_field(key, str(value))
    responses = [
        await client.post(f"{url}?{IRIS_QUERY}"),
        await client.post(url, data={k: str(v) for k, v in IRIS.items()}),
        await client.post(url, data=form),
        await client.post(url, json=IRIS),
    ]
    as_text = await client.post(url, json={k: str(v) for k, v in IRIS.items()})  # JSON is typed: numbers are numbers
    assert as_text.status == 422
    assert set((await as_text.json())["errors"]) == set(IRIS)
    for response in responses:
        assert response.status == 200
        body = await response.json()
        assert body["status"] == "OK"
        predictions = body["predictions"]
        assert {k: predictions[k] for k in IRIS} == IRIS
        assert predictions["top_k"] == 3 and predictions["mode"] == "echo"  # defaults filled in


async def test_query_string_wins_over_body_like_deepaas(serve):
    client = await serve("echobench", executor="thread")
    url = "/v2/models/echobench/predict/?sepal_length=1.0&sepal_length=9.0"
    body = {"sepal_length": 3.0, "sepal_width": 3.0, "petal_length": 3.0, "petal_width": 3.0}
    answer = await (await client.post(url, json=body)).json()
    assert answer["predictions"]["sepal_length"] == 1.0
    form = {k: "2.0" for k in body}
    answer = await (await client.post(url, data=form)).json()
    assert answer["predictions"]["sepal_length"] == 1.0
    assert answer["predictions"]["sepal_width"] == 2.0


async def test_irisbench_prediction(serve):
    client = await serve("irisbench")
    response = await client.post(f"/v2/models/irisbench/predict/?{IRIS_QUERY}&top_k=2")
    body = await response.json()
    assert response.status == 200
    assert body["predictions"]["label"] == "setosa"
    assert len(body["predictions"]["top_k"]) == 2


@pytest.mark.parametrize(
    "kwargs, field, text",
    [
        (
            {"params": {"sepal_width": "3.5", "petal_length": "1", "petal_width": "1"}},
            "sepal_length",
            "Missing data for required field.",
        ),
        (
            {"params": {**{k: str(v) for k, v in IRIS.items()}, "sepal_length": "abc"}},
            "sepal_length",
            "Not a valid number.",
        ),
        ({"json": {**IRIS, "sepal_length": None}}, "sepal_length", "Field may not be null."),
        (
            {"params": {**{k: str(v) for k, v in IRIS.items()}, "sepal_length": "nan"}},
            "sepal_length",
            "Special numeric values",
        ),
        ({"json": {**IRIS, "sepal_length": "5.1"}}, "sepal_length", "a JSON number, not text"),
        ({"json": {**IRIS, "top_k": 7}}, "top_k", "less than or equal to 3"),
        ({"params": {**{k: str(v) for k, v in IRIS.items()}, "top_k": "1.5"}}, "top_k", "Not a valid integer."),
    ],
)
async def test_invalid_arguments_are_422_with_field_detail(serve, kwargs, field, text):
    client = await serve("irisbench", executor="thread")
    response = await client.post("/v2/models/irisbench/predict/", **kwargs)
    assert response.status == 422
    body = await response.json()
    assert text in " ".join(body["errors"][field])
    assert field in body["message"]


async def test_unknown_arguments_are_named_with_the_accepted_ones(serve):
    client = await serve("irisbench", executor="thread")
    for kwargs in (
        {"params": {**{k: str(v) for k, v in IRIS.items()}, "colour": "red"}},
        {"json": {**IRIS, "colour": "red", "size": 3}},
    ):
        response = await client.post("/v2/models/irisbench/predict/", **kwargs)
        assert response.status == 422
        body = await response.json()
        assert "colour" in body["message"]
        assert body["accepted"] == ["petal_length", "petal_width", "sepal_length", "sepal_width", "top_k"]
        assert "sepal_length" in body["message"]


@pytest.mark.parametrize(
    "headers, data, status, text",
    [
        ({"Content-Type": "application/json"}, b"{not json", 400, "Malformed JSON body"),
        ({"Content-Type": "application/json"}, b"[1, 2]", 422, "must be an object"),
        ({"Content-Type": "application/json"}, b"\xff\xfe", 400, "Malformed JSON body"),
        ({"Content-Type": "multipart/form-data; boundary=xyz"}, b"garbage", 400, "Malformed multipart"),
        ({"Content-Type": "multipart/form-data"}, b"--x\r\n", 400, "Malformed multipart"),
        (
            {"Content-Type": "multipart/form-data; boundary=xyz"},
            b'--xyz\r\nContent-Disposition: form-data; name="sepal_length"\r\n\r\n5.1\r\n--xy',
            400,
            "Malformed multipart",
        ),
        ({"Content-Type": "text/plain"}, b"sepal_length=1", 415, "Unsupported Content-Type"),
    ],
)
async def test_malformed_bodies_are_4xx_json(serve, headers, data, status, text):
    client = await serve("irisbench", executor="thread")
    response = await client.post("/v2/models/irisbench/predict/", data=data, headers=headers)
    assert response.status == status
    assert response.content_type == "application/json"
    assert text in (await response.json())["message"]
    ok = await client.post(f"/v2/models/irisbench/predict/?{IRIS_QUERY}")
    assert ok.status == 200  # and the server keeps serving


async def test_json_that_only_pythons_reader_takes_is_read_as_before(serve):
    """Bodies are read with orjson; what it refuses (NaN, integers past 64 bits) goes to the
    standard library, as every body did before, and is judged by the argument's field."""
    client = await serve("echobench", executor="thread")
    base = b'"sepal_length": 1, "petal_length": 3, "petal_width": 4'
    big = await client.post(
        "/v2/models/echobench/predict/",
        data=b'{%s, "sepal_width": %d}' % (base, 10**30),
        headers={"Content-Type": "application/json"},
    )
    assert big.status == 200 and (await big.json())["predictions"]["sepal_width"] == 1e30
    nan = await client.post(
        "/v2/models/echobench/predict/",
        data=b'{%s, "sepal_width": NaN}' % base,
        headers={"Content-Type": "application/json"},
    )
    assert nan.status == 422 and "sepal_width" in (await nan.json())["errors"]
    bad = await client.post(
        "/v2/models/echobench/predict/",
        data=b'{%s, "sepal_width": }' % base,
        headers={"Content-Type": "application/json"},
    )
    assert bad.status == 400 and "Expecting value: line 1 column" in (await bad.json())["message"]


async def test_body_over_the_limit_is_413(serve):
    client = await serve("echobench", executor="thread", client_max_size=10_000)
    big = {**IRIS, "mode": "x" * 20_000}
    response = await client.post("/v2/models/echobench/predict/", json=big)
    assert response.status == 413
    assert "10000 bytes" in (await response.json())["message"]
    form = aiohttp.FormData()
    form.add_field("blob", io.BytesIO(b"x" * 20_000), filename="big.bin")
    response = await client.post("/v2/models/echobench/predict/", data=form)
    assert response.status == 413
    chunked = await client.post(
        "/v2/models/echobench/predict/",
        data=_chunks(b"{" + b" " * 20_000 + b"}"),
        headers={"Content-Type": "application/json"},
    )
    assert chunked.status == 413


async def _chunks(data: bytes):
    for i in range(0, len(data), 1000):
        yield data[i : i + 1000]


async def test_legacy_plugin_vocabulary_and_uploaded_file(serve, plugins):
    plugins.install("legacy")
    client = await serve("legacy")
    form = aiohttp.FormData()
    form.add_field("text", "hi")
    form.add_field("mode", "upper")
    form.add_field("repeat", "2")
    form.add_field("tags", "a")
    form.add_field("tags", "b")
    form.add_field("data", io.BytesIO(b"file content"), filename="notes.txt", content_type="text/plain")
    response = await client.post("/v2/models/legacy/predict/", data=form)
    assert response.status == 200, await response.text()
    body = await response.json()  # the plugin's dict schema: not wrapped
    assert body["label"] == "HIHI"
    echo = body["echo"]
    assert echo["tags"] == ["a", "b"] and echo["flag"] is False
    upload = echo["file"]
    assert upload["is_uploaded_file"] is True
    assert (upload["name"], upload["original_filename"], upload["content_type"]) == ("data", "notes.txt", "text/plain")
    assert upload["content"] == "file content"
    assert upload["path"].endswith(".txt")
    assert not os.path.exists(upload["path"])  # removed once the request was answered
    assert not os.path.exists(os.path.dirname(upload["path"]))


async def test_legacy_enum_is_enforced_and_file_fields_need_uploads(serve, plugins):
    plugins.install("legacy")
    client = await serve("legacy", executor="thread")
    bad = await client.post("/v2/models/legacy/predict/", json={"text": "hi", "mode": "lower"})
    assert bad.status == 422
    assert (await bad.json())["errors"]["mode"] == ["Must be one of: plain, upper."]
    not_a_file = await client.post("/v2/models/legacy/predict/", json={"text": "hi", "data": "abc"})
    assert not_a_file.status == 422
    assert "file upload" in (await not_a_file.json())["errors"]["data"][0]


async def test_file_outputs_follow_accept(serve, plugins):
    plugins.install("file-io", fixture="file_io")
    client = await serve("file-io")

    def form():
        data = aiohttp.FormData()
        data.add_field("data", io.BytesIO(b"abc"), filename="in.txt", content_type="text/plain")
        return data

    as_json = await client.post("/v2/models/file-io/predict/", data=form())
    assert as_json.status == 200
    assert (await as_json.json())["predictions"]["accept"] == "application/json"  # first choice by default

    zipped = await client.post("/v2/models/file-io/predict/", data=form(), headers={"Accept": "application/zip"})
    assert zipped.status == 200
    assert zipped.content_type == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(await zipped.read()))
    assert archive.read("in.txt") == b"abc"

    image = await client.post("/v2/models/file-io/predict/?accept=image/*", data=form())
    assert image.status == 200
    assert image.content_type == "image/png"
    assert (await image.read()).startswith(b"\x89PNG")

    browser = await client.post(
        "/v2/models/file-io/predict/", data=form(), headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    )
    assert browser.status == 200 and browser.content_type == "application/json"

    wrong = await client.post("/v2/models/file-io/predict/?accept=text/csv", data=form())
    assert wrong.status == 422
    assert "accept" in (await wrong.json())["errors"]


async def test_demo_png_by_accept_header(serve):
    client = await serve("demo", executor="thread")
    response = await client.post("/v2/models/demo/predict/?values=1&values=4&bins=2", headers={"Accept": "image/png"})
    assert response.status == 200 and response.content_type == "image/png"
    data = await response.read()
    assert data.startswith(b"\x89PNG") and int.from_bytes(data[16:20], "big") == 320


async def test_plugin_exceptions_are_json_and_the_server_keeps_serving(serve, plugins):
    plugins.install("failing")
    client = await serve("failing")
    url = "/v2/models/failing/predict/"
    value = await client.post(url, json={"how": "value"})
    assert value.status == 500
    body = await value.json()
    assert body["model"] == "failing"
    assert "Model 'failing' failed in predict(): ValueError: asked to fail" == body["message"]
    http = await client.post(url, json={"how": "http"})
    assert http.status == 400  # the plugin's own HTTP error keeps its status
    assert "the plugin refused this input" in (await http.json())["message"]
    exiting = await client.post(url, json={"how": "exit"})
    assert exiting.status == 500
    assert "sys.exit" in (await exiting.json())["message"]
    ok = await client.post(url)
    assert ok.status == 200 and (await ok.json())["predictions"] == {"ok": True}


async def test_plugin_exception_in_thread_mode(serve, plugins):
    plugins.install("failing")
    client = await serve("failing", executor="thread")
    response = await client.post("/v2/models/failing/predict/", json={"how": "exit"})
    assert response.status == 500
    assert (await client.post("/v2/models/failing/predict/")).status == 200


async def test_response_schema_is_enforced(serve, plugins):
    plugins.install("answer", fixture="schema_mismatch")
    client = await serve("answer", executor="thread")
    good = await client.post("/v2/models/answer/predict/")
    assert await good.json() == {"label": "cat", "probability": 0.9}
    bad = await client.post("/v2/models/answer/predict/", json={"good": False})
    assert bad.status == 500
    body = await bad.json()
    assert "does not match its declared response schema" in body["message"]
    assert body["errors"] == {"label": ["Not a valid string."], "probability": ["Missing data for required field."]}


async def test_metadata_answers_during_a_long_predict(serve, plugins):
    plugins.install("slow")
    client = await serve("slow")
    long_call = asyncio.ensure_future(client.post("/v2/models/slow/predict/", json={"seconds": 3}))
    await asyncio.sleep(0.3)
    for path in ("/v2/models/slow/", "/v2/health/live", "/swagger.json"):
        response = await asyncio.wait_for(client.get(path), timeout=1.0)
        assert response.status == 200
    assert not long_call.done()
    assert (await long_call).status == 200


async def test_model_that_cannot_warm_answers_503(serve, plugins):
    plugins.install("cold", fixture="warm_fails")
    client = await serve("cold", ready=False)
    response = await client.post("/v2/models/cold/predict/")
    assert response.status == 503
    assert "weights file is corrupt" in (await response.json())["message"]
    assert response.headers["Retry-After"]
    ready = await client.get("/v2/health/ready")
    assert ready.status == 503
    assert (await ready.json())["models"]["cold"]["state"] == "failed"


async def test_comma_joined_list_items_as_swagger_ui_sends_them(serve, plugins):
    plugins.install("legacy")
    client = await serve("demo", "legacy", executor="thread")
    form = aiohttp.FormData()
    form.add_field("values", "1,2,3,5,8")
    answer = (await (await client.post("/v2/models/demo/predict/", data=form)).json())["predictions"]
    assert answer["count"] == 5 and answer["max"] == 8.0
    strings = aiohttp.FormData()  # a list of strings keeps its commas: they may be data
    strings.add_field("text", "x")
    strings.add_field("tags", "a,b")
    echo = (await (await client.post("/v2/models/legacy/predict/", data=strings)).json())["echo"]
    assert echo["tags"] == ["a,b"]


async def test_numpy_values_and_nan_become_valid_json(serve, plugins):
    plugins.install("numpy-out", fixture="numpy_out")
    client = await serve("numpy-out", executor="thread")
    response = await client.post("/v2/models/numpy-out/predict/")
    assert response.status == 200
    text = await response.text()
    assert "NaN" not in text
    assert (await response.json())["predictions"] == {
        "scores": [0.25, 0.75],
        "best": 1,
        "mean": 0.5,
        "missing": None,
        "matrix": [[1.0, 0.0], [0.0, 1.0]],
    }
