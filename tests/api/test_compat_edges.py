"""What real DEEPaaS plugins, a fuzzer and a browser found: failing metadata, empty file
parts, integers that are not integers."""

import logging

import aiohttp

from support.polling import finished, wait_for

IRIS_QUERY = "sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"


async def test_a_metadata_error_names_the_root_cause_a_plugin_wrapped(serve, plugins):
    plugins.install("wrapper", fixture="metadata_wraps")
    client = await serve("wrapper")
    document = await (await client.get("/v2/models/wrapper/")).json()
    error = document["metadata_error"]
    assert "TypeError: argument of type 'FileNotFoundError' is not iterable" in error, error
    assert (
        "caused by FileNotFoundError: [Errno 2] No such file or directory: '/nonexistent/deephdc/metadata.yml'" in error
    ), error


async def test_a_plugin_whose_metadata_fails_is_served(serve, plugins, caplog):
    plugins.install("oldplugin", fixture="metadata_fails")
    with caplog.at_level(logging.WARNING, logger="deepaas_like.models"):
        client = await serve("oldplugin")  # starts, and becomes ready
        document = await (await client.get("/v2/models/oldplugin/")).json()
        assert document["id"] == "oldplugin" and document["name"] == "oldplugin"
        assert "get_metadata() failed" in document["description"]
        assert document["metadata_error"] == (
            "get_metadata() failed: FileNotFoundError: [Errno 2] No such file or directory: "
            "'/site/old_plugin.egg-info/PKG-INFO'"
        )
        listed = await (await client.get("/v2/models/")).json()
        assert listed["models"][0]["metadata_error"] == document["metadata_error"]
        assert (await client.get("/v2/models/oldplugin/ready")).status == 200
        predict = await client.post("/v2/models/oldplugin/predict/", json={"x": 2})
        assert predict.status == 200 and (await predict.json())["predictions"]["double"] == 4
        job = await (await client.post("/v2/models/oldplugin/train/")).json()
        done = await wait_for(client, f"/v2/models/oldplugin/train/{job['uuid']}", finished)
        assert done["status"] == "done", done  # get_metadata() failing again after it is not fatal
        after = await (await client.get("/v2/models/oldplugin/")).json()
        assert after["metadata_error"] == document["metadata_error"]
    tracebacks = [r for r in caplog.records if "get_metadata() failed" in r.getMessage()]
    assert len(tracebacks) == 1, "the traceback is logged once, not at every refresh"
    assert "Traceback" in tracebacks[0].getMessage() and "egg-info" in tracebacks[0].getMessage()


def _multipart_with_empty_part(name: str, **fields: str) -> aiohttp.MultipartWriter:
    """What Swagger UI sends for a file input left empty: a part with no filename and no bytes."""
    writer = aiohttp.MultipartWriter("form-data")
    for key, value in fields.items():
        writer.append(value, {"Content-Disposition": f'form-data; name="{key}"'})
    writer.append("", {"Content-Disposition": f'form-data; name="{name}"'})
    return writer


async def test_an_empty_part_for_an_optional_file_means_not_given(serve):
    client = await serve("demo", executor="thread")
    response = await client.post("/v2/models/demo/predict/", data=_multipart_with_empty_part("image", values="3"))
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["predictions"]["count"] == 1 and "image" not in body["predictions"]


async def test_an_empty_part_for_a_required_file_is_missing(serve, plugins):
    plugins.install("fileio", fixture="file_io")
    client = await serve("fileio", executor="thread")
    response = await client.post("/v2/models/fileio/predict/", data=_multipart_with_empty_part("data"))
    assert response.status == 422
    assert (await response.json())["errors"]["data"] == ["Missing data for required field."]


async def test_integer_arguments_take_integral_values_only(serve):
    client = await serve("irisbench", executor="thread")
    url = f"/v2/models/irisbench/predict/?{IRIS_QUERY}"
    for good in ("2", "2.0"):
        response = await client.post(f"{url}&top_k={good}")
        assert response.status == 200 and len((await response.json())["predictions"]["top_k"]) == 2
    for bad in ("2.7", "2.589e-42", "inf"):
        response = await client.post(f"{url}&top_k={bad}")
        assert response.status == 422, bad
        body = await response.json()
        assert body["errors"] == {"top_k": ["Not a valid integer."]} and "top_k" in body["message"]
    as_json = await client.post(
        "/v2/models/irisbench/predict/",
        json={"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2, "top_k": 2.5},
    )
    assert as_json.status == 422


async def test_integers_beyond_64_bits_are_answered_and_listed(serve):
    client = await serve("echobench", "irisbench", executor="thread")
    huge = 2**70
    echo = await client.post(f"/v2/models/echobench/predict/?{IRIS_QUERY}&top_k={huge}")
    assert echo.status == 200 and (await echo.json())["predictions"]["top_k"] == huge
    job = await client.post(f"/v2/models/echobench/predictions/?{IRIS_QUERY}&top_k={huge}")
    assert job.status == 202 and (await job.json())["args"]["top_k"] == huge
    listed = await client.get("/v2/models/echobench/predictions/")
    assert listed.status == 200 and (await listed.json())[0]["args"]["top_k"] == huge
    training = await client.post(f"/v2/models/irisbench/train/?seed={huge}&n_estimators=2")
    assert training.status == 200
    assert (await client.get("/v2/models/irisbench/train/")).status == 200


async def test_a_form_with_thousands_of_values_is_read(serve):
    client = await serve("demo", executor="thread")
    form = [("values", str(i)) for i in range(5000)]
    response = await client.post("/v2/models/demo/predict/", data=form)
    assert response.status == 200 and (await response.json())["predictions"]["count"] == 5000
