"""The what-if page (/ui/) in a real browser (Debian's chromium through Playwright) against
the real server: forms from the models' declarations, answers for a person, the what-if
chart, a training's progress, the asynchronous predictions, a token, a base path.
Screenshots go to each test's tmp_path."""

import re

from playwright.async_api import expect

from browser import page  # noqa: F401 (a fixture)
from conftest import wait_ready
from deepaas_like.api import create_app
from deepaas_like.api.ui import CONTENT_SECURITY_POLICY
from test_auth import mint
from test_registry import form, iris_models  # noqa: F401 (a fixture)

IRIS = {"sepal_length": "6.1", "sepal_width": "2.8", "petal_length": "4.7", "petal_width": "1.2"}
SLOW = 20000  # ms: a training process starts, a model warms


async def serve(aiohttp_client, make_settings, *models: str, **overrides):
    """The real app for ``models`` (threads), ready; its client and its URL."""
    settings = make_settings(model_name=models, executor="thread", **overrides)
    client = await aiohttp_client(create_app(settings))
    await wait_ready(client, base_path=settings.base_path)
    return client, str(client.make_url("")).rstrip("/")


def watch(page) -> list[str]:
    """What goes wrong in the page from now on: script errors and what the CSP refuses."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text else None)
    return problems


def local_only(page, base: str) -> None:
    """Everything the page asked for came from the server (or from itself: data:, blob:)."""
    strangers = [url for url in page.requested if not url.startswith((base, "data:", f"blob:{base}/"))]
    assert not strangers, f"the page reached beyond the server: {strangers}"


async def open_model(page, url: str) -> None:
    await page.goto(url)
    await page.locator("#predict-form .field").first.wait_for()


async def predict(page, status: str):
    """Press Predict and wait for the new answer (the result box counts its answers)."""
    result = page.locator("#predict-result")
    answers = int(await result.get_attribute("data-answers") or 0)
    await page.locator("#predict-form button[type=submit]").click()
    await expect(result).to_have_attribute("data-answers", str(answers + 1), timeout=SLOW)
    await expect(result.locator(".http-status")).to_have_attribute("data-status", status)
    return result


def cell(result, key: str):
    return result.locator(f'tr[data-key="{key}"] > td').first


async def test_every_ui_answer_has_the_csp_and_the_models_are_listed_under_a_base_path(
        aiohttp_client, make_settings, page, iris_models):
    client, base = await serve(aiohttp_client, make_settings, "demo", "irisbench", base_path="/ml")
    assert (await client.put("/ml/v2/models/iris", data=form(iris_models["joblib"]))).status == 201
    missing = ("/ml/ui/static/nothing.js", "/ml/ui/static/index.html", "/ml/ui/static/..%2Fapi%2Fui.py",
               "/ml/ui/elsewhere")
    for path in ("/ml/ui/", "/ml/ui", "/ml/ui/models/demo", "/ml/ui/static/app.js", "/ml/ui/static/whatif.js",
                 "/ml/ui/static/style.css", *missing):
        response = await client.get(path)
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
        assert response.status == (404 if path in missing else 200), path
    html = await (await client.get("/ml/ui/models/%3Cb%3E")).text()
    assert "<b>" not in html and 'data-model="&lt;b&gt;"' in html
    assert not re.search(r"""(src|href)=["']https?://""", html) and "<script>" not in html and "style=" not in html

    problems = watch(page)
    await page.goto(f"{base}/ml/ui/")
    cards = page.locator("#models li")
    await expect(cards).to_have_count(3)
    assert [await card.get_attribute("data-model") for card in await cards.all()] == ["demo", "irisbench", "iris"]
    await expect(page.locator('#models li[data-model="iris"]')).to_contain_text("uploaded")
    await page.screenshot(path=str(page.screenshots / "models.png"), full_page=True)
    await page.locator('#models li[data-model="demo"] a').click()
    await page.wait_for_url(f"{base}/ml/ui/models/demo")
    await page.locator("#predict-form .field").first.wait_for()
    await predict(page, "200")
    await page.goto(f"{base}/ml/ui/models/nothing-here")
    await expect(page.locator("#status")).to_contain_text("No model named")
    assert not problems, problems
    local_only(page, base)


