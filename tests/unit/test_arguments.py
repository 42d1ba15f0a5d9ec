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

from deepaas_like.arguments import ArgumentSources, ArgumentSpec, File
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
        got, errors = spec.load(ArgumentSources(json=data, lenient=True)), None  # as the CLI and OIP rows read
    except ArgumentError as exc:
        got, errors = None, exc.errors
    assert errors == (json.loads(json.dumps(expected_errors)) if expected_errors else None)  # keys as JSON has them
    assert got == expected
    if got is not None:
        assert callable(declared()["tags"].load_default) and got["tags"] == data.get("tags", [])
        assert isinstance(got.get("when", datetime.datetime.now()), datetime.datetime)


QUICK_FIELDS = {  # the exact classes ArgumentSpec converts itself, without marshmallow's call chain
    "f": lambda: fields.Float(),
    "f_nan": lambda: fields.Float(allow_nan=True),
    "f_range": lambda: fields.Float(validate=validate.Range(min=0, max=10)),
    "i": lambda: fields.Int(),
    "i_strict": lambda: fields.Int(strict=True),
    "s": lambda: fields.Str(),
    "s_choice": lambda: fields.Str(validate=validate.OneOf(["a", "b"])),
}
QUICK_VALUES = [
    "5.1",
    " 5.1 ",
    "1_000",
    "1e999",
    "-1e999",
    "nan",
    "inf",
    "-Infinity",
    "abc",
    "",
    "0x10",
    "3",
    " 3 ",
    "٣",
    "a",
    3,
    -7,
    2.5,
    float("nan"),
    float("inf"),
    10**400,
    True,
    False,
    [1],
    {"a": 1},
]


@pytest.mark.parametrize("name", QUICK_FIELDS)
def test_quick_conversions_agree_with_marshmallow(name):
    """Every value, from the query string (text) and from JSON: the same value or the same
    error as marshmallow's Schema.load (integral values apart: see the module's note)."""
    spec = ArgumentSpec("m", "predict", {name: QUICK_FIELDS[name]()})
    schema = spec.schema_class()
    for value in QUICK_VALUES:
        sources = [ArgumentSources(json={name: value}, lenient=True)]
        if isinstance(value, str):
            sources.append(ArgumentSources(query=MultiDict([(name, value)])))
        for source in sources:
            if name.startswith("i") and not name.endswith("strict") and isinstance(value, (str, float)):
                continue  # integral values: ArgumentSpec's own rule, tested above
            try:
                expected, expected_errors = schema.load({name: value}), None
            except (marshmallow.ValidationError, OverflowError) as exc:
                expected, expected_errors = None, getattr(exc, "messages", None)
            try:
                got, errors = spec.load(source), None
            except ArgumentError as exc:
                got, errors = None, exc.errors
            assert repr((got, errors)) == repr((expected, expected_errors)), (name, value)  # repr: nan == nan
            if got:
                assert type(got[name]) is type(expected[name]), (name, value)


def test_query_values_and_lists():
    spec = ArgumentSpec("m", "predict", declared())
    query = MultiDict([("x", "1"), ("x", "9"), ("tags", "a"), ("tags", "b")])
    assert spec.load(ArgumentSources(query=query)) == {"x": 1.0, "n": 3, "tags": ["a", "b"]}


@pytest.mark.parametrize(
    "value, expected", [(2, 2), ("2", 2), (2.0, 2), ("2.0", 2), ("-3", -3), (-4.0, -4), (1e20, 10**20), (" 5 ", 5)]
)
def test_integral_values_are_accepted_as_integers(value, expected):
    spec = ArgumentSpec("m", "predict", declared())
    got = spec.load(ArgumentSources(json={"x": 1, "n": value, "renamed": value}, lenient=True))
    assert got["n"] == expected and type(got["n"]) is int
    assert got["target"] == expected


@pytest.mark.parametrize("value", [2.7, "2.7", 2.589e-42, "2.589e-42", "1e-300", "inf", "-inf", "nan", 1e308 * 10])
def test_fractional_or_infinite_values_are_refused_naming_the_argument(value):
    spec = ArgumentSpec("m", "predict", declared())
    with pytest.raises(ArgumentError) as caught:
        spec.load(ArgumentSources(json={"x": 1, "n": value}, lenient=True))
    assert caught.value.errors == {"n": ["Not a valid integer."]}
    assert "n: Not a valid integer." in caught.value.message


def test_lists_of_integers_are_checked_item_by_item():
    spec = ArgumentSpec("m", "predict", {"ids": fields.List(fields.Int(), required=True)})
    assert spec.load(ArgumentSources(query=MultiDict([("ids", "1"), ("ids", "2.0")]))) == {"ids": [1, 2]}
    with pytest.raises(ArgumentError) as caught:
        spec.load(ArgumentSources(json={"ids": [1, 2.5]}))
    assert caught.value.errors == {"ids": ["Not a valid integer."]}


