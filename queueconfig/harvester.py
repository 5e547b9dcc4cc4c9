"""Mapping a PanDA Harvester ``panda_queueconfig.json`` to our format.

Each Harvester entry (queue or template) becomes one entry of ours, so templates survive ``queueconfig convert``.
Keys that mean something here are moved to our key (the error messages still name the Harvester key); keys that
mean nothing here are listed in one warning per queue, and keys Harvester itself does not know (often typos,
which Harvester silently accepts) in another, with a suggestion. Nothing is dropped without a word.
"""
import difflib

from queueconfig.fields import name as check_name
from queueconfig.parsing import Entry
from queueconfig.schema import Limits, ordered

_LIMIT_KEYS = [key for key in Limits.model_fields if key.startswith(("max", "nQueue"))]
_TOP = {"queueStatus": ("status",), "prodSourceLabel": ("prodSourceLabels",), "mapType": ("mapType",),
        "siteName": ("site",), "templateQueueName": ("template",), "isTemplateQueue": ("is_template",),
        **{key: ("limits", key) for key in _LIMIT_KEYS}}
_IGNORED_TOP = {"useJobLateBinding", "truePilot", "noHeartbeat", "runMode", "resourceType", "jobType",
                "getJobCriteria", "ddmEndpointIn", "allowJobMixture", "prefetchEvents", "zipPerMB",
                "initEventsMultipler", "walltimeLimit", "prodSourceLabelRandomWeightsPermille", "queueName",
                "pandaQueueName", "uniqueName", "configID", "maxNewWorkers"}
_IGNORED_SECTIONS = {"preparator", "stager", "zipper", "throttler", "extractor", "aux_preparator", "credmanager"}
_PLUGIN_SECTIONS = {"submitter", "monitor", "sweeper", "messenger", "workerMaker", "common"} | _IGNORED_SECTIONS
_SYSTEMS = (("htcondor", "htcondor"), ("slurm", "slurm"), ("pbs", "pbs"), ("lsf", "lsf"), ("dummy", "local"))
_SUBMITTER_KEYS = {"nCore": ("resources", "corecount"), "partition": ("batch", "partition"),
                   "localQueueName": ("batch", "partition"), "account": ("batch", "account"),
                   "qos": ("batch", "qos"), "condorSchedd": ("batch", "schedd"), "condorPool": ("batch", "pool")}
_HERDER_KEYS = {"remoteHost": ("transport", "host"), "remotePort": ("transport", "port"),
                "sshUserName": ("transport", "user"), "privateKey": ("transport", "key_file"),
                "jumpHost": ("transport", "jump_host"), "jumpPort": ("transport", "jump_port")}
_KNOWN = set(_TOP) | _IGNORED_TOP | _PLUGIN_SECTIONS


def to_entries(document, source):
    """Map a parsed Harvester file.

    Args:
        document: queue name -> Harvester attributes.
        source: the file name, for messages.

    Returns:
        ``(entries, errors, warnings)``; entries are :class:`queueconfig.parsing.Entry` in our format, errors
        ``(queue name, message)`` pairs.
    """
    entries, errors, warnings = [], [], []
    for name, attributes in document.items():
        try:
            check_name(name)
        except ValueError as exc:
            errors.append((str(name), f"{source}: queue {name!r}: invalid queue name: {exc}"))
            continue
        mapper = _EntryMapper(name, attributes)
        entries.append(mapper.entry)
        errors.extend((name, f"{source}: queue {name}: {text}") for text in mapper.errors)
        warnings.extend(f"{source}: queue {name}: {text}" for text in mapper.summary())
    _default_map_type(entries, document, source, warnings)
    return entries, errors, warnings


def system_of(plugin):
    """Our batch system for a Harvester plugin section (by its module and class name), or None."""
    text = f"{plugin.get('module', '')}.{plugin.get('name', '')}".lower()
    return next((ours for marker, ours in _SYSTEMS if marker in text), None)


