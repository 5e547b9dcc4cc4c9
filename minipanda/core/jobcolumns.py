"""Submitted job specs checked column by column: what job/submit does with thousands of specs at once.

:func:`jobspec.parse_submitted` states the rules for one spec and stays their one statement. A submission is
split into groups of specs with the same keys in the same order (a client's specs nearly always are), and each key
is checked over its whole group at once: the types of its values, their range or length, their pattern, each a
loop in C (``map``, ``min``, ``max``, ``set``) instead of Python code per value (5,000 specs took a quarter of a
submission's CPU). Such a check only vouches for values that parse_submitted keeps exactly as sent: an int within
its column's range, a non-empty text within its column's length, a plain attribute, a file name its pattern takes.
Anything else (a null, a number as text, panda-client's datetimes, a negative count, a bad name, a missing
field) sends the group through parse_submitted spec by spec, which gives its values or the errors
naming the job and the field, as before. panda-client's positional lists are made dicts first
(jobspec.positional_to_dict) and grouped with the others. tests/test_jobcolumns.py holds both paths to the same
answers.
"""
import itertools
import operator

from minipanda.core import jobspec
from minipanda.errors import SpecError

# The columns a job may not give a negative value (parse_submitted's list, by column)
_NOT_NEGATIVE = frozenset(jobspec.COLUMNS[name][0] for name in jobspec.NOT_NEGATIVE)
_ATTRIBUTE_TYPES = frozenset((str, int, float, bool))  # parse_submitted's "plain value", as JSON gives them
FILE_COLUMNS = ("type", "lfn", "guid", "scope", "dataset", "destination_dblock", "fsize", "checksum")
# JobFile column -> the file spec's key, for the optional texts taken as they are
_FILE_TEXTS = (("dataset", "dataset"), ("destination_dblock", "destinationDBlock"), ("checksum", "checksum"))


class Batch:
    """Validated jobs, column by column: ``columns`` {Job column: [each job's value, None where it gave none]},
    ``attributes`` [each job's attributes dict, or None], ``files`` {JobFile column: [each file's value]} with
    ``file_jobs`` [the index of each file's job]; a job's files are next to each other, in its spec's order."""

    def __init__(self, n):
        self.n, self.columns, self.attributes = n, {}, [None] * n
        self.files, self.file_jobs = {name: [] for name in FILE_COLUMNS}, []

    def column(self, name):
        """The values of a Job column, None for each job that gave none."""
        return self.columns.get(name) or [None] * self.n

    def _set(self, column, indices, values):
        if len(indices) == self.n:  # the whole batch: the values are the column
            self.columns[column] = values
            return
        whole = self.columns.setdefault(column, [None] * self.n)
        for index, value in zip(indices, values):
            whole[index] = value

    def _add_files(self, jobs, columns):
        self.file_jobs += jobs
        for name in FILE_COLUMNS:
            self.files[name] += columns[name]

    def _add_one(self, index, columns, attributes, files):
        for column, value in columns.items():
            self.columns.setdefault(column, [None] * self.n)[index] = value
        self.attributes[index] = attributes or None
        self._add_files([index] * len(files), {name: [f[name] for f in files] for name in FILE_COLUMNS})


def parse(specs):
    """(:class:`Batch`, errors) of the submitted ``specs`` (dicts keyed by JobSpec names, or panda-client's
    positional lists); the errors name the job and field, in the order of the specs, as parse_submitted gives them."""
    batch, one_by_one, groups, unreadable = Batch(len(specs)), [], {}, {}
    if any(isinstance(spec, list) for spec in specs):  # panda-client's positional lists, grouped as dicts too
        specs = list(specs)
        for index, spec in enumerate(specs):
            if isinstance(spec, list):
                try:
                    specs[index] = jobspec.positional_to_dict(spec, f"jobs[{index}]")
                except SpecError as exc:
                    unreadable[index] = exc.errors
    for index, spec in enumerate(specs):
        if type(spec) is dict and index not in unreadable:
            groups.setdefault(tuple(spec), []).append(index)
        else:
            one_by_one.append(index)
    for keys, indices in groups.items():
        group = specs if len(indices) == len(specs) else [specs[index] for index in indices]
        if not _take_group(batch, keys, indices, group):
            one_by_one += indices
    errors = []
    for index in sorted(one_by_one):
        if index in unreadable:
            errors.extend(unreadable[index])
            continue
        try:
            batch._add_one(index, *jobspec.parse_submitted(specs[index], f"jobs[{index}]"))
        except SpecError as exc:
            errors.extend(exc.errors)
    return batch, errors


def _has_null_text(values):
    return "" in values or "NULL" in values


def _has_nul(texts):
    return "\x00" in "".join(texts)  # one scan in C (parse_submitted refuses a NUL by name)


