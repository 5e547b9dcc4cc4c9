"""Job monitoring: every ``pilot_monitor_interval`` s, measure the payload and check it against its limits.

Each check returns the PilotError the job is to be killed with, or None:

=================== ======================================================================= =====
check               limit                                                                    code
=================== ======================================================================= =====
job walltime        maxWalltime x pilot_walltime_grace since the payload started            1213
pilot lifetime      the pilot's end (-l, maxtime) minus pilot_stageout_reserve              1213
memory              PSS (RSS without PSS) of the whole tree > limit x pilot_memory_grace    1235
looping             no file in the job directory changed for pilot_looping_limit            1150
work dir size       job directory > maxwdir MB                                              1104
free disk           free space < pilot_min_disk_running_mb                                  1098
stdout size         payload.stdout + payload.stderr > pilot_max_stdout_mb                   1106
harvester kill      the handoff ``kill_payload`` file exists                                1144
=================== ======================================================================= =====

The memory limit is the job's minRamCount, or queuedata maxrss when the job has none (0 = unchecked).
"""
import logging
import os
import time

from pilot import errors
from pilot.errors import PilotError
from pilot.fileutil import free_mb, newest_mtime, tree_size

log = logging.getLogger(__name__)


class Monitor:
    """The checks and the usage statistics of one running payload.

    Args:
        job: the Job.
        qd: the QueueData.
        job_dir: the job directory.
        payload: the running Payload.
        pilot_deadline: monotonic time by which the payload must be gone (the pilot's end minus the reserve).
        handoff: the Handoff in file/harvester mode (its kill file is watched), else None.
    """

    def __init__(self, job, qd, job_dir, payload, pilot_deadline=None, handoff=None):
        self.job, self.qd, self.job_dir, self.payload = job, qd, job_dir, payload
        self.pilot_deadline, self.handoff = pilot_deadline, handoff
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.samples = 0
        self.max = {"rss": 0, "pss": 0, "vmem": 0}
        self.sum = {"rss": 0, "pss": 0}
        self.cpu = 0.0
        self.nprocs = 0
        self.memory_limit_kb = qd.memory_limit_mb(job.min_ram_count) * 1024 * qd["pilot_memory_grace"]

    def sample(self):
        """Measure the process tree and fold the figures into the statistics."""
        usage = self.payload.tree.usage()
        if usage.nprocs:
            self.samples += 1
            self.max = {"rss": max(self.max["rss"], usage.rss_kb), "pss": max(self.max["pss"], usage.pss_kb),
                        "vmem": max(self.max["vmem"], usage.vmem_kb)}
            self.sum["rss"] += usage.rss_kb
            self.sum["pss"] += usage.pss_kb
            self.cpu = max(self.cpu, usage.cpu_s)
            self.nprocs = usage.nprocs
        return usage

    def check(self):
        """Run every check; the PilotError to kill the job with, or None."""
        usage = self.sample()
        for check in (self._walltime, self._lifetime, lambda: self._memory(usage), self._looping,
                      self._workdir, self._disk, self._stdout, self._harvester_kill):
            try:
                breach = check()
            except OSError as exc:  # e.g. the job directory was removed under the pilot
                breach = PilotError(errors.GENERALERROR, f"monitoring failed: {exc}")
            if breach:
                log.warning("job %s breaks a limit: %s", self.job.panda_id, breach)
                return breach
        return None

    def _walltime(self):
        grace = self.qd["pilot_walltime_grace"]
        elapsed = time.monotonic() - self.started
        if self.job.max_walltime and elapsed > self.job.max_walltime * grace:
            return PilotError(errors.REACHEDMAXTIME, f"payload ran {elapsed:.0f} s, over maxWalltime "
                                                     f"{self.job.max_walltime} s x grace {grace}")
        return None

    def _lifetime(self):
        if self.pilot_deadline is not None and time.monotonic() > self.pilot_deadline:
            return PilotError(errors.REACHEDMAXTIME, "the pilot reached the end of its lifetime")
        return None

    def _memory(self, usage):
        used = usage.pss_kb or usage.rss_kb
        if self.memory_limit_kb and used > self.memory_limit_kb:
            return PilotError(errors.PAYLOADEXCEEDMAXMEM, f"payload uses {used // 1024} MB (PSS), over the limit "
                                                          f"{self.memory_limit_kb / 1024:.0f} MB")
        return None

    def _looping(self):
        limit = self.qd["pilot_looping_limit"]
        if not self.job.looping_check or not limit:
            return None
        idle = time.time() - max(newest_mtime(self.job_dir), self.started_wall)
        if idle > limit:
            return PilotError(errors.LOOPINGJOB, f"no file in the job directory changed for {idle:.0f} s "
                                                 f"(limit {limit:.0f} s)")
        return None

    def _workdir(self):
        if not self.qd["maxwdir"]:
            return None
        size = tree_size(self.job_dir)
        if size > self.qd["maxwdir"] * 1e6:
            return PilotError(errors.USERDIRTOOLARGE, f"job directory holds {size / 1e6:.1f} MB, maxwdir is "
                                                      f"{self.qd['maxwdir']} MB")
        return None

    def _disk(self):
        free = free_mb(self.job_dir)
        if free < self.qd["pilot_min_disk_running_mb"]:
            return PilotError(errors.NOLOCALSPACE, f"{free:.0f} MB free, at least "
                                                   f"{self.qd['pilot_min_disk_running_mb']:.0f} MB needed")
        return None

    def _stdout(self):
        size = sum(os.path.getsize(p) for p in (self.payload.stdout, self.payload.stderr) if os.path.exists(p))
        if size > self.qd["pilot_max_stdout_mb"] * 1e6:
            return PilotError(errors.STDOUTTOOBIG, f"payload stdout+stderr hold {size / 1e6:.1f} MB, limit "
                                                   f"{self.qd['pilot_max_stdout_mb']} MB")
        return None

    def _harvester_kill(self):
        if self.handoff is not None and self.handoff.kill_requested():
            return PilotError(errors.PANDAKILL, "harvester asked for the payload to be killed")
        return None

    def metrics(self):
        """Usage figures for updateJob (memory in kB, CPU in s)."""
        cpu = max(self.cpu, self.payload.cpu_time())
        figures = {"cpuConsumptionTime": int(round(cpu)), "cpuConsumptionUnit": "s",
                   "maxRSS": self.max["rss"], "maxPSS": self.max["pss"],
                   "maxVMEM": self.max["vmem"]}
        if self.samples:
            figures.update(avgRSS=self.sum["rss"] // self.samples, avgPSS=self.sum["pss"] // self.samples)
        figures["jobMetrics"] = f"coreCount={self.job.core_count} nProcs={self.nprocs} samples={self.samples}"
        return figures