class _EntryMapper:
    """Maps one Harvester entry; collects the entry, errors and the ignored and unknown keys."""

    def __init__(self, name, attributes):
        self.raw, self.keymap, self.errors, self.ignored, self.unknown = {}, {}, [], [], []
        self.entry = Entry(name, self.raw, self.keymap, line_prefix=(name,))
        is_template = attributes.get("isTemplateQueue") is True or name.endswith("_TEMPLATE")
        for key in sorted(attributes, key=lambda k: k != "submitter"):  # the submitter names the batch system
            self._top(key, attributes[key], is_template)
        if is_template:
            self._put(("is_template",), True, ("isTemplateQueue",))
        if "prodSourceLabel" not in attributes and (is_template or "templateQueueName" not in attributes):
            self._put(("prodSourceLabels",), ["managed"], ("prodSourceLabel",))  # Harvester's default
        tidy = ordered(self.raw)
        self.raw.clear()
        self.raw.update(tidy)

    def _put(self, path, value, written):
        node = self.raw
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        self.keymap[path] = written

    def _top(self, key, value, is_template):
        if key == "templateQueueName" and is_template:
            self.ignored.append(key)  # Harvester drops it too: a template has no template
        elif key == "queueStatus":
            self._put(("status",), value.lower() if isinstance(value, str) else value, (key,))
        elif key == "prodSourceLabel":
            labels = ["managed", "user"] if value == "unified" else [value]
            self._put(("prodSourceLabels",), labels, (key,))
        elif key == "mapType":
            self._put(("mapType",), value, (key,))
            if value in ("NoJob", "OneToOne", "ManyToOne"):
                self._put(("mode",), "pull" if value == "NoJob" else "push", (key,))
        elif key in _TOP:
            self._put(_TOP[key], value, (key,))
        elif isinstance(value, dict) and "herder" in str(value.get("module", "")).lower():
            self._herder(key, value)
        elif key in _PLUGIN_SECTIONS and isinstance(value, dict):
            self._plugin(key, value)
        elif key in _IGNORED_TOP or (isinstance(value, dict) and "module" in value):
            self.ignored.append(key)
        else:
            self.unknown.append(key)

    def _plugin(self, section, plugin):
        if section in _IGNORED_SECTIONS:
            self.ignored.append(section)
            return
        if section in ("submitter", "monitor", "sweeper") and ("module" in plugin or "name" in plugin):
            self._system(section, plugin)
        for key, value in plugin.items():
            if key in ("module", "name", "middleware"):
                continue
            if section in ("submitter", "common") and key == "nCore" and "nCorePerNode" in plugin:
                continue  # with nCorePerNode: nodes per worker (_per_node)
            if section in ("submitter", "common") and key in _SUBMITTER_KEYS:
                self._put(_SUBMITTER_KEYS[key], value, (section, key))
            elif section in ("submitter", "common") and key == "nCorePerNode":
                self._per_node(section, plugin)
            elif section == "messenger" and key == "accessPoint" and isinstance(value, str):
                self._put(("transport", "workdir"), value.split("${")[0].rstrip("/") or "/", (section, key))
            elif section == "workerMaker" and key == "nJobsPerWorker":
                self._put(("jobsPerWorker",), value, (section, key))
            else:
                self.ignored.append(f"{section}.{key}")

    def _per_node(self, section, plugin):
        """nCorePerNode: the cores of a node; with nCore (the cores of a worker) above it, a worker of
        ceil(nCore / nCorePerNode) whole nodes, one pilot on each (as Harvester's Slurm submitter sizes it)."""
        per_node, total = plugin["nCorePerNode"], plugin.get("nCore")
        self._put(("resources", "cores_per_node"), per_node, (section, "nCorePerNode"))
        whole = all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (per_node, total))
        if whole and total > per_node:
            self._put(("resources", "corecount"), per_node, (section, "nCorePerNode"))
            self._put(("resources", "nodes_per_worker"), -(-total // per_node), (section, "nCore"))
        else:
            self._put(("resources", "corecount"), per_node if total is None else total,
                      (section, "nCorePerNode" if total is None else "nCore"))

    def _system(self, section, plugin):
        system = system_of(plugin)
        label = f"{plugin.get('module', '?')}.{plugin.get('name', '?')}"
        if system is None:
            if section == "submitter":
                self.errors.append(f"submitter: {label} has no minipanda batch system; supported are the "
                                   "htcondor, slurm, pbs and lsf submitters (and the dummy ones, as local)")
            else:
                self.ignored.append(f"{section}.module")
            return
        if section == "submitter":
            self._put(("batch", "system"), system, (section, "module"))
        elif self.raw.get("batch", {}).get("system", system) != system:
            self.errors.append(f"{section}: {label} is for {system} but the submitter is for "
                               f"{self.raw['batch']['system']}; minipanda pairs them by batch.system")

    def _herder(self, section, plugin):
        self._put(("transport", "type"), "ssh", (section, "module"))
        for key, value in plugin.items():
            if key in _HERDER_KEYS:
                self._put(_HERDER_KEYS[key], value, (section, key))
            elif key in ("sshPassword", "passPhrase"):
                self.ignored.append(f"{section}.{key} (passwords are not supported: use a key without one, "
                                    "or an ssh agent)")
            elif key not in ("module", "name"):
                self.ignored.append(f"{section}.{key}")

    def summary(self):
        """Warnings about the keys that were not mapped."""
        notes = []
        if self.ignored:
            notes.append("ignored Harvester settings that have no meaning in minipanda: " + ", ".join(self.ignored))
        if self.unknown:
            hints = []
            for key in self.unknown:
                close = difflib.get_close_matches(key, sorted(_KNOWN), n=1, cutoff=0.7)
                hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
            notes.append("unknown keys, ignored (Harvester would ignore them too): " + ", ".join(hints))
        return notes


def _default_map_type(entries, document, source, warnings):
    """Give queues whose whole template chain lacks mapType Harvester's default, OneToOne (push)."""
    for entry in entries:
        if entry.raw.get("is_template"):
            continue
        name, seen = entry.name, set()
        while isinstance(name, str) and name in document and name not in seen:
            seen.add(name)
            if "mapType" in document[name]:
                break
            name = document[name].get("templateQueueName")
        else:
            tidy = ordered({**entry.raw, "mode": "push", "mapType": "OneToOne"})
            entry.raw.clear()
            entry.raw.update(tidy)
            warnings.append(f"{source}: queue {entry.name}: mapType not set; Harvester's default OneToOne "
                            "(push mode) is used")
