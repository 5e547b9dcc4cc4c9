"""The HTCondor submit description of a queue's workers: one template for the queue, each worker's values as item
data (the ``$(mp_...)`` macros), so one transaction submits them all as one cluster. Every value is checked or
quoted for the submit language by the plugin's :meth:`~harvester.batch.jobscript.ScriptBatch.checked`.

File transfer (``batch.file_transfer``): the job script, pilot zipapp, token and queuedata are spooled to the schedd
with the submission and travel to the execute node; the job script runs the pilot in HTCondor's scratch directory
(the access point's paths become relative to it, :func:`relocated`).
"""
import dataclasses
import os

import htcondor2

from harvester.handoff import pilots
from harvester.batch.base import PilotLaunch

LOG_NAME = "job.log"


def description(plugin):
    """The :class:`htcondor2.Submit` of ``plugin``'s queue."""
    batch, transfer = plugin.queue.batch, plugin.queue.batch.file_transfer
    commands = {"universe": "vanilla", "executable": f"$(mp_ap)/{plugin.script_name}", "initialdir": "$(mp_ap)",
                "output": f"$(mp_ap)/{plugin.stdout_name}", "error": f"$(mp_ap)/{plugin.stderr_name}",
                "log": f"$(mp_ap)/{LOG_NAME}", "request_cpus": "$(mp_cpus)",
                "request_memory": "$(mp_memory)", "batch_name": f"harvester-{plugin.queue.name}-$(mp_worker)",
                "+MinipandaWorker": "$(mp_worker)", "+MinipandaAccessPoint": '"$(mp_ap)"',
                "+MaxRuntime": "$(mp_walltime)",  # the walltime, enforced by the periodic_remove below
                "periodic_remove": "JobStatus == 2 && time() - EnteredCurrentStatus > $(mp_walltime)",
                # the batch job id the pilot reports (HTCondor itself sets no such variable)
                "environment": '"CONDOR_JOB_ID=$(Cluster).$(Process)"'}
    if transfer:  # the schedd cannot write harvester's disk: no user log; the rest comes back with retrieve
        del commands["log"]
        commands.update({"should_transfer_files": "YES", "when_to_transfer_output": "ON_EXIT",
                         "transfer_input_files": "$(mp_inputs)"})
    if batch.account:
        commands["accounting_group"] = plugin.checked(batch.account, "batch.account")
    commands = {k: v for k, v in commands.items()
                if not any(f"{k} = {v}".startswith(skip) for skip in batch.skip_directives)}
    for line in batch.extra_directives:  # 'key = value', checked by queueconfig; a site's value wins
        key, _, value = line.partition("=")
        commands[key.strip()] = value.strip()
    return htcondor2.Submit(commands)


def item(plugin, worker):
    """The item data of one worker: numbers and its access point, a plain path; its environment is in the job
    script, quoted for the shell."""
    values = {"mp_ap": plugin.checked(worker.access_point, "access point"), "mp_worker": str(int(worker.worker_id)),
              "mp_cpus": str(int(worker.cores)), "mp_memory": str(int(worker.memory_mb)),
              "mp_walltime": str(int(worker.walltime_s))}
    if plugin.queue.batch.file_transfer:
        values["mp_inputs"] = ", ".join(inputs(plugin, worker))
    return values


def inputs(plugin, worker):
    """What a worker's job needs on the execute node besides its script: the pilot zipapp (unless the queue runs
    its own pilot command), the pilot's token, and queuedata (each pilot's directory when several)."""
    queue = plugin.queue
    names = [] if queue.pilot.command else [pilots.ZIPAPP_FILE]
    if not pilots.file_mode(queue):
        names.append(pilots.TOKEN_FILE)
    if worker.pilots:
        names += [os.path.relpath(p.directory, worker.access_point) for p in worker.pilots]
    else:
        names.append(pilots.QUEUEDATA_FILE)
    return [plugin.checked(name, "input file") for name in names]


def relocated(queue, worker):
    """``worker`` as the job sees it: with file transfer, its access point is the job's scratch directory (the
    working directory HTCondor starts the script in), so every path in it becomes relative."""
    if not queue.batch.file_transfer:
        return worker
    ap = worker.access_point.rstrip("/")

    def move(value):
        value = str(value)
        return "." if value == ap else "./" + value[len(ap) + 1:] if value.startswith(ap + "/") else value

    return dataclasses.replace(
        worker, access_point=".", argv=tuple(map(move, worker.argv)),
        environment={name: move(value) for name, value in worker.environment.items()},
        pilots=tuple(PilotLaunch(move(p.directory), tuple(map(move, p.argv)),
                                 {name: move(value) for name, value in p.environment.items()})
                     for p in worker.pilots))
