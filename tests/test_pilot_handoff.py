"""Harvester files: job file shapes, the job request, and atomic reports."""
import json
import os
import threading

from pilot.handoff import Handoff, final_attributes_id
from pilot.queuedata import HANDOFF_FILES


def test_take_job_shapes(tmp_path):
    h = Handoff(str(tmp_path), HANDOFF_FILES)
    assert h.take_job() is None
    (tmp_path / "pandaJobData.out").write_text(json.dumps({"2": {"PandaID": 2}, "1": {"PandaID": 1}}))
    assert h.take_job()["PandaID"] == 1
    assert json.loads((tmp_path / "pandaJobData.out").read_text()) == {"2": {"PandaID": 2}}
    assert h.take_job()["PandaID"] == 2 and not (tmp_path / "pandaJobData.out").exists()
    (tmp_path / "pandaJobData.out").write_text(json.dumps({"PandaID": 3, "jobPars": "x"}))
    assert h.take_job()["PandaID"] == 3
    (tmp_path / "pandaJobData.out").write_text("PandaID=4&jobPars=a+b")
    assert h.take_job() == {"PandaID": "4", "jobPars": "a b"}
    (tmp_path / "pandaJobData.out").write_text("[]")
    assert h.take_job() is None and (tmp_path / "pandaJobData.out.bad").exists()


def test_wait_for_job_requests_and_cleans_up(tmp_path):
    h = Handoff(str(tmp_path), dict(HANDOFF_FILES, job="HPCJobs.json"))
    request = tmp_path / "worker_requestjob.json"

    def harvester():
        while not request.exists():
            threading.Event().wait(0.01)
        (tmp_path / "HPCJobs.json").write_text(json.dumps({"5": {"PandaID": 5}}))

    thread = threading.Thread(target=harvester)
    thread.start()
    job = h.wait_for_job(30, 0.02, lambda s: threading.Event().wait(s), lambda: False)
    thread.join()
    assert job["PandaID"] == 5 and not request.exists()
    assert h.wait_for_job(0.1, 0.02, lambda s: threading.Event().wait(s), lambda: False) is None
    assert not request.exists()


def test_reports(tmp_path):
    h = Handoff(str(tmp_path), HANDOFF_FILES)
    update = {"jobId": 1, "state": "finished", "xml": "{}"}
    h.write_final(1, update, {"exitCode": 0}, [{"type": "log", "path": "/x"}])
    h.write_final(2, dict(update, jobId=2), {"exitCode": 0}, [])
    assert json.loads((tmp_path / "worker_attributes.json").read_text()) == {
        "jobId": 2, "state": "finished", "jobStatus": "finished"}
    assert json.loads((tmp_path / "event_status.dump.json").read_text()) == {"1": [{"type": "log", "path": "/x"}],
                                                                            "2": []}
    # each job's final attributes are kept: a multi-job pilot overwrites worker_attributes.json
    assert json.loads((tmp_path / "worker_attributes-1.json").read_text())["jobId"] == 1
    assert final_attributes_id(HANDOFF_FILES, "worker_attributes-2.json") == 2
    assert final_attributes_id(HANDOFF_FILES, "worker_attributes.json") is None
    h.add_panda_id(1)
    h.add_panda_id(2)
    h.add_panda_id(2)
    assert json.loads((tmp_path / "worker_pandaids.json").read_text()) == [1, 2]
    assert not h.kill_requested()
    (tmp_path / "pilot_kill_payload").touch()
    assert h.kill_requested()
    h.touch_kill_worker()
    assert (tmp_path / "kill_worker").exists()
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_an_older_jobs_final_never_hides_the_running_job_and_is_kept_in_its_own_file(tmp_path):
    # pull mode: job 1's final comes from the wrap-up thread after job 2 began and reported running
    h = Handoff(str(tmp_path), HANDOFF_FILES)
    attributes = tmp_path / "worker_attributes.json"
    h.begin_job(1)
    h.write_attributes({"jobId": 1, "state": "running"})
    h.begin_job("2")  # a job definition may give the PandaID as a string
    h.write_attributes({"jobId": 2, "state": "running"})
    h.write_attributes({"jobId": 1, "state": "finished", "xml": "{}"})
    assert json.loads(attributes.read_text()) == {"jobId": 2, "state": "running", "jobStatus": "running"}
    assert json.loads((tmp_path / "worker_attributes-1.json").read_text()) == {
        "jobId": 1, "state": "finished", "jobStatus": "finished"}
    assert not (tmp_path / "worker_attributes-2.json").exists()  # a running job has no final yet
    h.write_attributes({"jobId": 2, "state": "failed"})
    assert json.loads(attributes.read_text())["jobStatus"] == "failed"
    assert json.loads((tmp_path / "worker_attributes-2.json").read_text())["jobStatus"] == "failed"
    # the first job is listed at once, the next within LIST_EVERY_S, and every one when the pilot ends
    assert json.loads((tmp_path / "worker_pandaids.json").read_text()) == [1]
    h.list_panda_ids()
    assert json.loads((tmp_path / "worker_pandaids.json").read_text()) == [1, "2"]


