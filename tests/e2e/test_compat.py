"""DEEPaaS v2 compatibility: the `deepaas` import names, and installing an old plugin."""

import subprocess
import uuid

from support import TESTS
from support.processes import Server

LEGACY_PROJECT = TESTS / "fixtures" / "legacy_project"


def test_deepaas_import_names_are_ours():
    from deepaas.model.v2.base import BaseModel as LegacyBase
    from deepaas.model.v2.wrapper import ReturnedFile as LegacyReturned
    from deepaas.model.v2.wrapper import UploadedFile as LegacyUploaded

    import deepaas_like

    assert LegacyBase is deepaas_like.BaseModel
    assert LegacyUploaded is deepaas_like.UploadedFile and LegacyReturned is deepaas_like.ReturnedFile
    upload = deepaas_like.UploadedFile(
        name="f", filename="/tmp/x", content_type="text/plain", original_filename="x.txt"
    )
    assert isinstance(upload, LegacyUploaded)
    assert deepaas_like.UploadedFile(filename="/tmp/y").name is None  # DEEPaaS's defaults


def test_plain_pip_would_replace_our_libraries(layered_venv):
    """Why deepaas-install-plugin exists: pip would downgrade webargs, stevedore and apispec
    and install the real deepaas over our compatibility package."""
    python, _ = layered_venv
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--dry-run", "--disable-pip-version-check", str(LEGACY_PROJECT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    plan = next(line for line in result.stdout.splitlines() if line.startswith("Would install"))
    for downgrade in ("webargs-5.5.3", "deepaas-2.6.0", "stevedore-3.", "apispec-3."):
        assert downgrade in plan


def test_install_plugin_keeps_our_dependencies_and_the_plugin_runs(layered_venv, tmp_path):
    python, site = layered_venv
    install = subprocess.run(
        [str(python), "-m", "deepaas_like.cli.install_plugin", str(LEGACY_PROJECT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    out = install.stdout
    assert "legacy-deepaas-plugin 0.3.0: models oldstyle" in out
    assert "deepaas>=2.1: deepaas_like provides the 'deepaas' import package" in out
    assert "webargs~=5.5.3: webargs 8.7" in out and "kept as it is" in out
    assert "install  tomli-w>=1.0" in out
    assert "installed and importable: oldstyle" in out
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert {"legacy_deepaas_plugin", "tomli_w"} <= installed
    assert not {"webargs", "marshmallow", "deepaas", "aiohttp"} & installed  # ours untouched
    check = subprocess.run(
        [str(python), "-c", "import webargs, importlib.metadata as m; print(m.version('webargs'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert check.stdout.strip().startswith("8.")

    server = Server(
        ["--model-name", "oldstyle", "--data-dir", str(tmp_path / "data")],
        command=[str(python), "-m", "deepaas_like.cli.run"],
    )
    try:
        server.wait_banner()
        server.wait_ready()
        status, meta = server.request("GET", "/v2/models/oldstyle/")
        assert status == 200 and meta["version"] == "0.3.0"
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="cat.png"\r\n'
                f"Content-Type: image/png\r\n\r\n"
            ).encode()
            + b"\x89PNG-data"
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        status, answer = server.request("POST", "/v2/models/oldstyle/predict/", body, headers)
        assert status == 200, answer
        assert answer["predictions"] == {"size": 9, "threshold": 0.5, "toml": 'name = "cat.png"\n'}
        status, image = server.request("POST", "/v2/models/oldstyle/predict/", body, {**headers, "Accept": "image/*"})
        assert status == 200 and image.startswith(b"\x89PNG")
    finally:
        assert server.stop() == 0