def _take_group(batch, keys, indices, group):
    """Check the specs of ``group`` (all with ``keys``) column by column and add them to ``batch``; False (nothing
    added) when any value is one that only parse_submitted may judge."""
    columns, attributes, files_key = {}, {}, None
    for name in keys:
        if name in ("Files", "files"):
            files_key = "Files" if name == "Files" or files_key == "Files" else name  # as spec.get("Files", ...)
            continue
        if name in jobspec.SERVER_OWNED:
            continue
        values = list(map(operator.itemgetter(name), group))
        kinds = set(map(type, values))
        known = jobspec.COLUMNS.get(name)
        if known is None:  # an attribute, kept verbatim
            if name == "jobPars" or not kinds <= _ATTRIBUTE_TYPES or str in kinds and _has_null_text(values):
                return False
            attributes[name] = values
            continue
        column, kind = known
        if kind is int:
            maximum = jobspec.INT_COLUMN_MAXIMUM[column]
            lowest = min(values) if kinds == {int} else None
            if lowest is None or lowest < (0 if column in _NOT_NEGATIVE else -maximum) or max(values) > maximum:
                return False
        elif kind is str:
            limit = jobspec.STR_COLUMN_LIMIT.get(column)
            if kinds != {str} or _has_null_text(values) or limit is not None and max(map(len, values)) > limit \
                    or _has_nul(values):
                return False
        else:
            return False
        columns[column] = values
    if "computing_site" not in columns or "transformation" not in columns:
        return False
    files = _group_files(list(map(operator.itemgetter(files_key), group)), indices) if files_key else ([], None)
    if files is None:
        return False
    for column, values in columns.items():
        batch._set(column, indices, values)
    if attributes:
        names = list(attributes)
        for index, row in zip(indices, zip(*attributes.values())):
            batch.attributes[index] = dict(zip(names, row))
    if files[1] is not None:
        batch._add_files(*files)
    return True


def _group_files(lists, indices):
    """([job index of each file], {JobFile column: values}) of the files of a group's specs, or None when a
    value needs parse_submitted's judgement."""
    if set(map(type, lists)) != {list}:
        return None
    flat = list(itertools.chain.from_iterable(lists))
    if not flat:
        return [], None
    jobs = list(itertools.chain.from_iterable(map(itertools.repeat, indices, map(len, lists))))
    if set(map(type, flat)) != {dict}:
        return None
    shapes = {}
    for position, entry in enumerate(flat):
        shapes.setdefault(tuple(entry), []).append(position)
    if len(shapes) == 1:
        (keys, _), = shapes.items()
        columns = _file_columns(keys, flat)
        return None if columns is None else (jobs, columns)
    whole = {name: [None] * len(flat) for name in FILE_COLUMNS}
    for keys, positions in shapes.items():
        columns = _file_columns(keys, [flat[position] for position in positions])
        if columns is None:
            return None
        for name, values in columns.items():
            column = whole[name]
            for position, value in zip(positions, values):
                column[position] = value
    return jobs, whole


def _file_columns(keys, entries):
    """{JobFile column: values} of file entries that all have ``keys``, or None (see _take_group)."""
    def values_of(key):
        return list(map(operator.itemgetter(key), entries))

    def text_or_none(key, limit=None):  # an optional text: absent, or a non-empty str in every entry
        if key not in keys:
            return absent
        values = values_of(key)
        if set(map(type, values)) != {str} or _has_null_text(values) or _has_nul(values):
            return None
        return None if limit is not None and max(map(len, values)) > limit else values

    if "lfn" not in keys or "type" not in keys:
        return None
    absent = [None] * len(entries)
    lfns, types = values_of("lfn"), values_of("type")
    # jobspec.LFN takes no leading dot: no name it takes is all dots (parse_file's other lfn rule)
    if set(map(type, lfns)) != {str} or not all(map(jobspec.LFN.match, lfns)) or \
            set(map(type, types)) != {str} or not set(types) <= jobspec.FILE_TYPES:
        return None
    columns = {"type": types, "lfn": lfns, "scope": text_or_none("scope"),
               "guid": text_or_none("GUID" if "GUID" in keys else "guid", jobspec.FILE_TEXT_LIMIT["guid"])}
    if columns["scope"] is None or columns["scope"] is not absent and not all(map(jobspec.SAFE_SCOPE.match,
                                                                                   columns["scope"])):
        return None
    for column, key in _FILE_TEXTS:
        columns[column] = text_or_none(key, jobspec.FILE_TEXT_LIMIT[column])
    fsizes = absent
    if "fsize" in keys:
        fsizes = values_of("fsize")
        if set(map(type, fsizes)) != {int} or min(fsizes) < -jobspec.INT64_MAX or max(fsizes) > jobspec.INT64_MAX:
            return None
    columns["fsize"] = fsizes
    return None if any(values is None for values in columns.values()) else columns
