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
        "/rollback",
    }
