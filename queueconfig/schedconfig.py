"""The PanDA schedconfig ("queuedata") dict of a queue: what PanDA pilot3 and the minipanda pilot read.

pilot3 needs ``nickname``, ``state`` = ``"ACTIVE"`` (any other state makes it stop), ``atlas_site`` (it crashes
without one), ``panda_resource`` (sent as siteName in getJob), ``maxwdir`` (sent as diskSpace) and, to stage out,
``copytools``/``acopytools``/``astorages``; of our copytools pilot3 knows only ``mv``. The minipanda pilot reads
the same PanDA keys plus the extras below (names as in ``pilot/queuedata.py``).
"""
from queueconfig import allocation

DEFAULT_FILE_URL = "/files/{scope}/{lfn}"  # the server's file store (minipanda/core/filestore.py)


def state_of(status):
    """pilot3's ``state`` for our status: pilots run for every status except offline.

    brokeroff only keeps new tasks away and test only limits dispatch to test jobs, so pilots there must still
    work; an offline queue should make a pilot that starts anyway stop at once.
    """
    return "OFFLINE" if status == "offline" else "ACTIVE"


def queue_type(labels):
    """PanDA's queue type from the served labels: unified, analysis or production."""
    if "user" in labels:
        return "unified" if set(labels) - {"user", "panda"} else "analysis"
    return "production"


def queuedata(queue):
    """The schedconfig-shaped dict of one queue.

    Args:
        queue: a :class:`queueconfig.schema.Queue`.

    Returns:
        A JSON-ready dict: PanDA keys first (as ``/cache/schedconfig/<queue>.all.json`` serves them), then the
        minipanda pilot's keys.
    """
    res, pilot, storage = queue.resources, queue.pilot, pilot_storage(queue)
    tools = copytools(pilot.copytool, storage.output.type)
    data = {
        "name": queue.name, "nickname": queue.name, "siteid": queue.name, "panda_resource": queue.name,
        "atlas_site": queue.site, "site": queue.site, "gstat": queue.site,
        "status": queue.status, "state": state_of(queue.status), "type": queue_type(queue.prodSourceLabels),
        "pilot_manager": "minipanda", "description": queue.description,
        "corecount": res.corecount, "maxrss": res.maxrss, "minrss": res.minrss, "maxtime": res.maxtime,
        "maxwdir": res.maxwdir, "maxwdir_unit": "MB", "maxinputsize": res.maxinputsize,
        "timefloor": pilot.timefloor,
        "catchall": "mv_final_destination" if storage.output.type == "shared" else "",
        "container_type": "", "container_options": "",
        "copytools": {tool: {} for tool in dict.fromkeys(tools.values())},
        "acopytools": {activity: [tool] for activity, tool in tools.items()},
        "copytool": pilot.copytool if len(set(tools.values())) == 1 else "",  # else the pilot uses acopytools
        "astorages": {}, "direct_access_lan": False, "direct_access_wan": False, "allow_lan": True,
        "allow_wan": False, "is_cvmfs": False, "wnconnectivity": queue.wnconnectivity, "params": {},
    }
    data.update(_minipanda_keys(queue))
    return data


def copytools(copytool, output_type="local"):
    """The tool per pilot activity (pr stage-in, pw outputs, pl log) for our ``copytool``.

    ``copytool`` names the stage-in tool; outputs and the log are uploaded with http when ``output_type`` is
    server, else moved for mv and copied otherwise (a symlink or a download cannot write an output).
    """
    out = "http" if output_type == "server" else "mv" if copytool == "mv" else "copy"
    return {"pr": copytool, "pw": out, "pl": out}


def pilot_storage(queue):
    """The queue's storage as its pilot sees it: on a push queue whose nodes have no network (harvester relays),
    an end of type server is harvester's to reach; for the pilot, its files stay in its directory (local)."""
    storage = queue.storage
    if queue.mode != "push" or queue.wnconnectivity != "none":
        return storage
    local = type(storage.input)()
    return storage.model_copy(update={side: local for side in ("input", "output")
                                      if getattr(storage, side).type == "server"})


def _minipanda_keys(queue):
    pilot, storage = queue.pilot, pilot_storage(queue)
    return {
        "prodsourcelabels": list(queue.prodSourceLabels), "mode": queue.mode, "maptype": queue.mapType,
        "jobs_per_worker": queue.jobsPerWorker,
        "input_dir": storage.input.path or "", "output_dir": storage.output.path or "",
        "input_url": server_url(storage.input), "output_url": server_url(storage.output),
        "storage": storage.model_dump(),
        "handoff_files": pilot.handoff.model_dump(), "pilot_lifetime": pilot.lifetime,
        "pilot_heartbeat_interval": pilot.heartbeat, "pilot_lost_heartbeat_timeout": pilot.lost_heartbeat,
        "pilot_looping_limit": pilot.looping_limit, "pilot_extra_args": list(pilot.extra_args),
        "pilot_getjob_tries": pilot.getjob_tries, "pilot_getjob_interval": pilot.getjob_interval,
        "pilot_handoff_wait": pilot.handoff_wait, "pilot_stageout_reserve": pilot.stageout_reserve,
        "corepernode": allocation.node_cores(queue), "maxjobnodes": queue.resources.max_job_nodes,
    }


def server_url(end):
    """The pilot's http template for one storage end of type server: its url, else the server's file store."""
    if end.type != "server":
        return ""
    return end.url or DEFAULT_FILE_URL


def schedconfig(config):
    """``{queue name: queuedata}`` for every queue of a :class:`queueconfig.QueueConfig` (PanDA's full shape)."""
    return {name: queuedata(queue) for name, queue in sorted(config.queues.items())}
