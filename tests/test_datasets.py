"""Datasets: registration (checksums, duplicates, owners), listing, and outputs registered when jobs finish."""
import zlib

import pytest
import requests
from minipanda.errors import RequestError
from minipanda.tasks import datasets
from taskhelp import task_server  # noqa: F401 (a fixture)
from taskhelp import acquire, add_dataset, run_job, set_queue, submit, wait_for, wait_jobs


def test_scan_paths_measures_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.dat").write_bytes(b"hello world")
    (tmp_path / "d" / "a.dat").write_bytes(b"")
    (tmp_path / "c.dat").write_bytes(b"x" * 3000)
    files = datasets.scan_paths([str(tmp_path / "d"), str(tmp_path / "c.dat")], n_events=10)
    assert [f["lfn"] for f in files] == ["a.dat", "b.dat", "c.dat"]
    assert files[1]["fsize"] == 11 and files[1]["checksum"] == "ad:%08x" % zlib.adler32(b"hello world")
    assert files[0]["checksum"] == "ad:00000001" and files[2]["location"] == str(tmp_path)
    assert len({f["guid"] for f in files}) == 3 and files[0]["nEvents"] == 10
    with pytest.raises(ValueError, match="no such file"):
        datasets.scan_paths([str(tmp_path / "missing")])
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "c.dat").write_bytes(b"")
    with pytest.raises(ValueError, match="already given"):
        datasets.scan_paths([str(tmp_path / "c.dat"), str(tmp_path / "e")])


def entry(lfn="a.dat", **overrides):
    return dict({"lfn": lfn, "fsize": 5, "checksum": "ad:0000abcd", "guid": "g", "location": "/d"}, **overrides)


@pytest.mark.parametrize("name, files, message", [
    ("bad name!", [entry()], "name: expected a dataset name"),
    ("ds", [], "files: expected a non-empty list"),
    ("ds", [entry(lfn="../x")], "files[0].lfn: expected a plain file name"),
    ("ds", [entry(fsize=-1)], "files[0].fsize: expected a non-negative integer"),
    ("ds", [entry(checksum="md5:zz")], "files[0].checksum: expected an adler32"),
    ("ds", [entry(), entry()], "the same lfn is given twice"),
    # a pattern's '$' matches before a trailing newline; these are whole names
    ("ds\n", [entry()], "name: expected a dataset name"),
    ("ds", [entry(lfn="a.dat\n")], "files[0].lfn: expected a plain file name"),
    ("ds", [entry(checksum="ad:0000abcd\n")], "files[0].checksum: expected an adler32"),
])
def test_bad_registrations(database, name, files, message):
    with pytest.raises(RequestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        datasets.add_files(name, files, "alice")


def test_add_is_idempotent_and_owned(database):
    assert datasets.add_files("ds", [entry("a"), entry("b")], "alice")["added"] == 2
    again = datasets.add_files("ds", [entry("a"), entry("c")], "alice")
    assert (again["added"], again["skipped"], again["n_files"]) == (1, 1, 3)
    with pytest.raises(RequestError, match="already in ds with size 5"):
        datasets.add_files("ds", [entry("a", fsize=6)], "alice")
    with pytest.raises(RequestError, match="belongs to alice"):
        datasets.add_files("ds", [entry("d")], "bob")
    assert datasets.add_files("ds", [entry("d")], "root", manages_all=True)["added"] == 1
    (listed,) = datasets.list_datasets(pattern="d*")
    assert (listed["name"], listed["nFiles"], listed["bytes"]) == ("ds", 4, 20)


def test_outputs_registered_when_jobs_finish(task_server):
    set_queue("Q1")
    add_dataset(task_server, "in", 2)
    tid = submit(task_server, {"taskName": "reg", "exec": "x %IN > %OUT", "inDS": "in", "outputs": ["o.txt"],
                               "nScouts": 0})
    wait_jobs(task_server, tid, 2)
    job = acquire(task_server, "Q1")[0]
    assert job["surlIn"] == ",".join(f"/data/in/{lfn}" for lfn in job["inFiles"].split(","))  # where registered
    run_job(task_server, job)
    out = wait_for(lambda: task_server.call("dataset/show", {"name": "user.admin.reg_o.txt"},  # the user's scope
                                            method="GET")["data"]["files"], "the output to be registered")
    assert out == [{"lfn": f"{tid}._000001.o.txt", "guid": f"g-{tid}._000001.o.txt", "fsize": 10,
                    "checksum": "ad:0000abcd", "location": "/out", "nEvents": None, "status": "ready",
                    "PandaID": job["PandaID"]}]
    logs = task_server.call("dataset/show", {"name": "user.admin.reg.log"}, method="GET")["data"]
    assert logs["type"] == "log" and logs["jediTaskID"] == tid
    missing = requests.get(task_server.url + "/api/v1/dataset/show", params={"name": "nope"},
                           headers=task_server.headers())
    assert missing.status_code == 404 and missing.json()["message"] == "dataset 'nope' not found"
