"""prun's sandbox cache and minipanda's runGen, piece by piece: the file-server calls as panda-client 2.2 makes
them, every bad input refused naming the thing with nothing half-written, runGen's options, and one prun job run
by PanDA's pilot3 fetching runGen over /trf/user/."""
import io
import os
import struct
import subprocess
import sys
import tarfile
import zlib

import pytest
import requests

from taskhelp import TaskServer, open_db, set_queue, submit, task_server, wait_for  # noqa: F401 (a fixture)

RUNGEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "minipanda", "trf",
                      "runGen-00-00-02")


def sandbox_bytes(files=None, extra=None):
    """A gzipped tar holding ``files`` ({name: text}); ``extra(tar)`` may add odd members."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in (files or {"run.sh": "echo hi > out.txt\n"}).items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if extra:
            extra(archive)
    return buffer.getvalue()


def upload(server, token, name, content):
    return requests.post(server.url + "/api/v1/file_server/upload_cache_file", files={"file": (name, content)},
                         headers=server.headers(token), timeout=30)


def validate(server, token, content):
    crc = struct.unpack("<I", content[-8:-4])[0]  # the gzip trailer's CRC32, as panda-client reads it
    assert crc == zlib.crc32(zlib.decompress(content, 16 + zlib.MAX_WBITS))
    return requests.post(server.url + "/api/v1/file_server/validate_cache_file",
                         json={"file_size": len(content), "checksum": crc}, headers=server.headers(token),
                         timeout=30).json()


def stored(server):
    found = []
    for top in ("files", "sandboxes"):
        for root, _, names in os.walk(os.path.join(server.home, top)):
            found += [os.path.join(root, n) for n in names]
    return found


def test_upload_validate_and_fetch_as_panda_client_does(task_server):
    alice, bob = task_server.token("user", "alice"), task_server.token("user", "bob")
    pilot = task_server.token("pilot", "p1")
    content = sandbox_bytes()
    body = validate(task_server, alice, content)
    assert body["success"] is False and body["message"] == "not found"
    reply = upload(task_server, alice, "jobO.1234.tar.gz", content)
    assert reply.status_code == 200 and reply.json()["success"], reply.text
    assert reply.json()["data"]["fsize"] == len(content)
    assert upload(task_server, alice, "jobO.1234.tar.gz", content).json()["message"].endswith(
        "already stored with the same content")
    body = validate(task_server, alice, content)
    assert body["message"] == "FOUND:127.0.0.1:jobO.1234.tar.gz"
    assert validate(task_server, bob, content)["message"] == "not found"  # another user's sandbox is not reused
    url = task_server.url + "/cache/jobO.1234.tar.gz"
    assert requests.get(url, headers=task_server.headers(alice), timeout=10).content == content
    assert requests.get(url, headers=task_server.headers(pilot), timeout=10).content == content
    assert requests.get(url, headers=task_server.headers(bob), timeout=10).status_code == 403
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(task_server.url + "/cache/jobO.none.tar.gz", headers=task_server.headers(pilot),
                        timeout=10).status_code == 404
    # the name is alice's: bob may not upload another sandbox under it
    reply = upload(task_server, bob, "jobO.1234.tar.gz", sandbox_bytes({"x": "y"}))
    assert reply.status_code == 409 and "taken by another user's sandbox" in reply.json()["message"]
    # a different content under a stored name is refused, the stored one stays
    reply = upload(task_server, alice, "jobO.1234.tar.gz", sandbox_bytes({"x": "other"}))
    assert reply.status_code == 409
    assert requests.get(url, headers=task_server.headers(alice), timeout=10).content == content


def test_a_sandbox_name_with_a_trailing_newline_is_refused():
    """SANDBOX_NAME's '$' matched before a trailing newline: the name is whole or refused."""
    from minipanda.errors import RequestError
    from minipanda.tasks import sandbox

    assert sandbox.check_name("jobO.1234.tar.gz") == "jobO.1234.tar.gz"
    with pytest.raises(RequestError, match="expected a gzipped tar"):
        sandbox.check_name("jobO.1234.tar.gz\n")


