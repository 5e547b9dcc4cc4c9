"""Shared fixtures: database backends (SQLite file always, PostgreSQL when MINIPANDA_TEST_PG_URL is set, which CI
does), and a real ``minipanda serve`` process on a free loopback port."""
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

IN_CI = os.environ.get("CI") == "true"
# Property-based tests run the example counts they name under CI=true, or with MINIPANDA_TEST_EXAMPLES=full; a
# developer's run of one file runs a fifth of them: seconds, not minutes.
FULL_EXAMPLES = IN_CI or os.environ.get("MINIPANDA_TEST_EXAMPLES") == "full"


def examples(count):
    """The ``max_examples`` of a hypothesis test that names ``count`` (see FULL_EXAMPLES)."""
    return count if FULL_EXAMPLES else max(50, count // 5)


def worker_database(url, worker):
    """Under pytest-xdist (``-n 3``, README.md), each worker process empties and fills a PostgreSQL database of its
    own: ``url``'s database name with the worker's name appended, created on first use (the role needs CREATEDB,
    as .ci/run gives it)."""
    import urllib.parse

    import psycopg2
    from psycopg2 import errors

    parsed = urllib.parse.urlparse(url)
    name = f"{parsed.path.lstrip('/')}_{worker}"
    conn = psycopg2.connect(dbname=parsed.path.lstrip("/"), user=urllib.parse.unquote(parsed.username or ""),
                            password=urllib.parse.unquote(parsed.password or ""), host=parsed.hostname,
                            port=parsed.port)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                try:
                    cur.execute(f'CREATE DATABASE "{name}"')
                except errors.DuplicateDatabase:  # the other worker made it first
                    pass
    finally:
        conn.close()
    return parsed._replace(path="/" + name).geturl()


PG_URL = os.environ.get("MINIPANDA_TEST_PG_URL")
if PG_URL and os.environ.get("PYTEST_XDIST_WORKER"):
    PG_URL = os.environ["MINIPANDA_TEST_PG_URL"] = worker_database(PG_URL, os.environ["PYTEST_XDIST_WORKER"])


# The groups that take longest under the README's test command, longest first: from two runs of the whole suite on
# a busy 2-core machine (bench/README.md, "Test suite") (seconds of each group, summed over its tests: test_harvester_faults 590-650, test_tasks
# 330-760, test_guides 380-670, test_harvester_multinode 100-660, test_readme 130-590, htcondor 400-460, ...). They
# are handed out first: a long group that started last would keep one process busy long after the others ran out
# of work. Every other group follows, in collection order.
LONGEST_FIRST = ("test_harvester_faults.py", "test_tasks.py", "test_guides.py", "test_harvester_multinode.py",
                 "test_readme.py", "htcondor", "test_api_params.py", "test_testbed.py", "test_concurrency.py",
                 "test_harvester_slurm_live.py", "test_retry.py", "test_edge_deployment.py", "test_prun_sandbox.py",
                 "test_server_queues.py", "test_cli_tasks.py", "test_pilot_jobrun.py", "test_retention.py",
                 "test_api_harvester.py", "test_monitor_pages.py", "test_prun.py", "test_pilot_worker.py",
                 "test_api_v1.py", "test_api_legacy.py", "test_filestore.py", "test_brokerage.py",
                 "test_generator.py", "test_harvester_e2e.py")


def pytest_configure(config):
    """Under ``--dist loadgroup``, pytest-xdist hands the groups out in the order of the collection that
    pytest_collection_modifyitems below makes (LONGEST_FIRST), not sorted by their number of tests."""
    if getattr(config.option, "dist", None) == "loadgroup":
        config.option.loadscopereorder = False


def xdist_group_of(item):
    """The pytest-xdist group of a test: its file, or "htcondor" for every test that needs the one HTCondor pool."""
    return "htcondor" if item.get_closest_marker("htcondor") else item.path.name


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist's ``--dist loadgroup`` (README.md's test command) a test file runs whole on one worker,
    in order, as it would alone (module-scoped daemons start once; no other file's test empties its database
    between two of its tests), and the HTCondor tests share one worker and so one pool (a session fixture).
    tests/test_xdist_groups.py checks that the groups reach the scheduler. The longest groups come first."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(xdist_group_of(item)))
    if getattr(config.option, "loadgroup", False):  # an xdist worker of --dist loadgroup (set by pytest-xdist)
        rank = {group: index for index, group in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(xdist_group_of(item), len(rank)))  # stable: file order kept


