"""Keys and access: modes, API tokens, public models, JWTs, per-model roles, audit, and a
policy for every route of the application."""

import asyncio
import base64
import json
import re
import subprocess
import time
from pathlib import Path

import jwt
import pytest

from deepaas_like.api import create_app
from deepaas_like.api.keys import POLICIES
from deepaas_like.api.routes import ROUTES
from support.auth import ECHO, IRIS_QUERY, TOKEN_CLI, bearer, mint  # noqa: F401 (IRIS_QUERY: for the modules that import it from here)
from support.helpers import store_rows, wait_ready
from support.registry import ROW, form

pytestmark = pytest.mark.stores("sqlite", "postgresql")  # the same suite on each store

SECRET = "s" * 40


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def auth_app(aiohttp_client, make_settings, tmp_path):
    async def start(**overrides):
        secret = tmp_path / "jwt.secret"
        secret.write_text(SECRET)
        values = {
            "model_name": ("echobench", "irisbench"),
            "executor": "thread",
            "auth": True,
            "jwt_secret_file": str(secret),
            **overrides,
        }
        client = await aiohttp_client(create_app(make_settings(**values)))
        await wait_ready(client)
        return client

    return start


def user_jwt(
    user_id: str, email: str | None = None, expires_in: float | None = 600, secret: str = SECRET, **claims
) -> str:
    payload = {"userId": user_id, **({"email": email} if email else {}), **claims}
    if expires_in is not None:
        payload["exp"] = int(time.time() + expires_in)
    return jwt.encode(payload, secret, algorithm="HS256")


async def test_without_a_credential_only_open_routes_answer(auth_app):
    client = await auth_app()
    assert (await client.get("/v2/health/live")).status == 200
    assert (await client.get("/swagger.json")).status == 200
    refused = await client.post(ECHO)
    assert refused.status == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in (await refused.json())["message"]
    assert (await (await client.get("/v2/models/")).json())["models"] == []  # nothing is public
    for bad in ("Bearer", "Basic dXNlcjpwYXNz", "Bearer dlk_nope", "Bearer a.b.c"):
        response = await client.post(ECHO, headers={"Authorization": bad})
        assert response.status == 401 and "WWW-Authenticate" in response.headers, bad


@pytest.mark.slow
async def test_tokens_from_the_command_line_scopes_revocation_and_expiry(auth_app, data_dir, store):
    predict = mint(data_dir, "--name", "predictor", "--scope", "models:predict")
    reader = mint(data_dir, "--name", "reader", "--scope", "models:read", "--model", "irisbench")
    client = await auth_app()
    assert re.fullmatch(r"dlk_[0-9a-f]{12}_[\w-]{43}", predict)
    assert (await client.post(ECHO, headers=bearer(predict))).status == 200
    tampered = predict[:-1] + ("A" if predict[-1] != "A" else "B")  # its id, once accepted, and a wrong secret
    assert (await client.post(ECHO, headers=bearer(tampered))).status == 401
    assert (await client.post(ECHO, headers=bearer(predict))).status == 200
    wrong_scope = await client.post("/v2/models/echobench/train/", headers=bearer(predict))
    assert wrong_scope.status == 403 and "models:train" in (await wrong_scope.json())["message"]
    assert (await client.get("/v2/models/irisbench/", headers=bearer(reader))).status == 200
    assert (await client.get("/v2/models/echobench/", headers=bearer(reader))).status == 404  # not its model
    listed = await (await client.get("/v2/models/", headers=bearer(reader))).json()
    assert [m["name"] for m in listed["models"]] == ["irisbench"]
    stored = store_rows(data_dir, store, "SELECT hash, last_used FROM tokens")
    assert all(predict.split("_", 2)[2] not in h for h, _ in stored)  # only a keyed hash is kept
    token_id = predict.split("_")[1]
    revoke = subprocess.run(
        [TOKEN_CLI, "--data-dir", str(data_dir), "revoke", token_id], capture_output=True, text=True, timeout=60
    )
    assert revoke.returncode == 0, revoke.stderr
    deadline = time.monotonic() + 5  # the running server reads the change back within a second
    while (await client.post(ECHO, headers=bearer(predict))).status == 200:
        assert time.monotonic() < deadline, "revoked on the command line, still accepted"
        await asyncio.sleep(0.2)
    gone = await client.post(ECHO, headers=bearer(predict))
    assert gone.status == 401 and "revoked" in (await gone.json())["message"]
    short = mint(data_dir, "--name", "short", "--scope", "models:predict", "--expires", "3s")
    deadline = time.monotonic() + 10
    while (await client.post(ECHO, headers=bearer(short))).status != 200:  # created while the server runs
        assert time.monotonic() < deadline, "a token created on the command line is never accepted"
        await asyncio.sleep(0.2)
    while (await client.post(ECHO, headers=bearer(short))).status == 200:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert "expired" in (await (await client.post(ECHO, headers=bearer(short))).json())["message"]


