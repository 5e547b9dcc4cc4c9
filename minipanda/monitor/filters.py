"""The filters of the monitor's pages, as PanDA's monitor has them: ``days`` (changed in the last N days),
``status`` (one state or several joined by ``|`` or ``,``), ``user``, ``taskname`` (``*`` wildcards), ``queue``,
``jeditaskid`` and ``limit``; PanDA's own names (``jobstatus``, ``produsername``, ``computingsite``) are accepted too.
A bad one is a RequestError naming it; :func:`job_filter` and :func:`task_filter` apply them to a query."""
import dataclasses
import datetime
from typing import Optional

import peewee

from minipanda.core import models
from minipanda.core.states import JobStatus
from minipanda.errors import RequestError

JOB_STATES = [s.value for s in JobStatus]
ALIASES = {"jobstatus": "status", "produsername": "user", "username": "user", "computingsite": "queue",
           "task": "jeditaskid", "taskid": "jeditaskid"}
MAX_LIMIT = 1000
TEXT_LIMIT = 256


@dataclasses.dataclass
class Filters:
    days: Optional[int] = None
    status: tuple = ()
    user: Optional[str] = None
    taskname: Optional[str] = None
    queue: Optional[str] = None
    jeditaskid: Optional[int] = None
    limit: int = 100

    def as_dict(self):
        """The filters in force, as the query string would say them (empty ones left out)."""
        out = {"days": self.days, "status": "|".join(self.status) or None, "user": self.user,
               "taskname": self.taskname, "queue": self.queue, "jeditaskid": self.jeditaskid}
        return {key: value for key, value in out.items() if value not in (None, "")}


def text(params, key):
    value = params.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, list):
        raise RequestError(f"{key}: given more than once")
    value = str(value).strip()
    if len(value) > TEXT_LIMIT:
        raise RequestError(f"{key}: at most {TEXT_LIMIT} characters, got {len(value)}")
    return value or None


def whole_number(params, key, minimum, maximum):
    value = params.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or isinstance(value, (list, dict)):
        raise RequestError(f"{key}: expected a whole number")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise RequestError(f"{key}: expected a whole number, got {str(value)[:40]!r}") from None
    if not minimum <= number <= maximum:
        raise RequestError(f"{key}: must be between {minimum} and {maximum}, got {number}")
    return number


def parse_filters(params, default_limit=100):
    """The filters of a page's query string (PanDA's names accepted); RequestError names a bad one."""
    params = dict(params)
    for alias, name in ALIASES.items():
        if params.get(alias) not in (None, "") and params.get(name) in (None, ""):
            params[name] = params[alias]
    status = text(params, "status")
    wanted = tuple(part.strip() for part in (status or "").replace(",", "|").split("|") if part.strip())
    unknown = [s for s in wanted if s not in JOB_STATES]
    if unknown:
        raise RequestError(f"status: {unknown[0][:40]!r} is not a job state; expected one of {', '.join(JOB_STATES)}")
    return Filters(days=whole_number(params, "days", 1, 3650), status=wanted, user=text(params, "user"),
                   taskname=text(params, "taskname"), queue=text(params, "queue"),
                   jeditaskid=whole_number(params, "jeditaskid", 0, 2 ** 63 - 1),
                   limit=whole_number(params, "limit", 1, MAX_LIMIT) or default_limit)


def like(column, pattern):
    """``column`` matches ``pattern``: equality, or SQL LIKE when it holds ``*`` wildcards (nothing else is one)."""
    if "*" not in pattern:
        return column == pattern
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_").replace("*", "%")
    return peewee.NodeList((column, peewee.SQL("LIKE"), escaped, peewee.SQL("ESCAPE '\\'")))


def job_filter(query, f, now, with_status=True):
    Job = models.Job
    if f.days:  # a job's modification_time is its state_changed_time (see job_list): this one has an index
        query = query.where(Job.state_changed_time >= now - datetime.timedelta(days=f.days))
    if with_status and f.status:
        query = query.where(Job.status.in_(list(f.status)))
    if f.user:
        query = query.where(like(Job.prod_user_name, f.user))
    if f.queue:
        query = query.where(like(Job.computing_site, f.queue))
    if f.jeditaskid is not None:
        query = query.where(Job.task_id == f.jeditaskid)
    if f.taskname:
        Task = models.Task
        query = query.where(Job.task_id.in_(Task.select(Task.jedi_task_id).where(like(Task.task_name, f.taskname))))
    return query


def task_filter(query, f, now):
    Task = models.Task
    if f.days:
        query = query.where(Task.modification_time >= now - datetime.timedelta(days=f.days))
    if f.user:
        query = query.where(like(Task.user_name, f.user))
    if f.taskname:
        query = query.where(like(Task.task_name, f.taskname))
    if f.jeditaskid is not None:
        query = query.where(Task.jedi_task_id == f.jeditaskid)
    return query