async def test_the_demo_form_predicts_with_its_defaults_a_file_and_a_png(aiohttp_client, make_settings, page,
                                                                          tmp_path):
    _, base = await serve(aiohttp_client, make_settings, "demo")
    problems = watch(page)
    await open_model(page, f"{base}/ui/models/demo")
    values = page.locator('.field[data-field="values"] .list-item input')
    assert [await v.input_value() for v in await values.all()] == ["1", "2", "3", "5", "8"]
    await expect(page.locator("#predict-scale")).to_have_value("1")
    await expect(page.locator('.field[data-field="scale"] input[type=range]')).to_have_attribute("max", "10")
    await expect(page.locator("#predict-palette")).to_have_value("viridis")
    help_text = page.locator('.field[data-field="scale"] .help')
    await expect(help_text).to_have_text("Multiply every value by this (0.1 to 10)")
    result = await predict(page, "200")
    await expect(cell(result, "count")).to_have_text("5")
    await expect(cell(result, "mean")).to_have_text("3.8")
    await expect(cell(result, "max")).to_have_text("8")
    await expect(cell(result, "histogram").locator("rect.column")).to_have_count(8)
    await page.screenshot(path=str(page.screenshots / "demo-defaults.png"), full_page=True)

    picture = tmp_path / "cat.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x40\x00\x00\x00\xc8" + b"\x00" * 16)
    await page.locator("#predict-image").set_input_files(str(picture))
    await page.locator('.field[data-field="values"] button.add').click()
    await values.last.fill("13")
    result = await predict(page, "200")
    await expect(cell(result, "count")).to_have_text("6")
    image = cell(result, "image")
    await expect(cell(image, "original_filename")).to_have_text("cat.png")
    await expect(cell(image, "png_size")).to_contain_text("320")
    await page.screenshot(path=str(page.screenshots / "demo-file.png"), full_page=True)

    await page.locator("#accept-choice select").select_option("image/png")
    result = await predict(page, "200")
    await expect(result.locator("figure.image img")).to_have_attribute("src", re.compile(r"^blob:"))
    await expect(result.locator("figure.image img")).to_have_js_property("naturalWidth", 320)
    await page.screenshot(path=str(page.screenshots / "demo-png.png"), full_page=True)
    # lists and a file: no what-if, and the page says why
    await expect(page.locator("#what-if-why")).to_contain_text("values (a list) and image (a file)")
    await expect(page.locator("#what-if-form")).to_be_hidden()
    assert not problems, problems
    local_only(page, base)


async def test_a_validation_error_shows_next_to_its_field(aiohttp_client, make_settings, page):
    _, base = await serve(aiohttp_client, make_settings, "demo")
    await open_model(page, f"{base}/ui/models/demo")
    await page.locator("#predict-scale").fill("100")
    result = await predict(page, "422")
    scale = page.locator('.field[data-field="scale"]')
    await expect(scale).to_have_class(re.compile(r"\binvalid\b"))
    await expect(scale.locator(".error")).to_contain_text("less than or equal to 10")
    await expect(page.locator('.field[data-field="bins"] .error')).to_be_empty()
    await expect(result.locator(".notice.error")).to_contain_text("scale")
    await expect(page.locator("#predict-scale")).to_be_focused()
    await page.screenshot(path=str(page.screenshots / "demo-422.png"), full_page=True)
    await page.locator("#predict-scale").fill("2")
    await predict(page, "200")
    await expect(scale.locator(".error")).to_be_empty()
    await expect(cell(result, "mean")).to_have_text("7.6")