def backends():
    params = ["sqlite"]
    if PG_URL:
        params.append(pytest.param("postgresql", marks=pytest.mark.postgres))
    elif IN_CI:
        params.append(pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.xfail(
            reason="CI must set MINIPANDA_TEST_PG_URL (see .ci/run)", strict=True, run=False)]))
    return params


def reset_postgres(url):
    """Empty the test database so each test starts from nothing."""
    import peewee
    from minipanda.core.db import make_database

    db = make_database(url)
    assert isinstance(db, peewee.PostgresqlDatabase)
    db.connect()
    db.execute_sql("DROP SCHEMA public CASCADE")
    db.execute_sql("CREATE SCHEMA public")
    db.close()


@pytest.fixture(params=backends())
def db_url(request, tmp_path):
    """A fresh database URL for each backend under test."""
    return fresh_url(request.param, tmp_path)


def fresh_url(backend, directory):
    """An empty database of ``backend`` ("sqlite": a new file in ``directory``; "postgresql": the test database,
    emptied)."""
    if backend == "postgresql":
        reset_postgres(PG_URL)
        return PG_URL
    return "sqlite:///" + str(directory / "minipanda.db")


@pytest.fixture
def database(db_url):
    """The server's models bound in-process to a fresh database."""
    from minipanda.core import schema

    database = schema.open_database(db_url)
    database.connect(reuse_if_open=True)
    yield database
    database.close()


def own_network_namespace():
    """argv prefix that runs a command in a new network namespace with loopback up, or None if not allowed."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return None
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True)
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "netns"] if probe.returncode == 0 else None


def debian_tool(command, package):
    """The path of ``command``; else the test is skipped, or under CI=true fails (.ci/run installs ``package``)."""
    found = shutil.which(command)
    if found is None:
        if IN_CI:
            pytest.fail(f"{command} is missing: .ci/run installs Debian's {package} package")
        pytest.skip(f"needs {command} (Debian's {package} package)")
    return found


def eventually(predicate, timeout=20):
    """The first true value of ``predicate()`` polled for up to ``timeout`` s, else its last (false) value: for
    ``assert eventually(...)`` (never a timing assertion: the limit is only a safety net)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A ``minipanda serve`` process; stopped (only this one) when the test ends.

    It is forked from a process that has imported minipanda already (tests/forkserve.py): the same command in a
    process of its own, without a Python start per test. A subclass with ``forked = False`` runs
    ``python -m minipanda serve`` itself, for the tests of the command's start, signals and exit; so does one whose
    ``argv()`` runs the command on another host (tests/nethosts.py)."""

    forked = True

    def __init__(self, home, db_url, auth="token", threads=16):
        self.home, self.db_url, self.port = str(home), db_url, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.home, "server.log")
        os.makedirs(self.home, exist_ok=True)
        self.auth, self.threads = auth, threads
        self.log = open(self.log_path, "ab")
        argv = self.argv()
        if self.forked and argv[:3] == [sys.executable, "-m", "minipanda"]:  # not when run on another host
            from forkserve import ForkedServe

            self.proc = ForkedServe(argv[3:], self.log_path)
        else:
            self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            self.wait_until_answering()
        except BaseException:  # a server that never came up is still stopped: the fixture's teardown never runs
            self.stop()
            raise
        token_path = os.path.join(self.home, "admin.token")
        self.admin_token = open(token_path).read().strip() if auth == "token" else None

    def wait_until_answering(self, limit=60):
        deadline = time.time() + limit
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.read_log()}")
            try:
                self.ping()
                return
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or a busy machine
                time.sleep(0.1)
        raise RuntimeError(f"server did not answer within {limit} s: " + self.read_log())

    def ping(self):
        """One is_alive request; raises while the server does not answer (a subclass sends it from another host)."""
        requests.get(self.url + "/api/v1/system/is_alive", timeout=5)

    def argv(self):
        """The serve command line; subclasses add options."""
        return [sys.executable, "-m", "minipanda", "serve", "--home", self.home, "--port", str(self.port),
                "--db", self.db_url, "--auth", self.auth, "--threads", str(self.threads)]

    def read_log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def token(self, role, name):
        """A new token in this server's home and database, made as ``minipanda token create`` makes it
        (tests/test_cli.py runs that command) but in this process: a Python start per token costs seconds on a busy
        machine. Only the token model is bound to the server's database, and only for the call."""
        from minipanda.core import auth, db, models

        database = db.make_database(self.db_url)
        with database.bind_ctx([models.Token]), database.connection_context():
            return auth.create_token(auth.load_secret(self.home), name, role)[0]

    def headers(self, token=None, json_reply=True):
        headers = {"Accept": "application/json"} if json_reply else {}
        if token or self.admin_token:
            headers["Authorization"] = f"Bearer {token or self.admin_token}"
        return headers

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class ProcessServer(LiveServer):
    """``python -m minipanda serve`` started as a subprocess of the test."""

    forked = False


