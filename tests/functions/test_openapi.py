from __future__ import annotations

import json

from functions.openapi import DOCS, documents


def test_committed_openapi_documents_match_the_handlers() -> None:
    for name, text in documents().items():
        assert (DOCS / name).read_text(encoding="utf-8") == text, f"{name} is stale: run python -m functions.openapi"


def test_inference_document_declares_every_error_status() -> None:
    predict = json.loads(documents()["inference.json"])["paths"]["/predict"]["post"]
    assert {"200", "400", "413", "415", "503"} <= set(predict["responses"])


def test_registry_document_has_every_admin_route() -> None:
    paths = json.loads(documents()["registry.json"])["paths"]
    assert set(paths) == {
        "/models",
        "/models/production",
        "/models/{version}",
        "/models/{version}/promote",
        "/models/{version}/canary",
        "/canary/abort",
        "/rollback",
    }


def _operations() -> list[tuple[str, str, dict]]:
    found = []
    for document in documents().values():
        for path, operations in json.loads(document)["paths"].items():
            found += [(f"{method.upper()} {path}", method, operation) for method, operation in operations.items()]
    return found


def test_every_route_documents_its_success_answer_with_a_schema() -> None:
    for name, _, operation in _operations():
        (success,) = [status for status in operation["responses"] if status.startswith("2")]
        assert "schema" in operation["responses"][success]["content"]["application/json"], name


def test_no_route_documents_a_422_since_validation_failures_are_answered_400() -> None:
    for name, _, operation in _operations():
        assert "422" not in operation["responses"] and "400" in operation["responses"], name


def test_routes_with_a_body_document_413_and_415() -> None:
    for name, method, operation in _operations():
        if method == "post":
            assert {"413", "415"} <= set(operation["responses"]), name
