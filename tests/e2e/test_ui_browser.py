"""The Deployments pages in a real browser (Debian's chromium and chromedriver, driven by selenium) against the
real api-server, scheduler and gateway of the embedded stack: log in through Airflow's own login form, find the
demo deployment running with a working URL, open its page, stop it through the in-page confirmation and see it
stopped; a viewer cannot stop; a failed deployment shows its reason. Screenshots go to the artifacts folder
(``CLOUD_DEPLOY_TEST_ARTIFACTS``, default ``test-artifacts/`` in the checkout)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.stack import EmbeddedStack
from tests.helpers import REPO, SESSION_DIR

pytestmark = pytest.mark.e2e
ARTIFACTS = Path(os.environ.get("CLOUD_DEPLOY_TEST_ARTIFACTS", REPO / "test-artifacts"))
CHROMIUM = "/usr/lib/chromium/chromium"  # the real binary; /usr/bin/chromium is a wrapper script
CHROMEDRIVER = "/usr/bin/chromedriver"
PASSWORDS = {"admin": "admin-pw", "viewer": "viewer-pw"}
RUNNING = {"user_id": "ui-user", "project_id": "demo"}
KEPT = {"user_id": "ui-user", "project_id": "kept"}
BROKEN = {"user_id": "ui-user", "project_id": "broken"}


@pytest.fixture(scope="module")
def stack(docker_client, base_image):
    state = SESSION_DIR / "ui-stack"
    (state / "airflow").mkdir(parents=True)
    (state / "airflow" / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(PASSWORDS))
    stack = EmbeddedStack(state, AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,viewer:viewer").start()
    try:
        for params in (RUNNING, KEPT):
            stack.project(**params)
            assert stack.gateway.get("/start", params=params).text == "started"
        stack.project(**BROKEN)
        spec = stack.folder(**BROKEN) / "deployment.yaml"
        spec.write_text(spec.read_text().replace(
            "entrypoint: [python3, server.py]",
            "entrypoint: [python3, -c, \"import sys; print('model weights missing'); sys.exit(3)\"]"))
        assert stack.gateway.get("/start", params=BROKEN).text == "started"
        for params, final in ((RUNNING, "running"), (KEPT, "running"), (BROKEN, "failed")):
            seen = stack.wait_for(params, ("running", "failed"))
            assert seen[-1] == final, (params, seen, stack.detail(params))
        yield stack
    finally:
        for params in (RUNNING, KEPT, BROKEN):
            stack.gateway.get("/stop", params=params)
        for params in (RUNNING, KEPT, BROKEN):
            stack.wait_for(params, ("stopped",), 120)
        stack.stop()


@pytest.fixture
def browser():
    if not (Path(CHROMIUM).exists() and shutil.which(CHROMEDRIVER)):
        pytest.fail("these tests need Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _shot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.switch_to.default_content()
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def _wait(condition, seconds: float = 60, what: str = "condition"):
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = condition()
        except Exception:  # the page is between renders (a stale element, a frame not there yet)
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"{what} not met within {seconds} s"
        time.sleep(0.25)


def _login(driver, stack, user: str) -> None:
    """Airflow's own login form, reached as a user would: opening the page redirects there."""
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(f"{stack.airflow_url}/plugin/deployments")
    _wait(lambda: driver.find_elements(By.NAME, "username"), what="the login form")
    driver.find_element(By.NAME, "username").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(PASSWORDS[user])
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    _wait(lambda: "/plugin/deployments" in driver.current_url and driver.get_cookie("_token"), what="login")


def _in_deployments_frame(driver) -> None:
    from selenium.webdriver.common.by import By

    driver.switch_to.default_content()
    frame = _wait(lambda: driver.find_element(By.CSS_SELECTOR, "iframe[title=Deployments]"), what="the Deployments view")
    driver.switch_to.frame(frame)


def _row(driver, params: dict):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f"tr[data-project='{params['user_id']}/{params['project_id']}']")


