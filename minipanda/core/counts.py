"""Live counts kept by the database: jobs by (task, queue, state) and task inputs by (task, state).

The monitor's pages and ``/metrics`` show these counts over every live row. Counted with GROUP BY, each page
view read the whole job table (100,000 rows: tens of milliseconds, growing with the table). Here the counts are
rows of their own, kept by triggers on ``job`` and ``task_input`` inside the very statement that inserts, changes
or deletes a row. So a count is exact whoever writes (the server, the CLI, another process, hand-written SQL),
and a rollback or a crash takes the count's change with it: there is nothing to drift.

- SQLite has one writer at a time: a row trigger adds to and subtracts from the count rows directly.
- PostgreSQL has concurrent writers: a count row updated by every claim would make concurrent transactions wait
  for each other's row lock until commit, and transactions touching several counts could deadlock. So statement
  triggers append each statement's net change to a ``*_delta`` table (inserts only: no row is shared); a reader
  sums the counts and the deltas in one statement (one snapshot, so what it sees is exact), and :func:`fold`
  moves the deltas into the counts (the ``counts`` duty every few seconds, and a page before it reads).

A job count row also keeps ``last_in``: when a job last entered that (task, queue, state). For ``sent`` that is
when a pilot last took a job of the task from the queue (:func:`last_entered`, which ``why`` reports).

Rows whose count is 0 stay (they hold ``last_in``) until their task has left the live tables: :func:`tidy`, run
by the retention duty. Job rows without a task are counted under task 0.

The bulk paths (a submission, a claim, a bulk update) count their own rows on SQLite: a row trigger ran two
statements per job (a tenth of a bulk dispatch + finish). Inside their transaction they pause the job triggers
(:func:`bulk_jobs`: a row in ``job_count_paused``, which the triggers' WHEN reads) and add each statement's
moves, summed per (task, queue, state), in one upsert before they resume them. Everything else (a batch of one
or two jobs, the task generator, the CLI, hand-written SQL, a delete) is still counted by the triggers. No other
writer can see the pause: SQLite has one writer at a time and the row is gone before the commit (a rollback
takes it with the rest). PostgreSQL's statement triggers already count a statement at a time: there the bulk
paths leave it to them.
"""
import collections
import contextlib
import dataclasses
import datetime
import functools

import peewee
from minipanda.core.db import database

# A transaction-level advisory lock: one fold at a time, and a second one skips instead of waiting.
FOLD_LOCK_KEY = 0x6D70636F756E7473  # "mpcounts"


@dataclasses.dataclass(frozen=True)
class Counter:
    table: str  # the counted table
    name: str  # the table of counts (and on PostgreSQL ``<name>_delta``)
    row_id: str  # the counted table's primary key (an UPDATE's old and new rows are matched on it)
    keys: tuple  # (column, SQL type) of the counted rows that make a count's key
    last: str = ""  # a column of the counted table whose value when a row enters a key is kept in ``last_in``
    by: tuple = ()  # key columns of a second index (a count's n changes in place: this index is not written then)
    pausable: bool = False  # SQLite: bulk writers may pause the insert and update triggers (bulk_jobs)


JOBS = Counter("job", "job_count", "panda_id", (("task_id", "BIGINT"), ("computing_site", "VARCHAR(128)"),
                                                ("status", "VARCHAR(32)")), last="state_changed_time",
               by=("computing_site", "status"), pausable=True)
INPUTS = Counter("task_input", "input_count", "row_id", (("task_id", "BIGINT"), ("status", "VARCHAR(32)")))
COUNTERS = (JOBS, INPUTS)


def _is_postgres(db):
    return isinstance(db, peewee.PostgresqlDatabase)


def _key(counter, alias, named=False):
    """The key expressions of a counted row (``alias`` is NEW, OLD or a table alias); a NULL task is task 0."""
    return [(f"COALESCE({alias}.{column}, 0)" if column == "task_id" else f"{alias}.{column}")
            + (f" AS {column}" if named else "") for column, _ in counter.keys]


def _columns(counter):
    return [column for column, _ in counter.keys]


# ---- the tables and triggers ----------------------------------------------------------------------------------

