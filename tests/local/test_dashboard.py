"""`skiff ui` against a running local stack: its guards over HTTP, and its pages in real headless
Chromium (Debian's, driven by playwright; `pytest -k browser` selects those)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from skiff.cli.client import StackClient, StackOutputs
from skiff.dashboard.app import TOKEN_HEADER, DashboardSettings, serve
from skiff.data.dataset import write_csv
from skiff.data.synthetic import generate
from skiff.local.stack import LocalStack, LocalStackConfig

SMALL = {"epochs": 3, "buckets": 4096, "embedding_dim": 16, "char_ngrams": "none"}
TOKEN = "test-token"
SCREENSHOTS = os.environ.get("SKIFF_SCREENSHOTS")  # set to docs/images to refresh the README's picture


@dataclass
class Dashboard:
    url: str
    client: StackClient
    versions: list[str]  # oldest first
    outputs_file: Path  # for `skiff ... --stack`


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """Two trained versions (the first serves, or the gate's choice) and one rejected upload."""
    work = tmp_path_factory.mktemp("dashboard-stack")
    config = LocalStackConfig(work_dir=work / "stack", hyperparameters=SMALL, alias_ttl_seconds=0.2)
    with LocalStack(config) as stack:
        outputs_file = work / "outputs.json"
        outputs_file.write_text(json.dumps(stack.outputs()))
        client = StackClient(StackOutputs.from_dict(stack.outputs(), "the test stack"))
        versions = []
        for batch, seed in enumerate((3, 11), start=1):
            path = work / f"batch{batch}.csv"
            write_csv(path, generate(600, seed=seed))
            outcome = client.upload_outcome(client.upload(path))
            versions.append(client.wait_for_job(outcome["dataset_version"])["version"])
        bad = work / "broken-export.csv"
        bad.write_bytes(b"text,label\nfine,ham\n,spam\n")
        assert client.upload_outcome(client.upload(bad))["status"] == "rejected"
        server = serve(client, 0, DashboardSettings(token=TOKEN, refresh_seconds=0.5))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Dashboard(f"http://127.0.0.1:{server.server_port}", client, versions, outputs_file)
        finally:
            server.shutdown()
            server.server_close()


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None, body: Any = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def serving_version(client: StackClient) -> str:
    return client.production()["production"]["version"]


def answering_version(dashboard: Dashboard, expected: str, timeout: float = 10) -> str:
    """What `skiff predict` answers with, once it is ``expected`` or the time is up (the alias cache)."""
    import contextlib
    import io

    from skiff.cli.main import main

    deadline = time.monotonic() + timeout
    while True:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(["predict", "--stack", str(dashboard.outputs_file), "--json", "is this thing on?"]) == 0
        version = json.loads(printed.getvalue())["model_version"]
        if version == expected or time.monotonic() > deadline:
            return version
        time.sleep(0.2)


# ---- guards and errors, over plain HTTP ------------------------------------------------------


def test_a_change_without_the_pages_token_is_refused(dashboard: Dashboard) -> None:
    before = serving_version(dashboard.client)
    status, body = fetch(f"{dashboard.url}/api/rollback", "POST", {"Content-Type": "application/json"}, {})
    assert status == 403 and TOKEN_HEADER in json.loads(body)["error"]["message"]
    assert serving_version(dashboard.client) == before


def test_a_request_for_another_host_name_is_refused(dashboard: Dashboard) -> None:
    status, body = fetch(dashboard.url + "/", headers={"Host": "attacker.example"})
    assert status == 403 and "attacker.example" in body


def test_an_unknown_version_is_a_404_page_naming_it(dashboard: Dashboard) -> None:
    status, body = fetch(f"{dashboard.url}/versions/v-does-not-exist")
    assert status == 404 and "v-does-not-exist" in body


def test_promoting_an_unknown_version_answers_the_registrys_error(dashboard: Dashboard) -> None:
    status, body = fetch(
        f"{dashboard.url}/api/versions/v-nope/promote",
        "POST",
        {TOKEN_HEADER: TOKEN, "Content-Type": "application/json"},
        {},
    )
    assert status in (400, 404) and json.loads(body)["error"]["message"]


def test_the_job_log_page_shows_the_jobs_output(dashboard: Dashboard) -> None:
    job = dashboard.client.jobs()[0]["name"]
    status, body = fetch(f"{dashboard.url}/jobs/{job}/log")
    assert status == 200 and "epoch" in body.lower()


# ---- in a real browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = os.environ.get("SKIFF_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("expected Debian's chromium for the browser tests (got: none); `apt-get install chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == [], f"expected no script errors (got: {errors})"


def test_browser_models_table_lists_every_trained_version(dashboard: Dashboard, page: Any, tmp_path: Path) -> None:
    page.goto(dashboard.url + "/")
    rows = page.locator("#models tbody tr")
    assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.version)")) == sorted(dashboard.versions)
    serving = serving_version(dashboard.client)
    assert page.locator("#models tr.serving").get_attribute("data-version") == serving
    assert page.locator("#models tr.serving .badge").inner_text() == "serving"
    reasons = page.locator("#models tbody td.gate .reason").all_inner_texts()
    assert len(reasons) == 2 and all(reason.strip() for reason in reasons), reasons  # every verdict says why
    target = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1280, "height": 200})  # a full-page picture grows to the content
    picture = page.screenshot(path=str(target / "dashboard-models.png"), full_page=True)
    assert len(picture) > 10_000


