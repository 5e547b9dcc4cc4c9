"""The HTTP client against a live server: getJob, updateJob, replies, errors, downloads."""
import os

import pytest

from pilot import comm
from pilot.comm import CommError, ServerClient
from test_pilot_harness import QUEUE

pytest_plugins = ["test_pilot_harness"]  # the site and zipapp_path fixtures


def test_base_url():
    assert comm.base_url("http://127.0.0.1", 25080) == "http://127.0.0.1:25080"
    assert comm.base_url("http://h:1234/", 25080) == "http://h:1234"
    assert comm.base_url("server.example", None) == "http://server.example"


def test_getjob_updatejob_and_already_done(site):
    client = ServerClient(site.server.url, site.token_file, 10)
    offer = {"computingElement": QUEUE, "node": "n1", "pilotID": "p1", "remainingTime": 10000}
    assert client.get_job(offer) is None
    pid = site.submit(transformation="/bin/true")
    job = client.get_job(offer)
    assert job["PandaID"] == pid and job["transformation"] == "/bin/true"
    base = {"jobId": pid, "pilotID": "p1", "attemptNr": job["attemptNr"]}
    assert client.update_job(dict(base, state="running"))["command"] == "NULL"
    assert client.update_job(dict(base, state="finished")).get("alreadyDone") is None
    assert client.update_job(dict(base, state="finished"))["alreadyDone"] is True


def test_refusals_are_permanent_and_outages_transient(site):
    client = ServerClient(site.server.url, site.token_file, 10)
    with pytest.raises(CommError) as unknown:
        client.update_job({"jobId": 999999, "state": "running"})
    assert not unknown.value.transient and unknown.value.reply["command"] == "tobekilled"
    with pytest.raises(CommError) as invalid:
        client.update_job({"jobId": 1, "state": "bogus"})
    assert not invalid.value.transient and invalid.value.status == 400
    with pytest.raises(CommError) as auth:
        ServerClient(site.server.url, None, 10).get_job({"computingElement": QUEUE})
    assert auth.value.transient and auth.value.auth
    site.server.stop()
    with pytest.raises(CommError) as down:
        client.get_job({"computingElement": QUEUE})
    assert down.value.transient and down.value.status is None


def test_update_retries_with_backoff_then_gives_up(site):
    client = ServerClient(site.server.url, site.token_file, 10)
    site.server.stop()
    sleeps = []
    reply, error = client.update_job_reliably({"jobId": 1, "state": "finished"}, 4, 0.5, sleeps.append)
    assert reply is None and error.transient and sleeps == [0.5, 1.0, 2.0]
    sleeps.clear()
    reply, error = client.update_job_reliably({"jobId": 1, "state": "x"}, 4, 0.5, sleeps.append,
                                              give_up=lambda: True)
    assert sleeps == []


def test_download_from_the_trf_directory(site, tmp_path):
    site.script("tool.sh", "#!/bin/sh\necho hi\n")
    client = ServerClient(site.server.url, site.token_file, 10)
    tmp_path = tmp_path / "downloads"
    tmp_path.mkdir()
    dest = str(tmp_path / "tool.sh")
    assert client.download("/trf/user/tool.sh", dest) == len("#!/bin/sh\necho hi\n")
    with pytest.raises(FileNotFoundError):
        client.download("/trf/user/absent.sh", str(tmp_path / "absent"))
    assert sorted(os.listdir(tmp_path)) == ["tool.sh"]  # no partial file left behind
    site.submit(transformation="/bin/true")  # the server registers the queue with its first job
    assert '"maxrss"' in client.get_text(f"/cache/schedconfig/{QUEUE}.all.json")