def _table_sql(counter, name, postgres, primary_key=True):
    columns = [f"{column} {kind} NOT NULL" for column, kind in counter.keys] + ["n BIGINT NOT NULL"]
    if counter.last:
        columns.append("last_in TIMESTAMP NULL")
    if primary_key:
        columns.append(f"PRIMARY KEY ({', '.join(_columns(counter))})")
    rowid = "" if postgres or not primary_key else " WITHOUT ROWID"
    return f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(columns)}){rowid}"


def _sqlite_triggers(counter):
    """Row triggers that change the count rows in place (SQLite runs one writer at a time)."""
    table, name, columns = counter.table, counter.name, _columns(counter)
    conflict = f"ON CONFLICT ({', '.join(columns)}) DO UPDATE SET n = n + 1"
    if counter.last:
        # the newer time wins; a NULL never replaces a time
        conflict += (", last_in = CASE WHEN last_in IS NULL OR excluded.last_in > last_in THEN excluded.last_in "
                     "ELSE last_in END")

    def add(alias):
        names = columns + ["n"] + (["last_in"] if counter.last else [])
        values = _key(counter, alias) + ["1"] + ([f"{alias}.{counter.last}"] if counter.last else [])
        return f"INSERT INTO {name} ({', '.join(names)}) VALUES ({', '.join(values)}) {conflict};"

    def remove(alias):
        match = " AND ".join(f"{column} = {expr}" for column, expr in zip(columns, _key(counter, alias)))
        return f"UPDATE {name} SET n = n - 1 WHERE {match};"

    changed = " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in columns)
    # a paused counter's statement is counted by its writer (bulk_jobs); an empty table reads as NULL: not paused
    counting = f"(SELECT 1 FROM {name}_paused) IS NULL" if counter.pausable else ""
    return [
        f"CREATE TRIGGER {name}_insert AFTER INSERT ON {table}{' WHEN ' + counting if counting else ''} "
        f"BEGIN {add('NEW')} END",
        f"CREATE TRIGGER {name}_update AFTER UPDATE OF {', '.join(columns)} ON {table} WHEN ({changed})"
        f"{' AND ' + counting if counting else ''} BEGIN {remove('OLD')} {add('NEW')} END",
        f"CREATE TRIGGER {name}_delete AFTER DELETE ON {table} BEGIN {remove('OLD')} END",
    ]