def plain_declared():
    """Text and numbers only: a declaration ArgumentSpec reads in one pass (its direct path)."""
    return {
        "x": fields.Float(required=True),
        "k": fields.Int(load_default=3, validate=validate.Range(min=1, max=3)),
        "mode": fields.Str(load_default="echo", validate=validate.OneOf(["echo", "raise"])),
        "note": fields.Str(),  # optional, no default: absent from the arguments when not sent
        "stamp": fields.Str(load_default=lambda: "now"),
        "Name": fields.Str(data_key="who", attribute="person"),
        "accept": fields.Str(
            load_default="application/json", validate=validate.OneOf(["application/json", "text/plain"])
        ),
    }


PLAIN_CASES = [  # (query, form, json, negotiated Accept)
    ({"x": "1.5"}, None, None, None),
    ({"x": "1.5", "k": "2", "mode": "raise", "note": "hi", "who": "ann"}, None, None, "text/plain"),
    (None, {"x": "2", "k": "3"}, None, None),
    (None, None, {"x": 2, "k": 1, "stamp": "then"}, None),
    ({"x": "1"}, None, {"k": 2}, None),  # two places
    ({"x": "1", "k": "2.0"}, None, None, None),  # integral text
    ({"x": "1", "k": "9"}, None, None, None),  # out of range
    ({"x": "1", "mode": "other"}, None, None, None),
    ({"k": "2"}, None, None, None),  # required missing
    ({"x": "1", "typo": "1"}, None, None, None),
    ({"x": "1", "accept": "text/plain"}, None, None, None),
    ({"x": "1", "accept": "image/png"}, None, None, None),
    ([("x", "1"), ("x", "2")], None, None, None),  # repeated
    ({"x": "abc"}, None, None, None),
    (None, None, {"x": None}, None),
    (None, None, {"x": True}, None),
    (None, None, {"x": [1]}, None),
    (None, None, {"x": 1, "who": 5}, None),
    ({}, None, None, None),
]


def _load(spec, case):
    query, form, body, negotiated = case
    sources = ArgumentSources(
        query=MultiDict(query or {}), form=MultiDict(form or {}), json=body, negotiated_accept=negotiated
    )
    try:
        return spec.load(sources), None
    except ArgumentError as exc:
        return None, (exc.message, exc.errors)


@pytest.mark.parametrize("case", PLAIN_CASES)
def test_plain_arguments_read_in_one_pass_give_what_the_full_check_gives(case):
    """The direct path (one source, each argument once and simply accepted) answers as the
    full check does, and leaves everything else (errors included) to it."""
    direct, full = ArgumentSpec("m", "predict", plain_declared()), ArgumentSpec("m", "predict", plain_declared())
    full._direct = None  # the full check only
    assert direct._direct is not None
    assert _load(direct, case) == _load(full, case)


def test_ordinary_requests_take_the_direct_path_and_the_rest_do_not():
    spec = ArgumentSpec("m", "predict", plain_declared())
    query = MultiDict({"x": "1.5", "k": "2", "who": "ann"})
    taken = spec._load_direct(ArgumentSources(query=query, negotiated_accept="text/plain"))
    assert taken == {"x": 1.5, "k": 2, "mode": "echo", "stamp": "now", "person": "ann", "accept": "text/plain"}
    assert spec._load_direct(ArgumentSources(json={"x": 2})) == {
        "x": 2.0,
        "k": 3,
        "mode": "echo",
        "stamp": "now",
        "accept": "application/json",
    }
    for sent in ({"x": "1", "k": "9"}, {"x": "1", "accept": "text/plain"}, {"k": "2"}, {"x": "1", "typo": "1"}):
        assert spec._load_direct(ArgumentSources(query=MultiDict(sent))) is None, sent
    assert ArgumentSpec("m", "predict", declared())._direct is None  # lists, nested, dates: the full check
    assert ArgumentSpec("m", "predict", {"f": File(), "x": fields.Float()})._direct is None


def test_a_json_body_is_typed_strictly_and_the_lenient_sources_read_text():
    spec = ArgumentSpec("m", "predict", declared())
    for sent, named in (
        ({"x": "5.1"}, "x"),
        ({"x": 1, "n": "3"}, "n"),
        ({"x": 1, "flag": "true"}, "flag"),
        ({"x": 1, "flag": 0}, "flag"),
    ):
        with pytest.raises(ArgumentError) as caught:
            spec.load(ArgumentSources(json=sent))
        assert list(caught.value.errors) == [named], sent
    assert spec.load(ArgumentSources(json={"x": "5.1", "n": "3"}, lenient=True))["x"] == 5.1
    assert spec.load(ArgumentSources(query=MultiDict([("x", "5.1")])))["x"] == 5.1
