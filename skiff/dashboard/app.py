"""``skiff ui``: a web dashboard over the same calls the CLI makes.

Flask (and its Jinja2 templates, which escape every value) serves pages rendered from
:class:`skiff.cli.client.StackClient`: the registry API for versions, history, promotion and
rollback (signed with the user's credentials for a deployed stack), S3 for report pictures and
dataset/rejection records, SageMaker and CloudWatch Logs for jobs. Nothing new is exposed in
the cloud: the dashboard runs on the user's machine, bound to 127.0.0.1.

Two guards make a local server with a "promote" button safe to leave running: requests must
name this server's own host (a DNS-rebinding page cannot talk to it), and a change must carry
the per-process token the pages hold in a header (a cross-site form cannot set one).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from flask import Flask, abort, jsonify, render_template, request
from werkzeug.serving import BaseWSGIServer, make_server

from skiff.cli.client import ApiError, StackClient
from skiff.cli.tables import why
from skiff.errors import NotFoundError, SkiffError
from skiff.model.artifact import MANIFEST, METRICS, REPORT

TOKEN_HEADER = "X-Skiff-Dashboard"
RUNNING_JOB_STATES = ("Pending", "InProgress", "Starting", "Downloading", "Training", "Uploading")
REFRESH_SECONDS = 3
LOCAL_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class DashboardSettings:
    refresh_seconds: float = REFRESH_SECONDS
    models_limit: int = 100
    token: str = ""


def create_app(stack: StackClient, settings: DashboardSettings | None = None) -> Flask:
    settings = settings or DashboardSettings(token=secrets.token_urlsafe(24))
    app = Flask(__name__)
    app.config["SKIFF_TOKEN"] = settings.token

    @app.before_request
    def only_this_host() -> None:
        if request.host.rsplit(":", 1)[0].strip("[]") not in (*LOCAL_HOSTS, "::1"):
            abort(403, f"expected a request for 127.0.0.1 or localhost (got: Host {request.host!r})")

    @app.context_processor
    def everywhere() -> dict[str, Any]:
        return {
            "stack_name": stack.outputs.job_prefix,
            "stack_kind": "local stack" if stack.outputs.is_local else f"deployed stack ({stack.region})",
            "token": settings.token,
            "token_header": TOKEN_HEADER,
            "refresh_seconds": settings.refresh_seconds,
        }

    @app.get("/")
    def models() -> str:
        versions = stack.models(limit=settings.models_limit)
        production = stack.production()
        history = production["history"]
        jobs = stack.jobs(limit=20)
        return render_template(
            "models.html",
            page="models",
            models=versions,
            reasons={m["version"]: why(m, history) for m in versions},
            serving=next((m["version"] for m in versions if m["status"] == "production"), None),
            canary=production.get("canary"),
            running=[j for j in jobs if j["status"] in RUNNING_JOB_STATES],
            live=any(j["status"] in RUNNING_JOB_STATES for j in jobs),
        )

    @app.get("/versions/<version>")
    def version(version: str) -> str:
        model = _model_or_404(stack, version)
        metrics = _json_file(stack, model, METRICS)
        manifest = _json_file(stack, model, MANIFEST)
        dataset = model["lineage"].get("dataset_version")
        return render_template(
            "version.html",
            page="models",
            model=model,
            parts=_parts_or_none(stack, dataset) if dataset else None,
            metrics=metrics,
            hyperparameters=(manifest or {}).get("hyperparameters") or {},
            has_report=model.get("artifact_uri") is not None,
            production=stack.production().get("production"),
        )

    @app.get("/versions/<version>/report.png")
    def report(version: str) -> Any:
        picture = stack.artifact_file(_model_or_404(stack, version), REPORT)
        if picture is None:
            abort(404, f"expected a report picture for {version} (got: none in its artifact)")
        return app.response_class(picture, mimetype="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/history")
    def history() -> str:
        return render_template("history.html", page="history", changes=stack.history())

    @app.get("/jobs")
    def jobs() -> str:
        listed = stack.jobs(limit=50)
        return render_template(
            "jobs.html",
            page="jobs",
            jobs=listed,
            console_urls={j["name"]: stack.logs_console_url(j["name"]) for j in listed},
            live=any(j["status"] in RUNNING_JOB_STATES for j in listed),
        )

    @app.get("/jobs/<name>/log")
    def job_log(name: str) -> str:
        try:
            lines = stack.log_lines(name)
            status = stack.job_status(name)
        except NotFoundError as exc:
            abort(404, str(exc))
        return render_template(
            "job_log.html",
            page="jobs",
            name=name,
            lines=lines,
            status=status,
            console_url=stack.logs_console_url(name),
            live=status in RUNNING_JOB_STATES,
        )

    @app.get("/data")
    def data() -> str:
        return render_template(
            "data.html", page="data", datasets=stack.datasets(limit=50), rejections=stack.rejections(limit=50)
        )

    @app.post("/api/versions/<version>/promote")
    def promote(version: str) -> Any:
        _require_token(settings.token)
        return _change(lambda reason: stack.promote(version, reason), "promoted from the skiff dashboard")

    @app.post("/api/rollback")
    def rollback() -> Any:
        _require_token(settings.token)
        return _change(stack.rollback, "rolled back from the skiff dashboard")

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Any:
        return _error_page(exc.status, str(exc))

    @app.errorhandler(SkiffError)
    def skiff_error(exc: SkiffError) -> Any:
        return _error_page(502, str(exc))

    @app.errorhandler(403)
    @app.errorhandler(404)
    def http_error(exc: Any) -> Any:
        return _error_page(exc.code, exc.description)

    return app


def _parts_or_none(stack: StackClient, dataset_version: str) -> list[dict[str, Any]] | None:
    """The dataset version's uploads; None when its manifest cannot be read (the page still shows)."""
    from botocore.exceptions import ClientError

    try:
        return stack.dataset_parts(dataset_version)
    except (ClientError, SkiffError, KeyError, ValueError):  # lineage detail: never hides the version
        return None


def _model_or_404(stack: StackClient, version: str) -> dict[str, Any]:
    try:
        return stack.model(version)
    except ApiError as exc:
        if exc.status in (400, 404):
            abort(404, f"expected a registered model version (got: {version!r}; {exc})")
        raise


def _json_file(stack: StackClient, model: dict[str, Any], name: str) -> dict[str, Any] | None:
    import json

    body = stack.artifact_file(model, name)
    return json.loads(body) if body else None


def _require_token(token: str) -> None:
    if not secrets.compare_digest(request.headers.get(TOKEN_HEADER, ""), token):
        abort(403, f"expected the dashboard's {TOKEN_HEADER} header (got: none or another); reload the page")


def _change(call: Any, default_reason: str) -> Any:
    body = request.get_json(silent=True) or {}
    reason = str(body.get("reason") or default_reason)
    try:
        return jsonify(call(reason))
    except ApiError as exc:
        return jsonify({"error": {"code": exc.code, "message": str(exc)}}), exc.status


def _error_page(status: int, message: str) -> Any:
    if request.path.startswith("/api/"):
        return jsonify({"error": {"code": "dashboard", "message": message}}), status
    return render_template("error.html", page="", status=status, message=message), status


def serve(stack: StackClient, port: int = 0, settings: DashboardSettings | None = None) -> BaseWSGIServer:
    """A threaded server on 127.0.0.1 (``port`` 0: any free one); call ``serve_forever`` on it."""
    return make_server("127.0.0.1", port, create_app(stack, settings), threaded=True)