async def test_admins_manage_tokens_over_http_and_revocation_is_immediate(auth_app, data_dir):
    admin = mint(data_dir, "--name", "root", "--scope", "admin")
    client = await auth_app()
    created = await client.post(
        "/v2/tokens", json={"name": "svc", "scopes": ["models:predict"], "expires": "30d"}, headers=bearer(admin)
    )
    body = await created.json()
    assert created.status == 201 and body["token"].startswith("dlk_") and body["expires_at"]
    token = body["token"]
    assert (await client.post(ECHO, headers=bearer(token))).status == 200
    listed = await (await client.get("/v2/tokens", headers=bearer(admin))).json()
    mine = next(t for t in listed["tokens"] if t["id"] == body["id"])
    assert "token" not in mine and "hash" not in mine and mine["last_used_at"] is not None
    assert (await client.get("/v2/tokens", headers=bearer(token))).status == 403
    assert (await client.delete(f"/v2/tokens/{body['id']}", headers=bearer(admin))).status == 200
    assert (await client.post(ECHO, headers=bearer(token))).status == 401  # the very next request
    bad = await client.post("/v2/tokens", json={"name": "x", "scopes": ["models:everything"]}, headers=bearer(admin))
    assert bad.status == 422 and "models:everything" in (await bad.json())["message"]
    audit = await (await client.get("/v2/audit", headers=bearer(admin))).json()
    actions = [entry["action"] for entry in audit["entries"]]
    assert actions[:2] == ["token.revoke", "token.create"] and "token.create" in actions[2:]


async def test_public_models_answer_metadata_and_predict_without_a_key(auth_app, data_dir, iris_models):
    admin = mint(data_dir, "--name", "root", "--scope", "admin")
    client = await auth_app(public_models=("irisbench",))
    assert (await client.get("/v2/models/irisbench/")).status == 200
    assert (await client.post(f"/v2/models/irisbench/predict/?{IRIS_QUERY}")).status == 200
    assert (await client.post("/v2/models/irisbench/train/")).status == 401
    assert (await client.post(ECHO)).status == 401
    upload = await client.put(
        "/v2/models/iris", data=form(iris_models["joblib"], is_public="true"), headers=bearer(admin)
    )
    assert upload.status == 201
    assert (await client.post("/v2/models/iris/predict/", json=ROW)).status == 200
    assert (await client.get("/v2/models/iris/")).status == 200
    assert (await client.get("/v2/models/iris/versions/")).status == 401  # everything else needs a key
    listed = await (await client.get("/v2/models/")).json()
    assert sorted(m["name"] for m in listed["models"]) == ["iris", "irisbench"]
    # the OpenAPI document is open to all: it shows a public uploaded model's own paths, not a private one's
    private = await client.put("/v2/models/hidden", data=form(iris_models["joblib"]), headers=bearer(admin))
    assert private.status == 201
    paths = (await (await client.get("/swagger.json")).json())["paths"]
    assert "/v2/models/iris/predict/" in paths and not [p for p in paths if p.startswith("/v2/models/hidden/")]
    opened = await client.patch("/v2/models/hidden", json={"is_public": True}, headers=bearer(admin))
    assert opened.status == 200
    assert "/v2/models/hidden/predict/" in (await (await client.get("/swagger.json")).json())["paths"]


