"""A plugin's arguments described portably (deepaas_like/portable.py, in the plugin's own
environment) and rebuilt in the server (deepaas_like/arguments/portable.py): the same
OpenAPI document and the same validation as the fields the plugin declared."""

import json

import pytest
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema
from webargs import fields, validate

from deepaas_like.arguments import ArgumentSources, ArgumentSpec, File
from deepaas_like.arguments.portable import fields_from_description, response_schema_from_description, unportable
from deepaas_like.errors import ArgumentError
from deepaas_like.legacy import legacy_vocabulary_allowed
from deepaas_like.portable import describe_fields, describe_plugin


def declared() -> dict:
    with legacy_vocabulary_allowed():
        return {
            "count": fields.Int(required=True, validate=validate.Range(min=1, max=10)),
            "ratio": fields.Float(load_default=0.5, validate=validate.Range(min=0, max=1, max_inclusive=False)),
            "label": fields.Str(load_default="a", validate=validate.OneOf(["a", "b"]), metadata={"description": "L"}),
            "code": fields.Str(required=False, validate=[validate.Regexp(r"^[A-Z]{3}$"), validate.Length(equal=3)]),
            "tags": fields.List(fields.Str(), load_default=list, validate=validate.Length(max=3)),
            "when": fields.DateTime(required=False, allow_none=True),
            "flag": fields.Bool(load_default=False),
            "renamed": fields.Int(data_key="other-name", load_default=1),
            # DEEPaaS's own vocabulary: missing=, description=, a file as type="file" in a form
            "data": fields.Field(required=False, missing=None, type="file", location="form", description="A file"),
            "image": File(required=False, metadata={"description": "An image"}),
            "odd": fields.Int(load_default=2, validate=lambda v: v % 2 == 0),
        }


def rebuilt() -> dict:
    return fields_from_description(json.loads(json.dumps(describe_fields(declared()))))


def properties(spec_fields: dict) -> dict:
    converter = MarshmallowPlugin()
    APISpec("t", "1", "3.0.2", plugins=[converter])
    return {name: converter.converter.field2property(f) for name, f in spec_fields.items()}


def test_the_openapi_document_of_the_rebuilt_fields_is_the_plugins_own():
    assert properties(rebuilt()) == properties(declared())


@pytest.mark.parametrize(
    "arguments",
    [
        {"count": 3},
        {"count": 0},
        {"count": 11, "ratio": 1},
        {"count": 2, "label": "c"},
        {"count": 2, "code": "AB"},
        {"count": 2, "code": "ABC", "tags": ["x", "y"]},
        {"count": 2, "tags": ["1", "2", "3", "4"]},
        {"count": 2, "when": "2026-12-06T10:00:00"},
        {"count": 2, "when": "yesterday"},
        {"count": 2, "when": None},
        {"count": 2, "flag": "maybe"},
        {"count": 2, "other-name": 7},
        {"count": 2, "renamed": 7},
        {"count": 2.5},
        {"count": "2"},
        {},
    ],
)
def test_the_rebuilt_fields_accept_and_refuse_what_the_plugins_own_do(arguments):
    def outcome(spec_fields: dict):
        spec = ArgumentSpec("m", "predict", spec_fields)
        try:
            return "ok", dict(spec.load(ArgumentSources(json=dict(arguments))))
        except ArgumentError as exc:
            return "refused", exc.errors

    assert outcome(rebuilt()) == outcome(declared())


def test_what_json_schema_cannot_say_is_named_and_the_response_schema_comes_back():
    described = describe_fields(declared())
    assert unportable(described) == {"odd": ["<lambda>"]}
    assert described["data"]["x-file"] and described["image"]["x-file"]
    assert described["renamed"]["x-data-key"] == "other-name"

    class Response(Schema):
        label = fields.Str(required=True)
        score = fields.Float()

    class Plugin:
        schema = Response

        @staticmethod
        def get_predict_args():
            return declared()

        @staticmethod
        def predict(**kwargs):
            return {}

        @staticmethod
        def get_metadata():
            return {"name": "p", "version": "1.0"}

    description = json.loads(json.dumps(describe_plugin(Plugin())))
    assert description["methods"] == ["get_metadata", "predict"]
    assert description["metadata"] == {"name": "p", "version": "1.0"}
    assert description["train_args"] == {}
    schema = response_schema_from_description(description["schema"])
    assert schema().validate({"label": "x", "score": 0.3}) == {}
    assert "label" in schema().validate({"score": 0.3})
