"""``minipanda db backup FILE``: a consistent copy of a live SQLite database, taken while the server runs.

SQLite's online backup API copies every page in one step, inside one read transaction: the copy holds exactly
what was committed when the step began, and the server keeps writing meanwhile (WAL: a reader never blocks the
writer). The copy is written to ``FILE.part``, checked (``PRAGMA quick_check``), synced and only then renamed to
FILE, so a FILE that exists is whole.

The archive's month files (:mod:`minipanda.core.archive`) are copied after the database, each the same way, to
``<FILE without .db>-archive-YYYY-MM.db``: the names a database restored as FILE looks for. Database first, then
archives: a job the retention duty moves in between is then in both copies (the next retention run settles
that, as after a crash), never in neither.
"""
import os
import sqlite3

from minipanda.core import archive
from minipanda.errors import ConfigError


def copy_sqlite(source, target):
    """Copy the SQLite database ``source`` to ``target`` with the online backup API; returns its size in bytes."""
    if not os.path.isfile(source):
        raise ConfigError(f"{source}: no such database file")
    if os.path.abspath(source) == os.path.abspath(target):
        raise ConfigError(f"{target}: the backup would overwrite the database itself")
    partial = target + ".part"
    for leftover in (partial, partial + "-journal"):
        if os.path.exists(leftover):
            os.unlink(leftover)
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)  # pages=-1: every page in one step, one read transaction
            verdict = dst.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise ConfigError(f"backup of {source} to {target} failed: {exc}") from None
    finally:
        src.close()
    if verdict != "ok":
        os.unlink(partial)
        raise ConfigError(f"backup of {source}: the copy does not pass SQLite's quick_check ({verdict}); nothing kept")
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, target)
    return os.path.getsize(target)


def backup(db_url, target, archives=True):
    """Back up the database of ``db_url`` (SQLite only) and, with ``archives``, its month archives, to ``target``.

    Returns [(source, copy, bytes)] in the order they were copied."""
    if not db_url.startswith("sqlite:///") or db_url.endswith(":memory:"):
        raise ConfigError(f"db backup copies SQLite databases; for {db_url.split('@')[-1]} use PostgreSQL's "
                          "pg_dump (the archive tables are in the same database)")
    source = os.path.abspath(db_url[len("sqlite:///"):])
    target = os.path.abspath(target)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    done = [(source, target, copy_sqlite(source, target))]
    if archives:
        store = archive.SqliteArchive.at(source)
        base = os.path.splitext(target)[0]
        for month in store.months():
            copy = f"{base}-archive-{month}.db"
            done.append((store.path(month), copy, copy_sqlite(store.path(month), copy)))
    return done