@pytest.mark.parametrize("name, content, status, words", [
    ("../evil.tar.gz", None, 400, "sandbox name '../evil.tar.gz': a plain file name is required"),
    ("a/b.tar.gz", None, 400, "sandbox name 'a/b.tar.gz': a plain file name is required"),
    ("notes.txt", None, 400, "sandbox name 'notes.txt': expected a gzipped tar"),
    ("jobO.bad.tar.gz", b"this is not gzip at all, just text" * 3, 400, "sandbox jobO.bad.tar.gz: not a valid "
                                                                         "gzipped tar archive"),
    ("jobO.cut.tar.gz", "truncated", 400, "sandbox jobO.cut.tar.gz: not a valid gzipped tar archive"),
    ("jobO.up.tar.gz", "dotdot", 400, "member '../up.txt' would be unpacked outside the job's directory"),
    ("jobO.link.tar.gz", "symlink", 400, "link 'l' points outside the job's directory"),
])
def test_bad_sandboxes_are_refused_naming_the_thing_and_nothing_is_kept(task_server, name, content, status, words):
    alice = task_server.token("user", "alice")
    good = sandbox_bytes()
    if content is None:
        content = good
    elif content == "truncated":
        content = good[:-12]
    elif content == "dotdot":
        content = sandbox_bytes({"../up.txt": "x"})
    elif content == "symlink":
        def link(archive):
            info = tarfile.TarInfo("l")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            archive.addfile(info)
        content = sandbox_bytes(extra=link)
    reply = upload(task_server, alice, name, content)
    assert reply.status_code == status and words in reply.json()["message"], reply.text
    assert stored(task_server) == []


def test_an_oversized_sandbox_is_refused_with_the_limit(tmp_path, db_url):
    class SmallServer(TaskServer):
        def argv(self):
            return super().argv() + ["--max-body-mb", "0.1"]

    server = SmallServer(tmp_path / "home", db_url)
    try:
        content = sandbox_bytes({"big.bin": os.urandom(300_000).hex()})
        reply = upload(server, server.token("user", "alice"), "jobO.big.tar.gz", content)
        assert reply.status_code == 413
        assert "larger than the server's limit of 104857 bytes" in reply.json()["message"]
        assert stored(server) == []
    finally:
        server.stop()


def test_a_task_naming_a_sandbox_the_user_did_not_upload_is_refused(task_server):
    set_queue("Q")
    alice, bob = task_server.token("user", "alice"), task_server.token("user", "bob")
    assert upload(task_server, alice, "jobO.a.tar.gz", sandbox_bytes()).status_code == 200
    params = {"taskName": "user.bob.t1/", "prodSourceLabel": "user", "site": "Q", "noInput": True, "nEvents": 1,
              "nEventsPerJob": 1, "sourceURL": "http://127.0.0.1:1",
              "jobParameters": [{"type": "constant", "value": "-j \"\" --sourceURL ${SURL}"},
                                {"type": "constant", "value": "-a jobO.a.tar.gz"},
                                {"type": "constant", "value": "-p \"echo\""}]}
    body = task_server.call("task/submit", {"task_parameters": params}, bob)
    assert body["success"] is False and body["data"] == 4
    assert "-a jobO.a.tar.gz: no sandbox of that name was uploaded by bob" in body["message"]
    params["jobParameters"][1]["value"] = "-a ../x.tar.gz"
    body = task_server.call("task/submit", {"task_parameters": params}, bob)
    assert "a plain file name is required" in body["message"]
    params["taskName"] = "user.alice.t1/"
    params["jobParameters"][1]["value"] = "-a jobO.a.tar.gz"
    assert submit(task_server, params, alice) >= 10_000_000


def test_rungen_is_served_at_the_trf_url_from_the_package(task_server):
    reply = requests.get(task_server.url + "/trf/user/runGen-00-00-02", timeout=10)
    assert reply.status_code == 200
    with open(RUNGEN, "rb") as handle:
        assert reply.content == handle.read()


def run_gen(workdir, *args, env=None):
    return subprocess.run([sys.executable, RUNGEN, *args], cwd=workdir, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **(env or {})))


