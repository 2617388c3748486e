"""The MLflow UI as a person sees it, in a real (headless) Chromium: after a tiny `dvc repro`,
``mlflow server`` serves the project's store and the browser checks that the experiment's runs
table lists every stage run with its metrics, that two runs open in the compare view and that
the registered model's page shows its aliases. Screenshots of each page are saved (the folder
is printed) so a reviewer sees what the test saw.

Why a browser and not the REST API: the API can hold every run while the UI shows none of them.
MLflow 3.x opens an experiment on its GenAI overview (traces; none here), and a user has to find
the "Model training" switch to reach the runs; this test takes that path, as the README says.

Chromium comes from the Debian package (``apt-get install chromium``) and is driven by the
``playwright`` package (the ``ui`` extra) through ``executable_path``: ``playwright install``
downloads its own browser from a CDN, which CI machines may not reach. The test skips, saying
which, when either is missing; ``.ci/run`` installs both.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .project import REPO, make_project, run
from .servers import mlflow_server

pytestmark = pytest.mark.e2e

# The smallest pipeline that still registers a model: this module checks what the UI shows, not
# learning. (~80 s of the module's time on 2 cores; the browser part takes ~20 s.)
UI_PARAMS = {
    "data": {"sample": {"n_documents": 200, "n_labeled_train": 200, "n_labeled_test": 100}},
    "pretrain": {"max_steps": 10, "val_every": 5, "val_batches": 2, "warmup_steps": 2},
    "finetune": {"max_steps": 6, "val_every": 3, "warmup_steps": 2},
    "evaluate": {"ppl_max_batches": 2},
}
# One metric per stage that has metrics: the column the test adds to the runs table and the run
# whose row must show its value (export and register log none).
STAGE_METRICS = {
    "clean": "clean/docs_out",
    "tokenize": "tokenize/train_tokens",
    "pretrain": "final/val_loss",
    "finetune": "final/loss",
    "evaluate": "test/acc",
}
STAGES = ["clean", "tokenize", "pretrain", "finetune", "evaluate", "export", "register"]
MODEL = "lmops-classifier"
# What the UI needs at most to render a page on a busy 2-core machine (milliseconds).
UI_TIMEOUT_MS = 60_000
# MLflow 3.x opens its assistant panel and a "Detect Issues" tip over the overview on a first
# visit; marked as seen, they leave the pages their width and take no clicks.
FIRST_VISIT_SEEN = """
localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
localStorage.setItem('mlflow.detectIssues.guidanceShown_v1', 'true');
"""


def screenshot_dir(request: pytest.FixtureRequest) -> Path:
    """``$LMOPS_TEST_ARTIFACTS/mlflow-ui`` (default ``<repo>/test-artifacts``, git-ignored):
    outside pytest's temp folders so CI can keep the screenshots; announced on the terminal
    even under output capture."""
    folder = Path(os.environ.get("LMOPS_TEST_ARTIFACTS", REPO / "test-artifacts")) / "mlflow-ui"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\nMLflow UI screenshots: {folder}")
    return folder


def chromium_path() -> str:
    """The Debian Chromium binary, or skip with the way to install it."""
    pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install -e '.[ui]'"
    )
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Chromium is not installed: apt-get install chromium (.ci/run does)")
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chromium_path()  # skip before the pipeline's minute and a half when there is no browser
    root = make_project(tmp_path_factory.mktemp("ui") / "proj", UI_PARAMS)
    run(["dvc", "repro"], root)
    return root


@pytest.fixture(scope="module")
def server(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("ui-server") / "mlflow-server.log"
    with mlflow_server(f"sqlite:///{project / 'mlflow.db'}", project / "mlartifacts", log) as uri:
        yield uri


@pytest.fixture(scope="module")
def runs(project: Path) -> dict[str, Any]:
    """The stage runs by stage, read through the client: what the UI must show."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lmops")
    assert experiment is not None
    found = client.search_runs([experiment.experiment_id], max_results=100)
    by_stage = {r.data.tags["lmops.stage"]: r for r in found}
    assert sorted(by_stage) == sorted(STAGES), sorted(by_stage)
    return by_stage


@pytest.fixture(scope="module")
def shots(request: pytest.FixtureRequest, project: Path) -> Path:
    return screenshot_dir(request)