def _postgres_triggers(counter):
    """Statement triggers that append each statement's net change per key to the delta table (no shared rows)."""
    table, name, columns = counter.table, counter.name, _columns(counter)
    names = columns + ["n"] + (["last_in"] if counter.last else [])
    groups = ", ".join(str(i + 1) for i in range(len(columns)))
    last_none = ", NULL::timestamp" if counter.last else ""

    def appended(select):
        return f"INSERT INTO {name}_delta ({', '.join(names)}) {select};"

    inserted = appended(f"SELECT {', '.join(_key(counter, 'r'))}, COUNT(*)"
                        + (f", MAX(r.{counter.last})" if counter.last else "")
                        + f" FROM new_rows r GROUP BY {groups}")
    deleted = appended(f"SELECT {', '.join(_key(counter, 'r'))}, -COUNT(*){last_none} FROM old_rows r "
                       f"GROUP BY {groups}")
    # An UPDATE counts only the rows whose key changed: old key -1, new key +1 (a heartbeat adds nothing).
    moved = " OR ".join(f"{o} IS DISTINCT FROM {n}" for o, n in zip(_key(counter, "o"), _key(counter, "w")))
    pairs = f"FROM old_rows o JOIN new_rows w USING ({counter.row_id}) WHERE {moved}"
    sides = (f"SELECT {', '.join(_key(counter, 'o', named=True))}, -1 AS n" + (", NULL::timestamp AS last_in" if counter.last
                                                                    else "")
             + f" {pairs} UNION ALL SELECT {', '.join(_key(counter, 'w'))}, 1"
             + (f", w.{counter.last}" if counter.last else "") + f" {pairs}")
    updated = appended(f"SELECT {', '.join(columns)}, SUM(n)" + (", MAX(last_in)" if counter.last else "")
                       + f" FROM ({sides}) c GROUP BY {groups}")
    statements = []
    for event, body, tables in (("insert", inserted, "NEW TABLE AS new_rows"),
                                ("update", updated, "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                                ("delete", deleted, "OLD TABLE AS old_rows")):
        statements += [
            f"CREATE OR REPLACE FUNCTION {name}_{event}() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {body} RETURN NULL; END $$",
            f"DROP TRIGGER IF EXISTS {name}_{event} ON {table}",
            f"CREATE TRIGGER {name}_{event} AFTER {event.upper()} ON {table} REFERENCING {tables} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}_{event}()",
        ]
    # TRUNCATE fires no row or statement DELETE trigger: it empties the counts with the table.
    statements += [
        f"CREATE OR REPLACE FUNCTION {name}_truncate() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN DELETE FROM {name}; DELETE FROM {name}_delta; RETURN NULL; END $$",
        f"DROP TRIGGER IF EXISTS {name}_truncate ON {table}",
        f"CREATE TRIGGER {name}_truncate AFTER TRUNCATE ON {table} FOR EACH STATEMENT "
        f"EXECUTE FUNCTION {name}_truncate()",
    ]
    return statements


def install(db):
    """Create the count tables and their triggers, and count the rows already there. Run inside the schema's
    transaction (new database or upgrade), so no write slips between the count and the first trigger."""
    postgres = _is_postgres(db)
    for counter in COUNTERS:
        db.execute_sql(_table_sql(counter, counter.name, postgres))
        if counter.by:
            db.execute_sql(f"CREATE INDEX IF NOT EXISTS {counter.name}_{'_'.join(counter.by)} ON {counter.name} "
                           f"({', '.join(counter.by)})")
        if postgres:
            db.execute_sql(_table_sql(counter, counter.name + "_delta", postgres, primary_key=False))
            for statement in _postgres_triggers(counter):
                db.execute_sql(statement)
        else:
            if counter.pausable:
                db.execute_sql(f"CREATE TABLE IF NOT EXISTS {counter.name}_paused (paused INTEGER NOT NULL)")
                db.execute_sql(f"DELETE FROM {counter.name}_paused")
            for event in ("insert", "update", "delete"):
                db.execute_sql(f"DROP TRIGGER IF EXISTS {counter.name}_{event}")
            for statement in _sqlite_triggers(counter):
                db.execute_sql(statement)
    recount(db)


def recount(db):
    """Count every live row again into the count tables (what :func:`install` starts from; tests compare)."""
    for counter in COUNTERS:
        db.execute_sql(f"DELETE FROM {counter.name}")
        if _is_postgres(db):
            db.execute_sql(f"DELETE FROM {counter.name}_delta")
        columns = _columns(counter)
        groups = ", ".join(str(i + 1) for i in range(len(columns)))
        names = columns + ["n"] + (["last_in"] if counter.last else [])
        last = f", MAX(r.{counter.last})" if counter.last else ""
        db.execute_sql(f"INSERT INTO {counter.name} ({', '.join(names)}) SELECT {', '.join(_key(counter, 'r'))}, "
                       f"COUNT(*){last} FROM {counter.table} r GROUP BY {groups}")
    # A job's start_time is when it entered 'sent': the last dispatch per (task, queue), whatever state it is in now.
    db.execute_sql(
        "INSERT INTO job_count (task_id, computing_site, status, n, last_in) SELECT COALESCE(r.task_id, 0), "
        "r.computing_site, 'sent', 0, MAX(r.start_time) FROM job r WHERE r.start_time IS NOT NULL GROUP BY 1, 2 "
        "ON CONFLICT (task_id, computing_site, status) DO UPDATE SET last_in = CASE WHEN job_count.last_in IS NULL "
        "OR excluded.last_in > job_count.last_in THEN excluded.last_in ELSE job_count.last_in END")


# ---- bulk writers (SQLite) ----------------------------------------------------------------------------------------

class JobMoves:
    """What one bulk writer's statements did to the job counts: {(task, queue, state): [n, last_in]}."""

    __slots__ = ("sums",)

    def __init__(self):
        self.sums = {}

    def add(self, task_id, queue, source, target, n, when):
        """``n`` jobs of (task, queue) moved from ``source`` (None: inserted) to ``target`` at ``when`` (the
        database value of their state_changed_time)."""
        if n:
            task_id = task_id or 0
            if source is not None:
                self.sums.setdefault((task_id, queue, source), [0, None])[0] -= n
            entry = self.sums.setdefault((task_id, queue, target), [0, None])
            entry[0] += n
            entry[1] = when if entry[1] is None or when > entry[1] else entry[1]

    def add_rows(self, rows, source, target, when):
        """Jobs by the (task_id, computing_site) pairs of the rows a statement changed."""
        for (task_id, queue), n in collections.Counter(rows).items():
            self.add(task_id, queue, source, target, n, when)


# Pausing costs three statements (pause, upsert, resume); the triggers cost two per job: fewer jobs are left to them.
PAUSE_FROM = 3


@contextlib.contextmanager
def bulk_jobs(n_rows=None):
    """Inside the caller's write transaction: yield a :class:`JobMoves` to which the caller adds what each of its
    statements inserted or moved, and write the sums in one statement at the end (whatever happened: the
    statements that ran before an error changed their rows too). On SQLite the job triggers are paused
    meanwhile; on PostgreSQL (its statement triggers count), or for fewer than PAUSE_FROM rows (``n_rows``: at
    most that many; None: unknown), nothing is paused and what the caller adds is dropped: the triggers count."""
    db = database.obj
    # outside a transaction the pause would be committed at once, for every writer to see: the triggers count then
    if _is_postgres(db) or n_rows is not None and n_rows < PAUSE_FROM or not db.in_transaction():
        yield JobMoves()
        return
    name = JOBS.name
    db.execute_sql(f"INSERT INTO {name}_paused (paused) VALUES (1)")
    moves = JobMoves()
    try:
        yield moves
    finally:
        db.execute_sql(f"DELETE FROM {name}_paused")
        _add_jobs(db, moves.sums)


def _add_jobs(db, sums):
    if not sums:
        return
    rows = [(task_id, queue, status, n, last) for (task_id, queue, status), (n, last) in sorted(sums.items())
            if n or last is not None]
    for start in range(0, len(rows), 500):
        chunk = rows[start:start + 500]
        db.execute_sql(_add_jobs_sql(len(chunk)), [value for row in chunk for value in row])


@functools.lru_cache(maxsize=64)
def _add_jobs_sql(n_rows):
    # the same upsert as the row trigger's, for n jobs at once: the newer time wins, a NULL never replaces one
    return (f"INSERT INTO {JOBS.name} (task_id, computing_site, status, n, last_in) VALUES "
            + ", ".join(["(?, ?, ?, ?, ?)"] * n_rows)
            + " ON CONFLICT (task_id, computing_site, status) DO UPDATE SET n = n + excluded.n, last_in = CASE "
            "WHEN last_in IS NULL OR excluded.last_in > last_in THEN excluded.last_in ELSE last_in END")


# ---- reading ----------------------------------------------------------------------------------------------------

def _rows(counter, where, params, with_zero=False):
    """(key..., n, last_in or None) of the counts matching ``where`` (SQL over the count table's columns)."""
    db = database.obj
    columns = ", ".join(_columns(counter))
    last = "last_in" if counter.last else "NULL"
    condition = f" WHERE {where}" if where else ""
    if _is_postgres(db):
        sql = (f"SELECT {columns}, SUM(n), MAX(last_in) FROM (SELECT {columns}, n, {last} AS last_in FROM "
               f"{counter.name}{condition} UNION ALL SELECT {columns}, n, {last} FROM {counter.name}_delta"
               f"{condition}) c GROUP BY {columns}" + ("" if with_zero else " HAVING SUM(n) <> 0"))
        params = list(params) * 2
    else:
        conditions = ([where] if where else []) + ([] if with_zero else ["n <> 0"])
        sql = f"SELECT {columns}, n, {last} FROM {counter.name}" + (
            f" WHERE {' AND '.join(conditions)}" if conditions else "")
    return database.execute_sql(sql, list(params)).fetchall()


def _marks(values):
    return ", ".join([database.param] * len(values))


def jobs_by_queue(queue=None, task_id=None, statuses=None):
    """{queue: {state: n}} of live jobs, optionally of one queue, one task (0: jobs of no task), some states."""
    where, params = [], []
    if queue is not None:
        where.append(f"computing_site = {database.param}")
        params.append(queue)
    if task_id is not None:
        where.append(f"task_id = {database.param}")
        params.append(task_id)
    if statuses:
        where.append(f"status IN ({_marks(statuses)})")
        params += list(statuses)
    out = {}
    for _, site, status, n, _ in _rows(JOBS, " AND ".join(where), params):
        by_state = out.setdefault(site, {})
        by_state[status] = by_state.get(status, 0) + int(n)
    return out


def jobs_by_task(task_ids):
    """{task_id: {state: n}} of the tasks' live jobs (every queue, every attempt); a task without jobs: {}."""
    out = {task_id: {} for task_id in task_ids}
    if task_ids:
        for task_id, _, status, n, _ in _rows(JOBS, f"task_id IN ({_marks(task_ids)})", list(task_ids)):
            out[task_id][status] = out[task_id].get(status, 0) + int(n)
    return out


def inputs_by_task(task_ids):
    """{task_id: {input state: n}} of the tasks' inputs; a task without inputs: {}."""
    out = {task_id: {} for task_id in task_ids}
    if task_ids:
        for task_id, status, n, _ in _rows(INPUTS, f"task_id IN ({_marks(task_ids)})", list(task_ids)):
            out[task_id][status] = int(n)
    return out


def last_entered(queue, status):
    """When a job last entered ``status`` on ``queue`` (any task still live), or None."""
    rows = _rows(JOBS, f"computing_site = {database.param} AND status = {database.param}", [queue, status],
                 with_zero=True)
    times = [_time(row[-1]) for row in rows if row[-1] is not None]
    return max(times) if times else None


def _time(value):
    if isinstance(value, datetime.datetime):
        return value
    return datetime.datetime.fromisoformat(str(value))


# ---- upkeep -------------------------------------------------------------------------------------------------------

def fold():
    """PostgreSQL: move the deltas into the counts, each delta exactly once; returns the delta rows folded.

    One statement per table deletes the deltas it sees and adds what it deleted (DELETE ... RETURNING), so a
    delta committed meanwhile waits for the next fold and none is counted twice. A fold already running elsewhere
    makes this one return 0 at once (the advisory lock); folding inside a caller's transaction is left to the duty.
    """
    db = database.obj
    if not _is_postgres(db) or db.in_transaction():
        return 0
    moved = 0
    with db.atomic():
        if not db.execute_sql("SELECT pg_try_advisory_xact_lock(%s)", (FOLD_LOCK_KEY,)).fetchone()[0]:
            return 0
        for counter in COUNTERS:
            columns = ", ".join(_columns(counter))
            last = ", MAX(last_in)" if counter.last else ""
            names = columns + ", n" + (", last_in" if counter.last else "")
            newer = (", last_in = GREATEST({0}.last_in, EXCLUDED.last_in)".format(counter.name)
                     if counter.last else "")
            cursor = db.execute_sql(
                f"WITH moved AS (DELETE FROM {counter.name}_delta RETURNING *), summed AS (SELECT {columns}, "
                f"SUM(n) AS n{last} FROM moved GROUP BY {columns}), folded AS (INSERT INTO {counter.name} ({names}) "
                f"SELECT * FROM summed ORDER BY {columns} ON CONFLICT ({columns}) DO UPDATE SET "
                f"n = {counter.name}.n + EXCLUDED.n{newer}) SELECT COUNT(*) FROM moved")
            moved += cursor.fetchone()[0]
    return moved


def tidy():
    """Drop the count rows of 0 whose task has left the live tables (archived); returns how many went."""
    db = database.obj
    gone = 0
    for counter in COUNTERS:
        cursor = db.execute_sql(f"DELETE FROM {counter.name} WHERE n = 0 AND task_id <> 0 AND NOT EXISTS "
                                f"(SELECT 1 FROM task WHERE task.jedi_task_id = {counter.name}.task_id)")
        gone += cursor.rowcount
    return gone
