"""Swagger UI in a real browser (Debian's chromium through Playwright): what a newcomer
clicks first must work."""

from playwright.async_api import TimeoutError as PlaywrightTimeout

from deepaas_like.api import create_app
from support.auth import mint
from support.browser import page  # noqa: F401 (a fixture)
from support.helpers import wait_ready
from support.registry import form


async def open_operation(page, base: str, tag: str, operation_id: str):
    await page.goto(f"{base}/api#/{tag}/{operation_id}")
    operation = page.locator(f"#operations-{tag}-{operation_id}")
    await operation.wait_for()
    try_out = operation.locator(".try-out__btn")
    # Swagger UI opens a deep-linked operation itself, some time after the block appears: a
    # click on the summary in that moment closes it again (CI saw exactly this), so look at
    # the block's state before each click and give the page a few tries.
    for _ in range(5):
        if "is-open" not in (await operation.get_attribute("class") or ""):
            await operation.locator(".opblock-summary").click()
        try:
            await try_out.wait_for(timeout=5000)
            break
        except PlaywrightTimeout:
            continue
    await try_out.click()
    return operation


async def execute(operation) -> str:
    """Click Execute; the status code Swagger UI shows (the previous answer cleared first)."""
    clear = operation.locator(".btn-clear")
    if await clear.count():
        await clear.click()
        await operation.locator(".live-responses-table").wait_for(state="detached")
    await operation.locator(".execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    await status.wait_for(timeout=20000)
    return (await status.inner_text()).strip()


def local_only(page, base: str) -> None:
    strangers = [url for url in page.requested if not url.startswith(base) and not url.startswith("data:")]
    assert not strangers, f"the page reached beyond the server: {strangers}"


async def test_demo_predict_with_its_defaults_and_a_file(aiohttp_client, make_settings, page, tmp_path):
    client = await aiohttp_client(create_app(make_settings(model_name=("demo",), executor="thread")))
    await wait_ready(client)
    base = str(client.make_url("")).rstrip("/")
    operation = await open_operation(page, base, "demo", "demo_predict")
    assert await execute(operation) == "200"  # the empty file part Swagger UI sends means "no file"
    body = await operation.locator(".live-responses-table .response-col_description pre").first.inner_text()
    assert '"count": 5' in body and '"image"' not in body
    await page.screenshot(path=str(page.screenshots / "demo-defaults.png"))
    picture = tmp_path / "cat.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    await operation.locator('input[type="file"]').set_input_files(str(picture))
    assert await execute(operation) == "200"
    body = await operation.locator(".live-responses-table .response-col_description pre").first.inner_text()
    assert '"original_filename": "cat.png"' in body
    await page.screenshot(path=str(page.screenshots / "demo-file.png"))
    local_only(page, base)


async def test_an_uploaded_model_has_its_form(aiohttp_client, make_settings, page, iris_models):
    client = await aiohttp_client(create_app(make_settings(model_name=("demo",), executor="thread")))
    await wait_ready(client)
    assert (await client.put("/v2/models/iris", data=form(iris_models["joblib"]))).status == 201
    base = str(client.make_url("")).rstrip("/")
    operation = await open_operation(page, base, "iris", "iris_predict")
    await operation.locator("select").first.select_option("multipart/form-data")
    values = {"sepal_length": "6.9", "sepal_width": "3.1", "petal_length": "5.4", "petal_width": "2.1"}
    for name, value in values.items():
        await operation.locator(f'tr[data-property-name="{name}"] input').fill(value)
    assert await execute(operation) == "200"
    body = await operation.locator(".live-responses-table .response-col_description pre").first.inner_text()
    assert '"label": "virginica"' in body
    await page.screenshot(path=str(page.screenshots / "iris-form.png"))


async def test_the_authorize_button_sends_the_token(aiohttp_client, make_settings, page, tmp_path):
    settings = make_settings(model_name=("demo",), executor="thread", auth=True)
    token = mint(tmp_path / "data", "--name", "browser", "--scope", "models:predict")
    client = await aiohttp_client(create_app(settings))
    await wait_ready(client)
    base = str(client.make_url("")).rstrip("/")
    operation = await open_operation(page, base, "demo", "demo_predict")
    assert await execute(operation) == "401"
    await page.locator(".auth-wrapper .authorize").click()
    dialog = page.locator(".modal-ux")
    await dialog.locator("input").first.fill(token)
    await dialog.locator("button.authorize").click()
    await dialog.locator("button.btn-done").click()
    assert await execute(operation) == "200"
    await page.screenshot(path=str(page.screenshots / "authorized.png"))
    local_only(page, base)
