"""A web page cannot drive the local server, and slow or heavy clients cannot stall it:
Host allow-list, other origins' state changes, JSON only as JSON, read timeouts, part
limits, private data files."""

from __future__ import annotations

import asyncio
import io
import socket
import stat
from pathlib import Path

import pytest

from deepaas_like.api import create_app
from deepaas_like.api.keys import SETTINGS
from support.helpers import wait_ready
from support.processes import Server
from support.registry import form

ECHO = "/v2/models/echobench/predict/?sepal_length=1&sepal_width=2&petal_length=3&petal_width=4"


@pytest.fixture
def app(aiohttp_client, make_settings):
    async def start(**overrides):
        settings = make_settings(model_name=("echobench",), executor="thread", **overrides)
        client = await aiohttp_client(create_app(settings))
        await wait_ready(client)
        return client

    return start


async def test_a_host_outside_the_allow_list_is_refused_on_every_route_but_health(app):
    client = await app()
    port = client.server.port
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "", "localhost.evil.example"):
        for method, path in (
            ("GET", "/v2/models/"),
            ("GET", "/"),
            ("POST", ECHO),
            ("GET", "/ui/"),
            ("PUT", "/v2/models/x"),
            ("POST", "/v2/tokens"),
        ):
            response = await client.request(method, path, headers={"Host": host})
            body = await response.json()
            assert response.status == 403, (host, path, body)
            assert "--allowed-hosts" in body["message"]
        assert (await client.get("/v2/health/live", headers={"Host": host})).status == 200
        assert (await client.get("/v2/health/ready", headers={"Host": host})).status == 200
    for host in (
        f"127.0.0.1:{port}",
        "localhost",
        f"localhost:{port}",
        f"[::1]:{port}",
        "10.1.2.3",
        "api.localhost",
        socket.gethostname(),
    ):
        assert (await client.get("/v2/models/", headers={"Host": host})).status == 200, host
    named = await app(
        allowed_hosts=("api.example.org", ".models.example.org"),
        data_dir=str(Path(client.server.app[SETTINGS].data_dir).parent / "named"),
    )
    expected = {
        "api.example.org": 200,
        "API.example.org.:80": 200,
        "eu.models.example.org": 200,
        "models.example.org": 403,
        "other.example.org": 403,
        "localhost": 200,
    }
    assert {h: (await named.get("/v2/models/", headers={"Host": h})).status for h in expected} == expected


