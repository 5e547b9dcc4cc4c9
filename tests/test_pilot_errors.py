"""Error codes and shell exit codes: pilot3's numbers, which harvester maps back."""
import signal

from pilot import errors


def test_shell_exit_codes_follow_pilot3():
    assert errors.shell_exit_code(0) == 0
    assert errors.shell_exit_code(errors.NOJOBSINPANDA) == 82
    assert errors.shell_exit_code(errors.COMMUNICATIONFAILURE) == 79
    assert errors.shell_exit_code(errors.REACHEDMAXTIME) == 81
    assert errors.shell_exit_code(errors.NOLOCALSPACE) == 69
    assert errors.shell_exit_code(errors.SIGTERM) == 143
    assert errors.shell_exit_code(errors.SIGINT) == 130
    assert errors.shell_exit_code(errors.LOOPINGJOB) == 1  # a job error is not a pilot exit reason


def test_signal_codes():
    assert errors.signal_code(signal.SIGTERM) == 1201
    assert errors.signal_code(signal.SIGUSR1) == 1207
    assert errors.signal_code(signal.SIGXCPU) == 1204
    assert errors.signal_code(signal.SIGHUP) == errors.KILLSIGNAL


def test_pilot_error_carries_code_and_standard_message():
    exc = errors.PilotError(errors.LOOPINGJOB)
    assert exc.code == 1150 and exc.diag == "Looping job killed by pilot"
    assert errors.PilotError(1150, "custom").diag == "custom"