async def test_jwt_users_and_their_edge_cases(auth_app, tmp_path):
    client = await auth_app()
    good = user_jwt("42", "ada@example.org")
    assert (await client.post(ECHO, headers=bearer(good))).status == 200
    cases = {
        "expired": user_jwt("42", expires_in=-120),
        "wrong secret": user_jwt("42", secret="t" * 40),
        "no exp": user_jwt("42", expires_in=None),
        "alg none": jwt.encode({"userId": "42", "exp": int(time.time()) + 600}, None, algorithm="none"),
        "no user": jwt.encode({"exp": int(time.time()) + 600}, SECRET, algorithm="HS256"),
    }
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "userId": "1"}).encode()).rstrip(b"=").decode()
    cases["tampered payload"] = f"{header}.{forged}.{signature}"
    rs_header = base64.urlsafe_b64encode(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    cases["RS256 header"] = f"{rs_header}.{payload}.{signature}"
    for what, token in cases.items():
        response = await client.post(ECHO, headers=bearer(token))
        assert response.status == 401, what
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), what
    assert "expired" in (await (await client.post(ECHO, headers=bearer(cases["expired"]))).json())["message"]
    lenient = await auth_app(jwt_allow_no_exp=True, data_dir=str(tmp_path / "other"))
    assert (await lenient.post(ECHO, headers=bearer(cases["no exp"]))).status == 200
    assert (await lenient.get("/v2/tokens", headers=bearer(good))).status == 403  # a JWT user is no admin


