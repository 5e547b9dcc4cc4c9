"""Many rows in few statements: fresh PandaIDs for a batch, multi-row inserts and updates, dict rows of a model.

Submission (job/submit, the task generator) writes thousands of jobs at once; one INSERT per row through peewee's
model layer cost more than the rest of the request.
"""
import datetime
import functools
import itertools

import peewee
from minipanda.core.db import database, is_postgres


def new_panda_ids(n):
    """``n`` fresh PandaIDs: from PostgreSQL's sequence, or after the highest id on SQLite (whose writers are
    serialised, so no one else can take them before the caller's transaction ends)."""
    if is_postgres():
        cursor = database.execute_sql("SELECT nextval(pg_get_serial_sequence('job', 'panda_id')) FROM "
                                      "generate_series(1, %s)", (n,))
        return [row[0] for row in cursor.fetchall()]
    highest = database.execute_sql('SELECT MAX("panda_id") FROM "job"').fetchone()[0] or 0
    return list(range(highest + 1, highest + 1 + n))


def insert_rows(table, columns, rows, skip_existing=False):
    """Insert many rows at once: sqlite3 ``executemany``; psycopg2 ``execute_values`` (one round trip). With
    ``skip_existing`` a row that would break a unique index is left out (``ON CONFLICT DO NOTHING``)."""
    if not rows:
        return
    quoted = ", ".join('"%s"' % c for c in columns)
    tail = " ON CONFLICT DO NOTHING" if skip_existing else ""
    if is_postgres():
        from psycopg2.extras import execute_values

        execute_values(database.cursor(), f'INSERT INTO "{table}" ({quoted}) VALUES %s{tail}', rows, page_size=1000)
        return
    marks = ", ".join([database.param] * len(columns))
    database.cursor().executemany(f'INSERT INTO "{table}" ({quoted}) VALUES ({marks}){tail}', rows)


def update_rows(table, columns, key, rows):
    """``UPDATE table SET columns... WHERE key = ...`` for many rows, each ``(*values, key value)``: sqlite3
    ``executemany``; on PostgreSQL one ``UPDATE ... FROM (VALUES ...)`` per 1000 rows."""
    if not rows:
        return
    if is_postgres():
        from psycopg2.extras import execute_values

        names = ", ".join(f'"{c}"' for c in columns + (key,))
        assignments = ", ".join(f'"{c}" = v."{c}"' for c in columns)
        execute_values(database.cursor(), f'UPDATE "{table}" AS t SET {assignments} FROM (VALUES %s) AS v({names}) '
                                          f'WHERE t."{key}" = v."{key}"', rows, page_size=1000)
        return
    assignments = ", ".join(f'"{c}" = {database.param}' for c in columns)
    database.cursor().executemany(f'UPDATE "{table}" SET {assignments} WHERE "{key}" = {database.param}', rows)


def update_each(table, key, constant, columns, rows, condition, condition_params=(), returning=()):
    """UPDATE many rows of ``table``, each with its own values, in one statement per 500 rows; return the keys of
    the rows changed (RETURNING), in no particular order; with ``returning`` (more column names), a tuple
    (key, *those columns) per row changed; with ``returning`` None (SQLite only), no RETURNING: the number of rows
    changed, for a caller that knows which rows those are (every row of a RETURNING is a step of the statement
    that lets go of the GIL and must win it back, with the writer's lock in hand).

    ``rows`` are ``(key value, *values of columns)``; ``constant`` {column: database value} is set on every row;
    ``condition`` (SQL on the table's own columns, with placeholders for ``condition_params``) must hold too, so a
    row that another writer changed first is left alone and missing from the answer. A key must not repeat.
    """
    changed, count = [], 0
    constant_columns, constant_values = tuple(constant), list(constant.values())
    rows = sorted(rows, key=lambda row: row[0])  # concurrent writers on PostgreSQL lock rows in the same order
    for start in range(0, len(rows), 500):
        chunk = rows[start:start + 500]
        sql = _update_each_sql(database.param, table, key, constant_columns, tuple(columns), len(chunk), condition,
                               None if returning is None else tuple(returning))
        values = [value for row in chunk for value in row]
        if returning is None:  # the statement's placeholders in their order: SET, then FROM (the rows), then WHERE
            count += database.execute_sql(sql, constant_values + values + list(condition_params)).rowcount
            continue
        found = database.execute_sql(sql, values + constant_values + list(condition_params)).fetchall()
        changed.extend(found if returning else (row[0] for row in found))
    return count if returning is None else changed


@functools.lru_cache(maxsize=512)
def _update_each_sql(param, table, key, constant_columns, columns, n_rows, condition, returning=()):
    # The rows' values as a common table expression joined to the table by key (UPDATE ... FROM: SQLite 3.33+ and
    # PostgreSQL alike); its columns are named _k, _0, _1... so that they never shadow the table's own.
    row = "(%s)" % ", ".join([param] * (1 + len(columns)))
    names = ", ".join(["_k"] + [f"_{i}" for i in range(len(columns))])
    assignments = [f'"{column}" = {param}' for column in constant_columns]
    assignments += [f'"{column}" = "v"."_{i}"' for i, column in enumerate(columns)]
    if returning is None:
        # No RETURNING: the caller reads the row count, which Python's sqlite3 gives only for a statement that
        # starts with UPDATE (a WITH ... UPDATE reads -1). The VALUES are a sub-select of the FROM instead, whose
        # columns SQLite names column1, column2...
        assignments[len(constant_columns):] = [f'"{column}" = "v"."column{i + 2}"'
                                               for i, column in enumerate(columns)]
        return (f'UPDATE "{table}" SET {", ".join(assignments)} FROM (VALUES {", ".join([row] * n_rows)}) AS "v" '
                f'WHERE "{table}"."{key}" = "v"."column1" AND {condition}')
    return (f'WITH "v"({names}) AS (VALUES {", ".join([row] * n_rows)}) '
            f'UPDATE "{table}" SET {", ".join(assignments)} FROM "v" WHERE "{table}"."{key}" = "v"."_k" '
            f'AND {condition} RETURNING ' + ", ".join(f'"{table}"."{name}"' for name in (key,) + returning))


