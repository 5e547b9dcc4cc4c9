"""Many rows in few statements: fresh PandaIDs for a batch, multi-row inserts and updates, dict rows of a model.

Submission (job/submit, the task generator) writes thousands of jobs at once; one INSERT per row through peewee's
model layer cost more than the rest of the request.
"""
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


def insert_rows(table, columns, rows):
    """Insert many rows at once: sqlite3 ``executemany``; psycopg2 ``execute_values`` (one round trip)."""
    if not rows:
        return
    quoted = ", ".join('"%s"' % c for c in columns)
    if is_postgres():
        from psycopg2.extras import execute_values

        execute_values(database.cursor(), f'INSERT INTO "{table}" ({quoted}) VALUES %s', rows, page_size=1000)
        return
    marks = ", ".join([database.param] * len(columns))
    database.cursor().executemany(f'INSERT INTO "{table}" ({quoted}) VALUES ({marks})', rows)


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


def insert_model_rows(model, rows):
    """Insert dicts keyed by ``model``'s field names in one multi-row statement: a field a row does not give gets
    the field's default (None when it has none), every value goes through the field's ``db_value``."""
    if not rows:
        return
    fields = model._meta.fields
    given = {name for row in rows for name in row}
    unknown = sorted(given - set(fields))
    if unknown:
        raise KeyError(f"{model.__name__}: no field {', '.join(unknown)}")
    # peewee's defaults live in Python, not in the table: every field with one is written
    names = sorted(given | {name for name, field in fields.items() if field.default is not None})
    defaults = {}
    for name in names:
        default = fields[name].default
        defaults[name] = default() if callable(default) else default
    converters = [fields[name].db_value for name in names]
    values = [tuple(convert(row[name] if name in row else defaults[name]) for name, convert in zip(names, converters))
              for row in rows]
    insert_rows(model._meta.table_name, [fields[name].column_name for name in names], values)