@pytest.mark.slow
async def test_owners_share_uploaded_models_with_roles(auth_app, data_dir, iris_models):
    admin = mint(data_dir, "--name", "root", "--scope", "admin")
    client = await auth_app()
    ada, bob, cyd = user_jwt("1", "ada@example.org"), user_jwt("2", "bob@example.org"), user_jwt("3", "cyd@x.org")
    for token in (bob, cyd):  # users are known once seen
        await client.get("/v2/models/", headers=bearer(token))
    assert (await client.put("/v2/models/iris", data=form(iris_models["skops"]), headers=bearer(ada))).status == 201
    assert (await client.post("/v2/models/iris/predict/", json=ROW, headers=bearer(ada))).status == 200
    hidden = await client.post("/v2/models/iris/predict/", json=ROW, headers=bearer(bob))
    assert hidden.status == 404 and (await client.get("/v2/models/iris/", headers=bearer(bob))).status == 404
    # an unknown model's 404 names the served models: only those the caller may know of
    unknown = {
        who: await (await client.get("/v2/models/nosuch/", headers=bearer(token))).json()
        for who, token in (("ada", ada), ("bob", bob))
    }
    named = {who: body["message"].rsplit(": ", 1)[-1].split(", ") for who, body in unknown.items()}
    assert "iris" in unknown["ada"]["models"] and "iris" in named["ada"]
    assert "iris" not in unknown["bob"]["models"] and "iris" not in named["bob"] and "irisbench" in named["bob"]
    access = await (await client.get("/v2/models/iris/access-control", headers=bearer(ada))).json()
    assert access["data"] == [{"userId": "1", "username": "ada@example.org", "role": "OWNER", "canShare": True}]
    share = await client.patch(
        "/v2/models/iris/access-control",
        headers=bearer(ada),
        json={"data": [{"username": "bob@example.org", "role": "CONSUMER"}]},
    )
    assert share.status == 204
    assert (await client.post("/v2/models/iris/predict/", json=ROW, headers=bearer(bob))).status == 200
    new_version = await client.put("/v2/models/iris", data=form(iris_models["skops"]), headers=bearer(bob))
    assert new_version.status == 403 and "EDITOR" in (await new_version.json())["message"]
    cases = [
        ({"data": [{"userId": "2", "username": "bob@example.org", "role": "EDITOR"}]}, 400),
        ({"data": [{"userId": "999", "role": "EDITOR"}]}, 422),
        ({"data": [{"userId": "1", "role": None}]}, 409),  # it would leave no owner
        ({"data": [{"userId": "2", "role": "EDITOR"}] * 101}, 422),
        ({"data": [{"userId": "2", "role": "KING"}]}, 422),
        ({"data": [{"userId": "2"}]}, 422),  # no role: refused, not read as a removal
        ({"data": [{"userId": 2, "role": "EDITOR"}]}, 422),  # ids are strings
    ]
    for body, status in cases:
        response = await client.patch("/v2/models/iris/access-control", json=body, headers=bearer(ada))
        assert response.status == status, (body, await response.text())
    assert (
        await client.patch(
            "/v2/models/iris/access-control", headers=bearer(bob), json={"data": [{"userId": "3", "role": "CONSUMER"}]}
        )
    ).status == 403
    await client.patch(
        "/v2/models/iris/access-control",
        headers=bearer(ada),
        json={"data": [{"userId": "2", "role": "EDITOR", "canShare": True}]},
    )
    assert (await client.put("/v2/models/iris", data=form(iris_models["skops"]), headers=bearer(bob))).status == 200
    assert (
        await client.patch(
            "/v2/models/iris/access-control", headers=bearer(bob), json={"data": [{"userId": "3", "role": "OBSERVER"}]}
        )
    ).status == 204
    assert (await client.get("/v2/models/iris/", headers=bearer(cyd))).status == 200
    assert (await client.post("/v2/models/iris/predict/", json=ROW, headers=bearer(cyd))).status == 403
    assert (await client.delete("/v2/models/iris", headers=bearer(bob))).status == 403  # only the owner
    job = await (await client.post("/v2/models/iris/predictions/", json=ROW, headers=bearer(bob))).json()
    seen = {
        who: (await client.get(f"/v2/models/iris/predictions/{job['id']}", headers=bearer(token))).status
        for who, token in (("bob", bob), ("ada (owner)", ada), ("admin", admin))
    }
    assert seen == {"bob": 200, "ada (owner)": 200, "admin": 200}
    cyd_view = await client.get("/v2/models/iris/predictions/", headers=bearer(cyd))
    assert cyd_view.status == 200 and await cyd_view.json() == []  # others' jobs are not shown
    await client.patch(
        "/v2/models/iris/access-control", headers=bearer(ada), json={"data": [{"userId": "3", "role": "CONSUMER"}]}
    )
    assert (await client.get(f"/v2/models/iris/predictions/{job['id']}", headers=bearer(cyd))).status == 404
    assert await (await client.get("/v2/models/iris/predictions/", headers=bearer(cyd))).json() == []
    audit = await (await client.get("/v2/audit?limit=50", headers=bearer(admin))).json()
    actions = {(e["action"], e["actor"]) for e in audit["entries"]}
    assert {("model.upload", "1"), ("access.change", "1"), ("model.upload", "2"), ("access.change", "2")} <= actions


async def test_without_auth_off_loopback_writes_and_admin_are_refused(aiohttp_client, make_settings, iris_models):
    client = await aiohttp_client(
        create_app(make_settings(model_name=("echobench",), executor="thread", listen_ip="0.0.0.0"))
    )
    await wait_ready(client)
    assert (await client.post(ECHO)).status == 200
    upload = await client.put("/v2/models/iris", data=form(iris_models["joblib"]))
    message = (await upload.json())["message"]
    assert upload.status == 403 and "--auth" in message and "--enable-uploads" in message
    admin = await client.get("/v2/tokens")
    assert admin.status == 403 and "--auth" in (await admin.json())["message"]