@pytest.fixture(scope="module")
def browser(project: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # --no-sandbox: Chromium's sandbox refuses to start as root (containers, CI)
        browser = pw.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1800, "height": 1000})
    context.add_init_script(FIRST_VISIT_SEEN)
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def open_runs_table(page: Any, server: str, experiment_id: str, shots: Path | None = None) -> None:
    """The way a user reaches the runs: the experiment's page opens on the GenAI overview; the
    "Model training" switch (top left) leads to the runs table."""
    page.goto(f"{server}/#/experiments/{experiment_id}")
    got_it = page.get_by_role("button", name="Got it")  # a first-visit tip, should one be new
    if got_it.count():
        got_it.first.click()
    page.get_by_text("Model training", exact=True).first.click()
    page.wait_for_url(re.compile(rf"#/experiments/{experiment_id}/runs"))
    page.get_by_role("link", name=re.compile(r"^register-")).first.wait_for()
    if shots is not None:
        page.screenshot(path=str(shots / "1-runs-default-columns.png"))


def settle(page: Any, timeout_ms: int = 8_000) -> None:
    """Let a page finish loading before a screenshot, as far as it does: the GenAI overview
    polls for traces and never goes network-idle, so give up after ``timeout_ms``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    with contextlib.suppress(PlaywrightTimeout):
        page.wait_for_load_state("networkidle", timeout=timeout_ms)


def row_text(page: Any, run_id: str) -> str:
    """All cells of one run's row (the grid splits a row between pinned and scrolled parts)."""
    return " ".join(page.locator(f'[role="row"][row-id="{run_id}"]').all_inner_texts())


def numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", text)]


def test_runs_table_lists_every_stage_run_with_its_metrics(
    page: Any, server: str, runs: dict[str, Any], shots: Path
) -> None:
    experiment_id = runs["clean"].info.experiment_id
    page.goto(f"{server}/#/experiments/{experiment_id}")
    page.wait_for_url(re.compile("overview|runs"))
    settle(page)
    page.screenshot(path=str(shots / "0-experiment-landing.png"))  # what a user meets first
    open_runs_table(page, server, experiment_id, shots)

    for stage in STAGES:
        name = runs[stage].info.run_name
        assert page.get_by_role("link", name=name, exact=True).count() == 1, name

    # the metric columns are hidden until chosen, like for a user: Columns -> tick the metrics
    page.get_by_role("button", name="Columns", exact=True).click()
    for metric in STAGE_METRICS.values():
        page.locator("span.du-bois-light-tree-title", has_text=re.compile(f"^{metric}$")).click()
    page.keyboard.press("Escape")
    for metric in STAGE_METRICS.values():
        page.get_by_role("columnheader", name=metric).first.wait_for()
    page.screenshot(path=str(shots / "2-runs-with-metrics.png"))

    for stage, metric in STAGE_METRICS.items():
        run_info = runs[stage]
        expected = run_info.data.metrics[metric]
        shown = numbers(row_text(page, run_info.info.run_id))
        assert any(abs(v - expected) <= 1e-6 * max(1.0, abs(expected)) for v in shown), (
            f"{stage} row does not show {metric}={expected}: {shown}"
        )


def test_two_runs_open_in_the_compare_view(
    page: Any, server: str, runs: dict[str, Any], shots: Path
) -> None:
    experiment_id = runs["clean"].info.experiment_id
    open_runs_table(page, server, experiment_id)
    chosen = [runs["pretrain"], runs["finetune"]]
    for chosen_run in chosen:
        row = page.locator(f'[role="row"][row-id="{chosen_run.info.run_id}"]')
        row.locator('input[type="checkbox"]').first.check()
    page.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_url(re.compile(r"#/compare-runs\?runs="))
    page.get_by_text("Comparing 2 Runs", exact=False).wait_for()
    page.get_by_text(chosen[1].info.run_name, exact=True).first.wait_for()
    body = page.inner_text("body")
    for chosen_run in chosen:
        assert chosen_run.info.run_id in body and chosen_run.info.run_name in body
    # each run's own params, side by side
    assert "pretrain.model.n_layer" in body and "finetune.max_steps" in body
    page.screenshot(path=str(shots / "3-compare-two-runs.png"), full_page=True)


def test_registered_model_page_shows_its_aliases(
    page: Any, server: str, project: Path, shots: Path
) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    aliases = client.get_registered_model(MODEL).aliases  # alias -> version
    assert "challenger" in aliases, aliases
    page.goto(f"{server}/#/models/{MODEL}")
    page.get_by_text(f"Version {aliases['challenger']}", exact=True).first.wait_for()
    for alias, version in aliases.items():
        tag = page.get_by_text(f"@ {alias}", exact=True).first
        tag.wait_for()
        row = page.locator("tr, [role='row']", has=tag).first
        assert f"Version {version}" in row.inner_text(), (alias, version)
    page.screenshot(path=str(shots / "4-registered-model-aliases.png"), full_page=True)