@pytest.fixture
def live_server(tmp_path, db_url):
    server = LiveServer(tmp_path / "home", db_url)
    yield server
    server.stop()


@pytest.fixture
def sqlite_server(tmp_path):
    """A live server on SQLite only, for protocol tests that do not depend on the backend."""
    server = LiveServer(tmp_path / "home", "sqlite:///" + str(tmp_path / "home" / "minipanda.db"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def condor_pool():
    """A one-host HTCondor pool for the session's tests (tests/condorhelp.py): skipped without root or its root
    file system, a failure under CI=true."""
    import condorhelp

    condorhelp.require()
    pool = condorhelp.Pool()
    try:
        yield pool.start()
    finally:
        pool.stop()


def make_job(queue="TEST_PQ", **overrides):
    """A valid job spec in our JSON form."""
    job = {"jobName": "test.job", "computingSite": queue, "prodSourceLabel": "managed",
           "transformation": "http://pandaserver-doma.cern.ch:25080/trf/user/runme.sh", "jobParameters": "--x 1",
           "coreCount": 1, "minRamCount": 1000, "maxWalltime": 600,
           "Files": [{"type": "log", "lfn": "log.tgz", "scope": "test"}]}
    job.update(overrides)
    return job


def run_panda_client(server, token, tmp_path, script, timeout=180):
    """Run ``script`` with PanDA's panda-client against ``server`` (oidc token auth, plain http); return the JSON
    it printed on a line starting with ``RESULT ``."""
    import json

    base = server.url + "/server/panda"
    env = dict(os.environ, PANDA_URL_SSL=base, PANDA_URL=base, PANDACACHE_URL=base, PANDA_BEHIND_REAL_LB="1",
               PANDA_CONFIG_ROOT=str(tmp_path / "pandacfg"), PANDA_AUTH="oidc", PANDA_AUTH_VO="minipanda",
               PANDA_AUTH_ID_TOKEN=token, PANDA_VERIFY_HOST="off")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"panda-client printed no result: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len("RESULT "):])


def signal_burst(proc, hangups):
    """After a random wait (up to 1.5 s), ``hangups`` SIGHUPs then two to four SIGTERM/SIGINT, 0-20 ms apart, to
    ``proc`` (the signal tests' bursts at random moments); returns the signals sent, for the failure message."""
    chooser = random.Random()
    time.sleep(chooser.uniform(0.0, 1.5))
    burst = [signal.SIGHUP] * hangups + [chooser.choice((signal.SIGTERM, signal.SIGTERM, signal.SIGINT))
                                         for _ in range(chooser.randint(2, 4))]
    for signum in burst:
        proc.send_signal(signum)
        time.sleep(chooser.uniform(0.0, 0.02))
    return burst