async def test_the_document_declares_the_bearer_scheme_and_each_requirement(auth_app):
    client = await auth_app(public_models=("irisbench",))
    spec = await (await client.get("/swagger.json")).json()
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    paths = spec["paths"]
    assert paths["/v2/health/live"]["get"]["security"] == []
    assert paths["/v2/models/echobench/predict/"]["post"]["security"] == [{"bearerAuth": []}, {}]
    assert paths["/v2/models/echobench/train/"]["post"]["security"] == [{"bearerAuth": []}]
    assert paths["/v2/models/echobench/train/"]["post"]["x-required-scope"] == "models:train"
    assert "401" in paths["/v2/models/echobench/train/"]["post"]["responses"]


# --- every route has a policy, and each is exercised ----------------------------------------------


def test_every_route_of_the_application_has_a_policy(make_settings):
    app = create_app(make_settings(model_name=("echobench",), auth=True))
    policies = app[POLICIES]
    missing = [f"{route.method} {route.resource.canonical}" for route in app.router.routes() if route not in policies]
    assert not missing, f"routes without an access policy: {missing}"


def _concrete(path: str, ids: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)


async def test_each_route_with_no_credential_a_wrong_scope_and_a_right_one(auth_app, data_dir, iris_models):
    """For every route of the table: nothing → 401 (open routes: not 401); a token without the
    scope → 403; the right scope → neither 401 nor 403. Every token acts for the user who owns
    the uploaded model, so that scopes alone decide."""
    admin = mint(data_dir, "--name", "root", "--scope", "admin", "--user", "root")
    client = await auth_app()
    await client.put("/v2/models/iris", data=form(iris_models["joblib"]), headers=bearer(admin))
    job = await (await client.post("/v2/models/iris/predictions/", json=ROW, headers=bearer(admin))).json()
    training = await (await client.post("/v2/models/echobench/train/", headers=bearer(admin))).json()
    token = await (
        await client.post("/v2/tokens", json={"name": "victim", "scopes": ["models:read"]}, headers=bearer(admin))
    ).json()
    ids = {"version": "1", "id": token["id"]}
    by_scope = {
        scope: (
            await (
                await client.post(
                    "/v2/tokens", json={"name": scope, "scopes": [scope], "user": "root"}, headers=bearer(admin)
                )
            ).json()
        )["token"]
        for scope in ("models:read", "models:predict", "models:train", "models:write", "admin")
    }
    checked = 0
    for route in ROUTES:
        model = "echobench" if "train" in route.path else "iris"
        uuid = training["uuid"] if "train" in route.path else job["id"]
        path = _concrete(route.path, {**ids, "name": model, "uuid": uuid})
        if route.method == "PUT" and "{name}" in route.path and "config" not in route.path:
            path = path.replace("/iris", "/iris-other")
        anonymous = await client.request(route.method, path)
        if route.policy.open:
            assert anonymous.status != 401, (route.method, route.path)
            continue
        assert anonymous.status == 401, (route.method, route.path, anonymous.status)
        scope = str(route.policy.scope)
        wrong = by_scope["models:read" if scope != "models:read" else "models:predict"]
        refused = await client.request(route.method, path, headers=bearer(wrong))
        assert refused.status == 403, (route.method, route.path, refused.status, await refused.text())
        allowed = await client.request(route.method, path, headers=bearer(by_scope[scope]))
        assert allowed.status not in (401, 403), (route.method, route.path, allowed.status, await allowed.text())
        checked += 1
    assert checked >= 30


# --- what the security review found (issue 21) ----------------------------------------------


