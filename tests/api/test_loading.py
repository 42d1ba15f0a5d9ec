"""The plugin seam: discovery, the three plugin kinds, loud and precise failures."""

import pytest

from deepaas_like.api import create_app
from deepaas_like.errors import PluginLoadError
from deepaas_like.loading import load_plugins
from support.helpers import wait_ready


def test_module_class_and_instance_plugins(plugins):
    plugins.install("legacy")
    plugins.install("counter", fixture="counter_class", attr="Counter")
    plugins.install("greeter", fixture="instance_plugin", attr="model")
    loaded = {p.ref.name: p for p in load_plugins(["legacy", "counter", "greeter"])}
    assert loaded["legacy"].obj.__name__ == "fixture_legacy"  # the module itself
    assert type(loaded["counter"].obj).__name__ == "Counter"  # the class, instantiated
    assert type(loaded["greeter"].obj).__name__ == "Greeter"  # the instance as it is
    assert loaded["counter"].ref.value == "fixture_counter_class:Counter"


def test_a_plugin_installed_after_a_first_scan_is_found(plugins):
    with pytest.raises(PluginLoadError, match="no plugin with this name"):
        load_plugins(["late"])
    plugins.install("late", fixture="slow")
    assert [p.ref.name for p in load_plugins(["late"])] == ["late"]


def test_import_error_is_reported_with_its_real_cause(plugins):
    plugins.install("broken", fixture="broken_import")
    with pytest.raises(PluginLoadError) as info:
        load_plugins(["broken"])
    error = info.value
    assert error.name == "broken"
    assert "ModuleNotFoundError" in str(error)
    assert "module_that_is_not_installed_anywhere" in str(error)
    assert "fixture_broken_import.py" in error.traceback_text


def test_load_plugins_reports_a_broken_plugin_or_sets_it_aside(plugins):
    plugins.install("broken", fixture="broken_import")
    with pytest.raises(PluginLoadError, match="module_that_is_not_installed_anywhere"):
        load_plugins([])
    broken: list[PluginLoadError] = []
    loaded = load_plugins([], broken=broken)
    assert [e.name for e in broken] == ["broken"] and "echobench" in {p.ref.name for p in loaded}


async def test_one_broken_plugin_does_not_take_the_others_down(plugins, aiohttp_client, make_settings):
    plugins.install("broken", fixture="broken_import")
    plugins.install("bad-args", fixture="bad_args")
    client = await aiohttp_client(create_app(make_settings(executor="thread")))  # every installed plugin
    listed = {m["name"]: m for m in (await (await client.get("/v2/models/")).json())["models"]}
    for name in ("broken", "bad-args"):
        assert listed[name]["state"] == "failed" and listed[name]["error"], listed[name]
        for method, path in (
            ("GET", f"/v2/models/{name}/"),
            ("POST", f"/v2/models/{name}/predict/"),
            ("POST", f"/v2/models/{name}/train/"),
        ):
            response = await client.request(method, path)
            body = await response.json()
            assert response.status == 503 and body["state"] == "failed", (path, body)
    assert "module_that_is_not_installed_anywhere" in listed["broken"]["error"]
    ready = await wait_ready(client, timeout=120)  # the others are served
    assert set(ready["failed"]) == {"broken", "bad-args"}
    document = await (await client.get("/swagger.json")).json()
    assert "broken" in document["info"]["description"] and "could not be loaded" in document["info"]["description"]
    answer = await client.post(
        "/v2/models/echobench/predict/?sepal_length=1&sepal_width=2&petal_length=3&petal_width=4"
    )
    assert answer.status == 200
    with pytest.raises(PluginLoadError):  # named by the operator: it must load
        create_app(make_settings(model_name=("echobench", "broken")))


def test_unknown_name_lists_the_installed_ones():
    with pytest.raises(PluginLoadError) as info:
        load_plugins(["nonexistent"])
    assert "installed:" in str(info.value) and "echobench" in str(info.value)


def test_two_plugins_with_one_name_are_refused(plugins):
    plugins.install("twin", fixture="slow")
    plugins.install("twin", fixture="legacy")
    with pytest.raises(PluginLoadError, match="several installed plugins use this name"):
        load_plugins(["twin"])


def test_unusable_declarations_are_load_errors(plugins, make_settings):
    plugins.install("bad-args", fixture="bad_args")
    with pytest.raises(PluginLoadError, match=r"get_predict_args\(\)\['x'\] must be a webargs/marshmallow field"):
        create_app(make_settings(model_name="bad-args"))


def test_something_that_is_not_a_model(plugins):
    plugins.install("thing", source="VALUE = 1\n")
    with pytest.raises(PluginLoadError, match="neither predict\\(\\) nor train\\(\\)"):
        load_plugins(["thing"])


def test_class_that_cannot_be_instantiated(plugins):
    source = "class Needy:\n    def __init__(self, path):\n        pass\n    def predict(self):\n        pass\n"
    plugins.install("needy", source=source, attr="Needy")
    with pytest.raises(PluginLoadError, match="could not be instantiated without arguments"):
        load_plugins(["needy"])


async def test_class_plugin_keeps_state_from_warm_in_each_worker(serve, plugins):
    plugins.install("counter", fixture="counter_class", attr="Counter")
    client = await serve("counter")
    first = (await (await client.post("/v2/models/counter/predict/")).json())["predictions"]
    second = (await (await client.post("/v2/models/counter/predict/", json={"step": 2})).json())["predictions"]
    assert first["token"] is not None and first["token"] == second["token"]
    assert (first["calls"], second["calls"]) == (1, 3)
    assert first["pid"] == second["pid"]


async def test_instance_plugin_is_warmed(serve, plugins):
    plugins.install("greeter", fixture="instance_plugin", attr="model")
    client = await serve("greeter")
    body = await (await client.post("/v2/models/greeter/predict/?name=Ada")).json()
    assert body["predictions"]["text"] == "Hello, Ada!"
    assert body["predictions"]["warmed"] is True
    missing = await client.post("/v2/models/greeter/train/")
    assert missing.status == 501
    assert "does not implement train()" in (await missing.json())["message"]


def test_basemodel_placeholder_is_not_a_batch_method():
    from deepaas_like import BaseModel
    from deepaas_like.engine.adapter import ModelAdapter
    from deepaas_like.engine.calls import Ok

    class Plain(BaseModel):
        def get_metadata(self):
            return {}

        def warm(self):
            pass

        def get_predict_args(self):
            return {}

        def predict(self):
            return 1

        def get_train_args(self):
            return {}

        def train(self):
            return None

    class Batched(Plain):
        def predict_batch(self, rows):
            return [1] * len(rows)

    assert not ModelAdapter("p", Plain()).has("predict_batch")
    assert ModelAdapter("b", Batched()).has("predict_batch")
    assert ModelAdapter("b", Batched()).predict_many([{}, {}]) == [Ok(1), Ok(1)]
