"""Splitting a task's input into jobs: pure arithmetic, no database.

A plan is a list of chunks, one per job, in order; a chunk is a list of slices ``(file index or None, first event
or None, number of events or None)``. ``None`` as file index is pseudo input (a task without input data).
"""
import fnmatch

GB = 1_000_000_000


def plan(rule, value, files=(), n_events=None, max_files_per_job=None):
    """Split input into chunks.

    Args:
        rule: "files" (``value`` files per job), "events" (``value`` events per job), "gb" (at most ``value`` GB
            of input per job, at least one file), or "jobs" (``value`` jobs).
        value: the number for the rule.
        files: [(size in bytes, events or None)] of the input files, in order; empty for a task without input.
        n_events: total events to generate for a task without input and rule "events".
        max_files_per_job: an upper bound on files per job (PanDA's nMaxFilesPerJob).

    Returns:
        The list of chunks.
    """
    if not files:
        if rule == "events":
            return [[(None, first, min(value, n_events - first))] for first in range(0, n_events, value)]
        return [[(None, None, None)] for _ in range(value)]
    if rule == "files":
        per_job = min(value, max_files_per_job or value)
        return [[(i, None, None) for i in range(start, min(start + per_job, len(files)))]
                for start in range(0, len(files), per_job)]
    if rule == "jobs":
        return _even(len(files), min(value, len(files)))
    if rule == "gb":
        return _by_size([size for size, _ in files], value * GB, max_files_per_job)
    if rule == "events":
        return _by_events([events or 1 for _, events in files], value)
    raise ValueError(f"unknown split rule {rule!r}")


def _even(n_files, n_jobs):
    """n_files over n_jobs jobs; the first (n_files % n_jobs) jobs take one file more."""
    base, extra = divmod(n_files, n_jobs)
    chunks, start = [], 0
    for job in range(n_jobs):
        size = base + (1 if job < extra else 0)
        chunks.append([(i, None, None) for i in range(start, start + size)])
        start += size
    return chunks


def _by_size(sizes, limit, max_files):
    chunks, current, total = [], [], 0
    for index, size in enumerate(sizes):
        if current and (total + size > limit or (max_files and len(current) >= max_files)):
            chunks.append(current)
            current, total = [], 0
        current.append((index, None, None))
        total += size
    if current:
        chunks.append(current)
    return chunks


def _by_events(events, per_job):
    """Walk the files' events in order; a job takes ``per_job`` events, crossing file boundaries when a file has
    fewer events than the job needs, and cutting a file in ranges when it has more."""
    chunks, current, room = [], [], per_job
    for index, n in enumerate(events):
        first = 0
        while first < n:
            take = min(room, n - first)
            current.append((index, first, take))
            first += take
            room -= take
            if room == 0:
                chunks.append(current)
                current, room = [], per_job
    if current:
        chunks.append(current)
    return chunks


def select_files(files, filters):
    """Apply a JEDI input item's include/exclude wildcard lists, explicit file list and offset to ``files``
    (objects with ``lfn``), keeping their order.

    Patterns are shell-style wildcards matched against the whole name: user regular expressions could backtrack
    for minutes in the one generator thread that serves every task.
    """
    include, exclude = filters.get("include"), filters.get("exclude")
    wanted = set(filters["files"]) if filters.get("files") is not None else None
    out = [f for f in files
           if (not include or any(fnmatch.fnmatchcase(f.lfn, p) for p in include))
           and not (exclude and any(fnmatch.fnmatchcase(f.lfn, p) for p in exclude))
           and (wanted is None or f.lfn in wanted)]
    return out[filters.get("offset") or 0:]
