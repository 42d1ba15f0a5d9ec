"""ArgumentSpec validates each field with its own deserialize(); it must agree exactly
with marshmallow's Schema.load for argument dicts (values, defaults and messages),
except that integers are never truncated (2.7 is refused where marshmallow gives 2)."""

import datetime
import json
import warnings

import marshmallow
import pytest
from marshmallow.warnings import RemovedInMarshmallow4Warning
from multidict import MultiDict
from webargs import fields, validate

from deepaas_like.arguments import ArgumentSources, ArgumentSpec
from deepaas_like.errors import ArgumentError


def declared():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RemovedInMarshmallow4Warning)
        return {
            "x": fields.Float(required=True, validate=validate.Range(min=0)),
            "n": fields.Int(missing=3),
            "name": fields.Str(allow_none=True, data_key="Name"),
            "when": fields.DateTime(),
            "tags": fields.List(fields.Str(), load_default=list),
            "inner": fields.Nested({"a": fields.Int(required=True)}),
            "flag": fields.Bool(),
            "choice": fields.Str(validate=validate.OneOf(["a", "b"])),
            "renamed": fields.Int(attribute="target"),
        }


CASES = [
    {"x": 1.5},
    {"x": "2", "n": "7", "Name": None, "tags": ["a", "b"], "flag": "true", "renamed": 4},
    {"x": -1},
    {},
    {"x": "nan"},
    {"x": True},
    {"x": 1, "n": "many", "when": "not a date", "inner": {"a": "x"}, "choice": "c"},
    {"x": 1, "when": "2026-11-22T10:00:00", "inner": {"a": 1}, "choice": "a"},
    {"x": 1, "Name": 5, "inner": {}, "tags": [1]},
]


@pytest.mark.parametrize("data", CASES)
def test_same_result_as_schema_load(data):
    spec = ArgumentSpec("m", "predict", declared())
    schema = spec.schema_class()
    try:
        expected, expected_errors = schema.load(data), None
    except marshmallow.ValidationError as exc:
        expected, expected_errors = None, exc.messages
    try:
        got, errors = spec.load(ArgumentSources(json=data)), None
    except ArgumentError as exc:
        got, errors = None, exc.errors
    assert errors == (json.loads(json.dumps(expected_errors)) if expected_errors else None)  # keys as JSON has them
    assert got == expected
    if got is not None:
        assert callable(declared()["tags"].load_default) and got["tags"] == data.get("tags", [])
        assert isinstance(got.get("when", datetime.datetime.now()), datetime.datetime)


def test_query_values_and_lists():
    spec = ArgumentSpec("m", "predict", declared())
    query = MultiDict([("x", "1"), ("x", "9"), ("tags", "a"), ("tags", "b")])
    assert spec.load(ArgumentSources(query=query)) == {"x": 1.0, "n": 3, "tags": ["a", "b"]}


@pytest.mark.parametrize("value, expected", [
    (2, 2), ("2", 2), (2.0, 2), ("2.0", 2), ("-3", -3), (-4.0, -4), (1e20, 10**20), (" 5 ", 5)])
def test_integral_values_are_accepted_as_integers(value, expected):
    spec = ArgumentSpec("m", "predict", declared())
    got = spec.load(ArgumentSources(json={"x": 1, "n": value, "renamed": value}))
    assert got["n"] == expected and type(got["n"]) is int
    assert got["target"] == expected


@pytest.mark.parametrize("value", [2.7, "2.7", 2.589e-42, "2.589e-42", "1e-300", "inf", "-inf", "nan", 1e308 * 10])
def test_fractional_or_infinite_values_are_refused_naming_the_argument(value):
    spec = ArgumentSpec("m", "predict", declared())
    with pytest.raises(ArgumentError) as caught:
        spec.load(ArgumentSources(json={"x": 1, "n": value}))
    assert caught.value.errors == {"n": ["Not a valid integer."]}
    assert "n: Not a valid integer." in caught.value.message


def test_lists_of_integers_are_checked_item_by_item():
    spec = ArgumentSpec("m", "predict", {"ids": fields.List(fields.Int(), required=True)})
    assert spec.load(ArgumentSources(query=MultiDict([("ids", "1"), ("ids", "2.0")]))) == {"ids": [1, 2]}
    with pytest.raises(ArgumentError) as caught:
        spec.load(ArgumentSources(json={"ids": [1, 2.5]}))
    assert caught.value.errors == {"ids": ["Not a valid integer."]}