@pytest.mark.slow
async def test_formats_that_run_code_need_the_write_code_scope(auth_app, data_dir, iris_models):
    from deepaas_like.containment import landlock

    admin = mint(data_dir, "--name", "root", "--scope", "admin")
    writer = mint(data_dir, "--name", "w", "--scope", "models:write", "--scope", "models:read")
    coder = mint(data_dir, "--name", "c", "--scope", "models:write-code", "--scope", "models:read")
    client = await auth_app()
    refused = await client.put("/v2/models/iris", data=form(iris_models["joblib"]), headers=bearer(writer))
    body = await refused.json()
    assert refused.status == 403, body
    assert "models:write-code" in body["message"] and "skops" in body["message"] and "ONNX" in body["message"]
    assert (await client.get("/v2/models/iris/", headers=bearer(admin))).status == 404  # nothing kept
    assert (await client.put("/v2/models/iris", data=form(iris_models["skops"]), headers=bearer(writer))).status == 201
    jwt_user = user_jwt("7", "jo@example.org")  # --jwt-scopes: never models:write-code by default
    assert (await client.put("/v2/models/jo", data=form(iris_models["pickle"]), headers=bearer(jwt_user))).status == 403
    coded = await client.put("/v2/models/forest", data=form(iris_models["pickle"]), headers=bearer(coder))
    # models:write-code is models:write and more; a kernel without Landlock serves no code formats at all
    assert coded.status == (201 if landlock.abi() >= 4 else 403), await coded.text()
    granted = await client.post(
        "/v2/tokens",
        headers=bearer(admin),
        json={"name": "up", "scopes": ["models:write-code"], "user": "7", "expires": "1d"},
    )
    assert granted.status == 201, await granted.text()
    audit = await (await client.get("/v2/audit?limit=50", headers=bearer(admin))).json()
    created = next(e for e in audit["entries"] if e["action"] == "token.create" and e["detail"]["name"] == "up")
    assert created["detail"]["scopes"] == ["models:write-code"] and created["detail"]["user"] == "7"
    assert created["detail"]["expires"] > time.time() and "models" in created["detail"]
    upload = next(e for e in audit["entries"] if e["action"] == "model.upload" and e["target"] == "iris")
    assert upload["detail"]["filetype"] == "skops"


@pytest.mark.slow
async def test_a_sharer_grants_at_most_its_own_role_and_only_owners_change_visibility(auth_app, data_dir, iris_models):
    admin = mint(data_dir, "--name", "root", "--scope", "admin")
    client = await auth_app()
    ada, bob, cyd, dan = (
        user_jwt(str(n), f"{who}@example.org") for n, who in ((1, "ada"), (2, "bob"), (3, "cyd"), (4, "dan"))
    )
    for token in (bob, cyd, dan):
        await client.get("/v2/models/", headers=bearer(token))
    assert (await client.put("/v2/models/iris", data=form(iris_models["skops"]), headers=bearer(ada))).status == 201
    assert (
        await client.patch(
            "/v2/models/iris/access-control",
            headers=bearer(ada),
            json={"data": [{"userId": "2", "role": "CONSUMER", "canShare": True}, {"userId": "4", "role": "EDITOR"}]},
        )
    ).status == 204

    async def share(token, *items):
        return await client.patch("/v2/models/iris/access-control", headers=bearer(token), json={"data": list(items)})

    for items in (
        [{"userId": "2", "role": "OWNER"}],  # itself as owner
        [{"userId": "1", "role": None}],  # the owner out
        [{"userId": "3", "role": "EDITOR"}],  # more than it has
        [{"userId": "4", "role": "CONSUMER"}],  # an EDITOR demoted
        [{"userId": "4", "role": None}],
    ):  # an EDITOR removed
        response = await share(bob, *items)
        assert response.status == 403, (items, await response.text())
    assert (await share(bob, {"userId": "3", "role": "CONSUMER"})).status == 204
    access = {
        i["userId"]: i["role"]
        for i in (await (await client.get("/v2/models/iris/access-control", headers=bearer(ada))).json())["data"]
    }
    assert access == {"1": "OWNER", "2": "CONSUMER", "3": "CONSUMER", "4": "EDITOR"}
    # Visibility: its owner's alone, on every route.
    assert (await client.patch("/v2/models/iris", json={"is_public": True}, headers=bearer(dan))).status == 403
    published = await client.put(
        "/v2/models/iris", data=form(iris_models["skops"], is_public="true"), headers=bearer(dan)
    )
    assert published.status == 403, await published.text()
    neuro = await client.put(
        "/ml-models/iris?is_public=true&filetype=skops", headers=bearer(dan), data=iris_models["skops"].read_bytes()
    )
    assert neuro.status == 403
    assert (await client.get("/v2/models/iris/")).status == 401  # still private
    assert (await client.put("/v2/models/iris", data=form(iris_models["skops"]), headers=bearer(dan))).status == 200
    opened = await client.put("/v2/models/iris", data=form(iris_models["skops"], is_public="true"), headers=bearer(ada))
    assert opened.status == 200 and (await client.get("/v2/models/iris/")).status == 200
    audit = await (await client.get("/v2/audit?limit=100", headers=bearer(admin))).json()
    changes = [(e["actor"], e["detail"]) for e in audit["entries"] if e["action"] == "model.visibility"]
    assert ("1", {"is_public": True}) in changes and not [c for c in changes if c[0] == "4"]


