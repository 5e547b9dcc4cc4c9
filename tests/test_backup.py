"""``minipanda db backup`` and ``harvester db backup``: a consistent copy of a live SQLite database, taken while
the server (harvester) keeps writing; the restored copy holds everything committed before the backup began."""
import os
import shutil
import sqlite3
import subprocess
import sys
import threading

import requests
from conftest import LiveServer, make_job


def submit_until(server, stop, committed):
    """Submit jobs one call at a time until ``stop`` is set; ``committed`` gets each PandaID once its call
    returned (the server committed it)."""
    session = requests.Session()
    session.headers.update(server.headers())
    while not stop.is_set():
        reply = session.post(server.url + "/api/v1/job/submit", json={"jobs": [make_job("BACKUP_Q")] * 5},
                             timeout=30).json()
        assert reply["success"], reply
        committed.extend(row[0] for row in reply["data"])


def test_backup_of_a_live_server_restores_everything_committed_before_it(tmp_path):
    home = tmp_path / "home"
    server = LiveServer(home, "sqlite:///" + str(home / "minipanda.db"))
    committed, stop = [], threading.Event()
    writer = threading.Thread(target=submit_until, args=(server, stop, committed))
    try:
        writer.start()
        while len(committed) < 200:  # the server is busy writing when the backup starts, and goes on after
            writer.join(0.05)
            assert writer.is_alive()
        # the command line, while the server writes
        cli_copy = tmp_path / "backups" / "cli-copy.db"
        backup = subprocess.run([sys.executable, "-m", "minipanda", "db", "backup", str(cli_copy), "--home",
                                 str(home)], capture_output=True, text=True, timeout=120)
        assert backup.returncode == 0, backup.stderr
        assert f"-> {cli_copy}" in backup.stdout
        # the same code called the moment the last commit was seen, so that the newest committed jobs are still
        # only in the write-ahead log (a plain copy of the database file would miss them)
        before = list(committed)
        copy = tmp_path / "backups" / "minipanda-copy.db"
        from minipanda.core import backup as db_backup

        db_backup.backup("sqlite:///" + str(home / "minipanda.db"), str(copy))
        n_during = len(committed)
        writer.join(0.5)
        assert writer.is_alive() and len(committed) > n_during  # the server kept taking jobs meanwhile
    finally:
        stop.set()
        writer.join(30)
        server.stop()
    assert not os.path.exists(str(copy) + ".part")
    conn = sqlite3.connect(copy)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy(copy, restored / "minipanda.db")
    shutil.copy(home / "secret.key", restored / "secret.key")
    shutil.copy(home / "admin.token", restored / "admin.token")
    again = LiveServer(restored, "sqlite:///" + str(restored / "minipanda.db"))
    try:
        reply = requests.post(again.url + "/api/v1/job/get_status", json={"job_ids": before},
                              headers=again.headers(), timeout=60).json()
        found = {row["job_id"] for row in reply["data"] if row["status"] == "activated"}
        assert found >= set(before), sorted(set(before) - found)[:10]
    finally:
        again.stop()


def test_backup_refuses_postgresql_and_its_own_file(tmp_path):
    pg = subprocess.run([sys.executable, "-m", "minipanda", "db", "backup", str(tmp_path / "x.db"), "--db",
                         "postgresql://u:secret@127.0.0.1:1/db"], capture_output=True, text=True, timeout=60)
    assert pg.returncode == 1 and "pg_dump" in pg.stderr and "secret" not in pg.stderr
    path = tmp_path / "minipanda.db"
    sqlite3.connect(path).close()
    same = subprocess.run([sys.executable, "-m", "minipanda", "db", "backup", str(path), "--db",
                           f"sqlite:///{path}"], capture_output=True, text=True, timeout=60)
    assert same.returncode == 1 and "overwrite the database itself" in same.stderr


WRITER = r"""
import sys, time
from harvester import db, models
db.open_database(sys.argv[1])
n = 0
while True:
    with models.database.atomic():
        models.Setting.insert(key=f"row.{n}", value=str(n)).execute()
    print(n, flush=True)  # committed
    n += 1
"""


def test_harvester_backup_while_it_writes_keeps_every_committed_row(tmp_path):
    home = tmp_path / "hhome"
    home.mkdir()
    path = home / "harvester.db"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(300):  # rows committed before the backup begins
            last = int(writer.stdout.readline())
        copy = tmp_path / "harvester-copy.db"
        backup = subprocess.run([sys.executable, "-m", "harvester", "db", "backup", str(copy), "--home", str(home)],
                                capture_output=True, text=True, timeout=120)
        assert backup.returncode == 0, backup.stderr
        assert writer.poll() is None  # it never stopped writing
    finally:
        writer.kill()
        writer.wait()
    conn = sqlite3.connect(copy)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    keys = {row[0] for row in conn.execute("SELECT key FROM setting WHERE key LIKE 'row.%'")}
    conn.close()
    assert {f"row.{n}" for n in range(last + 1)} <= keys
    from harvester import db

    db.open_database(str(copy))  # harvester opens the copy as its own
    db.close_database()
