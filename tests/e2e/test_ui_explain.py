"""Explain on the what-if page, in a real browser: a signed bar per feature."""

from playwright.async_api import expect
from sklearn.datasets import load_iris
from test_ui import SLOW, open_model, serve, watch

from support.browser import page  # noqa: F401 (fixtures)
from support.polling import wait_for

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
VIRGINICA = {"sepal_length": "6.9", "sepal_width": "3.2", "petal_length": "5.7", "petal_width": "2.3"}


async def test_explain_shows_a_signed_bar_per_feature(aiohttp_client, make_settings, page):
    client, base = await serve(aiohttp_client, make_settings, "irisbench")
    problems = watch(page)
    await open_model(page, f"{base}/ui/models/irisbench")
    for name, value in VIRGINICA.items():
        await page.locator(f"#predict-{name}").fill(value)
    box = page.locator("#explain-result")
    await page.locator("#explain").click()  # no initialization yet: the 409 says how to make one
    await expect(box.locator(".notice.error")).to_contain_text("explanations-initialization", timeout=SLOW)

    rows = [dict(zip(FEATURES, map(float, row))) for row in load_iris().data[::10]]
    started = await client.post("/v2/models/irisbench/explanations-initialization/", json={"rows": rows})
    await wait_for(client, started.headers["Location"], lambda b: b["status"] == "done")
    await page.locator("#explain").click()
    bars = box.locator(".bars.signed .bar-row")
    await expect(bars).to_have_count(4, timeout=SLOW)
    await expect(box.locator("h3")).to_have_text("Why virginica")
    first = bars.first
    assert await first.get_attribute("data-feature") in ("petal_length", "petal_width")
    assert float(await first.get_attribute("data-strength")) > 0
    await expect(first.locator(".fill.up")).to_be_visible()
    await expect(first.locator(".bar-value")).to_contain_text("+++")
    assert await box.locator(".fill.down").count() >= 1  # sepal_width pulls p(virginica) down a little
    await page.screenshot(path=str(page.screenshots / "explain.png"), full_page=True)
    assert problems == []
