"""Several jobs' log tarballs in one request (minipanda/api/logs_bulk.py): every entry judged alone, the framing of the
body checked before anything is stored, and a token writing only logs of jobs dispatched to it. Token auth on,
through the WSGI app in-process on a real SQLite file and a real file store."""
import json
import os
import zlib

import pytest
from minipanda.api import logs_bulk
from minipanda.api.app import ServerContext, make_app
from minipanda.core import models, schema
from test_api_binding import SECRET, Api
from test_api_params import call

LIMIT = 4096  # the server's body limit in these tests


@pytest.fixture
def api(tmp_path):
    database = schema.open_database("sqlite:///" + str(tmp_path / "minipanda.db"))
    database.connect(reuse_if_open=True)
    yield Api(make_app(ServerContext(home=str(tmp_path), secret=SECRET, max_body=LIMIT)))
    database.close()


def adler(data):
    return f"{zlib.adler32(data) & 0xffffffff:08x}"


def entry(panda_id, data, lfn=None, scope="logs", **changes):
    return dict({"pandaID": panda_id, "scope": scope, "lfn": lfn or f"log.{panda_id}.tgz", "fsize": len(data),
                 "adler32": adler(data)}, **changes)


def upload(api, entries, bodies, token=None, manifest_length=None, length=None, cut=0):
    """(HTTP status, reply) of one bulk upload: the manifest then each body; ``cut`` bytes left off the end of what
    is sent while the declared length stays (a client that stopped sending)."""
    manifest = json.dumps({"files": entries}).encode()
    body = manifest + b"".join(bodies)
    headers = {"Authorization": f"Bearer {token or api.admin}", "X-Manifest-Length": str(
        len(manifest) if manifest_length is None else manifest_length),
        "Content-Length": str(len(body) if length is None else length)}
    status, reply = call(api.app, "POST", logs_bulk.ROUTE, body[:len(body) - cut], "application/octet-stream",
                         headers=headers)
    return status, json.loads(reply)


def dispatched(api, *queues, token=None):
    """Jobs submitted (each with its log ``logs/log.<PandaID>.tgz``) and taken by ``token`` (the admin's by
    default)."""
    ids = []
    for queue in queues:
        (panda_id,) = api.submit(queue)
        models.JobFile.update(lfn=f"log.{panda_id}.tgz", scope="logs").where(models.JobFile.job == panda_id,
                                                               models.JobFile.type == "log").execute()
        ids.append(panda_id)
    for queue in sorted(set(queues)):
        api.ok("/server/panda/getJob", {"computingElement": queue, "nJobs": len(queues)}, token)
    return ids


def stored(tmp_path, lfn, scope="logs"):
    path = tmp_path / "files" / scope / lfn
    return path.read_bytes() if path.exists() else None


def leftovers(tmp_path):
    """Temporaries of the store (hidden files) anywhere under it."""
    return [name for _, _, names in os.walk(tmp_path / "files") for name in names if name.startswith(".")]


def test_several_logs_are_stored_in_one_request_each_as_a_single_put_would(api, tmp_path):
    ids = dispatched(api, "TEST_PQ", "TEST_PQ", "TEST_PQ")
    bodies = [f"log of {pid}".encode() * (n + 1) for n, pid in enumerate(ids)]
    status, reply = upload(api, [entry(pid, body) for pid, body in zip(ids, bodies)], bodies)
    assert status == 200 and reply["success"], reply
    results = reply["data"]["results"]
    assert [r["status"] for r in results] == [201, 201, 201] and [r["pandaID"] for r in results] == ids
    assert [stored(tmp_path, f"log.{pid}.tgz") for pid in ids] == bodies
    assert results[0]["url"].endswith(f"/files/logs/log.{ids[0]}.tgz") and results[1]["adler32"] == adler(bodies[1])
    status, reply = upload(api, [entry(pid, body) for pid, body in zip(ids, bodies)], bodies)  # a retry
    assert [r["status"] for r in reply["data"]["results"]] == [200, 200, 200]