def _status_shown(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "status").text


def test_the_list_shows_the_running_deployment_with_a_working_url_and_its_page_stops_it(stack, browser):
    from selenium.webdriver.common.by import By

    _login(browser, stack, "admin")
    nav = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "a[href$='/plugin/deployments']"), what="the nav entry")
    assert nav, "Deployments is an entry of Airflow's navigation"
    _in_deployments_frame(browser)
    row = _wait(lambda: _row(browser, RUNNING), what="the demo deployment's row")
    _wait(lambda: _row(browser, RUNNING).get_attribute("data-status") == "running", what="running")
    url = _row(browser, RUNNING).find_element(By.CSS_SELECTOR, "a.service-url").text
    assert url == stack.detail(RUNNING)["url"]
    answer = httpx.post(f"{url}/predict", json={"features": [5.9, 2.8, 4.3, 1.3]}, timeout=10).json()
    assert answer["class"] == "versicolor"
    assert row.find_element(By.CSS_SELECTOR, "a.deploy-run").text == "success"
    assert _row(browser, BROKEN).get_attribute("data-status") == "failed"
    _shot(browser, "deployments")

    _in_deployments_frame(browser)
    _row(browser, RUNNING).find_element(By.CSS_SELECTOR, "a.detail").click()
    _wait(lambda: _status_shown(browser) == "running", what="the detail page")
    assert browser.find_element(By.ID, "url").text == url
    assert browser.find_elements(By.CSS_SELECTOR, "#stages tbody tr"), "the latest run's stages"
    assert "service_name: hello" in browser.find_element(By.ID, "spec").text
    assert browser.find_elements(By.CSS_SELECTOR, "a.task-log"), "links to the task logs"
    _shot(browser, "deployment-running")

    _in_deployments_frame(browser)
    browser.find_element(By.CSS_SELECTOR, "#actions button.action-stop").click()
    confirm = _wait(lambda: browser.find_element(By.CSS_SELECTOR, "#actions button.confirm-yes"), what="the confirmation")
    assert "Stop ui-user/demo?" in browser.find_element(By.CSS_SELECTOR, "#actions .confirm").text
    confirm.click()
    _wait(lambda: _status_shown(browser) in ("stopping", "stopped"), what="stopping")
    _wait(lambda: _status_shown(browser) == "stopped", 120, what="stopped")
    assert stack.word(RUNNING) == "stopped"
    _shot(browser, "deployment-stopped")


def test_a_viewer_cannot_stop_and_a_failed_deployment_shows_its_reason(stack, browser):
    from selenium.webdriver.common.by import By

    _login(browser, stack, "viewer")
    _in_deployments_frame(browser)
    _wait(lambda: _row(browser, KEPT).get_attribute("data-status") == "running", what="the kept deployment")
    _row(browser, KEPT).find_element(By.CSS_SELECTOR, "button.action-stop").click()
    _wait(lambda: browser.find_element(By.CSS_SELECTOR, "button.confirm-yes"), what="the confirmation").click()
    refused = _wait(lambda: browser.find_element(By.CSS_SELECTOR, "#notice .notice.error"), what="the refusal")
    assert "you may not trigger cloud_undeploy" in refused.text
    assert stack.word(KEPT) == "running"
    _shot(browser, "viewer-refused")

    _in_deployments_frame(browser)
    _row(browser, BROKEN).find_element(By.CSS_SELECTOR, "a.detail").click()
    _wait(lambda: _status_shown(browser) == "failed", what="the failed deployment's page")
    reason = browser.find_element(By.ID, "message-text").text
    assert "exit code 3" in reason and "model weights missing" in reason, reason
    assert browser.find_element(By.ID, "target").text == "docker", "what a failed run deployed is shown too"
    assert "service_name: hello" in browser.find_element(By.ID, "spec").text
    assert browser.find_elements(By.CSS_SELECTOR, "#stages tbody tr"), "the failed run's stages, up to the failure"
    _shot(browser, "deployment-failed")