def time_param(value):
    """A datetime as the statement parameter the database stores: sqlite3's own adapter, ``isoformat(" ")``,
    done once for a value many rows share instead of once per row; PostgreSQL's driver adapts it in C."""
    if value is None or is_postgres():
        return value
    return value.isoformat(" ")


def insert_model_columns(model, n, columns):
    """Insert ``n`` rows of ``model`` given column by column: {field name: the list of its ``n`` values}. A field
    with a default that is not given gets it in every row (peewee's defaults live in Python, not in the table).

    Every value is the field's ``db_value``: a column whose values are all of the type its field stores as it is
    (ints for an integer field, strs for a text field, ...) is passed unchanged, the others through ``db_value``
    (a db_value call per value cost more than the INSERT for the ~40 columns of a job). A column whose values are
    all the same is bound once per statement (:func:`insert_columns`)."""
    if not n:
        return
    fields = model._meta.fields
    unknown = sorted(set(columns) - set(fields))
    if unknown:
        raise KeyError(f"{model.__name__}: no field {', '.join(unknown)}")
    varying, shared = {}, {}
    for name, field in fields.items():
        if name in columns:
            values = _db_values(field, columns[name])
            if len(values) != n:
                raise ValueError(f"{model.__name__}.{name}: {len(values)} values for {n} rows")
        elif field.default is not None:
            default = field.default
            values = _db_values(field, [default() if callable(default) else default])
        else:
            continue
        if values.count(values[0]) == len(values):
            shared[field.column_name] = values[0]
        else:
            varying[field.column_name] = values
    insert_columns(model._meta.table_name, n, varying, shared)


def _db_values(field, values):
    kept = _stored_as_is(field)
    if kept is None or not set(map(type, values)) <= {kept, type(None)}:
        values = list(map(field.db_value, values))
    if kept is datetime.datetime and not is_postgres():  # sqlite3 adapts each datetime in Python
        formatted = {value: time_param(value) for value in set(values) if value is not None}
        values = list(map(formatted.get, values))
    return values


# Bound values per statement at most: SQLite's own limit is 32,766 unless a build lowers or raises it.
MAX_PARAMS = 30000


def insert_columns(table, n, varying, shared):
    """Insert ``n`` rows into ``table``: ``varying`` {column: its n values} and ``shared`` {column: the one value
    of every row}. On SQLite the shared values are bound once per statement, the rows being a VALUES list of the
    varying ones (``WITH v AS (VALUES ...) INSERT ... SELECT``, in their order): bound once per row, a job's ~25
    values cost more than SQLite's own work for it. PostgreSQL gets whole rows (:func:`insert_rows`)."""
    if not n:
        return
    varying, shared = dict(varying), dict(shared)
    if not varying:  # every column the same in every row (a single row)
        name = next(iter(shared))
        varying[name] = [shared.pop(name)] * n
    if is_postgres():
        rows = list(zip(*varying.values(), *(itertools.repeat(value, n) for value in shared.values())))
        insert_rows(table, list(varying) + list(shared), rows)
        return
    width = len(varying)
    flat = list(itertools.chain.from_iterable(zip(*varying.values())))
    tail = list(shared.values())
    per = max(1, min(1000, (MAX_PARAMS - len(tail)) // width))
    for start in range(0, n, per):
        rows = min(per, n - start)
        database.execute_sql(_insert_columns_sql(database.param, table, tuple(varying), tuple(shared), rows),
                             flat[start * width:(start + rows) * width] + tail)


@functools.lru_cache(maxsize=256)
def _insert_columns_sql(param, table, varying, shared, n_rows):
    # the VALUES list's columns are named _0, _1, ... so that they never shadow the table's own
    names = [f'"_{i}"' for i in range(len(varying))]
    row = "(%s)" % ", ".join([param] * len(varying))
    columns = ", ".join('"%s"' % column for column in varying + shared)
    return (f'WITH "v"({", ".join(names)}) AS (VALUES {", ".join([row] * n_rows)}) '
            f'INSERT INTO "{table}" ({columns}) SELECT {", ".join(names + [param] * len(shared))} FROM "v"')


def _stored_as_is(field):
    """The Python type whose values ``field.db_value`` returns unchanged; None for other kinds of field."""
    if isinstance(field, peewee.ForeignKeyField):
        field = field.rel_field
    if type(field) in (peewee.CharField, peewee.TextField):  # not FixedCharField, which strips
        return str
    for kind, python_type in ((peewee.BooleanField, bool), (peewee.IntegerField, int),
                              (peewee.DateTimeField, datetime.datetime)):
        if isinstance(field, kind):
            return python_type
    return None