def test_one_bad_entry_is_refused_alone_and_the_others_are_stored(api, tmp_path):
    good, lying, other = dispatched(api, "TEST_PQ", "TEST_PQ", "TEST_PQ")
    bodies = [b"good", b"what was sent", b"other"]
    entries = [entry(good, bodies[0]), entry(lying, bodies[1], adler32=adler(b"something else")),
               entry(other, bodies[2])]
    status, reply = upload(api, entries, bodies)
    results = reply["data"]["results"]
    assert status == 200 and [r["status"] for r in results] == [201, 400, 201], reply
    assert "X-Checksum" in results[1]["message"]
    assert stored(tmp_path, f"log.{good}.tgz") == b"good" and stored(tmp_path, f"log.{other}.tgz") == b"other"
    assert stored(tmp_path, f"log.{lying}.tgz") is None and leftovers(tmp_path) == []


@pytest.mark.parametrize("change, status, word", [
    ({"lfn": "../escape.tgz"}, 400, "lfn"),
    ({"lfn": ".hidden.tgz"}, 400, "lfn"),
    ({"scope": ".."}, 400, "scope"),
    ({"scope": "a/b"}, 400, "scope"),
    ({"lfn": "log.tgz\x00x"}, 400, "lfn"),
    ({"pandaID": "1 OR 1=1"}, 400, "pandaID"),
    ({"pandaID": 99999999}, 404, "unknown"),
    ({"pandaID": 2 ** 64}, 400, "pandaID"),
    ({"pandaID": -1}, 400, "pandaID"),
    ({"pandaID": True}, 400, "pandaID"),
    ({"adler32": None}, 400, "X-Checksum"),
    ({"adler32": "zz"}, 400, "X-Checksum"),
])
def test_a_hostile_entry_is_refused_alone(api, tmp_path, change, status, word):
    victim, neighbour = dispatched(api, "TEST_PQ", "TEST_PQ")
    bodies = [b"hostile", b"neighbour"]
    status_, reply = upload(api, [entry(victim, bodies[0], **change), entry(neighbour, bodies[1])], bodies)
    first, second = reply["data"]["results"]
    assert status_ == 200 and (first["status"], second["status"]) == (status, 201), reply
    assert word in first["message"]
    assert stored(tmp_path, f"log.{neighbour}.tgz") == b"neighbour"
    assert sorted(os.listdir(tmp_path / "files")) == ["logs"] and leftovers(tmp_path) == []
    assert not (tmp_path / "escape.tgz").exists()


def test_a_body_over_the_limit_is_refused_whole_before_anything_is_stored(api, tmp_path):
    big, small = dispatched(api, "TEST_PQ", "TEST_PQ")
    bodies = [b"x" * LIMIT, b"small"]
    status, reply = upload(api, [entry(big, bodies[0]), entry(small, bodies[1])], bodies)
    assert status == 413 and "limit" in reply["message"], reply
    assert not (tmp_path / "files").exists()


def test_a_length_that_lies_is_refused_whole_and_nothing_is_stored(api, tmp_path):
    first, second = dispatched(api, "TEST_PQ", "TEST_PQ")
    bodies = [b"first", b"second"]
    entries = [entry(first, bodies[0]), entry(second, bodies[1])]
    manifest = len(json.dumps({"files": entries}).encode())
    for kwargs in ({"length": manifest + 11 + 5},  # Content-Length beyond the sizes named
                   {"length": manifest + 3},  # short of them
                   {"manifest_length": manifest - 1},  # the manifest cut
                   {"manifest_length": logs_bulk.MANIFEST_MAX + 1},
                   {"manifest_length": "x"}):
        status, reply = upload(api, entries, bodies, **kwargs)
        assert status == 400 and not reply["success"], (kwargs, reply)
    # an entry that understates its size: its bytes are misread, every one after it too; nothing half-written
    status, reply = upload(api, [entry(first, bodies[0], fsize=3), entry(second, bodies[1], fsize=8)], bodies)
    assert status == 200 and [r["status"] for r in reply["data"]["results"]] == [400, 400], reply
    assert stored(tmp_path, f"log.{first}.tgz") is None and stored(tmp_path, f"log.{second}.tgz") is None
    assert leftovers(tmp_path) == []


