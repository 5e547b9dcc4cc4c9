"""``harvester discover``: read a Slurm login node's partitions and nodes and write a queue file for them.

Three read-only commands, run through the same transport harvester would use (local or SSH):
``scontrol show partition --oneliner``, ``scontrol show node --oneliner`` and ``sinfo --version``. Each partition
that is UP becomes one queue: one pilot per whole node (the smallest node of the partition), the partition's
MaxTime as walltime (the pilot's lifetime 10 minutes less), and the transport that reached it. The result is checked
with :mod:`queueconfig` before it is printed, so it always lints clean; queues start ``offline`` until reviewed.
"""
import re

import yaml

from queueconfig import ConfigError, loads

UNLIMITED_S = 86400  # walltime used for a partition without MaxTime
MARGIN_S = 600  # the pilot's lifetime stays this far below the walltime (stage-out, final report)
_PAIR = re.compile(r"(\S+?)=(\S*)")


class DiscoveryError(Exception):
    """The login node did not answer the way a Slurm login node does."""


def records(text):
    """``scontrol show ... --oneliner`` output as one dict per line (``Key=Value`` pairs)."""
    return [dict(_PAIR.findall(line)) for line in text.splitlines() if "=" in line]


def seconds(limit):
    """A Slurm time limit (``UNLIMITED``, ``MM``, ``HH:MM:SS``, ``D-HH:MM:SS``) in seconds; None when unlimited."""
    if not limit or limit in ("UNLIMITED", "INFINITE", "NONE", "n/a"):
        return None
    days, _, rest = limit.rpartition("-") if "-" in limit else ("0", "", limit)
    parts = [int(p) for p in rest.split(":")]
    if len(parts) == 1:
        parts = [0, parts[0], 0]  # minutes only
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, secs = parts[-3:]
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + secs


def queue_name(prefix, partition):
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{prefix}{partition}")
    return name if name[:1].isalnum() else f"Q{name}"


def queues(partitions, nodes, transport_section, prefix="", workdir=None):
    """The queue entries (name -> dict) for the partitions that are UP."""
    by_name = {node.get("NodeName"): node for node in nodes}
    result = {}
    for part in partitions:
        name = part.get("PartitionName")
        if not name or part.get("State") != "UP":
            continue
        members = [by_name[n] for n in by_name if n and name in (by_name[n].get("Partitions") or "").split(",")]
        cores = min((int(n["CPUTot"]) for n in members if n.get("CPUTot", "").isdigit()), default=1)
        memory = min((int(n["RealMemory"]) for n in members if n.get("RealMemory", "").isdigit()), default=2000)
        limit = seconds(part.get("MaxTime"))
        walltime = min(limit, UNLIMITED_S + MARGIN_S) if limit else UNLIMITED_S + MARGIN_S
        lifetime = max(60, walltime - min(MARGIN_S, walltime // 10))
        transport = dict(transport_section)
        if workdir:
            transport["workdir"] = workdir
        entry = {
            "description": (f"Slurm partition {name}: {len(members)} nodes of {cores} cores and {memory} MB, "
                            f"MaxTime {part.get('MaxTime', '?')} (discovered; review, then set status online)"),
            "status": "offline",
            "resources": {"corecount": max(1, cores), "maxrss": max(1, memory), "maxtime": lifetime},
            "limits": {"maxWorkers": max(1, min(len(members) or 1, 10))},
            "batch": {"system": "slurm", "partition": name, **({"walltime": walltime} if limit else {})},
            "transport": transport,
            "pilot": {"lifetime": lifetime},
        }
        result[queue_name(prefix, name)] = entry
    return result


def discover(transport, transport_section, prefix="", workdir=None, timeout=120):
    """The queue file text for the Slurm that ``transport`` reaches.

    Raises:
        DiscoveryError: a command failed, no partition is UP, or the result does not validate.
    """
    outputs = []
    for argv in (["sinfo", "--version"], ["scontrol", "show", "partition", "--oneliner"],
                 ["scontrol", "show", "node", "--oneliner"]):
        result = transport.run(argv, timeout=timeout)
        if not result.ok:
            raise DiscoveryError(f"cannot read the Slurm configuration: {result.describe()}")
        outputs.append(result.stdout)
    found = queues(records(outputs[1]), records(outputs[2]), transport_section, prefix, workdir)
    if not found:
        raise DiscoveryError("no Slurm partition is UP on that host:\n" + outputs[1])
    text = (f"# Discovered from {outputs[0].strip()} by 'harvester discover'; every queue starts offline.\n"
            + yaml.safe_dump({"queues": found}, sort_keys=False, width=120))
    try:
        config = loads(text, "discovered.yaml")
    except ConfigError as exc:  # our own output must be valid: say so rather than print a broken file
        raise DiscoveryError("the discovered configuration does not validate:\n" + "\n".join(exc.errors)) from None
    if config.warnings:
        raise DiscoveryError("the discovered configuration has warnings:\n" + "\n".join(config.warnings))
    return text
