"""/swagger.json is a valid OpenAPI 3 document describing every model; /api works offline."""

import re

from openapi_spec_validator import validate


async def spec_of(client):
    response = await client.get("/swagger.json")
    assert response.status == 200
    return await response.json()


async def test_spec_is_valid_openapi_3_for_every_kind_of_plugin(serve, plugins):
    plugins.install("legacy")
    plugins.install("file-io", fixture="file_io")
    plugins.install("answer", fixture="schema_mismatch")
    plugins.install("counter", fixture="counter_class", attr="Counter")
    client = await serve("legacy", "file-io", "answer", "counter", "irisbench", "echobench", "demo",
                         executor="thread")
    spec = await spec_of(client)
    validate(spec)
    assert spec["openapi"].startswith("3.")
    for name in ("legacy", "file-io", "answer", "counter", "irisbench", "echobench", "demo"):
        assert f"/v2/models/{name}/predict/" in spec["paths"], name
        assert f"/v2/models/{name}/" in spec["paths"], name


async def test_arguments_types_defaults_enums_descriptions(serve, plugins):
    plugins.install("legacy")
    client = await serve("legacy", "irisbench", executor="thread")
    spec = await spec_of(client)
    legacy = spec["paths"]["/v2/models/legacy/predict/"]["post"]
    body = legacy["requestBody"]["content"]["multipart/form-data"]["schema"]
    props = body["properties"]
    assert props["text"] == {"type": "string", "description": "Some text"}
    assert body["required"] == ["text"]
    assert props["mode"]["enum"] == ["plain", "upper"] and props["mode"]["default"] == "plain"
    assert props["repeat"]["minimum"] == 1 and props["repeat"]["maximum"] == 5
    assert props["data"] == {"type": "string", "format": "binary", "description": "An optional file"}
    assert props["flag"]["type"] == "boolean"
    assert props["tags"]["type"] == "array"
    assert set(legacy["requestBody"]["content"]) == {"multipart/form-data"}  # files: multipart only
    encoding = legacy["requestBody"]["content"]["multipart/form-data"]["encoding"]
    assert encoding == {"tags": {"style": "form", "explode": True}}  # arrays as repeated fields
    response = legacy["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(response["properties"]) == {"label", "score", "echo"}
    assert response["properties"]["label"]["description"] == "The echoed text"
    for code in ("400", "422", "500", "503"):
        assert "Error" in str(legacy["responses"][code])

    iris = spec["paths"]["/v2/models/irisbench/predict/"]["post"]
    assert set(iris["requestBody"]["content"]) == {
        "multipart/form-data", "application/x-www-form-urlencoded", "application/json"}
    iris_props = iris["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert iris_props["top_k"] == {"type": "integer", "default": 3, "minimum": 1, "maximum": 3,
                                   "description": "How many classes to return, best first"}
    assert iris["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Prediction"}
    train = spec["paths"]["/v2/models/irisbench/train/"]["post"]
    assert train["requestBody"]["content"]["application/json"]["schema"]["properties"]["n_estimators"]["maximum"] == 1000
    assert set(spec["paths"]["/v2/models/irisbench/train/{uuid}"]) == {"parameters", "get", "delete"}


async def test_accept_choices_are_response_content_types(serve, plugins):
    plugins.install("file-io", fixture="file_io")
    client = await serve("file-io", "demo", executor="thread")
    spec = await spec_of(client)
    file_io = spec["paths"]["/v2/models/file-io/predict/"]["post"]
    assert set(file_io["responses"]["200"]["content"]) == {"application/json", "application/zip", "image/*"}
    assert "accept" not in file_io["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    demo = spec["paths"]["/v2/models/demo/predict/"]["post"]
    assert demo["responses"]["200"]["content"]["image/png"]["schema"] == {"type": "string", "format": "binary"}


async def test_swagger_ui_is_served_offline(serve):
    client = await serve("echobench", executor="thread")
    page = await client.get("/api")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert not re.search(r"""(src|href)=["']https?://""", html)  # nothing from a CDN
    assert "/swagger.json" in html
    for asset in re.findall(r"""(?:src|href)="([^"]+)\"""", html):
        response = await client.get(asset)
        assert response.status == 200, asset
        assert len(await response.read()) > 100, asset
    page = await client.get("/ui", allow_redirects=False)  # the what-if page (tests/test_ui.py)
    assert page.status == 200 and page.content_type == "text/html"


async def test_jobs_in_the_spec(serve):
    client = await serve("irisbench", "demo", executor="thread")
    spec = await spec_of(client)
    validate(spec)
    paths = spec["paths"]
    predictions = paths["/v2/models/irisbench/predictions/"]
    assert set(predictions) == {"post", "get"}
    assert "202" in predictions["post"]["responses"]
    assert predictions["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["top_k"]["maximum"] == 3
    assert {p["name"] for p in predictions["get"]["parameters"]} == {"status", "limit", "offset"}
    assert set(paths["/v2/models/irisbench/predictions/{uuid}"]) == {"parameters", "get", "delete"}
    assert "image/png" in paths["/v2/models/demo/predictions/{uuid}/result"]["get"]["responses"]["200"]["content"]
    assert "text/plain" in paths["/v2/models/irisbench/train/{uuid}/log"]["get"]["responses"]["200"]["content"]
    schemas = spec["components"]["schemas"]
    assert "interrupted" in schemas["TrainingJob"]["properties"]["status"]["enum"]
    assert {"progress", "queue_position", "callback"} <= set(schemas["TrainingJob"]["properties"])
    assert {"result", "result_type", "error_status"} <= set(schemas["PredictionJob"]["properties"])
    assert "/metrics" in paths and "/v2/models/irisbench/ready" in paths
