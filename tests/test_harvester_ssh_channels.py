"""harvester/transport/ssh_channels.py: a command is an argv list quoted once for the remote login shell (the
environment's names checked, the working directory absolute), the wrapper's pid line kept apart from the command's
stderr, and a helper's verdict on a whole-file transfer taken only from a command that ended normally."""
import shlex

import pytest

from harvester.transport import CommandResult, TransportError
from harvester.transport.ssh_channels import command_line, split_pid, trailer


def test_commands_are_argv_lists_quoted_once_for_ssh():
    line = command_line(["sbatch", "--parsable", "/w/a b/job.sh"], env={"X": "$(no)"}, cwd="/w/a b")
    words = shlex.split(line)
    assert words[:3] == ["exec", "sh", "-c"] and words[4:] == ["sh", "/w/a b", "X=$(no)", "sbatch", "--parsable",
                                                               "/w/a b/job.sh"]


@pytest.mark.parametrize("name", ["A B", "1X", "X;rm", "", "X=Y"])
def test_environment_names_and_working_directories_are_checked(name):
    with pytest.raises(ValueError, match="not valid"):
        command_line(["true"], env={name: "v"})
    with pytest.raises(TransportError, match="absolute paths only"):
        command_line(["true"], cwd="relative/dir")


def test_the_wrappers_pid_line_is_not_the_commands_stderr():
    assert split_pid("harvester-pid 4711\nwarning: x\n") == (4711, "warning: x\n")
    assert split_pid("harvester-pid junk\nrest") == (None, "rest")
    assert split_pid("no wrapper line\n") == (None, "no wrapper line\n")


def test_a_verdict_counts_only_from_a_command_that_ended_normally():
    verdict = '{"ok": true, "size": 3, "adler32": "024d0127"}'
    assert trailer(CommandResult(0, "", f"noise\n{verdict}\n"), "h")["size"] == 3
    lost = trailer(CommandResult(255, "", verdict, lost=True), "h")
    assert lost["ok"] is False and lost["code"] == "lost" and lost["error"].startswith("ssh h: ")
    assert trailer(CommandResult(-9, "", verdict, True), "h")["ok"] is False  # timed out: no verdict trusted
    assert trailer(CommandResult(1, "", "Traceback ...\nNameError\n"), "h")["code"] is None