@pytest.mark.slow
async def test_listings_and_answers_tell_nothing_of_private_models(auth_app, data_dir, iris_models):
    admin = mint(data_dir, "--name", "root", "--scope", "admin")
    predictor = mint(data_dir, "--name", "p", "--scope", "models:predict")
    reader = mint(data_dir, "--name", "r", "--scope", "models:read")
    client = await auth_app()
    await client.put("/v2/models/secret", data=form(iris_models["skops"]), headers=bearer(admin))
    await client.put("/v2/models/open", data=form(iris_models["skops"], is_public="true"), headers=bearer(admin))
    for query in ("", "?used=false", "?limit=100"):
        listed = await (await client.get(f"/ml-models{query}")).json()
        assert [m["model_name"] for m in listed["models"]] == ["open"], query
    await client.delete("/v2/models/secret", headers=bearer(admin))
    assert (await (await client.get("/ml-models?deleted=true")).json())["models"] == []
    assert [
        m["model_name"]
        for m in (await (await client.get("/ml-models?deleted=true", headers=bearer(admin))).json())["models"]
    ] == ["secret"]
    await client.post("/v2/models/secret/restore", headers=bearer(admin))
    # Whatever its scopes, a caller gets for a private model the answer a missing one gets.
    for method, path in (
        ("GET", "/v2/models/{}/"),
        ("GET", "/v2/models/{}/versions/"),
        ("GET", "/ml-models/{}"),
        ("POST", "/v2/models/{}/predict/"),
        ("GET", "/v2/models/{}/versions/1/download"),
    ):
        for who, token in (("predictor", predictor), ("reader", reader)):
            answers = {}
            for name in ("secret", "nosuch"):
                response = await client.request(method, path.format(name), json=ROW, headers=bearer(token))
                answers[name] = (response.status, (await response.json())["message"].replace(name, "NAME"))
            assert answers["secret"] == answers["nosuch"], (method, path, who, answers)
            assert answers["secret"][0] in (403, 404)
    # The list a 404 names is what the caller may see.
    message = (await (await client.get("/v2/models/nosuch/", headers=bearer(reader))).json())["message"]
    assert "open" in message and "secret" not in message


