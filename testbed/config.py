"""The testbed's home and configuration: its directories, its log file, the queue, the server's and harvester's
settings."""
import logging
import os
import socket
import tempfile

QUEUE = "TESTBED"
OUT_SCOPE = "testbed.demo.out"  # file store directory of the outputs and logs
PREFERRED_PORT = 25080
PILOTS_PER_CORE = 3  # the demo payload sleeps; see --pilots
# --warm-up: a pilot with no job asks again every WARM_GETJOB_INTERVAL_S for WARM_WAIT_S (queuedata
# pilot_getjob_tries and pilot_getjob_interval, as a site sets them), so the pilots that took the warm-up's jobs are
# still there, asking, when the demo task's jobs come; without it a pilot asks 3 times, 1 s apart, and leaves
WARM_WAIT_S = 5
WARM_GETJOB_INTERVAL_S = 0.1


class Home:
    """A fresh directory for one run and the places in it."""

    def __init__(self, path):
        self.path = path
        self.server = os.path.join(path, "server")
        self.harvester = os.path.join(path, "harvester")
        self.queues = os.path.join(path, "queues.yaml")
        self.data = os.path.join(path, "data")
        self.fail_marks = os.path.join(path, "fail-once")
        self.log = os.path.join(path, "testbed.log")
        self.summary = os.path.join(path, "summary.json")
        self.harvester_token = os.path.join(path, "harvester.token")

    @classmethod
    def make(cls, wanted=None):
        """``wanted`` (new or empty), or a new temporary directory."""
        if wanted:
            path = os.path.abspath(os.path.expanduser(wanted))
            if os.path.isdir(path) and os.listdir(path):
                raise ValueError(f"--home {path}: not empty; the testbed starts from a fresh home (give a new "
                                 "directory, or leave --home out for a new temporary one)")
            os.makedirs(path, exist_ok=True)
        else:
            path = tempfile.mkdtemp(prefix="minipanda-testbed-")
        home = cls(path)
        for directory in (home.server, home.harvester, home.data):
            os.makedirs(directory, exist_ok=True)
        return home


def log_to_file(path, debug):
    """Everything to ``path``: the minipanda command's console handler goes, the progress bar owns the terminal."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.getLogger("minipanda.access").setLevel(logging.DEBUG if debug else logging.WARNING)


def machine_memory_mb():
    """This machine's memory, MB: psutil.virtual_memory().total's value, without psutil (~12 ms of CPU to import,
    at every testbed start, for this one number)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)


def queue_config(cores, pilots, lost_heartbeat, warm_up=False):
    """The one queue, sized for this machine: ``pilots`` single-core pilots, memory shared among them; with
    ``warm_up``, pilots that wait WARM_WAIT_S for work when there is none."""
    memory_mb = machine_memory_mb()
    per_pilot = max(500, min(4000, int(memory_mb * 0.8 / pilots)))
    heartbeat = max(1, lost_heartbeat // 4)
    getjob = ({"getjob_tries": 1 + int(WARM_WAIT_S / WARM_GETJOB_INTERVAL_S), "getjob_interval": WARM_GETJOB_INTERVAL_S}
              if warm_up else {"getjob_tries": 3, "getjob_interval": 1})
    return {
        "description": f"minipanda testbed on {socket.gethostname()}: {cores} cores, {memory_mb} MB",
        "mode": "pull",
        "prodSourceLabels": ["managed"],
        "resources": {"corecount": 1, "maxrss": per_pilot, "maxtime": 3600},
        "limits": {"maxWorkers": pilots, "nQueueLimitWorker": pilots, "maxNewWorkersPerCycle": pilots},
        "pilot": {"lifetime": 7200, "timefloor": 60, **getjob,
                  "heartbeat": heartbeat, "lost_heartbeat": lost_heartbeat, "copytool": "http"},
        "storage": {"input": {"type": "server", "url": "/files/{dataset}/{lfn}"},
                    # one directory for outputs and logs: our pilot knows no dataset for a job's log file
                    "output": {"type": "server", "url": f"/files/{OUT_SCOPE}/{{lfn}}"}},
        "sweeper": {"keep_finished": 86400, "keep_failed": 86400},
    }


def write_queues(path, config):
    import yaml

    with open(path, "w") as handle:
        handle.write("# written by 'minipanda testbed' for this machine\n")
        yaml.safe_dump({"queues": {QUEUE: config}}, handle, sort_keys=False)


def server_settings(jobs, overrides):
    """Duties a little faster than a service's; ``overrides`` are the ``--setting`` values."""
    from minipanda.tasks import settings as task_settings

    values = {"period.generator": 1, "period.settle": 0.5, "period.watchdog": 2,
              # one queue takes every job at once: the brokerage's bootstrap cap would hold most of them back
              "brokerage.bootstrap_queued": max(100, 2 * jobs)}
    values.update(task_settings.parse_overrides(overrides))
    return task_settings.Settings(values)


def harvester_settings(overrides):
    """Agents every 0.5 s while they find work, up to 2 s apart when idle (idle_factor 4; a service's are slower);
    ``overrides`` are the ``--harvester-setting`` values."""
    from harvester.cli import parse_settings

    defaults = [f"{name}_period=0.5" for name in ("adjuster", "submitter", "fetcher", "monitor", "propagator")]
    defaults += ["sweeper_period=5", "commands_period=5", "backoff_base_s=1", "backoff_max_s=10"]
    return parse_settings(defaults + list(overrides))
