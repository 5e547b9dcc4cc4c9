"""The statements of the status writers in :mod:`minipanda.core.states`, as text: each built once per shape (the
placeholder, the columns, the number of ids) and cached, since peewee's rendering of them cost more than running
them on every claim and pilot update. Nothing here runs a statement; states.py alone writes a status."""
import functools

from minipanda.core import models


@functools.lru_cache(maxsize=256)
def update_listed_sql(param, table, key, columns, n_ids):
    # ``status || ''`` keeps the status test off the (status, ...) index: with more than one id SQLite otherwise
    # walked every row in that status instead of looking the ids up by primary key.
    assignments = ", ".join(f'"{column}" = {param}' for column in columns)
    return (f'UPDATE "{table}" SET {assignments} WHERE "{key}" IN ({", ".join([param] * n_ids)}) '
            f'AND ("status" || \'\') = {param} RETURNING "{key}"')


@functools.lru_cache(maxsize=256)
def picked_rows_sql(param, pick, listed):
    table = models.Job._meta.table_name
    return (f"SELECT json_group_array(json_array({', '.join(chr(34) + c + chr(34) for c in listed)})) FROM "
            f"\"{table}\" WHERE \"panda_id\" IN ({pick}) AND (\"status\" || '') = {param}")


@functools.lru_cache(maxsize=64)
def picked_ids_update_sql(param, columns):
    assignments = ", ".join(f'"{column}" = {param}' for column in columns)
    return (f'UPDATE "{models.Job._meta.table_name}" SET {assignments} WHERE "panda_id" IN '
            f"(SELECT value FROM json_each({param})) AND (\"status\" || '') = {param}")


@functools.lru_cache(maxsize=256)
def picked_update_sql(param, pick, columns, returning, postgres=True):
    """The claim's UPDATE ... RETURNING: PostgreSQL's, and SQLite's only when its picked jobs are too large to be
    read as one JSON row (see states._change_picked_sqlite)."""
    assignments = ", ".join(f'"{column}" = {param}' for column in columns)
    # The re-check of the status must not drive the UPDATE: SQLite and PostgreSQL both chose to walk the
    # (status, ...) index, i.e. every activated job of every queue, per claim, filtering it against the picked ids
    # (claims got slower the fuller the queues). As an expression, ``status || ''`` cannot use an index, so the
    # picked ids drive the UPDATE through the primary key and the status is checked on those rows only.
    # PostgreSQL would plan "IN (pick)" as a semi-join and re-run a locking pick per row, claiming more than
    # LIMIT rows; "= ANY(ARRAY(pick))" evaluates the pick exactly once.
    chosen = f"= ANY(ARRAY({pick}))" if postgres else f"IN ({pick})"
    listed = ", ".join('"%s"' % column for column in returning)
    return (f'UPDATE "{models.Job._meta.table_name}" SET {assignments} WHERE "panda_id" {chosen} '
            f"AND (\"status\" || '') = {param} RETURNING {listed}")


@functools.lru_cache(maxsize=512)
def log_sql(param, n_rows):
    log = models.StatusLog
    columns = ", ".join('"%s"' % f.column_name for f in (log.panda_id, log.old_status, log.new_status, log.time,
                                                           log.reason, log.kind))
    values = ", ".join([f"({param})"] * n_rows)
    shared = ", ".join([param] * 5)
    return (f'WITH "v"("_k") AS (VALUES {values}) INSERT INTO "{log._meta.table_name}" ({columns}) '
            f'SELECT "_k", {shared} FROM "v"')