async def test_what_if_on_irisbench_draws_the_points_asked_in_one_request(aiohttp_client, make_settings, page):
    _, base = await serve(aiohttp_client, make_settings, "irisbench")
    problems = watch(page)
    await open_model(page, f"{base}/ui/models/irisbench")
    for name, value in IRIS.items():
        await page.locator(f"#predict-{name}").fill(value)
    result = await predict(page, "200")
    await expect(result.locator(".headline strong")).to_have_text("versicolor")
    await expect(result.locator('.bars .bar-row[data-label="versicolor"] .bar-value')).to_contain_text("%")
    panel = page.locator("#what-if-form")
    await panel.locator("select[name=input]").select_option("petal_length")
    await expect(panel.locator("input[name=from]")).to_have_value("2.35")  # the form's 4.7 ± 50 %
    await expect(panel.locator("input[name=to]")).to_have_value("7.05")
    await panel.locator("input[name=points]").fill("15")
    before = len(page.requested)
    await panel.locator("button[type=submit]").click()
    chart = page.locator("#what-if-chart svg.what-if-chart")
    await expect(chart).to_have_attribute("data-points", "15", timeout=SLOW)
    await expect(chart.locator("circle.point")).to_have_count(15)
    assert len((await chart.locator("polyline.line").get_attribute("points")).split()) == 15
    infers = [url for url in page.requested[before:] if url.endswith("/infer")]
    assert infers == [f"{base}/v2/models/irisbench/infer"]
    plotted = panel.locator("select[name=output]")
    assert (await plotted.locator("option:checked").inner_text()).startswith("probabilities: ")
    await expect(chart.locator(".axis-label").first).to_have_text("petal_length")
    await expect(chart.locator(".tick.y").last).to_have_text("100 %")
    await page.screenshot(path=str(page.screenshots / "what-if.png"), full_page=True)
    await plotted.select_option(label="probabilities: setosa")
    await expect(chart.locator(".axis-label.y")).to_have_text("probabilities: setosa")
    await expect(page.locator("#what-if-chart svg circle.point")).to_have_count(15)
    assert not problems, problems


async def test_a_training_drives_the_progress_bar_to_100_percent(aiohttp_client, make_settings, page):
    _, base = await serve(aiohttp_client, make_settings, "demo")
    problems = watch(page)
    await page.goto(f"{base}/ui/models/demo#train")
    await page.locator("#train-epochs").fill("5")
    await page.locator("#train-epoch_seconds").fill("0.05")
    await page.locator("#train-form button[type=submit]").click()
    await expect(page.locator("#training")).to_have_attribute("data-status", "done", timeout=SLOW)
    await expect(page.locator("#train-progress")).to_have_js_property("value", 1)
    await expect(page.locator("#train-percent")).to_have_text("100 %")
    await expect(page.locator("#train-message")).to_have_text("epoch 5/5")  # the plugin's own report
    await expect(page.locator("#train-log")).to_contain_text("epoch 5/5: offset=")
    await expect(page.locator("#training .outcome")).to_contain_text("converged")
    await expect(page.locator("#trainings tbody tr")).to_have_count(1)
    await page.screenshot(path=str(page.screenshots / "training.png"), full_page=True)
    assert not problems, problems


async def test_the_async_tab_lists_a_prediction_made_through_the_api(aiohttp_client, make_settings, page):
    client, base = await serve(aiohttp_client, make_settings, "demo")
    job = await (await client.post("/v2/models/demo/predictions/", json={"values": [4, 9]})).json()
    await page.goto(f"{base}/ui/models/demo#async")
    row = page.locator(f'#predictions tr[data-job="{job["id"]}"]')
    await expect(row.locator(".badge")).to_have_text("done", timeout=SLOW)
    await expect(row).to_contain_text("values=[4,9]")
    await row.locator("a.result-link").click()
    await expect(cell(page.locator("#prediction-result"), "mean")).to_have_text("6.5")
    await page.screenshot(path=str(page.screenshots / "async.png"), full_page=True)
    # "Predict later" on the Predict tab queues one more
    await page.locator("#tabs [data-tab=predict]").click()
    await page.locator("#predict-later").click()
    await expect(page.locator("#predictions tbody tr")).to_have_count(2, timeout=SLOW)


async def test_a_pasted_token_is_sent_with_every_call(aiohttp_client, make_settings, page, tmp_path):
    token = mint(tmp_path / "data", "--name", "ui", "--scope", "models:predict")
    _, base = await serve(aiohttp_client, make_settings, "demo", auth=True)
    await open_model(page, f"{base}/ui/models/demo")
    await predict(page, "401")
    await page.locator("#auth input[name=token]").fill(token)
    await page.locator("#auth button[type=submit]").click()
    await expect(page.locator("#auth .token-set")).to_be_visible()
    await page.locator("#predict-form .field").first.wait_for()
    result = await predict(page, "200")
    await expect(cell(result, "count")).to_have_text("5")
    await page.screenshot(path=str(page.screenshots / "token.png"), full_page=True)
