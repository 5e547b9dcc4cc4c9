"""The pilot's start: its work area and log, signals, the payload guard, queuedata, the server or harvester it
talks to (and the outbox replayed), and the jobrun.Context every job runs with.

Part of worker.Pilot (``Pilot.work()`` begins here, then takes jobs, pilot.getjob, and ends in pilot.shutdown).
"""
import logging
import os

from pilot import comm, errors, housekeeping, node, queuedata, usage
from pilot.errors import PilotError
from pilot.guard import Guard
from pilot.handoff import Handoff
from pilot.jobrun import Context
from pilot.outbox import Outbox
from pilot.report import Timing
from pilot.wrapup import WrapUp

log = logging.getLogger("pilot")


class Startup:
    """The start of worker.Pilot (``self`` is the Pilot)."""

    def startup(self):
        opts = self.opts
        self.pilot_dir = os.path.join(opts.workdir, f"PanDA_Pilot-{os.getpid()}_{int(self.started_wall)}")
        try:
            os.makedirs(self.pilot_dir, mode=0o770)
        except OSError as exc:
            raise PilotError(errors.MKDIR, f"cannot create the pilot directory: {exc}") from None
        self.pilot_log = housekeeping.setup_logging(self.pilot_dir, opts.debug, opts.quiet)
        log.info("pilot %s starting on %s: queue %s, work area %s", node.pilot_id(self.started_wall),
                 node.hostname(), opts.queue, opts.workdir)
        self.timing = Timing(os.path.join(self.pilot_dir, "pilot_timing.json"))
        self.timing.mark(0, "PILOT_START_TIME", self.started_wall)
        if self.waker.install(self.stop) and not opts.no_subreaper:
            self.subreaper = node.become_subreaper()
        self.guard = Guard.start()
        self.load_queuedata()
        housekeeping.clean_old_pilot_dirs(opts.workdir, self.pilot_dir, self.qd["pilot_cleanup_age"])
        self.connect()
        self.ctx = self.make_context()
        if self.client is not None and not self.push_mode:
            self.wrapup = WrapUp(self.ctx, flush_after=self.opts.final_batch_wait)

    def load_queuedata(self):
        opts = self.opts
        try:
            if opts.queuedata:
                qd = queuedata.load_file(opts.queuedata, opts.queue)
            elif opts.no_server_updates:
                qd = queuedata.from_environment_dir(opts.harvester_workdir, opts.queue) or queuedata.QueueData(
                    {}, opts.queue)
            else:
                client = comm.ServerClient(opts.url, opts.token_file, 60)
                text = client.get_text(f"/cache/schedconfig/{opts.queue}.all.json")
                qd = queuedata.parse(text, opts.queue, opts.url)
        except queuedata.QueueDataError as exc:
            raise PilotError(exc.code, str(exc)) from None
        except comm.CommError as exc:
            raise PilotError(errors.QUEUEDATA, f"cannot get queuedata: {exc}") from None
        queuedata.save(qd, os.path.join(self.pilot_dir, "queuedata.json"))
        if qd["status"].lower() == "offline":
            raise PilotError(errors.SITEOFFLINE, f"queue {opts.queue} is offline")
        if qd["state"] and qd["state"].upper() != "ACTIVE":
            raise PilotError(errors.PANDAQUEUENOTACTIVE, f"queue {opts.queue} state is {qd['state']}")
        self.qd = qd
        lifetime = opts.lifetime or qd["pilot_lifetime"]
        lifetime = min(lifetime, qd["maxtime"]) if qd["maxtime"] else lifetime
        self.deadline = self.started + lifetime

    def connect(self):
        opts, qd = self.opts, self.qd
        self.file_mode = bool(opts.no_server_updates or qd.offline_network)
        self.push_mode = self.file_mode or opts.harvester_submit_mode == "PUSH"
        if opts.harvester_workdir:
            self.handoff = Handoff(opts.harvester_workdir, qd["handoff_files"])
            self.usage = usage.Usage(opts.harvester_workdir, self.started)
        elif self.file_mode:
            raise PilotError(errors.GENERALERROR, "file mode (--no-server-updates) needs --harvester-workdir")
        self.outbox = Outbox(os.path.join(opts.workdir, "outbox"))
        if not self.file_mode:
            self.client = comm.ServerClient(opts.url, opts.token_file, qd["pilot_http_timeout"])
            if os.environ.get("HARVESTER_ID") and os.environ.get("HARVESTER_WORKER_ID"):
                self.harvester_ids = (os.environ["HARVESTER_ID"], os.environ["HARVESTER_WORKER_ID"])
                self.client.worker_status(*self.harvester_ids, "started", opts.queue, node.hostname())
            self.outbox.replay(self.client)

    def make_context(self):
        opts, qd = self.opts, self.qd
        harvester_dir = opts.harvester_workdir or ""
        input_dir = opts.input_dir or qd["input_dir"] or harvester_dir or opts.workdir
        output_dir = opts.output_dir or qd["output_dir"] or harvester_dir or os.path.join(opts.workdir, "outputs")
        identity = {"pilotID": node.pilot_id(self.started_wall), "batchID": opts.batch_id or node.batch_id(),
                    "node": node.hostname(), "siteName": opts.queue}
        return Context(queue=opts.queue, qd=qd, identity=identity, pilot_dir=self.pilot_dir, input_dir=input_dir,
                       output_dir=output_dir, stop=self.stop, waker=self.waker, timing=self.timing,
                       client=self.client if not self.file_mode else None, handoff=self.handoff,
                       file_mode=self.file_mode, outbox=self.outbox,
                       pilot_deadline=self.deadline - qd["pilot_stageout_reserve"],
                       adopter_pid=os.getpid() if self.subreaper else None, pilot_log=self.pilot_log,
                       cleanup=not opts.no_cleanup, payload_ended=self.fetch_ahead, guard=self.guard,
                       pull=not self.push_mode, payload_running=self.while_payload_runs,
                       answer_due=self.answer_due, answer_came=self.answer_came)
