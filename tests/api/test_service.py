"""The data plane (deepaas_like/service.py) called directly, as every handler calls it: the
same checks, the same bookkeeping, whichever caller asks."""

import json

import pytest

from deepaas_like.api.keys import JOBS, PLANE
from deepaas_like.arguments import ArgumentSources
from deepaas_like.errors import ArgumentError, NotFound, NotImplementedByModel
from deepaas_like.jobs.model import JobKind
from deepaas_like.oip import ProtocolError, parse_request
from support.polling import wait_for

ROW = {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3}


async def test_predict_checks_the_arguments_before_any_worker_and_answers_the_output(serve):
    client = await serve("irisbench")
    plane = client.server.app[PLANE]
    model = await plane.model("irisbench")
    output = await plane.predict(model, ArgumentSources(json=ROW))
    assert output.is_json and output.json["predictions"]["label"] == "virginica"
    with pytest.raises(ArgumentError) as refused:
        await plane.predict(model, ArgumentSources(json={**ROW, "petal_width": "wide"}))
    assert "petal_width" in refused.value.errors
    with pytest.raises(NotFound) as missing:
        await plane.model("nosuchmodel")
    assert "irisbench" in missing.value.message


async def test_infer_turns_tensors_into_rows_and_answers_into_tensors(serve):
    client = await serve("irisbench")
    plane = client.server.app[PLANE]
    model = await plane.model("irisbench")
    inputs = [{"name": name, "shape": [2], "datatype": "FP64", "data": [value, value]} for name, value in ROW.items()]
    payload, tensors = parse_request(json.dumps({"id": "r1", "inputs": inputs}).encode(), None)
    answer = await plane.infer(model, payload, tensors)
    assert answer["model_name"] == "irisbench" and answer["id"] == "r1"
    assert "model_version" not in answer  # a plugin's one version is not named
    assert all(output["shape"][0] == 2 for output in answer["outputs"]), answer
    with pytest.raises(ProtocolError, match="outputs must be a list"):
        await plane.infer(model, {"outputs": "label"}, tensors)
    with pytest.raises(ProtocolError, match="parameters must be an object"):
        await plane.infer(model, {"parameters": [1]}, tensors)


async def test_a_job_is_refused_before_it_exists_when_the_model_cannot_do_it_or_the_arguments_are_wrong(serve, plugins):
    plugins.install("numpy_out")  # predicts, does not train
    client = await serve("echobench", "numpy_out")
    app = client.server.app
    plane, jobs = app[PLANE], app[JOBS]
    with pytest.raises(NotImplementedByModel, match=r"does not implement train\(\)"):
        plane.job_arguments(await plane.model("numpy_out"), JobKind.TRAINING)
    model = await plane.model("echobench")
    with pytest.raises(ArgumentError):
        await plane.submit(
            JobKind.PREDICTION, model, jobs.new_id(), ArgumentSources(json={"nope": 1}), None, None, None
        )
    assert jobs.list(JobKind.PREDICTION, "echobench") == []
    job = await plane.submit(JobKind.PREDICTION, model, jobs.new_id(), ArgumentSources(json=ROW), None, None, "someone")
    assert job.owner == "someone"
    body = await wait_for(client, f"/v2/models/echobench/predictions/{job.id}", lambda b: b["status"] == "done")
    assert body["result"]["predictions"]["sepal_length"] == ROW["sepal_length"], body


async def test_sample_rows_draws_the_same_rows_for_a_seed_and_a_bad_row_is_named(serve):
    client = await serve("irisbench")
    plane = client.server.app[PLANE]
    rows = [{**ROW, "sepal_length": float(i)} for i in range(20)]
    drawn = plane.sample_rows("irisbench", rows, 5, seed=3)
    assert len(drawn) == 5 and drawn == plane.sample_rows("irisbench", rows, 5, seed=3)
    assert plane.sample_rows("irisbench", rows, None, seed=3) == rows
    with pytest.raises(ArgumentError, match="Give sample rows"):
        plane.sample_rows("irisbench", None, None, seed=0)
    model = await plane.predicting("irisbench")
    with pytest.raises(ArgumentError, match="Row 2:") as refused:
        await plane.start_impact(
            model, [ROW, ROW, {**ROW, "petal_width": "x"}], seed=0, repeats=1, lenient=False, owner=None
        )
    assert "2" in refused.value.errors["rows"]