@pytest.mark.slow
async def test_jwt_identities_cannot_pose_as_tokens_and_claims_are_typed(auth_app, data_dir, iris_models):
    admin = mint(data_dir, "--name", "root", "--scope", "admin")
    owner = mint(data_dir, "--name", "t", "--scope", "models:write", "--scope", "models:read")
    client = await auth_app()
    assert (await client.put("/v2/models/tok", data=form(iris_models["skops"]), headers=bearer(owner))).status == 201
    tokens = await (await client.get("/v2/tokens", headers=bearer(admin))).json()
    token_id = next(t["id"] for t in tokens["tokens"] if t["name"] == "t")
    posing = user_jwt(f"token:{token_id}")
    for _ in range(2):
        assert (await client.get("/v2/models/tok/versions/1/download", headers=bearer(posing))).status == 401
    assert (await client.delete("/v2/models/tok?purge=true", headers=bearer(posing))).status == 401
    now = int(time.time())
    for claims in (
        {"userId": "5", "exp": str(now + 600)},
        {"userId": "5", "exp": True},
        {"userId": ["5"], "exp": now + 600},
        {"userId": "5", "exp": now + 600, "email": 5},
        {"userId": "5", "exp": now + 600, "nbf": "0"},
    ):
        token = jwt.encode(claims, SECRET, algorithm="HS256")
        for _ in range(2):  # the second use reads the cache: still 401, never 500
            response = await client.post(ECHO, headers=bearer(token))
            assert response.status == 401, (claims, await response.text())
    assert (await client.post("/v2/users", json={"userId": "token:abc"}, headers=bearer(admin))).status == 422
    result = subprocess.run(
        [
            TOKEN_CLI,
            "--data-dir",
            str(data_dir),
            "create",
            "--name",
            "x",
            "--scope",
            "models:read",
            "--user",
            "token:abc",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "token:" in result.stderr
    # a JWT that renames its user is audited, as is the user's first appearance
    await client.post(ECHO, headers=bearer(user_jwt("9", "old@example.org")))
    await client.post(ECHO, headers=bearer(user_jwt("9", "new@example.org")))
    await asyncio.sleep(0.2)
    audit = await (await client.get("/v2/audit?limit=100", headers=bearer(admin))).json()
    actions = [(e["action"], e["target"]) for e in audit["entries"]]
    assert ("user.create", "9") in actions and ("user.rename", "9") in actions


@pytest.mark.slow
async def test_an_upload_that_finds_someone_elses_model_when_it_lands_adds_no_version(auth_app, data_dir, iris_models):
    """Authorized while the name was free, then another user created the model before the
    file had arrived: the upload must not add a version to the other user's model."""
    admin = mint(data_dir, "--name", "root", "--scope", "admin")
    client = await auth_app()
    ada, bob = user_jwt("1", "ada@example.org"), user_jwt("2", "bob@example.org")
    content = iris_models["skops"].read_bytes()
    boundary = "race0boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="iris.skops"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    bob_created = asyncio.Event()

    async def slow_body():
        yield head + content[:100]
        await bob_created.wait()  # bob creates the model while ada's file is still arriving
        yield content[100:] + tail

    ada_upload = asyncio.create_task(
        client.put(
            "/v2/models/race",
            data=slow_body(),
            headers={**bearer(ada), "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    )
    await asyncio.sleep(0.3)
    assert (await client.put("/v2/models/race", data=form(iris_models["skops"]), headers=bearer(bob))).status == 201
    bob_created.set()
    response = await ada_upload
    assert response.status == 404, await response.text()
    versions = await (await client.get("/v2/models/race/versions/", headers=bearer(admin))).json()
    assert len(versions["versions"]) == 1
    access = await (await client.get("/v2/models/race/access-control", headers=bearer(admin))).json()
    assert [(i["userId"], i["role"]) for i in access["data"]] == [("2", "OWNER")]


async def test_a_reload_of_the_store_loses_no_token_created_or_revoked_meanwhile(auth_app, data_dir):
    """The store is read back (another process changed it) while this server creates and
    revokes tokens: the reload neither forgets a new token nor brings a revoked one back."""
    from deepaas_like.api.keys import GATE

    admin = mint(data_dir, "--name", "root", "--scope", "admin")
    client = await auth_app()
    gate = client.app[GATE]

    async def while_reloading(calls) -> list:
        """``calls`` at once while the store is read back again and again, until they end."""
        work = asyncio.gather(*calls)
        while not work.done():
            await gate.reload()
        return await work

    async def create_and_use() -> tuple[dict, int]:
        token = await (
            await client.post("/v2/tokens", json={"name": "new", "scopes": ["models:read"]}, headers=bearer(admin))
        ).json()
        return token, (await client.get("/v2/models/", headers=bearer(token["token"]))).status

    created = await while_reloading([create_and_use() for _ in range(30)])
    assert [status for _, status in created] == [200] * 30
    revoked = await while_reloading([client.delete(f"/v2/tokens/{t['id']}", headers=bearer(admin)) for t, _ in created])
    assert [r.status for r in revoked] == [200] * 30
    for token, _ in created:  # no reload since the last revocation: what this server holds
        assert (await client.get("/v2/models/", headers=bearer(token["token"]))).status == 401, token["id"]
