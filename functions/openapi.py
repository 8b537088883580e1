"""The OpenAPI documents of the two HTTP APIs, generated from the handlers' own routes.

python -m functions.openapi          # rewrite docs/openapi/*.json
python -m functions.openapi --check  # exit 1 if the committed documents are stale
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent / "docs" / "openapi"


def documents() -> dict[str, str]:
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Skiff")
    from functions.inference.handler import app as inference
    from functions.registry_api.handler import app as registry

    def render(app: object, title: str, description: str) -> str:
        schema = app.get_openapi_json_schema(title=title, version="1", description=description)  # type: ignore[attr-defined]
        return json.dumps(as_served(json.loads(schema)), indent=2, sort_keys=True) + "\n"

    return {
        "inference.json": render(
            inference, "Skiff inference API", "POST /predict: classify text with the production model."
        ),
        "registry.json": render(
            registry, "Skiff registry admin API", "List, promote and roll back model versions (IAM-authorized)."
        ),
    }


def as_served(document: dict[str, Any]) -> dict[str, Any]:
    """Powertools documents every request-validation failure as a 422 with its own body; the
    handlers answer those as 400 with the ErrorBody every route documents (skiff/serve/http.py),
    so the 422 entries and their schemas go."""
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None and "400" not in responses:
                raise ValueError(f"expected {method.upper()} {path} to document its 400 (got: only Powertools' 422)")
    text = json.dumps(document["paths"])
    schemas = document.get("components", {}).get("schemas", {})
    if "#/components/schemas/HTTPValidationError" not in text:
        schemas.pop("HTTPValidationError", None)
        if "#/components/schemas/ValidationError" not in json.dumps(schemas):
            schemas.pop("ValidationError", None)
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    stale = []
    for name, text in documents().items():
        path = DOCS / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            DOCS.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale OpenAPI documents: {stale}; run: python -m functions.openapi", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
