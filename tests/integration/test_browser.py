"""The MLflow UI as a person sees it: runs list, compare view, a run's forecast plot, the registered model.

Two real training runs go into a temporary store; `mlflow server` serves it on a free loopback port;
headless Chromium (Debian's `chromium` and `chromium-driver`, driven by Selenium, no browser
download) opens the pages. Screenshots go to $PIPELINE_SCREENSHOT_DIR, else test-output/browser/.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, make_prices
from tests.integration.processes import free_port, stop_groups, wait_until_ok

CHROMIUM = Path(os.environ.get("PIPELINE_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("PIPELINE_CHROMEDRIVER", "/usr/bin/chromedriver"))
RENDER_TIMEOUT_S = 90  # the UI's JavaScript takes 10-15 s per page on a busy 2-core machine
MODEL = "browser-forecaster"

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow]


def screenshot_dir() -> Path:
    folder = Path(os.environ.get("PIPELINE_SCREENSHOT_DIR") or ROOT / "test-output" / "browser")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser() -> Iterator[object]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"no Chromium at {CHROMIUM} with a driver at {CHROMEDRIVER}: "
                    "install Debian's chromium and chromium-driver (`make browser-deps`)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (dev extra)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"chromium-profile-{os.getpid()}-{time.monotonic_ns()}"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--window-size=1600,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def two_runs(prefect_harness, mlflow_store: str, tmp_path: Path) -> tuple[str, list[str]]:
    """Two finished training runs of the pipeline (seeds 1 and 2) in the test's store; their experiment and ids."""
    from mlflow import MlflowClient

    from pipeline.cli.main import main

    make_prices(120).to_csv(tmp_path / "prices.csv", index=False)
    for seed in (1, 2):
        path = tmp_path / f"seed{seed}.yaml"
        path.write_text(yaml.safe_dump({
            "name": f"browser-seed{seed}", "data": {"source": str(tmp_path / "prices.csv")},
            "split": {"train": 0.6, "val": 0.2, "test": 0.2}, "window": {"lookback": 5},
            "preprocess": {"target_transform": "log_return"},  # a price walk: promoted, so @champion shows
            "model": {"hidden_size": 8}, "train": {"epochs": 3, "batch_size": 16, "patience": 5, "seed": seed},
            "tracking": {"experiment": "browser"}, "registry": {"model_name": MODEL}}))
        assert main(["train", "--config", str(path)]) == 0
    client = MlflowClient(mlflow_store, registry_uri=mlflow_store)
    experiment = client.get_experiment_by_name("browser").experiment_id
    runs = client.search_runs([experiment], "attributes.status = 'FINISHED'")
    assert len(runs) == 2
    return experiment, [r.info.run_id for r in runs]


@pytest.fixture
def mlflow_ui(mlflow_store: str, tmp_path: Path) -> Iterator[str]:
    """`mlflow server` over the test's store on a free loopback port; its base URL."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = tmp_path / "mlflow-server.log"
    server = subprocess.Popen(
        [str(bin_dir / "mlflow"), "server", "--backend-store-uri", mlflow_store, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--artifacts-destination", str(tmp_path / "mlartifacts")],
        cwd=tmp_path, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(f"{base}/health", server, RENDER_TIMEOUT_S, log, what="mlflow server")
        yield base
    finally:
        stop_groups([server])


# Scroll every scrolling box a little: the compare view renders long metric tables lazily.
SCROLL_ALL = """for (const el of document.querySelectorAll('*')) {
  if (el.scrollHeight > el.clientHeight + 4 && getComputedStyle(el).overflowY !== 'visible') el.scrollTop += 150; }"""
# Back to the top of every box, then the Metrics section into view: names and values line up again.
SHOW_METRICS = """for (const el of document.querySelectorAll('*')) { if (el.scrollTop) el.scrollTop = 0; }
const head = [...document.querySelectorAll('*')].find(e => e.childElementCount === 0 && e.textContent.trim() === 'Metrics');
if (head) head.scrollIntoView({block: 'start'});"""


def wait_for(driver: object, check: Callable[[str], bool], what: str, scroll: bool = False) -> str:
    """The page's text once `check` accepts it (scrolling lazy tables when asked); fails naming `what`."""
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    text = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            text = driver.find_element("tag name", "body").text  # type: ignore[attr-defined]
            if check(text):
                return text
            if scroll:
                driver.execute_script(SCROLL_ALL)  # type: ignore[attr-defined]
        time.sleep(0.5)
    raise AssertionError(f"{what} not shown within {RENDER_TIMEOUT_S} s; the page said:\n{text[:2000]}")


def shown(value: float, text: str) -> bool:
    """Whether the UI shows `value` in one of the roundings it uses."""
    return any(form in text for form in (f"{value:.3f}", f"{value:.4g}", f"{value:.5g}"))


def test_runs_compare_view_plot_and_registered_model_are_shown(browser, two_runs, mlflow_ui) -> None:
    from mlflow import MlflowClient

    experiment, run_ids = two_runs
    client = MlflowClient()
    runs = {run_id: client.get_run(run_id) for run_id in run_ids}
    names = [run.info.run_name for run in runs.values()]
    shots = screenshot_dir()

    browser.get(f"{mlflow_ui}/#/experiments/{experiment}/runs")
    wait_for(browser, lambda text: all(name in text for name in names), f"both runs {names} in the runs list")
    browser.save_screenshot(str(shots / "runs.png"))

    compare = f'{mlflow_ui}/#/compare-runs?runs={json.dumps(run_ids, separators=(",", ":"))}&experiments=["{experiment}"]'
    browser.get(compare)
    rmse = [run.data.metrics["test_rmse"] for run in runs.values()]
    # Names and values are separate lazy columns: test_rmse and both its values must be on screen at once.
    text = wait_for(browser, lambda t: "Comparing 2 Runs" in t and "\ntest_rmse\n" in t
                    and all(shown(v, t) for v in rmse), f"the compare view with test_rmse {rmse}", scroll=True)
    for run in runs.values():
        assert run.info.run_name in text
    assert "test_naive_rmse" in text
    browser.execute_script(SHOW_METRICS)
    time.sleep(1.0)
    browser.save_screenshot(str(shots / "compare.png"))

    first = run_ids[0]
    browser.get(f"{mlflow_ui}/#/experiments/{experiment}/runs/{first}/artifacts/plots/forecast.png")
    wait_for(browser, lambda t: "forecast.png" in t and "residuals.png" in t, "the run's plots in its artifacts")
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    while not any(browser.execute_script("return arguments[0].naturalWidth", img) >= 600
                  for img in browser.find_elements("tag name", "img")):
        assert time.monotonic() < deadline, "the forecast plot never rendered as an image"
        time.sleep(0.5)
    browser.save_screenshot(str(shots / "forecast-plot.png"))

    aliases = {alias: str(mv) for alias, mv in client.get_registered_model(MODEL).aliases.items()}
    assert set(aliases) >= {"champion"}
    browser.get(f"{mlflow_ui}/#/models/{MODEL}")
    text = wait_for(browser, lambda t: MODEL in t and "champion" in t, f"the registered model {MODEL} with @champion")
    for alias in aliases:
        assert alias in text
    browser.save_screenshot(str(shots / "registered-model.png"))
