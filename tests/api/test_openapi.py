"""/swagger.json is a valid OpenAPI 3 document describing every model; /api works offline."""

import re

from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from deepaas_like.api import create_app
from deepaas_like.api.auth_handlers import TOKEN_FIELDS
from deepaas_like.auth.principal import SCOPES, Role
from deepaas_like.auth.sharing import MAX_ACCESS_ITEMS
from deepaas_like.auth.tokens import parse_duration
from support.auth import ECHO, bearer, mint
from support.helpers import wait_ready
from support.registry import form


async def spec_of(client):
    response = await client.get("/swagger.json")
    assert response.status == 200
    return await response.json()


async def test_spec_is_valid_openapi_3_for_every_kind_of_plugin(serve, plugins):
    plugins.install("legacy")
    plugins.install("file-io", fixture="file_io")
    plugins.install("answer", fixture="schema_mismatch")
    plugins.install("counter", fixture="counter_class", attr="Counter")
    client = await serve("legacy", "file-io", "answer", "counter", "irisbench", "echobench", "demo", executor="thread")
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
        "multipart/form-data",
        "application/x-www-form-urlencoded",
        "application/json",
    }
    iris_props = iris["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert iris_props["top_k"] == {
        "type": "integer",
        "default": 3,
        "minimum": 1,
        "maximum": 3,
        "description": "How many classes to return, best first",
    }
    assert iris["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Prediction"
    }
    train = spec["paths"]["/v2/models/irisbench/train/"]["post"]
    assert (
        train["requestBody"]["content"]["application/json"]["schema"]["properties"]["n_estimators"]["maximum"] == 1000
    )
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
    assert (
        predictions["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["top_k"]["maximum"]
        == 3
    )
    assert {p["name"] for p in predictions["get"]["parameters"]} == {"status", "limit", "offset"}
    assert set(paths["/v2/models/irisbench/predictions/{uuid}"]) == {"parameters", "get", "delete"}
    assert "image/png" in paths["/v2/models/demo/predictions/{uuid}/result"]["get"]["responses"]["200"]["content"]
    assert "text/plain" in paths["/v2/models/irisbench/train/{uuid}/log"]["get"]["responses"]["200"]["content"]
    schemas = spec["components"]["schemas"]
    assert "interrupted" in schemas["TrainingJob"]["properties"]["status"]["enum"]
    assert {"progress", "queue_position", "callback"} <= set(schemas["TrainingJob"]["properties"])
    assert {"result", "result_type", "error_status"} <= set(schemas["PredictionJob"]["properties"])
    assert "/metrics" in paths and "/v2/models/irisbench/ready" in paths


# --- keys and access ---------------------------------------------------------------------------

KEYS_AND_ACCESS = {
    ("/v2/tokens", "post"): "create_token",
    ("/v2/tokens", "get"): "list_tokens",
    ("/v2/tokens/{id}", "delete"): "revoke_token",
    ("/v2/users", "get"): "list_users",
    ("/v2/users", "post"): "create_user",
    ("/v2/audit", "get"): "audit_log",
    ("/v2/models/{name}/access-control", "get"): "get_access_control",
    ("/v2/models/{name}/access-control", "patch"): "update_access_control",
}


def schema_of(spec, path, method, status=None):
    """The documented JSON schema of an operation's request body (or of its answer with ``status``),
    as a validator that resolves the document's ``#/components/...``."""
    operation = spec["paths"][path][method]
    where = operation["responses"][status] if status else operation["requestBody"]
    return OAS30Validator({**where["content"]["application/json"]["schema"], "components": spec["components"]})


async def test_keys_and_access_operations_in_the_spec(serve):
    client = await serve("echobench", executor="thread")
    spec = await spec_of(client)
    validate(spec)
    for (path, method), operation_id in KEYS_AND_ACCESS.items():
        operation = spec["paths"][path][method]
        assert operation["operationId"] == operation_id
        assert "security" not in operation  # authentication is off
        assert all("Error" in str(answer) for code, answer in operation["responses"].items() if code >= "400")
    schemas = spec["components"]["schemas"]
    token_request = schemas["TokenRequest"]
    assert token_request["required"] == ["name", "scopes"] and token_request["additionalProperties"] is False
    assert set(token_request["properties"]) == set(TOKEN_FIELDS)
    assert token_request["properties"]["scopes"]["items"]["enum"] == [str(s) for s in SCOPES]
    assert spec["paths"]["/v2/tokens"]["post"]["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/IssuedToken"
    }
    assert schemas["UserRequest"]["required"] == ["userId"] and schemas["UserRequest"]["additionalProperties"] is False
    assert {"200", "404", "409"} <= set(spec["paths"]["/v2/tokens/{id}"]["delete"]["responses"])
    audit = spec["paths"]["/v2/audit"]["get"]
    assert {p["name"] for p in audit["parameters"]} == {"limit", "offset"}
    assert "X-Total-Count" in audit["responses"]["200"]["headers"]
    access = spec["paths"]["/v2/models/{name}/access-control"]
    assert access["parameters"][0]["name"] == "name"  # once for every uploaded model, as the registry's routes
    assert "/v2/models/echobench/access-control" not in spec["paths"]
    assert {"204", "400", "409", "422"} <= set(access["patch"]["responses"])
    data = access["patch"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["data"]
    assert data["maxItems"] == MAX_ACCESS_ITEMS
    assert schemas["AccessChange"]["properties"]["role"]["enum"] == [*(str(r) for r in Role), None]
    change = schema_of(spec, "/v2/models/{name}/access-control", "patch")
    assert change.is_valid({"data": [{"username": "bob", "role": None}]})
    assert not change.is_valid({"data": [{"userId": "2", "username": "bob", "role": "EDITOR"}]})  # 400
    assert not change.is_valid({"data": [{"userId": "2"}]})  # no role: refused, not read as a removal
    expires = re.compile(token_request["properties"]["expires"]["anyOf"][0]["pattern"])
    for text in ("30d", "12h", "90m", "2w", "45s", "3600", "0", "9999w", "99999w", "1e9", "١٢", " 30d", "30 d"):
        try:
            parse_duration(text)
            parsed = True
        except ValueError:
            parsed = False
        assert parsed == bool(expires.search(text)), text  # the document's pattern is the parser's


async def test_a_token_created_through_the_api_matches_its_documented_schemas(aiohttp_client, make_settings, tmp_path):
    admin = mint(tmp_path / "data", "--name", "root", "--scope", "admin")
    client = await aiohttp_client(create_app(make_settings(model_name=("echobench",), executor="thread", auth=True)))
    await wait_ready(client)
    spec = await spec_of(client)
    validate(spec)
    for path, method in KEYS_AND_ACCESS:
        operation = spec["paths"][path][method]
        assert operation["security"] == [{"bearerAuth": []}], (path, method)
        assert "401" in operation["responses"] and "403" in operation["responses"]
    assert spec["paths"]["/v2/tokens"]["post"]["x-required-scope"] == "admin"
    assert spec["paths"]["/v2/models/{name}/access-control"]["patch"]["x-required-scope"] == "models:write"

    request = {"name": "ci", "scopes": ["models:predict"], "models": ["echobench"], "expires": "30d"}
    schema_of(spec, "/v2/tokens", "post").validate(request)
    created = await client.post("/v2/tokens", json=request, headers=bearer(admin))
    assert created.status == 201
    issued = await created.json()
    schema_of(spec, "/v2/tokens", "post", "201").validate(issued)
    assert issued["models"] == ["echobench"] and issued["expires_at"] is not None
    assert (await client.post(ECHO, headers=bearer(issued["token"]))).status == 200
    listed = await client.get("/v2/tokens", headers=bearer(admin))
    schema_of(spec, "/v2/tokens", "get", "200").validate(await listed.json())

    refused = {  # invalid by the document, and refused by the server naming the field
        "unknown field": ({**request, "ttl": 5}, "ttl"),
        "no scope": ({**request, "scopes": []}, "scopes"),
        "unknown scope": ({**request, "scopes": ["models:everything"]}, "scopes"),
        "no model (not every model)": ({**request, "models": []}, "models"),
        "empty user": ({**request, "user": ""}, "user"),
        "beyond a date": ({**request, "expires": "99999999999w"}, "expires"),
        "not ASCII digits": ({**request, "expires": "١٢"}, "expires"),
        "blank name": ({**request, "name": "  "}, "name"),
    }
    for what, (body, field) in refused.items():
        assert not schema_of(spec, "/v2/tokens", "post").is_valid(body), what
        answer = await client.post("/v2/tokens", json=body, headers=bearer(admin))
        assert answer.status == 422 and field in (await answer.json())["errors"], what
    malformed = await client.post(
        "/v2/tokens", data=b"{", headers={**bearer(admin), "Content-Type": "application/json; charset=nope"}
    )
    assert malformed.status == 400 and "message" in await malformed.json()
    at_once = await (await client.post("/v2/tokens", json={**request, "expires": 0}, headers=bearer(admin))).json()
    assert at_once["expires_at"] is not None  # 0 seconds: expired at once, not "never"
    assert (await client.post(ECHO, headers=bearer(at_once["token"]))).status == 401

    user = {"userId": "7", "username": "grace", "email": None}
    schema_of(spec, "/v2/users", "post").validate(user)
    added = await client.post("/v2/users", json=user, headers=bearer(admin))
    assert added.status == 201
    schema_of(spec, "/v2/users", "post", "201").validate(await added.json())
    revoked = await client.delete(f"/v2/tokens/{issued['id']}", headers=bearer(admin))
    schema_of(spec, "/v2/tokens/{id}", "delete", "200").validate(await revoked.json())
    assert (await client.post(ECHO, headers=bearer(issued["token"]))).status == 401
    audit = await client.get("/v2/audit?offset=0", headers=bearer(admin))
    schema_of(spec, "/v2/audit", "get", "200").validate(await audit.json())
    assert int(audit.headers["X-Total-Count"]) >= 3
    past_the_end = await client.get(f"/v2/audit?offset={2**70}", headers=bearer(admin))
    assert past_the_end.status == 200 and (await past_the_end.json())["entries"] == []


METHODS = ("get", "put", "post", "patch", "delete")


async def test_every_documented_path_allows_exactly_its_documented_methods(serve, iris_models):
    """OPTIONS (and any undeclared method) answers 405 with an Allow that lists what the
    document declares for the path (and HEAD with GET), nothing more."""
    client = await serve("irisbench", "demo", executor="thread")
    assert (await client.put("/v2/models/iris", data=form(iris_models["joblib"]))).status == 201
    spec = await spec_of(client)
    assert "/v2/models/iris/predict/" in spec["paths"]
    disagree = {}
    for path, item in spec["paths"].items():
        declared = {m.upper() for m in item if m in METHODS}
        declared |= {"HEAD"} if "GET" in declared else set()
        concrete = re.sub(r"\{[^}]+\}", "1", path.replace("{name}", "iris"))
        for method in ("OPTIONS", "TRACE"):
            response = await client.request(method, concrete)
            allowed = {m.strip() for m in response.headers.get("Allow", "").split(",") if m.strip()}
            if response.status != 405 or allowed != declared:
                disagree[f"{method} {path}"] = (response.status, sorted(allowed), sorted(declared))
    assert not disagree, disagree


async def test_an_uploaded_models_own_operations_declare_the_404_of_an_archived_model(serve, iris_models):
    client = await serve("echobench", executor="thread")
    assert (await client.put("/v2/models/iris", data=form(iris_models["joblib"]))).status == 201
    spec = await spec_of(client)  # read while the model is served
    assert (await client.delete("/v2/models/iris")).status == 200
    row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    for path, body in (
        ("/v2/models/iris/predict/", row),
        ("/v2/models/iris/predictions/", row),
        ("/v2/models/iris/tests/", {"rows": [row]}),
        ("/v2/models/iris/feature-impact/", {"rows": [row]}),
        ("/v2/models/iris/infer", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}),
    ):
        response = await client.post(path, json=body)
        assert response.status == 404, path
        assert "404" in spec["paths"][path]["post"]["responses"], path
        schema_of(spec, path, "post", "404").validate(await response.json())


async def test_tests_and_feature_impact_declare_their_rows_as_the_server_takes_them(serve, iris_models):
    client = await serve("irisbench", executor="thread")
    assert (await client.put("/v2/models/iris", data=form(iris_models["joblib"]))).status == 201
    spec = await spec_of(client)
    for segment in ("tests", "feature-impact"):
        path = f"/v2/models/irisbench/{segment}/"
        body = spec["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        json_schema = body["content"]["application/json"]["schema"]
        assert json_schema["required"] == ["rows"]  # a plugin has no reference dataset
        assert body["content"]["multipart/form-data"]["schema"]["required"] == ["data"]
        row = json_schema["properties"]["rows"]["items"]
        assert sorted(row["required"]) == ["petal_length", "petal_width", "sepal_length", "sepal_width"]
        validator = schema_of(spec, path, "post")
        without_rows = await client.post(path, json={"seed": 1})
        assert without_rows.status == 422 and not validator.is_valid({"seed": 1})
        short = {"rows": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4}]}
        assert not validator.is_valid(short)
        assert (await client.post(path, json=short)).status == 422
        whole = {"rows": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}
        assert validator.is_valid(whole) and (await client.post(path, json=whole)).status == 202
    # an uploaded model: rows are required until it keeps a reference dataset
    assert spec["paths"]["/v2/models/iris/tests/"]["post"]["requestBody"]["required"] is True
    csv = "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n6.3,2.9,5.6,1.8\n"
    assert (
        await client.put("/v2/models/iris/versions/1/dataset", data=csv.encode(), headers={"Content-Type": "text/csv"})
    ).status == 200
    spec = await spec_of(client)
    for segment in ("tests", "feature-impact"):
        body = spec["paths"][f"/v2/models/iris/{segment}/"]["post"]["requestBody"]
        assert body["required"] is False and "required" not in body["content"]["application/json"]["schema"]
        assert (await client.post(f"/v2/models/iris/{segment}/", json={"seed": 1})).status == 202
    # the dataset's range is a hint in the arguments (the what-if's default range)
    petal = spec["paths"]["/v2/models/iris/predict/"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert {k: v for k, v in petal["schema"]["properties"]["petal_length"].items() if k.startswith("x-")} == {
        "x-observed-minimum": 1.4,
        "x-observed-maximum": 5.6,
    }


async def test_a_tensor_without_data_is_refused_by_the_document_and_the_server(serve):
    client = await serve("irisbench", executor="thread")
    spec = await spec_of(client)
    validator = schema_of(spec, "/v2/models/irisbench/infer", "post")
    request = {"inputs": [{"name": "sepal_length", "shape": [1], "datatype": "FP64", "data": None}]}
    assert not validator.is_valid(request)
    response = await client.post("/v2/models/irisbench/infer", json=request)
    assert response.status == 400 and "no data" in (await response.json())["error"]


async def test_a_json_boolean_or_number_must_be_one(serve):
    """JSON says what a value is: 0 is not false there, "5" not a number (as the document
    declares them); a form, a query string or a command line spells them as text."""
    client = await serve("demo", "irisbench", executor="thread")
    for body in ({"values": [1, 2], "normalize": 0}, {"values": [1, 2], "normalize": "true"}):
        response = await client.post("/v2/models/demo/predict/", json=body)
        assert response.status == 422, body
        assert (await response.json())["errors"]["normalize"] == ["Not a valid boolean: JSON true or false."]
    answer = await client.post("/v2/models/demo/predict/", json={"values": [1, 2], "normalize": True})
    assert answer.status == 200
    as_text = {"sepal_length": "5.1", "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    response = await client.post("/v2/models/irisbench/predict/", json=as_text)
    assert response.status == 422 and "sepal_length" in (await response.json())["errors"]
    assert (await client.post("/v2/models/irisbench/predict/", data={**as_text, "top_k": "1"})).status == 200
    assert (await client.post("/v2/models/demo/predict/?values=1&values=2&normalize=0")).status == 200
