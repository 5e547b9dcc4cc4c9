"""Many rows in few statements: fresh PandaIDs for a batch, multi-row inserts and updates, dict rows of a model.

Submission (job/submit, the task generator) writes thousands of jobs at once; one INSERT per row through peewee's
model layer cost more than the rest of the request.
"""
import datetime
import functools
import operator

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


def insert_model_rows(model, rows):
    """Insert dicts keyed by ``model``'s field names in one multi-row statement: a field a row does not give gets
    the field's default (None when it has none), every value goes through the field's ``db_value``.

    Column by column: a column whose values are all of the type its field stores as it is (ints for an integer
    field, strs for a text field, ...) is passed unchanged, the others through ``db_value``; a db_value call per
    value cost more than the INSERT for the ~40 columns of a job."""
    if not rows:
        return
    fields = model._meta.fields
    given = set().union(*rows)
    unknown = sorted(given - set(fields))
    if unknown:
        raise KeyError(f"{model.__name__}: no field {', '.join(unknown)}")
    # peewee's defaults live in Python, not in the table: every field with one is written
    names = sorted(given | {name for name, field in fields.items() if field.default is not None})
    defaults = {}
    for name in names:
        default = fields[name].default
        defaults[name] = default() if callable(default) else default
    getter = operator.itemgetter(*names) if len(names) > 1 else (lambda row: (row[names[0]],))
    columns = list(zip(*[getter({**defaults, **row}) for row in rows]))
    for index, name in enumerate(names):
        kept = _stored_as_is(fields[name])
        if kept is None or not set(map(type, columns[index])) <= {kept, type(None)}:
            columns[index] = list(map(fields[name].db_value, columns[index]))
        if kept is datetime.datetime and not is_postgres():  # sqlite3 adapts each datetime in Python
            formatted = {value: time_param(value) for value in set(columns[index]) if value is not None}
            columns[index] = list(map(formatted.get, columns[index]))
    insert_rows(model._meta.table_name, [fields[name].column_name for name in names], list(zip(*columns)))


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
