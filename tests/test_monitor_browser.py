"""The monitor pages in a real headless browser: Debian's chromium driven by its chromedriver through selenium (no
browser or driver is downloaded). The dashboard shows the task, the job page shows its log, a filter narrows the
list, markup in a job name stays text, and a browser logs in with a token. The dashboard's screenshot is kept in
``$MINIPANDA_TEST_ARTIFACTS`` (default ``test-artifacts/`` at the top of the repository).

Without chromium, chromedriver or selenium these tests are skipped, except under ``CI=true``, where a missing
browser is a failure (``.ci/run`` installs Debian's ``chromium`` and ``chromium-driver``)."""
import os
import pathlib
import shutil

import pytest

import monitorhelp
from conftest import IN_CI
from monitorhelp import EVIL, OTHER, STDOUT
from taskhelp import open_db

pytestmark = pytest.mark.browser

ARTIFACTS = pathlib.Path(os.environ.get("MINIPANDA_TEST_ARTIFACTS") or
                         pathlib.Path(__file__).resolve().parent.parent / "test-artifacts")


def browser_parts():
    """(chromium, chromedriver) paths, or the reason they cannot be used."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver")
                                              else None)
    missing = [name for name, path in (("chromium", chromium), ("chromedriver (chromium-driver)", driver))
               if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        return None, "missing " + ", ".join(missing) + ": apt-get install -y chromium chromium-driver"
    return (chromium, driver), ""


@pytest.fixture(scope="module")
def browser():
    parts, why = browser_parts()
    if parts is None:
        if IN_CI:
            pytest.fail(f"CI must run the browser tests: {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium never fetches a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = parts[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=parts[1]), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """The testbed's way: loopback, --auth none, so the monitor URL opens in a browser without a token."""
    tmp = tmp_path_factory.mktemp("browser")
    server = monitorhelp.start(tmp, "sqlite:///" + str(tmp / "home" / "minipanda.db"), auth="none")
    try:
        yield server, monitorhelp.populate(server)
    finally:
        server.stop()


def rows(driver, table_id):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr.job, #{table_id} tbody tr.task")


