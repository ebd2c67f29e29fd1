"""The served OpenAPI document is a valid OpenAPI 3.1 description."""

import json

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing.exceptions import Unresolvable


def test_served_document_passes_openapi_spec_validator(scratch):
    status, headers, body = scratch.request("GET", "/openapi.json")
    assert status == 200 and headers["content-type"].startswith("application/json")
    document = json.loads(body)
    assert document["openapi"].startswith("3.1")
    validate(document)  # raises OpenAPIValidationError with the failing path


def test_validator_rejects_broken_documents(scratch):
    """The check above can fail: the same document with a dangling $ref, or an
    parameter without its location, does not pass."""
    _status, _headers, body = scratch.request("GET", "/openapi.json")
    document = json.loads(body)
    first_path = next(iter(document["paths"].values()))
    operation = next(iter(first_path.values()))
    operation["responses"]["200"] = {
        "description": "OK",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NoSuchSchema"}}},
    }
    with pytest.raises(Unresolvable, match="NoSuchSchema"):
        validate(document)
    del operation["responses"]["200"]
    operation["parameters"].append({"name": "where", "schema": {"type": "string"}})
    with pytest.raises(OpenAPIValidationError, match='"in" is a required property'):
        validate(document)