def test_the_attributes_file_goes_only_forward_while_both_threads_write(tmp_path):
    """The job loop reports jobs 1..N running one after the other while the wrap-up thread writes each ended
    job's final: a reader never sees the file speak for an older job than it saw before, and every final stays."""
    h = Handoff(str(tmp_path), HANDOFF_FILES)
    attributes = tmp_path / "worker_attributes.json"
    ended, jobs, backwards, done = [], 40, [], threading.Event()

    def wrap_up():
        for panda_id in range(1, jobs + 1):
            while len(ended) < panda_id and not done.is_set():
                threading.Event().wait(0.0005)
            h.write_attributes({"jobId": panda_id, "state": "finished"})

    def harvester():
        last = 0
        while not done.is_set():
            try:
                panda_id = json.loads(attributes.read_text())["jobId"]
            except FileNotFoundError:
                continue
            if panda_id < last:
                backwards.append((last, panda_id))
            last = max(last, panda_id)

    threads = [threading.Thread(target=wrap_up), threading.Thread(target=harvester)]
    for thread in threads:
        thread.start()
    for panda_id in range(1, jobs + 1):
        h.begin_job(panda_id)
        for _ in range(3):
            h.write_attributes({"jobId": panda_id, "state": "running"})
        ended.append(panda_id)
    threads[0].join()
    done.set()
    threads[1].join()
    assert not backwards, f"worker_attributes.json went back to an older job: {backwards[:5]}"
    assert json.loads(attributes.read_text()) == {"jobId": jobs, "state": "finished", "jobStatus": "finished"}
    for panda_id in range(1, jobs + 1):
        assert json.loads((tmp_path / f"worker_attributes-{panda_id}.json").read_text())["jobStatus"] == "finished"


def test_a_final_is_fsynced_in_file_mode_and_not_written_when_it_goes_to_the_server(tmp_path, monkeypatch):
    """File mode: harvester relays the per-job final attributes, so they reach the disk before the rename. Over HTTP
    (``own_file=False``) the server has the final, or the fsync'd outbox: no file of its own at all."""
    from pilot import handoff as module
    writes = {}
    real = module.atomic_write_json
    monkeypatch.setattr(module, "atomic_write_json", lambda path, data, durable=True: writes.__setitem__(
        os.path.basename(path), durable) or real(path, data, durable=durable))
    handoff = Handoff(str(tmp_path), HANDOFF_FILES)
    handoff.begin_job(7)
    handoff.begin_job(9)  # a later job begun: job 7's final would go to its own file only
    handoff.write_attributes({"jobId": 7, "state": "finished"}, own_file=False)
    assert "worker_attributes-7.json" not in writes and not (tmp_path / "worker_attributes-7.json").exists()
    handoff.write_final(8, {"jobId": 8, "state": "finished"}, {"exitCode": 0}, {})
    assert writes["worker_attributes-8.json"] is True


def test_a_jobs_outputs_are_written_before_its_final(tmp_path, monkeypatch):
    """harvester reads the outputs file again whenever it reads a new final (harvester.handoff.messenger): that is
    enough only if the pilot writes the outputs (and the report) first."""
    from pilot import handoff as handoff_module

    written = []
    write = handoff_module.atomic_write_json
    monkeypatch.setattr(handoff_module, "atomic_write_json",
                        lambda path, *args, **kwargs: written.append(os.path.basename(path)) or
                        write(path, *args, **kwargs))
    handoff = Handoff(str(tmp_path), dict(HANDOFF_FILES))
    handoff.write_final(7, {"jobId": 7, "state": "finished"}, {"exitCode": 0}, [{"type": "output"}])
    assert written.index("event_status.dump.json") < written.index("worker_attributes-7.json"), written
    assert written.index("jobReport.json") < written.index("worker_attributes-7.json"), written
    assert json.loads((tmp_path / "event_status.dump.json").read_text()) == {"7": [{"type": "output"}]}


def test_a_job_begun_is_listed_at_once_first_then_by_list_if_due_while_its_payload_runs(tmp_path, monkeypatch):
    """The pilot's first job is listed in worker_pandaids.json at once; later ones begun with ``list_later`` are
    not written between two payloads but by list_if_due (the job loop calls it once the payload runs), at most
    once a LIST_EVERY_S, and every one is listed by then."""
    from pilot import handoff

    clock = [100.0]
    monkeypatch.setattr(handoff.time, "monotonic", lambda: clock[0])
    h = Handoff(str(tmp_path), HANDOFF_FILES)
    listed = lambda: json.loads((tmp_path / "worker_pandaids.json").read_text())  # noqa: E731
    h.begin_job(1, list_later=True)
    assert listed() == [1]
    clock[0] += handoff.LIST_EVERY_S * 2
    h.begin_job(2, list_later=True)
    assert listed() == [1]  # due, but not written between two payloads
    h.list_if_due()
    assert listed() == [1, 2]
    h.begin_job(3, list_later=True)
    h.list_if_due()
    assert listed() == [1, 2]  # not due yet
    clock[0] += handoff.LIST_EVERY_S
    h.list_if_due()
    assert listed() == [1, 2, 3]


def test_the_attributes_keep_their_inodes_job_after_job_and_the_spare_goes_at_the_end(tmp_path):
    """worker_attributes.json is rewritten at every report of every job: by exchange with a kept spare
    (pilot.fileutil.Rewriter), not a new file each time; harvester still reads the newest job's whole dict."""
    h = Handoff(str(tmp_path), HANDOFF_FILES)
    attributes = tmp_path / "worker_attributes.json"
    inodes = set()
    for panda_id in range(1, 11):
        h.begin_job(panda_id)
        for state in ("starting", "running"):
            h.write_attributes({"jobId": panda_id, "state": state})
            inodes.add(os.stat(attributes).st_ino)
            assert json.loads(attributes.read_text()) == {"jobId": panda_id, "state": state, "jobStatus": state}
        h.write_attributes({"jobId": panda_id, "state": "finished"}, own_file=False)
    assert len(inodes) <= 2 and h.rewriters["attributes"].created == 2
    h.list_panda_ids()
    assert json.loads((tmp_path / "worker_pandaids.json").read_text()) == list(range(1, 11))
    h.close()
    assert sorted(os.listdir(tmp_path)) == ["worker_attributes.json", "worker_pandaids.json"]
