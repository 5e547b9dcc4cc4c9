"""The monitor pages over real HTTP against a real ``minipanda serve``: every page and its ``?json``, filters,
escaping of everything shown, the error codes' meanings, and who may see the pages."""
import re

import pytest
import requests

import monitorhelp
from conftest import backends, fresh_url
from monitorhelp import EVIL, OTHER, PILOT_LOG, QUEUE, STDOUT

PAGES = ["/monitor/", "/monitor/jobs", "/monitor/tasks", "/monitor/queues", "/monitor/workers",
         "/monitor/jobs/{finished}", "/monitor/jobs/{failed}", "/monitor/jobs/{evil}", "/monitor/jobs/{waiting}",
         "/monitor/tasks/{task}", f"/monitor/queues/{QUEUE}", f"/monitor/queues/{OTHER}",
         "/monitor/workers/{harvester}/1"]


@pytest.fixture(scope="module", params=backends())
def shown(request, tmp_path_factory):
    """(server, ids): one populated token-auth server for the read-only tests of this module."""
    tmp = tmp_path_factory.mktemp("monitor")
    server = monitorhelp.start(tmp, fresh_url(request.param, tmp))
    try:
        yield server, monitorhelp.populate(server)
    finally:
        server.stop()


def get(server, path, token=None, **kwargs):
    headers = {"Authorization": f"Bearer {token or server.admin_token}"} if (token or server.admin_token) else {}
    return requests.get(server.url + path, headers=headers, timeout=30, allow_redirects=False, **kwargs)


def page_json(server, path, **params):
    reply = get(server, path, params=dict(params, json="1"))
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"].startswith("application/json")
    return reply.json()