async def test_pages_of_other_origins_cannot_change_state(app, tmp_path):
    client = await app()
    own = f"http://127.0.0.1:{client.server.port}"
    refused = await client.post(ECHO, headers={"Origin": "http://evil.example"})
    assert refused.status == 403 and "--cors-origins" in (await refused.json())["message"]
    for headers in (
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": f"http://localhost:{client.server.port + 1}"},
    ):  # same site, another origin
        assert (await client.post(ECHO, headers=headers)).status == 403, headers
    assert (await client.put("/v2/models/iris", headers={"Origin": "http://evil.example"})).status == 403
    assert (await client.post(ECHO, headers={"Origin": own, "Sec-Fetch-Site": "same-origin"})).status == 200
    assert (await client.post(ECHO)).status == 200  # curl, scripts: no Origin
    read = await client.get("/v2/models/", headers={"Origin": "http://evil.example"})
    assert read.status == 200 and "Access-Control-Allow-Origin" not in read.headers  # the browser hides it
    # A text/plain body (what a cross-site form can send) is never read as JSON.
    token = await client.post(
        "/v2/tokens", data='{"name": "x", "scopes": ["admin"]}', headers={"Content-Type": "text/plain"}
    )
    assert token.status == 415, await token.text()

    cors = await app(cors_origins=("https://app.example.org",), data_dir=str(tmp_path / "cors"))
    allowed = await cors.post(ECHO, headers={"Origin": "https://app.example.org"})
    assert allowed.status == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.org"
    preflight = await cors.options(
        ECHO,
        headers={
            "Origin": "https://app.example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status == 204 and "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    stranger = await cors.options(
        ECHO, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert stranger.status == 403 and "Access-Control-Allow-Origin" not in stranger.headers
    assert (await cors.post(ECHO, headers={"Origin": "https://evil.example"})).status == 403


async def test_a_json_body_is_read_only_with_a_json_content_type(app):
    client = await app()
    body = b'{"sepal_length": 1, "sepal_width": 2, "petal_length": 3, "petal_width": 4}'
    path = "/v2/models/echobench/predict/"
    assert (await client.post(path, data=body, headers={"Content-Type": "application/json"})).status == 200
    for headers in ({"Content-Type": "text/plain"}, {}):
        response = await client.post(path, data=body, headers=headers, skip_auto_headers=["Content-Type"])
        answer = await response.json()
        assert response.status == 415 and "application/json" in answer["message"], (headers, answer)
    patched = await client.patch(
        "/v2/models/nosuch", data=b'{"description": "x"}', headers={"Content-Type": "text/plain"}
    )
    assert patched.status in (404, 415)


def test_clients_that_stall_are_disconnected(tmp_path):
    server = Server(
        [
            "--model-name",
            "echobench",
            "--executor",
            "thread",
            "--data-dir",
            str(tmp_path / "data"),
            "--request-read-timeout",
            "2",
            "--no-registry-preload",
        ]
    )
    try:
        base = server.wait_banner()
        server.wait_ready()
        host, port = base.removeprefix("http://").split(":")
        stalled = []
        for _ in range(10):  # headers never finished
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"GET /v2/models/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            stalled.append(sock)
        for _ in range(10):  # a body that stops half way
            sock = socket.create_connection((host, int(port)))
            sock.sendall(
                b"POST /v2/models/echobench/predict/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"sepal_length": '
            )
            stalled.append(sock)
        assert server.request("GET", "/v2/health/live")[0] == 200  # others are served meanwhile
        for sock in stalled:
            sock.settimeout(10)
            try:
                data = sock.recv(4096)
                while data:  # a 408 or the like may come first; then the end
                    data = sock.recv(4096)
            except ConnectionResetError:
                pass
            sock.close()
        assert server.request("GET", "/v2/health/live")[0] == 200
    finally:
        server.stop()


def multipart(count: int) -> tuple[bytes, str]:
    """A multipart body of ``count`` one-value parts, and its content type."""
    boundary = "b0undary"
    parts = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="sepal_length"\r\n\r\n{i}\r\n'.encode()
        for i in range(count)
    )
    return parts + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def test_a_multipart_body_of_many_parts_neither_stalls_the_server_nor_passes(app):
    client = await app()
    body, ctype = multipart(999)
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    ticks = 0
    stop = asyncio.Event()

    async def tick() -> None:  # another request's turn, as the event loop gives it
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0)
            ticks += 1

    # The whole request at once: the server finds every part already there, and must still
    # give the loop a turn every few parts.
    writer.write(
        f"POST /v2/models/echobench/predict/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    ticker = asyncio.create_task(tick())
    answer = await reader.read()
    stop.set()
    await ticker
    writer.close()
    assert answer.startswith(b"HTTP/1.1 422")  # many values for one argument: read, then refused by validation
    assert ticks > 60, ticks  # the loop had turns while the 999 parts were read (one every 8 parts)
    body, ctype = multipart(10001)  # the default limit is 10000 (the demo takes as many values)
    too_many = await client.post("/v2/models/echobench/predict/", data=body, headers={"Content-Type": ctype})
    assert too_many.status == 413 and "--max-form-parts" in (await too_many.json())["message"]
    lowered = await app(max_form_parts=500, data_dir=str(Path(client.server.app[SETTINGS].data_dir) / "x"))
    body, ctype = multipart(999)
    assert (
        await lowered.post("/v2/models/echobench/predict/", data=body, headers={"Content-Type": ctype})
    ).status == 413


async def test_an_upload_field_stops_at_its_limit(app, iris_models):
    client = await app()
    data = form(iris_models["joblib"])
    data.add_field("description", io.BytesIO(b"x" * (2 * 1024 * 1024)), content_type="text/plain")
    response = await client.put("/v2/models/iris", data=data)
    body = await response.json()
    assert response.status == 413 and "description" in body["message"], body
    assert (await client.get("/v2/models/iris")).status == 404  # nothing kept


@pytest.mark.slow
async def test_the_servers_files_are_its_own(app, iris_models):
    client = await app()
    settings = client.server.app[SETTINGS]
    assert (await client.put("/v2/models/iris", data=form(iris_models["skops"]))).status == 201
    data = Path(settings.data_dir)
    sha = (await (await client.get("/v2/models/iris/versions/1")).json())["sha256"]
    modes = {
        path: stat.S_IMODE(path.stat().st_mode)
        for path in (
            data,
            data / "state.sqlite3",
            data / "auth.key",
            settings.artifacts_dir,
            settings.artifacts_dir / "sha256" / sha[:2] / sha,
        )
    }
    assert modes == {
        data: 0o700,
        data / "state.sqlite3": 0o600,
        data / "auth.key": 0o600,
        settings.artifacts_dir: 0o700,
        settings.artifacts_dir / "sha256" / sha[:2] / sha: 0o600,
    }


@pytest.mark.slow
async def test_version_numbers_and_counts_are_ascii_digits(app, iris_models):
    client = await app()
    assert (await client.put("/v2/models/iris", data=form(iris_models["skops"]))).status == 201
    assert (await client.get("/v2/models/iris/versions/1")).status == 200
    for text in ("\u0663", "\uff11", "1_0", " 1", "+1", "1" * 5000):
        response = await client.get(f"/v2/models/iris/versions/{text}")
        assert response.status == 422, (text, response.status)
    assert (await client.get("/v2/models/?limit=\u0663")).status == 422
    assert (await client.get("/ml-models?limit=\u0663")).status == 422
    assert (await client.get("/v2/models/echobench/train/?limit=\u0663")).status == 422
