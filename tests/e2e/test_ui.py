"""The what-if page (/ui/) in a real browser (Debian's chromium through Playwright) against
the real server: forms from the models' declarations, answers for a person, the what-if
chart, a training's progress, the asynchronous predictions, a token, a base path.
Screenshots go to each test's tmp_path."""

import re

from playwright.async_api import expect

from deepaas_like.api import create_app
from deepaas_like.api.ui import CONTENT_SECURITY_POLICY
from support.auth import mint
from support.browser import page, phone  # noqa: F401 (fixtures)
from support.helpers import wait_ready
from support.registry import form

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
    page.on(
        "console",
        lambda message: (
            problems.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
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
    aiohttp_client, make_settings, page, iris_models
):
    client, base = await serve(aiohttp_client, make_settings, "demo", "irisbench", base_path="/ml")
    assert (await client.put("/ml/v2/models/iris", data=form(iris_models["joblib"]))).status == 201
    missing = (
        "/ml/ui/static/nothing.js",
        "/ml/ui/static/index.html",
        "/ml/ui/static/..%2Fapi%2Fui.py",
        "/ml/ui/elsewhere",
    )
    for path in (
        "/ml/ui/",
        "/ml/ui",
        "/ml/ui/models/demo",
        "/ml/ui/static/app.js",
        "/ml/ui/static/whatif.js",
        "/ml/ui/static/style.css",
        *missing,
    ):
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


async def test_the_demo_form_predicts_with_its_defaults_a_file_and_a_png(aiohttp_client, make_settings, page, tmp_path):
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
    infers = [url for url in page.requested[before:] if url.endswith("/infer")]
    assert infers == [f"{base}/v2/models/irisbench/infer"]
    # every class's probability at once, one line each, named in a legend
    plotted = panel.locator("select[name=output]")
    await expect(plotted.locator("option:checked")).to_have_text("probabilities (all 3)")
    lines = chart.locator("polyline.line")
    await expect(lines).to_have_count(3)
    assert sorted(await lines.evaluate_all("(ls) => ls.map((l) => l.dataset.name)")) == [
        "setosa",
        "versicolor",
        "virginica",
    ]
    for line in await lines.all():
        assert len((await line.get_attribute("points")).split()) == 15
    await expect(chart.locator(".legend-label")).to_have_text(["setosa", "versicolor", "virginica"])
    await expect(chart.locator("circle.point")).to_have_count(15)
    await expect(chart.locator(".axis-label").first).to_have_text("petal_length")
    await expect(chart.locator(".axis-label.y")).to_have_text("probabilities")
    await expect(chart.locator(".tick.y").last).to_have_text("100 %")
    first = await lines.evaluate_all("(ls) => ls.map((l) => l.getAttribute('points'))")
    # keep this sweep, change another input, sweep again: both on one chart, the kept one dashed
    await page.locator("#what-if-keep").click()
    await expect(lines).to_have_count(6)  # the kept lines over the same sweep, until the next
    await page.locator("#predict-petal_width").fill("0.2")
    async with page.expect_response(lambda r: r.url.endswith("/infer")):
        await panel.locator("button[type=submit]").click()
    await expect(chart.locator("polyline.line")).to_have_count(6, timeout=SLOW)
    kept = chart.locator("polyline.line.kept")
    await expect(kept).to_have_count(3)
    assert await kept.evaluate_all("(ls) => ls.map((l) => l.getAttribute('points'))") == first
    await expect(chart.locator(".legend-label").nth(3)).to_have_text("setosa (kept: petal_width=1.2)")
    setosa = chart.locator('polyline.line:not(.kept)[data-name="setosa"]')
    await expect(setosa).not_to_have_attribute("points", first[0], timeout=SLOW)  # a narrow petal: setosa longer
    await page.screenshot(path=str(page.screenshots / "what-if.png"), full_page=True)
    await page.locator("#what-if-forget").click()
    await expect(lines).to_have_count(3)
    await expect(page.locator("#what-if-forget")).to_be_hidden()
    # one class alone
    await plotted.select_option(label="probabilities: setosa")
    await expect(chart.locator(".axis-label.y")).to_have_text("probabilities: setosa")
    await expect(lines).to_have_count(1)
    await expect(page.locator("#what-if-chart svg circle.point")).to_have_count(15)
    assert not problems, problems


async def test_what_if_ranges_come_from_the_declaration_or_the_reference_dataset(
    aiohttp_client, make_settings, page, iris_models
):
    client, base = await serve(aiohttp_client, make_settings, "irisbench")
    await open_model(page, f"{base}/ui/models/irisbench")
    panel = page.locator("#what-if-form")
    await panel.locator("select[name=input]").select_option("top_k")
    await expect(panel.locator("input[name=from]")).to_have_value("1")  # its declared minimum...
    await expect(panel.locator("input[name=to]")).to_have_value("3")  # ...and maximum
    assert (await client.put("/v2/models/iris", data=form(iris_models["joblib"]))).status == 201
    csv = "sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n6.3,2.9,5.6,1.8\n5.8,2.7,4.1,1.0\n"
    stored = await client.put(
        "/v2/models/iris/versions/1/dataset", data=csv.encode(), headers={"Content-Type": "text/csv"}
    )
    assert stored.status == 200
    await open_model(page, f"{base}/ui/models/iris")
    await panel.locator("select[name=input]").select_option("petal_length")
    await expect(panel.locator("input[name=from]")).to_have_value("1.4")  # what the dataset covers
    await expect(panel.locator("input[name=to]")).to_have_value("5.6")
    await panel.locator("select[name=input]").select_option("sepal_width")
    await expect(panel.locator("input[name=from]")).to_have_value("2.7")
    await expect(panel.locator("input[name=to]")).to_have_value("3.5")


async def test_text_in_a_number_field_is_called_not_a_number(aiohttp_client, make_settings, page):
    _, base = await serve(aiohttp_client, make_settings, "irisbench")
    await open_model(page, f"{base}/ui/models/irisbench")
    for name, value in IRIS.items():
        await page.locator(f"#predict-{name}").fill(value)
    field = page.locator("#predict-sepal_length")
    await field.fill("")
    await field.press_sequentially("1e")  # what a browser gives a script as "" (as if empty)
    before = len(page.requested)
    await page.locator("#predict-form button[type=submit]").click()
    await expect(page.locator('.field[data-field="sepal_length"] .error')).to_have_text("Not a number.")
    await page.locator("#predict-later").click()
    await page.locator("#what-if-form button[type=submit]").click()
    await expect(page.locator('.field[data-field="sepal_length"] .error')).to_have_text("Not a number.")
    assert not [url for url in page.requested[before:] if "/v2/" in url]  # nothing was sent
    await field.fill("6.1")
    result = await predict(page, "200")
    await expect(page.locator('.field[data-field="sepal_length"] .error')).to_be_empty()
    await expect(result.locator(".headline strong")).to_have_text("versicolor")


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


async def overflow(page) -> dict:
    """How far the page is wider than the screen, and what sticks out of it (buttons, inputs,
    charts, tables)."""
    return await page.evaluate("""() => {
      const width = document.documentElement.clientWidth;
      const out = [...document.querySelectorAll("button, input, select, svg, table, img, .card")]
        .filter((node) => node.offsetParent !== null)
        .filter((node) => { const r = node.getBoundingClientRect(); return r.left < -0.5 || r.right > width + 0.5; })
        .map((node) => `${node.tagName.toLowerCase()}#${node.id}.${node.className.baseVal ?? node.className}`);
      return { scroll: document.documentElement.scrollWidth - width, out };
    }""")


async def test_a_model_page_fits_a_phone_after_a_prediction_and_a_what_if(aiohttp_client, make_settings, phone):
    """390×844: nothing wider than the screen, the chart's text as large as the page's."""
    page = phone
    _, base = await serve(aiohttp_client, make_settings, "irisbench", "demo")
    problems = watch(page)
    await open_model(page, f"{base}/ui/models/irisbench")
    assert await overflow(page) == {"scroll": 0, "out": []}
    for name, value in IRIS.items():
        await page.locator(f"#predict-{name}").fill(value)
    result = await predict(page, "200")
    await expect(result.locator(".headline strong")).to_have_text("versicolor")
    await page.screenshot(path=str(page.screenshots / "phone-irisbench-result.png"), full_page=True)
    assert await overflow(page) == {"scroll": 0, "out": []}
    panel = page.locator("#what-if-form")
    await panel.locator("select[name=input]").select_option("petal_length")
    await panel.locator("button[type=submit]").click()
    chart = page.locator("#what-if-chart svg.what-if-chart")
    await expect(chart).to_have_attribute("data-points", "20", timeout=SLOW)
    assert await overflow(page) == {"scroll": 0, "out": []}
    # the chart's words stay readable: at least 11 CSS pixels tall on the screen
    heights = await chart.locator("text").evaluate_all("(nodes) => nodes.map((n) => n.getBoundingClientRect().height)")
    assert heights and min(heights) >= 11, heights
    await page.screenshot(path=str(page.screenshots / "phone-irisbench.png"), full_page=True)
    # a result with nested objects (the demo's) keeps to the screen too
    await open_model(page, f"{base}/ui/models/demo")
    picture = page.screenshots / "cat.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x40\x00\x00\x00\xc8" + b"\x00" * 16)
    await page.locator("#predict-image").set_input_files(str(picture))
    result = await predict(page, "200")
    await expect(cell(cell(result, "image"), "png_size")).to_contain_text("320")
    assert await overflow(page) == {"scroll": 0, "out": []}
    await page.screenshot(path=str(page.screenshots / "phone-demo.png"), full_page=True)
    for tab in ("train", "async"):
        await page.locator(f"#tabs [data-tab={tab}]").click()
        assert await overflow(page) == {"scroll": 0, "out": []}, tab
    assert not problems, problems


async def test_a_plugin_that_could_not_be_loaded_is_shown_with_its_error(aiohttp_client, make_settings, page, plugins):
    plugins.install("broken", fixture="broken_import")
    client = await aiohttp_client(create_app(make_settings(executor="thread")))  # every installed plugin
    await wait_ready(client, timeout=120)
    base = str(client.make_url("")).rstrip("/")
    problems = watch(page)
    await page.goto(f"{base}/ui/")
    card = page.locator('#models li[data-model="broken"]')
    await expect(card).to_contain_text("Could not be loaded")
    await expect(card).to_contain_text("module_that_is_not_installed_anywhere")
    await expect(page.locator('#models li[data-model="echobench"] h2 a')).to_be_visible()  # the others are there
    await page.screenshot(path=str(page.screenshots / "broken-index.png"), full_page=True)
    await page.goto(f"{base}/ui/models/broken")
    await expect(page.locator("#status")).to_contain_text("“broken” could not be loaded")
    await page.goto(f"{base}/api")  # Swagger UI: the document's description names it
    await expect(page.locator(".info")).to_contain_text("could not be loaded", timeout=SLOW)
    await expect(page.locator(".info")).to_contain_text("broken")
    assert not [p for p in problems if "503" not in p], problems
