"""queueconfig.ConfigReloader: a good edit switches the version, a broken edit keeps the old one."""
import logging
import os

import pytest

import queueconfig
from queueconfig import ConfigReloader

GOOD = "version: 1\nqueues:\n  Q: {limits: {maxWorkers: 4}}\n"
BETTER = "version: 1\nqueues:\n  Q: {limits: {maxWorkers: 8}}\n  R: {}\n"
BROKEN = "version: 1\nqueues:\n  Q: {limits: {maxWorker: 8}, batch: {system: sge}}\n"


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, new, old):
        self.calls.append((new, old))


def edit(path, text, mtime):
    """Write ``text`` and give the file an explicit modification time (no dependence on clock granularity)."""
    path.write_text(text)
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))


@pytest.fixture
def setup(tmp_path):
    path = tmp_path / "queues.yaml"
    edit(path, GOOD, 1000)
    recorder = Recorder()
    return path, recorder, ConfigReloader(path, recorder)


def test_first_check_loads_and_reports(setup):
    path, recorder, reloader = setup
    assert reloader.current is None
    assert reloader.check() is True
    (new, old), = recorder.calls
    assert old is None and new is reloader.current and new["Q"].limits.maxWorkers == 4
    assert reloader.check() is False and len(recorder.calls) == 1


@pytest.fixture
def loaded(setup):
    """The setup after the first check: (path, recorder, reloader, first version)."""
    path, recorder, reloader = setup
    reloader.check()
    return path, recorder, reloader, reloader.current


def test_good_edit_switches_version(loaded, caplog):
    path, recorder, reloader, first = loaded
    edit(path, BETTER, 2000)
    with caplog.at_level(logging.INFO, logger="queueconfig"):
        assert reloader.check() is True
    new, old = recorder.calls[-1]
    assert old is first and new.version_id != first.version_id and sorted(new.queues) == ["Q", "R"]
    assert f"version {new.version_id} in force (2 queues, was {first.version_id})" in caplog.text


def test_broken_edit_keeps_the_old_version_and_logs_all_errors_once(loaded, caplog):
    path, recorder, reloader, good = loaded
    edit(path, BROKEN, 2000)
    with caplog.at_level(logging.ERROR, logger="queueconfig"):
        assert reloader.check() is False
    assert reloader.current is good and len(recorder.calls) == 1
    assert len(reloader.last_errors) == 2
    assert f"edit refused (2 errors), keeping version {good.version_id}" in caplog.text
    assert "did you mean 'maxWorkers'?" in caplog.text and "did you mean" in reloader.last_errors[0]
    caplog.clear()
    assert reloader.check() is False and caplog.text == ""  # the same broken file is not reported again
    edit(path, BETTER, 3000)
    assert reloader.check() is True and reloader.last_errors == []
    assert recorder.calls[-1][1] is good


def test_rewriting_the_same_content_is_no_new_version(loaded):
    path, recorder, reloader, _ = loaded
    edit(path, GOOD, 2000)
    assert reloader.check() is False and len(recorder.calls) == 1


def test_request_reloads_even_without_a_new_mtime(loaded):
    path, recorder, reloader, _ = loaded
    edit(path, GOOD.replace("4", "5"), 1000)  # same size, same mtime, same inode: looks unchanged
    assert reloader.check() is False
    reloader.request()  # what a SIGHUP handler does
    assert reloader.check() is True and reloader.current["Q"].limits.maxWorkers == 5
    assert reloader.check(force=True) is False  # forced, but the same content


def test_initial_version_is_not_reported_again(tmp_path):
    path = tmp_path / "queues.yaml"
    edit(path, GOOD, 1000)
    recorder = Recorder()
    reloader = ConfigReloader(path, recorder, initial=queueconfig.load(path))
    assert reloader.check() is False and recorder.calls == []
    edit(path, BETTER, 2000)
    assert reloader.check() is True and len(recorder.calls) == 1


def test_a_vanished_file_keeps_the_version(loaded, caplog):
    path, recorder, reloader, good = loaded
    path.unlink()
    with caplog.at_level(logging.ERROR, logger="queueconfig"):
        assert reloader.check() is False
        assert reloader.check() is False
    assert reloader.current is good and caplog.text.count("cannot read") == 1
    edit(path, BETTER, 2000)
    assert reloader.check() is True


def test_a_failing_callback_leaves_the_old_version_and_is_retried(setup):
    path, _, _ = setup
    attempts = []

    def flaky(new, old):
        attempts.append(new.version_id)
        if len(attempts) == 1:
            raise RuntimeError("database busy")

    reloader = ConfigReloader(path, flaky)
    with pytest.raises(RuntimeError):
        reloader.check()
    assert reloader.current is None
    assert reloader.check() is True and len(attempts) == 2 and reloader.current is not None


def test_warnings_of_a_new_version_are_logged(tmp_path, caplog):
    path = tmp_path / "queues.yaml"
    edit(path, "queues:\n  Q: {limits: {nQueueLimitJob: 2}}\n", 1000)
    with caplog.at_level(logging.WARNING, logger="queueconfig"):
        ConfigReloader(path).check()
    assert "limits.nQueueLimitJob: ignored in mode pull" in caplog.text
