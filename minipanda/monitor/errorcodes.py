"""What the error codes on a job mean: pilot codes (pilot3's numbering, ``pilotErrorCode``), the server's own
supervisor codes (``supErrorCode``) and payload exit codes (``exeErrorCode``, ``transExitCode``).

The pilot keeps its own table (``pilot/errors.py``, standard library only, shipped alone); this copy holds its
messages plus the pilot3 codes minipanda's pilot never raises but pilot3 does. ``tests/test_monitor_pages.py``
checks that every code of the pilot's table has the same meaning here.
"""
import signal

from minipanda.tasks import watchdog
from minipanda.workers import harvesters

PILOT = {
    1008: "General pilot error, consult batch log",
    1098: "Not enough local space",
    1099: "Failed to stage-in file",
    1104: "User work directory too large",
    1106: "Payload log or stdout file too big",
    1116: "Pilot could not download queuedata",
    1117: "Pilot found non-valid queuedata",
    1137: "Failed to stage-out file",
    1144: "This job was killed by panda server",
    1145: "Checksum mismatch on input file",
    1149: "Transform could not be downloaded",
    1150: "Looping job killed by pilot",
    1151: "File transfer timed out during stage-in",
    1152: "File transfer timed out during stage-out",
    1163: "Token not valid",
    1165: "Local output file is missing",
    1168: "Total file size too large",
    1172: "adler32 mismatch on output file",
    1190: "LFN too long (exceeding limit of 255 characters)",
    1199: "Failed to create directory",
    1200: "Job terminated by unknown kill signal",
    1201: "Job killed by signal: SIGTERM",
    1202: "Job killed by signal: SIGQUIT",
    1203: "Job killed by signal: SIGSEGV",
    1204: "Job killed by signal: SIGXCPU",
    1206: "Job killed by signal: SIGBUS",
    1207: "Job killed by signal: SIGUSR1",
    1208: "Job killed by signal: SIGINT",
    1212: "Payload exceeded maximum allowed memory (RSS)",
    1213: "Reached maximum time limit",
    1235: "Payload exceeded maximum allowed memory",
    1301: "An unknown pilot exception has occurred",
    1305: "Failed to execute payload",
    1318: "Failed to communicate with server",
    1319: "An internal Pilot problem has occurred (consult Pilot log)",
    1320: "Failed during creation of log file",
    1323: "Unknown copy tool",
    1331: "Input file is missing",
    1346: "Transform not found",
    1349: "Unrecognized transform arguments",
    1350: "Empty output file detected",
    1359: "PanDA queue is not active",
    1371: "Output file name contains illegal characters",
    1379: "Job was preempted (SIGTERM on a preemptible node)",
    1385: "No jobs in PanDA",
    -1: "Site offline",
}

SUPERVISOR = {
    watchdog.LOST_HEARTBEAT: "lost heartbeat: the pilot stopped reporting while the job was running",
    watchdog.NO_REPLY: "no reply: the pilot never reported after the job was dispatched",
    watchdog.HOLDING_TOO_LONG: "held too long: the job stayed in holding past the server's limit",
}
# harvester fails the unfinished jobs of a worker that ended without the pilot's final update (pilot code 1008).
WORKER_DIED = harvesters.WORKER_DIED_CODE


def exit_code_meaning(code):
    """A payload exit status in words (128 + n is signal n, as a shell reports it)."""
    if code == 0:
        return "success"
    if code is not None and code < 0:
        return f"killed by signal {_signal_name(-code)}"
    if code is not None and 128 < code < 160:
        return f"killed by signal {_signal_name(code - 128)} (exit status {code})"
    return "the payload failed with this exit status"


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def meaning(source, code):
    """The meaning of ``code`` from ``source`` (pilot, exe, sup, trans), or ''."""
    if code is None:
        return ""
    if source == "pilot":
        return PILOT.get(code, "pilot error (not in pilot3's table)")
    if source == "sup":
        return SUPERVISOR.get(code, "server error")
    if source in ("exe", "trans"):
        return exit_code_meaning(code)
    return ""


def job_errors(job):
    """[{source, field, code, meaning, diag}] of a job's reported errors (non-zero codes or a diag)."""
    out = []
    for source, field, code, diag in (
            ("pilot", "pilotErrorCode", job.pilot_error_code, job.pilot_error_diag),
            ("exe", "exeErrorCode", job.exe_error_code, job.exe_error_diag),
            ("sup", "supErrorCode", job.sup_error_code, job.sup_error_diag),
            ("trans", "transExitCode", job.trans_exit_code, None)):
        if code or diag:
            out.append({"source": source, "field": field, "code": code, "meaning": meaning(source, code),
                        "diag": diag or ""})
    return out
