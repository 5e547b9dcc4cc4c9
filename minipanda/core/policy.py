"""Who may get which job: label groups, queue rules and role rules, in one place.

Dispatch, brokerage, harvester's queue demand, job and task submission and the kill/command checks all ask here,
so a rule changes in one line and every path follows it.

- A pilot's ``prodSourceLabel`` names a group of job labels (PanDA's grouping, simplified): a ``user`` pilot
  takes user and panda jobs, a ``unified`` pilot production and user jobs.
- A queue's ``prodsourcelabels`` (queuedata) name such groups too; a queue ``offline`` gets no jobs, a queue in
  ``test`` only test jobs, whatever it normally takes.
- The ``admin`` and ``production`` roles manage every user's jobs and tasks and may submit production labels;
  a ``user`` submits user jobs, without task ids, at priorities up to :data:`MAX_USER_PRIORITY`.
- A bound token acts only for what it was made for (minipanda.core.auth): a ``harvester`` token for its own
  harvester id; a pilot token a harvester minted for one worker for that worker's queue and the jobs dispatched to
  that worker. ``admin`` acts for every harvester. The table is in docs/protocol.md ("Who may act for what").
"""
PRODUCTION_LABELS = frozenset({"managed", "prod_test", "rc_test"})
TEST_LABELS = ("test", "ptest", "prod_test", "rc_test")
LABELS_FOR_PILOT = {
    "managed": ("managed",),
    "user": ("user", "panda"),
    "panda": ("user", "panda"),
    "test": ("test", "prod_test", "ptest"),
    "ptest": ("test", "prod_test", "ptest"),
    "prod_test": ("test", "prod_test", "ptest"),
    "rc_test": ("test", "prod_test", "ptest", "rc_test"),
    "unified": ("managed", "user", "panda"),
}
MANAGER_ROLES = frozenset({"admin", "production"})
MAX_USER_PRIORITY = 1000


def job_labels(group):
    """The job labels a pilot (or queue) label stands for; an unknown label stands for itself."""
    return LABELS_FOR_PILOT.get(group, (group,))


def queue_job_labels(queue_groups):
    """The job labels a queue with these ``prodsourcelabels`` takes, or None (any) when it names none."""
    if not queue_groups:
        return None
    return tuple(sorted({label for group in queue_groups for label in job_labels(group)}))


def queue_takes(queue_groups, job_label):
    """Whether a queue with these ``prodsourcelabels`` runs jobs of ``job_label`` (brokerage asks)."""
    labels = queue_job_labels(queue_groups)
    return labels is None or job_label in labels


def served_labels(queue_status, queue_labels):
    """(status, job labels the queue's pilots may get, or None for any), the test-queue rule applied."""
    if queue_status == "test":
        return queue_status, TEST_LABELS
    return queue_status, queue_labels


def claimable_labels(pilot_label, queue_status, queue_labels):
    """(job labels a pilot of ``pilot_label`` may claim on this queue, why none). Offline queues give none."""
    if queue_status == "offline":
        return [], "offline"
    labels = [label for label in job_labels(pilot_label) if queue_labels is None or label in queue_labels]
    return labels, "" if labels else f"the queue takes {'/'.join(queue_labels)} jobs, not {pilot_label}"


def manages_all(identity):
    """Whether ``identity`` may act on every user's jobs, tasks and datasets."""
    return identity.role in MANAGER_ROLES


def may_read_scope(identity, scope):
    """Whether ``identity`` may read files of ``scope`` from the file store: a user reads shared and production
    scopes and their own ``user.<name>`` scope, the whole name compared (``bob`` does not read ``user.bob.jr``);
    pilots (for their jobs' inputs), harvester and managers read all."""
    if identity.role != "user":
        return True
    return not scope.startswith("user.") or scope == f"user.{identity.name}"


def _bound_to(identity):
    return f"harvester {identity.harvester_id}" + (
        f" worker {identity.worker_id}" if identity.worker_id is not None else "")


def harvester_refusal(identity, harvester_id, worker_id=None):
    """Why ``identity`` may not act for harvester ``harvester_id`` (and its worker ``worker_id``), or None.
    Tokens not bound to a harvester (admin, production, a site's pilot token) are not refused here."""
    if identity.role == "admin" or identity.harvester_id is None:
        return None
    if harvester_id not in (None, "") and harvester_id != identity.harvester_id:
        return f"this token is {_bound_to(identity)}'s; it may not act for harvester {harvester_id}"
    if identity.worker_id is not None and worker_id not in (None, "") and worker_id != identity.worker_id:
        return f"this token is {_bound_to(identity)}'s; it may not act for worker {worker_id}"
    return None


def queue_refusal(identity, queue):
    """Why ``identity`` may not take jobs of ``queue``, or None: a minted pilot token serves its own queue."""
    if identity.role == "admin" or identity.queue is None or queue == identity.queue:
        return None
    return f"this token was minted for queue {identity.queue} ({_bound_to(identity)}); it may not take jobs of " \
           f"queue {queue}"


def update_binding(identity):
    """(harvester id, worker id or None) whose jobs alone ``identity`` may update, or None for any job."""
    if identity.role == "admin" or identity.harvester_id is None:
        return None
    return identity.harvester_id, identity.worker_id


def job_update_refusal(binding, panda_id, job_harvester_id, job_worker_id):
    """Why a caller bound to ``binding`` (update_binding) may not update this job, or None. A minted token may
    update a job its harvester acquired that no worker holds yet (push mode, before harvester reported the
    worker): the update binds the job to its worker."""
    harvester_id, worker_id = binding
    if job_harvester_id != harvester_id:
        return f"job {panda_id} was not dispatched to harvester {harvester_id}; this token may not update it"
    if worker_id is not None and job_worker_id is not None and job_worker_id != worker_id:
        return f"job {panda_id} was dispatched to worker {job_worker_id}, not {worker_id}; this token may not " \
               "update it"
    return None


def may_submit_label(role, label):
    """Whether a caller of ``role`` may submit jobs or tasks labelled ``label``."""
    return label not in PRODUCTION_LABELS or role in MANAGER_ROLES


def user_job_refusals(columns, where):
    """What a plain user may not ask of a job (fills in the ``user`` label); returns the refusals, field named."""
    refusals = []
    label = columns.setdefault("prod_source_label", "user")
    if not may_submit_label("user", label):
        refusals.append(f"{where}.prodSourceLabel: {label!r} jobs need the production or admin role")
    if columns.get("task_id") is not None:
        refusals.append(f"{where}.jediTaskID: jobs of a task are made by the server; submit the task instead")
    for name, column in (("currentPriority", "current_priority"), ("assignedPriority", "assigned_priority")):
        if (columns.get(column) or 0) > MAX_USER_PRIORITY:
            refusals.append(f"{where}.{name}: user jobs may not exceed priority {MAX_USER_PRIORITY}")
    return refusals