@pytest.mark.parametrize("args, words", [
    (["--useAthenaPackages", "-p", "echo"], "option --useAthenaPackages is not supported by minipanda's runGen"),
    (["-l", "lib.tgz", "-p", "echo"], "option -l is not supported by minipanda's runGen"),
    (["-p", "echo", "stray"], "unexpected argument 'stray'"),
    (["-p"], "option -p needs a value"),
    (["-o", "[1, 2]", "-p", "echo"], "option -o: expected a Python dict literal"),
    (["-r", "../up", "-p", "echo"], "option -r: '../up' must be a relative path without '..'"),
])
def test_rungen_refuses_unknown_and_bad_options_by_name(tmp_path, args, words):
    done = run_gen(tmp_path, *args)
    assert done.returncode == 64 and words in done.stderr, done.stderr


def test_rungen_runs_the_command_with_inputs_and_renames_outputs(tmp_path):
    (tmp_path / "a.txt").write_text("A\n")
    (tmp_path / "b.txt").write_text("B\n")
    done = run_gen(tmp_path, "-j", "", "-r", "sub", "-i", "['a.txt', 'b.txt']", "-o",
                   "{'out.txt': 'user.x.1._000001.out.txt', 'part*.dat': 'user.x.1._000001.parts.tgz'}",
                   "--writeInputToTxt", "IN:inputs.txt",
                   "-p", "for%20f%20in%20%24(echo%20%IN%20%7C%20tr%20%2C%20'%20')%3B%20do%20cat%20%24f%3B%20done"
                   "%20%3E%20out.txt%3B%20touch%20part1.dat%20part2.dat")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "user.x.1._000001.out.txt").read_text() == "A\nB\n"
    assert (tmp_path / "sub" / "inputs.txt").read_text() == "a.txt\nb.txt\n"
    with tarfile.open(tmp_path / "user.x.1._000001.parts.tgz") as archive:
        assert sorted(archive.getnames()) == ["part1.dat", "part2.dat"]
    missing = run_gen(tmp_path, "-o", "{'never.txt': 'x.never.txt'}", "-p", "true")
    assert missing.returncode == 66 and "output never.txt was not produced" in missing.stderr
    failing = run_gen(tmp_path, "-o", "{'out.txt': 'y.txt'}", "-p", "exit%203")
    assert failing.returncode == 3 and not (tmp_path / "y.txt").exists()
    absent = run_gen(tmp_path, "-i", "['nothere.txt']", "-p", "true")
    assert absent.returncode == 67 and "input file nothere.txt is not in the job's directory" in absent.stderr


def test_rungen_fetches_the_sandbox_with_the_pilots_token(task_server, tmp_path):
    alice = task_server.token("user", "alice")
    content = sandbox_bytes({"code/run.sh": "echo from-sandbox > result.txt\n"})
    assert upload(task_server, alice, "jobO.r.tar.gz", content).status_code == 200
    token_file = tmp_path / "pilot.token"
    token_file.write_text(task_server.token("pilot", "p1"))
    job = tmp_path / "job"
    job.mkdir()
    args = ["--sourceURL", task_server.url, "-a", "jobO.r.tar.gz", "-r", "code", "-o", "{'result.txt': 'r.txt'}",
            "-p", "sh%20run.sh"]
    done = run_gen(job, *args, env={"PANDA_AUTH_TOKEN": str(token_file)})
    assert done.returncode == 0, done.stderr
    assert (job / "r.txt").read_text() == "from-sandbox\n"
    other = tmp_path / "other"
    other.mkdir()
    (tmp_path / "bob.token").write_text(task_server.token("user", "bob"))
    refused = run_gen(other, *args, env={"PANDA_AUTH_TOKEN": str(tmp_path / "bob.token")})
    assert refused.returncode == 65 and "HTTP 403" in refused.stderr