def test_browser_models_table_sorts_by_a_column(dashboard: Dashboard, page: Any) -> None:
    page.goto(dashboard.url + "/")
    header = page.locator("#models th", has_text="created")
    header.click()
    ascending = page.locator("#models tbody tr").evaluate_all("rows => rows.map(r => r.dataset.version)")
    header.click()
    descending = page.locator("#models tbody tr").evaluate_all("rows => rows.map(r => r.dataset.version)")
    assert ascending == dashboard.versions and descending == dashboard.versions[::-1]


def test_browser_version_page_shows_its_report_picture_and_metrics(dashboard: Dashboard, page: Any) -> None:
    version = dashboard.versions[0]
    page.goto(f"{dashboard.url}/versions/{version}")
    page.wait_for_function("document.getElementById('report').complete")
    width, height = page.locator("#report").evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert width > 100 and height > 100
    assert page.locator("#per-class tbody tr").count() >= 2
    assert "ds-000001" in page.locator("#lineage").inner_text()
    assert page.locator("#parts tbody tr").all_inner_texts()[0].startswith("incoming/batch1.csv")  # its upload
    assert "epochs" in page.locator("#hyperparameters").inner_text()


def test_browser_cancelled_rollback_changes_nothing(dashboard: Dashboard, page: Any) -> None:
    before = serving_version(dashboard.client)
    page.goto(dashboard.url + "/")
    page.get_by_role("button", name="Roll back").click()
    page.get_by_role("button", name="Cancel").click()
    assert page.locator("#outcome").is_hidden()
    assert serving_version(dashboard.client) == before


def test_browser_confirmed_rollback_changes_which_version_answers(dashboard: Dashboard, page: Any) -> None:
    first, second = dashboard.versions
    if serving_version(dashboard.client) != second:
        dashboard.client.promote(second, "the browser test needs a version to roll back from")
    page.goto(dashboard.url + "/")
    page.get_by_role("button", name="Roll back").click()
    assert second in page.locator("#confirm-question").inner_text()
    page.locator("#confirm-reason").fill("browser test rollback")
    page.get_by_role("button", name="Confirm").click()
    outcome = page.locator("#outcome")
    outcome.wait_for(state="visible")
    assert outcome.inner_text() == f"production is now {first} (was {second})"
    # Without a reload, the table already marks the new serving version.
    page.locator(f"#models tr.serving[data-version='{first}']").wait_for()
    assert answering_version(dashboard, first) == first
    assert dashboard.client.history()[0]["reason"] == "browser test rollback"


