"""What every agent shares: the queues in force, the server client, the home, settings, plugins and wake-ups."""
import dataclasses
import logging
import os
import threading

from harvester import db, models
from harvester.transport import LocalTransport, TransportError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Settings:
    """Harvester-wide settings (periods in seconds). Every value has a `harvester run` option."""

    adjuster_period: float = 10.0
    submitter_period: float = 10.0
    fetcher_period: float = 10.0
    monitor_period: float = 10.0
    propagator_period: float = 10.0
    sweeper_period: float = 60.0
    commands_period: float = 30.0
    # an agent whose cycles find nothing sleeps twice as long each time, up to this many periods (1: never longer);
    # work made inside harvester wakes its agent at once (harvester.runner)
    idle_factor: float = 4.0
    heartbeat_period: float = 300.0  # harvester -> server heartbeat
    stats_period: float = 300.0  # worker statistics -> server
    lease_s: float = 300.0  # row leases; longer than any agent cycle
    backoff_base_s: float = 10.0  # first wait after a queue's failure; doubles per failure
    backoff_max_s: float = 600.0
    missing_grace_s: float = 600.0  # a batch job the batch system does not list is looked up this long, then failed
    pilot_python: str = ""  # interpreter of the pilot zipapp; default this harvester's own
    server_timeout: float = 30.0


class Context:
    """Shared by the agents of one harvester process.

    Args:
        home: harvester's home directory.
        server: a :class:`harvester.client.ServerClient`.
        settings: :class:`Settings`.
        harvester_id: this harvester's name on the server.
    """

    def __init__(self, home, server, settings, harvester_id, owner=None):
        self.home, self.server, self.settings, self.harvester_id = home, server, settings, harvester_id
        self.scratch_dir = os.path.join(home, "staging")  # files between the server and an access point, in transit
        self.owner = owner or db.owner_id()
        self.queues = {}  # name -> queueconfig Queue (valid ones)
        self.queue_errors = {}  # name -> [messages] (paused queues)
        self.file_errors = []
        self.config_version = None
        self._plugins, self._transports = {}, {}
        self._lock = threading.Lock()
        self.wake = lambda agent: None  # replaced by the runner

    # ---- queues ----------------------------------------------------------------------------------------------
    def set_queues(self, queues, errors, version=None):
        """Put a queue configuration in force; broken queues are paused with their errors."""
        with self._lock:
            changed = {name for name in set(self.queues) | set(queues)
                       if self.queues.get(name) != queues.get(name)}
            self.queues, self.queue_errors, self.config_version = dict(queues), dict(errors), version
            for name in changed:
                self._plugins.pop(name, None)
                self._transports.pop(name, None)
        with models.database.atomic():
            for name in set(queues) | set(errors):
                state = db.queue_state(name)
                text = "; ".join(errors.get(name, []))
                if state.config_error != text:
                    models.QueueState.update(config_error=text).where(models.QueueState.queue == name).execute()
                    if text:
                        log.error("queue %s is paused: its configuration is invalid: %s", name, text)
                    else:
                        log.info("queue %s: configuration valid again", name)

    def live_queues(self):
        """Queues harvester works for now: valid, not templates (offline ones included: their workers are
        still followed, only submission stops)."""
        return dict(self.queues)

    # ---- plugins ---------------------------------------------------------------------------------------------
    def transport(self, queue):
        with self._lock:
            if queue.name not in self._transports:
                self._transports[queue.name] = transport_for(queue)
            return self._transports[queue.name]

    def plugin(self, queue):
        from harvester.batch import plugin_for

        transport = self.transport(queue)
        with self._lock:
            if queue.name not in self._plugins:
                self._plugins[queue.name] = plugin_for(queue, transport, self.spool_dir(queue))
            return self._plugins[queue.name]

    def spool_dir(self, queue):
        return os.path.join(self.workers_dir(queue), ".batch")

    def workers_dir(self, queue):
        return queue.transport.workdir or os.path.join(self.home, "workers", queue.name)

    def access_point(self, queue, worker_id):
        return os.path.join(self.workers_dir(queue), str(worker_id))

    def close(self):
        for transport in self._transports.values():
            try:
                transport.close()
            except Exception:  # closing must not hide the reason we stop
                log.exception("closing a transport failed")


def transport_for(queue):
    """The transport that reaches ``queue``'s submit host.

    Raises:
        TransportError: the queue's transport type is unknown.
    """
    kind = queue.transport.type
    if kind == "local":
        return LocalTransport()
    if kind == "ssh":
        from harvester.transport.ssh import SshTransport  # imports paramiko (with ssh_connection): only when needed

        return SshTransport.for_queue(queue)
    raise TransportError(f"queue {queue.name}: transport.type {kind} is unknown (local or ssh)")