def test_surl_becomes_the_server_url_the_pilot_used(task_server):
    set_queue("Q")
    alice = task_server.token("user", "alice")
    assert upload(task_server, alice, "jobO.s.tar.gz", sandbox_bytes()).status_code == 200
    params = {"taskName": "user.alice.surl/", "prodSourceLabel": "user", "site": "Q", "noInput": True, "nEvents": 2,
              "nEventsPerJob": 1, "sourceURL": "http://elsewhere.invalid:1",
              "jobParameters": [{"type": "constant", "value": "-j \"\" --sourceURL ${SURL}"},
                                {"type": "constant", "value": "-a jobO.s.tar.gz"},
                                {"type": "constant", "value": "-p \"", "padding": False},
                                {"type": "constant", "value": "echo%20", "padding": False},
                                {"type": "template", "value": "${SEQNUMBER}", "param_type": "pseudo_input",
                                 "dataset": "seq_number", "offset": 7, "padding": False},
                                {"type": "constant", "value": "\""}]}
    submit(task_server, params, alice)
    pilot = task_server.token("pilot", "p1")
    jobs = []

    def got_jobs():
        reply = requests.post(task_server.url + "/server/panda/getJob",
                              data={"siteName": "Q", "prodSourceLabel": "user", "nJobs": 2},
                              headers=task_server.headers(pilot), timeout=10).json()
        jobs.extend(reply.get("jobs") or [])
        return len(jobs) == 2

    wait_for(got_jobs, "two prun jobs to dispatch")
    host = task_server.url.replace("http://", "")
    assert sorted(j["jobPars"] for j in jobs) == [
        f'-j "" --sourceURL http://{host} -a jobO.s.tar.gz -p "echo%207"',
        f'-j "" --sourceURL http://{host} -a jobO.s.tar.gz -p "echo%208"']


# ---- one prun job on PanDA's pilot3 --------------------------------------------------------------------------------

@pytest.mark.pilot3
def test_a_prun_job_runs_on_pilot3_with_rungen_from_the_trf_url(tmp_path):
    from pilot3.harness import pilot3_or_skip, start_pilot3
    from test_pilot3_compat import pilot_env, wait_final

    pilot3 = pilot3_or_skip("a prun job on pilot3")
    outdir = tmp_path / "storage"
    outdir.mkdir()
    queues = tmp_path / "queues.yaml"
    queues.write_text("queues:\n  SHARED_Q:\n    prodSourceLabels: [managed, user]\n"
                      "    storage:\n      output: {type: shared, path: %s}\n" % outdir)

    class Server(TaskServer):
        def argv(self):
            return super().argv() + ["--queues", str(queues)]

    server = Server(tmp_path / "home", "sqlite:///" + str(tmp_path / "home" / "minipanda.db"))
    try:
        open_db(server)
        alice = server.token("user", "alice")
        content = sandbox_bytes({"run.sh": "echo \"pilot3 ran $1\" > out.txt\n"})
        assert upload(server, alice, "jobO.p3.tar.gz", content).status_code == 200
        params = {"taskName": "user.alice.p3/", "prodSourceLabel": "user", "site": "SHARED_Q", "noInput": True,
                  "nEvents": 1, "nEventsPerJob": 1, "sourceURL": server.url,
                  "log": {"type": "template", "param_type": "log", "dataset": "user.alice.p3.log/",
                          "value": "user.alice.p3.log.$JEDITASKID.${SN}.log.tgz"},
                  "jobParameters": [{"type": "constant", "value": "-j \"\" --sourceURL ${SURL}"},
                                    {"type": "constant", "value": "-r ."},
                                    {"type": "constant", "value": "-a jobO.p3.tar.gz"},
                                    {"type": "template", "param_type": "output", "hidden": True,
                                     "value": "user.alice.$JEDITASKID._${SN/P}.out.txt",
                                     "dataset": "user.alice.p3_out.txt/"},
                                    {"type": "constant",
                                     "value": "-o \"{'out.txt': 'user.alice.$JEDITASKID._${SN/P}.out.txt'}\""},
                                    {"type": "constant", "value": "-p \"sh%20run.sh%20ok\""}]}
        task_id = submit(server, params, alice)
        ids = []
        wait_for(lambda: ids.extend(server.call("task/get_job_ids", {"task_id": task_id}, alice)["data"] or [])
                 or ids, "the prun job to be made")
        with start_pilot3(pilot3, server.url, "SHARED_Q", tmp_path / "pilot", extra_args=["-j", "user",
                          "--output-dir", str(outdir)], extra_env=pilot_env(server, tmp_path)) as run:
            assert wait_final(server, ids[0], run) == "finished"
        log = server.read_log()
        assert "GET /trf/user/runGen-00-00-02 200" in log and "GET /cache/jobO.p3.tar.gz 200" in log
        outputs = [p for p in outdir.rglob(f"user.alice.{task_id}._000001.out.txt")]
        assert outputs and outputs[0].read_text() == "pilot3 ran ok\n"
    finally:
        server.stop()
