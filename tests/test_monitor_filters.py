"""minipanda/monitor/filters.py: a page's filters as PanDA's monitor takes them (its own names too), a bad one refused
naming it, and ``*`` the only wildcard (SQL's ``%`` and ``_`` match themselves)."""
import peewee
import pytest

from minipanda.errors import RequestError
from minipanda.monitor import filters


def test_pandas_names_are_taken_and_the_filters_said_back():
    f = filters.parse_filters({"jobstatus": "running|failed", "produsername": "alice", "computingsite": "Q1",
                               "taskid": "7", "days": "2"})
    assert (f.status, f.user, f.queue, f.jeditaskid, f.days, f.limit) == (("running", "failed"), "alice", "Q1", 7,
                                                                          2, 100)
    assert f.as_dict() == {"days": 2, "status": "running|failed", "user": "alice", "queue": "Q1", "jeditaskid": 7}
    assert filters.parse_filters({"status": "running", "jobstatus": "failed"}).status == ("running",)
    assert filters.parse_filters({}, default_limit=20).limit == 20


@pytest.mark.parametrize("params, named", [
    ({"status": "runing"}, "status: 'runing' is not a job state"),
    ({"days": "0"}, "days: must be between 1 and 3650"),
    ({"limit": str(filters.MAX_LIMIT + 1)}, "limit: must be between 1 and 1000"),
    ({"jeditaskid": "x"}, "jeditaskid: expected a whole number"),
    ({"user": ["a", "b"]}, "user: given more than once"),
    ({"taskname": "t" * (filters.TEXT_LIMIT + 1)}, "taskname: at most 256 characters"),
])
def test_a_bad_filter_is_refused_by_name(params, named):
    with pytest.raises(RequestError, match=named):
        filters.parse_filters(params)


def test_only_a_star_is_a_wildcard():
    db = peewee.SqliteDatabase(":memory:")

    class Row(peewee.Model):
        name = peewee.TextField()

        class Meta:
            database = db

    db.create_tables([Row])
    for name in ("user.task_1", "user.taskX1", "user%task", "other"):
        Row.create(name=name)
    found = lambda pattern: sorted(r.name for r in Row.select().where(filters.like(Row.name, pattern)))  # noqa: E731
    assert found("user.task_1") == ["user.task_1"]
    assert found("user.task_*") == ["user.task_1"]  # '_' is no single-character wildcard
    assert found("user%*") == ["user%task"]  # nor is '%' a wildcard
    assert found("user.*") == ["user.taskX1", "user.task_1"]
