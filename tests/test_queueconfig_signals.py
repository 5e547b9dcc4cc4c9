"""queueconfig/signals.py: handlers that only record, a wait that ends when a signal arrives, and a stop repeated
while the process exits that leaves its exit code alone. Each case runs in a subprocess of its own (signal
handlers are the whole process's), with a time limit so a hang fails."""
import subprocess
import sys
import textwrap


def run(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60)


def test_stops_and_hangups_are_recorded_and_wake_the_waiting_thread():
    proc = run("""
        import os, signal, threading
        from queueconfig.signals import SignalInbox

        inbox = SignalInbox()
        assert inbox.install()
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGHUP)).start()
        inbox.wait(600)  # from another thread's kill: the wakeup byte ends the sleep
        assert inbox.take_hangup() and not inbox.take_hangup() and inbox.stop_signum is None
        stop = threading.Event()
        with stop._cond:  # the lock a handler that set an Event would take: held by this very thread
            for signum in (signal.SIGHUP, signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
                signal.raise_signal(signum)
        assert inbox.take_hangup() and not inbox.take_hangup()
        assert inbox.stop_name == "SIGINT"  # the first stop counts
        inbox.wait(600)  # a stop recorded before the sleep: returns at once
        print("ok")
    """)
    assert proc.returncode == 0 and proc.stdout == "ok\n", proc.stderr


def test_a_stop_repeated_after_the_owner_acted_keeps_the_exit_code():
    """Python puts the default action back while the interpreter exits: a SIGTERM then killed the process with
    the signal (status -15) after its 'stopped' line, unless the inbox ignores stops once the owner acted."""
    proc = run("""
        import os, signal, sys
        from queueconfig.signals import SignalInbox

        inbox = SignalInbox()
        inbox.install()
        os.kill(os.getpid(), signal.SIGTERM)
        inbox.wait(600)
        assert inbox.stop_signum == signal.SIGTERM
        inbox.ignore_further()


        class RepeatedStop:
            def __del__(self):  # runs as the module is torn down, after the default actions are back
                os.kill(os.getpid(), signal.SIGTERM)


        late = RepeatedStop()
        sys.exit(3)
    """)
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
