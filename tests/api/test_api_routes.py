"""Routes with DEEPaaS's paths and shapes, both slash variants, JSON errors."""

import pytest
from aiohttp.test_utils import make_mocked_request


async def test_versions_documents(serve):
    client = await serve("echobench", executor="thread")
    root = await client.get("/")
    assert root.status == 200
    body = await root.json()
    assert body["versions"] == [
        {"version": "stable", "id": "v2", "links": [{"rel": "self", "type": "application/json", "href": "/v2/"}]}
    ]
    assert {"rel": "help", "type": "text/html", "href": "/api"} in body["links"]
    assert {"rel": "describedby", "type": "application/json", "href": "/swagger.json"} in body["links"]
    for path in ("/v2/", "/v2"):
        response = await client.get(path)
        assert response.status == 200, path
        assert (await response.json())["id"] == "v2"


async def test_models_list_and_metadata(serve):
    client = await serve("echobench", "irisbench", executor="thread")
    for path in ("/v2/models/", "/v2/models"):
        body = await (await client.get(path)).json()
        assert [m["id"] for m in body["models"]] == ["echobench", "irisbench"]
    iris = body["models"][1]
    assert iris["links"] == [{"rel": "self", "href": "/v2/models/irisbench"}]
    assert iris["url"] == "https://example.invalid/irisbench"
    for path in ("/v2/models/irisbench/", "/v2/models/irisbench"):
        response = await client.get(path)
        assert response.status == 200
        document = await response.json()  # the list's entry, and the Open Inference Protocol's keys
        assert {k: v for k, v in document.items() if k not in ("versions", "platform", "inputs", "outputs")} == iris
        assert document["platform"] == "deepaas_like_plugin" and document["versions"] == ["1"]


async def test_all_installed_plugins_are_served_by_default(serve, plugins):
    plugins.install("greeter", fixture="instance_plugin", attr="model")
    client = await serve(executor="thread")
    names = [m["name"] for m in (await (await client.get("/v2/models/")).json())["models"]]
    assert "greeter" in names and "echobench" in names and "irisbench" in names


@pytest.mark.parametrize("slash", ["/", ""])
async def test_predict_and_train_paths_with_and_without_slash(serve, slash):
    client = await serve("echobench", executor="thread")
    query = "?sepal_length=1&sepal_width=2&petal_length=3&petal_width=4"
    response = await client.post(f"/v2/models/echobench/predict{slash}{query}")
    assert response.status == 200
    assert (await response.json())["predictions"]["sepal_width"] == 2.0
    started = await client.post(f"/v2/models/echobench/train{slash}")
    assert started.status == 200
    uuid = (await started.json())["uuid"]
    assert (await client.get(f"/v2/models/echobench/train{slash}")).status == 200
    assert (await client.get(f"/v2/models/echobench/train/{uuid}{slash}")).status == 200


async def test_errors_are_json(serve):
    client = await serve("echobench", executor="thread")
    cases = [
        ("GET", "/nowhere", 404, "Not found"),
        ("POST", "/v2/models/unknown/predict/", 404, "Model 'unknown' not found"),
        ("GET", "/v2/models/unknown/", 404, "Served models: echobench"),
        ("PUT", "/v2/models/echobench/predict/", 405, "allowed: POST"),
        ("GET", "/v2/models/echobench/train/0000", 404, "Training '0000'"),
        ("DELETE", "/v2/models/echobench/train/0000", 404, "Training '0000'"),
    ]
    for method, path, status, text in cases:
        response = await client.request(method, path)
        assert response.status == status, (method, path)
        assert response.content_type == "application/json"
        assert text in (await response.json())["message"], (method, path)


async def test_what_no_route_takes_is_a_json_404_or_405(serve):
    """The last-resort route: any method and path no other route takes, the static files'
    misses included."""
    client = await serve("echobench", executor="thread")
    for method, path in [
        ("GET", "/nowhere/at/all"),
        ("DELETE", "/"),
        ("GET", "/v2/models/echobench/x/y/z"),
        ("GET", "/a%0Ab"),
        ("PATCH", "/api/static/index.css/"),
        ("GET", "/api/static/nothing.js"),
        ("GET", "/api/static/..%2F..%2F__init__.py"),
        ("GET", "/api/static/.hidden"),
    ]:
        response = await client.request(method, path)
        body = await response.json()
        assert response.content_type == "application/json", (method, path)
        if response.status == 405:
            assert method in ("DELETE", "PATCH") and response.headers["Allow"] == "GET,HEAD", (method, path)
            assert body["allowed"] == ["GET", "HEAD"] and f"Method {method} is not allowed" in body["message"]
        else:
            assert response.status == 404 and body["message"].startswith("Not found: "), (method, path)
    wrong = await client.request("PUT", "/v2/models/echobench/predict/")
    assert wrong.status == 405 and wrong.headers["Allow"] == "POST"
    css = await client.get("/api/static/swagger-ui.css")
    assert css.status == 200 and css.content_type == "text/css" and b".swagger-ui" in await css.read()