def text_of(html):
    """The visible text of a page, tags dropped and entities left as they are."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_every_page_answers_html_and_the_same_data_as_json(shown):
    server, ids = shown
    for template in PAGES:
        path = template.format(**ids)
        html = get(server, path)
        assert html.status_code == 200, (path, html.text[:500])
        assert html.headers["Content-Type"].startswith("text/html")
        assert "script-src" not in html.headers["Content-Security-Policy"]  # default-src 'none': no scripts
        assert "default-src 'none'" in html.headers["Content-Security-Policy"]
        assert html.headers["X-Content-Type-Options"] == "nosniff"
        assert "<script" not in html.text.lower()
        data = page_json(server, path)
        assert data["page"] in path or data["page"] == "dashboard"
        accept = requests.get(server.url + path, headers=server.headers(), timeout=30)  # Accept: application/json
        assert accept.json()["page"] == data["page"]


def test_dashboard_shows_tasks_jobs_per_queue_workers_harvesters_and_errors(shown):
    server, ids = shown
    data = page_json(server, "/monitor/")
    assert [t["jediTaskID"] for t in data["tasks"]] == [ids["task"]]
    assert data["tasks"][0]["taskName"] == "user.admin.demo" and data["tasks"][0]["jobs"]["finished"] == 1
    by_queue = data["jobs_by_queue"]
    assert by_queue[QUEUE]["finished"] == 1 and by_queue[QUEUE]["failed"] == 1 and by_queue[QUEUE]["running"] == 1
    assert by_queue[OTHER] == {"activated": 1}
    assert data["job_states"].index("running") < data["job_states"].index("finished")
    assert data["workers_by_queue"] == {QUEUE: {"running": 1, "finished": 1}, OTHER: {"submitted": 1}}
    assert [h["harvester_id"] for h in data["harvesters"]] == ["harv-1"]
    assert data["harvesters"][0]["heartbeat_age_s"] >= 0
    assert data["worker_statistics"][0]["counts"][0] == {"jobType": "managed", "resourceType": "SCORE",
                                                          "status": "running", "n": 1}
    errors = data["recent_errors"]
    assert [e["PandaID"] for e in errors] == [ids["failed"]]
    assert {"source": "pilot", "code": 1137, "meaning": "Failed to stage-out file"}.items() <= \
        errors[0]["errors"][0].items()
    html = text_of(get(server, "/monitor/").text)
    assert "user.admin.demo" in html and "Failed to stage-out file" in html and "harv-1" in html


def test_task_page_parameters_summary_and_progress(shown):
    server, ids = shown
    data = page_json(server, f"/monitor/tasks/{ids['task']}")
    assert data["task"]["jediTaskID"] == ids["task"] and data["parameters"]["inDS"] == "mon.in"
    assert data["job_summary"]["finished"] == 1 and data["job_summary"]["failed"] == 1
    assert data["input_statistics"].get("finished") == 1 and data["task"]["nFiles"] == 4
    assert data["task"]["pctFinished"] == 25
    assert {j["PandaID"] for j in data["jobs"]} >= {ids["finished"], ids["failed"], ids["running"], ids["waiting"]}
    assert data["brokerage"] and data["brokerage"][0]["candidates"]
    assert data["history"][0]["to"] == "registered" and data["history"][-1]["to"] == "running"
    html = get(server, f"/monitor/tasks/{ids['task']}").text
    assert 'id="task-progress" max="100" value="25"' in html and "mon.in" in html


def test_job_page_history_errors_metrics_and_logs(shown):
    server, ids = shown
    data = page_json(server, f"/monitor/jobs/{ids['finished']}")
    assert [(h["from"], h["to"]) for h in data["history"]] == [
        (None, "activated"), ("activated", "sent"), ("sent", "running"), ("running", "finished")]
    assert all(h["reason"] for h in data["history"])
    assert data["metrics"]["maxRSS"] == 123456 and data["metrics"]["nEvents"] == 100
    logs = data["logs"]
    assert logs["tarball"]["scope"] == "panda.logs" and logs["tarball"]["lfn"] == ids["log_lfn"]
    assert [f["name"] for f in logs["files"]] == ["payload.stdout", "payload.stderr", "pilotlog.txt"]
    assert logs["tails"][0] == {"name": "payload.stdout", "text": STDOUT, "cut": False,
                                "url": f"/monitor/jobs/{ids['finished']}/log/payload.stdout"}
    html = get(server, f"/monitor/jobs/{ids['finished']}").text
    assert "hello from the payload" in html and "line two &amp; &lt;tags&gt;" in html
    member = get(server, f"/monitor/jobs/{ids['finished']}/log/pilotlog.txt")
    assert member.status_code == 200 and member.text == PILOT_LOG
    assert member.headers["Content-Type"].startswith("text/plain") and "sandbox" in \
        member.headers["Content-Security-Policy"]
    tarball = get(server, f"/monitor/jobs/{ids['finished']}/logtarball")
    assert tarball.status_code == 200 and tarball.content[:2] == b"\x1f\x8b"
    assert ids["log_lfn"] in tarball.headers["Content-Disposition"]
    assert get(server, f"/monitor/jobs/{ids['finished']}/log/nothing.txt").status_code == 404
    assert get(server, f"/monitor/jobs/{ids['finished']}/log/../../../etc/passwd").status_code == 404
    assert get(server, f"/monitor/jobs/{ids['waiting']}/logtarball").status_code == 404

    failed = page_json(server, f"/monitor/jobs/{ids['failed']}")
    by_source = {e["source"]: e for e in failed["errors"]}
    assert by_source["pilot"]["code"] == 1137 and by_source["pilot"]["meaning"] == "Failed to stage-out file"
    assert by_source["pilot"]["diag"] == "stage-out failed: " + EVIL
    assert by_source["exe"]["meaning"] == "killed by signal SIGKILL (exit status 137)"
    assert failed["logs"]["tarball"] is None and "not in the server's file store" in failed["logs"]["note"]
    waiting = page_json(server, f"/monitor/jobs/{ids['waiting']}")
    assert any("waiting" in line or "first in line" in line for line in waiting["why"])


def test_queue_and_worker_pages(shown):
    server, ids = shown
    queue = page_json(server, f"/monitor/queues/{QUEUE}")
    assert queue["status"] == "online" and queue["config"]["nickname"] == QUEUE
    assert queue["jobs_by_state"]["finished"] == 1
    assert queue["workers_by_state"] == {"running": 1, "finished": 1}
    assert {w["workerID"] for w in queue["workers"]} == {1, 2}
    assert ids["waiting"] in [j["PandaID"] for j in queue["waiting_jobs"]]
    assert all(j["why"] for j in queue["waiting_jobs"])
    assert queue["brokerage"][0]["candidates"][0]["queue"] == QUEUE
    worker = page_json(server, f"/monitor/workers/{ids['harvester']}/1")
    assert worker["worker"]["status"] == "running" and [j["PandaID"] for j in worker["jobs"]] == [ids["running"]]
    workers = page_json(server, "/monitor/workers", queue=QUEUE, status="finished")
    assert [w["workerID"] for w in workers["workers"]] == [2]
    queues = page_json(server, "/monitor/queues")
    assert {q["name"] for q in queues["queues"]} >= {QUEUE, OTHER}


def test_filters_narrow_the_lists(shown):
    server, ids = shown

    def listed(**filters):
        return [j["PandaID"] for j in page_json(server, "/monitor/jobs", **filters)["jobs"]]

    everything = listed()
    assert set(everything) >= {ids["finished"], ids["failed"], ids["running"], ids["waiting"], ids["evil"]}
    assert listed(status="failed") == [ids["failed"]]
    assert listed(jobstatus="failed") == [ids["failed"]]  # PanDA's own name
    assert set(listed(status="failed|finished")) == {ids["failed"], ids["finished"]}
    assert listed(queue=OTHER) == [ids["evil"]] and listed(computingsite=OTHER) == [ids["evil"]]
    assert ids["evil"] not in listed(taskname="user.admin.*") and ids["finished"] in listed(taskname="user.*.demo")
    assert listed(taskname="user.admin") == [] and listed(taskname="user_admin*") == []  # '_' is no wildcard
    assert listed(user="nobody") == [] and set(listed(user="admin")) == set(everything)
    assert set(listed(days=1)) == set(everything)
    assert listed(jeditaskid=ids["task"], status="running") == [ids["running"]]
    assert len(listed(limit=2)) == 2 and page_json(server, "/monitor/jobs", limit=2)["total"] == len(everything)
    dashboard = page_json(server, "/monitor/", queue=OTHER)
    assert list(dashboard["jobs_by_queue"]) == [OTHER] and dashboard["workers_by_queue"] == {OTHER: {"submitted": 1}}
    assert page_json(server, "/monitor/", taskname="nothing*")["tasks"] == []
    html = get(server, "/monitor/jobs", params={"status": "failed"}).text
    assert 'id="jobs-count">1 of 1<' in html and 'name="status" value="failed"' in html
    for bad, message in (({"status": "bogus"}, "status: 'bogus' is not a job state"),
                         ({"days": "0"}, "days"), ({"limit": "100000"}, "limit"), ({"days": "x"}, "days")):
        reply = get(server, "/monitor/jobs", params=dict(bad, json="1"))
        assert reply.status_code == 400 and message in reply.json()["message"], (bad, reply.text)
    html = get(server, "/monitor/jobs", params={"status": "<b>x</b>"})
    assert html.status_code == 400 and "&lt;b&gt;x&lt;/b&gt;" in html.text and "<b>x</b>" not in html.text


def test_everything_shown_is_escaped(shown):
    server, ids = shown
    for path in ("/monitor/", "/monitor/jobs", f"/monitor/jobs/{ids['evil']}", f"/monitor/jobs/{ids['failed']}",
                 f"/monitor/jobs/{ids['finished']}", f"/monitor/queues/{OTHER}", "/monitor/workers"):
        html = get(server, path).text
        assert "<script>" not in html and "<b>bold</b>" not in html, path
        assert "&lt;script&gt;" in html or "node&lt;1&gt;" in html or "ended &lt;ok&gt;" in html, path
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in get(server, f"/monitor/jobs/{ids['evil']}").text
    assert "node&lt;1&gt;" in get(server, "/monitor/").text
    assert page_json(server, f"/monitor/jobs/{ids['evil']}")["job"]["jobName"] == EVIL  # JSON keeps the text


def test_missing_things_are_404_and_pages_are_read_only(shown):
    server, ids = shown
    for path in ("/monitor/jobs/999999", "/monitor/tasks/1", "/monitor/queues/NOPE", "/monitor/workers/harv-1/99",
                 "/monitor/workers/nobody/1"):
        html = get(server, path)
        assert html.status_code == 404 and html.headers["Content-Type"].startswith("text/html"), path
        assert get(server, path, params={"json": ""}).json()["success"] is False
    assert get(server, "/monitor/jobs/abc").status_code == 404
    for method in ("POST", "PUT", "DELETE"):
        reply = requests.request(method, server.url + f"/monitor/jobs/{ids['finished']}", headers=server.headers(),
                                 timeout=30)
        assert reply.status_code == 405, method
    assert get(server, "/monitor").status_code == 301


def test_error_meanings_follow_the_pilots_table():
    from minipanda.monitor import errorcodes
    from pilot import errors as pilot_errors

    assert {code: errorcodes.PILOT[code] for code in pilot_errors.MESSAGES} == pilot_errors.MESSAGES
    assert errorcodes.meaning("sup", 100).startswith("lost heartbeat")
    assert errorcodes.meaning("exe", 143) == "killed by signal SIGTERM (exit status 143)"
    assert errorcodes.meaning("exe", 2) == "the payload failed with this exit status"


# ---- who may see the pages ------------------------------------------------------------------------------------

@pytest.fixture
def token_server(tmp_path):
    server = monitorhelp.start(tmp_path, "sqlite:///" + str(tmp_path / "home" / "minipanda.db"))
    yield server
    server.stop()


def test_pages_need_a_token_and_a_browser_logs_in_with_a_cookie(token_server):
    server = token_server
    ids = monitorhelp.populate(server)
    bare = requests.get(server.url + "/monitor/", timeout=30)
    assert bare.status_code == 401 and 'action="/monitor/login"' in bare.text and 'name="token"' in bare.text
    assert requests.get(server.url + "/monitor/?json", timeout=30).json()["success"] is False
    wrong = requests.get(server.url + "/monitor/", headers={"Authorization": "Bearer nonsense"}, timeout=30)
    assert wrong.status_code == 401
    for path in (f"/monitor/jobs/{ids['finished']}/log/payload.stdout", f"/monitor/jobs/{ids['finished']}/logtarball",
                 "/metrics"):
        assert requests.get(server.url + path, timeout=30).status_code == 401, path
    assert requests.get(server.url + "/monitor/style.css", timeout=30).status_code == 200

    bob = server.token("user", "bob")
    assert get(server, "/monitor/", token=bob).status_code == 200
    assert get(server, "/metrics", token=bob).status_code == 200

    session = requests.Session()
    refused = session.post(server.url + "/monitor/login", data={"token": "nonsense", "next": "/monitor/jobs"},
                           timeout=30, allow_redirects=False)
    assert refused.status_code == 401 and "token refused" in refused.text and not session.cookies
    cross = session.post(server.url + "/monitor/login", data={"token": bob}, timeout=30, allow_redirects=False,
                         headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403 and not session.cookies
    login = session.post(server.url + "/monitor/login", data={"token": bob, "next": "/monitor/jobs?status=failed"},
                         timeout=30, allow_redirects=False)
    assert login.status_code == 303 and login.headers["Location"].endswith("/monitor/jobs?status=failed")
    cookie = login.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/monitor" in cookie
    assert session.get(server.url + "/monitor/jobs?status=failed&json", timeout=30).json()["total"] == 1
    # the cookie opens the pages only: the API still wants the header
    assert session.post(server.url + "/api/v1/job/kill", json={"job_ids": [ids["waiting"]]},
                        timeout=30).status_code == 401
    away = requests.post(server.url + "/monitor/login", data={"token": bob, "next": "//evil.example/x"}, timeout=30,
                         allow_redirects=False)
    assert away.headers["Location"].endswith("/monitor/")
    session.cookies.set("minipanda_monitor", "forged", path="/monitor")
    assert "the saved token was refused" in session.get(server.url + "/monitor/", timeout=30).text


def test_a_user_reads_logs_only_from_scopes_they_may_read(token_server):
    server = token_server
    ids = monitorhelp.populate(server)
    job = monitorhelp.acquire(server, OTHER, prod_source_label="managed")[0]
    assert job["PandaID"] == ids["evil"]
    stored = monitorhelp.upload(server, "user.alice", "evil.log.tgz", monitorhelp.log_tarball(ids["evil"]))
    monitorhelp.update(server, ids["evil"], "finished", xml=monitorhelp.json.dumps({"evil.log.tgz": {
        "guid": "g", "fsize": stored["fsize"], "adler32": stored["adler32"],
        "surl": "/files/user.alice/evil.log.tgz"}}))
    alice, bob = server.token("user", "alice"), server.token("user", "bob")
    path = f"/monitor/jobs/{ids['evil']}"
    seen = requests.get(server.url + path + "?json", headers={"Authorization": f"Bearer {alice}"}, timeout=30).json()
    assert seen["logs"]["tarball"]["scope"] == "user.alice" and seen["logs"]["tails"]
    hidden = requests.get(server.url + path + "?json", headers={"Authorization": f"Bearer {bob}"}, timeout=30).json()
    assert hidden["logs"]["tarball"] is None and hidden["logs"]["tails"] == []
    assert "may not read" in hidden["logs"]["note"]
    for who, code in ((alice, 200), (bob, 403)):
        for tail in ("/log/payload.stdout", "/logtarball"):
            reply = requests.get(server.url + path + tail, headers={"Authorization": f"Bearer {who}"}, timeout=30)
            assert reply.status_code == code, (tail, reply.text)


def test_auth_none_on_loopback_opens_the_pages_without_a_token(tmp_path):
    server = monitorhelp.start(tmp_path, "sqlite:///" + str(tmp_path / "home" / "minipanda.db"), auth="none")
    try:
        ids = monitorhelp.populate(server)
        for path in ("/monitor/", f"/monitor/jobs/{ids['finished']}", f"/monitor/jobs/{ids['finished']}/logtarball",
                     "/metrics"):
            assert requests.get(server.url + path, timeout=30).status_code == 200, path
        # pages change nothing, and a cross-site page cannot make the browser change anything either
        refused = requests.post(server.url + "/api/v1/job/kill", json={"job_ids": [ids["waiting"]]}, timeout=30,
                                headers={"Origin": "http://evil.example"})
        assert refused.status_code == 403
    finally:
        server.stop()
