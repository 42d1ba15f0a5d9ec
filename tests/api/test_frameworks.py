"""The built-in framework plugins (plugins/frameworks): real model files of every filetype,
built here, recognised, loaded through the installed entry points and compared with the
same model called in process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from deepaas_like.frameworks import Framework, discover_frameworks
from support.model_files import build_keras_files, build_torch_files

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def frameworks() -> dict[str, Framework]:
    found, broken = discover_frameworks()
    assert not broken
    return found


@pytest.fixture(scope="module")
def iris() -> tuple[pd.DataFrame, np.ndarray]:
    data = load_iris()
    return pd.DataFrame(data.data, columns=IRIS_COLUMNS), data.target_names[data.target]


def head(path: Path) -> bytes:
    with open(path, "rb") as file:
        return file.read(4096)


def plain_json(value: Any) -> bool:
    """Only dict/list/str/int/float/bool/None, all the way down (no numpy scalars)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain_json(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def assert_classified(
    answers: list[dict[str, Any]], labels: Any, probabilities: np.ndarray, classes: list[Any], atol: float = 1e-6
) -> None:
    assert plain_json(answers)
    assert [a["label"] for a in answers] == list(labels)
    got = np.array([[a["probabilities"][str(c)] for c in classes] for a in answers])
    np.testing.assert_allclose(got, probabilities, atol=atol)


# --- scikit-learn -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def iris_pipeline(iris) -> Pipeline:
    """StandardScaler + LogisticRegression fitted on a DataFrame with named columns."""
    X, y = iris
    return Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]).fit(X, y)


def save_sklearn(estimator: Any, path: Path, filetype: str) -> Path:
    if filetype == "skops":
        import skops.io

        skops.io.dump(estimator, path)
    else:
        joblib.dump(estimator, path)
    return path


@pytest.mark.parametrize("filetype, name", [("joblib", "iris.joblib"), ("pickle", "iris.pkl"), ("skops", "iris.skops")])
def test_sklearn_pipeline_on_named_columns(frameworks, iris, iris_pipeline, tmp_path, filetype, name):
    path = save_sklearn(iris_pipeline, tmp_path / name, filetype)
    assert frameworks["sklearn"].sniff(head(path), name) == filetype
    loaded = frameworks["sklearn"].load(str(path), filetype)

    signature = loaded.signature
    assert signature.task == "classification"
    assert [c.name for c in signature.columns] == IRIS_COLUMNS
    assert {c.type for c in signature.columns} == {"number"}
    assert signature.classes == ["setosa", "versicolor", "virginica"]
    assert signature.library_versions == {"scikit-learn": sklearn.__version__}
    assert signature.details["loaded_with"] == {"scikit-learn": sklearn.__version__}
    assert json.loads(json.dumps(signature.to_json())) == signature.to_json()

    X, _ = iris
    rows = X.values[::7].tolist()
    frame = pd.DataFrame(rows, columns=IRIS_COLUMNS)
    assert_classified(
        loaded.predict(rows), iris_pipeline.predict(frame), iris_pipeline.predict_proba(frame), signature.classes
    )


def test_sklearn_forest_answers_are_exactly_predict_proba(frameworks, iris, tmp_path):
    """The irisbench model: a forest's trees are averaged without its thread pool, to the same numbers."""
    X, y = iris
    forest = RandomForestClassifier(n_estimators=10, random_state=0, n_jobs=1).fit(X.values, y)
    loaded = frameworks["sklearn"].load(str(save_sklearn(forest, tmp_path / "rf.joblib", "joblib")), "joblib")
    assert loaded.signature.n_inputs == 4 and loaded.signature.columns is None
    rows = X.values.tolist() + [[float("nan"), 3.5, 1.4, 0.2]]  # a NaN row goes through predict_proba itself
    answers = loaded.predict(rows)
    assert [a["label"] for a in answers] == forest.predict(np.array(rows)).tolist()
    assert [list(a["probabilities"].values()) for a in answers] == forest.predict_proba(np.array(rows)).tolist()