def test_a_body_without_a_length_or_without_sizes_is_refused_whole(api, tmp_path):
    (pid,) = dispatched(api, "TEST_PQ")
    status, reply = upload(api, [entry(pid, b"x")], [b"x"], length="")
    assert status == 411
    for bad in ({"fsize": -1}, {"fsize": "1"}, {"fsize": True}, {"fsize": None}):
        status, reply = upload(api, [entry(pid, b"x", **bad)], [b"x"])
        assert status == 400 and "fsize" in reply["message"], (bad, reply)
    for manifest in (b"[1, 2]", b"{\"files\": []}", b"not json", b"[" * 3000):
        headers = {"Authorization": f"Bearer {api.admin}", "X-Manifest-Length": str(len(manifest))}
        status, raw = call(api.app, "POST", logs_bulk.ROUTE, manifest, "application/octet-stream", headers=headers)
        assert status == 400, raw
    assert not (tmp_path / "files").exists() or leftovers(tmp_path) == []


def test_too_many_entries_are_refused_whole(api, tmp_path):
    ids = dispatched(api, *["TEST_PQ"] * 3)
    api.app = make_app(ServerContext(home=str(tmp_path), secret=SECRET))  # room for the manifest
    many = [entry(ids[n % 3], b"", lfn=f"log.{ids[n % 3]}.tgz") for n in range(logs_bulk.MAX_LOGS + 1)]
    status, reply = upload(api, many, [b""] * len(many))
    assert status == 400 and str(logs_bulk.MAX_LOGS) in reply["message"]
    assert not (tmp_path / "files").exists() or os.listdir(tmp_path / "files" / "logs") == []
    status, reply = upload(api, many[:logs_bulk.MAX_LOGS], [b""] * logs_bulk.MAX_LOGS)
    assert status == 200 and len(reply["data"]["results"]) == logs_bulk.MAX_LOGS


def test_a_body_cut_short_leaves_only_whole_checked_files(api, tmp_path):
    first, second = dispatched(api, "TEST_PQ", "TEST_PQ")
    bodies = [b"first log", b"second log, cut"]
    status, reply = upload(api, [entry(first, bodies[0]), entry(second, bodies[1])], bodies, cut=4)
    assert [r["status"] for r in reply["data"]["results"]] == [201, 400], reply
    assert stored(tmp_path, f"log.{first}.tgz") == b"first log" and stored(tmp_path, f"log.{second}.tgz") is None
    assert leftovers(tmp_path) == []


def test_the_store_is_never_written_through_a_symlink(api, tmp_path):
    (pid,) = dispatched(api, "TEST_PQ")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "files").mkdir()
    os.symlink(outside, tmp_path / "files" / "linked")
    status, reply = upload(api, [entry(pid, b"log", scope="linked")], [b"log"])
    (result,) = reply["data"]["results"]
    assert result["status"] == 400 and "outside the file store" in result["message"], reply
    assert os.listdir(outside) == []


def test_a_token_writes_only_logs_of_jobs_dispatched_to_it(api, tmp_path):
    h1 = api.token("harvester", "h1")
    token = api.mint(h1, "h1", 5, "TEST_PQ")
    sibling_token = api.mint(h1, "h1", 6, "TEST_PQ")
    (mine,) = dispatched(api, "TEST_PQ", token=token)
    (sibling,) = dispatched(api, "TEST_PQ", token=sibling_token)
    (elsewhere,) = dispatched(api, "OTHER_PQ")  # another queue's job, taken by a site-wide pilot
    (queued,) = api.submit("TEST_PQ")  # not dispatched
    models.JobFile.update(lfn=f"log.{queued}.tgz").where(models.JobFile.job == queued).execute()
    ids = [mine, sibling, elsewhere, queued, mine]
    bodies = [b"mine", b"sibling", b"elsewhere", b"queued", b"another name"]
    entries = [entry(pid, body) for pid, body in zip(ids[:4], bodies[:4])] + [
        entry(mine, bodies[4], lfn="not.its.log.tgz")]
    status, reply = upload(api, entries, bodies, token=token)
    results = reply["data"]["results"]
    assert status == 200 and [r["status"] for r in results] == [201, 403, 403, 409, 403], reply
    assert "worker 6" in results[1]["message"] and "OTHER_PQ" in results[2]["message"]
    assert "not dispatched" in results[3]["message"] and "not a log file" in results[4]["message"]
    assert sorted(os.listdir(tmp_path / "files" / "logs")) == [f"log.{mine}.tgz"]
    # a user token may not use the route at all
    status, reply = upload(api, entries[:1], bodies[:1], token=api.token("user", "bob"))
    assert status == 403 and os.listdir(tmp_path / "files" / "logs") == [f"log.{mine}.tgz"]
