"""minipanda/monitor/pagedata.py: a page's data made in-process equals what the obvious query over the rows gives
(the queue page's first 20 waiting jobs, each explained as ``why`` does). Both backends."""
from minipanda.core import models
from minipanda.monitor import pagedata, queries
from minipanda.tasks import why
from test_monitor_queries import NOW, set_status, submit


def test_queue_page_lists_the_first_20_waiting_jobs_and_explains_each_as_why_does(database):
    # 30 waiting jobs in four states with tied and distinct priorities, so the first 20 mix the states
    ids = []
    for status, priority in (("activated", 900), ("defined", 950), ("activated", 950), ("assigned", 900),
                             ("pending", 800), ("activated", 1000)):
        made = submit("QP", 5, currentPriority=priority)
        set_status(made, status, current_priority=priority)
        ids += made
    Job = models.Job
    expected = [j.panda_id for j in Job.select(Job.panda_id).where(
        Job.computing_site == "QP", Job.status.in_(list(queries.WAITING_STATES)))
        .order_by(Job.current_priority.desc(), Job.panda_id).limit(20)]

    page = pagedata.queue_page("QP", NOW)

    assert [j["PandaID"] for j in page["waiting_jobs"]] == expected
    for row in page["waiting_jobs"]:
        assert row["why"] == why.explain(row["PandaID"], NOW)["lines"][1:], row["PandaID"]
    behind = [line for row in page["waiting_jobs"] for line in row["why"] if "waiting behind" in line]
    assert "waiting behind 9 higher-priority jobs on queue QP" in behind  # the 5 at 1000, 4 of the 5 at 950