def apply_filters(driver, expected):
    """Submit the filter form and wait for the new page (its URL holds ``expected``)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "apply-filters").click()
    WebDriverWait(driver, 30).until(lambda d: expected in d.current_url and d.execute_script(
        "return document.readyState") == "complete")


def test_dashboard_shows_the_task_and_is_kept_as_a_screenshot(browser, open_server):
    from selenium.webdriver.common.by import By

    server, ids = open_server
    browser.get(server.url + "/monitor/")
    assert "dashboard" in browser.title
    tasks = browser.find_element(By.ID, "tasks")
    assert "user.admin.demo" in tasks.text and str(ids["task"]) in tasks.text
    assert "MON_PQ" in browser.find_element(By.ID, "jobs-by-queue").text
    assert "harv-1" in browser.find_element(By.ID, "harvesters").text
    assert "Failed to stage-out file" in browser.find_element(By.ID, "recent-errors").text
    # the stylesheet loaded (the Content-Security-Policy allows it and nothing else)
    header = browser.find_element(By.TAG_NAME, "header")
    assert header.value_of_css_property("background-color") == "rgba(36, 64, 94, 1)"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "monitor-dashboard.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_job_page_shows_its_log(browser, open_server):
    from selenium.webdriver.common.by import By

    server, ids = open_server
    browser.get(server.url + f"/monitor/tasks/{ids['task']}")
    browser.find_element(By.LINK_TEXT, str(ids["finished"])).click()
    assert browser.current_url.endswith(f"/monitor/jobs/{ids['finished']}")
    assert browser.find_element(By.ID, "log-payload-stdout").text == STDOUT.strip()
    assert "pilot: job finished" in browser.find_element(By.ID, "log-pilotlog-txt").text
    history = browser.find_element(By.ID, "history").text
    assert "pilot reported finished" in history
    browser.find_element(By.LINK_TEXT, "pilotlog.txt").click()
    assert "pilot: job started" in browser.find_element(By.TAG_NAME, "body").text


def test_a_filter_narrows_the_list(browser, open_server):
    from selenium.webdriver.common.by import By

    server, ids = open_server
    browser.get(server.url + "/monitor/jobs")
    before = rows(browser, "jobs")
    assert len(before) >= 5
    field = browser.find_element(By.NAME, "status")
    field.clear()
    field.send_keys("failed")
    apply_filters(browser, "status=failed")
    after = rows(browser, "jobs")
    assert 0 < len(after) < len(before)
    assert all("failed" in row.text for row in after)
    assert str(ids["failed"]) in [row.find_element(By.TAG_NAME, "a").text for row in after]
    field = browser.find_element(By.NAME, "queue")
    field.send_keys(OTHER)
    apply_filters(browser, "queue=" + OTHER)
    assert rows(browser, "jobs") == [] and "no jobs match" in browser.find_element(By.ID, "jobs").text


def test_markup_in_a_job_name_is_shown_as_text(browser, open_server):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    server, ids = open_server
    browser.get(server.url + f"/monitor/jobs/{ids['evil']}")
    assert EVIL in browser.find_element(By.TAG_NAME, "h1").text
    assert browser.find_elements(By.CSS_SELECTOR, "h1 b") == []
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 (the script never ran)


def test_a_browser_logs_in_with_a_token(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = monitorhelp.start(tmp_path, "sqlite:///" + str(tmp_path / "home" / "minipanda.db"))
    try:
        browser.delete_all_cookies()
        browser.get(server.url + "/monitor/jobs?status=failed")
        assert "need a minipanda token" in browser.find_element(By.TAG_NAME, "body").text
        browser.find_element(By.NAME, "token").send_keys(server.token("user", "carol"))
        browser.find_element(By.CSS_SELECTOR, "form button").click()
        WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.ID, "jobs-count"))
        assert browser.current_url.endswith("/monitor/jobs?status=failed")
        assert browser.find_element(By.ID, "jobs-count").text == "0 of 0"
        cookie = browser.get_cookie("minipanda_monitor")
        assert cookie["httpOnly"] and cookie["path"] == "/monitor" and cookie["sameSite"] == "Strict"
    finally:
        server.stop()


def chart_counts(browser, chart_id):
    """({series key: sum of its bars' counts}, the caption's figures by key, the bars) of a bar chart as drawn."""
    from selenium.webdriver.common.by import By

    figure = browser.find_element(By.ID, chart_id)
    svg = figure.find_element(By.TAG_NAME, "svg")
    assert svg.is_displayed() and svg.size["width"] > 300 and svg.size["height"] > 100
    sums, bars = {}, figure.find_elements(By.TAG_NAME, "rect")
    for bar in bars:
        assert bar.size["height"] > 0, bar.get_attribute("outerHTML")
        key = bar.get_attribute("data-key")
        sums[key] = sums.get(key, 0) + int(bar.get_attribute("data-count"))
    totals = {t.get_attribute("data-key"): int(t.text) for t in figure.find_elements(By.CSS_SELECTOR, ".total")}
    return sums, totals, bars


def test_charts_render_and_match_the_counts(browser, open_server):
    """The dashboard's, a queue's and a task's charts are drawn (SVG, coloured by the stylesheet under the
    Content-Security-Policy), and their bars add up to the page's ?json series and to the database's counts."""
    import datetime

    import requests
    from selenium.webdriver.common.by import By

    from minipanda.core import models

    server, ids = open_server
    open_db(server)  # another test of this module may have bound the models to its own server's database
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)

    def iso(minutes):
        return (now - datetime.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")

    server.call("harvester/update_workers", {"harvester_id": "harv-chart", "workers": [
        {"workerID": 1, "status": "running", "computingSite": "MON_PQ", "submitTime": iso(50), "startTime": iso(40)},
        {"workerID": 2, "status": "submitted", "computingSite": "MON_PQ", "submitTime": iso(5)},
        {"workerID": 3, "status": "running", "computingSite": OTHER, "submitTime": iso(20), "startTime": iso(19)}]})
    Job = models.Job
    since = now - datetime.timedelta(hours=6)
    in_db = {status: Job.select().where(Job.status == status, Job.state_changed_time >= since).count()
             for status in ("finished", "failed")}
    assert in_db["finished"] >= 1 and in_db["failed"] >= 1

    browser.get(server.url + "/monitor/")
    charted = requests.get(server.url + "/monitor/?json", timeout=30).json()["charts"]
    sums, totals, bars = chart_counts(browser, "chart-jobs")
    assert sums == totals == {key: sum(charted["jobs"][key]) for key in ("finished", "failed")} == in_db
    colours = {bar.get_attribute("data-key"): bar.value_of_css_property("fill") for bar in bars}
    assert colours == {"finished": "rgb(76, 175, 80)", "failed": "rgb(229, 115, 115)"}
    sums, now_drawn, _ = chart_counts(browser, "chart-workers")
    assert (charted["workers"]["running"][-1], charted["workers"]["submitted"][-1]) == (2, 1)
    assert now_drawn == {"running": 2, "submitted": 1}  # the caption says what runs and waits now
    assert sums == {key: sum(charted["workers"][key]) for key in ("running", "submitted")}

    browser.get(server.url + "/monitor/queues/" + OTHER)
    sums, _, _ = chart_counts(browser, "chart-workers")
    assert browser.find_element(By.ID, "chart-workers").find_elements(By.TAG_NAME, "rect")[-1].get_attribute(
        "data-count") == "1" and set(sums) == {"running"}
    queue_db = Job.select().where(Job.computing_site == OTHER, Job.status.in_(["finished", "failed"])).count()
    assert sum(chart_counts(browser, "chart-jobs")[0].values()) == queue_db

    browser.get(server.url + f"/monitor/tasks/{ids['task']}")
    figure = browser.find_element(By.ID, "chart-progress")
    assert figure.find_element(By.TAG_NAME, "svg").is_displayed()
    drawn = {line.get_attribute("data-key"): int(line.get_attribute("data-last"))
             for line in figure.find_elements(By.TAG_NAME, "polyline")}
    task_jobs = {status: Job.select().where(Job.task_id == ids["task"], Job.status == status).count()
                 for status in ("finished", "failed")}
    assert drawn == task_jobs and drawn["finished"] >= 1
    progress = requests.get(server.url + f"/monitor/tasks/{ids['task']}?json", timeout=30).json()["charts"]
    assert progress["progress"]["finished"][-1] == drawn["finished"] and progress["progress"]["planned"] == 4
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "monitor-task-progress.png"))
