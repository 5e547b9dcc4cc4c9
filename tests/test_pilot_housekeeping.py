"""Housekeeping: old pilot directories go, everything else stays; the pilot log."""
import logging
import os

from pilot import housekeeping


def test_old_pilot_dirs_removed_only(tmp_path):
    now = 100000.0
    names = ["PanDA_Pilot-1_1", "PanDA_Pilot-2_2", "PanDA_Pilot-3_3", "outbox", "outputs", "PanDA_Pilot-x"]
    for name in names:
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "sub" / "f").write_text("x")
    for name in names:
        for path in (tmp_path / name / "sub" / "f", tmp_path / name / "sub", tmp_path / name):
            os.utime(path, (now - 50000, now - 50000))
    os.utime(tmp_path / "PanDA_Pilot-2_2" / "sub" / "f", (now - 10, now - 10))  # still in use somewhere below
    removed = housekeeping.clean_old_pilot_dirs(str(tmp_path), str(tmp_path / "PanDA_Pilot-3_3"), 43200, now)
    assert removed == [str(tmp_path / "PanDA_Pilot-1_1")]
    assert sorted(os.listdir(tmp_path)) == sorted(n for n in names if n != "PanDA_Pilot-1_1")
    assert housekeeping.clean_old_pilot_dirs(str(tmp_path / "missing"), "", 1) == []


def test_pilot_log_file(tmp_path):
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        path = housekeeping.setup_logging(str(tmp_path), debug=True, quiet=True)
        logging.getLogger("pilot.test").debug("hello log")
        for handler in root.handlers:
            handler.flush()
        assert "hello log" in open(path).read() and path.endswith("pilotlog.txt")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    assert housekeeping.free_space_mb(str(tmp_path)) > 0 and housekeeping.free_space_mb("/no/such") == 0.0
