"""The zipapp builder: what a build holds, how it is stored, and the digest that names the sources it was built from
(harvester keeps builds by it: tests/test_harvester_zipcache.py)."""
import importlib.util
import shutil
import zipfile

from pilot import zipapp

pytest_plugins = ["test_pilot_harness"]  # the zipapp_path fixture (``pilot build-zipapp``)


def test_bytecode_is_stored_sources_compressed_and_the_comment_is_the_digest(zipapp_path):
    with zipfile.ZipFile(zipapp_path) as archive:
        infos = archive.infolist()
        assert archive.comment.decode() == zipapp.digest()
        magic = archive.read("pilot/worker.pyc")[:4]
    pyc = [i for i in infos if i.filename.endswith(".pyc")]
    py = [i for i in infos if i.filename.endswith(".py")]
    assert len(pyc) == len(py) - 1  # every module has its bytecode (the __main__ stub aside)
    # read by every pilot start: inflating them cost ~5 ms of its CPU
    assert {i.compress_type for i in pyc} == {zipfile.ZIP_STORED}
    assert {i.compress_type for i in py} == {zipfile.ZIP_DEFLATED}
    assert magic == importlib.util.MAGIC_NUMBER  # this interpreter's bytecode
    assert zipapp.archive_digest(zipapp_path) == zipapp.digest()


def test_the_digest_covers_every_packed_file_and_the_interpreter_line(tmp_path):
    root = tmp_path / "pilot"
    shutil.copytree(zipapp.package_dir(), root, ignore=shutil.ignore_patterns("__pycache__"))
    base = zipapp.digest(str(root))
    assert zipapp.digest(str(root), "/usr/bin/python3") != base
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"x")
    (root / "stray.pyc").write_bytes(b"x")
    assert zipapp.digest(str(root)) == base  # build() leaves bytecode out and compiles its own
    seen = {base}
    for change in (lambda: (root / "cli.py").write_bytes((root / "cli.py").read_bytes() + b"#"),
                   lambda: (root / "cli.py").rename(root / "cli2.py"),
                   lambda: (root / "data.json").write_text("{}"),
                   lambda: (root / "sub").mkdir() or (root / "sub" / "x.py").write_text("")):
        change()
        digest = zipapp.digest(str(root))
        assert digest not in seen
        seen.add(digest)


def test_archive_digest_refuses_what_is_not_a_sound_build(tmp_path, zipapp_path):
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("pilot/__init__.py", "")
    assert zipapp.archive_digest(str(plain)) is None  # no digest in its comment
    (tmp_path / "text.pyz").write_text("not a zip")
    assert zipapp.archive_digest(str(tmp_path / "text.pyz")) is None
    assert zipapp.archive_digest(str(tmp_path / "missing.pyz")) is None