def test_sklearn_regressor_on_numpy(frameworks, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    forest = RandomForestRegressor(n_estimators=5, random_state=0).fit(X, X @ [1.0, -2.0, 0.5])
    path = save_sklearn(forest, tmp_path / "forest.joblib", "joblib")
    loaded = frameworks["sklearn"].load(str(path), "joblib")
    assert loaded.signature.task == "regression"
    assert loaded.signature.columns is None and loaded.signature.n_inputs == 3
    answers = loaded.predict(X[:10].tolist())
    assert plain_json(answers)
    assert [a["value"] for a in answers] == forest.predict(X[:10]).tolist()
    with pytest.raises(ValueError, match="needs 3 numbers"):
        loaded.predict([[1.0, 2.0]])


def test_sklearn_string_columns_go_through_a_dataframe(frameworks, tmp_path):
    frame = pd.DataFrame(
        {
            "size": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
            "colour": ["red", "blue", "red", "green", "blue", "green", "red", "blue"],
        }
    )
    target = [0, 1, 0, 1, 1, 0, 0, 1]
    columns = ColumnTransformer([("num", StandardScaler(), ["size"]), ("cat", OneHotEncoder(), ["colour"])])
    model = Pipeline([("columns", columns), ("clf", LogisticRegression())]).fit(frame, target)
    loaded = frameworks["sklearn"].load(str(save_sklearn(model, tmp_path / "m.joblib", "joblib")), "joblib")
    kinds = {c.name: c for c in loaded.signature.columns}
    assert kinds["size"].type == "number" and kinds["size"].choices is None
    assert kinds["colour"].type == "string" and kinds["colour"].choices == ["blue", "green", "red"]
    rows = [[2.5, "green"], [7.0, "red"]]
    expected = pd.DataFrame(rows, columns=["size", "colour"])
    assert_classified(loaded.predict(rows), model.predict(expected), model.predict_proba(expected), [0, 1])
    # As ONNX: one [N, 1] input per column, strings included.
    (tmp_path / "m.onnx").write_bytes(frameworks["sklearn"].to_onnx(loaded, rows))
    converted = frameworks["onnx"].load(str(tmp_path / "m.onnx"), "onnx")
    assert [(c.name, c.type) for c in converted.signature.columns] == [("size", "number"), ("colour", "string")]
    assert_classified(
        converted.predict(rows), model.predict(expected), model.predict_proba(expected), [0, 1], atol=1e-6
    )


def test_sklearn_version_is_the_one_the_file_was_saved_with(frameworks, iris_pipeline, tmp_path):
    """A pickle from another scikit-learn version: sklearn's own record of it, and a warning kept out."""
    current = sklearn.__version__.encode()
    other = b"0." + b"0" * (len(current) - 2)  # same length: the pickle's frames stay valid
    data = save_sklearn(iris_pipeline, tmp_path / "a.joblib", "joblib").read_bytes()
    assert current in data
    (tmp_path / "old.joblib").write_bytes(data.replace(current, other))
    signature = frameworks["sklearn"].load(str(tmp_path / "old.joblib"), "joblib").signature
    assert signature.library_versions == {"scikit-learn": other.decode()}
    assert signature.details["loaded_with"] == {"scikit-learn": sklearn.__version__}


def test_skops_refuses_a_type_it_does_not_trust(frameworks, tmp_path, monkeypatch):
    (tmp_path / "custom_steps.py").write_text(
        textwrap.dedent("""
        from sklearn.base import BaseEstimator, TransformerMixin

        class Doubler(TransformerMixin, BaseEstimator):
            def fit(self, X, y=None):
                return self

            def transform(self, X):
                return X * 2
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "custom_steps", raising=False)
    from custom_steps import Doubler  # noqa: E402 (a module of this test's own)

    X = np.arange(20.0).reshape(10, 2)
    model = Pipeline([("double", Doubler()), ("clf", LogisticRegression())]).fit(X, [0, 1] * 5)
    path = save_sklearn(model, tmp_path / "custom.skops", "skops")
    monkeypatch.delitem(sys.modules, "custom_steps")
    from deepaas_like_frameworks.sklearn import UntrustedTypes

    with pytest.raises(UntrustedTypes, match="custom_steps.Doubler") as refused:
        frameworks["sklearn"].load(str(path), "skops")
    assert refused.value.types == ["custom_steps.Doubler"]
    assert "custom_steps" not in sys.modules  # refused before anything was imported


def test_sklearn_to_onnx_agrees_on_iris(frameworks, iris, iris_pipeline, tmp_path):
    X, y = iris
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(
        X.values, np.searchsorted(["setosa", "versicolor", "virginica"], y)
    )
    rows = X.values.tolist()
    for estimator, expected_columns in ((forest, None), (iris_pipeline, IRIS_COLUMNS)):
        path = save_sklearn(estimator, tmp_path / "m.joblib", "joblib")
        original = frameworks["sklearn"].load(str(path), "joblib")
        (tmp_path / "m.onnx").write_bytes(frameworks["sklearn"].to_onnx(original, rows[:5]))
        converted = frameworks["onnx"].load(str(tmp_path / "m.onnx"), "onnx")
        assert converted.signature.task == "classification"
        assert converted.signature.classes == original.signature.classes
        if expected_columns is None:
            assert converted.signature.n_inputs == 4
        else:
            assert [c.name for c in converted.signature.columns] == expected_columns
        want, got = original.predict(rows), converted.predict(rows)
        assert [a["label"] for a in got] == [a["label"] for a in want]
        for a, b in zip(got, want):
            assert a["probabilities"].keys() == b["probabilities"].keys()
            assert max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"]) < 1e-4


# --- ONNX -------------------------------------------------------------------------------


@pytest.mark.parametrize("zipmap", [True, False])
def test_onnx_classifier_from_skl2onnx(frameworks, iris, iris_pipeline, tmp_path, zipmap):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    graph = convert_sklearn(
        iris_pipeline, initial_types=[("input", FloatTensorType([None, 4]))], options={"zipmap": zipmap}
    )
    path = tmp_path / "iris.onnx"
    path.write_bytes(graph.SerializeToString())
    assert frameworks["onnx"].sniff(head(path), "iris.onnx") == "onnx"
    loaded = frameworks["onnx"].load(str(path), "onnx")
    signature = loaded.signature
    assert signature.task == "classification" and signature.n_inputs == 4
    assert signature.classes == ["setosa", "versicolor", "virginica"]
    assert signature.library_versions == {"skl2onnx": graph.producer_version}
    assert signature.details["producer_name"] == "skl2onnx" and "ai.onnx" in signature.details["opsets"]
    X, _ = iris
    rows = X.values[::9].tolist()
    assert_classified(
        loaded.predict(rows),
        iris_pipeline.predict(X.iloc[::9]),
        iris_pipeline.predict_proba(X.iloc[::9]),
        signature.classes,
        atol=1e-5,
    )


def test_onnx_columns_regression_and_threads(frameworks, tmp_path):
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    frame = pd.DataFrame(np.random.default_rng(1).normal(size=(40, 3)), columns=["a", "b", "c"])
    target = frame.values @ [1.0, 2.0, -1.0]
    model = Pipeline([("scale", StandardScaler()), ("reg", RandomForestRegressor(5, random_state=0))])
    model.fit(frame, target)
    graph = convert_sklearn(model, initial_types=[(c, FloatTensorType([None, 1])) for c in frame.columns])
    (tmp_path / "reg.onnx").write_bytes(graph.SerializeToString())
    loaded = frameworks["onnx"].load(str(tmp_path / "reg.onnx"), "onnx")
    assert loaded.signature.task == "regression"
    assert [(c.name, c.type) for c in loaded.signature.columns] == [("a", "number"), ("b", "number"), ("c", "number")]
    assert loaded.session.get_session_options().intra_op_num_threads == 1
    rows = frame.values[:6].tolist()
    answers = loaded.predict(rows)
    assert plain_json(answers)
    np.testing.assert_allclose([a["value"] for a in answers], model.predict(frame.iloc[:6]), rtol=1e-5)


# --- Keras (TensorFlow is slow to import: one module fixture builds every file) -------------


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory) -> dict[str, Any]:
    return build_keras_files(tmp_path_factory.mktemp("keras"))


@pytest.mark.parametrize("name, filetype", [("softmax.keras", "keras"), ("softmax.h5", "h5")])
@pytest.mark.slow
def test_keras_softmax_classifier(frameworks, keras_files, name, filetype):
    path = keras_files["dir"] / name
    assert frameworks["tensorflow"].sniff(head(path), name) == filetype
    loaded = frameworks["tensorflow"].load(str(path), filetype)
    signature = loaded.signature
    assert (signature.task, signature.n_inputs, signature.classes) == ("classification", 4, [0, 1, 2])
    assert signature.library_versions == {"keras": keras_files["version"]}
    expected = keras_files["softmax"]
    assert_classified(loaded.predict(keras_files["x"].tolist()), expected.argmax(axis=1).tolist(), expected, [0, 1, 2])


def test_keras_sigmoid_unit_is_a_binary_classifier(frameworks, keras_files):
    loaded = frameworks["tensorflow"].load(str(keras_files["dir"] / "sigmoid.keras"), "keras")
    assert loaded.signature.classes == [0, 1]
    p = keras_files["sigmoid"][:, 0]
    assert_classified(
        loaded.predict(keras_files["x"].tolist()), (p >= 0.5).astype(int).tolist(), np.stack([1 - p, p], axis=1), [0, 1]
    )


@pytest.mark.parametrize("name, filetype", [("lambda.keras", "keras"), ("lambda.h5", "h5")])
def test_keras_safe_mode_refuses_a_lambda(frameworks, keras_files, name, filetype):
    with pytest.raises(ValueError, match="Lambda"):
        frameworks["tensorflow"].load(str(keras_files["dir"] / name), filetype)


# --- PyTorch ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory) -> dict[str, Any]:
    return build_torch_files(tmp_path_factory.mktemp("torch"))


@pytest.mark.parametrize(
    "name, filetype, n_inputs",
    [
        ("scripted.pt", "torchscript", None),
        ("traced.torchscript", "torchscript", None),
        ("dynamic.pt2", "pt2", 4),
        ("static.pt2", "pt2", 4),
    ],
)
def test_torch_models(frameworks, torch_files, name, filetype, n_inputs):
    path = torch_files["dir"] / name
    assert frameworks["pytorch"].sniff(head(path), name) == filetype
    loaded = frameworks["pytorch"].load(str(path), filetype)
    assert loaded.signature.task == "tensor" and loaded.signature.n_inputs == n_inputs
    if filetype == "pt2":
        assert loaded.signature.library_versions == {"torch": torch_files["version"]}
    answers = loaded.predict(torch_files["x"].tolist())  # 5 rows: a static batch of 2 is padded
    assert plain_json(answers)
    np.testing.assert_allclose([a["output"] for a in answers], torch_files["expected"], rtol=1e-6)


def test_torch_refuses_checkpoints_and_pickled_pt2(frameworks, torch_files, tmp_path):
    torch_ = frameworks["pytorch"]
    checkpoint = head(torch_files["dir"] / "weights.pt")
    assert torch_.sniff(checkpoint, "weights.pt") is None
    assert "torch.save checkpoint" in torch_.check(checkpoint, "torchscript")
    assert "torchscript" in torch_.check(head(torch_files["dir"] / "scripted.pt"), "pt2")
    # A .pt2 whose weight says it is a pickle: torch.export.load would unpickle it.
    source = torch_files["dir"] / "dynamic.pt2"
    tampered = tmp_path / "pickled.pt2"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("_weights_config.json"):
                data = data.replace(b'"use_pickle": false', b'"use_pickle": true', 1)
            dst.writestr(item, data)
    with pytest.raises(ValueError, match="stored as a pickle"):
        torch_.load(str(tampered), "pt2")


# --- what every framework shares ---------------------------------------------------------


@pytest.fixture(scope="module")
def every_file(tmp_path_factory, iris_pipeline, keras_files, torch_files) -> dict[str, tuple[Path, str, str]]:
    """One real file of each filetype: name -> (path, library, filetype)."""
    from skl2onnx import to_onnx

    where = tmp_path_factory.mktemp("every")
    onnx_path = where / "iris.onnx"
    onnx_path.write_bytes(to_onnx(iris_pipeline, np.zeros((1, 4), np.float32)).SerializeToString())
    return {
        "iris.joblib": (save_sklearn(iris_pipeline, where / "iris.joblib", "joblib"), "sklearn", "joblib"),
        "iris.pkl": (save_sklearn(iris_pipeline, where / "iris.pkl", "pickle"), "sklearn", "pickle"),
        "iris.skops": (save_sklearn(iris_pipeline, where / "iris.skops", "skops"), "sklearn", "skops"),
        "softmax.keras": (keras_files["dir"] / "softmax.keras", "tensorflow", "keras"),
        "softmax.h5": (keras_files["dir"] / "softmax.h5", "tensorflow", "h5"),
        "scripted.pt": (torch_files["dir"] / "scripted.pt", "pytorch", "torchscript"),
        "dynamic.pt2": (torch_files["dir"] / "dynamic.pt2", "pytorch", "pt2"),
        "iris.onnx": (onnx_path, "onnx", "onnx"),
    }


def test_each_file_is_claimed_by_one_framework_only(frameworks, every_file):
    assert set(frameworks) == {"sklearn", "tensorflow", "pytorch", "onnx"}
    for name, (path, library, filetype) in every_file.items():
        claims = {lib: t for lib, fw in frameworks.items() if (t := fw.sniff(head(path), name)) is not None}
        assert claims == {library: filetype}, name
        # The same bytes under another framework's name are claimed by nobody.
        for other, (_, other_library, _) in every_file.items():
            if other_library != library:
                assert frameworks[other_library].sniff(head(path), other) is None, (name, other)


def test_check_names_what_the_bytes_are(frameworks, every_file):
    heads = {name: head(path) for name, (path, _, _) in every_file.items()}
    for name, (_, library, filetype) in every_file.items():
        assert frameworks[library].check(heads[name], filetype) is None, name
    reasons = {
        ("onnx", "onnx", "iris.joblib"): "a pickle",
        ("onnx", "onnx", "softmax.keras"): "a zip archive",
        ("tensorflow", "keras", "softmax.h5"): "an HDF5 file",
        ("tensorflow", "keras", "iris.skops"): "starts with metadata.json",
        ("tensorflow", "h5", "softmax.keras"): "a zip archive",
        ("sklearn", "joblib", "scripted.pt"): "a zip archive",
        ("sklearn", "skops", "softmax.keras"): "Keras .keras file",
        ("sklearn", "pickle", "iris.onnx"): "protobuf",
        ("pytorch", "torchscript", "iris.joblib"): "a pickle",
        ("pytorch", "pt2", "scripted.pt"): "filetype torchscript",
        ("pytorch", "torchscript", "dynamic.pt2"): "filetype pt2",
    }
    for (library, filetype, name), reason in reasons.items():
        assert reason in (frameworks[library].check(heads[name], filetype) or ""), (library, filetype, name)


@pytest.mark.timeout(60)
def test_truncated_or_garbage_files_raise(frameworks, every_file, tmp_path):
    for name, (path, library, filetype) in every_file.items():
        data = path.read_bytes()
        for label, broken in (("truncated", data[: len(data) // 2]), ("garbage", data[:64] + bytes(range(256)) * 4)):
            target = tmp_path / f"{label}-{name}"
            target.write_bytes(broken)
            with pytest.raises(Exception):  # noqa: B017 (any error will do: it must not load nor hang)
                with warnings.catch_warnings():
                    # Torch logs (and warns) what it tries before failing; only the failure matters.
                    warnings.simplefilter("ignore")
                    frameworks[library].load(str(target), filetype)


def test_sniffing_imports_no_library_and_a_missing_one_names_its_extra(every_file):
    """In a fresh interpreter: sniff every file, then load with torch and onnxruntime missing."""
    files = {name: [str(path), library, filetype] for name, (path, library, filetype) in every_file.items()}
    script = textwrap.dedent("""
        import json, sys
        from deepaas_like.frameworks import FrameworkMissing, discover_frameworks
        files = json.loads(sys.argv[1])
        frameworks, broken = discover_frameworks()
        assert not broken, broken
        for name, (path, library, filetype) in files.items():
            with open(path, "rb") as file:
                assert frameworks[library].sniff(file.read(4096), name) == filetype, name
        heavy = sorted(m for m in ("numpy", "sklearn", "joblib", "keras", "tensorflow", "torch", "onnx",
                                   "onnxruntime") if m in sys.modules)
        sys.modules["torch"] = None  # an import of torch now fails as if it were not installed
        sys.modules["onnxruntime"] = None
        missing = {}
        for name in ("scripted.pt", "iris.onnx"):
            path, library, filetype = files[name]
            try:
                frameworks[library].load(path, filetype)
            except FrameworkMissing as exc:
                missing[library] = str(exc)
        print(json.dumps({"heavy": heavy, "missing": missing}))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(files)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    assert "pip install 'deepaas_like[torch]'" in report["missing"]["pytorch"]
    assert "pip install 'deepaas_like[onnx]'" in report["missing"]["onnx"]
