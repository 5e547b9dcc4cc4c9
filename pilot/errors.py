"""Pilot error codes (pilot3's numbering, which PanDA servers and monitors expect) and the shell exit codes.

Only the codes this pilot raises are listed. ``shell_exit_code`` maps a pilot-level code to the batch job's exit
status the way pilot3 does, so harvester can map it back.
"""
import signal

GENERALERROR = 1008
NOLOCALSPACE = 1098
STAGEINFAILED = 1099
USERDIRTOOLARGE = 1104
STDOUTTOOBIG = 1106
QUEUEDATA = 1116
QUEUEDATANOTOK = 1117
STAGEOUTFAILED = 1137
PANDAKILL = 1144
GETMD5MISMATCH = 1145
TRFDOWNLOADFAILURE = 1149
LOOPINGJOB = 1150
STAGEINTIMEOUT = 1151
STAGEOUTTIMEOUT = 1152
NOPROXY = 1163
MISSINGOUTPUTFILE = 1165
SIZETOOLARGE = 1168
PUTADMISMATCH = 1172
LFNTOOLONG = 1190
MKDIR = 1199
KILLSIGNAL = 1200
SIGTERM = 1201
SIGQUIT = 1202
SIGSEGV = 1203
SIGXCPU = 1204
SIGBUS = 1206
SIGUSR1 = 1207
SIGINT = 1208
REACHEDMAXTIME = 1213
PAYLOADEXCEEDMAXMEM = 1235
UNKNOWNEXCEPTION = 1301
PAYLOADEXECUTIONFAILURE = 1305
COMMUNICATIONFAILURE = 1318
INTERNALPILOTPROBLEM = 1319
LOGFILECREATIONFAILURE = 1320
UNKNOWNCOPYTOOL = 1323
MISSINGINPUTFILE = 1331
TRANSFORMNOTFOUND = 1346
UNRECOGNIZEDTRFARGUMENTS = 1349
EMPTYOUTPUTFILE = 1350
PANDAQUEUENOTACTIVE = 1359
BADOUTPUTFILENAME = 1371
NOJOBSINPANDA = 1385
SITEOFFLINE = -1

MESSAGES = {
    GENERALERROR: "General pilot error, consult batch log",
    NOLOCALSPACE: "Not enough local space",
    STAGEINFAILED: "Failed to stage-in file",
    USERDIRTOOLARGE: "User work directory too large",
    STDOUTTOOBIG: "Payload log or stdout file too big",
    QUEUEDATA: "Pilot could not download queuedata",
    QUEUEDATANOTOK: "Pilot found non-valid queuedata",
    STAGEOUTFAILED: "Failed to stage-out file",
    PANDAKILL: "This job was killed by panda server",
    GETMD5MISMATCH: "Checksum mismatch on input file",
    TRFDOWNLOADFAILURE: "Transform could not be downloaded",
    LOOPINGJOB: "Looping job killed by pilot",
    STAGEINTIMEOUT: "File transfer timed out during stage-in",
    STAGEOUTTIMEOUT: "File transfer timed out during stage-out",
    NOPROXY: "Token not valid",
    MISSINGOUTPUTFILE: "Local output file is missing",
    SIZETOOLARGE: "Total file size too large",
    PUTADMISMATCH: "adler32 mismatch on output file",
    LFNTOOLONG: "LFN too long (exceeding limit of 255 characters)",
    MKDIR: "Failed to create directory",
    KILLSIGNAL: "Job terminated by unknown kill signal",
    SIGTERM: "Job killed by signal: SIGTERM",
    SIGQUIT: "Job killed by signal: SIGQUIT",
    SIGSEGV: "Job killed by signal: SIGSEGV",
    SIGXCPU: "Job killed by signal: SIGXCPU",
    SIGBUS: "Job killed by signal: SIGBUS",
    SIGUSR1: "Job killed by signal: SIGUSR1",
    SIGINT: "Job killed by signal: SIGINT",
    REACHEDMAXTIME: "Reached maximum time limit",
    PAYLOADEXCEEDMAXMEM: "Payload exceeded maximum allowed memory",
    UNKNOWNEXCEPTION: "An unknown pilot exception has occurred",
    PAYLOADEXECUTIONFAILURE: "Failed to execute payload",
    COMMUNICATIONFAILURE: "Failed to communicate with server",
    INTERNALPILOTPROBLEM: "An internal Pilot problem has occurred (consult Pilot log)",
    LOGFILECREATIONFAILURE: "Failed during creation of log file",
    UNKNOWNCOPYTOOL: "Unknown copy tool",
    MISSINGINPUTFILE: "Input file is missing",
    TRANSFORMNOTFOUND: "Transform not found",
    UNRECOGNIZEDTRFARGUMENTS: "Unrecognized transform arguments",
    EMPTYOUTPUTFILE: "Empty output file detected",
    PANDAQUEUENOTACTIVE: "PanDA queue is not active",
    BADOUTPUTFILENAME: "Output file name contains illegal characters",
    NOJOBSINPANDA: "No jobs in PanDA",
    SITEOFFLINE: "Site offline",
}

# The signals the pilot catches, and the error code each one gives the job it kills.
SIGNAL_CODES = {
    signal.SIGTERM: SIGTERM, signal.SIGQUIT: SIGQUIT, signal.SIGSEGV: SIGSEGV, signal.SIGXCPU: SIGXCPU,
    signal.SIGBUS: SIGBUS, signal.SIGUSR1: SIGUSR1, signal.SIGINT: SIGINT,
}

# pilot error code -> shell exit code of the pilot process (pilot3's table; 0 is success, anything unmapped is 1).
SHELL_EXIT_CODES = {
    SITEOFFLINE: 64, GENERALERROR: 65, MKDIR: 66, NOPROXY: 68, NOLOCALSPACE: 69, UNKNOWNEXCEPTION: 70,
    QUEUEDATA: 71, QUEUEDATANOTOK: 72, MISSINGINPUTFILE: 77, PANDAQUEUENOTACTIVE: 78, COMMUNICATIONFAILURE: 79,
    REACHEDMAXTIME: 81, NOJOBSINPANDA: 82, KILLSIGNAL: 137, SIGTERM: 143, SIGQUIT: 131, SIGSEGV: 139,
    SIGXCPU: 152, SIGUSR1: 138, SIGINT: 130, SIGBUS: 135,
}


class PilotError(Exception):
    """A failure with a pilot error code; ``diag`` is the one-line diagnostic sent to the server."""

    def __init__(self, code, diag=None):
        self.code = code
        self.diag = diag or MESSAGES.get(code, f"pilot error {code}")
        super().__init__(f"{code}: {self.diag}")


class ColdShutdown(BaseException):
    """Raised by the second stop signal: abandon everything except spooling the final report."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def signal_code(signum):
    """The job error code for a kill caused by signal ``signum``."""
    return SIGNAL_CODES.get(signum, KILLSIGNAL)


def shell_exit_code(code):
    """The pilot's process exit status for pilot-level error ``code`` (0 for success)."""
    if not code:
        return 0
    return SHELL_EXIT_CODES.get(code, 1)


def describe(code):
    """The standard message of ``code``."""
    return MESSAGES.get(code, f"pilot error {code}")