def test_browser_promote_from_a_version_page(dashboard: Dashboard, page: Any) -> None:
    current = serving_version(dashboard.client)
    other = next(v for v in dashboard.versions if v != current)
    page.goto(f"{dashboard.url}/versions/{other}")
    page.get_by_role("button", name="Promote").click()
    page.get_by_role("button", name="Confirm").click()
    page.locator("#outcome", has_text=f"production is now {other}").wait_for()
    assert answering_version(dashboard, other) == other


def test_browser_history_lists_alias_changes(dashboard: Dashboard, page: Any) -> None:
    page.goto(dashboard.url + "/history")
    rows = page.locator("#history tbody tr")
    assert rows.count() == len(dashboard.client.history()) >= 1
    assert dashboard.versions[0] in rows.last.inner_text()
    # where the inference function's alias went for the newest change: a published version
    newest = dashboard.client.history()[0]["function_version"]
    assert newest and rows.first.locator(".function-version").inner_text() == newest


def test_browser_models_page_shows_a_running_canary(dashboard: Dashboard, page: Any) -> None:
    other = next(m["version"] for m in dashboard.client.models() if m["status"] in ("retired", "candidate"))
    dashboard.client.start_canary(other, 10, 30, "browser test canary")
    try:
        page.goto(dashboard.url + "/")
        canary = page.locator(".canary")
        assert other in canary.inner_text() and "10" in canary.inner_text()
    finally:
        dashboard.client.abort_canary("browser test over")


def test_browser_data_page_shows_datasets_and_the_rejected_uploads_reason(dashboard: Dashboard, page: Any) -> None:
    page.goto(dashboard.url + "/data")
    assert page.locator("#datasets tbody tr").count() == len(dashboard.client.datasets()) >= 2
    rejection = page.locator("article.rejection[data-key='incoming/broken-export.csv']")
    assert "line 3: empty text" in rejection.inner_text()
    assert "quarantine/broken-export.csv" in rejection.inner_text()


def test_browser_jobs_page_links_each_jobs_log(dashboard: Dashboard, page: Any) -> None:
    page.goto(dashboard.url + "/jobs")
    assert page.locator("#jobs tbody tr").count() == len(dashboard.client.jobs()) >= 2
    assert page.locator("#jobs tbody tr").first.locator("td.n").inner_text().endswith(" s")  # its duration
    page.locator("#jobs tbody tr").first.get_by_role("link", name="log").click()
    assert page.locator("#log").inner_text().strip() != ""


def test_browser_pages_refresh_by_themselves_while_a_job_runs(dashboard: Dashboard, page: Any, tmp_path: Path) -> None:
    path = tmp_path / "batch3.csv"
    write_csv(path, generate(600, seed=21))
    outcome = dashboard.client.upload_outcome(dashboard.client.upload(path))
    job = f"{dashboard.client.outputs.job_prefix}-{outcome['dataset_version']}"
    deadline = time.monotonic() + 30
    while not any(j["name"] == job and j["status"] == "InProgress" for j in dashboard.client.jobs()):
        assert time.monotonic() < deadline, "expected the third job to start"
        time.sleep(0.1)
    page.goto(dashboard.url + "/jobs")
    page.evaluate("window.loadedOnce = true")  # gone if the page were reloaded
    assert page.evaluate("document.body.hasAttribute('data-live')"), "expected the job still running at load"
    page.locator(f"#jobs tr[data-job='{job}'] .status-completed").wait_for(timeout=120_000)
    assert page.evaluate("window.loadedOnce") is True
    assert not page.evaluate("document.body.hasAttribute('data-live')")  # it stops once nothing runs
    dashboard.versions.append(dashboard.client.wait_for_job(outcome["dataset_version"])["version"])


def test_browser_pages_fit_a_phone_screen(dashboard: Dashboard, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone = context.new_page()
    try:
        for path in ("/", "/history", "/jobs", "/data", f"/versions/{dashboard.versions[0]}"):
            phone.goto(dashboard.url + path)
            overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} is {overflow}px wider than the phone"
    finally:
        context.close()