async def test_a_served_plugins_own_paths_answer_as_the_templates_do(serve):
    """Each ``{name}`` route is also filed under its path with each plugin's name written in
    (found at once, not among 80 patterns): the same handler, policy, 405s and /metrics label."""
    client = await serve("echobench", executor="thread")
    router = client.server.app.router
    for method, path, template in [
        ("GET", "/v2/models/echobench/", "/v2/models/{name}/"),
        ("POST", "/v2/models/echobench/predict", "/v2/models/{name}/predict"),
        ("POST", "/v2/models/echobench/infer", "/v2/models/{name}/infer"),
    ]:
        match = await router.resolve(make_mocked_request(method, path))
        assert match.route.resource.canonical == path and match == {"name": "echobench"}, (method, path)
        # the template still takes every other name (an uploaded model, an unknown one)
        other = await router.resolve(make_mocked_request(method, path.replace("echobench", "other")))
        assert other.route.resource.canonical == template and other == {"name": "other"}
    for path in ("/v2/models/echobench/", "/v2/models/echobench", "/v2/models/echo%62ench/"):
        response = await client.get(path)
        assert response.status == 200 and (await response.json())["id"] == "echobench", path
    unknown = await client.get("/v2/models/echobenchx/")
    assert unknown.status == 404 and "echobench" in (await unknown.json())["message"]
    for path in ("/v2/models/echobench/predict/", "/v2/models/echobench/predict"):
        wrong = await client.request("GET", path)
        assert wrong.status == 405 and wrong.headers["Allow"] == "POST", path
        ok = await client.post(path + "?sepal_length=1&sepal_width=2&petal_length=3&petal_width=4")
        assert ok.status == 200 and (await ok.json())["predictions"]["sepal_width"] == 2.0, path
    assert (await client.post("/v2/models/echobench/train/")).status == 200  # two methods on one path
    assert (await client.get("/v2/models/echobench/train/")).status == 200
    text = await (await client.get("/metrics")).text()
    assert 'route="/v2/models/{name}/predict/"' in text and 'route="/v2/models/echobench' not in text


async def test_base_path_prefixes_every_route(serve):
    client = await serve("echobench", executor="thread", base_path="/deepaas")
    body = await (await client.get("/deepaas/")).json()
    assert body["versions"][0]["links"][0]["href"] == "/deepaas/v2/"
    models = await (await client.get("/deepaas/v2/models/")).json()
    assert models["models"][0]["links"][0]["href"] == "/deepaas/v2/models/echobench"
    ok = await client.post(
        "/deepaas/v2/models/echobench/predict/",
        json={"sepal_length": 1, "sepal_width": 1, "petal_length": 1, "petal_width": 1},
    )
    assert ok.status == 200
    assert (await client.get("/v2/models/")).status == 404
    spec = await (await client.get("/deepaas/swagger.json")).json()
    assert spec["servers"] == [{"url": "/deepaas"}]
    assert "/deepaas/swagger.json" in await (await client.get("/deepaas/api")).text()


async def test_disabled_endpoints(serve):
    client = await serve(
        "echobench", executor="thread", predict_endpoint=False, train_endpoint=False, doc_endpoint=False
    )
    predict = await client.post("/v2/models/echobench/predict/")
    assert predict.status == 404
    assert "--no-predict-endpoint" in (await predict.json())["message"]
    train = await client.get("/v2/models/echobench/train/")
    assert train.status == 404
    assert "--no-train-endpoint" in (await train.json())["message"]
    assert (await client.get("/api")).status == 404
    spec = await (await client.get("/swagger.json")).json()
    assert not any("predict" in p or "train" in p for p in spec["paths"])


async def test_head_answers_wherever_get_does(serve):
    client = await serve("echobench", executor="thread")
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/ui/",
        "/api",
        "/swagger.json",
        "/v2/",
        "/v2/models/",
        "/v2/models/echobench/",
        "/metrics",
        "/v2/models/echobench/predictions/",
    ):
        got = await client.get(path)
        head = await client.head(path)
        assert head.status == got.status == 200, (path, head.status, got.status)
        assert await head.read() == b"", path
        assert head.headers.get("Content-Type") == got.headers.get("Content-Type"), path
    assert (await client.head("/v2/models/nosuch/")).status == 404
    assert (await client.head("/v2/models/echobench/predict/")).status == 405  # POST only
